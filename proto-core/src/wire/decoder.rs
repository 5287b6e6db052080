//! Cutting frames out of a byte stream that arrives in pieces.

use bytes::BytesMut;

use super::frame::{Frame, FrameHeader};
use super::message::{Message, parse_frame};
use super::{LENGTH_PREFIX_LEN, WireError, WireLimits, check_prefix};

/// How many header bytes the decoder validates as soon as they arrive: length, version, kind.
const EARLY_CHECK_LEN: usize = 6;

/// An incremental frame decoder for one connection's receive side.
///
/// Push the bytes of each read with [`FrameDecoder::push`], then drain
/// [`FrameDecoder::next_frame`] until it returns `Ok(None)`. Frames may be split at any byte
/// and several may arrive in one push.
///
/// # Contract
/// - **Early refusal.** A length field over [`WireLimits::max_frame`] or under the header
///   size, a wrong version or an unknown kind is an error as soon as the byte that shows it
///   has arrived (the first 4, 5 or 6 bytes of a frame), before the body is buffered — for the
///   frame at the front of the buffer, which is every frame when the caller drains after each
///   push.
/// - **Bounded memory.** Let `F` be [`WireLimits::max_frame_len`] (one whole frame of the
///   largest size). After a drain to `Ok(None)` fewer than `F` bytes are buffered (at most
///   one incomplete frame); after `push(data)` returns, fewer than `F + data.len()` are. A
///   push while `F` or more bytes are buffered (the caller did not drain) is refused with
///   [`WireError::DecoderFull`] instead of growing. The body of a frame is never reserved
///   ahead: memory grows with the bytes that actually arrived, so a peer that announces a
///   large frame and sends it slowly costs only what it sent.
/// - **Zero copy.** A complete frame is split off the buffer (`BytesMut::split_to` then
///   `freeze`) and parsed in place: its keys and values share the allocation the bytes
///   arrived in. When a drain empties the buffer, the decoder lets go of that allocation and
///   starts a new one on the next push, so it never keeps a large frame's memory alive itself.
/// - **Fail for good.** After any error other than [`WireError::DecoderFull`] the decoder is
///   failed: every later call returns the same error, and the connection is to be closed
///   (after sending [`Message::Error`] with [`WireError::error_code`]).
///
/// # Example
/// ```
/// use herdcache_proto::{FrameDecoder, Message, WireLimits};
/// let limits = WireLimits::default();
/// let mut stream = Vec::new();
/// Message::Ping.encode(7, &mut stream, &limits)?;
/// Message::Leaving.encode(0, &mut stream, &limits)?;
///
/// let mut decoder = FrameDecoder::new(limits);
/// let mut received = Vec::new();
/// for chunk in stream.chunks(5) {
///     decoder.push(chunk)?;
///     while let Some((header, message)) = decoder.next_frame()? {
///         received.push((header.request_id, message));
///     }
/// }
/// assert_eq!(received, [(7, Message::Ping), (0, Message::Leaving)]);
/// # Ok::<(), herdcache_proto::WireError>(())
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    limits: WireLimits,
    buffer: BytesMut,
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// An empty decoder that enforces `limits`.
    #[must_use]
    pub fn new(limits: WireLimits) -> FrameDecoder {
        FrameDecoder { limits, buffer: BytesMut::new(), failed: None }
    }

    /// The limits it enforces.
    #[must_use]
    pub const fn limits(&self) -> &WireLimits {
        &self.limits
    }

    /// Enforces `limits` from now on (the frames still buffered included): a node raises
    /// them from [`WireLimits::for_handshake`] to its own once a peer's handshake completes.
    pub fn set_limits(&mut self, limits: WireLimits) {
        self.limits = limits;
    }

    /// Bytes received and not yet returned as frames.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The error the decoder failed with, if it has.
    #[must_use]
    pub const fn error(&self) -> Option<WireError> {
        self.failed
    }

    /// Appends the next bytes of the stream.
    ///
    /// # Errors
    /// - [`WireError::DecoderFull`] when a whole frame's worth of bytes is already buffered
    ///   (drain first). Nothing was taken; the decoder has not failed.
    /// - When the bytes complete the first 4, 5 or 6 bytes of the frame at the front and
    ///   these are invalid: [`WireError::FrameTooLarge`], [`WireError::Malformed`],
    ///   [`WireError::UnsupportedVersion`] or [`WireError::UnknownKind`]. The decoder has
    ///   failed and took nothing.
    /// - The error it failed with earlier.
    pub fn push(&mut self, data: &[u8]) -> Result<(), WireError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let buffered = self.buffer.len();
        if buffered >= self.limits.max_frame_len() {
            return Err(WireError::DecoderFull { buffered });
        }
        if buffered < EARLY_CHECK_LEN {
            let mut head = [0u8; EARLY_CHECK_LEN];
            let mut len = 0;
            for (dst, src) in head.iter_mut().zip(self.buffer.iter().chain(data)) {
                *dst = *src;
                len += 1;
            }
            if let Err(error) = check_prefix(head.get(..len).unwrap_or_default(), &self.limits) {
                return Err(self.fail(error));
            }
        }
        self.buffer.extend_from_slice(data);
        Ok(())
    }

    /// The next complete frame, parsed, or `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// Any decoding error of [`Frame::new_checked`] and [`Message::parse`] for the frame at
    /// the front (never [`WireError::Truncated`] for a frame that is still arriving). The
    /// decoder has failed; later calls return the same error.
    pub fn next_frame(&mut self) -> Result<Option<(FrameHeader, Message)>, WireError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.buffer.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let head = self.buffer.get(..EARLY_CHECK_LEN).unwrap_or(&self.buffer);
        if let Err(error) = check_prefix(head, &self.limits) {
            return Err(self.fail(error));
        }
        let frame_len = Frame::new_unchecked(&self.buffer[..]).frame_len();
        if self.buffer.len() < frame_len {
            return Ok(None);
        }
        let frame = Frame::new_unchecked(self.buffer.split_to(frame_len).freeze());
        if self.buffer.is_empty() {
            // Let go of the allocation the frames handed out share: the next push starts anew.
            self.buffer = BytesMut::new();
        }
        match parse_frame(&frame, &self.limits) {
            Ok(parsed) => Ok(Some(parsed)),
            Err(error) => Err(self.fail(error)),
        }
    }

    fn fail(&mut self, error: WireError) -> WireError {
        self.failed = Some(error);
        self.buffer = BytesMut::new();
        error
    }
}
