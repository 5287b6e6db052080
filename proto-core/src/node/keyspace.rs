//! One keyspace's state on a node: its cache, its flights and what each flight is doing, its
//! hot-key tracker, breaker, limiter and counters.
//!
//! Contract: a keyspace is built only from settings [`KeyspaceConfig::validate`] accepted, and
//! an update keeps what it can — cached values (evicted down to a smaller budget), the hot-key
//! history when the tracker's settings are unchanged, and the breaker's state always (an open
//! breaker is not closed by an update; only its settings change).

use alloc::boxed::Box;
use bytes::Bytes;
use hashbrown::HashMap;

use super::ids::{CallId, PendingId};
use super::{ConfigError, KeyspaceConfig, LoadId, NodeConfig};
use crate::breaker::{Breaker, BreakerState};
use crate::cache::{CacheConfig, CacheStats, Store, StoreFactory};
use crate::flight::{FlightId, FlightLimits, FlightTable};
use crate::hash::{KeyHashBuilder, key_hash_builder};
use crate::hotkeys::HotKeys;
use crate::limiter::Limiter;
use crate::time::Instant;

/// Counters of one keyspace, groupcache's names where they exist.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KeyspaceStats {
    /// Local gets (each key of a batch counts).
    pub gets: u64,
    /// Gets answered from the main cache.
    pub cache_hits: u64,
    /// Gets answered from the hot cache.
    pub hot_hits: u64,
    /// Values fetched from owning peers.
    pub peer_loads: u64,
    /// Fetches from peers that failed (connection, timeout, overload): each fell back to a
    /// local load.
    pub peer_errors: u64,
    /// Gets (local or from peers) that missed the cache.
    pub loads: u64,
    /// Misses that started a flight (the rest joined one).
    pub loads_deduped: u64,
    /// Data-source calls made.
    pub local_loads: u64,
    /// Data-source calls that failed or timed out.
    pub local_load_errs: u64,
    /// Gets received from peers.
    pub server_requests: u64,
    /// Misses of keys this node owns answered by the key's previous owner after a ring change
    /// (a peek that found the value: no data-source call).
    pub peek_hits: u64,
    /// Peeks at a previous owner that found nothing (not cached there, an error, a timeout, or
    /// the connection lost): each fell back to a load.
    pub peek_misses: u64,
    /// Peeks from new owners answered here from the cache, with a value or not.
    pub peeks_served: u64,
    /// Data-source calls refused by the rate limiter.
    pub rate_limited: u64,
    /// Data-source calls refused by the open breaker.
    pub circuit_open: u64,
    /// The caches.
    pub cache: CacheStats,
    /// The breaker now.
    pub breaker: Option<BreakerState>,
}

/// Who waits on a flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Waiter {
    /// A pending single get.
    One(PendingId),
    /// Part `index` of a pending batch get.
    Part(PendingId, u32),
    /// A warmup prefetch.
    Warmup,
}

/// What a flight is doing now: loading, fetching, or both (a peer's request joined a fetch).
#[derive(Default)]
pub(super) struct FlightMeta {
    /// The data-source call, while it runs.
    pub(super) load: Option<LoadId>,
    /// The fetch from the owner, while it runs.
    pub(super) call: Option<CallId>,
    /// The peek at the key's previous owner ([`super::handoff`]), while it runs.
    pub(super) peek: Option<CallId>,
    /// The flight already asked a second owner after the first one failed it.
    pub(super) rerouted: bool,
}

/// One keyspace of a node.
pub(super) struct Keyspace {
    pub(super) config: KeyspaceConfig,
    pub(super) cache: Box<dyn Store>,
    pub(super) flights: FlightTable<Waiter>,
    /// One entry per live flight, removed when the flight completes.
    pub(super) meta: HashMap<FlightId, FlightMeta, KeyHashBuilder>,
    pub(super) hot: HotKeys,
    pub(super) breaker: Breaker,
    pub(super) limiter: Option<Limiter>,
    pub(super) stats: KeyspaceStats,
}

impl Keyspace {
    /// A keyspace of a node configured by `node`, its store made by `stores` once the
    /// settings are known to be valid.
    pub(super) fn new(
        node: &NodeConfig,
        now: Instant,
        stores: &mut dyn StoreFactory,
        config: KeyspaceConfig,
    ) -> Result<Keyspace, ConfigError> {
        config.validate(&node.limits)?;
        let seed = node.seed ^ crate::hash::hash_key(&key_hash_builder(node.seed), &config.name);
        let hot = HotKeys::new(config.hot_keys, now).map_err(|_| ConfigError::BadHotKeys)?;
        Ok(Keyspace {
            cache: stores
                .create(&config.name, CacheConfig { max_bytes: config.max_bytes, hash_seed: seed }),
            flights: FlightTable::new(seed.rotate_left(17), FlightLimits::default()),
            meta: HashMap::with_hasher(key_hash_builder(seed.rotate_left(29))),
            hot,
            breaker: Breaker::new(config.breaker.unwrap_or(node.breaker), now),
            limiter: config.limiter.or(node.limiter).map(|limiter| Limiter::new(limiter, now)),
            stats: KeyspaceStats::default(),
            config,
        })
    }

    /// Takes new settings (same name) under the node's defaults `node`. All or nothing: on an
    /// error nothing changed. The breaker keeps its state whatever changed.
    pub(super) fn update(
        &mut self,
        node: &NodeConfig,
        now: Instant,
        config: KeyspaceConfig,
    ) -> Result<(), ConfigError> {
        config.validate(&node.limits)?;
        if config.hot_keys != self.config.hot_keys {
            self.hot = HotKeys::new(config.hot_keys, now).map_err(|_| ConfigError::BadHotKeys)?;
        }
        self.breaker.reconfigure(config.breaker.unwrap_or(node.breaker));
        if config.limiter != self.config.limiter {
            let limiter = config.limiter.or(node.limiter);
            self.limiter = limiter.map(|limiter| Limiter::new(limiter, now));
        }
        self.cache.set_max_bytes(config.max_bytes);
        self.config = config;
        Ok(())
    }

    /// The counters, with the cache's and the breaker's state at `now`.
    pub(super) fn stats(&self, now: Instant) -> KeyspaceStats {
        KeyspaceStats {
            cache: self.cache.stats(),
            breaker: Some(self.breaker.state(now)),
            ..self.stats
        }
    }

    /// The flight's state, while it is live.
    pub(super) fn meta_mut(&mut self, flight: FlightId) -> Option<&mut FlightMeta> {
        self.meta.get_mut(&flight)
    }

    /// Drops every cached key and keeps loads in flight from being cached.
    pub(super) fn clear(&mut self) {
        self.cache.clear();
        self.flights.invalidate_all();
    }

    /// Drops the cached copies of `keys` and keeps their flights from caching what they
    /// loaded before (an owner said the keys changed).
    pub(super) fn drop_copies<'k>(&mut self, keys: impl IntoIterator<Item = &'k Bytes>) {
        for key in keys {
            self.flights.invalidate(key);
            self.cache.remove(key);
        }
    }
}
