//! Hot-key tracking in fixed memory: space-saving top-K with periodic halving.
//!
//! Contract, in short (the full text and the derivation of the rate estimator are on
//! [`HotKeys`], where rustdoc shows them): at most `capacity` keys tracked (space-saving
//! top-K), all counts halve every `half_life` (lazily, time going backwards is no time passing),
//! `record` is O(log K), `rate` reports requests per second from the lower bound
//! `count − error` and converges to a steady key's true rate.

use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;
use hashbrown::HashTable;

use crate::hash::{KeyHashBuilder, hash_key, key_hash_builder};
use crate::time::{Duration, Instant, Monotonic};

/// Fixed-point scale of counts: one request adds `UNIT`, so integer halving loses less than
/// 1/1024 of a request per half-life.
const UNIT_SHIFT: u32 = 10;
const UNIT: u64 = 1 << UNIT_SHIFT;

/// The configuration of a [`HotKeys`] tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotKeysConfig {
    /// The most keys tracked at once (K). Memory is about K × (key length + 64 bytes).
    pub capacity: usize,
    /// Every `half_life`, all counts halve: the horizon over which popularity is measured.
    pub half_life: Duration,
    /// Seed of the key hasher (from the driver's randomness; fixed for a replay).
    pub seed: u64,
}

impl HotKeysConfig {
    /// Default for [`HotKeysConfig::capacity`].
    pub const DEFAULT_CAPACITY: usize = 128;
    /// Default for [`HotKeysConfig::half_life`].
    pub const DEFAULT_HALF_LIFE: Duration = Duration::from_secs(10);
    /// The largest accepted capacity.
    pub const MAX_CAPACITY: usize = 1 << 20;
    /// The shortest accepted half-life.
    pub const MIN_HALF_LIFE: Duration = Duration::from_millis(1);

    /// The defaults with the key hasher seeded by `seed`.
    #[must_use]
    pub const fn with_seed(seed: u64) -> Self {
        HotKeysConfig { capacity: Self::DEFAULT_CAPACITY, half_life: Self::DEFAULT_HALF_LIFE, seed }
    }
}

impl Default for HotKeysConfig {
    fn default() -> Self {
        Self::with_seed(0)
    }
}

/// Why [`HotKeys::new`] refused a configuration. No tracker is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotKeysConfigError {
    /// `capacity` is zero.
    ZeroCapacity,
    /// `capacity` is above [`HotKeysConfig::MAX_CAPACITY`].
    CapacityTooLarge {
        /// The largest accepted capacity.
        max: usize,
    },
    /// `half_life` is below [`HotKeysConfig::MIN_HALF_LIFE`].
    HalfLifeTooShort {
        /// The shortest accepted half-life.
        min: Duration,
    },
}

impl fmt::Display for HotKeysConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HotKeysConfigError::ZeroCapacity => f.write_str("hot-key capacity is zero"),
            HotKeysConfigError::CapacityTooLarge { max } => {
                write!(f, "hot-key capacity is above {max}")
            }
            HotKeysConfigError::HalfLifeTooShort { min } => {
                write!(f, "hot-key half-life is below {min:?}")
            }
        }
    }
}

impl core::error::Error for HotKeysConfigError {}

#[derive(Debug)]
struct Entry {
    /// The key; its buffer is reused when the slot changes key and the new key fits.
    key: Vec<u8>,
    hash: u64,
    /// Upper bound on the decayed requests, in `UNIT`s.
    count: u64,
    /// Count inherited from the evicted key (`count - error` is the lower bound), in `UNIT`s.
    error: u64,
    /// When the key entered the table (the start of its rate window).
    since: Instant,
    /// Position in `heap`.
    heap_pos: u32,
}

