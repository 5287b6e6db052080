//! Singleflight: N concurrent requests for one missing key make ONE load and N replies.
//!
//! Contract, in short (the full text is on [`FlightTable`], where rustdoc shows it): at most one
//! flight per key; `begin` makes a leader or a follower; `complete` answers every remaining
//! waiter exactly once, in join order, with `cacheable == false` iff the key was invalidated
//! since `begin`; `leave` never cancels the load; stale ids are rejected; errors change nothing;
//! memory is bounded by the live flights, never by the keys ever seen.

use alloc::vec::Vec;
use core::fmt;
use core::iter::FusedIterator;
use core::ops::Deref;

use bytes::Bytes;
use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::hash::{KeyHashBuilder, hash_key, key_hash_builder};

/// Waiters kept inline before the list spills to the heap: most flights have 1–4 waiters.
const INLINE_WAITERS: usize = 4;

type WaiterList<W> = SmallVec<[W; INLINE_WAITERS]>;

/// Identifies one flight: a slot index plus that slot's generation, so an id of a finished
/// flight is never mistaken for a later flight that reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlightId {
    slot: u32,
    generation: u32,
}

/// The bounds of a [`FlightTable`].
///
/// Worst-case memory is about `max_flights × max_waiters × size_of::<W>()` (32 MiB with the
/// defaults and 8-byte waiter ids). Remote peers coalesce their own requests, so a flight's
/// waiters are mostly local requests plus one per peer. A limit of zero is allowed and makes
/// every [`FlightTable::begin`] fail (the leader counts as a waiter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlightLimits {
    /// The most flights (distinct keys being loaded) at once.
    pub max_flights: usize,
    /// The most waiters on one flight, the leader included.
    pub max_waiters: usize,
}

impl FlightLimits {
    /// Default for [`FlightLimits::max_flights`].
    pub const DEFAULT_MAX_FLIGHTS: usize = 4_096;
    /// Default for [`FlightLimits::max_waiters`].
    pub const DEFAULT_MAX_WAITERS: usize = 1_024;
}

impl Default for FlightLimits {
    fn default() -> Self {
        FlightLimits {
            max_flights: Self::DEFAULT_MAX_FLIGHTS,
            max_waiters: Self::DEFAULT_MAX_WAITERS,
        }
    }
}

/// What [`FlightTable::begin`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a leader must start the load"]
pub enum Begin {
    /// A new flight was created with the caller as its first waiter: the caller must start the
    /// load (or the peer fetch) and later call [`FlightTable::complete`].
    Leader(FlightId),
    /// The caller joined the flight already in progress for the key; it will be answered by
    /// that flight's [`FlightTable::complete`].
    Follower(FlightId),
}

impl Begin {
    /// The flight, whichever role the caller got.
    #[must_use]
    pub const fn id(self) -> FlightId {
        match self {
            Begin::Leader(id) | Begin::Follower(id) => id,
        }
    }

    /// Whether the caller must start the load.
    #[must_use]
    pub const fn is_leader(self) -> bool {
        matches!(self, Begin::Leader(_))
    }
}

/// Why a [`FlightTable`] operation was refused. Every variant leaves the table unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlightError {
    /// `begin` needed a new flight but `max_flights` flights are in progress. State unchanged:
    /// no flight was created and the waiter was not recorded.
    TooManyFlights {
        /// The configured [`FlightLimits::max_flights`].
        limit: usize,
    },
    /// `begin` would join a flight that already has `max_waiters` waiters. State unchanged:
    /// the waiter was not recorded and the flight goes on as before.
    TooManyWaiters {
        /// The configured [`FlightLimits::max_waiters`].
        limit: usize,
    },
    /// `begin` was given a waiter already waiting on that key's flight (it would have been
    /// answered twice). State unchanged: the waiter stays recorded once.
    DuplicateWaiter,
    /// The id is not a live flight of this table: it was already completed (a late or duplicate
    /// completion), or it comes from another table. State unchanged: in particular a flight
    /// that reuses the slot is not touched.
    StaleFlight,
}

impl fmt::Display for FlightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlightError::TooManyFlights { limit } => {
                write!(f, "too many flights in progress (limit {limit})")
            }
            FlightError::TooManyWaiters { limit } => {
                write!(f, "too many waiters on one flight (limit {limit})")
            }
            FlightError::DuplicateWaiter => f.write_str("waiter already waits on this flight"),
            FlightError::StaleFlight => f.write_str("flight is not in progress (stale id)"),
        }
    }
}

