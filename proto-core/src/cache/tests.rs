use super::*;
use crate::time::Duration;
use alloc::format;
use alloc::vec::Vec;
use proptest::prelude::*;

fn key(n: u32) -> Bytes {
    Bytes::from(format!("key-{n}"))
}

fn value(len: usize, fill: u8) -> Bytes {
    Bytes::from(alloc::vec![fill; len])
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn keys(cache: &Cache, tier: Tier) -> Vec<Bytes> {
    cache.iter(tier).map(|(key, _, _)| key.clone()).collect()
}

#[test]
fn get_returns_what_insert_stored() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(10_000));
    cache.insert(at(0), Tier::Main, key(1), value(10, 7), None).unwrap();
    let hit = cache.get(at(1), b"key-1").unwrap();
    assert_eq!((hit.tier, hit.value.as_ref(), hit.expires_at), (Tier::Main, &[7u8; 10][..], None));
    assert!(cache.get(at(1), b"key-2").is_none());
    assert_eq!(cache.stats().main.hits, 1);
}

#[test]
fn byte_account_counts_key_value_and_overhead() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(10_000));
    cache.insert(at(0), Tier::Main, key(1), value(100, 0), None).unwrap();
    assert_eq!(cache.bytes(), 5 + 100 + ENTRY_OVERHEAD);
    cache.insert(at(0), Tier::Main, key(1), value(40, 0), None).unwrap();
    assert_eq!(cache.bytes(), 5 + 40 + ENTRY_OVERHEAD, "a replace re-charges");
    assert!(cache.remove(b"key-1"));
    assert_eq!(cache.bytes(), 0);
}

#[test]
fn least_recently_used_is_evicted_first() {
    let per_entry = Cache::charge(b"key-0", &[0; 10]);
    let mut cache = Cache::new(CacheConfig::with_max_bytes(3 * per_entry));
    for n in 0..3 {
        cache.insert(at(0), Tier::Main, key(n), value(10, 0), None).unwrap();
    }
    cache.get(at(0), b"key-0").unwrap();
    assert_eq!(cache.insert(at(0), Tier::Main, key(3), value(10, 0), None), Ok(1));
    assert_eq!(keys(&cache, Tier::Main), [key(3), key(0), key(2)]);
    assert_eq!(cache.stats().main.evictions, 1);
}

#[test]
fn expired_entries_are_never_returned() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(10_000));
    cache.insert(at(0), Tier::Main, key(1), value(1, 0), Some(at(10))).unwrap();
    assert!(cache.get(at(9), b"key-1").is_some());
    assert!(cache.peek(at(10), b"key-1").is_none());
    assert!(cache.get(at(10), b"key-1").is_none());
    assert_eq!(cache.len(), 0, "an expired entry found by get is reclaimed");
    assert_eq!(cache.stats().main.expirations, 1);
}

#[test]
fn expired_entries_are_reclaimed_without_a_get() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(10_000));
    cache.insert(at(0), Tier::Main, key(1), value(1, 0), Some(at(30))).unwrap();
    cache.insert(at(0), Tier::Hot, key(2), value(1, 0), Some(at(20))).unwrap();
    cache.insert(at(0), Tier::Main, key(3), value(1, 0), None).unwrap();
    assert_eq!(cache.poll_timeout(), Some(at(20)));
    assert_eq!(cache.handle_timeout(at(19)), 0, "an early call is a no-op");
    assert_eq!(cache.handle_timeout(at(25)), 1);
    assert_eq!(cache.poll_timeout(), Some(at(30)));
    assert_eq!(cache.handle_timeout(at(30)), 1);
    assert_eq!(cache.poll_timeout(), None);
    assert_eq!(keys(&cache, Tier::Main), [key(3)]);
}

#[test]
fn replacing_an_entry_moves_its_expiry() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(10_000));
    cache.insert(at(0), Tier::Main, key(1), value(1, 1), Some(at(10))).unwrap();
    cache.insert(at(1), Tier::Main, key(1), value(1, 2), Some(at(50))).unwrap();
    assert_eq!(cache.handle_timeout(at(10)), 0, "the old expiry no longer applies");
    assert_eq!(cache.get(at(49), b"key-1").unwrap().value.as_ref(), &[2]);
    assert_eq!(cache.handle_timeout(at(50)), 1);
}

