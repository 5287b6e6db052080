//! The checked view over the bytes of one frame, and its header.

use super::{FRAME_HEADER_LEN, LENGTH_PREFIX_LEN, PROTOCOL_VERSION, WireError, WireLimits};

/// What a frame carries: byte 5 of the header, one per [`Message`](super::Message) variant.
///
/// Byte 0 is reserved and never valid, so that a zeroed buffer is never a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum FrameKind {
    /// [`Message::Hello`](super::Message::Hello).
    Hello = 1,
    /// [`Message::Error`](super::Message::Error).
    Error = 2,
    /// [`Message::Get`](super::Message::Get).
    Get = 3,
    /// [`Message::GetReply`](super::Message::GetReply).
    GetReply = 4,
    /// [`Message::GetMany`](super::Message::GetMany).
    GetMany = 5,
    /// [`Message::GetManyReply`](super::Message::GetManyReply).
    GetManyReply = 6,
    /// [`Message::Put`](super::Message::Put).
    Put = 7,
    /// [`Message::PutMany`](super::Message::PutMany).
    PutMany = 8,
    /// [`Message::Delete`](super::Message::Delete).
    Delete = 9,
    /// [`Message::DeleteMany`](super::Message::DeleteMany).
    DeleteMany = 10,
    /// [`Message::Ack`](super::Message::Ack).
    Ack = 11,
    /// [`Message::AckMany`](super::Message::AckMany).
    AckMany = 12,
    /// [`Message::DropHot`](super::Message::DropHot).
    DropHot = 13,
    /// [`Message::Ping`](super::Message::Ping).
    Ping = 14,
    /// [`Message::Pong`](super::Message::Pong).
    Pong = 15,
    /// [`Message::Leaving`](super::Message::Leaving).
    Leaving = 16,
    /// [`Message::ClearKeyspace`](super::Message::ClearKeyspace).
    ClearKeyspace = 17,
    /// [`Message::Peek`](super::Message::Peek).
    Peek = 18,
    /// [`Message::HelloProof`](super::Message::HelloProof).
    HelloProof = 19,
}

impl FrameKind {
    /// Every kind, in byte order.
    pub const ALL: [FrameKind; 19] = [
        FrameKind::Hello,
        FrameKind::Error,
        FrameKind::Get,
        FrameKind::GetReply,
        FrameKind::GetMany,
        FrameKind::GetManyReply,
        FrameKind::Put,
        FrameKind::PutMany,
        FrameKind::Delete,
        FrameKind::DeleteMany,
        FrameKind::Ack,
        FrameKind::AckMany,
        FrameKind::DropHot,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Leaving,
        FrameKind::ClearKeyspace,
        FrameKind::Peek,
        FrameKind::HelloProof,
    ];

    /// The kind whose byte is `byte`, if any.
    #[must_use]
    pub const fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1..=19 => Some(Self::ALL[byte as usize - 1]),
            _ => None,
        }
    }

    /// The kind's byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The fixed fields of a frame after its length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The framing version, [`PROTOCOL_VERSION`] in any frame that passed a check.
    pub version: u8,
    /// What the payload is.
    pub kind: FrameKind,
    /// The request this frame is or answers; the nonce of ping and pong; 0 in one-way frames.
    pub request_id: u64,
}

/// A view over the bytes of one frame (smoltcp's `Packet`): the accessors read the fields in
/// place, nothing is copied.
///
/// [`Frame::new_checked`] validates, in O(1), everything that does not need the payload to be
/// parsed: the length field against the buffer and [`WireLimits::max_frame`], the version and
/// the kind. [`Message::parse`](super::Message::parse) then reads the payload.
///
/// The buffer may be longer than the frame (a stream buffer with more frames behind this one):
/// the frame is the first [`Frame::frame_len`] bytes and the rest is ignored.
///
/// A view from [`Frame::new_unchecked`] may be over any bytes; its accessors never panic, they
/// read missing bytes as zero ([`Frame::payload`] is then empty) and [`Frame::header`] reports
/// what [`Frame::check`] would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view over `buffer` without any check.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// A view over `buffer` once [`Frame::check`] passed.
    ///
    /// # Errors
    /// As [`Frame::check`].
    pub fn new_checked(buffer: T, limits: &WireLimits) -> Result<Frame<T>, WireError> {
        let frame = Frame::new_unchecked(buffer);
        frame.check(limits)?;
        Ok(frame)
    }

    /// Validates the header and the buffer's length, and returns the header.
    ///
    /// # Errors
    /// [`WireError::Malformed`] for a length field under the header size,
    /// [`WireError::FrameTooLarge`] over [`WireLimits::max_frame`],
    /// [`WireError::UnsupportedVersion`], [`WireError::UnknownKind`], in that order, as far as
    /// the bytes go; then [`WireError::Truncated`] when the buffer is shorter than the frame.
    pub fn check(&self, limits: &WireLimits) -> Result<FrameHeader, WireError> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < LENGTH_PREFIX_LEN {
            return Err(WireError::Truncated);
        }
        super::check_prefix(bytes.get(..6).unwrap_or(bytes), limits)?;
        if bytes.len() < self.frame_len() {
            return Err(WireError::Truncated);
        }
        self.header()
    }

    /// The header.
    ///
    /// # Errors
    /// Never for a view from [`Frame::new_checked`]. On an unchecked view:
    /// [`WireError::Truncated`] when the buffer is shorter than the header,
    /// [`WireError::UnsupportedVersion`] or [`WireError::UnknownKind`].
    pub fn header(&self) -> Result<FrameHeader, WireError> {
        if self.buffer.as_ref().len() < FRAME_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let version = self.version();
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let kind_byte = self.kind_byte();
        let kind = FrameKind::from_u8(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
        Ok(FrameHeader { version, kind, request_id: self.request_id() })
    }

    /// The length field: the frame's bytes after the prefix.
    #[must_use]
    pub fn len_field(&self) -> u32 {
        u32::from_be_bytes(self.array::<4>(0))
    }

    /// The whole frame's length, prefix included: `len_field() + 4` (saturating on 16- and
    /// 32-bit targets).
    #[must_use]
    pub fn frame_len(&self) -> usize {
        usize::try_from(u64::from(self.len_field()) + LENGTH_PREFIX_LEN as u64)
            .unwrap_or(usize::MAX)
    }

    /// The version byte.
    #[must_use]
    pub fn version(&self) -> u8 {
        self.array::<1>(4)[0]
    }

    /// The kind byte, known or not.
    #[must_use]
    pub fn kind_byte(&self) -> u8 {
        self.array::<1>(5)[0]
    }

    /// The request id.
    #[must_use]
    pub fn request_id(&self) -> u64 {
        u64::from_be_bytes(self.array::<8>(6))
    }

    /// The payload: the bytes after the header, up to the frame's end.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(FRAME_HEADER_LEN..self.frame_len()).unwrap_or_default()
    }

    /// The underlying buffer, whole.
    #[must_use]
    pub fn as_bytes(&self) -> &T {
        &self.buffer
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `N` bytes at `at`, zeros where the buffer ends.
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0; N];
        let source = self.buffer.as_ref().get(at..).unwrap_or_default();
        for (dst, src) in out.iter_mut().zip(source) {
            *dst = *src;
        }
        out
    }
}
