//! Arbitrary operations, peer bytes, membership changes and clock skews and steps against real
//! Nodes in the deterministic cluster simulation: no panic, and every invariant the simulation
//! checks holds (values come from the source or a put, nothing expired or stale is served,
//! every request is answered by its deadline, budgets hold). Injected bytes (garbage or forged
//! frames) make peers liars, so from then on values are not judged, but everything else still
//! is. The nodes keep their entries in the core's exact-LRU store; the proptests of
//! herdcache-runtime (`runtime/tests/sim.rs`) run the same operations on the sharded store the
//! runtimes ship.
#![no_main]

use arbitrary::Arbitrary;
use herdcache_proto::Duration;
use herdcache_proto::sim::{Op, Sim, SimConfig};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    nodes: u8,
    source_failures_per_mille: u8,
    ttl_ms: Option<u16>,
    ops: Vec<Op>,
}

const MAX_NODES: usize = 4;
const MAX_OPS: usize = 200;

fuzz_target!(|input: Input| {
    let config = SimConfig {
        nodes: usize::from(input.nodes) % MAX_NODES + 1,
        seed: input.seed,
        source_failures_per_mille: u32::from(input.source_failures_per_mille) * 4,
        source_ttl: input.ttl_ms.map(|ms| Duration::from_millis(u64::from(ms % 2_000) + 1)),
        source_delay: (Duration::from_millis(1), Duration::from_millis(100)),
        max_bytes: 4_000,
        hot_threshold_per_second: 0.5,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config);
    for op in input.ops.iter().take(MAX_OPS) {
        sim.apply(op);
        if let Err(violation) = sim.check() {
            panic!("invariant violated: {violation}\nops: {:?}", input.ops);
        }
    }
    sim.heal();
    if let Err(violation) = sim.run_until_idle(1_000_000) {
        panic!("invariant violated at the end: {violation}\nops: {:?}", input.ops);
    }
});
