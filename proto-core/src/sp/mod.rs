//! nanomsg's scalability protocols (SP) over TCP, as far as gopherdiscovery's survey
//! protocol needs them: SURVEYOR/RESPONDENT for the surveys and PUB/SUB for the member list.
//!
//! Sans-IO like the rest of the crate: the driver moves bytes, this module decides.
//!
//! # Wire (nanomsg RFC `sp-tcp-mapping-01`, `sp-protocol-ids-01`, the survey RFC; nng's
//! `tcp` transport and `survey0` protocol)
//! All integers are big-endian.
//! ```text
//! handshake, once each way as soon as the connection is up:
//!   0x00 'S' 'P' 0x00   magic and version 0
//!   u16                 the sender's protocol id (PUB 0x20, SUB 0x21, SURVEYOR 0x62, RESPONDENT 0x63)
//!   u16                 reserved, zero
//! then messages, each:
//!   u64                 length of what follows
//!   bytes               the message: for SURVEYOR/RESPONDENT a header, then the body
//! ```
//! A surveyor's message starts with the survey id, a `u32` whose high bit is set (the last
//! hop of the backtrace). A respondent answers with the backtrace it was sent (every `u32`
//! up to and including the first one with the high bit set: devices in between push their
//! own hops before it) followed by its answer. PUB/SUB messages carry no header: a
//! subscriber filters by prefix on its own side, so nothing of it crosses the wire.
//!
//! gopherdiscovery's use: the survey body is empty, an answer's body is the member's id, and
//! the published list is the ids joined by `|` ([`encode_member_list`],
//! [`parse_member_list`]).
//!
//! # Contract
//! - Peer bytes never panic and never make the decoder hold more than one message of the
//!   largest allowed size: a declared length over [`SpLimits::max_message`] is refused at the
//!   8th byte of its prefix, before any of the body is buffered ([`SpDecoder`]).
//! - A handshake is refused at the byte that shows it wrong: bad magic, another version,
//!   reserved bits set, or a protocol that is not this socket's peer ([`SpError`]).
//! - [`Surveyor`] holds the survey server's decisions (when to survey, which answers count,
//!   when the list changed); its time is an argument.

mod decoder;
mod survey;
#[cfg(test)]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use decoder::SpDecoder;
pub use survey::{Backtrace, SurveyId, Surveyor, SurveyorConfig, SurveyorOutput};

/// Bytes of the SP/TCP handshake.
pub const SP_HANDSHAKE_LEN: usize = 8;

/// Bytes of a message's length prefix.
pub const SP_LENGTH_PREFIX_LEN: usize = 8;

/// The handshake's first four bytes: magic `\0SP` and version 0.
const MAGIC: [u8; 4] = [0x00, b'S', b'P', 0x00];

/// An SP protocol id (`sp-protocol-ids-01`: the protocol number times 16 plus the role).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpProtocol(pub u16);

impl SpProtocol {
    /// PUB (2*16+0): sends every message to every subscriber.
    pub const PUB: SpProtocol = SpProtocol(0x20);
    /// SUB (2*16+1): receives what a publisher sends.
    pub const SUB: SpProtocol = SpProtocol(0x21);
    /// SURVEYOR (6*16+2): asks every respondent, collects answers for a while.
    pub const SURVEYOR: SpProtocol = SpProtocol(0x62);
    /// RESPONDENT (6*16+3): answers surveys.
    pub const RESPONDENT: SpProtocol = SpProtocol(0x63);

    /// The protocol a socket of this one must talk to, for the four this module speaks.
    #[must_use]
    pub const fn peer(self) -> Option<SpProtocol> {
        match self.0 {
            0x20 => Some(SpProtocol::SUB),
            0x21 => Some(SpProtocol::PUB),
            0x62 => Some(SpProtocol::RESPONDENT),
            0x63 => Some(SpProtocol::SURVEYOR),
            _ => None,
        }
    }

    /// Whether this protocol's messages carry a survey header (backtrace).
    #[must_use]
    pub const fn has_survey_header(self) -> bool {
        matches!(self.0, 0x62 | 0x63)
    }
}

impl fmt::Display for SpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0x20 => f.write_str("PUB"),
            0x21 => f.write_str("SUB"),
            0x62 => f.write_str("SURVEYOR"),
            0x63 => f.write_str("RESPONDENT"),
            other => write!(f, "protocol {other:#06x}"),
        }
    }
}

/// What an SP decoder or header parser refused. Every variant leaves the decoder failed
/// (the connection is to be closed), except [`SpError::DecoderFull`], which changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpError {
    /// The handshake does not start with `0x00 'S' 'P'`.
    BadMagic,
    /// The handshake's version byte is not 0.
    UnsupportedVersion(u8),
    /// The handshake's reserved bytes are not zero.
    ReservedBitsSet,
    /// The peer speaks a protocol this socket cannot talk to.
    IncompatibleProtocol {
        /// This socket's protocol.
        ours: SpProtocol,
        /// What the peer announced.
        theirs: SpProtocol,
    },
    /// A message's declared length is over [`SpLimits::max_message`].
    MessageTooLarge {
        /// The declared length.
        declared: u64,
        /// The limit.
        max: usize,
    },
    /// A push while a whole message's worth of bytes is buffered: drain first. Nothing was
    /// taken; the decoder has not failed.
    DecoderFull {
        /// Bytes buffered.
        buffered: usize,
    },
    /// A survey message without a complete backtrace (no `u32` with the high bit set).
    MissingSurveyHeader,
    /// A backtrace longer than [`MAX_HOPS`] hops.
    TooManyHops,
    /// A member list over its limits (too many ids, an id too long or not UTF-8).
    BadMemberList,
}