impl core::error::Error for FlightError {}

/// The waiters of a completed flight, in join order, each exactly once.
///
/// Derefs to `[W]`; iterate by value with `into_iter()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiters<W>(WaiterList<W>);

impl<W> Waiters<W> {
    /// The waiters as a slice.
    #[must_use]
    pub fn as_slice(&self) -> &[W] {
        &self.0
    }
}

impl<W> Deref for Waiters<W> {
    type Target = [W];
    fn deref(&self) -> &[W] {
        &self.0
    }
}

impl<W> IntoIterator for Waiters<W> {
    type Item = W;
    type IntoIter = WaitersIntoIter<W>;
    fn into_iter(self) -> WaitersIntoIter<W> {
        WaitersIntoIter(self.0.into_iter())
    }
}

impl<'a, W> IntoIterator for &'a Waiters<W> {
    type Item = &'a W;
    type IntoIter = core::slice::Iter<'a, W>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The by-value iterator over [`Waiters`].
#[derive(Debug)]
pub struct WaitersIntoIter<W>(smallvec::IntoIter<[W; INLINE_WAITERS]>);

impl<W> Iterator for WaitersIntoIter<W> {
    type Item = W;
    fn next(&mut self) -> Option<W> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<W> DoubleEndedIterator for WaitersIntoIter<W> {
    fn next_back(&mut self) -> Option<W> {
        self.0.next_back()
    }
}

impl<W> ExactSizeIterator for WaitersIntoIter<W> {}
impl<W> FusedIterator for WaitersIntoIter<W> {}

/// A finished flight, returned by [`FlightTable::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "every waiter must be answered"]
pub struct Completed<W> {
    /// The key the flight loaded.
    pub key: Bytes,
    /// Every waiter that did not leave, each exactly once, in join order. May be empty (every
    /// waiter left); the result may still be cached then.
    pub waiters: Waiters<W>,
    /// Whether the result may be stored in the cache: `false` when the key was invalidated
    /// (put or deleted) after the flight began, so the loaded value may be older than the write.
    pub cacheable: bool,
}

struct Flight<W> {
    key: Bytes,
    hash: u64,
    waiters: WaiterList<W>,
    /// Whether the flight is still the key's (not invalidated by a put or delete since it
    /// began): only then is its result cacheable. Invalidation detaches it, so it never
    /// comes back.
    attached: bool,
}

struct Slot<W> {
    generation: u32,
    flight: Option<Flight<W>>,
}

/// The singleflight table: at most one flight per key, each with its list of waiters.
///
/// A [`FlightTable`] holds at most one *flight* per key: the load from the data source (or the
/// fetch from the owning peer) that is in progress for that key, and the *waiters* (request ids,
/// any `W: Copy + Eq`) that want its result. It is sans-IO: a waiter is plain data, never a
/// future or a channel, and the table never starts or finishes a load itself.
///
/// # Contract
/// - [`FlightTable::begin`] either creates a flight ([`Begin::Leader`]: the caller must start
///   the load) or joins the existing one ([`Begin::Follower`]: the caller does nothing more).
///   The leader is simply the first waiter; it has no other privilege.
/// - [`FlightTable::complete`] is called once per flight, on *every* outcome (value, not-found,
///   error, timeout). It returns the key, every waiter still waiting exactly once in join order,
///   and whether the result may be cached. The flight is gone afterwards: the next `begin` for
///   the key creates a new leader.
/// - [`FlightTable::leave`] removes one waiter (its request timed out or was cancelled). The
///   flight goes on for the others. **Even when every waiter has left, the flight stays until
///   `complete`**: the load is not cancelled, and its result may still be cached — groupcache's
///   behaviour, so that the work already paid for is not thrown away and a retry hits.
/// - [`FlightTable::invalidate`] marks the in-progress flight of a key (if any) as superseded by
///   a put or delete: its result still answers its waiters but is not cacheable, and the flight
///   is *detached* from the key, so a request that begins after the write starts a new flight
///   instead of being answered by a load that began before it. A detached flight still counts
///   against `max_flights` until it completes. At most one *attached* flight exists per key.
///   An invalidate with no flight for the key has nothing to protect and records nothing.
/// - A [`FlightId`] carries its slot's generation, so a late or duplicate `complete` of a
///   finished flight is rejected with [`FlightError::StaleFlight`] and can never be applied to
///   a later flight that reuses the slot.
/// - Every error leaves the table unchanged.
///
/// # Memory
/// The table stores one entry per *live* flight and nothing per key beyond it: the per-key
/// generation that `invalidate` bumps lives inside the flight entry (a key's generation only
/// matters while a flight for it exists, because a flight that begins after an invalidate
/// cannot be affected by it), so memory is `O(max_flights × (key + max_waiters))` however many
/// distinct keys were ever seen. Slots are reused through a free list. The table stores its own
/// copy of each key so that it never pins a caller's (possibly large) receive buffer.
///
/// # Example
/// ```
/// use herdcache_proto::{Begin, FlightLimits, FlightTable};
/// let mut flights = FlightTable::<u64>::new(0x5eed, FlightLimits::default());
/// // Three requests (ids 1, 2, 3) miss the same key: one load.
/// assert!(flights.begin(b"user:42", 1)?.is_leader());
/// let id = flights.begin(b"user:42", 2)?.id();
/// assert_eq!(flights.begin(b"user:42", 3)?, Begin::Follower(id));
/// // Request 2 times out, and a delete of the key races the load.
/// assert!(flights.leave(id, 2));
/// assert!(flights.invalidate(b"user:42"));
/// // The load finishes: answer 1 and 3, but do not cache the result.
/// let done = flights.complete(id)?;
/// assert_eq!(&done.waiters[..], &[1, 3]);
/// assert!(!done.cacheable);
/// # Ok::<(), herdcache_proto::FlightError>(())
/// ```
pub struct FlightTable<W> {
    hasher: KeyHashBuilder,
    /// key → slot index, hashed with the seeded key hasher (the hash is kept in the flight).
    index: HashTable<u32>,
    slots: Vec<Slot<W>>,
    /// Indices of empty slots, reused last-in first-out.
    free: Vec<u32>,
    len: usize,
    limits: FlightLimits,
}

impl<W> fmt::Debug for FlightTable<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightTable")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<W: Copy + Eq> FlightTable<W> {
    /// An empty table whose key index is hashed with `seed`.
    #[must_use]
    pub fn new(seed: u64, limits: FlightLimits) -> Self {
        FlightTable {
            hasher: key_hash_builder(seed),
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            limits,
        }
    }

