//! The front on real threads: hits beside the node, misses through it, the driver's wake-ups.

use alloc::sync::Arc as StdArc;
use alloc::vec;
use alloc::vec::Vec;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use herdcache_proto::{LoadResult, NodeConfig};

struct Harness {
    front: Front,
    wakes: StdArc<AtomicUsize>,
    now: StdArc<std::sync::Mutex<Instant>>,
}

fn harness(max_bytes: u64) -> Harness {
    let wakes = StdArc::new(AtomicUsize::new(0));
    let now = StdArc::new(std::sync::Mutex::new(Instant::from_secs(1)));
    let counter = wakes.clone();
    let clock = now.clone();
    let config = NodeConfig::new("n1", "test").with_keyspace(KeyspaceConfig::new("ks", max_bytes));
    let front = Front::with_clock(
        config,
        StdArc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
        StdArc::new(move || *clock.lock().expect("clock")),
    )
    .expect("valid config");
    Harness { front, wakes, now }
}

impl Harness {
    /// Answers every queued load with `value_of(key)`; returns how many loads there were.
    fn answer_loads(&self, value_of: impl Fn(&Bytes) -> LoadResult) -> usize {
        let mut loads = 0;
        while let Some(output) = self.front.poll_output() {
            if let Output::Load { load, key, .. } = output {
                loads += 1;
                self.front
                    .handle_input(Input::Loaded { load, result: value_of(&key) })
                    .expect("load in progress");
            }
        }
        loads
    }

    fn advance(&self, by: core::time::Duration) {
        let mut now = self.now.lock().expect("clock");
        *now += by;
    }
}

fn value(bytes: &'static [u8]) -> impl Fn(&Bytes) -> LoadResult {
    move |_| LoadResult::Value { bytes: Bytes::from_static(bytes), expires_at: None }
}

#[test]
fn a_miss_goes_through_the_node_and_the_next_get_is_a_ready_hit() {
    let h = harness(1 << 20);
    let mut first = h.front.get(b"ks", b"k");
    assert!(!first.is_ready());
    assert_eq!(h.wakes.load(Ordering::SeqCst), 1, "the load woke the driver");
    assert_eq!(h.answer_loads(value(b"v")), 1);
    let answer = first.try_take().expect("answered").expect("loaded");
    assert_eq!((answer.bytes.as_ref(), answer.path), (&b"v"[..], Path::Load));
    let mut second = h.front.get(b"ks", b"k");
    assert!(second.is_ready());
    assert_eq!(second.try_take().expect("ready").expect("hit").path, Path::LocalHit);
    let ks = h.front.keyspace(b"ks").expect("exists");
    assert_eq!(ks.peek_with(b"k", <[u8]>::to_vec), Some(b"v".to_vec()));
    let stats = h.front.stats(b"ks").expect("exists");
    // The get that missed, the hit and the peek: the front's hits count as gets.
    assert_eq!((stats.gets, stats.cache_hits, stats.local_loads), (3, 2, 1));
    assert_eq!(stats.cache.main.hits, 2);
}

#[test]
fn concurrent_misses_of_one_key_make_one_load_and_all_are_answered() {
    let h = harness(1 << 20);
    let pendings: Vec<_> = (0..8).map(|_| h.front.get(b"ks", b"k")).collect();
    assert_eq!(h.wakes.load(Ordering::SeqCst), 1, "woken once until it drains");
    assert_eq!(h.answer_loads(value(b"v")), 1);
    for mut pending in pendings {
        assert_eq!(pending.try_take().expect("answered").expect("value").bytes, "v");
    }
}

#[test]
fn blocking_waiters_on_threads_are_woken_by_the_driver() {
    let h = harness(1 << 20);
    let front = h.front.clone();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let front = front.clone();
            std::thread::spawn(move || front.get(b"ks", b"k").wait())
        })
        .collect();
    let mut loads = 0;
    while waiters.iter().any(|w| !w.is_finished()) {
        loads += h.answer_loads(value(b"v"));
        std::thread::yield_now();
    }
    assert_eq!(loads, 1);
    for waiter in waiters {
        assert_eq!(waiter.join().expect("no panic").expect("value").bytes, "v");
    }
}

#[test]
fn a_dropped_waiter_does_not_stop_the_load_from_filling_the_cache() {
    let h = harness(1 << 20);
    drop(h.front.get(b"ks", b"k"));
    assert_eq!(h.answer_loads(value(b"v")), 1);
    assert!(h.front.get(b"ks", b"k").is_ready());
}

#[test]
fn a_delete_beats_a_load_in_flight() {
    let h = harness(1 << 20);
    let mut get = h.front.get(b"ks", b"k");
    let mut delete = h.front.delete(b"ks", Bytes::from_static(b"k"));
    assert_eq!(delete.try_take(), Some(Ok(())), "a lone node deletes at once");
    assert_eq!(h.answer_loads(value(b"stale")), 1);
    assert!(get.try_take().is_some());
    assert!(!h.front.get(b"ks", b"k").is_ready(), "the stale value was not cached");
}

