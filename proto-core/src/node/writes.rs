//! Writes: puts, deletes, their batches and keyspace clears.
//!
//! Contract: a local write goes to each key's owner (grouped into one message per owner); the
//! owner applies it, invalidates the key's flight (a delete beats an in-flight load), and asks
//! every other ring member to drop its copy. The write is acknowledged only when every unit
//! covering a key — the owner's write, each member's drop — confirmed; an unreachable member
//! fails it (`Unavailable`, or `TimedOut` at the deadline). A peer's write is applied here and
//! never forwarded again. Without writes on the peer protocol's wire (groupcache HTTP) writes
//! apply to this node only.

use alloc::vec;
use alloc::vec::Vec;
use bytes::Bytes;

use super::batching::batches_by_owner;
use super::calls::CallKind;
use super::ids::PendingId;
use super::requests::{PendingState, WriteSlot, write_slots};
use super::{ConnId, Entry, Error, Node};
use crate::cache::{InsertError, Tier};
use crate::time::Instant;
use crate::wire::{Message, PutEntry};

/// One key's write.
#[derive(Clone)]
pub(super) enum WriteOp {
    Put(Entry),
    Delete(Bytes),
}

impl WriteOp {
    /// The key written.
    pub(super) fn key(&self) -> &Bytes {
        match self {
            WriteOp::Put(entry) => &entry.key,
            WriteOp::Delete(key) => key,
        }
    }

    /// About the bytes it takes in a batch frame.
    fn wire_size(&self) -> usize {
        match self {
            WriteOp::Put(entry) => entry.key.len() + entry.value.len() + 32,
            WriteOp::Delete(key) => key.len() + 8,
        }
    }
}