/// A fixed-capacity tracker of the most requested keys and their recent request rates.
///
/// The owner of a key [records](HotKeys::record) every request for it, reports the key's
/// recent request [rate](HotKeys::rate) in its replies (requesters mirror keys above a
/// threshold into their hot cache), and lists the [top](HotKeys::top) keys to warm up when the
/// ring changes. One tracker per keyspace.
///
/// # Contract
/// - **Fixed memory.** At most `capacity` keys are tracked, however many distinct keys are
///   seen (the *space-saving* algorithm of Metwally et al.): an untracked key, when the table
///   is full, replaces the key with the smallest count and inherits that count as its *error*.
///   Each tracked key thus has an upper bound `count` and a lower bound `count - error` on its
///   (decayed) number of requests, and every key requested more than `total / capacity` times
///   is tracked. The tracker stores its own copy of each key, never a slice of a caller's
///   buffer. [`HotKeys::forget`] frees a slot (the key's popularity restarts from zero); upper
///   bounds of keys evicted earlier are then no longer guaranteed, lower bounds still are.
/// - **Decay.** Time is cut into periods of one `half_life`, starting when the tracker is
///   created; at every period boundary all counts and errors halve (integer halving, applied
///   lazily by the first `record` after the boundary: O(K) once per half-life). So a request
///   made `p` boundaries ago weighs `2^-p`. Keys whose count falls below one request are
///   dropped then. Time going backwards counts as no time passing ([`Monotonic`]).
/// - **Cost.** `record` is O(log K): a seeded hash index finds the key's slot and an indexed
///   min-heap finds the minimum; `rate` is O(1); `top` is O(K log K). Nothing panics on input.
///
/// # The rate estimator
/// Let `h` be the half-life, `f ∈ [0, 1)` how far `now` is into its period. The *decayed length*
/// of the interval `[τ, now]`, with `p` period boundaries inside it and `f_τ` how far `τ` is into
/// its own period, is
///
/// ```text
/// W(τ) = h · (f − f_τ)                          if p = 0
/// W(τ) = h · (1 + f − (1 + f_τ) · 2^-p)         if p ≥ 1
/// ```
///
/// and a key requested at a steady rate `r` during `[τ, now]` has a decayed count of `r · W(τ)`.
/// For a key tracked since long ago (`p → ∞`) this is the familiar `count ≈ r · h · (1 + f)`.
/// The tracker reports
///
/// ```text
/// rate = (count − error) / W(since − h/2)
/// ```
///
/// where `since` is when the key entered the table. `count − error` counts exactly the
/// (decayed) requests since `since`, so a key that just replaced another one is not reported
/// hot because of the count it inherited. The window reaches half a half-life *before* `since`
/// (virtual silence): a key seen once reports at most `4 / h` requests per second instead of
/// `1 / (a few microseconds)`, and a new key at rate `r` ramps up as about `r · t / (t + h/2)`,
/// never above `r`. That extra half-period weighs at most `2^-p` of `h/2` against a window of at
/// least `h`, so after `p` half-lives a steady key is underestimated by less than `2^-(p+1)`
/// (6 % after 3, 3 % after 4). Because the window's start is fixed per key, the window and the
/// counts halve together at every boundary: the rate of a key that stops being requested never
/// jumps up. Only `+ − × ÷` on `f64` are used (no `powf`/`exp`, which `core` lacks).
///
/// # Example
/// ```
/// use herdcache_proto::{HotKeys, HotKeysConfig, Instant};
/// let mut hot = HotKeys::new(HotKeysConfig::with_seed(7), Instant::ZERO)?;
/// // 100 requests per second for a minute (half-life 10 s by default).
/// for ms in (0..60_000).step_by(10) {
///     hot.record(Instant::from_millis(ms), b"popular");
/// }
/// let now = Instant::from_secs(60);
/// let rate = hot.rate(now, b"popular").unwrap_or(0.0);
/// assert!((rate - 100.0).abs() < 10.0, "{rate}");
/// assert_eq!(hot.top(now, 1)[0].0.as_ref(), b"popular");
/// # Ok::<(), herdcache_proto::HotKeysConfigError>(())
/// ```
pub struct HotKeys {
    hasher: KeyHashBuilder,
    capacity: usize,
    /// The half-life in microseconds, at least 1.
    half_life: u64,
    clock: Monotonic,
    /// Start of period 0.
    origin: Instant,
    /// The period whose halvings have been applied to the counts.
    applied_period: u64,
    /// Dense slab of tracked keys, at most `capacity` long.
    entries: Vec<Entry>,
    /// Min-heap of indices into `entries`, ordered by `count`.
    heap: Vec<u32>,
    /// key → index into `entries`.
    index: HashTable<u32>,
}

