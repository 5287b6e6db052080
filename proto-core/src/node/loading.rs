//! Loads from the data source, and the end of flights.
//!
//! Contract: a flight's load passes the keyspace's rate limiter (possibly delayed) and breaker
//! (a permit taken when the load starts) before an [`Output::Load`] goes out; every load the
//! driver was asked for holds a breaker permit, and its end — answered, timed out — is
//! recorded with the breaker exactly once. A flight ends once ([`Node::complete_flight`]): the
//! result is cached when the flight is still cacheable (no write or clear raced it), and every
//! waiter is answered.

use bytes::Bytes;
use hashbrown::HashMap;

use super::calls::CallKind;
use super::keyspace::Waiter;
use super::requests::{GetResult, Served};
use super::timers::Timer;
use super::{Error, InputError, LoadId, LoadResult, Node, Output, Path, Value};
use crate::breaker::{CallOutcome, Permit};
use crate::cache::Tier;
use crate::flight::FlightId;
use crate::hash::KeyHashBuilder;
use crate::limiter::Grant;
use crate::time::Instant;

/// A data-source call, asked for or delayed by the rate limiter.
pub(super) struct Load {
    pub(super) keyspace: Bytes,
    pub(super) key: Bytes,
    /// `None` once the flight finished another way (the load's answer then only feeds the
    /// breaker).
    pub(super) flight: Option<FlightId>,
    /// Taken when the load starts; `None` while the rate limiter delays it.
    pub(super) permit: Option<Permit>,
    pub(super) deadline: Instant,
}

/// The loads in progress.
pub(super) struct Loads {
    loads: HashMap<LoadId, Load, KeyHashBuilder>,
}

impl Loads {
    /// No load; `hasher` seeds the table.
    pub(super) fn new(hasher: &KeyHashBuilder) -> Loads {
        Loads { loads: HashMap::with_hasher(hasher.clone()) }
    }

    /// Whether none is in progress.
    pub(super) fn is_empty(&self) -> bool {
        self.loads.is_empty()
    }

    /// The load, while in progress.
    pub(super) fn get(&self, id: LoadId) -> Option<&Load> {
        self.loads.get(&id)
    }

    /// Registers a load.
    fn insert(&mut self, id: LoadId, load: Load) {
        self.loads.insert(id, load);
    }

    /// The load, while in progress.
    fn get_mut(&mut self, id: LoadId) -> Option<&mut Load> {
        self.loads.get_mut(&id)
    }

    /// Forgets a load (see [`Node::take_load`], the only caller).
    fn remove(&mut self, id: LoadId) -> Option<Load> {
        self.loads.remove(&id)
    }

    /// The load's flight finished another way: its answer will only feed the breaker.
    pub(super) fn detach(&mut self, id: LoadId) {
        if let Some(load) = self.loads.get_mut(&id) {
            load.flight = None;
        }
    }
}

