//! What a [`Node`](crate::Node) needs of the place it keeps a keyspace's entries.
//!
//! The node is single-threaded and sees its store only through [`Store`], so the same node
//! runs on the exact-LRU [`Cache`] ([`LruStores`], the default: no_std, one thread) or on the
//! sharded CLOCK store of herdcache-runtime's concurrent front, which other threads read hits
//! from while the node writes (what the runtimes ship; `ShardedStores` there). Every mutation
//! still comes from the node: a store never decides what to cache, only what to evict.

use alloc::boxed::Box;
use alloc::vec::Vec;
use bytes::Bytes;

use super::{Cache, CacheConfig, CacheStats, InsertError, Tier};
use crate::time::Instant;

/// A value found in a [`Store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The tier it lives in.
    pub tier: Tier,
    /// The bytes (a reference count).
    pub value: Bytes,
    /// Its expiry; `None` for never.
    pub expires_at: Option<Instant>,
}

/// One keyspace's two-tier, byte-bounded store, as the node uses it. [`Cache`]'s docs state
/// the contract every implementation keeps: the budget, the victim rule between tiers, expiry,
/// time going backwards. Only the eviction order within a tier may differ (exact LRU, or an
/// approximation such as CLOCK).
pub trait Store: Send {
    /// The value of `key` if present and not expired; counts a hit and marks it used.
    fn get(&mut self, now: Instant, key: &[u8]) -> Option<Stored>;
    /// Whether `key` is present and not expired, without counting or marking anything.
    fn contains(&self, now: Instant, key: &[u8]) -> bool;
    /// Stores `key` in `tier`, replacing any entry for it in either tier, then evicts until
    /// the budget holds; returns how many entries were evicted.
    fn insert(
        &mut self,
        now: Instant,
        tier: Tier,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Instant>,
    ) -> Result<usize, InsertError>;
    /// Removes `key` from both tiers; returns whether anything was removed.
    fn remove(&mut self, key: &[u8]) -> bool;
    /// Empties one tier.
    fn clear_tier(&mut self, tier: Tier);
    /// Empties both tiers.
    fn clear(&mut self);
    /// Changes the budget, evicting until it holds; returns evictions.
    fn set_max_bytes(&mut self, max_bytes: u64) -> usize;
    /// Reclaims every entry expired at `now`; returns how many.
    fn handle_timeout(&mut self, now: Instant) -> usize;
    /// When [`Store::handle_timeout`] next has work.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The keys of one tier (expired ones not yet reclaimed included).
    fn keys(&self, tier: Tier) -> Vec<Bytes>;
    /// The counters of both tiers.
    fn stats(&self) -> CacheStats;
}

/// Makes the store of each keyspace a node creates.
pub trait StoreFactory: Send {
    /// The store for the keyspace `name`.
    fn create(&mut self, name: &Bytes, config: CacheConfig) -> Box<dyn Store>;
}

/// The default [`StoreFactory`]: an exact-LRU [`Cache`] per keyspace.
#[derive(Clone, Copy, Debug, Default)]
pub struct LruStores;

impl StoreFactory for LruStores {
    fn create(&mut self, _name: &Bytes, config: CacheConfig) -> Box<dyn Store> {
        Box::new(Cache::new(config))
    }
}

impl Store for Cache {
    fn get(&mut self, now: Instant, key: &[u8]) -> Option<Stored> {
        Cache::get(self, now, key).map(|hit| Stored {
            tier: hit.tier,
            value: hit.value.clone(),
            expires_at: hit.expires_at,
        })
    }

    fn contains(&self, now: Instant, key: &[u8]) -> bool {
        self.peek(now, key).is_some()
    }

    fn insert(
        &mut self,
        now: Instant,
        tier: Tier,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Instant>,
    ) -> Result<usize, InsertError> {
        Cache::insert(self, now, tier, key, value, expires_at)
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        Cache::remove(self, key)
    }

    fn clear_tier(&mut self, tier: Tier) {
        Cache::clear_tier(self, tier);
    }

    fn clear(&mut self) {
        Cache::clear(self);
    }

    fn set_max_bytes(&mut self, max_bytes: u64) -> usize {
        Cache::set_max_bytes(self, max_bytes)
    }

    fn handle_timeout(&mut self, now: Instant) -> usize {
        Cache::handle_timeout(self, now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Cache::poll_timeout(self)
    }

    fn keys(&self, tier: Tier) -> Vec<Bytes> {
        self.iter(tier).map(|(key, _, _)| key.clone()).collect()
    }

    fn stats(&self) -> CacheStats {
        Cache::stats(self)
    }
}