    /// The configured bounds.
    #[must_use]
    pub const fn limits(&self) -> FlightLimits {
        self.limits
    }

    /// The number of flights in progress.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no flight is in progress.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `waiter` wants `key`: joins the flight in progress for it, or creates one.
    ///
    /// O(1) expected to find the flight, plus O(waiters) to refuse a duplicate waiter. Waiter
    /// ids must be unique among all flights in progress (the Node's are): a duplicate is caught
    /// only within the key's attached flight, not in one a write detached.
    ///
    /// # Errors
    /// [`FlightError::TooManyFlights`], [`FlightError::TooManyWaiters`] or
    /// [`FlightError::DuplicateWaiter`]; the table is unchanged in every case.
    pub fn begin(&mut self, key: &[u8], waiter: W) -> Result<Begin, FlightError> {
        let hash = hash_key(&self.hasher, key);
        if let Some(slot) = self.find(hash, key) {
            let max_waiters = self.limits.max_waiters;
            let id = FlightId { slot, generation: self.slots[slot as usize].generation };
            let flight = self.flight_mut(id).expect("the key index only points at live flights");
            if flight.waiters.contains(&waiter) {
                return Err(FlightError::DuplicateWaiter);
            }
            if flight.waiters.len() >= max_waiters {
                return Err(FlightError::TooManyWaiters { limit: max_waiters });
            }
            flight.waiters.push(waiter);
            return Ok(Begin::Follower(id));
        }

        if self.len >= self.limits.max_flights {
            return Err(FlightError::TooManyFlights { limit: self.limits.max_flights });
        }
        if self.limits.max_waiters == 0 {
            return Err(FlightError::TooManyWaiters { limit: 0 });
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                // More than u32::MAX slots cannot be allocated in practice; refuse rather than wrap.
                let slot = u32::try_from(self.slots.len())
                    .map_err(|_| FlightError::TooManyFlights { limit: self.limits.max_flights })?;
                self.slots.push(Slot { generation: 0, flight: None });
                slot
            }
        };
        let mut waiters = WaiterList::new();
        waiters.push(waiter);
        let entry = &mut self.slots[slot as usize];
        debug_assert!(entry.flight.is_none(), "free slots are empty");
        entry.flight =
            Some(Flight { key: Bytes::copy_from_slice(key), hash, waiters, attached: true });
        let id = FlightId { slot, generation: entry.generation };
        let slots = &self.slots;
        self.index.insert_unique(hash, slot, |&s| {
            slots[s as usize].flight.as_ref().map_or(0, |flight| flight.hash)
        });
        self.len += 1;
        Ok(Begin::Leader(id))
    }