#[test]
fn puts_are_seen_by_hits_and_expire_on_the_front_clock() {
    let h = harness(1 << 20);
    let entry = Entry {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        expires_at: Some(h.front.now() + core::time::Duration::from_secs(5)),
    };
    assert_eq!(h.front.put(b"ks", entry).try_take(), Some(Ok(())));
    assert!(h.front.get(b"ks", b"k").is_ready());
    h.advance(core::time::Duration::from_secs(5));
    assert!(!h.front.get(b"ks", b"k").is_ready(), "expired at its deadline");
    assert_eq!(h.front.poll_timeout_in(), Some(core::time::Duration::ZERO));
}

#[test]
fn the_budget_holds_and_clock_keeps_what_is_read() {
    let charge = herdcache_proto::Cache::charge(b"key-000", &[0; 100]);
    let h = harness(charge * 64);
    let ks = h.front.keyspace(b"ks").expect("exists");
    for i in 0..64 {
        let entry = Entry {
            key: Bytes::from(std::format!("key-{i:03}")),
            value: Bytes::from(vec![0; 100]),
            expires_at: None,
        };
        assert_eq!(h.front.put(b"ks", entry).try_take(), Some(Ok(())));
    }
    for _ in 0..3 {
        assert!(ks.get(b"key-007").is_ready());
    }
    for i in 64..200 {
        let entry = Entry {
            key: Bytes::from(std::format!("key-{i:03}")),
            value: Bytes::from(vec![0; 100]),
            expires_at: None,
        };
        assert_eq!(h.front.put(b"ks", entry).try_take(), Some(Ok(())));
        // Keep reading one key: CLOCK's second chance keeps it.
        assert!(ks.get(b"key-007").is_ready(), "read key evicted at insert {i}");
    }
    let stats = h.front.stats(b"ks").expect("exists");
    assert!(stats.cache.main.bytes <= charge * 64);
    assert_eq!(stats.cache.main.items, 64);
    assert_eq!(stats.cache.main.evictions, 136);
}

