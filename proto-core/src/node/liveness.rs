//! Liveness: which members of the cluster answer, decided from `now` and what arrives.
//!
//! # Heartbeats on the peer connections, not SWIM
//! herdcache nodes already keep a full mesh of peer connections (every node fetches from and
//! confirms writes with every other), so liveness rides on them: every
//! [`LivenessConfig::heartbeat_interval`] a node pings each member it has heard nothing from
//! for that long ([`Message::Ping`](crate::Message::Ping), answered with `Pong`), and dials
//! the members it has no connection to. Any frame from a member counts as hearing from it.
//! SWIM through `foca` was weighed and not taken:
//! - **dependency weight**: foca brings its own wire format, member identities, a
//!   serialisation layer and randomised probe schedule into a crate that has none; the
//!   heartbeats are ~one timer and a table here, on frames the protocol already has;
//! - **detection bound**: SWIM's bound is probabilistic (a member is probed in a random
//!   round); with heartbeats every member is checked every interval, so a crashed member is
//!   down after at most `down_after + heartbeat_interval` (2.25 s with the defaults), a hard
//!   bound the simulation measures;
//! - **what SWIM adds**, dissemination and indirect probes, mostly buys scale (O(1) probes per
//!   round instead of O(n)) and a second opinion through a third node when a direct link is
//!   lossy. In a full mesh whose writes need every member's ack anyway, a member this node
//!   cannot reach directly is useless to it even if a third node reaches it: it can neither
//!   fetch from it nor have it confirm a write. So each node's own view is the one that
//!   matters, and indirect probes would only keep an unreachable member on this node's ring.
//!
//! # Contract
//! - The **member list** (who should be in the cluster: [`Input::SetPeers`](crate::Input), later
//!   discovery) is distinct from the **ring** (the members believed up). A member is
//!   [`MemberState::Alive`], [`MemberState::Suspect`] (nothing heard for `suspect_after`; still
//!   on the ring) or [`MemberState::Down`] (nothing heard for `down_after`, or it said it is
//!   leaving; off the ring, so its keys move and writes stop waiting on it).
//! - A new member starts alive, heard "now": it has `down_after` to answer.
//! - A down member comes back when it answers again (a leaving one only with a new hello).
//! - groupcache's HTTP peers answer no ping. There a member is heard when a connection to it
//!   opens or it answers a fetch, and it is suspect from its first failure (a failed connect,
//!   a fetch that failed on the connection or timed out) and down when failures went on for
//!   `down_after` with nothing heard; suspect and down members are dialled every interval to
//!   find out when they are back. Silence alone never marks a groupcache peer down.

use alloc::vec::Vec;
use bytes::Bytes;

use crate::time::{Duration, Instant};

/// Liveness settings. The defaults find a crashed member down within 2.25 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// How often members are checked, pinged when silent, and dialled when unconnected.
    pub heartbeat_interval: Duration,
    /// Silence after which a member is suspect (still on the ring).
    pub suspect_after: Duration,
    /// Silence after which a member is down (off the ring).
    pub down_after: Duration,
    /// The fewest members up (this node included) for the node to be quorate; below it,
    /// writes fail `Unavailable` (distcache's `MinimumPeersQuorum`). 1 turns the guard off.
    pub min_members: usize,
}

impl LivenessConfig {
    /// The shortest heartbeat interval accepted.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

    /// Whether the settings work together: an interval of at least [`Self::MIN_INTERVAL`],
    /// `suspect_after` at least two intervals (a ping and its answer can take one),
    /// `down_after` above `suspect_after`, and `min_members` at least 1.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.heartbeat_interval >= Self::MIN_INTERVAL
            && self.heartbeat_interval.checked_mul(2).is_some_and(|two| self.suspect_after >= two)
            && self.down_after > self.suspect_after
            && self.min_members >= 1
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            heartbeat_interval: Duration::from_millis(250),
            suspect_after: Duration::from_secs(1),
            down_after: Duration::from_secs(2),
            min_members: 1,
        }
    }
}

/// A member's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Heard from recently; on the ring.
    Alive,
    /// Silent for `suspect_after` (or failing, in groupcache compatibility); still on the ring.
    Suspect,
    /// Silent for `down_after`, or leaving; off the ring until it answers again.
    Down,
}

