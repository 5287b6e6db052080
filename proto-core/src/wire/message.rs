//! The parsed representation of a frame's payload: parse, measure and emit.

use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;

use bytes::Bytes;

use super::frame::{Frame, FrameHeader, FrameKind};
use super::{LENGTH_PREFIX_LEN, PROTOCOL_VERSION, WireError, WireLimits};
use crate::time::UnixTime;

/// A key's recent request rate as its owner measured it, in milli-requests per second.
///
/// Fixed point so that it crosses the wire exactly (groupcache's never-used `minute_qps`,
/// made useful): a requester mirrors a value into its hot cache when the rate is over its
/// threshold. The range is 0 to about 4.29 million requests per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyRate(u32);

impl KeyRate {
    /// No requests.
    pub const ZERO: KeyRate = KeyRate(0);
    /// The largest rate: `u32::MAX` milli-requests per second.
    pub const MAX: KeyRate = KeyRate(u32::MAX);

    /// A rate of `milli` thousandths of a request per second.
    #[must_use]
    pub const fn from_milli_per_second(milli: u32) -> KeyRate {
        KeyRate(milli)
    }

    /// The rate in thousandths of a request per second.
    #[must_use]
    pub const fn as_milli_per_second(self) -> u32 {
        self.0
    }

    /// The rate nearest to `per_second` requests per second, saturating: NaN and negative
    /// rates give [`KeyRate::ZERO`], rates over the range give [`KeyRate::MAX`].
    #[must_use]
    pub fn from_per_second(per_second: f64) -> KeyRate {
        // `as` saturates and maps NaN to 0, which is exactly the contract.
        KeyRate((per_second * 1_000.0 + 0.5) as u32)
    }

    /// The rate in requests per second.
    #[must_use]
    pub fn as_per_second(self) -> f64 {
        f64::from(self.0) / 1_000.0
    }
}

/// Why a request failed, or why a connection is being closed.
///
/// Codes below 128 answer one request ([`GetOutcome::Failed`], [`Message::Ack`]); codes from
/// 128 on are connection-level and travel in [`Message::Error`], after which the sender
/// closes. Byte 0 is reserved and never valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum ErrorCode {
    /// The data source has no value for the key.
    NotFound = 1,
    /// The data source failed; the message says how.
    DataSource = 2,
    /// The answer was not ready within the request's timeout.
    TimedOut = 3,
    /// The owner's rate limiter refused the load.
    RateLimited = 4,
    /// The owner's circuit breaker is open for the data source.
    CircuitOpen = 5,
    /// A key or value is over a limit.
    TooLarge = 6,
    /// No such keyspace on the owner.
    UnknownKeyspace = 7,
    /// The owner is shutting down and takes no new work.
    ShuttingDown = 8,
    /// The owner has too much work in progress (flights, waiters, buffers).
    Overloaded = 9,
    /// The request makes no sense (for example a reply kind sent as a request).
    BadRequest = 10,
    /// A node the request needed could not be reached, or did not confirm in time: the owner
    /// of a forwarded write, or a member asked to drop its copy.
    ///
    /// Added after the first release of the protocol: a decoder that predates it refuses a
    /// frame carrying it as it refuses every unknown code ([`WireError::UnknownErrorCode`],
    /// answered [`ErrorCode::Malformed`]), closing that one connection, whose calls then fail
    /// over as on any lost connection — no panic, and no wrong answer.
    ///
    /// [`WireError::UnknownErrorCode`]: crate::WireError::UnknownErrorCode
    Unavailable = 11,
    /// The request needs a connection authenticated as a current member of the cluster: a
    /// write, a drop of hot copies, a keyspace clear or a goodbye from a connection whose
    /// hello named a node off the member list (or, for a goodbye, another node than its own).
    /// Nothing changed on the answering node.
    ///
    /// Added with the cluster secret; an older decoder refuses it as an unknown code (see
    /// [`ErrorCode::Unavailable`]).
    Unauthorized = 12,
    /// Connection-level: the peer speaks a protocol version this node does not.
    ProtocolVersion = 128,
    /// Connection-level: the peer belongs to another cluster (its hello's label differs).
    ClusterMismatch = 129,
    /// Connection-level: the peer sent bytes that break the format.
    Malformed = 130,
    /// Connection-level: the peer sent a frame over the size limit.
    FrameTooLarge = 131,
    /// Connection-level: the peer has more requests in flight than allowed.
    TooManyInFlight = 132,
    /// Connection-level: the hello could not be authenticated — a node with a cluster secret
    /// got no proof, a wrong one or one for other nonces (a replay), or the hello's id is not
    /// the identity the transport authenticated (a TLS certificate's).
    Unauthenticated = 133,
}

