//! Cache get and insert: hit, miss, and insert at capacity (every insert evicts).

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herdcache_proto::{Cache, CacheConfig, Instant, Tier};
use std::hint::black_box;

const KEYS: usize = 10_000;

fn keys() -> Vec<Bytes> {
    (0..KEYS).map(|i| Bytes::from(format!("user:{i:08}"))).collect()
}

fn full_cache(keys: &[Bytes], budget: u64) -> Cache {
    let mut cache = Cache::new(CacheConfig::with_max_bytes(budget));
    let value = Bytes::from(vec![7u8; 100]);
    for key in keys {
        cache.insert(Instant::ZERO, Tier::Main, key.clone(), value.clone(), None).expect("fits");
    }
    cache
}

fn cache_ops(c: &mut Criterion) {
    let keys = keys();
    let now = Instant::from_secs(1);
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Elements(1));

    let mut cache = full_cache(&keys, 64 << 20);
    group.bench_function("get_hit", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7) % KEYS;
            black_box(cache.get(now, black_box(&keys[i])).is_some())
        });
    });
    group.bench_function("peek_hit", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7) % KEYS;
            black_box(cache.peek(now, black_box(&keys[i])).is_some())
        });
    });
    let missing: Vec<Bytes> = (0..KEYS).map(|i| Bytes::from(format!("none:{i:08}"))).collect();
    group.bench_function("get_miss", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7) % KEYS;
            black_box(cache.get(now, black_box(&missing[i])).is_some())
        });
    });
    let value = Bytes::from(vec![9u8; 100]);
    group.bench_function("insert_replace", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7) % KEYS;
            cache.insert(now, Tier::Main, keys[i].clone(), value.clone(), None)
        });
    });
    // A budget of half the keys: every insert of a key not present evicts the oldest entry.
    let half = Cache::charge(&keys[0], &value) * (KEYS as u64 / 2);
    let mut at_capacity = full_cache(&keys[..KEYS / 2], half);
    group.bench_function("insert_at_capacity", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % KEYS;
            at_capacity.insert(now, Tier::Main, keys[i].clone(), value.clone(), None)
        });
    });
    group.finish();
}

criterion_group!(benches, cache_ops);
criterion_main!(benches);
