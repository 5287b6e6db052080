//! Requests in progress: a local caller's (named by its [`RequestId`]) or a peer's (named by
//! the connection it came on and the peer's request id), each answered exactly once — by
//! [`Node::finish_request`] or at its deadline.
//!
//! Contract of [`Requests`]: a local request id maps to at most one request in progress, and
//! the map from local ids is updated with the table itself, never apart from it. A write's
//! slots count the units (owner writes, drops at peers) still covering each key; the write is
//! answered when every count is zero.

use alloc::vec;
use alloc::vec::Vec;
use bytes::Bytes;
use hashbrown::HashMap;

use super::ids::PendingId;
use super::keyspace::Waiter;
use super::timers::Timer;
use super::{ConnId, Error, InputError, Node, Output, Reply, RequestId, Value};
use crate::flight::FlightId;
use crate::hash::KeyHashBuilder;
use crate::time::{Duration, Instant};
use crate::wire::{Found, GetOutcome, KeyRate, Message};

/// A value served, with the key's request rate as this node sees it.
#[derive(Clone, Debug)]
pub(super) struct Served {
    pub(super) value: Value,
    pub(super) rate: f64,
}

/// The result of one key's get.
pub(super) type GetResult = Result<Served, Error>;

/// One key of a batch get.
#[derive(Default)]
pub(super) struct Part {
    pub(super) result: Option<GetResult>,
    /// The flight it waits on, while it waits.
    pub(super) flight: Option<FlightId>,
    /// Looked up again once because its value expired before the batch could be answered.
    pub(super) refreshed: bool,
}

impl Part {
    /// Whether its value is in and expired at `now`.
    pub(super) fn is_expired(&self, now: Instant) -> bool {
        matches!(&self.result, Some(Ok(served)) if served.value.expires_at.is_some_and(|at| at <= now))
    }
}

/// Who gets the answer.
pub(super) enum Origin {
    /// A local caller.
    Local(RequestId),
    /// A peer, on a connection, under its request id (0: no answer expected).
    Peer { conn: ConnId, request_id: u64 },
}

/// One index of a pending write: how many units still cover it, and the first error.
#[derive(Clone, Default)]
pub(super) struct WriteSlot {
    pub(super) waiting: u32,
    pub(super) error: Option<Error>,
}

/// What a request is waiting for.
pub(super) enum PendingState {
    /// A single get, waiting on `flight` while it is `Some`.
    Get { keyspace: Bytes, flight: Option<FlightId> },
    /// A batch get, answered when `remaining` reaches 0.
    GetMany { keyspace: Bytes, keys: Vec<Bytes>, parts: Vec<Part>, remaining: usize },
    /// A put, delete or keyspace clear (or a batch of them), one slot per key.
    Write { slots: Vec<WriteSlot>, many: bool },
}

/// A request in progress.
pub(super) struct Pending {
    pub(super) origin: Origin,
    pub(super) deadline: Instant,
    pub(super) state: PendingState,
}

impl Pending {
    /// Whether a peer sent it.
    pub(super) fn is_from_peer(&self) -> bool {
        matches!(self.origin, Origin::Peer { .. })
    }
}

/// The requests in progress.
pub(super) struct Requests {
    pending: HashMap<PendingId, Pending, KeyHashBuilder>,
    local: HashMap<RequestId, PendingId, KeyHashBuilder>,
}

impl Requests {
    /// No request; `hasher` seeds the tables.
    pub(super) fn new(hasher: &KeyHashBuilder) -> Requests {
        Requests {
            pending: HashMap::with_hasher(hasher.clone()),
            local: HashMap::with_hasher(hasher.clone()),
        }
    }

    /// Requests in progress.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is in progress.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether a local request with this id is in progress.
    pub(super) fn has_local(&self, request: RequestId) -> bool {
        self.local.contains_key(&request)
    }

    /// Registers a request (and its local id, if local).
    pub(super) fn insert(&mut self, id: PendingId, pending: Pending) {
        if let Origin::Local(request) = pending.origin {
            self.local.insert(request, id);
        }
        self.pending.insert(id, pending);
    }

    /// The request, while in progress.
    pub(super) fn get(&self, id: PendingId) -> Option<&Pending> {
        self.pending.get(&id)
    }

    /// The request, while in progress.
    pub(super) fn get_mut(&mut self, id: PendingId) -> Option<&mut Pending> {
        self.pending.get_mut(&id)
    }

    /// What the request waits for, while in progress.
    pub(super) fn state_mut(&mut self, id: PendingId) -> Option<&mut PendingState> {
        self.pending.get_mut(&id).map(|pending| &mut pending.state)
    }

