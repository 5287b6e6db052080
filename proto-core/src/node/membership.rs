//! Membership as this node acts on it: the member list, the ring of the members up, warmup
//! after ring changes, and the graceful leave. Which members are up is decided in
//! [`super::liveness`] and acted on in [`super::heartbeats`].
//!
//! Contract: the ring holds this node (unless leaving) and the members of the member list
//! that are not down; it is rebuilt when that set changes. Keys this
//! node no longer owns leave its main cache — at once, or when the handoff window after the
//! change closes ([`super::handoff`]) — and warm keys and hot keys it newly owns are
//! queued for prefetch, at most `warmup_max_keys` per keyspace and `warmup_concurrency` loads
//! at once. Leaving is one-way: no new work starts, every connected peer is told (a call it
//! acknowledges), and [`Event::Drained`] is emitted once, when nothing is in progress.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use bytes::Bytes;

use super::calls::{Call, CallKind};
use super::keyspace::{FlightMeta, Waiter};
use super::liveness::MemberState;
use super::timers::Timer;
use super::{ConnId, Event, Node, Output};
use crate::flight::Begin;
use crate::ring::Ring;
use crate::time::{Duration, Instant};
use crate::wire::Message;

/// The longest a leaving node waits for a peer to acknowledge its goodbye.
const LEAVE_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's membership state beyond the ring itself.
pub(super) struct Membership {
    /// Whether cached copies are kept ([`Node::trusts_copies`] when members last changed).
    pub(super) copies_trusted: bool,
    leaving: bool,
    drained: bool,
    /// Prefetches waiting to start: (keyspace, key).
    warmup: VecDeque<(Bytes, Bytes)>,
    /// Prefetch loads in progress.
    warmup_active: usize,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            copies_trusted: true,
            leaving: false,
            drained: false,
            warmup: VecDeque::new(),
            warmup_active: 0,
        }
    }
}

impl Membership {
    /// Whether the node is leaving (or left) the cluster.
    pub(super) fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Whether a prefetch load is in progress.
    pub(super) fn is_warming_up(&self) -> bool {
        self.warmup_active > 0
    }

    /// A prefetch load's flight ended.
    pub(super) fn finished(&mut self) {
        self.warmup_active = self.warmup_active.saturating_sub(1);
    }

    /// Whether the leave just completed (`idle`): true once.
    pub(super) fn drains_now(&mut self, idle: bool) -> bool {
        if self.leaving && !self.drained && idle {
            self.drained = true;
            return true;
        }
        false
    }
}

impl Node {
    /// A new member list (who should be in the cluster): members that stay keep their
    /// liveness, new ones start alive, and the ring follows the members up.
    pub(super) fn on_peers(&mut self, now: Instant, members: Vec<Bytes>) {
        let mut unique: Vec<Bytes> = Vec::with_capacity(members.len());
        for member in members {
            if !member.is_empty() && member != self.config.node_id && !unique.contains(&member) {
                unique.push(member);
            }
        }
        self.liveness.set_members(now, &unique);
        let ring_had_others = self.ring.len() > 1;
        self.rebuild_ring(now, ring_had_others || !unique.is_empty());
        if !unique.is_empty() && !self.timers.is_set(Timer::Heartbeat) {
            self.timers.set(now + self.config.liveness.heartbeat_interval, Timer::Heartbeat);
        }
    }

    /// Rebuilds the ring from this node (unless leaving) and the members up. Nothing happens
    /// when the ring's members are unchanged, unless `always` (a new member list is announced
    /// even when it changes nothing).
    pub(super) fn rebuild_ring(&mut self, now: Instant, always: bool) {
        let mut peers: Vec<Bytes> = self
            .liveness
            .members()
            .iter()
            .filter(|member| member.state != MemberState::Down)
            .map(|member| member.id.clone())
            .collect();
        if !self.membership.leaving {
            peers.push(self.config.node_id.clone());
        }
        let unchanged =
            peers.len() == self.ring.len() && peers.iter().all(|peer| self.ring.contains(peer));
        if unchanged && !always {
            return;
        }
        self.replace_ring(now, peers);
    }

