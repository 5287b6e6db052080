//! The previous owner first (galaxycache's peek): the handoff window after a ring change.
//!
//! When the ring changes, the keys that move are cached at their old owners and nowhere
//! else; without help each new owner would load every one of them again from the data source.
//! For [`NodeConfig::handoff_window`](super::NodeConfig) after the ring last changed:
//!
//! - **The old owner keeps** the entries it no longer owns (in its main cache, charged to the
//!   budget and evicted like any entry) instead of dropping them at the change. When the window
//!   closes (a [`Timer::HandoffEnd`], set again by each change, so only the latest counts)
//!   they leave the main cache, as they leave it at once without a window. They are copies like
//!   the hot copies: writes invalidate them on every ring member before they are acknowledged
//!   (a put or delete's owner asks every member to drop its copy and waits for each), a lost
//!   native connection drops them as it drops the hot copies (a "drop your copy" may have been
//!   missed), and a member back from down is cleared before it is relied on. So they are
//!   served like hot copies too — to local gets (the concurrent front reads hits without the
//!   node) and to peers whose ring still names this node — never loaded or refreshed here.
//! - **The new owner asks first.** A miss on a key this node owns, whether a local get, a
//!   peer's get or a warmup, asks the key's owner on the *previous* ring with a
//!   [`Message::Peek`] before loading, when that owner is another node that is on this node's
//!   ring (a member, not down), alive (not suspect) and connected, and the protocol is the
//!   native one (groupcache's HTTP peers do not know the frame: never sent to them). The
//!   answer comes from that node's cache alone — never a load, never a request to a third
//!   node, so a peek cannot chain or wait on anything — with the value's own expiry on the
//!   wire (a peeked value keeps its remaining time; it gets no fresh TTL). A value found
//!   completes the key's flight: it is cached here and answers every waiter
//!   ([`Path::PreviousOwner`], `peek_hits`). Not found, an error, a value that expired on the
//!   way, a lost connection, the previous owner found down, or no answer within
//!   [`NodeConfig::peek_timeout`](super::NodeConfig) (at most half of the request's
//!   remaining time): the flight loads from the data source as before (`peek_misses`). The
//!   flight is the key's one flight throughout — peers' requests for the key wait on the peek
//!   too (it waits on nothing) — so a key is still loaded at most once per owner.
//!
//! **No stale value through a peek.** A write acknowledged before the peek's flight began
//! made the previous owner drop its copy (it is on the writer's ring: the peek is only sent to
//! a member of this node's ring), so the peek finds nothing or a newer value. A write that
//! reaches this node while the peek is under way invalidates the key's flight (as it would a
//! load): the peeked value still answers the waiters that came before the write, but is not
//! cached, and gets after the write start a new flight.
//!
//! **Which ring is "previous".** Each change opens the window again and remembers the ring it
//! replaced: the previous owner is the key's owner just before the *latest* change. The node
//! that owned a key most recently holds it if anyone does — it had it when the ring changed,
//! or it peeked or loaded it while it owned it — and every node keeps what it stopped owning
//! at any change of an open window, so a key that moves twice in quick succession is found
//! along the chain (each new owner asks the one before). Remembering the ring from before the
//! window's *first* change instead would skip an owner that loaded the key in between, and
//! send a member that just came back from down (cleared on its return) to ask itself.
//! A node whose ring never held another member (it just started) takes the ring it joins,
//! without itself, as the previous one: it is joining, and its keys were owned by the others.
//! In a cluster that starts cold, that costs each first miss of the window one peek answered
//! "not found".
//!
//! A ring change that leaves the ring's members as they were (a member list announced again)
//! changes nothing here.

use bytes::Bytes;

use super::calls::CallKind;
use super::ids::CallId;
use super::keyspace::Waiter;
use super::liveness::MemberState;
use super::requests::Served;
use super::timers::Timer;
use super::{ConnId, Error, Node, Path, Value};
use crate::cache::Tier;
use crate::flight::FlightId;
use crate::ring::Ring;
use crate::time::Instant;
use crate::wire::{Found, GetOutcome, KeyRate, Message};

