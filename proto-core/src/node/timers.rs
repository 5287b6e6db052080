//! The node's deadlines: one [`TimerQueue`] for every per-entry deadline (requests, calls,
//! loads, connection attempts, hellos, parse turns, heartbeats).
//!
//! Contract: a timer is named by what it is for ([`Timer`]); setting it again replaces its
//! deadline, cancelling it forgets it, and [`TimerQueue::pop_due`] yields each live timer once,
//! when its deadline is reached, in deadline order (then by [`Timer`] order, so a run replays).
//! Whether a heap entry is still live is decided here and nowhere else: each entry carries the
//! generation it was set with, and only the generation recorded for its timer counts. Stale
//! entries are skipped, dropped from the head eagerly (so [`TimerQueue::next_deadline`] is
//! exact), and compacted away when they outnumber the live ones, so memory follows the work in
//! progress.

use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;
use hashbrown::HashMap;

use super::ids::{AttemptId, CallId, PendingId};
use super::{ConnId, LoadId};
use crate::hash::KeyHashBuilder;
use crate::time::Instant;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timer {
    /// A request's deadline: it is answered `TimedOut`.
    Pending(PendingId),
    /// A peer call's deadline: it fails (gets load locally, writes fail).
    Call(CallId),
    /// A data-source call's deadline: its flight is answered `TimedOut`.
    Load(LoadId),
    /// A load the rate limiter delayed may start.
    StartLoad(LoadId),
    /// A connection attempt the driver has not reported on counts as failed.
    Connect(AttemptId),
    /// A connection whose hello has not arrived is closed.
    Hello(ConnId),
    /// A connection with frames left for the next turn is parsed again.
    Parse(ConnId),
    /// Members are checked, pinged and dialled (liveness).
    Heartbeat,
    /// The handoff window after a ring change closes: entries this node does not own leave
    /// its main cache, and misses no longer ask the previous owner.
    HandoffEnd,
}

/// Deadlines in a heap, with generations so that replaced and cancelled ones are skipped.
pub(super) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, Timer, u64)>>,
    /// The generation of each live timer's current deadline.
    live: HashMap<Timer, u64, KeyHashBuilder>,
    next_generation: u64,
}

/// Stale entries the heap may hold beyond twice the live ones before it is rebuilt.
const COMPACT_SLACK: usize = 1_024;

impl TimerQueue {
    /// An empty queue; `hasher` seeds its index.
    pub(super) fn new(hasher: KeyHashBuilder) -> TimerQueue {
        TimerQueue {
            heap: BinaryHeap::new(),
            live: HashMap::with_hasher(hasher),
            next_generation: 0,
        }
    }

    /// Sets `timer` to fire at `at`, replacing any deadline it had.
    pub(super) fn set(&mut self, at: Instant, timer: Timer) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert(timer, generation);
        self.heap.push(Reverse((at, timer, generation)));
        self.drop_stale_head();
        self.compact();
    }

    /// Forgets `timer`; a no-op when it is not set.
    pub(super) fn cancel(&mut self, timer: Timer) {
        if self.live.remove(&timer).is_some() {
            self.drop_stale_head();
        }
    }

    /// Whether `timer` is set.
    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.live.contains_key(&timer)
    }

    /// The next live timer due at or before `now`, which is no longer set afterwards.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        loop {
            let &Reverse((at, timer, generation)) = self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.is_current(timer, generation) {
                self.live.remove(&timer);
                self.drop_stale_head();
                return Some(timer);
            }
        }
    }

    /// The earliest live deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Live timers.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// The one "still live?" rule: an entry counts when its generation is its timer's latest.
    fn is_current(&self, timer: Timer, generation: u64) -> bool {
        self.live.get(&timer) == Some(&generation)
    }

    /// Pops stale entries off the head, so that the head is live (or the heap empty).
    fn drop_stale_head(&mut self) {
        while let Some(&Reverse((_, timer, generation))) = self.heap.peek() {
            if self.is_current(timer, generation) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from the live entries when stale ones outnumber them.
    fn compact(&mut self) {
        if self.heap.len() <= 2 * self.live.len() + COMPACT_SLACK {
            return;
        }
        let entries = core::mem::take(&mut self.heap).into_vec();
        let kept: Vec<_> = entries
            .into_iter()
            .filter(|Reverse((_, timer, generation))| self.is_current(*timer, *generation))
            .collect();
        self.heap = BinaryHeap::from(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::key_hash_builder;

    fn at(us: u64) -> Instant {
        Instant::from_micros(us)
    }

    #[test]
    fn a_timer_set_again_fires_once_at_its_latest_deadline() {
        let mut timers = TimerQueue::new(key_hash_builder(1));
        let timer = Timer::Pending(PendingId(1));
        timers.set(at(10), timer);
        timers.set(at(30), timer);
        assert_eq!(timers.next_deadline(), Some(at(30)), "the replaced deadline is gone");
        assert_eq!(timers.pop_due(at(20)), None);
        assert_eq!(timers.pop_due(at(30)), Some(timer));
        assert_eq!(timers.pop_due(at(30)), None);
        assert!(!timers.is_set(timer));
    }

    #[test]
    fn a_cancelled_timer_never_fires_and_leaves_the_head() {
        let mut timers = TimerQueue::new(key_hash_builder(1));
        let early = Timer::Call(CallId(1));
        let late = Timer::Hello(ConnId(2));
        timers.set(at(10), early);
        timers.set(at(20), late);
        timers.cancel(early);
        assert_eq!(timers.next_deadline(), Some(at(20)));
        assert_eq!(timers.pop_due(at(100)), Some(late));
        assert_eq!(timers.pop_due(at(100)), None);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn due_timers_come_in_deadline_then_timer_order() {
        let mut timers = TimerQueue::new(key_hash_builder(1));
        timers.set(at(5), Timer::Parse(ConnId(1)));
        timers.set(at(5), Timer::Pending(PendingId(9)));
        timers.set(at(1), Timer::Load(LoadId(3)));
        let fired: Vec<Timer> = core::iter::from_fn(|| timers.pop_due(at(5))).collect();
        assert_eq!(
            fired,
            [Timer::Load(LoadId(3)), Timer::Pending(PendingId(9)), Timer::Parse(ConnId(1))]
        );
    }

    #[test]
    fn stale_entries_are_compacted_away() {
        let mut timers = TimerQueue::new(key_hash_builder(1));
        let timer = Timer::Pending(PendingId(1));
        for us in 0..10_000 {
            timers.set(at(1_000_000 - us), timer);
        }
        assert!(timers.heap.len() <= 2 * timers.len() + COMPACT_SLACK + 1);
        assert_eq!(timers.pop_due(at(u64::MAX)), Some(timer));
        assert_eq!(timers.pop_due(at(u64::MAX)), None);
    }
}