impl ErrorCode {
    /// The code whose byte is `byte`, if any.
    #[must_use]
    pub const fn from_u8(byte: u8) -> Option<ErrorCode> {
        Some(match byte {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::DataSource,
            3 => ErrorCode::TimedOut,
            4 => ErrorCode::RateLimited,
            5 => ErrorCode::CircuitOpen,
            6 => ErrorCode::TooLarge,
            7 => ErrorCode::UnknownKeyspace,
            8 => ErrorCode::ShuttingDown,
            9 => ErrorCode::Overloaded,
            10 => ErrorCode::BadRequest,
            11 => ErrorCode::Unavailable,
            12 => ErrorCode::Unauthorized,
            128 => ErrorCode::ProtocolVersion,
            129 => ErrorCode::ClusterMismatch,
            130 => ErrorCode::Malformed,
            131 => ErrorCode::FrameTooLarge,
            132 => ErrorCode::TooManyInFlight,
            133 => ErrorCode::Unauthenticated,
            _ => return None,
        })
    }

    /// The code's byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether the code closes the connection rather than answering one request.
    #[must_use]
    pub const fn is_connection_level(self) -> bool {
        self.as_u8() >= 128
    }

    /// A short name, such as `"not found"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not found",
            ErrorCode::DataSource => "data source error",
            ErrorCode::TimedOut => "timed out",
            ErrorCode::RateLimited => "rate limited",
            ErrorCode::CircuitOpen => "circuit open",
            ErrorCode::TooLarge => "too large",
            ErrorCode::UnknownKeyspace => "unknown keyspace",
            ErrorCode::ShuttingDown => "shutting down",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "not authorized: not a current member",
            ErrorCode::ProtocolVersion => "unsupported protocol version",
            ErrorCode::ClusterMismatch => "cluster mismatch",
            ErrorCode::Malformed => "malformed frame",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::TooManyInFlight => "too many requests in flight",
            ErrorCode::Unauthenticated => "hello not authenticated",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: a code and a human-readable text.
///
/// The text is bytes, not checked to be UTF-8 (a peer's text is only ever shown). On emit,
/// text longer than [`WireLimits::max_message`] is cut to fit, on a UTF-8 character boundary
/// when the text is UTF-8; a received text over the limit is an error.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplyError {
    /// What went wrong.
    pub code: ErrorCode,
    /// Details for a person; may be empty.
    pub message: Bytes,
}

impl ReplyError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<Bytes>) -> ReplyError {
        ReplyError { code, message: message.into() }
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.as_str())?;
        if !self.message.is_empty() {
            f.write_str(": ")?;
            for chunk in self.message.utf8_chunks() {
                f.write_str(chunk.valid())?;
                if !chunk.invalid().is_empty() {
                    f.write_str("\u{FFFD}")?;
                }
            }
        }
        Ok(())
    }
}

impl core::error::Error for ReplyError {}

/// A value found by its owner.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Found {
    /// The value.
    pub value: Bytes,
    /// When the value stops being valid (wall clock), or `None` for never.
    pub expires_at: Option<UnixTime>,
    /// How often the key is requested from the owner: the requester mirrors hot keys.
    pub key_rate: KeyRate,
}

/// The answer for one key of a get.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GetOutcome {
    /// The value.
    Found(Found),
    /// No value: not found, a data-source error, a timeout, ….
    Failed(ReplyError),
}

/// One entry of a put.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PutEntry {
    /// The key.
    pub key: Bytes,
    /// The value to store.
    pub value: Bytes,
    /// When the value stops being valid (wall clock), or `None` for the keyspace's default.
    pub expires_at: Option<UnixTime>,
}

