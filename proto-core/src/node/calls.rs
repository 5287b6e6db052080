//! Calls this node makes to peers: fetches, peeks, forwarded writes, drops of hot copies,
//! goodbyes.
//!
//! Contract: a call is registered with its deadline before anything is sent, and ends exactly
//! once — answered ([`Node::on_reply`]), failed ([`Node::fail_call`]: connection lost, deadline,
//! refused) or dropped because its flight finished another way. [`Node::take_call`] is the one
//! way out of the table: it also unindexes the call from its connection and cancels its timer.

use alloc::vec::Vec;
use bytes::Bytes;
use hashbrown::HashMap;

use super::ids::{CallId, PendingId};
use super::timers::Timer;
use super::{ConnId, Error, Node};
use crate::flight::FlightId;
use crate::hash::KeyHashBuilder;
use crate::time::Instant;
use crate::wire::{Message, ReplyError};

/// What a call is for.
pub(super) enum CallKind {
    /// A fetch of one key for a flight.
    Get { keyspace: Bytes, flight: FlightId },
    /// A peek at the key's previous owner for a flight ([`super::handoff`]).
    Peek { keyspace: Bytes, flight: FlightId },
    /// A fetch of several keys, one flight each, in message order.
    GetMany { keyspace: Bytes, flights: Vec<FlightId> },
    /// A write sent to its owner, covering `indices` of pending write `pending`.
    Write { pending: PendingId, indices: Vec<u32> },
    /// A leaving node's goodbye to one peer, acknowledged once the peer took it off its ring:
    /// the peer's requests sent before then came on the same connection, ahead of the ack, so
    /// the node drains only after it has seen them.
    Leave,
    /// An owner's "drop your copy" to one peer, covering `indices` of pending write `pending`.
    DropHot { pending: PendingId, indices: Vec<u32> },
    /// A member back from down is told to clear a keyspace before this node relies on it
    /// again (see [`super::membership`]); a failure puts it down again.
    Rejoin,
}

/// A request this node sent (or will send) to a peer.
pub(super) struct Call {
    pub(super) peer: Bytes,
    /// The connection its request went out on.
    pub(super) conn: Option<ConnId>,
    pub(super) deadline: Instant,
    pub(super) kind: CallKind,
    /// The message, until a connection takes it.
    pub(super) unsent: Option<Message>,
}

/// The calls in progress.
pub(super) struct Calls {
    calls: HashMap<CallId, Call, KeyHashBuilder>,
}

impl Calls {
    /// No call; `hasher` seeds the table.
    pub(super) fn new(hasher: &KeyHashBuilder) -> Calls {
        Calls { calls: HashMap::with_hasher(hasher.clone()) }
    }

    /// The calls to `peer`, in id order.
    pub(super) fn to_peer(&self, peer: &[u8]) -> Vec<CallId> {
        let mut ids: Vec<CallId> =
            self.calls.iter().filter(|(_, call)| call.peer == peer).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// Whether none is in progress.
    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The call, while in progress.
    pub(super) fn get(&self, id: CallId) -> Option<&Call> {
        self.calls.get(&id)
    }

    /// The call, while in progress.
    pub(super) fn get_mut(&mut self, id: CallId) -> Option<&mut Call> {
        self.calls.get_mut(&id)
    }

    /// Registers a call.
    fn insert(&mut self, id: CallId, call: Call) {
        self.calls.insert(id, call);
    }

    /// Forgets a call (see [`Node::take_call`], the only caller).
    fn remove(&mut self, id: CallId) -> Option<Call> {
        self.calls.remove(&id)
    }
}

impl Node {
    /// Registers a call to `peer` with its deadline and hands it to the peer protocol, which
    /// sends it, queues it for a connection, or fails it at once.
    pub(super) fn send_call(
        &mut self,
        now: Instant,
        id: CallId,
        peer: Bytes,
        deadline: Instant,
        kind: CallKind,
        message: Message,
    ) {
        let call = Call { peer: peer.clone(), conn: None, deadline, kind, unsent: Some(message) };
        self.calls.insert(id, call);
        self.timers.set(deadline, Timer::Call(id));
        self.dispatch_call(now, id, peer);
    }

    /// Registers a call whose request is already on `conn` (a goodbye).
    pub(super) fn register_sent_call(&mut self, id: CallId, call: Call) {
        if let Some(conn) = call.conn {
            self.links.bind_call(conn, id);
        }
        self.timers.set(call.deadline, Timer::Call(id));
        self.calls.insert(id, call);
    }

    /// Marks a call's request as written on `conn` and returns its message, if it was unsent.
    pub(super) fn bind_call(&mut self, id: CallId, conn: ConnId) -> Option<Message> {
        let call = self.calls.get_mut(id)?;
        let message = call.unsent.take()?;
        call.conn = Some(conn);
        self.links.bind_call(conn, id);
        Some(message)
    }

    /// Ends a call: out of the table, out of its connection's index, its timer cancelled.
    pub(super) fn take_call(&mut self, id: CallId) -> Option<Call> {
        let call = self.calls.remove(id)?;
        if let Some(conn) = call.conn {
            self.links.unbind_call(conn, id);
        }
        self.timers.cancel(Timer::Call(id));
        Some(call)
    }

