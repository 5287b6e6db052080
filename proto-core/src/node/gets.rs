//! Gets: steps 1–3 of the loading process (see the module docs of [`super`]), for local
//! callers and for peers, single keys and batches, and the fetches from owners they cause.
//!
//! Contract: every key of a get ends in exactly one result — a hit, the result of the flight it
//! waited on, or an error — and a request is answered once all its keys have one. A batch's
//! value that expired while the rest of the batch came in is looked up again once, then
//! answered `TimedOut` rather than served stale. A peer's request is never forwarded again.

use alloc::vec::Vec;
use bytes::Bytes;

use super::batching::batches_by_owner;
use super::calls::CallKind;
use super::ids::{CallId, PendingId};
use super::keyspace::{FlightMeta, Waiter};
use super::requests::{GetResult, Part, PendingState, Served};
use super::{ConnId, Error, Node, Path, Value};
use crate::cache::Tier;
use crate::flight::{Begin, FlightError, FlightId};
use crate::time::Instant;
use crate::wire::{GetOutcome, Message};

/// Where the misses that need the owner's copy go — (owner, (key, flight)) — collected while a
/// get or batch is looked up, so that one message per owner goes out.
pub(super) type FetchPlan = Vec<(Bytes, (Bytes, FlightId))>;

/// How a key's lookup ended for now.
enum Lookup {
    /// With a result.
    Done(GetResult),
    /// Waiting on a flight.
    Waiting(FlightId),
}