/// The payload of one frame (the request id lives in the [`FrameHeader`]).
///
/// Requests carry a fresh request id and are answered by the reply kind with the same id:
/// `Get` → `GetReply`, `GetMany` → `GetManyReply` (one outcome per key, in order), `Put` and
/// `Delete` → `Ack`, `PutMany` and `DeleteMany` → `AckMany` (one result per item, in order),
/// `DropHot` and `ClearKeyspace` → `Ack` (the owner waits for every peer's), `Ping` → `Pong`
/// (the id is the nonce), `Peek` → `GetReply` (the value, or a `NotFound` failure). `Hello`, `HelloProof`, `Error` and
/// `Leaving` are one-way and carry id 0.
///
/// Emit with [`Message::emit`] or [`Message::encode`]; parse with [`Message::parse`] or a
/// [`FrameDecoder`](super::FrameDecoder).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// The first frame each side sends. A node answers a cluster or version mismatch with
    /// [`Message::Error`] and closes (the node decides that, not the codec).
    Hello {
        /// The highest protocol version the sender speaks.
        protocol_version: u16,
        /// The cluster label: peers of different clusters refuse each other.
        cluster: Bytes,
        /// The sender's node id, as it appears on the ring.
        node_id: Bytes,
        /// The sender's fresh nonce for this connection, sent only by a node with a cluster
        /// secret: the peer's [`Message::HelloProof`] must cover it. On the wire, 16 bytes
        /// after the node id when present, nothing when absent — so a hello without a nonce is
        /// byte for byte the hello of nodes that predate the secret.
        nonce: Option<[u8; 16]>,
    },
    /// Proof that the sender knows the cluster secret: an HMAC-SHA256 keyed by the secret over
    /// both hellos' nonces, both node ids, the cluster label and the sender's role (dialler or
    /// acceptor), so it is good for this one connection and this one direction only. The
    /// acceptor sends it right after its hello, the dialler once it checked the acceptor's.
    /// Added with the cluster secret (kind 19): only nodes with a secret send it.
    HelloProof {
        /// The HMAC-SHA256 tag.
        mac: [u8; 32],
    },
    /// A connection-level error; the sender closes the connection after it.
    Error(ReplyError),
    /// Get one key from its owner.
    Get {
        /// The keyspace.
        keyspace: Bytes,
        /// The key.
        key: Bytes,
        /// How long the requester will wait for the answer, in milliseconds.
        timeout_ms: u32,
    },
    /// The answer to [`Message::Get`].
    GetReply(GetOutcome),
    /// Get several keys of one keyspace from their owner.
    GetMany {
        /// The keyspace.
        keyspace: Bytes,
        /// The keys, at most [`WireLimits::max_batch`].
        keys: Vec<Bytes>,
        /// How long the requester will wait for the answer, in milliseconds.
        timeout_ms: u32,
    },
    /// The answer to [`Message::GetMany`]: one outcome per key, in the request's order.
    GetManyReply(Vec<GetOutcome>),
    /// Store one entry at its owner.
    Put {
        /// The keyspace.
        keyspace: Bytes,
        /// The entry.
        entry: PutEntry,
    },
    /// Store several entries of one keyspace at their owner.
    PutMany {
        /// The keyspace.
        keyspace: Bytes,
        /// The entries, at most [`WireLimits::max_batch`].
        entries: Vec<PutEntry>,
    },
    /// Remove one key at its owner.
    Delete {
        /// The keyspace.
        keyspace: Bytes,
        /// The key.
        key: Bytes,
    },
    /// Remove several keys of one keyspace at their owner.
    DeleteMany {
        /// The keyspace.
        keyspace: Bytes,
        /// The keys, at most [`WireLimits::max_batch`].
        keys: Vec<Bytes>,
    },
    /// The answer to [`Message::Put`] or [`Message::Delete`].
    Ack(Result<(), ReplyError>),
    /// The answer to [`Message::PutMany`] or [`Message::DeleteMany`]: one result per item,
    /// in the request's order.
    AckMany(Vec<Result<(), ReplyError>>),
    /// From a key's owner after a put or delete: drop your copies of these keys, and do not
    /// cache a load of them already in flight. Answered by [`Message::Ack`].
    DropHot {
        /// The keyspace.
        keyspace: Bytes,
        /// The keys, at most [`WireLimits::max_batch`].
        keys: Vec<Bytes>,
    },
    /// Are you there? Answered by [`Message::Pong`] with the same request id.
    Ping,
    /// The answer to [`Message::Ping`].
    Pong,
    /// One-way: the sender is leaving the ring (graceful leave).
    Leaving,
    /// A keyspace's data was deleted cluster-wide: drop every copy of every key in it, and do
    /// not cache loads already in flight. Answered by [`Message::Ack`].
    ClearKeyspace {
        /// The keyspace.
        keyspace: Bytes,
    },
    /// From a key's new owner after a ring change, to the key's previous owner: the value you
    /// hold in your cache, if any. Answered by [`Message::GetReply`] from the cache alone —
    /// the value with its expiry, or an [`ErrorCode::NotFound`] failure — never by a load and
    /// never by asking another node (galaxycache's peek).
    Peek {
        /// The keyspace.
        keyspace: Bytes,
        /// The key.
        key: Bytes,
    },
}