    /// A call failed (connection, timeout, refused): gets fall back to loading here (or ask a
    /// new owner), writes report the owner unavailable — or `TimedOut` past the deadline.
    pub(super) fn fail_call(&mut self, now: Instant, id: CallId) {
        if let Some(call) = self.take_call(id) {
            self.on_call_failed(now, id, call);
        }
    }

    /// What a failed call's end means for whoever waited on it.
    fn on_call_failed(&mut self, now: Instant, id: CallId, call: Call) {
        self.abandon_call(now, &call);
        self.on_peer_failed(now, &call.peer);
        match call.kind {
            CallKind::Get { keyspace, flight } => {
                self.on_fetch_failed(now, &keyspace, flight, id, &call.peer);
            }
            CallKind::GetMany { keyspace, flights } => {
                for flight in flights {
                    self.on_fetch_failed(now, &keyspace, flight, id, &call.peer);
                }
            }
            CallKind::Peek { keyspace, flight } => {
                self.on_peek_failed(now, &keyspace, flight, id);
            }
            // The peer went away or did not answer in time: nothing more to wait for.
            CallKind::Leave => {}
            CallKind::Rejoin => self.on_rejoin_failed(now, &call.peer),
            CallKind::Write { pending, indices } | CallKind::DropHot { pending, indices } => {
                let error = if call.deadline <= now { Error::TimedOut } else { Error::Unavailable };
                self.requests.uncover(pending, &indices, &[Err(error)]);
                self.finish_write_if_done(pending);
            }
        }
    }

    /// A peer's reply to call `id` on `conn`. A late answer (the call already ended) is
    /// dropped; a reply of the wrong shape fails the call, as a broken peer would.
    pub(super) fn on_reply(&mut self, now: Instant, conn: ConnId, id: CallId, reply: Message) {
        if self.calls.get(id).is_none_or(|call| call.conn != Some(conn)) {
            return; // a late answer to a call that already timed out or fell back
        }
        let mut call = self.take_call(id).expect("just looked up");
        let to_results = |results: Vec<Result<(), ReplyError>>| -> Vec<Result<(), Error>> {
            results
                .iter()
                .map(|r| r.as_ref().map(|_| ()).map_err(Error::from_reply_error))
                .collect()
        };
        let kind = core::mem::replace(&mut call.kind, CallKind::Leave);
        match (kind, reply) {
            (CallKind::Get { keyspace, flight }, Message::GetReply(outcome)) => {
                self.on_fetched(now, &keyspace, flight, id, &call.peer, outcome);
            }
            (CallKind::Peek { keyspace, flight }, Message::GetReply(outcome)) => {
                self.on_peeked(now, &keyspace, flight, id, outcome);
            }
            (CallKind::GetMany { keyspace, flights }, Message::GetManyReply(outcomes))
                if outcomes.len() == flights.len() =>
            {
                for (flight, outcome) in flights.into_iter().zip(outcomes) {
                    self.on_fetched(now, &keyspace, flight, id, &call.peer, outcome);
                }
            }
            (CallKind::Write { pending, indices }, Message::Ack(result)) if indices.len() == 1 => {
                self.on_write_acked(pending, &indices, &to_results(alloc::vec![result]));
            }
            (CallKind::Write { pending, indices }, Message::AckMany(results))
                if results.len() == indices.len() =>
            {
                self.on_write_acked(pending, &indices, &to_results(results));
            }
            // One confirmation covers every key the drop named.
            (CallKind::DropHot { pending, indices }, Message::Ack(result)) => {
                self.on_write_acked(pending, &indices, &to_results(alloc::vec![result]));
            }
            (CallKind::Leave, _) | (CallKind::Rejoin, Message::Ack(Ok(()))) => {}
            (kind, _) => {
                // A reply of the wrong shape: the peer is broken; treat the call as failed.
                call.kind = kind;
                self.on_call_failed(now, id, call);
            }
        }
    }

    /// `peer` went down: the calls to it end now instead of at their deadlines. Drops of hot
    /// copies count as confirmed — a member off the ring is cleared when it comes back, before
    /// this node relies on it again — so writes stop waiting on it; every other call fails
    /// (gets load here, writes forwarded to it report it unavailable).
    pub(super) fn end_calls_to_down_member(&mut self, now: Instant, peer: &[u8]) {
        for id in self.calls.to_peer(peer) {
            let Some(call) = self.take_call(id) else { continue };
            if let CallKind::DropHot { pending, indices } = &call.kind {
                self.abandon_call(now, &call);
                self.on_write_acked(*pending, indices, &[Ok(())]);
            } else {
                self.on_call_failed(now, id, call);
            }
        }
    }

    /// A unit covering `indices` of pending write `pending` was answered with `results`.
    fn on_write_acked(
        &mut self,
        pending: PendingId,
        indices: &[u32],
        results: &[Result<(), Error>],
    ) {
        self.requests.uncover(pending, indices, results);
        self.finish_write_if_done(pending);
    }
}