impl fmt::Display for SpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpError::BadMagic => f.write_str("not an SP peer: the handshake lacks \\0SP"),
            SpError::UnsupportedVersion(version) => {
                write!(f, "SP handshake version {version} (only 0 is known)")
            }
            SpError::ReservedBitsSet => f.write_str("SP handshake reserved bits are set"),
            SpError::IncompatibleProtocol { ours, theirs } => {
                write!(f, "an SP {ours} socket cannot talk to a {theirs} peer")
            }
            SpError::MessageTooLarge { declared, max } => {
                write!(f, "SP message of {declared} bytes is over the limit of {max}")
            }
            SpError::DecoderFull { buffered } => {
                write!(f, "SP decoder holds {buffered} bytes: drain it first")
            }
            SpError::MissingSurveyHeader => f.write_str("survey message without its survey id"),
            SpError::TooManyHops => f.write_str("survey backtrace has too many hops"),
            SpError::BadMemberList => f.write_str("malformed member list"),
        }
    }
}

impl core::error::Error for SpError {}

/// The most hops a backtrace may carry (nng's and nanomsg's default TTL).
pub const MAX_HOPS: usize = 8;

/// Limits of an SP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpLimits {
    /// The largest message (header and body, without the length prefix).
    pub max_message: usize,
}

impl Default for SpLimits {
    /// 64 KiB: a member list of hundreds of addresses, with room to spare.
    fn default() -> SpLimits {
        SpLimits { max_message: 64 << 10 }
    }
}

/// This socket's handshake.
#[must_use]
pub const fn encode_handshake(ours: SpProtocol) -> [u8; SP_HANDSHAKE_LEN] {
    let [high, low] = ours.0.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], high, low, 0, 0]
}

/// Checks the first `prefix.len()` bytes (up to 8) of a peer's handshake to a socket of
/// protocol `ours`: an error as soon as a byte shows it wrong.
///
/// # Errors
/// [`SpError::BadMagic`], [`SpError::UnsupportedVersion`], [`SpError::IncompatibleProtocol`]
/// or [`SpError::ReservedBitsSet`].
pub fn check_handshake_prefix(ours: SpProtocol, prefix: &[u8]) -> Result<(), SpError> {
    if prefix.iter().zip(&MAGIC[..3]).any(|(byte, expected)| byte != expected) {
        return Err(SpError::BadMagic);
    }
    if let Some(&version) = prefix.get(3)
        && version != 0
    {
        return Err(SpError::UnsupportedVersion(version));
    }
    if let (Some(&high), Some(&low)) = (prefix.get(4), prefix.get(5)) {
        let theirs = SpProtocol(u16::from_be_bytes([high, low]));
        if ours.peer() != Some(theirs) {
            return Err(SpError::IncompatibleProtocol { ours, theirs });
        }
    }
    if prefix.get(6..SP_HANDSHAKE_LEN.min(prefix.len())).is_some_and(|r| r.iter().any(|&b| b != 0))
    {
        return Err(SpError::ReservedBitsSet);
    }
    Ok(())
}

/// Appends one framed message (the length prefix, then `parts` in order) to `out`.
///
/// # Errors
/// [`SpError::MessageTooLarge`] when the parts together exceed `limits.max_message`; nothing
/// is written then.
pub fn encode_message(
    parts: &[&[u8]],
    limits: &SpLimits,
    out: &mut Vec<u8>,
) -> Result<(), SpError> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > limits.max_message {
        return Err(SpError::MessageTooLarge { declared: len as u64, max: limits.max_message });
    }
    out.reserve(SP_LENGTH_PREFIX_LEN + len);
    out.extend_from_slice(&(len as u64).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// The separator of gopherdiscovery's member list.
pub const MEMBER_SEPARATOR: u8 = b'|';

/// gopherdiscovery's member list: the ids joined by `|`, in the order given.
#[must_use]
pub fn encode_member_list<S: AsRef<str>>(members: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, member) in members.iter().enumerate() {
        if index > 0 {
            out.push(MEMBER_SEPARATOR);
        }
        out.extend_from_slice(member.as_ref().as_bytes());
    }
    out
}

/// Reads a published member list: ids split at `|`, empty ones dropped (gopherdiscovery
/// publishes `""` for no members), at most `max_members` ids of at most `max_id` bytes each.
///
/// # Errors
/// [`SpError::BadMemberList`] for an id that is not UTF-8 or too long, or too many ids.
pub fn parse_member_list(
    body: &[u8],
    max_members: usize,
    max_id: usize,
) -> Result<Vec<String>, SpError> {
    let mut members = Vec::new();
    for id in body.split(|&byte| byte == MEMBER_SEPARATOR).filter(|id| !id.is_empty()) {
        if id.len() > max_id || members.len() >= max_members {
            return Err(SpError::BadMemberList);
        }
        let id = core::str::from_utf8(id).map_err(|_| SpError::BadMemberList)?;
        members.push(String::from(id));
    }
    Ok(members)
}

/// Whether `id` can be a member id on gopherdiscovery's list: non-empty, at most `max_id`
/// bytes of UTF-8, without the separator `|`.
#[must_use]
pub fn is_valid_member_id(id: &[u8], max_id: usize) -> bool {
    !id.is_empty()
        && id.len() <= max_id
        && !id.contains(&MEMBER_SEPARATOR)
        && core::str::from_utf8(id).is_ok()
}