/// Smallest encodings of list items, to refuse a count the payload cannot hold before
/// allocating for it.
const MIN_BYTES_FIELD: usize = 4;
const MIN_PUT_ENTRY: usize = 4 + 4 + 1;
/// A `Failed` outcome: tag, code, empty text.
const MIN_GET_OUTCOME: usize = 1 + 1 + 4;
/// An `Ok` ack: the flag alone.
const MIN_ACK: usize = 1;

impl Message {
    /// The kind of frame that carries this message.
    #[must_use]
    pub const fn kind(&self) -> FrameKind {
        match self {
            Message::Hello { .. } => FrameKind::Hello,
            Message::HelloProof { .. } => FrameKind::HelloProof,
            Message::Error(_) => FrameKind::Error,
            Message::Get { .. } => FrameKind::Get,
            Message::GetReply(_) => FrameKind::GetReply,
            Message::GetMany { .. } => FrameKind::GetMany,
            Message::GetManyReply(_) => FrameKind::GetManyReply,
            Message::Put { .. } => FrameKind::Put,
            Message::PutMany { .. } => FrameKind::PutMany,
            Message::Delete { .. } => FrameKind::Delete,
            Message::DeleteMany { .. } => FrameKind::DeleteMany,
            Message::Ack(_) => FrameKind::Ack,
            Message::AckMany(_) => FrameKind::AckMany,
            Message::DropHot { .. } => FrameKind::DropHot,
            Message::Ping => FrameKind::Ping,
            Message::Pong => FrameKind::Pong,
            Message::Leaving => FrameKind::Leaving,
            Message::ClearKeyspace { .. } => FrameKind::ClearKeyspace,
            Message::Peek { .. } => FrameKind::Peek,
        }
    }

    /// Parses the payload of a checked frame held in `Bytes`; every key, value and label of
    /// the result is a zero-copy `Bytes::slice` of the frame.
    ///
    /// Accepts `Frame<Bytes>` and `Frame<&Bytes>`. The frame is checked again (O(1)), so a
    /// view from [`Frame::new_unchecked`] is safe too.
    ///
    /// # Errors
    /// Those of [`Frame::check`]; [`WireError::Truncated`] when the payload ends inside a
    /// field; [`WireError::FieldTooLarge`] and [`WireError::BatchTooLarge`] for declared
    /// lengths and counts over `limits`, found before anything is allocated;
    /// [`WireError::UnknownErrorCode`]; [`WireError::Malformed`] for a flag or tag that is
    /// neither 0 nor 1, and for bytes left after the payload.
    pub fn parse<T>(frame: &Frame<T>, limits: &WireLimits) -> Result<Message, WireError>
    where
        T: AsRef<[u8]> + Borrow<Bytes>,
    {
        parse_frame(frame, limits).map(|(_, message)| message)
    }

    /// The length of this message's frame, prefix included, as [`Message::emit`] writes it
    /// with `limits` (error text over [`WireLimits::max_message`] counts as truncated). Does
    /// not check the other limits: see [`Message::checked_len`].
    #[must_use]
    pub fn buffer_len(&self, limits: &WireLimits) -> usize {
        let mut counter = Counter(0);
        self.write_frame(&mut counter, 0, 0, limits);
        counter.0
    }

    /// [`Message::buffer_len`], once every field, batch and the frame itself are checked
    /// against `limits`.
    ///
    /// # Errors
    /// [`WireError::FieldTooLarge`], [`WireError::BatchTooLarge`],
    /// [`WireError::FrameTooLarge`].
    pub fn checked_len(&self, limits: &WireLimits) -> Result<usize, WireError> {
        self.check_limits(limits)?;
        let len = self.buffer_len(limits);
        let declared = (len as u64).saturating_sub(LENGTH_PREFIX_LEN as u64);
        if declared > u64::from(limits.max_frame) {
            return Err(WireError::FrameTooLarge { declared, max: limits.max_frame });
        }
        Ok(len)
    }

