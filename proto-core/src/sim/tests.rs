//! The simulation's properties on the core's exact-LRU store (herdcache-runtime runs them on
//! its sharded store), and named scenarios for membership changes and skewed clocks.

use super::strategies::{self, STEPS, value_of};
use super::*;
use crate::cache::{LruStores, StoreFactory};
use alloc::string::String;
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

    /// See [`strategies::invariants_hold_as_members_fail_and_recover`].
    #[test]
    fn invariants_hold_as_members_fail_and_recover(seed in any::<u64>(), majority in any::<bool>(), ops in strategies::failure_and_recovery_ops()) {
        strategies::invariants_hold_as_members_fail_and_recover(lru, seed, majority, &ops)?;
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

    /// See [`strategies::a_join_loads_no_key_again`].
    #[test]
    fn a_join_loads_no_key_again(seed in any::<u64>(), (before, after) in strategies::join_ops()) {
        strategies::a_join_loads_no_key_again(lru, seed, &before, &after)?;
    }

    /// See [`strategies::one_load_per_stable_period_across_membership_changes`].
    #[test]
    fn one_load_per_stable_period_across_membership_changes(seed in any::<u64>(), ops in strategies::membership_change_ops()) {
        strategies::one_load_per_stable_period_across_membership_changes(lru, seed, &ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Named scenarios: membership changes and skewed clocks.

/// A key that `owner` owns on a ring of `members`.
fn key_owned_by(sim: &Sim, owner: usize, members: &[usize]) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| sim.owner_among(key, members) == Some(owner))
        .expect("every member owns some key")
}

#[test]
fn a_crashed_node_dropped_from_the_ring_rejoins_after_its_restart() {
    let mut sim = Sim::new(SimConfig { nodes: 3, ..SimConfig::default() });
    let key = key_owned_by(&sim, 2, &[0, 1, 2]);
    let first = sim.get(0, &key);
    sim.run_until_idle(STEPS).unwrap();
    assert!(value_of(sim.reply(first)).is_some());
    assert_eq!(sim.loads_by(2), 1, "the owner loaded it");

    sim.crash(2);
    sim.set_members_everywhere(&[0, 1]);
    assert!(sim.views_agree(), "the live nodes agree the crashed node is gone");
    let without = sim.get(0, &key);
    sim.run_until_idle(STEPS).unwrap();
    assert!(value_of(sim.reply(without)).is_some());
    let interim_owner = sim.owner_among(&key, &[0, 1]).unwrap();
    assert_eq!(
        sim.loads_by(interim_owner),
        1,
        "its interim owner loaded it, no one waited on the crashed node"
    );

    sim.restart(2);
    assert!(!sim.views_agree(), "the restarted node counts itself in; the others do not yet");
    sim.set_members_everywhere(&[0, 1, 2]);
    assert!(sim.views_agree());
    let put = sim.put(1, &key);
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))));
    for node in 0..3 {
        let get = sim.get(node, &key);
        sim.run_until_idle(STEPS).unwrap();
        let value = value_of(sim.reply(get)).expect("a value");
        assert!(value.starts_with(format!("{key}=put#").as_bytes()), "node {node}: {value:?}");
    }
    assert_eq!(sim.loads_by(2), 1, "the rejoined owner holds the put; nothing reloaded it");
    sim.check().unwrap();
}

#[test]
fn expiry_crosses_the_wire_on_the_wall_clock_of_a_skewed_node() {
    let ttl = Duration::from_millis(400);
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        source_ttl: Some(ttl),
        source_delay: (Duration::from_millis(5), Duration::from_millis(5)),
        ..SimConfig::default()
    });
    let key = key_owned_by(&sim, 0, &[0, 1]);
    // The requester's clock runs 300 ms behind the owner's.
    sim.skew_clock(1, -300_000);
    let request = sim.get(1, &key);
    sim.run_until_idle(STEPS).unwrap();
    let Some(Reply::Get(Ok(value))) = sim.reply(request) else {
        panic!("{:?}", sim.reply(request))
    };
    let loaded_at = sim.clock_of(0) - Duration::from_millis(5); // the owner's clock at the load
    assert_eq!(
        value.expires_at,
        Some(loaded_at + ttl),
        "the same wall-clock expiry, read as an instant of the requester's clock"
    );
    assert!(
        value.expires_at.unwrap() > sim.clock_of(1) + ttl,
        "so it lives longer by the requester's clock"
    );
    sim.check().unwrap();
}

#[test]
fn a_clock_stepped_back_holds_only_that_nodes_deadlines() {
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        // Longer than the keyspace's read timeout (1 s): every load times out.
        source_delay: (Duration::from_secs(5), Duration::from_secs(5)),
        ..SimConfig::default()
    });
    let stepped = sim.get(0, &key_owned_by(&sim, 0, &[0, 1]));
    let steady = sim.get(1, &key_owned_by(&sim, 1, &[0, 1]));
    sim.advance(Duration::from_millis(500));
    sim.skew_clock(0, -400_000); // node 0's clock steps back 400 ms
    sim.advance(Duration::from_millis(600)); // 1.1 s
    assert!(
        matches!(sim.reply(steady), Some(Reply::Get(Err(Error::TimedOut)))),
        "{:?}",
        sim.reply(steady)
    );
    assert_eq!(sim.reply(stepped), None, "node 0 reads 0.7 s: its load has 0.3 s left");
    sim.advance(Duration::from_millis(200)); // 1.3 s: node 0 reads still 1.0 s minus 0.1 s
    assert_eq!(sim.reply(stepped), None);
    sim.advance(Duration::from_millis(200)); // 1.5 s: node 0 reads 1.1 s
    assert!(
        matches!(sim.reply(stepped), Some(Reply::Get(Err(Error::TimedOut)))),
        "{:?}",
        sim.reply(stepped)
    );
    sim.run_until_idle(STEPS).unwrap();
}

#[test]
fn a_split_view_that_heals_is_judged_again() {
    let mut sim = Sim::new(SimConfig { nodes: 3, ..SimConfig::default() });
    sim.set_members(0, alloc::vec![0, 1]);
    assert!(!sim.views_agree());
    sim.set_members(0, alloc::vec![0, 1, 2]);
    assert!(sim.views_agree(), "back to one view: staleness is judged again");
    let key = key_owned_by(&sim, 1, &[0, 1, 2]);
    let _ = sim.get(2, &key);
    sim.run_until_idle(STEPS).unwrap();
    let put = sim.put(0, &key);
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))));
    let get = sim.get(2, &key);
    sim.run_until_idle(STEPS).unwrap();
    assert!(value_of(sim.reply(get)).unwrap().starts_with(format!("{key}=put#").as_bytes()));
}

/// Found by `cluster_invariants_hold_under_faults`: node 1's clock jumps forward over the
/// deadline of a delete that waits on a partitioned owner. The node answers at its first
/// reading after the jump, which is as early as it can know; the simulation now counts that
/// reading as the deadline.
#[test]
fn a_deadline_the_clock_jumps_over_is_met_at_the_first_reading_after_it() {
    let ops = [
        Op::Delete { node: 1, key: 5 },
        Op::Get { node: 0, key: 0 },
        Op::Partition { a: 1, b: 2 },
        Op::Get { node: 0, key: 0 },
        Op::Advance { ms: 204 },
        Op::Advance { ms: 282 },
        Op::Advance { ms: 154 },
        Op::Advance { ms: 96 },
        Op::Advance { ms: 282 },
        Op::Skew { node: 1, ms: 983 },
    ];
    strategies::cluster_invariants_hold_under_faults(lru, 0, &ops).unwrap();
}