/// The handoff window's state.
#[derive(Default)]
pub(super) struct Handoff {
    /// The ring before the latest change, while the window is open.
    previous: Option<Ring<Bytes>>,
    /// When the window closes.
    until: Option<Instant>,
    /// Whether this node's ring ever held another member (one that never did is joining).
    clustered: bool,
}

impl Handoff {
    /// Whether the window is open at `now`.
    pub(super) fn is_open(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// The key's owner on the previous ring, while the window is open.
    fn previous_owner(&self, now: Instant, key: &[u8]) -> Option<&Bytes> {
        if !self.is_open(now) {
            return None;
        }
        self.previous.as_ref()?.owner(key)
    }
}

impl Node {
    /// The ring was just replaced by one with other members than `old`: the window opens (or
    /// opens again) with `old` as the previous ring — or, for a node whose ring never held
    /// another member, the new ring without this node.
    pub(super) fn on_ring_changed(&mut self, now: Instant, old: Ring<Bytes>) {
        let window = self.config.handoff_window;
        let joining = !self.handoff.clustered;
        self.handoff.clustered |= self.ring.len() > 1;
        if window.is_zero() || !self.config.peer_protocol.has_peek() {
            return;
        }
        let previous = if joining {
            let mut ring = self.ring.clone();
            ring.remove(&self.config.node_id);
            ring
        } else {
            old
        };
        let until = now + window;
        self.handoff.previous = Some(previous);
        self.handoff.until = Some(until);
        self.timers.set(until, Timer::HandoffEnd);
    }

    /// Drops from the main cache every key this node does not own.
    pub(super) fn drop_unowned(&mut self) {
        let me = &self.config.node_id;
        for keyspace in self.keyspaces.values_mut() {
            let moved: alloc::vec::Vec<Bytes> = keyspace
                .cache
                .keys(Tier::Main)
                .into_iter()
                .filter(|key| self.ring.owner(key).is_some_and(|owner| owner != me))
                .collect();
            for key in moved {
                keyspace.cache.remove(&key);
            }
        }
    }

    /// The window closed: what this node kept leaves its main cache.
    pub(super) fn on_handoff_end(&mut self, now: Instant) {
        if self.handoff.is_open(now) {
            return; // a stale deadline (the timer is set again by each change)
        }
        self.handoff.previous = None;
        self.handoff.until = None;
        self.drop_unowned();
    }

    /// A native connection to a peer closed while the window is open: it may have missed a
    /// "drop your copy" for a kept entry, so the kept entries go, as the hot copies do. The
    /// window stays open for peeks this node makes.
    pub(super) fn drop_kept_on_lost_link(&mut self, now: Instant) {
        if self.handoff.is_open(now) {
            self.drop_unowned();
        }
    }

    /// The node to peek at for `key` (see the module docs), if any.
    fn peek_target(&self, now: Instant, key: &[u8]) -> Option<Bytes> {
        let previous = self.handoff.previous_owner(now, key)?;
        let alive = self
            .liveness
            .members()
            .iter()
            .any(|member| member.id == *previous && member.state == MemberState::Alive);
        let usable = *previous != self.config.node_id
            && self.ring.contains(previous)
            && alive
            && self.links.is_connected(previous)
            && !self.membership.is_leaving();
        usable.then(|| previous.clone())
    }