    /// Forgets a request (and its local id).
    pub(super) fn remove(&mut self, id: PendingId) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        if let Origin::Local(request) = pending.origin {
            self.local.remove(&request);
        }
        Some(pending)
    }

    /// The key of part `index` of a batch get.
    pub(super) fn batch_key(&self, id: PendingId, index: usize) -> Option<Bytes> {
        match &self.pending.get(&id)?.state {
            PendingState::GetMany { keys, .. } => keys.get(index).cloned(),
            _ => None,
        }
    }

    /// One more unit covers each of `indices` of a pending write.
    pub(super) fn cover(&mut self, id: PendingId, indices: &[u32]) {
        if let Some(PendingState::Write { slots, .. }) = self.state_mut(id) {
            for &index in indices {
                if let Some(slot) = slots.get_mut(index as usize) {
                    slot.waiting += 1;
                }
            }
        }
    }

    /// One unit covering `indices` of a pending write finished with `results` (one per index,
    /// or one for all); the first error of a slot sticks.
    pub(super) fn uncover(
        &mut self,
        id: PendingId,
        indices: &[u32],
        results: &[Result<(), Error>],
    ) {
        let Some(PendingState::Write { slots, .. }) = self.state_mut(id) else { return };
        for (position, &index) in indices.iter().enumerate() {
            let Some(slot) = slots.get_mut(index as usize) else { continue };
            slot.waiting = slot.waiting.saturating_sub(1);
            let result = results.get(position).or(results.first());
            if let Some(Err(error)) = result {
                slot.error.get_or_insert(error.clone());
            }
        }
    }

    /// Records errors of slots of a pending write (the first error of a slot sticks).
    pub(super) fn fail_slots(&mut self, id: PendingId, errors: Vec<(u32, Error)>) {
        if let Some(PendingState::Write { slots, .. }) = self.state_mut(id) {
            for (index, error) in errors {
                if let Some(slot) = slots.get_mut(index as usize) {
                    slot.error.get_or_insert(error);
                }
            }
        }
    }

    /// Whether the request is a write no unit covers any more.
    pub(super) fn is_write_done(&self, id: PendingId) -> bool {
        match self.pending.get(&id).map(|pending| &pending.state) {
            Some(PendingState::Write { slots, .. }) => slots.iter().all(|slot| slot.waiting == 0),
            _ => false,
        }
    }
}

impl Node {
    /// Registers a local request, with its deadline. Refused, with nothing changed, when the
    /// id is in use or `max_pending` requests are in progress.
    pub(super) fn new_local(
        &mut self,
        request: RequestId,
        timeout: Option<Duration>,
    ) -> Result<PendingId, InputError> {
        if self.requests.has_local(request) {
            return Err(InputError::DuplicateRequest(request));
        }
        if self.requests.len() >= self.config.max_pending {
            return Err(InputError::Overloaded(request));
        }
        let now = self.clock.latest();
        let deadline = now + timeout.unwrap_or(self.config.request_timeout);
        let id = self.ids.pending();
        let state = PendingState::Write { slots: Vec::new(), many: false };
        self.requests.insert(id, Pending { origin: Origin::Local(request), deadline, state });
        self.timers.set(deadline, Timer::Pending(id));
        Ok(id)
    }

    /// Registers a peer's request that came on `conn`, its deadline the peer's timeout capped
    /// at the node's request timeout, and counts it against the connection.
    pub(super) fn new_remote(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        timeout_ms: u32,
    ) -> PendingId {
        let timeout = match timeout_ms {
            0 => self.config.request_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(self.config.request_timeout),
        };
        let deadline = now + timeout;
        let id = self.ids.pending();
        self.links.bind_request(conn, id);
        let state = PendingState::Write { slots: Vec::new(), many: false };
        let origin = Origin::Peer { conn, request_id };
        self.requests.insert(id, Pending { origin, deadline, state });
        self.timers.set(deadline, Timer::Pending(id));
        id
    }

    /// Moves a request's deadline earlier (never later).
    pub(super) fn shorten_deadline(&mut self, id: PendingId, deadline: Instant) {
        let Some(pending) = self.requests.get_mut(id) else { return };
        if deadline < pending.deadline {
            pending.deadline = deadline;
            self.timers.set(deadline, Timer::Pending(id));
        }
    }

