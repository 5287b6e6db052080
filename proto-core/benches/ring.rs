//! Ring lookup cost: 3, 10 and 100 peers, both schemes, keys of a realistic length.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herdcache_proto::{Ring, RingScheme};
use std::hint::black_box;

fn ring_lookup(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("user:{i:08}")).collect();
    let mut group = c.benchmark_group("ring_lookup");
    group.throughput(Throughput::Elements(1));
    for (name, scheme) in
        [("groupcache", RingScheme::GROUPCACHE), ("balanced", RingScheme::BALANCED)]
    {
        for peers in [3usize, 10, 100] {
            let names: Vec<String> =
                (0..peers).map(|i| format!("http://10.0.{}.{}:8080", i / 250, i % 250)).collect();
            let ring = Ring::with_peers(scheme, names).expect("distinct peers");
            group.bench_with_input(BenchmarkId::new(name, peers), &ring, |b, ring| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(ring.owner(black_box(keys[i].as_bytes())))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, ring_lookup);
criterion_main!(benches);