#[test]
fn close_answers_every_waiter_and_refuses_new_requests() {
    let h = harness(1 << 20);
    let entry = Entry {
        key: Bytes::from_static(b"hit"),
        value: Bytes::from_static(b"v"),
        expires_at: None,
    };
    assert_eq!(h.front.put(b"ks", entry).try_take(), Some(Ok(())));
    let ks = h.front.keyspace(b"ks").expect("exists");
    let mut get = h.front.get(b"ks", b"k");
    let mut many =
        h.front.get_many(b"ks", vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    h.front.close();
    assert_eq!(get.try_take(), Some(Err(Error::ShuttingDown)));
    assert_eq!(many.try_take(), Some(vec![Err(Error::ShuttingDown), Err(Error::ShuttingDown)]));
    assert_eq!(h.front.get(b"ks", b"x").try_take(), Some(Err(Error::ShuttingDown)));
    assert_eq!(
        ks.get(b"hit").try_take(),
        Some(Err(Error::ShuttingDown)),
        "no stale hit after close"
    );
}

#[test]
fn a_removed_keyspace_only_misses_through_an_old_handle() {
    let h = harness(1 << 20);
    let entry =
        Entry { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v"), expires_at: None };
    assert_eq!(h.front.put(b"ks", entry).try_take(), Some(Ok(())));
    let ks = h.front.keyspace(b"ks").expect("exists");
    h.front.remove_keyspace(b"ks").expect("exists");
    assert_eq!(ks.get(b"k").try_take(), Some(Err(Error::UnknownKeyspace)));
    assert_eq!(h.front.get(b"ks", b"k").try_take(), Some(Err(Error::UnknownKeyspace)));
}

#[test]
fn a_user_request_that_sets_an_earlier_deadline_wakes_the_driver() {
    let h = harness(1 << 20);
    assert_eq!(h.front.poll_timeout(), None);
    let _get = h.front.get(b"ks", b"k");
    assert_eq!(h.wakes.load(Ordering::SeqCst), 1);
    while h.front.poll_output().is_some() {}
    assert!(h.front.poll_timeout().is_some(), "the request's timeout is armed");
    // Joining the flight queues nothing and moves no deadline earlier: no wake-up.
    let _again = h.front.get(b"ks", b"k");
    assert_eq!(h.wakes.load(Ordering::SeqCst), 1);
}

/// The sharded store against a model: CLOCK may evict other entries than LRU would, so the
/// model checks what every eviction order must keep — what is present is exactly what was
/// stored last (or nothing), nothing expired is returned, the byte and item accounts are exact,
/// the budget holds after every operation, and a store that fits is never refused.
mod store_model {
    use super::*;
    use herdcache_proto::{Cache, CacheConfig, InsertError, Store, Tier};
    use proptest::prelude::*;
    use std::collections::HashMap as StdHashMap;
    use store::StoreWriter;

    #[derive(Clone, Debug)]
    enum Op {
        Insert { tier: Tier, key: u8, len: u16, ttl_ms: Option<u16> },
        Get { key: u8 },
        Remove { key: u8 },
        Advance { ms: u16 },
        Timeout,
        ClearHot,
        SetMax { max: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (prop_oneof![3 => Just(Tier::Main), 1 => Just(Tier::Hot)], 0u8..40, 0u16..600, proptest::option::of(1u16..500))
                .prop_map(|(tier, key, len, ttl_ms)| Op::Insert { tier, key, len, ttl_ms }),
            4 => (0u8..40).prop_map(|key| Op::Get { key }),
            1 => (0u8..40).prop_map(|key| Op::Remove { key }),
            1 => (1u16..300).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Timeout),
            1 => Just(Op::ClearHot),
            1 => (0u32..8_000).prop_map(|max| Op::SetMax { max }),
        ]
    }

    fn key(n: u8) -> Bytes {
        Bytes::from(std::format!("key-{n}"))
    }

    proptest! {
        #![proptest_config(crate::front::tests::model_config())]
        #[test]
        fn the_sharded_store_keeps_the_cache_contract(ops in proptest::collection::vec(op(), 1..120)) {
            let mut max = 4_000u64;
            let mut store = StoreWriter::new(CacheConfig::with_max_bytes(max));
            // What was stored last per key: (tier, value, expiry); an entry may since have been
            // evicted, never changed.
            let mut model: StdHashMap<u8, (Tier, Bytes, Instant)> = StdHashMap::new();
            let mut now = Instant::from_secs(1);
            for op in ops {
                match op {
                    Op::Insert { tier, key: k, len, ttl_ms } => {
                        let value = Bytes::from(alloc::vec![k; len as usize]);
                        let expires = ttl_ms.map(|ms| now + core::time::Duration::from_millis(u64::from(ms)));
                        let charge = Cache::charge(&key(k), &value);
                        let result = store.insert(now, tier, key(k), value.clone(), expires);
                        model.remove(&k);
                        if charge > max {
                            let too_large = matches!(result, Err(InsertError::TooLarge { .. }));
                            prop_assert!(too_large, "{:?}", result);
                        } else {
                            prop_assert!(result.is_ok(), "{result:?}");
                            model.insert(k, (tier, value, expires.unwrap_or(Instant::MAX)));
                        }
                    }
                    Op::Get { key: k } => {
                        let found = store.get(now, &key(k));
                        if let Some(found) = found {
                            let (tier, value, expires) = model.get(&k).expect("only stored keys are found");
                            prop_assert_eq!((found.tier, &found.value), (*tier, value));
                            prop_assert!(*expires > now, "expired entry returned");
                        }
                    }
                    Op::Remove { key: k } => {
                        store.remove(&key(k));
                        model.remove(&k);
                        prop_assert!(store.get(now, &key(k)).is_none());
                    }
                    Op::Advance { ms } => now += core::time::Duration::from_millis(u64::from(ms)),
                    Op::Timeout => {
                        store.handle_timeout(now);
                        model.retain(|_, (_, _, expires)| *expires > now);
                        if let Some(next) = store.poll_timeout() {
                            prop_assert!(next > now, "handle_timeout left due work");
                        }
                    }
                    Op::ClearHot => {
                        store.clear_tier(Tier::Hot);
                        model.retain(|_, (tier, _, _)| *tier == Tier::Main);
                    }
                    Op::SetMax { max: new } => {
                        max = u64::from(new);
                        store.set_max_bytes(max);
                    }
                }
                // The accounts match what is present, and the budget holds.
                let stats = store.stats();
                let mut present = [(0u64, 0u64); 2];
                for tier in [Tier::Main, Tier::Hot] {
                    for k in store.keys(tier) {
                        let n: u8 = core::str::from_utf8(&k[4..]).expect("ascii").parse().expect("number");
                        let (model_tier, value, _) = model.get(&n).expect("only stored keys are present");
                        prop_assert_eq!(*model_tier, tier);
                        let index = usize::from(tier == Tier::Hot);
                        present[index].0 += 1;
                        present[index].1 += Cache::charge(&k, value);
                    }
                }
                prop_assert_eq!((stats.main.items, stats.main.bytes), present[0]);
                prop_assert_eq!((stats.hot.items, stats.hot.bytes), present[1]);
                prop_assert!(stats.main.bytes + stats.hot.bytes <= max);
            }
        }
    }
}

/// Model tests run at least 256 cases; `PROPTEST_CASES` can raise it.
fn model_config() -> proptest::test_runner::Config {
    let default = proptest::test_runner::Config::default();
    proptest::test_runner::Config { cases: default.cases.max(256), ..default }
}