    /// Puts `peers` on the ring: opens the handoff window when the members changed, drops
    /// what this node no longer owns from its main cache unless the window keeps it, and
    /// queues the warmup of keys it now owns (which peeks first, as any miss of an owner).
    fn replace_ring(&mut self, now: Instant, peers: Vec<Bytes>) {
        let Ok(ring) = Ring::with_peers(self.config.ring, peers) else { return };
        let old = core::mem::replace(&mut self.ring, ring);
        self.outputs.push_back(Output::Event(Event::RingChanged { members: self.ring.len() }));
        let moved = old.len() != self.ring.len()
            || old.peers().iter().any(|peer| !self.ring.contains(peer));
        if moved {
            self.on_ring_changed(now, old.clone());
        }
        // Keys this node no longer owns leave the main cache (their new owner loads them) —
        // unless the handoff window keeps them for their new owner to peek at.
        if !self.handoff.is_open(now) {
            self.drop_unowned();
        }
        let me = self.config.node_id.clone();
        let mut queued = 0;
        let names: Vec<Bytes> = self.keyspaces.keys().cloned().collect();
        for name in names {
            let keyspace = self.keyspaces.get_mut(&name).expect("listed above");
            // Warmup: warm keys and tracked hot keys that this node now owns and did not before.
            let mut candidates: Vec<Bytes> = keyspace.config.warm_keys.clone();
            candidates.extend(
                keyspace.hot.top(now, self.config.warmup_max_keys).into_iter().map(|(key, _)| key),
            );
            let warmup = &mut self.membership.warmup;
            let mut picked = 0;
            for key in candidates {
                if picked >= self.config.warmup_max_keys {
                    break;
                }
                let owned_now = self.ring.owner(&key).is_some_and(|owner| *owner == me);
                let owned_before =
                    old.owner(&key).is_some_and(|owner| *owner == me) && old.len() > 1;
                if owned_now
                    && !owned_before
                    && !warmup.iter().any(|(k, q)| *k == name && *q == key)
                {
                    warmup.push_back((name.clone(), key));
                    picked += 1;
                }
            }
            queued += picked;
        }
        if queued > 0 {
            self.outputs.push_back(Output::Event(Event::WarmupStarted { keys: queued }));
        }
    }

    /// Starts queued prefetches up to the concurrency limit, skipping keys this node no longer
    /// owns, already holds, or already loads.
    pub(super) fn start_warmups(&mut self, now: Instant) {
        while self.membership.warmup_active < self.config.warmup_concurrency
            && !self.membership.leaving
        {
            let Some((name, key)) = self.membership.warmup.pop_front() else { break };
            if self.owner_of(&key).is_some() {
                continue;
            }
            let Some(keyspace) = self.keyspaces.get_mut(&name) else { continue };
            if keyspace.cache.contains(now, &key) || keyspace.flights.get(&key).is_some() {
                continue;
            }
            let Ok(Begin::Leader(flight)) = keyspace.flights.begin(&key, Waiter::Warmup) else {
                continue;
            };
            keyspace.meta.insert(flight, FlightMeta::default());
            self.membership.warmup_active += 1;
            self.peek_or_load(now, &name, flight, None);
        }
    }

    /// Leaves the cluster: tells every connected peer; each goodbye is a call the peer
    /// acknowledges, and the node is idle (so drained) only once every peer acknowledged, went
    /// away, or took longer than the leave timeout.
    pub(super) fn on_leave(&mut self, now: Instant) {
        if self.membership.leaving {
            return;
        }
        self.membership.leaving = true;
        self.membership.warmup.clear();
        let has_hello = self.config.peer_protocol.has_hello();
        let mut conns: Vec<(ConnId, Option<Bytes>)> = self
            .links
            .conns()
            .filter(|(_, state)| has_hello && (state.hello_received || state.outbound))
            .map(|(id, state)| (id, state.peer.clone()))
            .collect();
        conns.sort_by_key(|(id, _)| *id);
        let deadline = now + self.config.peer_timeout.min(LEAVE_ACK_TIMEOUT);
        let limits = self.config.limits;
        for (conn, peer) in conns {
            let Some(peer) = peer else {
                let _ = self.links.send(conn, 0, &Message::Leaving, &limits);
                continue;
            };
            let id = self.ids.call();
            if self.links.send(conn, id.0, &Message::Leaving, &limits).is_ok() {
                let call =
                    Call { peer, conn: Some(conn), deadline, kind: CallKind::Leave, unsent: None };
                self.register_sent_call(id, call);
            }
        }
    }

    /// A peer says it is leaving: it goes off the ring, then the goodbye is acknowledged —
    /// whatever this node asked of it before came on this connection ahead of the ack.
    pub(super) fn on_leaving_frame(&mut self, now: Instant, conn: ConnId, request_id: u64) {
        if let Some(peer) = self.links.get(conn).and_then(|state| state.peer.clone()) {
            if let Some(change) = self.liveness.left(&peer) {
                self.apply_member_changes(now, alloc::vec![change], false);
            }
        }
        if request_id != 0 {
            self.send_reply(conn, request_id, Message::Ack(Ok(())));
        }
    }
}
