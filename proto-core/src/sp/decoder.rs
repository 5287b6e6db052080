//! Cutting the peer's handshake and messages out of an SP/TCP byte stream.

use bytes::{Bytes, BytesMut};

use super::{
    SP_HANDSHAKE_LEN, SP_LENGTH_PREFIX_LEN, SpError, SpLimits, SpProtocol, check_handshake_prefix,
};

/// An incremental decoder for the receive side of one SP/TCP connection of protocol `ours`.
///
/// Push each read with [`SpDecoder::push`], then drain [`SpDecoder::next_message`] until it
/// returns `Ok(None)`. The first 8 bytes are the peer's handshake; [`SpDecoder::peer`] is
/// `Some` once it was read and accepted.
///
/// # Contract
/// - **Early refusal.** A handshake byte that shows it wrong, or a length prefix over
///   [`SpLimits::max_message`], is an error as soon as that byte arrives (the 8th byte of the
///   prefix for a length), before the body is buffered — for the message at the front of the
///   buffer, which is every message when the caller drains after each push.
/// - **Bounded memory.** Let `M` be 8 + `max_message` (one whole framed message of the
///   largest size). After a drain to `Ok(None)` fewer than `M` bytes are buffered; a push while
///   `M` or more bytes are buffered is refused with [`SpError::DecoderFull`]. A body is never
///   reserved ahead: memory grows with the bytes that arrived.
/// - **Zero copy.** A message is split off the buffer and frozen.
/// - **Fail for good.** After any error but [`SpError::DecoderFull`], every call returns that
///   error; the connection is to be closed.
#[derive(Debug)]
pub struct SpDecoder {
    ours: SpProtocol,
    limits: SpLimits,
    buffer: BytesMut,
    peer: Option<SpProtocol>,
    failed: Option<SpError>,
}

impl SpDecoder {
    /// A decoder for a socket of protocol `ours`, enforcing `limits`.
    #[must_use]
    pub fn new(ours: SpProtocol, limits: SpLimits) -> SpDecoder {
        SpDecoder { ours, limits, buffer: BytesMut::new(), peer: None, failed: None }
    }

    /// The peer's protocol, once its handshake was read and accepted.
    #[must_use]
    pub const fn peer(&self) -> Option<SpProtocol> {
        self.peer
    }

    /// Bytes received and not yet returned.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The error the decoder failed with, if it has.
    #[must_use]
    pub const fn error(&self) -> Option<SpError> {
        self.failed
    }

    /// The most bytes the decoder buffers between drains (one framed message of the largest
    /// size, or the handshake).
    #[must_use]
    pub const fn max_buffered(&self) -> usize {
        SP_LENGTH_PREFIX_LEN + self.limits.max_message
    }

    /// Appends the next bytes of the stream.
    ///
    /// # Errors
    /// - [`SpError::DecoderFull`]: a whole message's worth is buffered (drain first). Nothing
    ///   was taken; the decoder has not failed.
    /// - A handshake error, or [`SpError::MessageTooLarge`], when these bytes complete a
    ///   prefix that shows it. The decoder has failed.
    /// - The error it failed with earlier.
    pub fn push(&mut self, data: &[u8]) -> Result<(), SpError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let buffered = self.buffer.len();
        if buffered >= self.max_buffered() {
            return Err(SpError::DecoderFull { buffered });
        }
        // The handshake or the front message's length prefix: both are 8 bytes.
        if buffered < SP_LENGTH_PREFIX_LEN {
            let mut head = [0u8; SP_LENGTH_PREFIX_LEN];
            let mut len = 0;
            for (dst, src) in head.iter_mut().zip(self.buffer.iter().chain(data)) {
                *dst = *src;
                len += 1;
            }
            if let Err(error) = self.check_head(head.get(..len).unwrap_or_default()) {
                return Err(self.fail(error));
            }
        }
        self.buffer.extend_from_slice(data);
        if self.peer.is_none() && self.buffer.len() >= SP_HANDSHAKE_LEN {
            // The handshake (checked above) is consumed here, so that `peer` says at once
            // whether it completed; a length prefix behind it in the same push is checked too.
            let handshake = self.buffer.split_to(SP_HANDSHAKE_LEN);
            self.peer = Some(SpProtocol(u16::from_be_bytes([handshake[4], handshake[5]])));
            let front = self.buffer.len().min(SP_LENGTH_PREFIX_LEN);
            let head: [u8; SP_LENGTH_PREFIX_LEN] = {
                let mut head = [0u8; SP_LENGTH_PREFIX_LEN];
                head[..front].copy_from_slice(&self.buffer[..front]);
                head
            };
            if let Err(error) = self.check_head(&head[..front]) {
                return Err(self.fail(error));
            }
        }
        Ok(())
    }

    /// The next complete message (header and body), or `Ok(None)` when more bytes are needed.
    /// The peer's handshake is no message: [`SpDecoder::push`] consumes it as soon as its 8
    /// bytes are in.
    ///
    /// # Errors
    /// As [`SpDecoder::push`], for a prefix that became visible after a drain. The decoder has
    /// failed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, SpError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let head_len = self.buffer.len().min(SP_LENGTH_PREFIX_LEN);
        let head: [u8; SP_LENGTH_PREFIX_LEN] = {
            let mut head = [0u8; SP_LENGTH_PREFIX_LEN];
            head[..head_len].copy_from_slice(&self.buffer[..head_len]);
            head
        };
        if let Err(error) = self.check_head(&head[..head_len]) {
            return Err(self.fail(error));
        }
        if head_len < SP_LENGTH_PREFIX_LEN || self.peer.is_none() {
            return Ok(None);
        }
        // check_head bounded it by max_message, a usize.
        let len = usize::try_from(u64::from_be_bytes(head)).unwrap_or(usize::MAX);
        if self.buffer.len() - SP_LENGTH_PREFIX_LEN < len {
            return Ok(None);
        }
        let _ = self.buffer.split_to(SP_LENGTH_PREFIX_LEN);
        let message = self.buffer.split_to(len).freeze();
        if self.buffer.is_empty() {
            self.buffer = BytesMut::new();
        }
        Ok(Some(message))
    }

    /// Checks the front 8-byte prefix, complete or not: the handshake before one was read,
    /// a length prefix after.
    fn check_head(&self, head: &[u8]) -> Result<(), SpError> {
        if self.peer.is_none() {
            return check_handshake_prefix(self.ours, head);
        }
        if let Ok(prefix) = <[u8; SP_LENGTH_PREFIX_LEN]>::try_from(head) {
            let declared = u64::from_be_bytes(prefix);
            if declared > self.limits.max_message as u64 {
                return Err(SpError::MessageTooLarge { declared, max: self.limits.max_message });
            }
        }
        Ok(())
    }

    fn fail(&mut self, error: SpError) -> SpError {
        self.failed = Some(error);
        self.buffer = BytesMut::new();
        error
    }
}