/// One member as [`Node::members`](crate::Node::members) reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberInfo {
    /// Its node id.
    pub id: Bytes,
    /// Alive, suspect or down (this node itself is always alive).
    pub state: MemberState,
    /// The share of the key space it owns on this node's ring, in `[0, 1]` (0 when down).
    pub ring_share: f64,
    /// Whether this node has a usable connection to it (always true for this node).
    pub connected: bool,
    /// When this node last heard from it (for this node: the latest `now`).
    pub last_heard: Instant,
}

/// A member's liveness record.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) id: Bytes,
    pub(super) state: MemberState,
    pub(super) last_heard: Instant,
    /// groupcache compatibility: the first failure since it was last heard.
    failing_since: Option<Instant>,
    /// It said it is leaving: only a new hello brings it back.
    left: bool,
}

/// A member whose state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) id: Bytes,
    pub(super) from: MemberState,
    pub(super) to: MemberState,
}

/// The member list and each member's liveness (this node is not in it).
#[derive(Default)]
pub(super) struct Liveness {
    members: Vec<Member>,
}

impl Liveness {
    /// Replaces the member list: members that stay keep their record, new ones start alive,
    /// heard `now`.
    pub(super) fn set_members(&mut self, now: Instant, ids: &[Bytes]) {
        let mut next = Vec::with_capacity(ids.len());
        for id in ids {
            let kept = self.members.iter().position(|member| member.id == *id);
            next.push(match kept {
                Some(index) => self.members.swap_remove(index),
                None => Member {
                    id: id.clone(),
                    state: MemberState::Alive,
                    last_heard: now,
                    failing_since: None,
                    left: false,
                },
            });
        }
        self.members = next;
    }

    /// The members, in list order.
    pub(super) fn members(&self) -> &[Member] {
        &self.members
    }

    /// Members in `state`.
    pub(super) fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|member| member.state == state).count()
    }

    /// Whether `id` is on the member list.
    pub(super) fn is_member(&self, id: &[u8]) -> bool {
        self.members.iter().any(|member| member.id == id)
    }

    /// Whether `id` is a member believed up (alive or suspect).
    pub(super) fn is_up(&self, id: &[u8]) -> bool {
        self.member(id).is_some_and(|member| member.state != MemberState::Down)
    }

    fn member(&self, id: &[u8]) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    fn member_mut(&mut self, id: &[u8]) -> Option<&mut Member> {
        self.members.iter_mut().find(|member| member.id == id)
    }

    /// Something arrived from `id` (`hello`: a completed hello). A down member comes back,
    /// except one that left and has not said hello since.
    pub(super) fn heard(&mut self, now: Instant, id: &[u8], hello: bool) -> Option<Change> {
        let member = self.member_mut(id)?;
        if hello {
            member.left = false;
        }
        if member.left {
            return None;
        }
        member.last_heard = member.last_heard.max(now);
        member.failing_since = None;
        set_state(member, MemberState::Alive)
    }

    /// A connection to `id` failed or a call to it failed on its connection (groupcache
    /// compatibility: the evidence [`Liveness::evaluate`] goes by there).
    pub(super) fn failed(&mut self, now: Instant, id: &[u8]) -> Option<Change> {
        let member = self.member_mut(id)?;
        member.failing_since.get_or_insert(now);
        if member.state == MemberState::Alive {
            return set_state(member, MemberState::Suspect);
        }
        None
    }

    /// `id` said it is leaving: down until a new hello.
    pub(super) fn left(&mut self, id: &[u8]) -> Option<Change> {
        let member = self.member_mut(id)?;
        member.left = true;
        set_state(member, MemberState::Down)
    }

    /// `id` is down (a rejoin it did not confirm).
    pub(super) fn mark_down(&mut self, id: &[u8]) -> Option<Change> {
        set_state(self.member_mut(id)?, MemberState::Down)
    }

    /// Each member's state at `now`: by silence (`by_silence`, the native protocol) or by how
    /// long failures went on unanswered (groupcache compatibility).
    pub(super) fn evaluate(
        &mut self,
        now: Instant,
        config: &LivenessConfig,
        by_silence: bool,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for member in &mut self.members {
            if member.left {
                continue;
            }
            let since = if by_silence { Some(member.last_heard) } else { member.failing_since };
            let Some(since) = since else { continue };
            let quiet = now.saturating_duration_since(since);
            let state = if quiet >= config.down_after {
                MemberState::Down
            } else if by_silence && quiet < config.suspect_after {
                MemberState::Alive
            } else {
                MemberState::Suspect
            };
            // Silence never revives a down member; only an answer does.
            if member.state == MemberState::Down && state != MemberState::Down {
                continue;
            }
            changes.extend(set_state(member, state));
        }
        changes
    }
}

