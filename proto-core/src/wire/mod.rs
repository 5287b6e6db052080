//! The native peer protocol: length-prefixed binary frames between herdcache nodes.
//!
//! Shaped like smoltcp's `wire/`: [`Frame`] is a checked view over the bytes of one frame,
//! [`Message`] is the parsed representation of its payload, [`Message::emit`] writes a frame
//! into a caller's buffer, and [`FrameDecoder`] cuts frames out of a byte stream that arrives
//! in pieces.
//!
//! # Frame layout
//! All integers are big-endian.
//! ```text
//! 0..4   length: u32   bytes after this field (the rest of the header + the payload)
//! 4      version: u8   PROTOCOL_VERSION
//! 5      kind: u8      FrameKind
//! 6..14  request_id: u64  echoed by replies; the nonce of Ping/Pong; 0 for one-way frames
//! 14..   payload, by kind
//! ```
//! Inside payloads, a byte string is a `u32` length and the bytes; an optional value is a `u8`
//! presence flag (0 or 1, anything else is malformed) and the value if present; a list is a
//! `u32` count and the items. A payload must end exactly where the frame ends.
//!
//! # Contract
//! - **Peer bytes never panic the codec and never make it allocate past a limit.** Every
//!   declared length and count is checked against [`WireLimits`] (and against the bytes that
//!   are actually there) before anything is allocated; a bad frame is a typed [`WireError`],
//!   and [`WireError::error_code`] is the connection-level code to send before closing.
//! - **Parsing is zero-copy**: parsed keys and values are `Bytes::slice`s of the received
//!   frame. A value kept for long (cached) pins the receive buffer it arrived in; the node
//!   decides whether to copy it first.
//! - **Emit is all or nothing**: a field over a limit or a buffer too small is an error before
//!   a single byte is written. The one exception to "over a limit is an error" is error text,
//!   which is truncated to [`WireLimits::max_message`] on a UTF-8 boundary.
//! - The codec judges form, not meaning: a version mismatch inside [`Message::Hello`], a reply
//!   to an unknown request id or a one-way frame with a non-zero id are the node's business.

mod decoder;
mod frame;
#[cfg(feature = "arbitrary")]
mod fuzzing;
mod message;
#[cfg(test)]
mod tests;

use core::fmt;

pub use decoder::FrameDecoder;
pub use frame::{Frame, FrameHeader, FrameKind};
pub use message::{ErrorCode, Found, GetOutcome, KeyRate, Message, PutEntry, ReplyError};

/// The framing version this crate speaks, carried in byte 4 of every frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the frame header, the length prefix included: length (4), version (1), kind (1),
/// request id (8). The smallest frame (an empty payload) is this long.
pub const FRAME_HEADER_LEN: usize = 14;

/// Bytes of the length prefix.
pub(crate) const LENGTH_PREFIX_LEN: usize = 4;

/// The smallest valid value of the length field: the header after the prefix.
pub(crate) const MIN_DECLARED_LEN: u32 = (FRAME_HEADER_LEN - LENGTH_PREFIX_LEN) as u32;

/// The size limits both ends of a connection enforce.
///
/// A sender refuses to emit what breaks them ([`Message::emit`] fails) and a receiver refuses
/// to parse it ([`Frame::new_checked`], [`Message::parse`], [`FrameDecoder`] fail), so both
/// ends of a cluster should use the same limits.
///
/// The defaults are what a production deployment can accept without tuning:
/// - [`max_key`](Self::max_key) 8 KiB: room for composite keys and whole URLs (8 KiB is also
///   the common HTTP request-line limit) while a full batch of keys stays at 8 MiB.
/// - [`max_value`](Self::max_value) 8 MiB: eight times memcached's default item limit;
///   larger objects belong in a blob store or in chunks.
/// - [`max_batch`](Self::max_batch) 1024 keys or entries per batch message: enough to
///   amortise a syscall and a round trip (docs/ARCHITECTURE.md, "Measured costs"), small
///   enough that one batch does not monopolise a connection.
/// - [`max_frame`](Self::max_frame) 64 MiB. It must hold one reply with a value of
///   `max_value` (8 MiB plus 32 bytes of framing), and it decides how large the values of a
///   full batch reply may be: a [`Message::GetManyReply`] of `max_batch` found values with
///   expiries needs `14 + 4 + n × (18 + value_len)` bytes, so with the defaults every value of a
///   1024-key batch may be up to 65 517 bytes (64 KiB − 19). A node answering a batch whose
///   values are larger splits it across frames or fails the items that do not fit.
/// - [`max_label`](Self::max_label) 255: cluster labels, node ids and keyspace names are
///   names, like a DNS name (at most 255 bytes).
/// - [`max_message`](Self::max_message) 4 KiB of error text: enough for a useful message from
///   a data source, never a dump; longer text is truncated on emit, not refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireLimits {
    /// The longest key, in bytes.
    pub max_key: u32,
    /// The longest value, in bytes.
    pub max_value: u32,
    /// The largest value of a frame's length field: a whole frame is at most
    /// `max_frame + 4` bytes on the wire. A value under the 10 bytes of header that follow
    /// the prefix refuses every frame.
    pub max_frame: u32,
    /// The most keys, entries or results in one batch message.
    pub max_batch: u32,
    /// The longest cluster label, node id or keyspace name, in bytes.
    pub max_label: u32,
    /// The longest error text, in bytes (see [`ReplyError`]).
    pub max_message: u32,
}

