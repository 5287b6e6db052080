//! Batching: grouping keys by owner into frames that fit the wire limits, and shrinking a
//! batch reply that does not fit.
//!
//! Contract: no frame the node builds from a batch breaks [`WireLimits`] — requests are cut to
//! at most `max_batch` items and about `max_frame` bytes per frame before they are built, and a
//! reply over the frame limit sheds its largest values (each answered `Overloaded`, a peer
//! failure the requester answers by loading the key itself).

use alloc::vec;
use alloc::vec::Vec;
use bytes::Bytes;

use super::{Error, Node};
use crate::wire::{GetOutcome, Message, WireError, WireLimits};

impl Node {
    /// The most items, and about the most bytes of items, one batch frame may carry.
    pub(super) fn batch_limits(&self) -> (usize, usize) {
        let limits = self.config.limits;
        let headroom = limits.max_label as usize + 1_024;
        ((limits.max_batch as usize).max(1), (limits.max_frame as usize).saturating_sub(headroom))
    }
}

/// Groups `items` by owner and cuts each owner's share into batches of at most `max_count`
/// items and about `max_bytes` bytes (by `size`), so that no frame breaks a wire limit.
pub(super) fn batches_by_owner<T>(
    mut items: Vec<(Bytes, T)>,
    max_count: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<(Bytes, Vec<T>)> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut batches: Vec<(Bytes, Vec<T>)> = Vec::new();
    let mut bytes = 0;
    for (owner, item) in items {
        let item_size = size(&item);
        match batches.last_mut() {
            Some((last, batch))
                if *last == owner && batch.len() < max_count && bytes + item_size <= max_bytes =>
            {
                bytes += item_size;
                batch.push(item);
            }
            _ => {
                bytes = item_size;
                batches.push((owner, vec![item]));
            }
        }
    }
    batches
}

/// A batch reply over the frame limit loses its largest values, each answered `Overloaded`
/// instead (a peer failure: the requester loads those keys itself). Other replies are small.
pub(super) fn fit_reply(mut message: Message, limits: &WireLimits) -> Message {
    while matches!(message.checked_len(limits), Err(WireError::FrameTooLarge { .. })) {
        let Message::GetManyReply(outcomes) = &mut message else { break };
        let largest = outcomes
            .iter()
            .enumerate()
            .filter_map(|(index, outcome)| match outcome {
                GetOutcome::Found(found) => Some((found.value.len(), index)),
                GetOutcome::Failed(_) => None,
            })
            .max();
        let Some((_, index)) = largest else { break };
        outcomes[index] = GetOutcome::Failed(Error::Overloaded.to_reply_error());
    }
    message
}

/// The reply sent when `message` cannot be encoded at all: `Overloaded` in the expected shape,
/// so the requester still hears back.
pub(super) fn overloaded_like(message: &Message) -> Message {
    let error = Error::Overloaded.to_reply_error();
    match message {
        Message::GetReply(_) => Message::GetReply(GetOutcome::Failed(error)),
        Message::GetManyReply(outcomes) => {
            Message::GetManyReply(vec![GetOutcome::Failed(error); outcomes.len()])
        }
        Message::AckMany(results) => Message::AckMany(vec![Err(error); results.len()]),
        _ => Message::Ack(Err(error)),
    }
}
