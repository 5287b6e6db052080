//! The deterministic cluster simulation's properties (herdcache-proto's `sim`, feature `_sim`)
//! (liveness included) on the store the runtimes ship: the sharded CLOCK store of the concurrent front
//! ([`ShardedStores`]). herdcache-proto runs the same properties on its exact-LRU store; the
//! operations, invariants and properties are described in `proto-core/src/sim/`.

use herdcache_proto::StoreFactory;
use herdcache_proto::sim::strategies;
use herdcache_runtime::front::ShardedStores;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn sharded() -> Box<dyn StoreFactory> {
    Box::new(ShardedStores)
}

/// At least 256 cases, as the core's model tests; `PROPTEST_CASES` can raise it.
fn config() -> Config {
    let default = Config::default();
    Config { cases: default.cases.max(256), ..default }
}

proptest! {
    #![proptest_config(config())]

    /// Crashes, restarts, partitions, resets, membership changes and skewed or stepped clocks:
    /// every invariant holds after every step.
    #[test]
    fn cluster_invariants_hold_under_faults(seed in any::<u64>(), ops in strategies::fault_ops()) {
        strategies::cluster_invariants_hold_under_faults(sharded, seed, &ops)?;
    }

    /// Members crash, restart and are cut off long enough for liveness to find them down and
    /// back, with and without a minimum member count.
    #[test]
    fn invariants_hold_as_members_fail_and_recover(seed in any::<u64>(), majority in any::<bool>(), ops in strategies::failure_and_recovery_ops()) {
        strategies::invariants_hold_as_members_fail_and_recover(sharded, seed, majority, &ops)?;
    }

    /// Garbage and forged frames from peers.
    #[test]
    fn nodes_survive_garbage_and_forged_frames(seed in any::<u64>(), ops in strategies::garbage_ops()) {
        strategies::nodes_survive_garbage_and_forged_frames(sharded, seed, &ops)?;
    }

    /// Each key asked for is loaded exactly once on a ring that never changes.
    #[test]
    fn one_load_per_key_on_a_stable_ring(seed in any::<u64>(), ops in strategies::stable_ring_ops()) {
        strategies::one_load_per_key_on_a_stable_ring(sharded, seed, &ops)?;
    }

    /// A fourth node joins three warm ones: no key is loaded again (the handoff window).
    #[test]
    fn a_join_loads_no_key_again(seed in any::<u64>(), (before, after) in strategies::join_ops()) {
        strategies::a_join_loads_no_key_again(sharded, seed, &before, &after)?;
    }

    /// At most one load per key within each stable period across membership changes.
    #[test]
    fn one_load_per_stable_period_across_membership_changes(seed in any::<u64>(), ops in strategies::membership_change_ops()) {
        strategies::one_load_per_stable_period_across_membership_changes(sharded, seed, &ops)?;
    }
}