impl WireLimits {
    /// Default for [`WireLimits::max_key`]: 8 KiB.
    pub const DEFAULT_MAX_KEY: u32 = 8 << 10;
    /// Default for [`WireLimits::max_value`]: 8 MiB.
    pub const DEFAULT_MAX_VALUE: u32 = 8 << 20;
    /// Default for [`WireLimits::max_frame`]: 64 MiB.
    pub const DEFAULT_MAX_FRAME: u32 = 64 << 20;
    /// Default for [`WireLimits::max_batch`].
    pub const DEFAULT_MAX_BATCH: u32 = 1_024;
    /// Default for [`WireLimits::max_label`].
    pub const DEFAULT_MAX_LABEL: u32 = 255;
    /// Default for [`WireLimits::max_message`]: 4 KiB.
    pub const DEFAULT_MAX_MESSAGE: u32 = 4 << 10;

    /// The largest whole frame, length prefix included, as a buffer size.
    #[must_use]
    pub fn max_frame_len(&self) -> usize {
        usize::try_from(u64::from(self.max_frame) + LENGTH_PREFIX_LEN as u64).unwrap_or(usize::MAX)
    }

    /// These limits for a connection whose handshake is not complete: `max_frame` cut down
    /// to the largest frame a handshake can carry under them — a hello (two labels and a
    /// nonce), a proof, or an error (a code and a message). So a peer that has not said who
    /// it is cannot make a node buffer a frame of the full limit (64 MiB by default); the
    /// node raises the limit once the handshake completes.
    #[must_use]
    pub fn for_handshake(&self) -> WireLimits {
        // The header after the length field, then: the version, the two length-prefixed
        // labels, a nonce; or an error's code and its length-prefixed message; or a proof.
        const HELLO_FIXED: u64 = 2 + 4 + 4 + 16;
        const ERROR_FIXED: u64 = 1 + 4;
        const PROOF: u64 = 32;
        let header = (FRAME_HEADER_LEN - LENGTH_PREFIX_LEN) as u64;
        let hello = HELLO_FIXED + 2 * u64::from(self.max_label);
        let error = ERROR_FIXED + u64::from(self.max_message);
        let largest = header + hello.max(error).max(PROOF);
        let max_frame = u32::try_from(largest).unwrap_or(u32::MAX).min(self.max_frame);
        WireLimits { max_frame, ..*self }
    }
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_key: Self::DEFAULT_MAX_KEY,
            max_value: Self::DEFAULT_MAX_VALUE,
            max_frame: Self::DEFAULT_MAX_FRAME,
            max_batch: Self::DEFAULT_MAX_BATCH,
            max_label: Self::DEFAULT_MAX_LABEL,
            max_message: Self::DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Why bytes could not be decoded, or a message could not be emitted.
///
/// Decoding errors come from [`Frame::new_checked`] and [`Message::parse`], which hold no
/// state, and from [`FrameDecoder`], which **fails for good** on any of them: every later call
/// returns the same error, and the connection is to be closed after sending an
/// [`Message::Error`] with [`WireError::error_code`]. The exception is
/// [`WireError::DecoderFull`], a caller's mistake that changes nothing.
///
/// Emitting errors come from [`Message::emit`], [`Message::encode`] and
/// [`Message::checked_len`]; with any of them nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The bytes end before the frame or a field does: a buffer shorter than its frame's
    /// length field, or a payload that ends inside a field or cannot hold a list's declared
    /// count. The decoder has failed (it never reports this for a frame still arriving: it
    /// waits for the rest).
    Truncated,
    /// The length field (`declared`, the bytes after the prefix) is over
    /// [`WireLimits::max_frame`], or a message to emit would need such a frame. Reported by
    /// the decoder as soon as the 4-byte prefix arrives, before the body is buffered; the
    /// decoder has failed. On emit, nothing was written.
    FrameTooLarge {
        /// The length field's value, read or needed.
        declared: u64,
        /// The configured [`WireLimits::max_frame`].
        max: u32,
    },
    /// The version byte is not [`PROTOCOL_VERSION`]. The decoder has failed, as soon as the
    /// version byte arrived.
    UnsupportedVersion(u8),
    /// The kind byte is no [`FrameKind`]. The decoder has failed, as soon as the kind byte
    /// arrived.
    UnknownKind(u8),
    /// An error reply carries a code that is no [`ErrorCode`]. The decoder has failed.
    UnknownErrorCode(u8),
    /// The bytes break the format in a way the text names: a presence flag or outcome tag
    /// other than 0 and 1, bytes left after the payload, a length field smaller than the
    /// header. The decoder has failed.
    Malformed(&'static str),
    /// A field is longer than its limit: decoding, the declared length of a key, value, label
    /// or error text (the decoder has failed); emitting, a key, value or label (nothing was
    /// written). Error text is never refused on emit: it is truncated.
    FieldTooLarge {
        /// Which field: `"key"`, `"value"`, `"keyspace"`, `"cluster"`, `"node_id"` or
        /// `"message"`.
        field: &'static str,
        /// The field's length, declared or actual.
        len: u64,
        /// The limit it broke.
        max: u32,
    },
    /// A batch has more items than [`WireLimits::max_batch`]. Decoding, this is found from the
    /// declared count before anything is allocated, and the decoder has failed; emitting,
    /// nothing was written.
    BatchTooLarge {
        /// The declared or actual number of items.
        count: u64,
        /// The configured [`WireLimits::max_batch`].
        max: u32,
    },
    /// [`Message::emit`] was given a buffer shorter than the frame. Nothing was written; the
    /// frame needs [`Message::checked_len`] bytes.
    BufferTooSmall {
        /// The frame's length.
        needed: usize,
        /// The length of the buffer given.
        available: usize,
    },
    /// [`FrameDecoder::push`] was called while a whole frame's worth of bytes was already
    /// buffered: the caller did not drain [`FrameDecoder::next_frame`] until `Ok(None)`.
    /// State unchanged: the data was not taken and the decoder has not failed; drain it and
    /// push the data again.
    DecoderFull {
        /// Bytes buffered.
        buffered: usize,
    },
}

impl WireError {
    /// The connection-level code to send in a [`Message::Error`] before closing because of
    /// this error.
    ///
    /// Limits broken by a peer map to [`ErrorCode::FrameTooLarge`] or [`ErrorCode::TooLarge`],
    /// a wrong version to [`ErrorCode::ProtocolVersion`], bad bytes to
    /// [`ErrorCode::Malformed`]. The two local errors, [`WireError::BufferTooSmall`] and
    /// [`WireError::DecoderFull`], are no fault of the peer and map to
    /// [`ErrorCode::Overloaded`].
    #[must_use]
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            WireError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            WireError::UnsupportedVersion(_) => ErrorCode::ProtocolVersion,
            WireError::FieldTooLarge { .. } | WireError::BatchTooLarge { .. } => {
                ErrorCode::TooLarge
            }
            WireError::Truncated
            | WireError::UnknownKind(_)
            | WireError::UnknownErrorCode(_)
            | WireError::Malformed(_) => ErrorCode::Malformed,
            WireError::BufferTooSmall { .. } | WireError::DecoderFull { .. } => {
                ErrorCode::Overloaded
            }
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("frame or field truncated"),
            WireError::FrameTooLarge { declared, max } => {
                write!(f, "frame of {declared} bytes over the limit of {max}")
            }
            WireError::UnsupportedVersion(version) => {
                write!(f, "unsupported protocol version {version}")
            }
            WireError::UnknownKind(kind) => write!(f, "unknown frame kind {kind}"),
            WireError::UnknownErrorCode(code) => write!(f, "unknown error code {code}"),
            WireError::Malformed(what) => write!(f, "malformed frame: {what}"),
            WireError::FieldTooLarge { field, len, max } => {
                write!(f, "{field} of {len} bytes over the limit of {max}")
            }
            WireError::BatchTooLarge { count, max } => {
                write!(f, "batch of {count} items over the limit of {max}")
            }
            WireError::BufferTooSmall { needed, available } => {
                write!(f, "frame needs {needed} bytes, buffer has {available}")
            }
            WireError::DecoderFull { buffered } => {
                write!(f, "decoder holds {buffered} bytes: drain frames before pushing more")
            }
        }
    }
}

impl core::error::Error for WireError {}

/// Validates whatever part of the first six bytes of a frame is present: the length field
/// (against the header size and [`WireLimits::max_frame`]), the version and the kind.
pub(crate) fn check_prefix(head: &[u8], limits: &WireLimits) -> Result<(), WireError> {
    if let Some(&[a, b, c, d]) = head.first_chunk::<4>() {
        let declared = u32::from_be_bytes([a, b, c, d]);
        if declared < MIN_DECLARED_LEN {
            return Err(WireError::Malformed("length field smaller than the frame header"));
        }
        if declared > limits.max_frame {
            return Err(WireError::FrameTooLarge {
                declared: u64::from(declared),
                max: limits.max_frame,
            });
        }
    }
    if let Some(&version) = head.get(4) {
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
    }
    if let Some(&kind) = head.get(5) {
        if FrameKind::from_u8(kind).is_none() {
            return Err(WireError::UnknownKind(kind));
        }
    }
    Ok(())
}