#[test]
fn time_going_backwards_does_not_revive_expired_entries() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(10_000));
    cache.insert(at(0), Tier::Main, key(1), value(1, 0), Some(at(10))).unwrap();
    assert!(cache.get(at(20), b"key-1").is_none());
    cache.insert(at(5), Tier::Main, key(2), value(1, 0), Some(at(15))).unwrap_err();
    assert!(cache.peek(at(5), b"key-2").is_none());
}

#[test]
fn a_key_lives_in_one_tier_at_a_time() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(10_000));
    cache.insert(at(0), Tier::Hot, key(1), value(1, 1), None).unwrap();
    cache.insert(at(0), Tier::Main, key(1), value(1, 2), None).unwrap();
    assert_eq!(cache.stats().hot.items, 0);
    assert_eq!(cache.get(at(0), b"key-1").unwrap().tier, Tier::Main);
    assert!(!cache.remove_from(Tier::Hot, b"key-1"));
    assert!(cache.remove_from(Tier::Main, b"key-1"));
}

#[test]
fn hot_tier_is_evicted_while_above_an_eighth_of_main() {
    let (main_entry, hot_entry) =
        (Cache::charge(b"key-0", &[0; 100]), Cache::charge(b"key-100", &[0; 100]));
    let mut cache = Cache::new(CacheConfig::with_max_bytes(8 * main_entry + 2 * hot_entry));
    for n in 0..8 {
        cache.insert(at(0), Tier::Main, key(n), value(100, 0), None).unwrap();
    }
    cache.insert(at(0), Tier::Hot, key(100), value(100, 0), None).unwrap();
    cache.insert(at(0), Tier::Hot, key(101), value(100, 0), None).unwrap();
    // Full: hot (2 entries) > main (8) / 8, so the oldest hot entry goes.
    cache.insert(at(0), Tier::Main, key(8), value(100, 0), None).unwrap();
    assert_eq!(keys(&cache, Tier::Hot), [key(101)]);
    // Now hot (1) <= main (9) / 8: main pays.
    cache.insert(at(0), Tier::Main, key(9), value(100, 0), None).unwrap();
    assert_eq!(keys(&cache, Tier::Hot), [key(101)]);
    assert_eq!(cache.stats().main.items, 9);
}

#[test]
fn an_entry_larger_than_the_budget_is_refused_and_its_stale_copy_dropped() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(1_000));
    cache.insert(at(0), Tier::Main, key(1), value(10, 0), None).unwrap();
    let error = cache.insert(at(0), Tier::Main, key(1), value(1_000, 0), None).unwrap_err();
    assert!(matches!(error, InsertError::TooLarge { max_bytes: 1_000, .. }));
    assert!(cache.get(at(0), b"key-1").is_none());
    assert_eq!(cache.bytes(), 0);
}

#[test]
fn shrinking_the_budget_evicts() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(100_000));
    for n in 0..10 {
        cache.insert(at(0), Tier::Main, key(n), value(100, 0), None).unwrap();
    }
    let evicted = cache.set_max_bytes(3 * Cache::charge(b"key-0", &[0; 100]));
    assert_eq!(evicted, 7);
    assert_eq!(keys(&cache, Tier::Main), [key(9), key(8), key(7)]);
}

#[test]
fn expiry_heap_stays_bounded_under_churn() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(1 << 20));
    for round in 0..10_000u64 {
        let n = (round % 10) as u32;
        cache.insert(at(0), Tier::Main, key(n), value(1, 0), Some(at(1_000 + round))).unwrap();
    }
    assert!(cache.main.expiry_len() <= 15 + 64, "stale expiry pairs are compacted");
}

#[test]
fn expiry_heap_sheds_pairs_of_entries_that_no_longer_expire() {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(1 << 24));
    for n in 0..1_000 {
        cache.insert(at(0), Tier::Main, key(n), value(1, 0), Some(at(3_600_000))).unwrap();
    }
    for n in 0..1_000 {
        cache.insert(at(0), Tier::Main, key(n), value(1, 0), None).unwrap();
    }
    assert!(cache.main.expiry_len() <= 64, "{} stale pairs kept", cache.main.expiry_len());
}

