//! The byte-bounded cache of one keyspace: a main tier and a hot tier sharing one budget.
//!
//! Contract:
//! - **Main** holds keys this node owns (loaded from the data source, stored by a put, or
//!   peeked from their previous owner) — and, for the handoff window after a ring change,
//!   the ones it owned before (the node decides what goes where; see `node/handoff.rs`);
//!   **hot** holds copies of popular keys owned by other peers. A key lives in at most one tier:
//!   storing it in one removes it from the other.
//! - Each tier is an LRU with O(1) get, insert, remove and evict-oldest.
//! - **The budget counts real memory.** An entry is charged `key.len() + value.len() +`
//!   [`ENTRY_OVERHEAD`] (144 bytes), the bookkeeping it costs here: its slab slot (two `Bytes`
//!   handles, the expiry and two list links: 80 bytes), its hash-index slot (about 6 to 11
//!   bytes at the table's load factors), its expiry-heap pairs (16 bytes each, at most 1.5 per
//!   expiring entry) and the slack of the vectors holding them (they grow by an eighth, not by
//!   doubling). Go groupcache counts only key and value, so a process with many small entries
//!   uses several times its budget (golang/groupcache#64). The figure was measured, not
//!   guessed: `tests/cache_memory.rs` fills caches of three budgets with 48 mixes of key and
//!   value sizes, TTLs and hot shares, with churn, and counts the live heap with dhat; the
//!   worst overhead seen is about 131 bytes per entry with TTLs and 100 without, and the heap
//!   a full cache holds, keys and values included, stays under its budget. Not counted:
//!   allocator headers (about 16 bytes per key and per value buffer with glibc), and the
//!   high-water slack after a cache that once held many tiny entries comes to hold few large
//!   ones (its slab keeps 80 bytes per slot of the peak count until [`Cache::clear`]).
//! - **Victim rule** (groupcache's): after a store, while the two tiers together exceed the
//!   budget, evict the oldest entry of the hot tier if hot bytes exceed main bytes / 8, else
//!   the oldest of main. The entry just stored can be its own victim.
//! - **Expiry**: each entry has an absolute expiry (or none). An entry whose expiry is at or
//!   before `now` is never returned. Expired entries are reclaimed by
//!   [`Cache::handle_timeout`] when [`Cache::poll_timeout`] says, without waiting for a get.
//! - Time going backwards counts as no time passing.

mod lru;
mod store;

use bytes::Bytes;
use core::fmt;

use crate::hash::key_hash_builder;
use crate::time::{Instant, Monotonic};
pub use lru::ENTRY_OVERHEAD;
use lru::{Entry, Lru};
pub use store::{LruStores, Store, StoreFactory, Stored};

/// Which tier of a [`Cache`] an entry lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Keys this node owns (and, for a while after a ring change, the ones it owned before).
    Main,
    /// Mirrored copies of hot keys owned by other peers.
    Hot,
}

/// How a [`Cache`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// The budget for both tiers together, in bytes as charged by the account (see the module docs).
    pub max_bytes: u64,
    /// Seed of the index hasher (from the node's seed; fixed seeds replay exactly).
    pub hash_seed: u64,
}

impl CacheConfig {
    /// A budget of `max_bytes` with a fixed hash seed.
    #[must_use]
    pub const fn with_max_bytes(max_bytes: u64) -> Self {
        CacheConfig { max_bytes, hash_seed: 0x6865_7264_6361_6368 }
    }
}

/// A cache hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    /// The tier that held the key.
    pub tier: Tier,
    /// The value: clone the `Bytes` to keep it (a reference count, never a copy).
    pub value: &'a Bytes,
    /// When the entry expires, or `None` for never.
    pub expires_at: Option<Instant>,
}

/// Why [`Cache::insert`] stored nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The entry alone is charged more than the whole budget. State changed: a previous entry
    /// for the key, in either tier, was removed (it would be stale); nothing was stored.
    TooLarge {
        /// What the entry would be charged.
        charge: u64,
        /// The budget.
        max_bytes: u64,
    },
    /// The expiry is at or before `now`. State changed: a previous entry for the key, in either
    /// tier, was removed (it would be stale); nothing was stored.
    AlreadyExpired,
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::TooLarge { charge, max_bytes } => {
                write!(f, "entry of {charge} bytes exceeds the cache budget of {max_bytes} bytes")
            }
            InsertError::AlreadyExpired => f.write_str("entry is already expired"),
        }
    }
}