    /// Writes this message as one frame with `request_id` at the start of `buf`, and returns
    /// the frame's length.
    ///
    /// All or nothing: the limits and the buffer's length are checked before the first byte
    /// is written.
    ///
    /// # Errors
    /// Those of [`Message::checked_len`], and [`WireError::BufferTooSmall`]. Nothing was
    /// written.
    pub fn emit(
        &self,
        request_id: u64,
        buf: &mut [u8],
        limits: &WireLimits,
    ) -> Result<usize, WireError> {
        let len = self.checked_len(limits)?;
        let available = buf.len();
        let frame =
            buf.get_mut(..len).ok_or(WireError::BufferTooSmall { needed: len, available })?;
        self.write_checked(request_id, frame, limits)
    }

    /// Appends this message as one frame with `request_id` to `out`, and returns the frame's
    /// length.
    ///
    /// # Errors
    /// Those of [`Message::checked_len`]; `out` is unchanged then.
    pub fn encode(
        &self,
        request_id: u64,
        out: &mut Vec<u8>,
        limits: &WireLimits,
    ) -> Result<usize, WireError> {
        let len = self.checked_len(limits)?;
        let start = out.len();
        out.resize(start.saturating_add(len), 0);
        let written =
            self.write_checked(request_id, out.get_mut(start..).unwrap_or_default(), limits);
        if written.is_err() {
            out.truncate(start);
        }
        written
    }

    /// Writes the frame into `frame`, which is exactly [`Message::checked_len`] long.
    fn write_checked(
        &self,
        request_id: u64,
        frame: &mut [u8],
        limits: &WireLimits,
    ) -> Result<usize, WireError> {
        let len = frame.len();
        let declared = len.saturating_sub(LENGTH_PREFIX_LEN);
        let declared = u32::try_from(declared).map_err(|_| WireError::FrameTooLarge {
            declared: declared as u64,
            max: limits.max_frame,
        })?;
        let mut writer = Writer { buf: frame, pos: 0 };
        self.write_frame(&mut writer, declared, request_id, limits);
        debug_assert_eq!(writer.pos, len, "buffer_len and emit walk the same fields");
        Ok(len)
    }

    /// Checks every field and batch against `limits` (not the frame's size).
    fn check_limits(&self, limits: &WireLimits) -> Result<(), WireError> {
        let key = |key: &Bytes| check_field("key", key, limits.max_key);
        let keyspace = |name: &Bytes| check_field("keyspace", name, limits.max_label);
        let batch = |count: usize| check_batch(count, limits.max_batch);
        let entry = |entry: &PutEntry| {
            key(&entry.key)?;
            check_field("value", &entry.value, limits.max_value)
        };
        let outcome = |outcome: &GetOutcome| match outcome {
            GetOutcome::Found(found) => check_field("value", &found.value, limits.max_value),
            GetOutcome::Failed(_) => Ok(()),
        };
        match self {
            Message::Hello { cluster, node_id, .. } => {
                check_field("cluster", cluster, limits.max_label)?;
                check_field("node_id", node_id, limits.max_label)
            }
            Message::Get { keyspace: name, key: k, .. }
            | Message::Delete { keyspace: name, key: k }
            | Message::Peek { keyspace: name, key: k } => {
                keyspace(name)?;
                key(k)
            }
            Message::GetMany { keyspace: name, keys, .. }
            | Message::DeleteMany { keyspace: name, keys }
            | Message::DropHot { keyspace: name, keys } => {
                keyspace(name)?;
                batch(keys.len())?;
                keys.iter().try_for_each(key)
            }
            Message::GetReply(found) => outcome(found),
            Message::GetManyReply(outcomes) => {
                batch(outcomes.len())?;
                outcomes.iter().try_for_each(outcome)
            }
            Message::Put { keyspace: name, entry: e } => {
                keyspace(name)?;
                entry(e)
            }
            Message::PutMany { keyspace: name, entries } => {
                keyspace(name)?;
                batch(entries.len())?;
                entries.iter().try_for_each(entry)
            }
            Message::AckMany(results) => batch(results.len()),
            Message::ClearKeyspace { keyspace: name } => keyspace(name),
            Message::Error(_)
            | Message::Ack(_)
            | Message::Ping
            | Message::Pong
            | Message::Leaving
            | Message::HelloProof { .. } => Ok(()),
        }
    }

