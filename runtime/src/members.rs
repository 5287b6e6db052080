//! The cluster as one node sees it: [`Handle::members`](crate::Handle::members) and
//! [`Handle::subscribe`](crate::Handle::subscribe).
//!
//! A [`Subscription`] yields the current [`Members`] first, then a new one at every change of
//! the view: a member's state (alive, suspect, down), whether this node is connected to it,
//! the ring's shares, the quorum. It is a snapshot stream, not an event log: a subscriber
//! that polls slowly gets the latest snapshot, whose [`Members::skipped`] says how many
//! changes it did not see one by one; nothing is dropped silently and nothing is buffered
//! without bound. The stream ends when the node stops.

use alloc::string::String;
use alloc::vec::Vec;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use herdcache_proto::{Instant, MemberInfo, MemberState};

use crate::front::{Front, MembersView, WatchPoll};

/// One member of the cluster, as this node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Its node id (the address peers dial; a base URL in groupcache mode).
    pub id: String,
    /// The address this node dials it at: its id, without `http://` in groupcache mode.
    pub address: String,
    /// Whether it is this node.
    pub is_self: bool,
    /// Alive, suspect or down (this node is always alive).
    pub state: MemberState,
    /// Its share of the key space on this node's ring, in `[0, 1]` (0 while down).
    pub ring_share: f64,
    /// Whether this node has a usable connection to it.
    pub connected: bool,
    /// How long ago this node last heard from it (zero for this node).
    pub last_heard: Duration,
}

/// A snapshot of the cluster's members as this node sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct Members {
    /// The snapshot's version: it grows by one at each change on this node (0 is the view the
    /// node started with).
    pub version: u64,
    /// Changes this subscriber did not see one by one because it polled after several had
    /// happened (always 0 from [`Handle::members`](crate::Handle::members) and for a
    /// subscription's first snapshot).
    pub skipped: u64,
    /// Whether at least `min_members` nodes are up (this one included); below it, writes fail
    /// `Unavailable` and no copy is served.
    pub quorate: bool,
    /// This node first, then the others on its member list.
    pub members: Vec<Member>,
}

impl Members {
    pub(crate) fn from_view(view: MembersView, now: Instant, skipped: u64) -> Members {
        let members = view
            .members
            .into_iter()
            .enumerate()
            .map(|(index, info)| member_of(info, index == 0, now))
            .collect();
        Members { version: view.version, skipped, quorate: view.quorate, members }
    }

    /// The member with this id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }

    /// The ids of the members in `state`, this node included when it matches.
    #[must_use]
    pub fn in_state(&self, state: MemberState) -> Vec<&str> {
        self.members
            .iter()
            .filter(|member| member.state == state)
            .map(|member| member.id.as_str())
            .collect()
    }
}

fn member_of(info: MemberInfo, is_self: bool, now: Instant) -> Member {
    let id = String::from_utf8_lossy(&info.id).into_owned();
    let address = id
        .strip_prefix("http://")
        .or_else(|| id.strip_prefix("https://"))
        .unwrap_or(&id)
        .trim_end_matches('/')
        .into();
    Member {
        id,
        address,
        is_self,
        state: info.state,
        ring_share: info.ring_share,
        connected: info.connected,
        last_heard: if is_self {
            Duration::ZERO
        } else {
            now.saturating_duration_since(info.last_heard)
        },
    }
}

/// The stream of [`Members`] snapshots of one node: the current one first, then one per
/// change (see the module docs). Implements [`futures_lite::Stream`]; a blocking caller uses
/// [`Subscription::next_blocking`].
pub struct Subscription {
    front: Front,
    seen: Option<u64>,
}

impl core::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Subscription").field("seen", &self.seen).finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(front: Front) -> Subscription {
        Subscription { front, seen: None }
    }

    /// The next snapshot (the current one on the first call), waiting for a change; `None`
    /// once the node stopped.
    pub async fn next(&mut self) -> Option<Members> {
        futures_lite::future::poll_fn(|cx| self.poll_snapshot(cx)).await
    }

    /// [`Subscription::next`], blocking this thread.
    pub fn next_blocking(&mut self) -> Option<Members> {
        crate::source::block_on(self.next())
    }

    /// The next snapshot if one is ready now (the current one on the first call), without
    /// waiting.
    pub fn try_next(&mut self) -> Option<Members> {
        let mut cx = Context::from_waker(core::task::Waker::noop());
        match self.poll_snapshot(&mut cx) {
            Poll::Ready(members) => members,
            Poll::Pending => None,
        }
    }

    fn poll_snapshot(&mut self, cx: &mut Context<'_>) -> Poll<Option<Members>> {
        match self.front.poll_members(self.seen, cx) {
            WatchPoll::Changed(view) => {
                let skipped = self.seen.map_or(0, |seen| view.version.saturating_sub(seen + 1));
                self.seen = Some(view.version);
                Poll::Ready(Some(Members::from_view(view, self.front.now(), skipped)))
            }
            WatchPoll::Pending => Poll::Pending,
            WatchPoll::Closed => Poll::Ready(None),
        }
    }
}

impl futures_lite::Stream for Subscription {
    type Item = Members;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Members>> {
        self.get_mut().poll_snapshot(cx)
    }
}