/// Moves `member` to `to`; the change, if it is one.
fn set_state(member: &mut Member, to: MemberState) -> Option<Change> {
    let from = member.state;
    if from == to {
        return None;
    }
    member.state = to;
    Some(Change { id: member.id.clone(), from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1_000)
    }

    fn id(name: &'static str) -> Bytes {
        Bytes::from_static(name.as_bytes())
    }

    fn config() -> LivenessConfig {
        LivenessConfig::default()
    }

    #[test]
    fn silence_makes_a_member_suspect_then_down_and_an_answer_brings_it_back() {
        let mut liveness = Liveness::default();
        liveness.set_members(at(0), &[id("b"), id("c")]);
        assert!(liveness.evaluate(at(999), &config(), true).is_empty());
        liveness.heard(at(900), b"c", false);
        let changes = liveness.evaluate(at(1_000), &config(), true);
        assert_eq!(
            changes,
            [Change { id: id("b"), from: MemberState::Alive, to: MemberState::Suspect }]
        );
        assert!(liveness.is_up(b"b"), "a suspect member stays on the ring");
        liveness.heard(at(1_900), b"c", false);
        let changes = liveness.evaluate(at(2_000), &config(), true);
        assert_eq!(
            changes,
            [Change { id: id("b"), from: MemberState::Suspect, to: MemberState::Down }]
        );
        assert!(!liveness.is_up(b"b"));
        assert!(liveness.is_up(b"c"), "c was heard at 1900");
        assert!(liveness.evaluate(at(2_100), &config(), true).iter().all(|c| c.id != "b"));
        let back = liveness.heard(at(2_500), b"b", false);
        assert_eq!(
            back,
            Some(Change { id: id("b"), from: MemberState::Down, to: MemberState::Alive })
        );
    }

    #[test]
    fn a_member_that_left_comes_back_only_with_a_hello() {
        let mut liveness = Liveness::default();
        liveness.set_members(at(0), &[id("b")]);
        assert!(liveness.left(b"b").is_some());
        assert_eq!(liveness.heard(at(10), b"b", false), None, "a pong after the goodbye");
        assert!(!liveness.is_up(b"b"));
        assert!(liveness.heard(at(20), b"b", true).is_some());
        assert!(liveness.is_up(b"b"));
    }

    #[test]
    fn groupcache_peers_go_down_only_on_failures_that_last() {
        let mut liveness = Liveness::default();
        liveness.set_members(at(0), &[id("b")]);
        assert!(liveness.evaluate(at(60_000), &config(), false).is_empty(), "silence is fine");
        assert_eq!(liveness.failed(at(60_000), b"b").map(|c| c.to), Some(MemberState::Suspect));
        assert!(liveness.evaluate(at(61_999), &config(), false).is_empty());
        let changes = liveness.evaluate(at(62_000), &config(), false);
        assert_eq!(changes.iter().map(|c| c.to).collect::<Vec<_>>(), [MemberState::Down]);
        liveness.heard(at(63_000), b"b", false);
        assert!(liveness.is_up(b"b"));
        assert!(liveness.evaluate(at(70_000), &config(), false).is_empty());
    }

    #[test]
    fn a_new_member_list_keeps_the_records_of_members_that_stay() {
        let mut liveness = Liveness::default();
        liveness.set_members(at(0), &[id("b"), id("c")]);
        liveness.evaluate(at(5_000), &config(), true);
        liveness.set_members(at(5_000), &[id("c"), id("d")]);
        assert!(!liveness.is_member(b"b"));
        assert!(!liveness.is_up(b"c"), "c stays down");
        assert!(liveness.is_up(b"d"), "d starts alive");
    }

    #[test]
    fn settings_are_validated() {
        assert!(config().is_valid());
        let bad = [
            LivenessConfig { heartbeat_interval: Duration::ZERO, ..config() },
            LivenessConfig { suspect_after: Duration::from_millis(400), ..config() },
            LivenessConfig { down_after: Duration::from_secs(1), ..config() },
            LivenessConfig { min_members: 0, ..config() },
        ];
        for config in bad {
            assert!(!config.is_valid(), "{config:?}");
        }
    }
}