#[test]
fn expiry_compaction_does_not_scan_entries_that_never_expire() {
    // 50k entries without expiry, one key re-inserted with one: the heap stays tiny, and the
    // work per insert does not grow with the 50k (compaction reads the heap, not the slab).
    let mut cache = Cache::new(CacheConfig::with_max_bytes(1 << 30));
    for n in 0..50_000 {
        cache.insert(at(0), Tier::Main, key(n), value(1, 0), None).unwrap();
    }
    for round in 0..10_000u64 {
        cache.insert(at(0), Tier::Main, key(0), value(1, 0), Some(at(1_000 + round))).unwrap();
        assert!(cache.main.expiry_len() <= 1 + 64);
    }
    assert_eq!(cache.handle_timeout(at(20_000)), 1);
}

// ---------------------------------------------------------------------------------------------
// Model test: the cache against two recency-ordered `Vec`s.

#[derive(Clone, Debug)]
enum Op {
    Insert { tier: Tier, key: u8, len: usize, ttl_ms: Option<u64> },
    Get { key: u8 },
    Remove { key: u8 },
    RemoveFrom { tier: Tier, key: u8 },
    Advance { ms: u64 },
    StepBack { ms: u64 },
    HandleTimeout,
    SetMaxBytes { max: u64 },
}

fn tier_strategy() -> impl Strategy<Value = Tier> {
    prop_oneof![3 => Just(Tier::Main), 1 => Just(Tier::Hot)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (tier_strategy(), 0u8..24, 0usize..300, proptest::option::of(1u64..50))
            .prop_map(|(tier, key, len, ttl_ms)| Op::Insert { tier, key, len, ttl_ms }),
        6 => (0u8..24).prop_map(|key| Op::Get { key }),
        1 => (0u8..24).prop_map(|key| Op::Remove { key }),
        1 => (tier_strategy(), 0u8..24).prop_map(|(tier, key)| Op::RemoveFrom { tier, key }),
        2 => (0u64..20).prop_map(|ms| Op::Advance { ms }),
        1 => (0u64..20).prop_map(|ms| Op::StepBack { ms }),
        1 => Just(Op::HandleTimeout),
        1 => (0u64..3_000).prop_map(|max| Op::SetMaxBytes { max }),
    ]
}

fn model_key(n: u8) -> Bytes {
    // Keys of different lengths, so the account is exercised beyond one size.
    Bytes::from(format!("{}{n}", "k".repeat(usize::from(n % 5))))
}

#[derive(Clone, Debug, PartialEq)]
struct ModelEntry {
    key: Bytes,
    value: Bytes,
    expires_at: Instant,
}

/// Index 0 is the most recently used entry.
#[derive(Default)]
struct Model {
    main: Vec<ModelEntry>,
    hot: Vec<ModelEntry>,
    max: u64,
    now: Instant,
}

impl Model {
    fn tier(&mut self, tier: Tier) -> &mut Vec<ModelEntry> {
        match tier {
            Tier::Main => &mut self.main,
            Tier::Hot => &mut self.hot,
        }
    }

    fn bytes_of(entries: &[ModelEntry]) -> u64 {
        entries.iter().map(|e| Cache::charge(&e.key, &e.value)).sum()
    }

    fn remove(&mut self, tier: Tier, key: &[u8]) -> bool {
        let entries = self.tier(tier);
        let before = entries.len();
        entries.retain(|e| e.key != key);
        before != entries.len()
    }

    fn get(&mut self, key: &[u8]) -> Option<(Tier, Bytes)> {
        let now = self.now;
        for tier in [Tier::Main, Tier::Hot] {
            let entries = self.tier(tier);
            if let Some(at) = entries.iter().position(|e| e.key == key) {
                let entry = entries.remove(at);
                if entry.expires_at <= now {
                    return None;
                }
                let value = entry.value.clone();
                entries.insert(0, entry);
                return Some((tier, value));
            }
        }
        None
    }

    fn insert(&mut self, tier: Tier, entry: ModelEntry) -> Result<usize, ()> {
        let other = if tier == Tier::Main { Tier::Hot } else { Tier::Main };
        self.remove(other, &entry.key);
        self.remove(tier, &entry.key);
        if Cache::charge(&entry.key, &entry.value) > self.max || entry.expires_at <= self.now {
            return Err(());
        }
        self.tier(tier).insert(0, entry);
        Ok(self.evict())
    }

    fn evict(&mut self) -> usize {
        let mut evicted = 0;
        loop {
            let (main, hot) = (Model::bytes_of(&self.main), Model::bytes_of(&self.hot));
            if main + hot <= self.max {
                return evicted;
            }
            let victim = if hot > main / 8 { Tier::Hot } else { Tier::Main };
            self.tier(victim).pop().expect("the victim tier holds bytes");
            evicted += 1;
        }
    }