impl fmt::Debug for HotKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotKeys")
            .field("len", &self.entries.len())
            .field("capacity", &self.capacity)
            .field("half_life", &self.half_life())
            .finish_non_exhaustive()
    }
}

/// `value / 2^shift`, zero for shifts of 64 and more.
fn halve(value: u64, shift: u64) -> u64 {
    u32::try_from(shift).ok().and_then(|shift| value.checked_shr(shift)).unwrap_or(0)
}

/// `2^-p` as a float, zero (to within `f64`) for large `p`.
fn inverse_power_of_two(p: i128) -> f64 {
    if p <= 0 {
        1.0
    } else if p >= 64 {
        0.0
    } else {
        1.0 / (1u64 << p) as f64
    }
}

impl HotKeys {
    /// An empty tracker whose first decay period starts at `now`.
    ///
    /// # Errors
    /// A [`HotKeysConfigError`] when the capacity or half-life is out of range.
    pub fn new(config: HotKeysConfig, now: Instant) -> Result<Self, HotKeysConfigError> {
        if config.capacity == 0 {
            return Err(HotKeysConfigError::ZeroCapacity);
        }
        if config.capacity > HotKeysConfig::MAX_CAPACITY {
            return Err(HotKeysConfigError::CapacityTooLarge { max: HotKeysConfig::MAX_CAPACITY });
        }
        if config.half_life < HotKeysConfig::MIN_HALF_LIFE {
            return Err(HotKeysConfigError::HalfLifeTooShort { min: HotKeysConfig::MIN_HALF_LIFE });
        }
        let half_life = u64::try_from(config.half_life.as_micros()).unwrap_or(u64::MAX);
        Ok(HotKeys {
            hasher: key_hash_builder(config.seed),
            capacity: config.capacity,
            half_life,
            clock: Monotonic::new(now),
            origin: now,
            applied_period: 0,
            entries: Vec::with_capacity(config.capacity),
            heap: Vec::with_capacity(config.capacity),
            // Twice the entries, so that the tombstones of evicted keys are always cleaned by
            // an in-place rehash and the index never grows.
            index: HashTable::with_capacity(config.capacity.saturating_mul(2)),
        })
    }

    /// The number of keys tracked, at most [`HotKeys::capacity`].
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most keys tracked at once.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// The configured half-life (microsecond precision).
    #[must_use]
    pub const fn half_life(&self) -> Duration {
        Duration::from_micros(self.half_life)
    }

    /// Counts one request for `key` at `now`. O(log K), plus O(K) on the first call after a
    /// half-life boundary.
    pub fn record(&mut self, now: Instant, key: &[u8]) {
        let now = self.advance(now);
        let hash = hash_key(&self.hasher, key);
        if let Some(slot) = self.find(hash, key) {
            let entry = &mut self.entries[slot];
            entry.count = entry.count.saturating_add(UNIT);
            let pos = entry.heap_pos as usize;
            self.sift_down(pos);
            return;
        }
        if self.entries.len() < self.capacity {
            // `capacity <= MAX_CAPACITY < u32::MAX`, so indices fit in u32.
            let slot = self.entries.len() as u32;
            let pos = self.heap.len();
            self.entries.push(Entry {
                key: key.to_vec(),
                hash,
                count: UNIT,
                error: 0,
                since: now,
                heap_pos: pos as u32,
            });
            self.heap.push(slot);
            self.index_insert(hash, slot);
            self.sift_up(pos);
            return;
        }
        // Full: the key with the smallest count gives its slot (and its count, as error).
        let Some(&slot) = self.heap.first() else {
            return;
        };
        let old_hash = self.entries[slot as usize].hash;
        if let Ok(found) = self.index.find_entry(old_hash, |&s| s == slot) {
            found.remove();
        }
        let entry = &mut self.entries[slot as usize];
        if entry.key.capacity() > key.len().max(32).saturating_mul(2) {
            entry.key = key.to_vec(); // do not keep a large buffer for a small key
        } else {
            entry.key.clear();
            entry.key.extend_from_slice(key);
        }
        entry.hash = hash;
        entry.error = entry.count;
        entry.count = entry.count.saturating_add(UNIT);
        entry.since = now;
        self.index_insert(hash, slot);
        self.sift_down(0);
    }

