//! The node's side of liveness ([`super::liveness`]): the heartbeat, what counts as hearing
//! from a member, and what a member going down or coming back changes.
//!
//! Contract:
//! - Every `heartbeat_interval` (while the member list names another node and this node is
//!   not leaving) each member's state is evaluated, silent members with a connection are
//!   pinged, and members without one are dialled (within their reconnect backoff).
//! - A member that goes **down** leaves the ring at once ([`Event::MemberChanged`], then
//!   [`Event::RingChanged`]): its keys move, and the calls to it end — a write waiting for
//!   it to drop its copies counts it as confirmed, everything else fails over.
//! - A member that **comes back** is, in the native protocol, first sent one
//!   `ClearKeyspace` per keyspace of this node, on the connection that later requests to it
//!   use, and only then put back on the ring. While it was off this node's ring, writes this
//!   node acknowledged did not wait for it, so any copy it holds — hot copies, and main
//!   entries of keys it owns again — may be older than them; frames on one connection arrive
//!   in order, so every request this node sends it afterwards finds those copies gone. A
//!   clear that fails (connection lost, no answer in time) puts the member down again, and
//!   it goes through the same rejoin the next time it answers. The returning member does the
//!   same toward every member it saw down; a member that restarted saw nobody down and starts
//!   empty. Clears name this node's keyspaces: a keyspace only the returning member has is
//!   not cleared (clusters are expected to agree on their keyspaces).
//! - **Minimum members**: while fewer than `min_members` nodes are up (the ring, this node
//!   included), the node is not quorate ([`Node::is_quorate`]): every write — put, delete,
//!   their batches, a keyspace delete, local or forwarded by a peer — fails `Unavailable`,
//!   because it could not be confirmed by the missing members and a minority side of a
//!   partition must not accept writes the majority never hears of. Gets are still answered:
//!   from this node's caches, from owners that are up, or from the data source, so a
//!   minority side can serve values that writes on the majority side replaced meanwhile;
//!   those copies are dropped when it rejoins (above).
//!
//!   With `min_members` above 1 a node also stops trusting its copies a step earlier: as soon
//!   as fewer than `min_members` nodes are **alive** (heard within `suspect_after`; suspect
//!   members do not count) it drops every cached copy ([`Event::CopiesDropped`]) and keeps
//!   none until enough members are alive again — gets are then answered by the owners that
//!   are up or by loads from the data source, never from a copy. The other side of a
//!   partition acknowledges writes without this node only once it found it *down*
//!   (`down_after` of silence), so the `down_after - suspect_after` margin (1 s by default,
//!   four heartbeats) covers the heartbeats' phase difference: with `min_members` a majority
//!   of the cluster, a node cut off from the majority has dropped its copies before the
//!   majority acknowledges a write without it, and the majority never loses read quorum. With
//!   the default of 1 none of this applies: a node cut off from the others keeps serving its
//!   copies, which can be stale while the partition lasts (they are dropped on rejoin).

use alloc::vec::Vec;
use bytes::Bytes;

use super::calls::CallKind;
use super::liveness::{Change, MemberInfo, MemberState};
use super::timers::Timer;
use super::{Event, Node, Output, PeerProtocol};
use crate::time::Instant;
use crate::wire::Message;