    /// `waiter` gives up on `flight` (timed out or cancelled). The flight and its load go on for
    /// the other waiters — and with none left, until [`FlightTable::complete`], whose result may
    /// still be cached.
    ///
    /// Returns whether the waiter was waiting on that flight (`false` for a stale id or an
    /// unknown waiter; nothing changes then).
    pub fn leave(&mut self, flight: FlightId, waiter: W) -> bool {
        let Some(flight) = self.flight_mut(flight) else {
            return false;
        };
        match flight.waiters.iter().position(|w| *w == waiter) {
            Some(position) => {
                flight.waiters.remove(position);
                true
            }
            None => false,
        }
    }

    /// Every key was written at once (a whole keyspace deleted): every attached flight is
    /// invalidated and detached, as by [`FlightTable::invalidate`]. Returns how many.
    pub fn invalidate_all(&mut self) -> usize {
        let mut invalidated = 0;
        for slot in &mut self.slots {
            if let Some(flight) = slot.flight.as_mut().filter(|flight| flight.attached) {
                flight.attached = false;
                invalidated += 1;
            }
        }
        self.index.clear();
        invalidated
    }

    /// A put or delete of `key` happened: the flight in progress for it, if any, still answers
    /// its waiters but its result must not be cached. Returns whether a flight was affected.
    ///
    /// Without a flight nothing is recorded: a flight that begins later loads after the write.
    pub fn invalidate(&mut self, key: &[u8]) -> bool {
        let hash = hash_key(&self.hasher, key);
        let Some(slot) = self.find(hash, key) else {
            return false;
        };
        let flight = self.slots[slot as usize]
            .flight
            .as_mut()
            .expect("the key index only points at live flights");
        flight.attached = false;
        // Detach: a request that arrives after the write must not be answered by a load that
        // began before it, so the next `begin` for the key starts a new flight.
        match self.index.find_entry(hash, |&s| s == slot) {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => debug_assert!(false, "the flight was just found through the index"),
        }
        true
    }

    /// The load of `flight` finished (with any outcome). Removes the flight and returns its key,
    /// its remaining waiters exactly once in join order, and whether the result is cacheable.
    ///
    /// # Errors
    /// [`FlightError::StaleFlight`] when `flight` is not in progress (already completed, or
    /// from another table); the table is unchanged.
    pub fn complete(&mut self, flight: FlightId) -> Result<Completed<W>, FlightError> {
        let slot = self
            .slots
            .get_mut(flight.slot as usize)
            .filter(|slot| slot.generation == flight.generation)
            .ok_or(FlightError::StaleFlight)?;
        let done = slot.flight.take().ok_or(FlightError::StaleFlight)?;
        // When the generation would wrap, a 2^32-flights-old id could alias a new flight: the
        // slot is retired instead of freed (one empty slot per 2^32 flights through it).
        if let Some(generation) = slot.generation.checked_add(1) {
            slot.generation = generation;
            self.free.push(flight.slot);
        }
        // An invalidated flight was already detached from the key index.
        if done.attached {
            match self.index.find_entry(done.hash, |&s| s == flight.slot) {
                Ok(entry) => {
                    entry.remove();
                }
                Err(_) => debug_assert!(false, "an attached flight is in the key index"),
            }
        }
        self.len -= 1;
        Ok(Completed { key: done.key, waiters: Waiters(done.waiters), cacheable: done.attached })
    }