    /// A request's deadline passed (or its connection went): whatever is still outstanding is
    /// answered `TimedOut`, and it leaves the flights it waited on.
    pub(super) fn on_request_timeout(&mut self, id: PendingId) {
        let Some(pending) = self.requests.get_mut(id) else { return };
        let mut leave: Vec<(Bytes, FlightId, Waiter)> = Vec::new();
        match &mut pending.state {
            PendingState::Get { keyspace, flight } => {
                if let Some(flight) = flight.take() {
                    leave.push((keyspace.clone(), flight, Waiter::One(id)));
                }
                self.finish_request_with(id, Some(Err(Error::TimedOut)));
            }
            PendingState::GetMany { keyspace, parts, remaining, .. } => {
                for (index, part) in parts.iter_mut().enumerate() {
                    if part.result.is_none() {
                        if let Some(flight) = part.flight.take() {
                            leave.push((keyspace.clone(), flight, Waiter::Part(id, index as u32)));
                        }
                        part.result = Some(Err(Error::TimedOut));
                    }
                }
                *remaining = 0;
                self.finish_request(id);
            }
            PendingState::Write { slots, .. } => {
                for slot in slots.iter_mut().filter(|slot| slot.waiting > 0) {
                    slot.waiting = 0;
                    slot.error.get_or_insert(Error::TimedOut);
                }
                self.finish_request(id);
            }
        }
        for (keyspace, flight, waiter) in leave {
            if let Some(keyspace) = self.keyspaces.get_mut(&keyspace) {
                keyspace.flights.leave(flight, waiter);
            }
        }
    }

    /// Answers a batch get or a write from its state (see [`Node::finish_request_with`]).
    pub(super) fn finish_request(&mut self, id: PendingId) {
        self.finish_request_with(id, None);
    }

    /// Answers a write once no unit covers it any more; otherwise does nothing.
    pub(super) fn finish_write_if_done(&mut self, id: PendingId) {
        if self.requests.is_write_done(id) {
            self.finish_request(id);
        }
    }

    /// Removes a request and answers its origin, once: a local caller with an
    /// [`Output::Reply`], a peer with a frame on its connection (if still open). `single` is
    /// the result of a single get; other requests are answered from their state.
    pub(super) fn finish_request_with(&mut self, id: PendingId, single: Option<GetResult>) {
        let Some(pending) = self.requests.remove(id) else { return };
        self.timers.cancel(Timer::Pending(id));
        let (reply, message) = match (pending.state, single) {
            (_, Some(result)) => {
                let message = Message::GetReply(self.get_outcome(&result));
                (Reply::Get(result.map(|served| served.value)), message)
            }
            (PendingState::GetMany { parts, .. }, None) => {
                // Never deliver a value that expired while the rest of the batch came in.
                let now = self.clock.latest();
                let results: Vec<GetResult> = parts
                    .into_iter()
                    .map(|part| match part.result {
                        Some(Ok(_)) if part.is_expired(now) => Err(Error::TimedOut),
                        result => result.unwrap_or(Err(Error::TimedOut)),
                    })
                    .collect();
                let outcomes = results.iter().map(|result| self.get_outcome(result)).collect();
                (
                    Reply::GetMany(
                        results.into_iter().map(|r| r.map(|served| served.value)).collect(),
                    ),
                    Message::GetManyReply(outcomes),
                )
            }
            (PendingState::Write { slots, many }, None) => {
                let results: Vec<Result<(), Error>> =
                    slots.into_iter().map(|slot| slot.error.map_or(Ok(()), Err)).collect();
                if many {
                    let acks =
                        results.iter().map(|r| r.clone().map_err(|e| e.to_reply_error())).collect();
                    (Reply::WriteMany(results), Message::AckMany(acks))
                } else {
                    let result = results.into_iter().next().unwrap_or(Err(Error::BadRequest));
                    let ack = Message::Ack(result.clone().map_err(|e| e.to_reply_error()));
                    (Reply::Write(result), ack)
                }
            }
            (PendingState::Get { .. }, None) => (
                Reply::Get(Err(Error::TimedOut)),
                Message::GetReply(GetOutcome::Failed(Error::TimedOut.to_reply_error())),
            ),
        };
        match pending.origin {
            Origin::Local(request) => self.outputs.push_back(Output::Reply { request, reply }),
            Origin::Peer { conn, request_id } => {
                if self.links.unbind_request(conn, id) {
                    self.send_reply(conn, request_id, message);
                }
            }
        }
    }

    /// The wire form of a get's result, its expiry in wall-clock time.
    pub(super) fn get_outcome(&self, result: &GetResult) -> GetOutcome {
        match result {
            Ok(served) => GetOutcome::Found(Found {
                value: served.value.bytes.clone(),
                expires_at: served.value.expires_at.map(|at| self.unix_of(at)),
                key_rate: KeyRate::from_per_second(served.rate),
            }),
            Err(error) => GetOutcome::Failed(error.to_reply_error()),
        }
    }
}

/// A write with one slot per key, none covered yet, `error` in every slot (if any).
pub(super) fn write_slots(count: usize, error: Option<Error>) -> Vec<WriteSlot> {
    vec![WriteSlot { waiting: 0, error }; count]
}