impl core::error::Error for InsertError {}

/// Counters of one tier. Items and bytes are current; the rest count since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Entries held.
    pub items: u64,
    /// Bytes charged (key + value + [`ENTRY_OVERHEAD`] per entry).
    pub bytes: u64,
    /// Gets answered from this tier.
    pub hits: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Entries reclaimed because they expired.
    pub expirations: u64,
}

/// Counters of both tiers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// The main tier.
    pub main: TierStats,
    /// The hot tier.
    pub hot: TierStats,
}

#[derive(Default)]
struct TierCounters {
    hits: u64,
    evictions: u64,
    expirations: u64,
}

/// The two-tier, byte-bounded LRU cache of one keyspace. See the module docs for the contract.
pub struct Cache {
    main: Lru,
    hot: Lru,
    main_counters: TierCounters,
    hot_counters: TierCounters,
    max_bytes: u64,
    clock: Monotonic,
}

impl Cache {
    /// An empty cache.
    #[must_use]
    pub fn new(config: CacheConfig) -> Self {
        let hasher = key_hash_builder(config.hash_seed);
        Cache {
            main: Lru::new(hasher.clone()),
            hot: Lru::new(hasher),
            main_counters: TierCounters::default(),
            hot_counters: TierCounters::default(),
            max_bytes: config.max_bytes,
            clock: Monotonic::default(),
        }
    }