impl Node {
    /// Starts the data-source call of a flight, through the rate limiter and the breaker. A
    /// refusal is returned, not acted on: the caller decides who hears of it.
    pub(super) fn start_load(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
    ) -> Result<(), Error> {
        let load = self.ids.load();
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return Ok(()) };
        let Some(key) = keyspace.flights.key(flight).cloned() else { return Ok(()) };
        let read_timeout = keyspace.config.read_timeout;
        let start_at =
            match keyspace.limiter.as_mut().map(|limiter| limiter.acquire(now, 1, read_timeout)) {
                None | Some(Ok(Grant::Now)) => now,
                Some(Ok(Grant::At(at))) => at,
                Some(Err(_)) => {
                    keyspace.stats.rate_limited += 1;
                    return Err(Error::RateLimited);
                }
            };
        // A load that starts now takes its breaker permit now; a delayed one when it starts.
        let permit = if start_at <= now {
            match keyspace.breaker.try_acquire(now) {
                Ok(permit) => Some(permit),
                Err(_) => {
                    keyspace.stats.circuit_open += 1;
                    return Err(Error::CircuitOpen);
                }
            }
        } else {
            None
        };
        if let Some(meta) = keyspace.meta_mut(flight) {
            meta.load = Some(load);
        }
        let deadline = start_at + read_timeout;
        let keyspace = keyspace_name.clone();
        let entry = Load { keyspace, key, flight: Some(flight), permit: None, deadline };
        self.loads.insert(load, entry);
        match permit {
            Some(permit) => self.issue_load(load, permit),
            None => self.timers.set(start_at, Timer::StartLoad(load)),
        }
        Ok(())
    }

    /// Starts a load; on refusal, answers the whole flight with the error.
    pub(super) fn load_or_fail(&mut self, now: Instant, keyspace_name: &Bytes, flight: FlightId) {
        if let Err(error) = self.start_load(now, keyspace_name, flight) {
            self.complete_flight(now, keyspace_name, flight, Err(error), None, None);
        }
    }

    /// Asks the driver for a load that holds its breaker permit, with its deadline.
    fn issue_load(&mut self, id: LoadId, permit: Permit) {
        let Some(load) = self.loads.get_mut(id) else { return };
        load.permit = Some(permit);
        let (keyspace, key, deadline) = (load.keyspace.clone(), load.key.clone(), load.deadline);
        if let Some(state) = self.keyspaces.get_mut(&keyspace) {
            state.stats.local_loads += 1;
        }
        self.timers.set(deadline, Timer::Load(id));
        self.outputs.push_back(Output::Load { load: id, keyspace, key });
    }

    /// Ends a load: out of the table, its timers cancelled.
    fn take_load(&mut self, id: LoadId) -> Option<Load> {
        let load = self.loads.remove(id)?;
        self.timers.cancel(Timer::Load(id));
        self.timers.cancel(Timer::StartLoad(id));
        Some(load)
    }

    /// A load the rate limiter delayed may start now, if the breaker admits it and its flight
    /// still wants it.
    pub(super) fn on_load_start_due(&mut self, now: Instant, id: LoadId) {
        let Some(load) = self.loads.get(id) else { return };
        if load.permit.is_some() {
            return;
        }
        let (keyspace_name, flight) = (load.keyspace.clone(), load.flight);
        let keyspace = self.keyspaces.get_mut(&keyspace_name);
        let (Some(keyspace), Some(flight)) = (keyspace, flight) else {
            // Its flight finished another way meanwhile: nothing to load for.
            self.take_load(id);
            return;
        };
        match keyspace.breaker.try_acquire(now) {
            Ok(permit) => self.issue_load(id, permit),
            Err(_) => {
                keyspace.stats.circuit_open += 1;
                let fetching = keyspace.meta_mut(flight).is_some_and(|meta| {
                    meta.load = None;
                    meta.call.is_some()
                });
                self.take_load(id);
                // A fetch still under way may yet answer; otherwise the refusal is the answer.
                if !fetching {
                    let error = Err(Error::CircuitOpen);
                    self.complete_flight(now, &keyspace_name, flight, error, None, None);
                }
            }
        }
    }

    /// The data source answered a load: the breaker hears of it, and the flight (if it still
    /// waits) ends with the value or the error. Refused for a load not in progress.
    pub(super) fn on_loaded(
        &mut self,
        now: Instant,
        id: LoadId,
        result: LoadResult,
    ) -> Result<(), InputError> {
        if self.loads.get(id).is_none_or(|load| load.permit.is_none()) {
            return Err(InputError::UnknownLoad(id));
        }
        let load = self.take_load(id).expect("just looked up");
        let max_value = self.config.limits.max_value as usize;
        let max_message = self.config.limits.max_message as usize;
        let Some(keyspace) = self.keyspaces.get_mut(&load.keyspace) else { return Ok(()) };
        let permit = load.permit.expect("checked above");
        let result = match result {
            LoadResult::Value { bytes, expires_at } => {
                keyspace.breaker.record(now, permit, CallOutcome::Success);
                let expires_at =
                    expires_at.or_else(|| keyspace.config.default_ttl.map(|ttl| now + ttl));
                if bytes.len() > max_value {
                    Err(Error::TooLarge)
                } else if expires_at.is_some_and(|at| at <= now) {
                    Err(Error::DataSource(Bytes::from_static(
                        b"the data source returned an expired value",
                    )))
                } else {
                    let rate = keyspace.hot.rate(now, &load.key).unwrap_or(0.0);
                    Ok(Served { value: Value { bytes, expires_at, path: Path::Load }, rate })
                }
            }
            LoadResult::NotFound => {
                keyspace.breaker.record(now, permit, CallOutcome::Success);
                Err(Error::NotFound)
            }
            LoadResult::Failed(message) => {
                keyspace.breaker.record(now, permit, CallOutcome::Failure);
                keyspace.stats.local_load_errs += 1;
                let cut = message.len().min(max_message);
                Err(Error::DataSource(message.slice(..cut)))
            }
        };
        if let Some(flight) = load.flight {
            self.complete_flight(now, &load.keyspace, flight, result, Some(Tier::Main), Some(id));
        }
        Ok(())
    }

    /// A load's deadline passed: the breaker counts it cancelled, and its flight is answered
    /// `TimedOut`.
    pub(super) fn on_load_timeout(&mut self, now: Instant, id: LoadId) {
        if self.loads.get(id).is_none_or(|load| load.permit.is_none()) {
            return;
        }
        let load = self.take_load(id).expect("just looked up");
        if let Some(keyspace) = self.keyspaces.get_mut(&load.keyspace) {
            keyspace.breaker.record(now, load.permit.expect("checked"), CallOutcome::Cancelled);
            keyspace.stats.local_load_errs += 1;
        }
        if let Some(flight) = load.flight {
            self.complete_flight(now, &load.keyspace, flight, Err(Error::TimedOut), None, Some(id));
        }
    }

    /// Finishes a flight: caches the value in `store`'s tier when it may be, and answers every
    /// waiter once. The other half of a flight that both fetched and loaded is let go
    /// (`finishing_load` names the load that ended it, if one did).
    pub(super) fn complete_flight(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        result: GetResult,
        store: Option<Tier>,
        finishing_load: Option<LoadId>,
    ) {
        let hot_ttl = self.config.hot_ttl;
        // Short of members, copies may miss writes the others acknowledge: none are kept.
        let store = store.filter(|_| self.trusts_copies());
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let Ok(done) = keyspace.flights.complete(flight) else { return };
        let meta = keyspace.meta.remove(&flight);
        if let (Ok(served), true, Some(tier)) = (&result, done.cacheable, store) {
            let expires_at = match tier {
                Tier::Main => served.value.expires_at,
                Tier::Hot => {
                    Some(served.value.expires_at.map_or(now + hot_ttl, |at| at.min(now + hot_ttl)))
                }
            };
            let _ = keyspace.cache.insert(
                now,
                tier,
                done.key.clone(),
                served.value.bytes.clone(),
                expires_at,
            );
        }
        if let Some(meta) = meta {
            // The other half of a flight that both fetched and loaded: its answer is no longer
            // needed (a load's still feeds the breaker).
            if let Some(load) = meta.load.filter(|&load| Some(load) != finishing_load) {
                self.loads.detach(load);
            }
            if let Some(call) = meta.call {
                if let Some(CallKind::Get { .. }) = self.calls.get(call).map(|call| &call.kind) {
                    self.take_call(call);
                }
            }
            if let Some(peek) = meta.peek {
                self.take_call(peek);
            }
        }
        for waiter in done.waiters {
            match waiter {
                Waiter::One(pending) => self.answer_get(pending, result.clone()),
                Waiter::Part(pending, index) => self.answer_part(pending, index, result.clone()),
                Waiter::Warmup => self.membership.finished(),
            }
        }
    }
}
