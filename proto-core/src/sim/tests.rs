//! The simulation's properties on the core's exact-LRU store (herdcache-runtime runs them on
//! its sharded store), and named scenarios for membership changes and skewed clocks.

use super::strategies::{self, STEPS, value_of};
use super::*;
use crate::cache::{LruStores, StoreFactory};
use proptest::prelude::*;

fn lru() -> Box<dyn StoreFactory> {
    Box::new(LruStores)
}

proptest! {
    #![proptest_config(crate::testing::model_config())]

    /// See [`strategies::cluster_invariants_hold_under_faults`].
    #[test]
    fn cluster_invariants_hold_under_faults(seed in any::<u64>(), ops in strategies::fault_ops()) {
        strategies::cluster_invariants_hold_under_faults(lru, seed, &ops)?;
    }

    /// See [`strategies::nodes_survive_garbage_and_forged_frames`].
    #[test]
    fn nodes_survive_garbage_and_forged_frames(seed in any::<u64>(), ops in strategies::garbage_ops()) {
        strategies::nodes_survive_garbage_and_forged_frames(lru, seed, &ops)?;
    }

    /// See [`strategies::one_load_per_key_on_a_stable_ring`].
    #[test]
    fn one_load_per_key_on_a_stable_ring(seed in any::<u64>(), ops in strategies::stable_ring_ops()) {
        strategies::one_load_per_key_on_a_stable_ring(lru, seed, &ops)?;
    }

    /// See [`strategies::one_load_per_stable_period_across_membership_changes`].
    #[test]
    fn one_load_per_stable_period_across_membership_changes(seed in any::<u64>(), ops in strategies::membership_change_ops()) {
        strategies::one_load_per_stable_period_across_membership_changes(lru, seed, &ops)?;
    }
}
