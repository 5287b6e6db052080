//! The demo's data source: deliberately slow, deterministic, and counting every fetch per key
//! so that "loaded once in the cluster" can be checked rather than claimed.
//!
//! One [`SlowSource`] serves every runtime: it is herdcache-tokio's async `DataSource` (it
//! waits on tokio's timer) and herdcache-mio's blocking one (it sleeps its worker thread);
//! wrapped in an [`AsyncIoSlowSource`] it is herdcache-async-std's (it waits on async-io's
//! timer, which runs under async-std and smol alike). The counting, the per-key accounting
//! and the values are the same code; only the waiting differs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use herdcache_tokio::Bytes;

use herdcache_workload::{Rng, mix};

/// FNV-1a, mixed: a stable hash of a key, the seed of everything derived from it.
fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The length of `key`'s value: 100 to 1000 bytes.
pub(crate) fn value_len(key: &[u8]) -> usize {
    100 + (key_hash(key) % 901) as usize
}

/// The value of `key`: the key, `=`, then lowercase letters derived from the key, in all
/// [`value_len`] bytes (or one more than the key for a key that long).
pub(crate) fn value_of(key: &[u8]) -> Bytes {
    let len = value_len(key).max(key.len() + 1);
    let mut value = Vec::with_capacity(len);
    value.extend_from_slice(key);
    value.push(b'=');
    let mut rng = Rng::new(key_hash(key));
    while value.len() < len - 1 {
        value.push(b'a' + rng.below(26) as u8);
    }
    value.push(last_byte(key));
    Bytes::from(value)
}

/// A cheap check that `value` is `key`'s: its length, its prefix, its last byte.
pub(crate) fn looks_right(key: &[u8], value: &[u8]) -> bool {
    let len = value_len(key).max(key.len() + 1);
    value.len() == len
        && value.starts_with(key)
        && value.get(key.len()) == Some(&b'=')
        && value.last() == Some(&last_byte(key))
}

/// The last byte of `key`'s value, derived from the key alone so that checking it is cheap.
fn last_byte(key: &[u8]) -> u8 {
    b'a' + (key_hash(key) >> 40) as u8 % 26
}

/// Which node called the source for which key, and how often.
pub(crate) type LoadMap = HashMap<(usize, Bytes), u32>;

/// How often the source was called, per node and key, and in all.
#[derive(Debug, Default)]
pub(crate) struct LoadCounts {
    per_key: Mutex<LoadMap>,
    total: AtomicU64,
}

impl LoadCounts {
    fn count(&self, node: usize, key: &Bytes) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut per_key = self.per_key.lock().unwrap_or_else(PoisonError::into_inner);
        *per_key.entry((node, key.clone())).or_insert(0) += 1;
    }

    /// Data-source calls so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// A copy of the calls per node and key so far.
    pub(crate) fn snapshot(&self) -> LoadMap {
        self.per_key.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A slow source: each fetch waits about `delay` (⅔ to 4⁄3 of it, by key) and answers
/// [`value_of`] the key. One per node, all counting into one [`LoadCounts`].
#[derive(Clone, Debug)]
pub(crate) struct SlowSource {
    node: usize,
    delay: Duration,
    counts: Arc<LoadCounts>,
}

impl SlowSource {
    /// Node `node`'s source, sleeping about `delay` per fetch and counting into `counts`.
    pub(crate) fn new(node: usize, delay: Duration, counts: Arc<LoadCounts>) -> Self {
        SlowSource { node, delay, counts }
    }

    fn delay_for(&self, key: &[u8]) -> Duration {
        // 2/3 to 4/3 of the delay, fixed per key.
        let permille = 667 + key_hash(key).rotate_left(17) % 667;
        self.delay * u32::try_from(permille).unwrap_or(1000) / 1000
    }

    /// Counts a fetch of `key` by this node; returns how long the fetch takes.
    fn begin_fetch(&self, key: &Bytes) -> Duration {
        self.counts.count(self.node, key);
        self.delay_for(key)
    }
}

/// The async flavour: waits on tokio's timer.
impl herdcache_tokio::DataSource for SlowSource {
    type Error = Infallible;

    async fn fetch(&self, key: Bytes) -> Result<Bytes, Infallible> {
        let delay = self.begin_fetch(&key);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(value_of(&key))
    }
}

/// The async-io flavour of a [`SlowSource`], for herdcache-async-std: waits on async-io's
/// timer, not tokio's. A wrapper because herdcache-async-std's `DataSource` is the same trait
/// as herdcache-tokio's (the core's), which [`SlowSource`] already implements.
#[derive(Clone, Debug)]
pub(crate) struct AsyncIoSlowSource(SlowSource);

impl From<SlowSource> for AsyncIoSlowSource {
    fn from(source: SlowSource) -> Self {
        AsyncIoSlowSource(source)
    }
}

impl herdcache_async_std::DataSource for AsyncIoSlowSource {
    type Error = Infallible;

    async fn fetch(&self, key: Bytes) -> Result<Bytes, Infallible> {
        let delay = self.0.begin_fetch(&key);
        if !delay.is_zero() {
            async_io::Timer::after(delay).await;
        }
        Ok(value_of(&key))
    }
}

/// The blocking flavour of a [`SlowSource`], for herdcache-mio: sleeps the node's worker
/// thread. A wrapper because a source of both kinds would leave a builder to guess which.
#[derive(Clone, Debug)]
pub(crate) struct BlockingSlowSource(SlowSource);

impl From<SlowSource> for BlockingSlowSource {
    fn from(source: SlowSource) -> Self {
        BlockingSlowSource(source)
    }
}

impl herdcache_mio::DataSource for BlockingSlowSource {
    type Error = Infallible;

    fn fetch(&self, key: Bytes) -> Result<Bytes, Infallible> {
        let delay = self.0.begin_fetch(&key);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        Ok(value_of(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_and_sized() {
        for i in 0..1000 {
            let key = herdcache_workload::key(i);
            let value = value_of(key.as_bytes());
            assert!((100..=1000).contains(&value.len()), "{}", value.len());
            assert_eq!(value, value_of(key.as_bytes()));
            assert!(looks_right(key.as_bytes(), &value));
            assert!(!looks_right(b"key-x", &value));
        }
    }

    #[test]
    fn delays_stay_near_the_setting() {
        let source = SlowSource::new(0, Duration::from_millis(3), Arc::default());
        for i in 0..1000 {
            let delay = source.delay_for(herdcache_workload::key(i).as_bytes());
            assert!(delay >= Duration::from_millis(2) && delay <= Duration::from_millis(4));
        }
    }
}