    /// The budget.
    #[must_use]
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes charged by both tiers.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.main.bytes() + self.hot.bytes()
    }

    /// Entries in both tiers (expired ones not yet reclaimed included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.main.len() + self.hot.len()
    }

    /// Whether both tiers are empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What an entry with this key and value would be charged.
    #[must_use]
    pub fn charge(key: &[u8], value: &[u8]) -> u64 {
        lru::entry_charge(key.len(), value.len())
    }

    /// The value of `key` if present and not expired, made most recent in its tier. An expired
    /// entry found here is reclaimed.
    pub fn get(&mut self, now: Instant, key: &[u8]) -> Option<Hit<'_>> {
        let now = self.clock.observe(now);
        let (tier, slot) = match self.main.get(now, key) {
            Some(Ok(slot)) => (Tier::Main, slot),
            Some(Err(_expired)) => {
                self.main_counters.expirations += 1;
                return None;
            }
            None => match self.hot.get(now, key) {
                Some(Ok(slot)) => (Tier::Hot, slot),
                Some(Err(_expired)) => {
                    self.hot_counters.expirations += 1;
                    return None;
                }
                None => return None,
            },
        };
        let (lru, counters) = self.tier_mut(tier);
        counters.hits += 1;
        Some(hit(tier, lru.entry(slot)))
    }

    /// The value of `key` if present and not expired, without touching recency or counters.
    #[must_use]
    pub fn peek(&self, now: Instant, key: &[u8]) -> Option<Hit<'_>> {
        let now = now.max(self.clock.latest());
        [(Tier::Main, &self.main), (Tier::Hot, &self.hot)].into_iter().find_map(|(tier, lru)| {
            lru.peek(key).filter(|entry| !entry.is_expired(now)).map(|entry| hit(tier, entry))
        })
    }

    /// Stores `key` in `tier` as its most recent entry, expiring at `expires_at` (`None`:
    /// never), replacing any entry for the key in either tier, then evicts by the victim rule
    /// until the budget holds. Returns how many entries were evicted.
    pub fn insert(
        &mut self,
        now: Instant,
        tier: Tier,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Instant>,
    ) -> Result<usize, InsertError> {
        let now = self.clock.observe(now);
        let expires_at = expires_at.unwrap_or(Instant::MAX);
        let charge = Cache::charge(&key, &value);
        let other = match tier {
            Tier::Main => Tier::Hot,
            Tier::Hot => Tier::Main,
        };
        self.tier_mut(other).0.remove(&key);
        if charge > self.max_bytes {
            self.tier_mut(tier).0.remove(&key);
            return Err(InsertError::TooLarge { charge, max_bytes: self.max_bytes });
        }
        if expires_at <= now {
            self.tier_mut(tier).0.remove(&key);
            return Err(InsertError::AlreadyExpired);
        }
        self.tier_mut(tier).0.insert(key, value, expires_at);
        Ok(self.evict_to_budget())
    }

    /// Removes `key` from both tiers; returns whether anything was removed.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let main = self.main.remove(key).is_some();
        let hot = self.hot.remove(key).is_some();
        main || hot
    }

    /// Removes `key` from one tier (a peer's "drop your hot copy"); returns whether it was there.
    pub fn remove_from(&mut self, tier: Tier, key: &[u8]) -> bool {
        self.tier_mut(tier).0.remove(key).is_some()
    }

    /// Empties one tier (counters stay).
    pub fn clear_tier(&mut self, tier: Tier) {
        self.tier_mut(tier).0.clear();
    }

    /// Empties both tiers (counters stay).
    pub fn clear(&mut self) {
        self.main.clear();
        self.hot.clear();
    }

    /// Changes the budget, evicting by the victim rule until it holds; returns evictions.
    pub fn set_max_bytes(&mut self, max_bytes: u64) -> usize {
        self.max_bytes = max_bytes;
        self.evict_to_budget()
    }

    /// Reclaims every entry whose expiry is at or before `now`; returns how many. Early or
    /// repeated calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let now = self.clock.observe(now);
        let mut reclaimed = 0;
        while self.main.pop_expired(now).is_some() {
            self.main_counters.expirations += 1;
            reclaimed += 1;
        }
        while self.hot.pop_expired(now).is_some() {
            self.hot_counters.expirations += 1;
            reclaimed += 1;
        }
        reclaimed
    }

    /// When [`Cache::handle_timeout`] next has work: the earliest pending expiry.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.main.next_expiry(), self.hot.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The entries of one tier from the most to the least recently used, as
    /// `(key, value, expires_at)`; expired entries not yet reclaimed included.
    pub fn iter(&self, tier: Tier) -> impl Iterator<Item = (&Bytes, &Bytes, Option<Instant>)> + '_ {
        let lru = match tier {
            Tier::Main => &self.main,
            Tier::Hot => &self.hot,
        };
        lru.iter().map(|entry| (&entry.key, &entry.value, finite(entry.expires_at)))
    }

    /// The counters of both tiers.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let tier = |lru: &Lru, counters: &TierCounters| TierStats {
            items: lru.len() as u64,
            bytes: lru.bytes(),
            hits: counters.hits,
            evictions: counters.evictions,
            expirations: counters.expirations,
        };
        CacheStats {
            main: tier(&self.main, &self.main_counters),
            hot: tier(&self.hot, &self.hot_counters),
        }
    }

    fn tier_mut(&mut self, tier: Tier) -> (&mut Lru, &mut TierCounters) {
        match tier {
            Tier::Main => (&mut self.main, &mut self.main_counters),
            Tier::Hot => (&mut self.hot, &mut self.hot_counters),
        }
    }

    /// groupcache's victim rule, until both tiers fit the budget.
    fn evict_to_budget(&mut self) -> usize {
        let mut evicted = 0;
        while self.bytes() > self.max_bytes {
            let victim =
                if self.hot.bytes() > self.main.bytes() / 8 { Tier::Hot } else { Tier::Main };
            let (lru, counters) = self.tier_mut(victim);
            let popped: Option<Entry> = lru.pop_oldest();
            debug_assert!(popped.is_some(), "a tier holding the excess is not empty");
            if popped.is_none() {
                break;
            }
            counters.evictions += 1;
            evicted += 1;
        }
        evicted
    }
}

fn finite(instant: Instant) -> Option<Instant> {
    (instant != Instant::MAX).then_some(instant)
}

fn hit(tier: Tier, entry: &Entry) -> Hit<'_> {
    Hit { tier, value: &entry.value, expires_at: finite(entry.expires_at) }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("max_bytes", &self.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests;