    /// The estimated requests per second of `key` at `now`, or `None` when it is not tracked.
    ///
    /// Uses the lower bound `count − error`; see [`HotKeys`] for the estimator.
    /// Queries do not advance the tracker's clock (only [`HotKeys::record`] does): they are
    /// answered as of `max(now, latest recorded time)`.
    #[must_use]
    pub fn rate(&self, now: Instant, key: &[u8]) -> Option<f64> {
        let slot = self.find(hash_key(&self.hasher, key), key)?;
        Some(self.rate_of(&self.entries[slot], self.effective(now)))
    }

    /// The `n` tracked keys with the highest [rate](HotKeys::rate) at `now`, hottest first.
    #[must_use]
    pub fn top(&self, now: Instant, n: usize) -> Vec<(Bytes, f64)> {
        let now = self.effective(now);
        let mut ranked: Vec<(f64, &Entry)> =
            self.entries.iter().map(|entry| (self.rate_of(entry, now), entry)).collect();
        ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        ranked
            .into_iter()
            .take(n)
            .map(|(rate, entry)| (Bytes::copy_from_slice(&entry.key), rate))
            .collect()
    }

    /// Stops tracking `key` (e.g. it was deleted); its popularity restarts from zero. Returns
    /// whether it was tracked.
    pub fn forget(&mut self, key: &[u8]) -> bool {
        let hash = hash_key(&self.hasher, key);
        let Some(slot) = self.find(hash, key) else {
            return false;
        };
        if let Ok(found) = self.index.find_entry(hash, |&s| s as usize == slot) {
            found.remove();
        }
        // Out of the heap: move the last heap element into the hole and restore order.
        let pos = self.entries[slot].heap_pos as usize;
        let last = self.heap.len() - 1;
        self.swap(pos, last);
        self.heap.pop();
        if pos < self.heap.len() {
            self.sift_down(pos);
            self.sift_up(pos);
        }
        // Out of the slab: the last entry moves into `slot`; repoint its heap and index entries.
        let moved_from = self.entries.len() - 1;
        self.entries.swap_remove(slot);
        if slot < moved_from {
            let moved = &self.entries[slot];
            self.heap[moved.heap_pos as usize] = slot as u32;
            if let Some(s) = self.index.find_mut(moved.hash, |&s| s as usize == moved_from) {
                *s = slot as u32;
            }
        }
        true
    }

    /// `max(now, latest seen)` without recording it.
    fn effective(&self, now: Instant) -> Instant {
        now.max(self.clock.latest())
    }

    /// The period index of `t` and how far into it `t` is, in microseconds.
    fn period(&self, t: Instant) -> (u64, u64) {
        let elapsed = t.as_micros().saturating_sub(self.origin.as_micros());
        (elapsed / self.half_life, elapsed % self.half_life)
    }

