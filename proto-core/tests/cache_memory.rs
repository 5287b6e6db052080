//! Measures what a full cache really allocates, to back the byte account's `ENTRY_OVERHEAD`.
//!
//! dhat's testing mode counts the live heap exactly (bytes requested from the allocator). Each
//! scenario fills a fresh cache past its budget with churn (replaces, evictions, expiries with
//! scattered TTLs, so the expiry heap carries stale pairs), then compares the heap the cache
//! holds, keys and values included, with its budget. Allocator headers are not in these
//! figures (glibc adds about 16 bytes per allocation).
//!
//! Run `cargo test -p herdcache-proto --test cache_memory -- --nocapture` to see the table.

use bytes::Bytes;
use herdcache_proto::{Cache, CacheConfig, Duration, ENTRY_OVERHEAD, Instant, Tier};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

struct Scenario {
    budget: u64,
    key_len: usize,
    value_len: usize,
    with_ttl: bool,
    hot_share: u64,
}

/// Fills a cache as `scenario` says and returns (heap bytes held, items, key+value bytes held).
fn fill(scenario: &Scenario) -> (u64, u64, u64) {
    let before = dhat::HeapStats::get().curr_bytes as u64;
    let mut cache = Cache::new(CacheConfig::with_max_bytes(scenario.budget));
    let capacity =
        scenario.budget / Cache::charge(&vec![0; scenario.key_len], &vec![0; scenario.value_len]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut now = Instant::ZERO;
    for step in 0..capacity * 4 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Keys drawn from twice the capacity: replaces and evictions both happen.
        let id = state % (capacity * 2).max(1);
        let mut key = format!("{id:0width$}", width = scenario.key_len).into_bytes();
        key.truncate(scenario.key_len.max(1));
        let value = vec![(step % 251) as u8; scenario.value_len];
        let tier = if step % 100 < scenario.hot_share { Tier::Hot } else { Tier::Main };
        let expires_at =
            scenario.with_ttl.then(|| now + Duration::from_millis(1_000 + state % 100_000));
        // Exact-size buffers, as a node makes them when it copies a key or value out of a read buffer.
        let (key, value) = (Bytes::copy_from_slice(&key), Bytes::copy_from_slice(&value));
        let _ = cache.insert(now, tier, key, value, expires_at);
        if step % 64 == 0 {
            now += Duration::from_millis(1);
            cache.handle_timeout(now);
        }
    }
    assert!(cache.bytes() <= scenario.budget);
    let held = dhat::HeapStats::get().curr_bytes as u64 - before;
    let payload: u64 = [Tier::Main, Tier::Hot]
        .into_iter()
        .flat_map(|tier| {
            cache.iter(tier).map(|(k, v, _)| (k.len() + v.len()) as u64).collect::<Vec<_>>()
        })
        .sum();
    (held, cache.len() as u64, payload)
}

#[test]
fn a_full_cache_allocates_no_more_than_its_budget() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut scenarios = Vec::new();
    for budget in [1 << 20, 3 << 20, (1 << 20) + 200_000] {
        for (key_len, value_len) in [(8, 0), (16, 16), (24, 100), (32, 1000)] {
            for with_ttl in [false, true] {
                for hot_share in [0, 10] {
                    scenarios.push(Scenario { budget, key_len, value_len, with_ttl, hot_share });
                }
            }
        }
    }
    println!("ENTRY_OVERHEAD = {ENTRY_OVERHEAD} bytes charged per entry");
    println!(
        "{:>9} {:>4} {:>5} {:>4} {:>4} {:>8} {:>10} {:>9} {:>8}",
        "budget", "key", "value", "ttl", "hot%", "items", "heap", "heap/bud", "ovh/item"
    );
    let mut worst: f64 = 0.0;
    for scenario in &scenarios {
        let (held, items, payload) = fill(scenario);
        let per_item = (held - payload) as f64 / items.max(1) as f64;
        worst = worst.max(per_item);
        println!(
            "{:>9} {:>4} {:>5} {:>4} {:>4} {:>8} {:>10} {:>9.3} {:>8.1}",
            scenario.budget,
            scenario.key_len,
            scenario.value_len,
            scenario.with_ttl,
            scenario.hot_share,
            items,
            held,
            held as f64 / scenario.budget as f64,
            per_item
        );
        assert!(
            held <= scenario.budget,
            "the cache holds {held} heap bytes over a budget of {}",
            scenario.budget
        );
    }
    println!("worst measured overhead per item: {worst:.1} bytes");
}
