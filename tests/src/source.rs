//! The counting data source every test node loads from, whatever its runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

/// The value the data source answers for `key` at `version`: `"<key>@v<version>"`.
///
/// A test bumps the cluster's version ([`crate::Cluster::bump_version`]) to tell a value
/// reloaded after a delete from a copy that survived it.
#[must_use]
pub fn value_of(key: &str, version: u64) -> Bytes {
    Bytes::from(format!("{key}@v{version}"))
}

/// One node's data source: counts its loads (in total and per key), waits `delay` per load
/// (on the node's own runtime: the runtime adapter does the sleeping), and answers
/// [`value_of`]`(key, version)` with the version the cluster has when the load finishes.
///
/// Runtime-agnostic: an adapter calls [`Source::begin_load`], sleeps the returned delay with
/// its runtime's timer, then answers [`Source::finish_load`].
#[derive(Debug)]
pub struct Source {
    delay_micros: AtomicU64,
    version: Arc<AtomicU64>,
    total: AtomicUsize,
    per_key: Mutex<HashMap<Bytes, usize>>,
}

impl Source {
    /// A source that waits `delay` per load and reads the shared `version`.
    #[must_use]
    pub fn new(delay: Duration, version: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Source {
            delay_micros: AtomicU64::new(micros(delay)),
            version,
            total: AtomicUsize::new(0),
            per_key: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a load of `key` and returns how long it should take.
    pub fn begin_load(&self, key: &Bytes) -> Duration {
        self.total.fetch_add(1, Ordering::SeqCst);
        *self
            .per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default() += 1;
        Duration::from_micros(self.delay_micros.load(Ordering::SeqCst))
    }

    /// The value a load of `key` answers now.
    #[must_use]
    pub fn finish_load(&self, key: &Bytes) -> Bytes {
        value_of(&String::from_utf8_lossy(key), self.version.load(Ordering::SeqCst))
    }

    /// Changes the delay of the loads that start from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_micros.store(micros(delay), Ordering::SeqCst);
    }

    /// Loads started so far, all keys.
    #[must_use]
    pub fn loads(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Loads of `key` started so far.
    #[must_use]
    pub fn loads_of(&self, key: &str) -> usize {
        let per_key = self.per_key.lock().unwrap_or_else(PoisonError::into_inner);
        per_key.get(key.as_bytes()).copied().unwrap_or(0)
    }
}

fn micros(delay: Duration) -> u64 {
    u64::try_from(delay.as_micros()).unwrap_or(u64::MAX)
}