impl Node {
    /// The members as this node sees them: itself first, then the member list in order.
    #[must_use]
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut members = Vec::with_capacity(self.liveness.members().len() + 1);
        members.push(MemberInfo {
            id: self.config.node_id.clone(),
            state: MemberState::Alive,
            ring_share: self.ring.share(&self.config.node_id),
            connected: true,
            last_heard: self.clock.latest(),
        });
        for member in self.liveness.members() {
            members.push(MemberInfo {
                id: member.id.clone(),
                state: member.state,
                ring_share: self.ring.share(&member.id),
                connected: self.links.is_connected(&member.id),
                last_heard: member.last_heard,
            });
        }
        members
    }

    /// Whether at least [`LivenessConfig::min_members`](super::LivenessConfig) nodes are up
    /// (this node included); writes fail `Unavailable` otherwise (see the module docs).
    #[must_use]
    pub fn is_quorate(&self) -> bool {
        self.ring.len() >= self.config.liveness.min_members
    }

    /// Whether this node may keep and serve cached copies: always with a `min_members` of 1;
    /// otherwise only while at least `min_members` nodes (this one included) are alive — not
    /// merely suspect (see the module docs).
    pub(super) fn trusts_copies(&self) -> bool {
        let min = self.config.liveness.min_members;
        min <= 1 || 1 + self.liveness.count(MemberState::Alive) >= min
    }

    /// The heartbeat: states are evaluated, silent members pinged, unconnected ones dialled.
    pub(super) fn on_heartbeat(&mut self, now: Instant) {
        if self.membership.is_leaving() || self.liveness.members().is_empty() {
            return;
        }
        let config = self.config.liveness;
        let native = self.config.peer_protocol == PeerProtocol::Native;
        let changes = self.liveness.evaluate(now, &config, native);
        self.on_member_changes(now, changes);
        let members: Vec<(Bytes, MemberState, Instant)> = self
            .liveness
            .members()
            .iter()
            .map(|member| (member.id.clone(), member.state, member.last_heard))
            .collect();
        for (peer, state, last_heard) in members {
            let link = self.links.link_or_default(&peer);
            let connected = if native { link.conn } else { link.pool.first().copied() };
            let dial = !link.is_connecting() && now >= link.retry_at;
            let silent = now.saturating_duration_since(last_heard) >= config.heartbeat_interval;
            match connected {
                Some(conn) if native && silent => self.send_frame(conn, 0, &Message::Ping),
                // Heard from lately; or groupcache, where an open connection is all there is
                // to know.
                Some(_) => {}
                // groupcache peers are dialled only to find out whether a failing one is back.
                None if dial && (native || state != MemberState::Alive) => {
                    self.begin_connect(now, &peer, peer.clone());
                }
                None => {}
            }
        }
        self.timers.set(now + config.heartbeat_interval, Timer::Heartbeat);
    }

    /// Something arrived from `peer` (`hello`: it completed a hello).
    pub(super) fn on_peer_heard(&mut self, now: Instant, peer: &[u8], hello: bool) {
        if let Some(change) = self.liveness.heard(now, peer, hello) {
            self.on_member_changes(now, alloc::vec![change]);
        }
    }

    /// A connection to `peer` or a call to it failed: evidence in groupcache compatibility,
    /// where peers answer no ping (the native protocol goes by silence alone).
    pub(super) fn on_peer_failed(&mut self, now: Instant, peer: &[u8]) {
        if self.config.peer_protocol == PeerProtocol::Native {
            return;
        }
        if let Some(change) = self.liveness.failed(now, peer) {
            self.on_member_changes(now, alloc::vec![change]);
        }
    }

    /// A returning member did not confirm its clear: down again, until it answers again.
    pub(super) fn on_rejoin_failed(&mut self, now: Instant, peer: &[u8]) {
        if let Some(change) = self.liveness.mark_down(peer) {
            self.on_member_changes(now, alloc::vec![change]);
        }
    }

    /// Acts on members' state changes (see the module docs), then rebuilds the ring.
    pub(super) fn on_member_changes(&mut self, now: Instant, changes: Vec<Change>) {
        self.apply_member_changes(now, changes, true);
    }

    /// [`Node::on_member_changes`]; the calls to a member that went down end at once when
    /// `end_calls` (not for a member leaving gracefully, which still answers what it was
    /// asked before its goodbye).
    pub(super) fn apply_member_changes(
        &mut self,
        now: Instant,
        changes: Vec<Change>,
        end_calls: bool,
    ) {
        if changes.is_empty() {
            return;
        }
        for change in changes {
            let Change { id, from, to } = change;
            self.outputs.push_back(Output::Event(Event::MemberChanged {
                peer: id.clone(),
                from,
                to,
            }));
            if to == MemberState::Down {
                if end_calls {
                    self.end_calls_to_down_member(now, &id);
                }
            } else if from == MemberState::Down {
                self.send_rejoin_clears(now, &id);
            }
        }
        self.rebuild_ring(now, false);
        let trusted = self.trusts_copies();
        if self.membership.copies_trusted && !trusted {
            // Every copy held may miss a write the members out of reach acknowledge from now
            // on; loads in flight are not kept either.
            for keyspace in self.keyspaces.values_mut() {
                keyspace.clear();
            }
            self.outputs.push_back(Output::Event(Event::CopiesDropped));
        }
        self.membership.copies_trusted = trusted;
    }

    /// Tells a member back from down to clear every keyspace of this node (native protocol).
    fn send_rejoin_clears(&mut self, now: Instant, peer: &Bytes) {
        if !self.config.peer_protocol.carries_writes() {
            return;
        }
        let mut names: Vec<Bytes> = self.keyspaces.keys().cloned().collect();
        names.sort_unstable();
        let deadline = now + self.config.peer_timeout;
        for keyspace in names {
            // A clear that failed at once put the member down again: the rest can wait.
            if !self.liveness.is_up(peer) {
                return;
            }
            let call = self.ids.call();
            let message = Message::ClearKeyspace { keyspace };
            self.send_call(now, call, peer.clone(), deadline, CallKind::Rejoin, message);
        }
    }
}