    /// Observes `now` and applies the halvings of every boundary passed since the last call.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.clock.observe(now);
        let (period, _) = self.period(now);
        if period > self.applied_period {
            let shift = period - self.applied_period;
            self.applied_period = period;
            let mut faded = false;
            for entry in &mut self.entries {
                entry.count = halve(entry.count, shift);
                entry.error = halve(entry.error, shift);
                faded |= entry.count < UNIT;
            }
            if faded {
                self.entries.retain(|entry| entry.count >= UNIT);
                self.rebuild();
            }
        }
        now
    }

    /// Rebuilds the index and the heap from `entries` (after dropping faded keys).
    fn rebuild(&mut self) {
        self.index.clear();
        self.heap.clear();
        for (slot, entry) in self.entries.iter_mut().enumerate() {
            entry.heap_pos = slot as u32;
            self.heap.push(slot as u32);
        }
        let entries = &self.entries;
        for (slot, entry) in entries.iter().enumerate() {
            self.index.insert_unique(entry.hash, slot as u32, |&s| entries[s as usize].hash);
        }
        for pos in (0..self.heap.len() / 2).rev() {
            self.sift_down(pos);
        }
    }

    /// The decayed counts `(count, error)` of `entry` at `now` (which is at least the latest
    /// time seen), in `UNIT`s, with halvings not yet applied taken into account.
    fn counts_at(&self, entry: &Entry, now: Instant) -> (u64, u64) {
        let (period, _) = self.period(now);
        let shift = period.saturating_sub(self.applied_period);
        (halve(entry.count, shift), halve(entry.error, shift))
    }

    fn rate_of(&self, entry: &Entry, now: Instant) -> f64 {
        let (count, error) = self.counts_at(entry, now);
        let lower = count.saturating_sub(error) as f64 / UNIT as f64;
        let h = self.half_life as i128;
        let at = |t: i128| (t.div_euclid(h), t.rem_euclid(h) as f64 / h as f64);
        let origin = i128::from(self.origin.as_micros());
        let (k, f) = at(i128::from(now.as_micros()) - origin);
        let (k_start, f_start) = at(i128::from(entry.since.as_micros()) - origin - h / 2);
        let p = k - k_start;
        let periods =
            if p <= 0 { f - f_start } else { 1.0 + f - (1.0 + f_start) * inverse_power_of_two(p) };
        let window_secs = periods * (self.half_life as f64 / 1e6);
        if window_secs > 0.0 { lower / window_secs } else { 0.0 }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(hash, |&s| entries.get(s as usize).is_some_and(|entry| entry.key == key))
            .map(|&s| s as usize)
    }

    fn index_insert(&mut self, hash: u64, slot: u32) {
        let entries = &self.entries;
        self.index.insert_unique(hash, slot, |&s| entries[s as usize].hash);
    }

    fn count_at(&self, pos: usize) -> u64 {
        self.entries[self.heap[pos] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        let (slot_a, slot_b) = (self.heap[a] as usize, self.heap[b] as usize);
        self.entries[slot_a].heap_pos = a as u32;
        self.entries[slot_b].heap_pos = b as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.count_at(pos) >= self.count_at(parent) {
                break;
            }
            self.swap(pos, parent);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.count_at(right) < self.count_at(left) {
                right
            } else {
                left
            };
            if self.count_at(child) >= self.count_at(pos) {
                break;
            }
            self.swap(pos, child);
            pos = child;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn tracker(capacity: usize, half_life: Duration) -> HotKeys {
        HotKeys::new(HotKeysConfig { capacity, half_life, seed: 42 }, Instant::ZERO).unwrap()
    }

    impl HotKeys {
        /// `(upper, lower)` bounds on the decayed requests of `key` at `now`, in requests.
        fn bounds(&self, now: Instant, key: &[u8]) -> Option<(f64, f64)> {
            let slot = self.find(hash_key(&self.hasher, key), key)?;
            let (count, error) = self.counts_at(&self.entries[slot], self.effective(now));
            Some((count as f64 / UNIT as f64, (count - error) as f64 / UNIT as f64))
        }

        /// Checks the internal structure; returns a description of the first violation.
        fn check(&self) -> Result<(), String> {
            let n = self.entries.len();
            if n > self.capacity || self.heap.len() != n || self.index.len() != n {
                return Err(format!("sizes {n} {} {}", self.heap.len(), self.index.len()));
            }
            for (pos, &slot) in self.heap.iter().enumerate() {
                let entry = &self.entries[slot as usize];
                if entry.heap_pos as usize != pos {
                    return Err(format!("heap_pos of slot {slot}"));
                }
                if pos > 0 && self.count_at((pos - 1) / 2) > entry.count {
                    return Err(format!("heap order at {pos}"));
                }
            }
            for (slot, entry) in self.entries.iter().enumerate() {
                if self.find(entry.hash, &entry.key) != Some(slot) {
                    return Err(format!("index of slot {slot}"));
                }
                if entry.error > entry.count || entry.count < UNIT {
                    return Err(format!("counts of slot {slot}"));
                }
            }
            Ok(())
        }
    }

    const H: Duration = Duration::from_secs(10);

    /// Requests `key` every `interval_us` from `from_us` (inclusive) to `to_us` (exclusive).
    fn steady(t: &mut HotKeys, key: &[u8], from_us: u64, to_us: u64, interval_us: u64) {
        let mut now = from_us;
        while now < to_us {
            t.record(Instant::from_micros(now), key);
            now += interval_us;
        }
    }

    #[test]
    fn config_is_validated() {
        let ok = HotKeysConfig::default();
        assert_eq!((ok.capacity, ok.half_life), (128, Duration::from_secs(10)));
        let at = Instant::ZERO;
        let err = |config| HotKeys::new(config, at).err();
        assert_eq!(
            err(HotKeysConfig { capacity: 0, ..ok }),
            Some(HotKeysConfigError::ZeroCapacity)
        );
        assert!(matches!(
            err(HotKeysConfig { capacity: usize::MAX, ..ok }),
            Some(HotKeysConfigError::CapacityTooLarge { .. })
        ));
        assert!(matches!(
            err(HotKeysConfig { half_life: Duration::ZERO, ..ok }),
            Some(HotKeysConfigError::HalfLifeTooShort { .. })
        ));
        assert!(HotKeys::new(HotKeysConfig { half_life: Duration::MAX, ..ok }, at).is_ok());
    }

    #[test]
    fn steady_rate_converges_to_true_rate() {
        for (rate, interval_us) in [(100.0, 10_000u64), (3.0, 333_333)] {
            let mut t = tracker(16, H);
            let mut worst: f64 = 0.0;
            let mut now = 0;
            while now < 100_000_000 {
                t.record(Instant::from_micros(now), b"steady");
                // Background noise: a new cold key every second.
                if now % 1_000_000 < interval_us {
                    t.record(Instant::from_micros(now), &(now / 1_000_000).to_le_bytes());
                }
                // After 4 half-lives, check at many phases of the period.
                if now >= 40_000_000 && now % 700_000 < interval_us {
                    let got = t.rate(Instant::from_micros(now), b"steady").unwrap();
                    worst = worst.max(((got - rate) / rate).abs());
                }
                now += interval_us;
            }
            assert!(worst < 0.10, "rate {rate}: worst relative error {worst}");
        }
    }

    #[test]
    fn new_key_ramps_up_without_overshooting() {
        let mut t = tracker(16, H);
        let mut last = 0.0;
        for step in 1..=60u64 {
            let end = step * 1_000_000;
            steady(&mut t, b"k", end - 1_000_000, end, 10_000);
            let got = t.rate(Instant::from_micros(end), b"k").unwrap();
            assert!(got <= 100.0 * 1.02, "overshoot {got} at {step}s");
            assert!(got >= last * 0.98, "ramp is monotone: {got} after {last}");
            last = got;
        }
        assert!(last >= 90.0, "converged: {last}");
    }

    #[test]
    fn decay_halves_counts_every_half_life() {
        let mut t = tracker(16, H);
        for _ in 0..1000 {
            t.record(Instant::ZERO, b"k");
        }
        assert_eq!(t.bounds(Instant::ZERO, b"k"), Some((1000.0, 1000.0)));
        assert_eq!(t.bounds(Instant::from_secs(10), b"k"), Some((500.0, 500.0)));
        assert_eq!(t.bounds(Instant::from_secs(29), b"k"), Some((250.0, 250.0)));
        t.record(Instant::from_secs(30), b"other"); // applies the halvings
        assert_eq!(t.bounds(Instant::from_secs(30), b"k"), Some((125.0, 125.0)));
        assert_eq!(t.entries.iter().find(|e| e.key == b"k").map(|e| e.count), Some(125 * UNIT));
    }

    #[test]
    fn rate_of_an_idle_key_only_falls_and_the_key_fades_out() {
        let mut t = tracker(16, H);
        steady(&mut t, b"k", 0, 30_000_000, 10_000);
        let mut last = f64::INFINITY;
        for ms in (30_000..200_000u64).step_by(250) {
            let now = Instant::from_millis(ms);
            t.record(now, b"noise");
            let Some(got) = t.rate(now, b"k") else { break };
            assert!(got <= last * (1.0 + 1e-9) + 1e-3, "{got} after {last} at {ms} ms");
            last = got;
        }
        t.record(Instant::from_secs(300), b"noise");
        assert_eq!(t.rate(Instant::from_secs(300), b"k"), None, "faded below one request");
    }

    #[test]
    fn time_going_backwards_counts_as_no_time_passing() {
        let mut t = tracker(16, H);
        for _ in 0..100 {
            t.record(Instant::from_secs(25), b"k");
        }
        let before = t.rate(Instant::from_secs(25), b"k");
        t.record(Instant::from_secs(3), b"other"); // earlier: treated as 25 s
        assert_eq!(t.rate(Instant::from_secs(3), b"k"), before);
        assert_eq!(t.bounds(Instant::ZERO, b"k"), Some((100.0, 100.0)));
        assert_eq!(
            t.entries.iter().find(|e| e.key == b"other").map(|e| e.since),
            Some(Instant::from_secs(25))
        );
    }

    #[test]
    fn heavy_hitter_survives_flood_of_cold_keys() {
        let mut t = tracker(16, Duration::from_secs(3600));
        for i in 0..100_000u32 {
            let now = Instant::from_micros(u64::from(i) * 100);
            if i % 10 == 0 {
                t.record(now, b"hot");
            } else {
                t.record(now, &i.to_le_bytes());
            }
        }
        let top = t.top(Instant::from_secs(10), 1);
        assert_eq!(top.first().map(|(k, _)| k.as_ref()), Some(&b"hot"[..]));
        let (upper, lower) = t.bounds(Instant::from_secs(10), b"hot").unwrap();
        assert!(lower <= 10_000.0 && upper >= 10_000.0);
        t.check().unwrap();
    }

    #[test]
    fn key_inheriting_a_count_is_not_reported_hot() {
        let mut t = tracker(4, H);
        for key in [b"a", b"b", b"c", b"d"] {
            steady(&mut t, key, 0, 20_000_000, 10_000);
        }
        let now = Instant::from_secs(20);
        t.record(now, b"new");
        let (upper, lower) = t.bounds(now, b"new").unwrap();
        assert!(upper > 500.0, "inherited count: {upper}");
        assert_eq!(lower, 1.0);
        let rate = t.rate(now, b"new").unwrap();
        assert!(rate <= 4.0 / 10.0, "one request is not hot: {rate}");
    }

    #[test]
    fn memory_stays_bounded_after_100k_distinct_keys() {
        let mut t = tracker(64, H);
        let caps = (t.entries.capacity(), t.heap.capacity(), t.index.capacity());
        for i in 0..100_000u64 {
            t.record(Instant::from_micros(i * 1_000), &i.to_le_bytes());
            assert!(t.len() <= 64);
        }
        assert_eq!((t.entries.capacity(), t.heap.capacity(), t.index.capacity()), caps);
        assert!(t.entries.iter().all(|e| e.key.capacity() <= 64));
        t.check().unwrap();
    }

    #[test]
    fn top_lists_hottest_first() {
        let mut t = tracker(16, H);
        for (key, n) in [(&b"warm"[..], 50), (b"hot", 200), (b"cold", 5), (b"tepid", 20)] {
            for _ in 0..n {
                t.record(Instant::from_secs(1), key);
            }
        }
        let top = t.top(Instant::from_secs(2), 3);
        let keys: Vec<&[u8]> = top.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, [&b"hot"[..], b"warm", b"tepid"]);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(t.top(Instant::from_secs(2), 100).len(), 4);
    }

    #[test]
    fn forget_stops_tracking_a_key() {
        let mut t = tracker(8, H);
        for i in 0..8u8 {
            for _ in 0..=i {
                t.record(Instant::ZERO, &[i]);
            }
        }
        assert!(t.forget(&[3]));
        assert!(!t.forget(&[3]));
        assert_eq!((t.len(), t.rate(Instant::ZERO, &[3])), (7, None));
        t.check().unwrap();
        assert!(t.forget(&[7]) && t.forget(&[0]));
        t.check().unwrap();
        t.record(Instant::ZERO, &[3]);
        assert_eq!(t.bounds(Instant::ZERO, &[3]), Some((1.0, 1.0)), "restarts from zero, no error");
    }

    #[test]
    fn stored_keys_are_copies() {
        let frame = Bytes::from(alloc::vec![9u8; 4096]);
        let mut t = tracker(4, H);
        t.record(Instant::ZERO, &frame[100..108]);
        let top = t.top(Instant::ZERO, 1);
        assert_eq!(top[0].0.as_ref(), &frame[100..108]);
        assert!(!frame.as_ptr_range().contains(&top[0].0.as_ptr()));
    }

    /// A skewed key: half the requests go to a few geometric-popularity heavy hitters, the rest
    /// to a long uniform tail.
    fn skewed_key() -> impl Strategy<Value = u16> {
        any::<u32>().prop_map(|v| {
            if v & 1 == 0 {
                (v >> 1).trailing_zeros().min(20) as u16
            } else {
                100 + ((v >> 1) % 300) as u16
            }
        })
    }

    proptest! {
        #![proptest_config(crate::testing::model_config())]

        /// Without decay (time stands still): the space-saving guarantees hold exactly.
        #[test]
        fn space_saving_bounds_hold(capacity in 1usize..24, stream in proptest::collection::vec(skewed_key(), 0..1500)) {
            let mut t = tracker(capacity, Duration::from_secs(3600));
            let mut truth: HashMap<u16, u64> = HashMap::new();
            for key in &stream {
                t.record(Instant::ZERO, &key.to_le_bytes());
                *truth.entry(*key).or_default() += 1;
                prop_assert!(t.len() <= capacity);
            }
            t.check().map_err(TestCaseError::fail)?;
            let total = stream.len() as u64;
            for (key, &n) in &truth {
                match t.bounds(Instant::ZERO, &key.to_le_bytes()) {
                    Some((upper, lower)) => {
                        prop_assert!(upper >= n as f64, "upper {} < true {}", upper, n);
                        prop_assert!(lower <= n as f64, "lower {} > true {}", lower, n);
                    }
                    None => prop_assert!(n * capacity as u64 <= total, "key {} with {} of {} untracked", key, n, total),
                }
            }
        }

        /// With decay, time going back and forth, and forgets: structure, bounds (against the
        /// exactly decayed true counts, within rounding), rates and `top` stay sane.
        #[test]
        fn decayed_tracker_matches_model(
            capacity in 1usize..12,
            ops in proptest::collection::vec((skewed_key(), -300_000i64..400_000, 0u8..20), 0..600),
        ) {
            let half_life = Duration::from_secs(1);
            let mut t = tracker(capacity, half_life);
            let mut truth: HashMap<u16, f64> = HashMap::new();
            let (mut clock, mut latest, mut period) = (0i64, 0u64, 0u64);
            let mut forgot = false;
            for (key, dt, action) in ops {
                clock = (clock + dt).max(0);
                let now = Instant::from_micros(clock as u64);
                let kb = key.to_le_bytes();
                match action {
                    0 => {
                        let was = t.rate(now, &kb).is_some();
                        prop_assert_eq!(t.forget(&kb), was);
                        truth.remove(&key);
                        forgot = true;
                    }
                    1 => {
                        let top = t.top(now, 5);
                        prop_assert!(top.len() <= 5.min(t.len()));
                        prop_assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
                    }
                    _ => {
                        // Only `record` advances the tracker's clock (queries take `&self`).
                        latest = latest.max(clock as u64);
                        let new_period = latest / 1_000_000;
                        let factor = inverse_power_of_two(i128::from(new_period - period));
                        truth.values_mut().for_each(|n| *n *= factor);
                        period = new_period;
                        t.record(now, &kb);
                        *truth.entry(key).or_default() += 1.0;
                    }
                }
                prop_assert!(t.len() <= capacity);
                t.check().map_err(TestCaseError::fail)?;
                // Queries see `max(now, latest recorded)`, with pending halvings applied.
                let pending = latest.max(clock as u64) / 1_000_000 - period;
                let factor = inverse_power_of_two(i128::from(pending));
                for (key, &n) in &truth {
                    let n = n * factor;
                    let kb = key.to_le_bytes();
                    if let Some((upper, lower)) = t.bounds(now, &kb) {
                        prop_assert!(lower <= n + 0.01, "lower {} > true {}", lower, n);
                        prop_assert!(forgot || upper >= n - 1.01, "upper {} < true {}", upper, n);
                        let rate = t.rate(now, &kb).unwrap_or(f64::NAN);
                        prop_assert!(rate.is_finite() && rate >= 0.0, "rate {}", rate);
                    }
                }
            }
        }
    }
}