    /// Walks the frame's fields in order into `sink`: the one traversal behind both
    /// [`Message::buffer_len`] (counting) and [`Message::emit`] (writing).
    fn write_frame<S: Sink>(&self, s: &mut S, declared: u32, request_id: u64, limits: &WireLimits) {
        s.put(&declared.to_be_bytes());
        s.put(&[PROTOCOL_VERSION, self.kind().as_u8()]);
        s.put(&request_id.to_be_bytes());
        match self {
            Message::Hello { protocol_version, cluster, node_id, nonce } => {
                s.put(&protocol_version.to_be_bytes());
                put_field(s, cluster);
                put_field(s, node_id);
                if let Some(nonce) = nonce {
                    s.put(nonce);
                }
            }
            Message::HelloProof { mac } => s.put(mac),
            Message::Error(error) => put_error(s, error, limits),
            Message::Get { keyspace, key, timeout_ms } => {
                put_field(s, keyspace);
                put_field(s, key);
                s.put(&timeout_ms.to_be_bytes());
            }
            Message::GetReply(outcome) => put_outcome(s, outcome, limits),
            Message::GetMany { keyspace, keys, timeout_ms } => {
                put_field(s, keyspace);
                put_keys(s, keys);
                s.put(&timeout_ms.to_be_bytes());
            }
            Message::GetManyReply(outcomes) => {
                put_count(s, outcomes.len());
                for outcome in outcomes {
                    put_outcome(s, outcome, limits);
                }
            }
            Message::Put { keyspace, entry } => {
                put_field(s, keyspace);
                put_entry(s, entry);
            }
            Message::PutMany { keyspace, entries } => {
                put_field(s, keyspace);
                put_count(s, entries.len());
                for entry in entries {
                    put_entry(s, entry);
                }
            }
            Message::Delete { keyspace, key } | Message::Peek { keyspace, key } => {
                put_field(s, keyspace);
                put_field(s, key);
            }
            Message::DeleteMany { keyspace, keys } | Message::DropHot { keyspace, keys } => {
                put_field(s, keyspace);
                put_keys(s, keys);
            }
            Message::Ack(result) => put_ack(s, result, limits),
            Message::AckMany(results) => {
                put_count(s, results.len());
                for result in results {
                    put_ack(s, result, limits);
                }
            }
            Message::ClearKeyspace { keyspace } => put_field(s, keyspace),
            Message::Ping | Message::Pong | Message::Leaving => {}
        }
    }
}

fn check_field(field: &'static str, bytes: &Bytes, max: u32) -> Result<(), WireError> {
    if bytes.len() as u64 > u64::from(max) {
        return Err(WireError::FieldTooLarge { field, len: bytes.len() as u64, max });
    }
    Ok(())
}

fn check_batch(count: usize, max: u32) -> Result<(), WireError> {
    if count as u64 > u64::from(max) {
        return Err(WireError::BatchTooLarge { count: count as u64, max });
    }
    Ok(())
}

/// `message` cut to at most `max` bytes; when the cut would split a UTF-8 character, before
/// that character instead.
pub(crate) fn truncate_message(message: &[u8], max: u32) -> &[u8] {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if message.len() <= max {
        return message;
    }
    // A UTF-8 character is at most 4 bytes: back up over at most 3 continuation bytes.
    let mut cut = max;
    while cut > 0 && max - cut < 3 && message.get(cut).is_some_and(|&b| b & 0xC0 == 0x80) {
        cut -= 1;
    }
    if message.get(cut).is_some_and(|&b| b & 0xC0 == 0x80) {
        cut = max; // not UTF-8 here: a plain byte cut
    }
    message.get(..cut).unwrap_or_default()
}

/// Where the fields of a frame go: counted or written.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

/// Writes into a buffer sized by [`Counter`] beforehand; a put past the end (which would be a
/// bug in the traversal) is dropped, never a panic.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Sink for Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }
}

/// A length-prefixed byte string; its length was checked against a `u32` limit.
fn put_field<S: Sink>(s: &mut S, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    s.put(&len.to_be_bytes());
    s.put(bytes);
}

