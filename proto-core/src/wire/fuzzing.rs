//! `Arbitrary` for the wire types (feature `arbitrary`), for the fuzz targets.
//!
//! Byte strings and batches come from arbitrary `Vec`s, so their sizes follow the fuzzer's
//! input: with libFuzzer's usual input sizes every generated message is within
//! [`WireLimits::default`](super::WireLimits::default), and a target skips the rare message
//! whose emit fails on a limit.

use alloc::vec::Vec;

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

use super::{ErrorCode, Found, FrameKind, GetOutcome, KeyRate, Message, PutEntry, ReplyError};
use crate::time::UnixTime;

fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    Ok(Bytes::from(Vec::<u8>::arbitrary(u)?))
}

fn list<'a, T>(
    u: &mut Unstructured<'a>,
    mut item: impl FnMut(&mut Unstructured<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    // One "more?" byte per item, so that the length follows the input (and ends with it).
    let mut items = Vec::new();
    while u.arbitrary::<bool>()? {
        items.push(item(u)?);
    }
    Ok(items)
}

fn expiry(u: &mut Unstructured<'_>) -> Result<Option<UnixTime>> {
    Ok(Option::<u64>::arbitrary(u)?.map(UnixTime::from_micros))
}

impl<'a> Arbitrary<'a> for UnixTime {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(UnixTime::from_micros(u.arbitrary()?))
    }
}

impl<'a> Arbitrary<'a> for ReplyError {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(ReplyError { code: ErrorCode::arbitrary(u)?, message: bytes(u)? })
    }
}

impl<'a> Arbitrary<'a> for Found {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Found { value: bytes(u)?, expires_at: expiry(u)?, key_rate: KeyRate::arbitrary(u)? })
    }
}

impl<'a> Arbitrary<'a> for GetOutcome {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(if u.arbitrary()? {
            GetOutcome::Found(u.arbitrary()?)
        } else {
            GetOutcome::Failed(u.arbitrary()?)
        })
    }
}

impl<'a> Arbitrary<'a> for PutEntry {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(PutEntry { key: bytes(u)?, value: bytes(u)?, expires_at: expiry(u)? })
    }
}

impl<'a> Arbitrary<'a> for Message {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match FrameKind::arbitrary(u)? {
            FrameKind::Hello => Message::Hello {
                protocol_version: u.arbitrary()?,
                cluster: bytes(u)?,
                node_id: bytes(u)?,
                nonce: u.arbitrary()?,
            },
            FrameKind::HelloProof => Message::HelloProof { mac: u.arbitrary()? },
            FrameKind::Error => Message::Error(u.arbitrary()?),
            FrameKind::Get => {
                Message::Get { keyspace: bytes(u)?, key: bytes(u)?, timeout_ms: u.arbitrary()? }
            }
            FrameKind::GetReply => Message::GetReply(u.arbitrary()?),
            FrameKind::GetMany => Message::GetMany {
                keyspace: bytes(u)?,
                timeout_ms: u.arbitrary()?,
                keys: list(u, bytes)?,
            },
            FrameKind::GetManyReply => Message::GetManyReply(list(u, GetOutcome::arbitrary)?),
            FrameKind::Put => Message::Put { keyspace: bytes(u)?, entry: u.arbitrary()? },
            FrameKind::PutMany => {
                Message::PutMany { keyspace: bytes(u)?, entries: list(u, PutEntry::arbitrary)? }
            }
            FrameKind::Delete => Message::Delete { keyspace: bytes(u)?, key: bytes(u)? },
            FrameKind::DeleteMany => {
                Message::DeleteMany { keyspace: bytes(u)?, keys: list(u, bytes)? }
            }
            FrameKind::Ack => Message::Ack(ack(u)?),
            FrameKind::AckMany => Message::AckMany(list(u, ack)?),
            FrameKind::DropHot => Message::DropHot { keyspace: bytes(u)?, keys: list(u, bytes)? },
            FrameKind::Ping => Message::Ping,
            FrameKind::Pong => Message::Pong,
            FrameKind::Leaving => Message::Leaving,
            FrameKind::ClearKeyspace => Message::ClearKeyspace { keyspace: bytes(u)? },
            FrameKind::Peek => Message::Peek { keyspace: bytes(u)?, key: bytes(u)? },
        })
    }
}

fn ack(u: &mut Unstructured<'_>) -> Result<core::result::Result<(), ReplyError>> {
    Ok(if u.arbitrary()? { Err(u.arbitrary()?) } else { Ok(()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz seed generator: lists built with `arbitrary_loop` drew their length from
    /// `0..=u32::MAX` and kept pushing empty items after the input ran out (a hang, then OOM).
    #[test]
    fn arbitrary_lists_end_with_the_input() {
        for fill in [0x00, 0x01, 0xFF] {
            let input = alloc::vec![fill; 4096];
            let mut u = Unstructured::new(&input);
            while let Ok(message) = Message::arbitrary(&mut u) {
                let items = match &message {
                    Message::GetMany { keys, .. }
                    | Message::DeleteMany { keys, .. }
                    | Message::DropHot { keys, .. } => keys.len(),
                    Message::GetManyReply(outcomes) => outcomes.len(),
                    Message::PutMany { entries, .. } => entries.len(),
                    Message::AckMany(results) => results.len(),
                    _ => 0,
                };
                assert!(items <= input.len(), "{} items from {} bytes", items, input.len());
                if u.is_empty() {
                    break;
                }
            }
        }
    }
}