impl Node {
    /// A get frame from a peer: answered `Overloaded` at once when the connection or the node
    /// has too much in progress, otherwise looked up as the peer's request.
    pub(super) fn on_get_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        overloaded: bool,
        message: Message,
    ) {
        let (keys, many) = match &message {
            Message::Get { .. } => (1, false),
            Message::GetMany { keys, .. } => (keys.len(), true),
            _ => return,
        };
        if overloaded {
            let outcome = GetOutcome::Failed(Error::Overloaded.to_reply_error());
            let reply = if many {
                Message::GetManyReply(alloc::vec![outcome; keys])
            } else {
                Message::GetReply(outcome)
            };
            self.send_reply(conn, request_id, reply);
            return;
        }
        match message {
            Message::Get { keyspace, key, timeout_ms } => {
                let pending = self.new_remote(now, conn, request_id, timeout_ms);
                self.start_get(now, pending, keyspace, key, true);
            }
            Message::GetMany { keyspace, keys, timeout_ms } => {
                let pending = self.new_remote(now, conn, request_id, timeout_ms);
                self.start_get_many(now, pending, keyspace, keys, true);
            }
            _ => {}
        }
    }

    /// Looks up one key for request `pending`, answering it at once or when its flight ends.
    pub(super) fn start_get(
        &mut self,
        now: Instant,
        pending: PendingId,
        keyspace: Bytes,
        key: Bytes,
        from_peer: bool,
    ) {
        let mut plan = FetchPlan::new();
        let outcome =
            self.get_key(now, &keyspace, &key, Waiter::One(pending), from_peer, &mut plan);
        match outcome {
            Lookup::Done(result) => {
                if let Some(state) = self.requests.state_mut(pending) {
                    *state = PendingState::Get { keyspace, flight: None };
                }
                self.answer_get(pending, result);
            }
            Lookup::Waiting(flight) => {
                if let Some(state) = self.requests.state_mut(pending) {
                    *state = PendingState::Get { keyspace, flight: Some(flight) };
                }
                self.run_plan(now, pending, plan);
            }
        }
    }

    /// Looks up every key of a batch for request `pending`; answered when the last part is in.
    pub(super) fn start_get_many(
        &mut self,
        now: Instant,
        pending: PendingId,
        keyspace: Bytes,
        keys: Vec<Bytes>,
        from_peer: bool,
    ) {
        let count = keys.len();
        // The batch's state is in place before any lookup: an answer can come back before the
        // lookup that caused it returns (a load refused at once completes its flight).
        if let Some(state) = self.requests.state_mut(pending) {
            let parts = (0..count).map(|_| Part::default()).collect();
            *state =
                PendingState::GetMany { keyspace: keyspace.clone(), keys, parts, remaining: count };
        }
        if count == 0 {
            self.finish_request(pending);
            return;
        }
        let mut plan = FetchPlan::new();
        for index in 0..count {
            self.lookup_part(now, pending, &keyspace, index, from_peer, &mut plan);
        }
        self.run_plan(now, pending, plan);
    }

    /// Looks up part `index` of a batch whose state is stored and counts the part outstanding.
    fn lookup_part(
        &mut self,
        now: Instant,
        pending: PendingId,
        keyspace: &Bytes,
        index: usize,
        from_peer: bool,
        plan: &mut FetchPlan,
    ) {
        let Some(key) = self.requests.batch_key(pending, index) else { return };
        let waiter = Waiter::Part(pending, index as u32);
        match self.get_key(now, keyspace, &key, waiter, from_peer, plan) {
            Lookup::Done(result) => self.answer_part(pending, index as u32, result),
            Lookup::Waiting(flight) => {
                if let Some(PendingState::GetMany { parts, .. }) = self.requests.state_mut(pending)
                {
                    // Unless it was answered already, on the way.
                    if let Some(part) = parts.get_mut(index).filter(|part| part.result.is_none()) {
                        part.flight = Some(flight);
                    }
                }
            }
        }
    }

    /// Steps 1–3 of the loading process for one key: a hit, or `waiter` on the key's flight —
    /// a new flight loads here, or (for a local get of a key another peer owns) goes in `plan`
    /// to be fetched from the owner.
    fn get_key(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        key: &Bytes,
        waiter: Waiter,
        from_peer: bool,
        plan: &mut FetchPlan,
    ) -> Lookup {
        // A leaving node still answers peers from its cache (a refusal would make the asker
        // load the key itself while its new owner loads it too), but starts nothing new.
        let leaving = self.membership.is_leaving();
        if leaving && !from_peer {
            return Lookup::Done(Err(Error::ShuttingDown));
        }
        if key.len() > self.config.limits.max_key as usize {
            return Lookup::Done(Err(Error::TooLarge));
        }
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else {
            return Lookup::Done(Err(Error::UnknownKeyspace));
        };
        if from_peer {
            keyspace.stats.server_requests += 1;
        } else {
            keyspace.stats.gets += 1;
        }
        keyspace.hot.record(now, key);
        if let Some(hit) = keyspace.cache.get(now, key) {
            let path = match hit.tier {
                Tier::Main => {
                    keyspace.stats.cache_hits += 1;
                    Path::LocalHit
                }
                Tier::Hot => {
                    keyspace.stats.hot_hits += 1;
                    Path::HotHit
                }
            };
            let value = Value { bytes: hit.value, expires_at: hit.expires_at, path };
            // Only a peer's reply carries the key's rate; a local hit does not pay for it.
            let rate = if from_peer { keyspace.hot.rate(now, key).unwrap_or(0.0) } else { 0.0 };
            return Lookup::Done(Ok(Served { value, rate }));
        }
        if leaving {
            // A peer asking for a key this node is still loading joins that load: refusing
            // would make the asker load the key a second time. Nothing new starts.
            let loading = keyspace.flights.get(key).is_some_and(|flight| {
                keyspace.meta.get(&flight).is_some_and(|meta| meta.load.is_some())
            });
            if !(from_peer && loading) {
                return Lookup::Done(Err(Error::ShuttingDown));
            }
        }
        keyspace.stats.loads += 1;
        let flight = match keyspace.flights.begin(key, waiter) {
            Ok(begin) => begin,
            Err(FlightError::TooManyFlights { .. } | FlightError::TooManyWaiters { .. }) => {
                return Lookup::Done(Err(Error::Overloaded));
            }
            Err(_) => return Lookup::Done(Err(Error::BadRequest)),
        };
        match flight {
            Begin::Follower(id) => {
                // A peer's request never waits on a fetch from a third node: load here too. (A
                // peek it may wait on: answered from a cache, it waits on nothing.)
                let fetch_only = keyspace
                    .meta
                    .get(&id)
                    .is_some_and(|meta| meta.load.is_none() && meta.peek.is_none());
                if from_peer && fetch_only {
                    if let Err(error) = self.start_load(now, keyspace_name, id) {
                        // Refused: answer this peer alone; the fetch goes on for the others.
                        if let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) {
                            keyspace.flights.leave(id, waiter);
                        }
                        return Lookup::Done(Err(error));
                    }
                }
                Lookup::Waiting(id)
            }
            Begin::Leader(id) => {
                keyspace.stats.loads_deduped += 1;
                keyspace.meta.insert(id, FlightMeta::default());
                // The ring is consulted only on a miss, never on the hit path.
                match self.owner_of(key) {
                    Some(owner) if !from_peer => plan.push((owner, (key.clone(), id))),
                    // A peer's request for a key another node owns here: loaded, never
                    // forwarded (rings that disagree).
                    Some(_) => self.load_or_fail(now, keyspace_name, id),
                    // This node owns it: after a ring change, its previous owner first.
                    None => {
                        let deadline = self.waiter_deadline(waiter);
                        self.peek_or_load(now, keyspace_name, id, deadline);
                    }
                }
                Lookup::Waiting(id)
            }
        }
    }

    /// Sends the fetches a get or batch collected: one message per owner (as many keys per
    /// message as the peer protocol and the wire limits allow), each call's deadline within
    /// half the request's remaining time.
    fn run_plan(&mut self, now: Instant, pending: PendingId, plan: FetchPlan) {
        if plan.is_empty() {
            return;
        }
        let Some(entry) = self.requests.get(pending) else { return };
        let keyspace = match &entry.state {
            PendingState::Get { keyspace, .. } | PendingState::GetMany { keyspace, .. } => {
                keyspace.clone()
            }
            PendingState::Write { .. } => return,
        };
        let remaining = entry.deadline.saturating_duration_since(now);
        let deadline = now + self.config.peer_timeout.min(remaining / 2);
        let timeout_ms = u32::try_from((deadline - now).as_millis()).unwrap_or(u32::MAX).max(1);
        let (max_count, max_bytes) = self.batch_limits();
        let max_count = self.config.peer_protocol.max_keys_per_fetch(max_count);
        for (owner, batch) in batches_by_owner(plan, max_count, max_bytes, |(key, _)| key.len() + 8)
        {
            let call = self.ids.call();
            if let Some(state) = self.keyspaces.get_mut(&keyspace) {
                for (_, flight) in &batch {
                    if let Some(meta) = state.meta_mut(*flight) {
                        meta.call = Some(call);
                    }
                }
            }
            let (message, kind) = match <[_; 1]>::try_from(batch) {
                Ok([(key, flight)]) => (
                    Message::Get { keyspace: keyspace.clone(), key, timeout_ms },
                    CallKind::Get { keyspace: keyspace.clone(), flight },
                ),
                Err(batch) => {
                    let (keys, flights) = batch.into_iter().unzip();
                    (
                        Message::GetMany { keyspace: keyspace.clone(), keys, timeout_ms },
                        CallKind::GetMany { keyspace: keyspace.clone(), flights },
                    )
                }
            };
            self.send_call(now, call, owner, deadline, kind, message);
        }
    }

    /// Answers a single get.
    pub(super) fn answer_get(&mut self, pending: PendingId, result: GetResult) {
        let Some(state) = self.requests.state_mut(pending) else { return };
        *state = PendingState::Get { keyspace: Bytes::new(), flight: None };
        self.finish_request_with(pending, Some(result));
    }

    /// Fills part `index` of a batch (once); the batch is answered with its last part, unless
    /// parts that expired meanwhile are looked up again.
    pub(super) fn answer_part(&mut self, pending: PendingId, index: u32, result: GetResult) {
        let Some(PendingState::GetMany { parts, remaining, .. }) = self.requests.state_mut(pending)
        else {
            return;
        };
        let Some(part) = parts.get_mut(index as usize) else { return };
        if part.result.is_some() {
            return;
        }
        part.result = Some(result);
        part.flight = None;
        *remaining -= 1;
        if *remaining == 0 && !self.refresh_expired_parts(pending) {
            self.finish_request(pending);
        }
    }

    /// A batch is answered when its last part is in; a value that came in early may have expired
    /// meanwhile and is looked up again, once (a part that expires again is answered `TimedOut`
    /// at delivery, so two slow parts cannot keep expiring each other until the deadline).
    /// Returns whether parts are outstanding again.
    fn refresh_expired_parts(&mut self, pending: PendingId) -> bool {
        let now = self.clock.latest();
        let Some(entry) = self.requests.get_mut(pending) else { return false };
        let from_peer = entry.is_from_peer();
        let PendingState::GetMany { keyspace, parts, remaining, .. } = &mut entry.state else {
            return false;
        };
        let mut expired = Vec::new();
        for (index, part) in parts.iter_mut().enumerate() {
            if !part.refreshed && part.is_expired(now) {
                // Outstanding again before its lookup: the answer may come back at once.
                *part = Part { result: None, flight: None, refreshed: true };
                *remaining += 1;
                expired.push(index);
            }
        }
        if expired.is_empty() {
            return false;
        }
        let keyspace = keyspace.clone();
        let mut plan = FetchPlan::new();
        for index in expired {
            self.lookup_part(now, pending, &keyspace, index, from_peer, &mut plan);
        }
        self.run_plan(now, pending, plan);
        // The batch is answered by the last part's `answer_part` (possibly already).
        true
    }

    /// A fetch from `peer` failed. When the ring has meanwhile named another peer the key's
    /// owner (`peer` left, or was taken off), the flight asks that owner, once; otherwise it
    /// loads here (groupcache's rule). Asking the new owner keeps one load per key in the
    /// cluster through a graceful leave, where a local load would race the new owner's.
    pub(super) fn on_fetch_failed(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        call: CallId,
        peer: &Bytes,
    ) {
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let Some(meta) = keyspace.meta.get_mut(&flight) else { return };
        if meta.call != Some(call) {
            return;
        }
        meta.call = None;
        keyspace.stats.peer_errors += 1;
        if meta.load.is_some() {
            return;
        }
        let rerouted = meta.rerouted;
        let key = keyspace.flights.key(flight).cloned();
        let new_owner = key.as_ref().filter(|_| !rerouted).and_then(|key| self.owner_of(key));
        match (key, new_owner.filter(|owner| owner != peer)) {
            (Some(key), Some(owner)) => {
                let call = self.ids.call();
                let meta = self.keyspaces.get_mut(keyspace_name).and_then(|k| k.meta_mut(flight));
                if let Some(meta) = meta {
                    meta.rerouted = true;
                    meta.call = Some(call);
                }
                let deadline = now + self.config.peer_timeout;
                let timeout_ms =
                    u32::try_from(self.config.peer_timeout.as_millis()).unwrap_or(u32::MAX).max(1);
                let message = Message::Get { keyspace: keyspace_name.clone(), key, timeout_ms };
                let kind = CallKind::Get { keyspace: keyspace_name.clone(), flight };
                self.send_call(now, call, owner, deadline, kind, message);
            }
            _ => self.load_or_fail(now, keyspace_name, flight),
        }
    }

    /// The owner answered fetch `call` for a flight: a value (mirrored in the hot cache when
    /// the owner reports the key hot, or by the protocol's random mirroring) or a real error
    /// ends the flight; a peer failure, or a value that expired on the way, is a failed fetch.
    pub(super) fn on_fetched(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        call: CallId,
        peer: &Bytes,
        outcome: GetOutcome,
    ) {
        let threshold = self.config.hot_threshold_per_second;
        let lucky = self.mirrors_at_random();
        let result = match outcome {
            GetOutcome::Found(found) => {
                let expires_at = found.expires_at.map(|unix| self.instant_of(unix));
                if expires_at.is_some_and(|at| at <= now) {
                    // It expired on the way (a slow link, or clocks apart): never serve it.
                    self.on_fetch_failed(now, keyspace_name, flight, call, peer);
                    return;
                }
                let value = Value {
                    bytes: Bytes::copy_from_slice(&found.value),
                    expires_at,
                    path: Path::PeerFetch,
                };
                Ok(Served { value, rate: found.key_rate.as_per_second() })
            }
            GetOutcome::Failed(error) => Err(Error::from_reply_error(&error)),
        };
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        if keyspace.meta.get(&flight).is_none_or(|meta| meta.call != Some(call)) {
            return;
        }
        match result {
            Err(error) if error.is_peer_failure() => {
                self.on_fetch_failed(now, keyspace_name, flight, call, peer)
            }
            Ok(served) => {
                keyspace.stats.peer_loads += 1;
                let store = (served.rate >= threshold || lucky).then_some(Tier::Hot);
                self.complete_flight(now, keyspace_name, flight, Ok(served), store, None);
            }
            Err(error) => self.complete_flight(now, keyspace_name, flight, Err(error), None, None),
        }
    }

    /// The owner of `key` when it is another peer; `None` when it is this node.
    pub(super) fn owner_of(&self, key: &[u8]) -> Option<Bytes> {
        self.ring.owner(key).filter(|owner| **owner != self.config.node_id).cloned()
    }
}