impl Node {
    /// A write frame from a peer (puts, deletes, drops of hot copies, keyspace clears). Writes
    /// are answered `Overloaded` at once when too much is in progress; drops and clears are
    /// applied and acknowledged at once.
    pub(super) fn on_write_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        overloaded: bool,
        message: Message,
    ) {
        let (keyspace, ops, many) = match message {
            Message::Put { keyspace, entry } => (keyspace, vec![self.put_op(entry)], false),
            Message::PutMany { keyspace, entries } => {
                let ops = entries.into_iter().map(|entry| self.put_op(entry)).collect();
                (keyspace, ops, true)
            }
            Message::Delete { keyspace, key } => (keyspace, vec![WriteOp::Delete(key)], false),
            Message::DeleteMany { keyspace, keys } => {
                (keyspace, keys.into_iter().map(WriteOp::Delete).collect(), true)
            }
            Message::DropHot { keyspace, keys } => {
                if let Some(keyspace) = self.keyspaces.get_mut(&keyspace) {
                    keyspace.drop_copies(&keys);
                }
                self.send_reply(conn, request_id, Message::Ack(Ok(())));
                return;
            }
            Message::ClearKeyspace { keyspace } => {
                if let Some(keyspace) = self.keyspaces.get_mut(&keyspace) {
                    keyspace.clear();
                }
                self.send_reply(conn, request_id, Message::Ack(Ok(())));
                return;
            }
            _ => return,
        };
        if overloaded {
            let error = Error::Overloaded.to_reply_error();
            let reply = if many {
                Message::AckMany(vec![Err(error); ops.len()])
            } else {
                Message::Ack(Err(error))
            };
            self.send_reply(conn, request_id, reply);
            return;
        }
        let pending = self.new_remote(now, conn, request_id, 0);
        self.start_write(now, pending, keyspace, ops, many, false);
    }

    /// A peer's put entry, its expiry on this node's clock.
    fn put_op(&self, entry: PutEntry) -> WriteOp {
        WriteOp::Put(Entry {
            key: entry.key,
            value: entry.value,
            expires_at: entry.expires_at.map(|unix| self.instant_of(unix)),
        })
    }

    /// Starts a put or delete (or a batch of them) for request `pending`. `local` requests go
    /// to each key's owner; a peer's request is applied here (never forwarded again), within
    /// the keyspace's write timeout.
    pub(super) fn start_write(
        &mut self,
        now: Instant,
        pending: PendingId,
        keyspace_name: Bytes,
        ops: Vec<WriteOp>,
        many: bool,
        local: bool,
    ) {
        let mut slots = vec![WriteSlot::default(); ops.len()];
        let limits = self.config.limits;
        let known =
            self.keyspaces.get(&keyspace_name).map(|keyspace| keyspace.config.write_timeout);
        let leaving = self.membership.is_leaving();
        let quorate = self.is_quorate();
        // Without writes on the peer protocol's wire, they apply here only.
        let forward = local && self.config.peer_protocol.carries_writes();
        let mut own: Vec<(u32, WriteOp)> = Vec::new();
        let mut remote: Vec<(Bytes, (u32, WriteOp))> = Vec::new();
        for (index, op) in ops.into_iter().enumerate() {
            let slot = &mut slots[index];
            if leaving {
                slot.error = Some(Error::ShuttingDown);
            } else if !quorate {
                slot.error = Some(Error::Unavailable);
            } else if known.is_none() {
                slot.error = Some(Error::UnknownKeyspace);
            } else if op.key().len() > limits.max_key as usize
                || matches!(&op, WriteOp::Put(entry) if entry.value.len() > limits.max_value as usize)
            {
                slot.error = Some(Error::TooLarge);
            } else {
                match self.owner_of(op.key()).filter(|_| forward) {
                    Some(owner) => remote.push((owner, (index as u32, op))),
                    None => own.push((index as u32, op)),
                }
            }
        }
        if let (Some(write_timeout), Some(entry)) = (known, self.requests.get(pending)) {
            if entry.is_from_peer() {
                let deadline = entry.deadline.min(now + write_timeout);
                self.shorten_deadline(pending, deadline);
            }
        }
        if let Some(state) = self.requests.state_mut(pending) {
            *state = PendingState::Write { slots, many };
        }
        // Drop our own copies of keys written elsewhere, and keep our flights from caching
        // what they loaded before the write.
        if let Some(keyspace) = self.keyspaces.get_mut(&keyspace_name) {
            keyspace.drop_copies(remote.iter().map(|(_, (_, op))| op.key()));
        }
        let deadline = self.requests.get(pending).map_or(now, |entry| entry.deadline);
        let (max_count, max_bytes) = self.batch_limits();
        let entry_size = |(_, op): &(u32, WriteOp)| op.wire_size();
        for (owner, group) in batches_by_owner(remote, max_count, max_bytes, entry_size) {
            let indices: Vec<u32> = group.iter().map(|(index, _)| *index).collect();
            let ops = group.into_iter().map(|(_, op)| op).collect();
            let message = self.write_message(&keyspace_name, ops, many);
            self.requests.cover(pending, &indices);
            let call = self.ids.call();
            let kind = CallKind::Write { pending, indices };
            self.send_call(now, call, owner, deadline, kind, message);
        }
        if !own.is_empty() {
            self.owner_write(now, pending, &keyspace_name, own);
        }
        self.finish_write_if_done(pending);
    }

    /// Applies writes this node is the owner for, then asks every other ring member to drop its
    /// copies; the write completes when all confirmed.
    fn owner_write(
        &mut self,
        now: Instant,
        pending: PendingId,
        keyspace_name: &Bytes,
        ops: Vec<(u32, WriteOp)>,
    ) {
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let mut applied: Vec<u32> = Vec::new();
        let mut keys: Vec<Bytes> = Vec::new();
        let mut errors: Vec<(u32, Error)> = Vec::new();
        for (index, op) in ops {
            keyspace.flights.invalidate(op.key());
            match op {
                WriteOp::Put(entry) => {
                    let expires_at = entry
                        .expires_at
                        .or_else(|| keyspace.config.default_ttl.map(|ttl| now + ttl));
                    let key = Bytes::copy_from_slice(&entry.key);
                    let value = Bytes::copy_from_slice(&entry.value);
                    match keyspace.cache.insert(now, Tier::Main, key, value, expires_at) {
                        Ok(_) | Err(InsertError::AlreadyExpired) => {}
                        Err(InsertError::TooLarge { .. }) => errors.push((index, Error::TooLarge)),
                    }
                    keys.push(entry.key);
                }
                WriteOp::Delete(key) => {
                    keyspace.cache.remove(&key);
                    keyspace.hot.forget(&key);
                    keys.push(key);
                }
            }
            applied.push(index);
        }
        self.requests.fail_slots(pending, errors);
        if !self.config.peer_protocol.carries_writes() {
            return; // no peer to tell: groupcache peers keep their copies
        }
        let (max_count, max_bytes) = self.batch_limits();
        let no_owner = Bytes::new();
        let items = applied.into_iter().zip(keys).map(|item| (no_owner.clone(), item)).collect();
        for (_, batch) in batches_by_owner(items, max_count, max_bytes, |(_, key)| key.len() + 8) {
            let (indices, keys): (Vec<u32>, Vec<Bytes>) = batch.into_iter().unzip();
            let message = Message::DropHot { keyspace: keyspace_name.clone(), keys };
            self.confirm_with_members(now, pending, &indices, &message);
        }
    }

    /// Sends `message` to every other ring member as a call covering `indices` of a pending
    /// write. Every member must confirm, connected now or not: one whose connection dropped may
    /// still hold a copy it fetched earlier. An unreachable member fails the write (it is not
    /// acknowledged) rather than leave a stale copy out there.
    fn confirm_with_members(
        &mut self,
        now: Instant,
        pending: PendingId,
        indices: &[u32],
        message: &Message,
    ) {
        let deadline = self.requests.get(pending).map_or(now, |entry| entry.deadline);
        let members: Vec<Bytes> = self
            .ring
            .peers()
            .iter()
            .filter(|member| **member != self.config.node_id)
            .cloned()
            .collect();
        for peer in members {
            self.requests.cover(pending, indices);
            let call = self.ids.call();
            let kind = CallKind::DropHot { pending, indices: indices.to_vec() };
            self.send_call(now, call, peer, deadline, kind, message.clone());
        }
    }

    /// Clears a keyspace here and on every other ring member; done when all confirmed.
    pub(super) fn delete_keyspace(&mut self, now: Instant, pending: PendingId, keyspace: Bytes) {
        let error = if self.membership.is_leaving() {
            Some(Error::ShuttingDown)
        } else if !self.is_quorate() {
            Some(Error::Unavailable)
        } else if !self.keyspaces.contains_key(&keyspace) {
            Some(Error::UnknownKeyspace)
        } else {
            None
        };
        if let Some(state) = self.requests.state_mut(pending) {
            *state = PendingState::Write { slots: write_slots(1, error.clone()), many: false };
        }
        if error.is_none() {
            if let Some(state) = self.keyspaces.get_mut(&keyspace) {
                state.clear();
            }
            if self.config.peer_protocol.carries_writes() {
                let message = Message::ClearKeyspace { keyspace };
                self.confirm_with_members(now, pending, &[0], &message);
            }
        }
        self.finish_write_if_done(pending);
    }

    /// The message that carries `ops` to their owner: a single put or delete, or a batch
    /// (`many`, or several keys).
    fn write_message(&self, keyspace: &Bytes, ops: Vec<WriteOp>, many: bool) -> Message {
        let to_entry = |entry: Entry| PutEntry {
            key: entry.key,
            value: entry.value,
            expires_at: entry.expires_at.map(|at| self.unix_of(at)),
        };
        let all_puts = ops.iter().all(|op| matches!(op, WriteOp::Put(_)));
        match (many, ops.len(), all_puts) {
            (false, 1, true) => {
                let Some(WriteOp::Put(entry)) = ops.into_iter().next() else {
                    unreachable!("one put")
                };
                Message::Put { keyspace: keyspace.clone(), entry: to_entry(entry) }
            }
            (false, 1, false) => {
                Message::Delete { keyspace: keyspace.clone(), key: ops[0].key().clone() }
            }
            (_, _, true) => Message::PutMany {
                keyspace: keyspace.clone(),
                entries: ops
                    .into_iter()
                    .filter_map(
                        |op| if let WriteOp::Put(e) = op { Some(to_entry(e)) } else { None },
                    )
                    .collect(),
            },
            (_, _, false) => Message::DeleteMany {
                keyspace: keyspace.clone(),
                keys: ops.iter().map(|op| op.key().clone()).collect(),
            },
        }
    }
}