    fn expire(&mut self) -> usize {
        let now = self.now;
        let before = self.main.len() + self.hot.len();
        self.main.retain(|e| e.expires_at > now);
        self.hot.retain(|e| e.expires_at > now);
        before - self.main.len() - self.hot.len()
    }
}

fn check_same(cache: &Cache, model: &Model) -> Result<(), TestCaseError> {
    for (tier, expected) in [(Tier::Main, &model.main), (Tier::Hot, &model.hot)] {
        let actual: Vec<ModelEntry> = cache
            .iter(tier)
            .map(|(key, value, expires_at)| ModelEntry {
                key: key.clone(),
                value: value.clone(),
                expires_at: expires_at.unwrap_or(Instant::MAX),
            })
            .collect();
        prop_assert_eq!(&actual, expected, "{:?} tier differs", tier);
    }
    let expected_bytes = Model::bytes_of(&model.main) + Model::bytes_of(&model.hot);
    prop_assert_eq!(cache.bytes(), expected_bytes, "byte account is exact");
    prop_assert!(cache.bytes() <= cache.max_bytes(), "bytes within budget");
    let stats = cache.stats();
    prop_assert_eq!(stats.main.items as usize, model.main.len());
    prop_assert_eq!(stats.hot.items as usize, model.hot.len());
    Ok(())
}

proptest! {
    #![proptest_config(crate::testing::model_config())]

    #[test]
    fn cache_matches_recency_ordered_vec_model(
        max in 0u64..3_000,
        ops in proptest::collection::vec(op_strategy(), 1..200),
    ) {
        let mut cache = Cache::new(CacheConfig::with_max_bytes(max));
        let mut model = Model { max, ..Model::default() };
        let mut clock = Instant::ZERO;
        for (step, op) in ops.into_iter().enumerate() {
            // The cache learns the time only from the calls that pass it.
            if matches!(op, Op::Insert { .. } | Op::Get { .. } | Op::HandleTimeout) {
                model.now = model.now.max(clock);
            }
            match op {
                Op::Insert { tier, key, len, ttl_ms } => {
                    let expires_at = ttl_ms.map(|ms| clock + Duration::from_millis(ms));
                    // The value's content names the step that stored it, to catch a wrong value.
                    let entry = ModelEntry {
                        key: model_key(key),
                        value: value(len, step as u8),
                        expires_at: expires_at.unwrap_or(Instant::MAX),
                    };
                    let expected = model.insert(tier, entry.clone());
                    let actual = cache.insert(clock, tier, entry.key, entry.value, expires_at);
                    prop_assert_eq!(actual.ok(), expected.ok(), "same victims count");
                }
                Op::Get { key } => {
                    let expected = model.get(&model_key(key));
                    let peeked = cache.peek(clock, &model_key(key)).map(|h| (h.tier, h.value.clone()));
                    let actual = cache.get(clock, &model_key(key));
                    if let Some(hit) = &actual {
                        prop_assert!(hit.expires_at.is_none_or(|at| at > model.now), "nothing expired returned");
                    }
                    let actual = actual.map(|hit| (hit.tier, hit.value.clone()));
                    prop_assert_eq!(&peeked, &expected);
                    prop_assert_eq!(actual, expected, "same hits");
                }
                Op::Remove { key } => {
                    let main = model.remove(Tier::Main, &model_key(key));
                    let hot = model.remove(Tier::Hot, &model_key(key));
                    prop_assert_eq!(cache.remove(&model_key(key)), main || hot);
                }
                Op::RemoveFrom { tier, key } => {
                    let expected = model.remove(tier, &model_key(key));
                    prop_assert_eq!(cache.remove_from(tier, &model_key(key)), expected);
                }
                Op::Advance { ms } => clock += Duration::from_millis(ms),
                Op::StepBack { ms } => clock = clock - Duration::from_millis(ms),
                Op::HandleTimeout => {
                    let expected = model.expire();
                    prop_assert_eq!(cache.handle_timeout(clock), expected);
                    if let Some(next) = cache.poll_timeout() {
                        prop_assert!(next > model.now, "nothing left to reclaim at or before now");
                    }
                }
                Op::SetMaxBytes { max } => {
                    model.max = max;
                    let expected = model.evict();
                    prop_assert_eq!(cache.set_max_bytes(max), expected);
                }
            }
            check_same(&cache, &model)?;
        }
    }
}