    /// The flight in progress for `key`, if any.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<FlightId> {
        let slot = self.find(hash_key(&self.hasher, key), key)?;
        Some(FlightId { slot, generation: self.slots[slot as usize].generation })
    }

    /// The waiters of `flight` in join order, or `None` when it is not in progress.
    #[must_use]
    pub fn waiters(&self, flight: FlightId) -> Option<&[W]> {
        self.flight(flight).map(|flight| flight.waiters.as_slice())
    }

    /// The key of `flight`, or `None` when it is not in progress.
    #[must_use]
    pub fn key(&self, flight: FlightId) -> Option<&Bytes> {
        self.flight(flight).map(|flight| &flight.key)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&s| {
                slots
                    .get(s as usize)
                    .and_then(|slot| slot.flight.as_ref())
                    .is_some_and(|flight| flight.key.as_ref() == key)
            })
            .copied()
    }

    fn flight(&self, id: FlightId) -> Option<&Flight<W>> {
        self.slots
            .get(id.slot as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.flight.as_ref())
    }

    fn flight_mut(&mut self, id: FlightId) -> Option<&mut Flight<W>> {
        self.slots
            .get_mut(id.slot as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.flight.as_mut())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::{format, vec};
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn table() -> FlightTable<u64> {
        FlightTable::new(7, FlightLimits::default())
    }

    fn answered(done: &Completed<u64>) -> Vec<u64> {
        done.waiters.iter().copied().collect()
    }

    #[test]
    fn singleflight_coalesces_concurrent_misses() {
        let mut t = table();
        let first = t.begin(b"k", 1).unwrap();
        assert!(first.is_leader());
        for w in 2..=5 {
            assert_eq!(t.begin(b"k", w), Ok(Begin::Follower(first.id())));
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(b"k"), Some(first.id()));
        let done = t.complete(first.id()).unwrap();
        assert_eq!(done.key, Bytes::from_static(b"k"));
        assert_eq!(answered(&done), vec![1, 2, 3, 4, 5]);
        assert!(done.cacheable);
        assert!(t.is_empty());
        assert_eq!(t.get(b"k"), None);
    }

    #[test]
    fn distinct_keys_get_distinct_flights() {
        let mut t = table();
        let a = t.begin(b"a", 1).unwrap();
        let b = t.begin(b"b", 1).unwrap();
        assert!(a.is_leader() && b.is_leader());
        assert_ne!(a.id(), b.id());
        assert_eq!(t.key(b.id()).map(|k| k.as_ref()), Some(&b"b"[..]));
    }

    #[test]
    fn begin_after_complete_makes_a_new_leader() {
        let mut t = table();
        let first = t.begin(b"k", 1).unwrap();
        let _ = t.complete(first.id()).unwrap();
        let second = t.begin(b"k", 2).unwrap();
        assert!(second.is_leader());
        assert_ne!(second.id(), first.id());
    }

    #[test]
    fn leaving_waiter_does_not_cancel_flight() {
        let mut t = table();
        let id = t.begin(b"k", 1).unwrap().id();
        let _ = t.begin(b"k", 2).unwrap();
        let _ = t.begin(b"k", 3).unwrap();
        assert!(t.leave(id, 1), "the leader may leave too");
        assert!(!t.leave(id, 1), "a waiter leaves once");
        assert!(!t.leave(id, 99), "an unknown waiter is not there");
        assert_eq!(t.waiters(id), Some(&[2, 3][..]));
        assert_eq!(t.get(b"k"), Some(id));
        let done = t.complete(id).unwrap();
        assert_eq!(answered(&done), vec![2, 3]);
    }

    #[test]
    fn flight_without_waiters_still_completes_and_may_be_cached() {
        let mut t = table();
        let id = t.begin(b"k", 1).unwrap().id();
        assert!(t.leave(id, 1));
        assert_eq!(t.waiters(id), Some(&[][..]));
        assert_eq!(t.len(), 1, "the load goes on with no waiters");
        assert!(matches!(t.begin(b"k", 2), Ok(Begin::Follower(f)) if f == id));
        assert!(t.leave(id, 2));
        let done = t.complete(id).unwrap();
        assert!(done.waiters.is_empty());
        assert!(done.cacheable);
    }

    #[test]
    fn invalidate_during_flight_makes_result_uncacheable() {
        let mut t = table();
        let id = t.begin(b"k", 1).unwrap().id();
        let other = t.begin(b"other", 2).unwrap().id();
        let _ = t.begin(b"k", 3).unwrap();
        assert!(t.invalidate(b"k"));
        assert!(!t.invalidate(b"k"), "the detached flight is no longer the key's flight");
        // A get after the write starts a new flight rather than joining the superseded load.
        let newer = t.begin(b"k", 4).unwrap();
        assert!(newer.is_leader());
        assert_ne!(newer.id(), id);
        let done = t.complete(id).unwrap();
        assert!(!done.cacheable);
        assert_eq!(answered(&done), vec![1, 3], "an invalidated flight still answers");
        assert!(t.complete(newer.id()).unwrap().cacheable);
        assert!(t.complete(other).unwrap().cacheable, "only the invalidated key is affected");
    }

    #[test]
    fn invalidate_all_detaches_every_flight() {
        let mut t = table();
        let a = t.begin(b"a", 1).unwrap().id();
        let b = t.begin(b"b", 2).unwrap().id();
        assert_eq!(t.invalidate_all(), 2);
        assert_eq!(t.invalidate_all(), 0, "already detached");
        assert!(t.get(b"a").is_none());
        let fresh = t.begin(b"a", 3).unwrap();
        assert!(fresh.is_leader());
        assert!(!t.complete(a).unwrap().cacheable);
        assert!(!t.complete(b).unwrap().cacheable);
        assert!(t.complete(fresh.id()).unwrap().cacheable);
        assert!(t.is_empty());
    }

    #[test]
    fn invalidate_without_flight_records_nothing() {
        let mut t = table();
        for i in 0..10_000u32 {
            assert!(!t.invalidate(&i.to_le_bytes()));
        }
        assert_eq!((t.len(), t.slots.len(), t.index.len()), (0, 0, 0));
        let id = t.begin(&7u32.to_le_bytes(), 1).unwrap().id();
        assert!(
            t.complete(id).unwrap().cacheable,
            "an earlier invalidate does not taint a later flight"
        );
    }

    #[test]
    fn stale_flight_id_is_rejected() {
        let mut t = table();
        let old = t.begin(b"k", 1).unwrap().id();
        let _ = t.complete(old).unwrap();
        let new = t.begin(b"k", 2).unwrap().id();
        assert_eq!(new.slot, old.slot, "the slot is reused");
        assert_eq!(t.complete(old), Err(FlightError::StaleFlight));
        assert!(!t.leave(old, 2));
        assert_eq!(t.waiters(old), None);
        assert_eq!(t.key(old), None);
        assert_eq!(t.waiters(new), Some(&[2][..]), "the new flight is untouched");
        assert_eq!(answered(&t.complete(new).unwrap()), vec![2]);
        assert_eq!(t.complete(new), Err(FlightError::StaleFlight), "completing twice is rejected");
    }

    #[test]
    fn id_from_another_table_is_rejected() {
        let mut big = table();
        for k in 0..10u8 {
            let _ = big.begin(&[k], 1).unwrap();
        }
        let foreign = big.get(&[9]).unwrap();
        let mut t = table();
        assert_eq!(t.complete(foreign), Err(FlightError::StaleFlight));
    }

    #[test]
    fn slot_whose_generation_would_wrap_is_retired() {
        let mut t = table();
        let id = t.begin(b"k", 1).unwrap().id();
        t.slots[id.slot as usize].generation = u32::MAX;
        let last = FlightId { slot: id.slot, generation: u32::MAX };
        let _ = t.complete(last).unwrap();
        assert!(t.free.is_empty(), "the slot is not reused");
        let next = t.begin(b"k", 2).unwrap().id();
        assert_ne!(next.slot, id.slot);
        assert_eq!(t.complete(last), Err(FlightError::StaleFlight));
    }

    #[test]
    fn too_many_flights_is_rejected_without_changing_state() {
        let mut t = FlightTable::new(1, FlightLimits { max_flights: 2, max_waiters: 8 });
        let a = t.begin(b"a", 1).unwrap().id();
        let _ = t.begin(b"b", 2).unwrap();
        assert_eq!(t.begin(b"c", 3), Err(FlightError::TooManyFlights { limit: 2 }));
        assert_eq!((t.len(), t.get(b"c")), (2, None));
        assert!(t.begin(b"a", 4).is_ok(), "joining an existing flight needs no new flight");
        let _ = t.complete(a).unwrap();
        assert!(t.begin(b"c", 3).unwrap().is_leader());
    }

    #[test]
    fn too_many_waiters_is_rejected_without_changing_state() {
        let mut t = FlightTable::new(1, FlightLimits { max_flights: 8, max_waiters: 2 });
        let id = t.begin(b"k", 1).unwrap().id();
        let _ = t.begin(b"k", 2).unwrap();
        assert_eq!(t.begin(b"k", 3), Err(FlightError::TooManyWaiters { limit: 2 }));
        assert_eq!(t.waiters(id), Some(&[1, 2][..]));
        assert!(t.leave(id, 1));
        assert_eq!(t.begin(b"k", 3), Ok(Begin::Follower(id)));
    }

    #[test]
    fn duplicate_waiter_is_rejected() {
        let mut t = table();
        let id = t.begin(b"k", 1).unwrap().id();
        assert_eq!(t.begin(b"k", 1), Err(FlightError::DuplicateWaiter));
        assert_eq!(t.waiters(id), Some(&[1][..]));
        assert!(t.begin(b"other", 1).unwrap().is_leader(), "one waiter may wait on several keys");
    }

    #[test]
    fn zero_limits_refuse_every_begin() {
        let mut t = FlightTable::new(1, FlightLimits { max_flights: 0, max_waiters: 4 });
        assert_eq!(t.begin(b"k", 1), Err(FlightError::TooManyFlights { limit: 0 }));
        let mut t = FlightTable::new(1, FlightLimits { max_flights: 4, max_waiters: 0 });
        assert_eq!(t.begin(b"k", 1), Err(FlightError::TooManyWaiters { limit: 0 }));
        assert!(t.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_concurrent_flights_not_keys_seen() {
        let mut t = table();
        for i in 0..50_000u32 {
            let a = t.begin(&i.to_le_bytes(), 1).unwrap().id();
            let b = t.begin(&(i ^ 0x8000_0000).to_le_bytes(), 2).unwrap().id();
            let _ = t.complete(a).unwrap();
            let _ = t.complete(b).unwrap();
        }
        assert!(t.is_empty());
        assert!(t.slots.len() <= 2 && t.free.len() <= 2);
        assert!(t.index.capacity() <= 16);
    }

    #[test]
    fn stored_key_does_not_pin_the_callers_buffer() {
        let frame = Bytes::from(vec![7u8; 4096]);
        let mut t = table();
        let id = t.begin(&frame[10..14], 1).unwrap().id();
        let key = t.key(id).unwrap();
        assert_eq!(key.len(), 4);
        assert!(!frame.as_ptr_range().contains(&key.as_ptr()));
    }

    #[test]
    fn waiters_iterate_by_value_in_join_order() {
        let mut t = table();
        let id = t.begin(b"k", 10).unwrap().id();
        for w in 11..20 {
            let _ = t.begin(b"k", w).unwrap();
        }
        let done = t.complete(id).unwrap();
        assert_eq!(done.waiters.len(), 10);
        let mut by_value = done.waiters.into_iter();
        assert_eq!(by_value.len(), 10);
        assert_eq!(by_value.next_back(), Some(19));
        assert!(by_value.eq(10..19));
    }

    /// The reference model: a list of live flights.
    #[derive(Debug)]
    struct ModelFlight {
        id: FlightId,
        key: u8,
        waiters: Vec<u64>,
        invalidated: bool,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Begin(u8),
        Leave(usize),
        Invalidate(u8),
        Complete(usize),
        CompleteStale(usize),
    }

    const KEYS: u8 = 5;
    const LIMITS: FlightLimits = FlightLimits { max_flights: 3, max_waiters: 3 };

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..KEYS).prop_map(Op::Begin),
            2 => any::<usize>().prop_map(Op::Leave),
            1 => (0..KEYS).prop_map(Op::Invalidate),
            2 => any::<usize>().prop_map(Op::Complete),
            1 => any::<usize>().prop_map(Op::CompleteStale),
        ]
    }

    fn key_of(k: u8) -> [u8; 2] {
        [b'k', k]
    }

    proptest! {
        #![proptest_config(crate::testing::model_config())]

        #[test]
        fn flight_table_matches_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..200)) {
            let mut table = FlightTable::<u64>::new(seed, LIMITS);
            let mut model: Vec<ModelFlight> = Vec::new();
            let mut next_waiter = 0u64;
            let mut admitted: Vec<(u64, FlightId)> = Vec::new();
            let mut left: HashSet<u64> = HashSet::new();
            let mut answers: HashMap<u64, u32> = HashMap::new();
            let mut stale: Vec<FlightId> = Vec::new();

            let record = |done: Completed<u64>, m: ModelFlight, answers: &mut HashMap<u64, u32>| {
                prop_assert_eq!(done.key.as_ref(), &key_of(m.key)[..]);
                prop_assert_eq!(done.waiters.as_slice(), m.waiters.as_slice());
                prop_assert_eq!(done.cacheable, !m.invalidated);
                for w in done.waiters {
                    *answers.entry(w).or_default() += 1;
                }
                Ok(())
            };

            for op in ops {
                match op {
                    Op::Begin(k) => {
                        let w = next_waiter;
                        next_waiter += 1;
                        let got = table.begin(&key_of(k), w);
                        let flights = model.len();
                        match model.iter_mut().find(|m| m.key == k && !m.invalidated) {
                            Some(m) if m.waiters.len() >= LIMITS.max_waiters => {
                                prop_assert_eq!(got, Err(FlightError::TooManyWaiters { limit: LIMITS.max_waiters }));
                            }
                            Some(m) => {
                                prop_assert_eq!(got, Ok(Begin::Follower(m.id)));
                                m.waiters.push(w);
                                admitted.push((w, m.id));
                            }
                            None if flights >= LIMITS.max_flights => {
                                prop_assert_eq!(got, Err(FlightError::TooManyFlights { limit: LIMITS.max_flights }));
                            }
                            None => {
                                let Ok(Begin::Leader(id)) = got else {
                                    return Err(TestCaseError::fail(format!("expected a leader, got {got:?}")));
                                };
                                prop_assert!(!stale.contains(&id), "a new flight reuses no old id");
                                model.push(ModelFlight { id, key: k, waiters: vec![w], invalidated: false });
                                admitted.push((w, id));
                            }
                        }
                    }
                    Op::Leave(pick) => {
                        if admitted.is_empty() { continue; }
                        let (w, id) = admitted[pick % admitted.len()];
                        let expected = model.iter_mut().find(|m| m.id == id).and_then(|m| {
                            let pos = m.waiters.iter().position(|&x| x == w)?;
                            m.waiters.remove(pos);
                            Some(())
                        }).is_some();
                        prop_assert_eq!(table.leave(id, w), expected);
                        if expected { left.insert(w); }
                    }
                    Op::Invalidate(k) => {
                        let expected = match model.iter_mut().find(|m| m.key == k && !m.invalidated) {
                            Some(m) => { m.invalidated = true; true }
                            None => false,
                        };
                        prop_assert_eq!(table.invalidate(&key_of(k)), expected);
                    }
                    Op::Complete(pick) => {
                        if model.is_empty() { continue; }
                        let m = model.remove(pick % model.len());
                        let id = m.id;
                        let done = table.complete(id);
                        prop_assert!(done.is_ok(), "live flight must complete: {:?}", done);
                        record(done.unwrap(), m, &mut answers)?;
                        stale.push(id);
                    }
                    Op::CompleteStale(pick) => {
                        if stale.is_empty() { continue; }
                        let id = stale[pick % stale.len()];
                        prop_assert_eq!(table.complete(id), Err(FlightError::StaleFlight));
                    }
                }

                // Invariants after every step.
                prop_assert_eq!(table.len(), model.len());
                prop_assert!(table.len() <= LIMITS.max_flights);
                for k in 0..KEYS {
                    let live: Vec<&ModelFlight> = model.iter().filter(|m| m.key == k && !m.invalidated).collect();
                    prop_assert!(live.len() <= 1, "at most one attached flight per key");
                    prop_assert_eq!(table.get(&key_of(k)), live.first().map(|m| m.id));
                }
                for m in &model {
                    prop_assert_eq!(table.waiters(m.id), Some(m.waiters.as_slice()));
                    prop_assert!(m.waiters.len() <= LIMITS.max_waiters);
                }
            }

            // Finish every flight still in progress, then check each waiter's fate.
            for m in core::mem::take(&mut model) {
                let done = table.complete(m.id);
                prop_assert!(done.is_ok());
                record(done.unwrap(), m, &mut answers)?;
            }
            prop_assert!(table.is_empty());
            for (w, _) in &admitted {
                let times = answers.get(w).copied().unwrap_or(0);
                if left.contains(w) {
                    prop_assert_eq!(times, 0, "a waiter that left is never answered");
                } else {
                    prop_assert_eq!(times, 1, "every waiter is answered exactly once");
                }
            }
            prop_assert!(answers.keys().all(|w| admitted.iter().any(|(a, _)| a == w)), "only admitted waiters are answered");
        }
    }
}