    /// Starts a flight of a key this node owns: a peek at the key's previous owner when the
    /// window calls for one, else the load. `deadline` is the waiting request's, if any.
    pub(super) fn peek_or_load(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        deadline: Option<Instant>,
    ) {
        let key = self.keyspaces.get(keyspace_name).and_then(|k| k.flights.key(flight).cloned());
        let target = key.as_ref().and_then(|key| self.peek_target(now, key));
        let mut timeout = self.config.peek_timeout;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(now) / 2);
        }
        let (Some(key), Some(peer), false) = (key, target, timeout.is_zero()) else {
            self.load_or_fail(now, keyspace_name, flight);
            return;
        };
        let call = self.ids.call();
        let Some(meta) = self.keyspaces.get_mut(keyspace_name).and_then(|k| k.meta_mut(flight))
        else {
            return;
        };
        meta.peek = Some(call);
        let message = Message::Peek { keyspace: keyspace_name.clone(), key };
        let kind = CallKind::Peek { keyspace: keyspace_name.clone(), flight };
        self.send_call(now, call, peer, now + timeout, kind, message);
    }

    /// The deadline of the request `waiter` stands for, if any.
    pub(super) fn waiter_deadline(&self, waiter: Waiter) -> Option<Instant> {
        match waiter {
            Waiter::One(pending) | Waiter::Part(pending, _) => {
                self.requests.get(pending).map(|entry| entry.deadline)
            }
            Waiter::Warmup => None,
        }
    }

    /// A peek from a new owner: answered from the cache alone, at once.
    pub(super) fn on_peek_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        keyspace: &[u8],
        key: &[u8],
    ) {
        let stored = match self.keyspaces.get_mut(keyspace) {
            None => Err(Error::UnknownKeyspace),
            Some(keyspace) => {
                keyspace.stats.peeks_served += 1;
                keyspace.cache.get(now, key).ok_or(Error::NotFound)
            }
        };
        let outcome = match stored {
            Ok(stored) => GetOutcome::Found(Found {
                value: stored.value,
                expires_at: stored.expires_at.map(|at| self.unix_of(at)),
                key_rate: KeyRate::from_per_second(0.0),
            }),
            Err(error) => GetOutcome::Failed(error.to_reply_error()),
        };
        self.send_reply(conn, request_id, Message::GetReply(outcome));
    }

    /// The previous owner answered peek `call` of a flight: a value still valid completes the
    /// flight (cached here, with its own expiry); anything else is a miss.
    pub(super) fn on_peeked(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        call: CallId,
        outcome: GetOutcome,
    ) {
        let max_value = self.config.limits.max_value as usize;
        let found = match outcome {
            GetOutcome::Found(found) if found.value.len() <= max_value => {
                let expires_at = found.expires_at.map(|unix| self.instant_of(unix));
                // It expired on the way (a slow link, or clocks apart): never serve it.
                expires_at.is_none_or(|at| at > now).then_some((found.value, expires_at))
            }
            _ => None,
        };
        let Some((bytes, expires_at)) = found else {
            self.on_peek_failed(now, keyspace_name, flight, call);
            return;
        };
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let Some(meta) = keyspace.meta_mut(flight).filter(|meta| meta.peek == Some(call)) else {
            return;
        };
        meta.peek = None;
        keyspace.stats.peek_hits += 1;
        let rate = keyspace.flights.key(flight).and_then(|key| keyspace.hot.rate(now, key));
        // A copy, so that the cached value does not pin the receive buffer it arrived in.
        let value =
            Value { bytes: Bytes::copy_from_slice(&bytes), expires_at, path: Path::PreviousOwner };
        let served = Served { value, rate: rate.unwrap_or(0.0) };
        self.complete_flight(now, keyspace_name, flight, Ok(served), Some(Tier::Main), None);
    }

    /// Peek `call` of a flight found nothing (or failed): the flight loads.
    pub(super) fn on_peek_failed(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        call: CallId,
    ) {
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let Some(meta) = keyspace.meta_mut(flight).filter(|meta| meta.peek == Some(call)) else {
            return;
        };
        meta.peek = None;
        let loading = meta.load.is_some();
        keyspace.stats.peek_misses += 1;
        if !loading {
            self.load_or_fail(now, keyspace_name, flight);
        }
    }
}
