//! Why the key maps use foldhash: seeded foldhash against seeded ahash on cache-key lengths.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hash::BuildHasher;
use std::hint::black_box;

fn hashers(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_hash");
    let fold = foldhash::fast::FixedState::with_seed(0x1234_5678);
    let ahash = ahash::RandomState::with_seeds(1, 2, 3, 4);
    for len in [8usize, 16, 32, 64, 256] {
        let key = vec![b'k'; len];
        group.bench_with_input(BenchmarkId::new("foldhash", len), &key, |b, key| {
            b.iter(|| fold.hash_one(black_box(key.as_slice())))
        });
        group.bench_with_input(BenchmarkId::new("ahash", len), &key, |b, key| {
            b.iter(|| ahash.hash_one(black_box(key.as_slice())))
        });
    }
    group.finish();
}

criterion_group!(benches, hashers);
criterion_main!(benches);