fn put_count<S: Sink>(s: &mut S, count: usize) {
    s.put(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_keys<S: Sink>(s: &mut S, keys: &[Bytes]) {
    put_count(s, keys.len());
    for key in keys {
        put_field(s, key);
    }
}

fn put_expiry<S: Sink>(s: &mut S, expires_at: Option<UnixTime>) {
    match expires_at {
        None => s.put(&[0]),
        Some(at) => {
            s.put(&[1]);
            s.put(&at.as_micros().to_be_bytes());
        }
    }
}

fn put_error<S: Sink>(s: &mut S, error: &ReplyError, limits: &WireLimits) {
    s.put(&[error.code.as_u8()]);
    put_field(s, truncate_message(&error.message, limits.max_message));
}

fn put_outcome<S: Sink>(s: &mut S, outcome: &GetOutcome, limits: &WireLimits) {
    match outcome {
        GetOutcome::Found(found) => {
            s.put(&[0]);
            put_field(s, &found.value);
            put_expiry(s, found.expires_at);
            s.put(&found.key_rate.as_milli_per_second().to_be_bytes());
        }
        GetOutcome::Failed(error) => {
            s.put(&[1]);
            put_error(s, error, limits);
        }
    }
}

fn put_entry<S: Sink>(s: &mut S, entry: &PutEntry) {
    put_field(s, &entry.key);
    put_field(s, &entry.value);
    put_expiry(s, entry.expires_at);
}

fn put_ack<S: Sink>(s: &mut S, result: &Result<(), ReplyError>, limits: &WireLimits) {
    match result {
        Ok(()) => s.put(&[0]),
        Err(error) => {
            s.put(&[1]);
            put_error(s, error, limits);
        }
    }
}

/// Checks `frame` and parses its payload.
pub(crate) fn parse_frame<T>(
    frame: &Frame<T>,
    limits: &WireLimits,
) -> Result<(FrameHeader, Message), WireError>
where
    T: AsRef<[u8]> + Borrow<Bytes>,
{
    let header = frame.check(limits)?;
    let bytes: &Bytes = frame.as_bytes().borrow();
    let end = frame.frame_len().min(bytes.len());
    let mut r = Reader { bytes, pos: super::FRAME_HEADER_LEN, end };
    let message = match header.kind {
        FrameKind::Hello => Message::Hello {
            protocol_version: u16::from_be_bytes(r.array()?),
            cluster: r.field("cluster", limits.max_label)?,
            node_id: r.field("node_id", limits.max_label)?,
            // Absent in the hellos of nodes without a secret (and of older nodes).
            nonce: if r.remaining() > 0 { Some(r.array()?) } else { None },
        },
        FrameKind::HelloProof => Message::HelloProof { mac: r.array()? },
        FrameKind::Error => Message::Error(r.error(limits)?),
        FrameKind::Get => Message::Get {
            keyspace: r.field("keyspace", limits.max_label)?,
            key: r.field("key", limits.max_key)?,
            timeout_ms: r.u32()?,
        },
        FrameKind::GetReply => Message::GetReply(r.outcome(limits)?),
        FrameKind::GetMany => Message::GetMany {
            keyspace: r.field("keyspace", limits.max_label)?,
            keys: r.keys(limits)?,
            timeout_ms: r.u32()?,
        },
        FrameKind::GetManyReply => {
            Message::GetManyReply(r.list(limits, MIN_GET_OUTCOME, |r| r.outcome(limits))?)
        }
        FrameKind::Put => Message::Put {
            keyspace: r.field("keyspace", limits.max_label)?,
            entry: r.entry(limits)?,
        },
        FrameKind::PutMany => Message::PutMany {
            keyspace: r.field("keyspace", limits.max_label)?,
            entries: r.list(limits, MIN_PUT_ENTRY, |r| r.entry(limits))?,
        },
        FrameKind::Delete => Message::Delete {
            keyspace: r.field("keyspace", limits.max_label)?,
            key: r.field("key", limits.max_key)?,
        },
        FrameKind::DeleteMany => Message::DeleteMany {
            keyspace: r.field("keyspace", limits.max_label)?,
            keys: r.keys(limits)?,
        },
        FrameKind::Ack => Message::Ack(r.ack(limits)?),
        FrameKind::AckMany => Message::AckMany(r.list(limits, MIN_ACK, |r| r.ack(limits))?),
        FrameKind::DropHot => Message::DropHot {
            keyspace: r.field("keyspace", limits.max_label)?,
            keys: r.keys(limits)?,
        },
        FrameKind::Ping => Message::Ping,
        FrameKind::Pong => Message::Pong,
        FrameKind::Leaving => Message::Leaving,
        FrameKind::ClearKeyspace => {
            Message::ClearKeyspace { keyspace: r.field("keyspace", limits.max_label)? }
        }
        FrameKind::Peek => Message::Peek {
            keyspace: r.field("keyspace", limits.max_label)?,
            key: r.field("key", limits.max_key)?,
        },
    };
    if r.pos != r.end {
        return Err(WireError::Malformed("bytes left after the payload"));
    }
    Ok((header, message))
}

/// Reads a payload front to back; every read is bounds-checked against the frame's end.
struct Reader<'a> {
    bytes: &'a Bytes,
    pos: usize,
    /// The frame's end, at most `bytes.len()`.
    end: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// The next `len` bytes as a range of `bytes`.
    fn advance(&mut self, len: usize) -> Result<core::ops::Range<usize>, WireError> {
        let start = self.pos;
        let stop = start.checked_add(len).filter(|&stop| stop <= self.end);
        let stop = stop.ok_or(WireError::Truncated)?;
        self.pos = stop;
        Ok(start..stop)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let range = self.advance(N)?;
        let slice = self.bytes.get(range).ok_or(WireError::Truncated)?;
        slice.try_into().map_err(|_| WireError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_be_bytes)
    }

    /// A 0/1 byte.
    fn flag(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed(what)),
        }
    }

    /// A length-prefixed byte string of at most `max` bytes, as a slice of the frame.
    fn field(&mut self, field: &'static str, max: u32) -> Result<Bytes, WireError> {
        let len = self.u32()?;
        if len > max {
            return Err(WireError::FieldTooLarge { field, len: u64::from(len), max });
        }
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        let range = self.advance(len)?;
        if range.end > self.bytes.len() {
            return Err(WireError::Truncated);
        }
        Ok(self.bytes.slice(range))
    }

    /// A list count, refused when over `max_batch` or more than the payload can hold at
    /// `min_item` bytes per item, and the items, read by `item`.
    fn list<T>(
        &mut self,
        limits: &WireLimits,
        min_item: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = self.u32()?;
        if count > limits.max_batch {
            return Err(WireError::BatchTooLarge {
                count: u64::from(count),
                max: limits.max_batch,
            });
        }
        let count = usize::try_from(count).map_err(|_| WireError::Truncated)?;
        if count.checked_mul(min_item).is_none_or(|needed| needed > self.remaining()) {
            return Err(WireError::Truncated);
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn keys(&mut self, limits: &WireLimits) -> Result<Vec<Bytes>, WireError> {
        self.list(limits, MIN_BYTES_FIELD, |r| r.field("key", limits.max_key))
    }

    fn expiry(&mut self) -> Result<Option<UnixTime>, WireError> {
        if self.flag("expiry presence flag is neither 0 nor 1")? {
            Ok(Some(UnixTime::from_micros(self.u64()?)))
        } else {
            Ok(None)
        }
    }

    fn error(&mut self, limits: &WireLimits) -> Result<ReplyError, WireError> {
        let byte = self.u8()?;
        let code = ErrorCode::from_u8(byte).ok_or(WireError::UnknownErrorCode(byte))?;
        Ok(ReplyError { code, message: self.field("message", limits.max_message)? })
    }

    fn outcome(&mut self, limits: &WireLimits) -> Result<GetOutcome, WireError> {
        if self.flag("get outcome tag is neither 0 nor 1")? {
            return Ok(GetOutcome::Failed(self.error(limits)?));
        }
        Ok(GetOutcome::Found(Found {
            value: self.field("value", limits.max_value)?,
            expires_at: self.expiry()?,
            key_rate: KeyRate(self.u32()?),
        }))
    }

    fn entry(&mut self, limits: &WireLimits) -> Result<PutEntry, WireError> {
        Ok(PutEntry {
            key: self.field("key", limits.max_key)?,
            value: self.field("value", limits.max_value)?,
            expires_at: self.expiry()?,
        })
    }

    fn ack(&mut self, limits: &WireLimits) -> Result<Result<(), ReplyError>, WireError> {
        if self.flag("ack tag is neither 0 nor 1")? {
            Ok(Err(self.error(limits)?))
        } else {
            Ok(Ok(()))
        }
    }
}
