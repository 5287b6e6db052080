//! Arbitrary operations, peer bytes and clock steps against real Nodes in the deterministic
//! cluster simulation: no panic, and every invariant the simulation checks holds (values come
//! from the source or a put, nothing expired or stale is served, every request is answered by
//! its deadline, budgets hold). Injected bytes (garbage or forged frames) make peers liars, so
//! from then on values are not judged, but everything else still is.
#![no_main]

use arbitrary::Arbitrary;
use herdcache_proto::Duration;
use herdcache_proto::sim::{Sim, SimConfig};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Get { node: u8, key: u8 },
    GetMany { node: u8, keys: Vec<u8> },
    Put { node: u8, key: u8 },
    Delete { node: u8, key: u8 },
    DeleteKeyspace { node: u8 },
    Advance { ms: u16 },
    Crash { node: u8 },
    Restart { node: u8 },
    Partition { a: u8, b: u8 },
    Heal,
    Reset { pick: u16 },
    Inject { node: u8, pick: u8, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    nodes: u8,
    source_failures_per_mille: u8,
    ttl_ms: Option<u16>,
    ops: Vec<Op>,
}

const NODES: usize = 4;
const KEYS: u8 = 16;
const MAX_OPS: usize = 200;

fuzz_target!(|input: Input| {
    let nodes = usize::from(input.nodes) % NODES + 1;
    let config = SimConfig {
        nodes,
        seed: input.seed,
        source_failures_per_mille: u32::from(input.source_failures_per_mille) * 4,
        source_ttl: input.ttl_ms.map(|ms| Duration::from_millis(u64::from(ms % 2_000) + 1)),
        source_delay: (Duration::from_millis(1), Duration::from_millis(100)),
        max_bytes: 4_000,
        hot_threshold_per_second: 0.5,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config);
    let node = |n: u8| usize::from(n) % nodes;
    let key = |k: u8| format!("key-{}", k % KEYS);
    for op in input.ops.iter().take(MAX_OPS) {
        match op {
            Op::Get { node: n, key: k } => {
                sim.get(node(*n), &key(*k));
            }
            Op::GetMany { node: n, keys } => {
                let keys: Vec<String> = keys.iter().take(8).map(|k| key(*k)).collect();
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                sim.get_many(node(*n), &refs);
            }
            Op::Put { node: n, key: k } => {
                sim.put(node(*n), &key(*k));
            }
            Op::Delete { node: n, key: k } => {
                sim.delete(node(*n), &key(*k));
            }
            Op::DeleteKeyspace { node: n } => {
                sim.delete_keyspace(node(*n));
            }
            Op::Advance { ms } => sim.advance(Duration::from_millis(u64::from(*ms % 1_000))),
            Op::Crash { node: n } => sim.crash(node(*n)),
            Op::Restart { node: n } => sim.restart(node(*n)),
            Op::Partition { a, b } if node(*a) != node(*b) => sim.partition(node(*a), node(*b)),
            Op::Partition { .. } => {}
            Op::Heal => sim.heal(),
            Op::Reset { pick } => sim.reset_connection(usize::from(*pick)),
            Op::Inject { node: n, pick, bytes } => sim.inject(node(*n), usize::from(*pick), bytes),
        }
        if let Err(violation) = sim.check() {
            panic!("invariant violated: {violation}\nops: {:?}", input.ops);
        }
    }
    sim.heal();
    if let Err(violation) = sim.run_until_idle(1_000_000) {
        panic!("invariant violated at the end: {violation}\nops: {:?}", input.ops);
    }
});
