//! The members' view as subscribers see it: a version that moves when something a subscriber
//! cares about changed (a member's state, whether it is connected, the ring's shares, the
//! quorum), and the wakers of the subscribers waiting for the next version.
//!
//! Contract: the version is bumped only for a real change of that view (a heartbeat that
//! only moves `last_heard` does not bump it), at most once per drain of the node, and the
//! subscribers are woken after every front lock is released. A subscriber that is slow sees
//! the latest view when it polls again, with the number of versions it skipped, so nothing
//! is dropped silently.

use alloc::vec::Vec;
use bytes::Bytes;
use core::task::Waker;

use herdcache_proto::{Event, MemberInfo, MemberState, Node};

/// One version of the members' view.
#[derive(Clone, Debug)]
pub struct MembersView {
    /// Grows by one at each change of the view (starts at 0 for the view the node started
    /// with).
    pub version: u64,
    /// Whether at least `min_members` nodes are up (this one included).
    pub quorate: bool,
    /// This node first, then every other member on its list.
    pub members: Vec<MemberInfo>,
}

/// What [`Front::poll_members`](super::Front::poll_members) found.
#[derive(Debug)]
pub enum WatchPoll {
    /// A version the caller has not seen.
    Changed(MembersView),
    /// Nothing new; the waker is registered.
    Pending,
    /// The node stopped: no version will follow.
    Closed,
}

/// What the view is compared on: everything but `last_heard`, which moves at every
/// heartbeat.
#[derive(PartialEq)]
struct Signature {
    quorate: bool,
    members: Vec<(Bytes, MemberState, bool, u64)>,
}

impl Signature {
    fn of(node: &Node) -> Signature {
        let members = node
            .members()
            .into_iter()
            .map(|member| (member.id, member.state, member.connected, member.ring_share.to_bits()))
            .collect();
        Signature { quorate: node.is_quorate(), members }
    }
}

pub(super) struct MembersWatch {
    version: u64,
    signature: Signature,
    /// Something that may change the view happened since the last settle.
    dirty: bool,
    closed: bool,
    waiting: Vec<Waker>,
}

impl MembersWatch {
    pub(super) fn new(node: &Node) -> MembersWatch {
        MembersWatch {
            version: 0,
            signature: Signature::of(node),
            dirty: false,
            closed: false,
            waiting: Vec::new(),
        }
    }

    /// Something outside the node's events may have changed the view (a connection closed).
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Notes an event of the node that may change the view.
    pub(super) fn note(&mut self, event: &Event) {
        if matches!(
            event,
            Event::MemberChanged { .. }
                | Event::RingChanged { .. }
                | Event::PeerUp { .. }
                | Event::CopiesDropped
        ) {
            self.dirty = true;
        }
    }

    /// After a drain: compares the view with the last one when something may have changed
    /// it; a change bumps the version and hands back the subscribers to wake.
    pub(super) fn settle(&mut self, node: &Node) -> Vec<Waker> {
        if !self.dirty {
            return Vec::new();
        }
        self.dirty = false;
        let signature = Signature::of(node);
        if signature == self.signature {
            return Vec::new();
        }
        self.signature = signature;
        self.version += 1;
        core::mem::take(&mut self.waiting)
    }

    /// The node stopped: every subscriber is woken to see the end.
    pub(super) fn close(&mut self) -> Vec<Waker> {
        self.closed = true;
        core::mem::take(&mut self.waiting)
    }

    pub(super) fn version(&self) -> u64 {
        self.version
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Registers `waker` for the next version (once per task).
    pub(super) fn wait(&mut self, waker: &Waker) {
        if !self.waiting.iter().any(|waiting| waiting.will_wake(waker)) {
            self.waiting.push(waker.clone());
        }
    }
}
