//! Random operations for the simulation, and the properties every store is run against.
//!
//! Each property is a function of the store factory, so the crate that ships a store runs the
//! same properties on it: proto-core's own tests (`sim/tests.rs`) on the exact-LRU store,
//! herdcache-runtime's (`runtime/tests/sim.rs`) on the sharded CLOCK store its runtimes ship.
//! A failing case prints its seed and operations; replaying them with the same store
//! reproduces it exactly.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;
use proptest::prelude::*;

use super::{KEYSPACE, MAX_CLOCK_SKEW, Op, Sim, SimConfig};
use crate::cache::StoreFactory;
use crate::node::{Reply, RequestId};
use crate::time::Duration;

/// The step bound of [`Sim::run_until_idle`] in the properties.
pub const STEPS: u64 = 2_000_000;

/// Nodes in the properties' clusters.
const NODES: usize = 4;

/// Keys the properties use (`key-0` .. `key-11`).
const KEYS: u8 = 12;

/// A store factory for [`SimConfig::stores`].
pub type Stores = fn() -> Box<dyn StoreFactory>;

/// A membership change: one node's list, or everyone's. Lists are biased towards the whole
/// cluster, so that views agree again often enough for the staleness checks to apply.
pub fn membership_op() -> BoxedStrategy<Op> {
    let list = prop_oneof![
        2 => Just(0b1111u8),
        // Without one node (crashed or not), or a random subset.
        2 => (0..NODES).prop_map(|gone| 0b1111u8 & !(1 << gone)),
        1 => any::<u8>(),
    ];
    prop_oneof![
        1 => (0..NODES, list.clone()).prop_map(|(node, members)| Op::SetMembers { node, members }),
        2 => list.prop_map(|members| Op::SetMembersAll { members }),
    ]
    .boxed()
}

/// A node's clock set ahead of or behind the others, within [`MAX_CLOCK_SKEW`] (a value
/// lower than its current skew steps it backwards).
fn skew_op() -> BoxedStrategy<Op> {
    let bound = MAX_CLOCK_SKEW.as_millis() as i16;
    prop_oneof![
        3 => (0..NODES, -bound..=bound).prop_map(|(node, ms)| Op::Skew { node, ms }),
        1 => (0..NODES).prop_map(|node| Op::Skew { node, ms: 0 }),
    ]
    .boxed()
}

/// A node's clock stepping backwards, by up to half the skew bound.
fn step_back_op() -> BoxedStrategy<Op> {
    let most = (MAX_CLOCK_SKEW.as_millis() / 2) as u16;
    (0..NODES, 1..=most).prop_map(|(node, ms)| Op::StepBack { node, ms }).boxed()
}

/// A clock skew or step: a node's clock set ahead of or behind the others, or stepped
/// backwards.
pub fn clock_op() -> BoxedStrategy<Op> {
    prop_oneof![2 => skew_op(), 1 => step_back_op()].boxed()
}

/// Gets, batch gets, writes and clock advances; with `faults`, also crashes, restarts,
/// partitions, resets, membership changes and skewed clocks.
pub fn op_strategy(faults: bool) -> BoxedStrategy<Op> {
    let nodes = 0..NODES;
    let key = 0..KEYS;
    let base = prop_oneof![
        8 => (nodes.clone(), key.clone()).prop_map(|(node, key)| Op::Get { node, key }),
        2 => (nodes.clone(), proptest::collection::vec(key.clone(), 1..6)).prop_map(|(node, keys)| Op::GetMany { node, keys }),
        2 => (nodes.clone(), key.clone()).prop_map(|(node, key)| Op::Put { node, key }),
        2 => (nodes.clone(), key.clone()).prop_map(|(node, key)| Op::Delete { node, key }),
        1 => nodes.clone().prop_map(|node| Op::DeleteKeyspace { node }),
        4 => prop_oneof![(0u16..30).prop_map(|ms| Op::Advance { ms }), (0u16..300).prop_map(|ms| Op::Advance { ms })],
    ];
    if !faults {
        return base.boxed();
    }
    prop_oneof![
        16 => base,
        1 => nodes.clone().prop_map(|node| Op::Crash { node }),
        1 => nodes.clone().prop_map(|node| Op::Restart { node }),
        1 => (nodes.clone(), nodes).prop_map(|(a, b)| Op::Partition { a, b }),
        1 => Just(Op::Heal),
        1 => any::<usize>().prop_map(|pick| Op::Reset { pick }),
        2 => membership_op(),
        2 => clock_op(),
    ]
    .boxed()
}

/// A well-formed frame a lying or confused peer might send: replies to ids never asked, hellos
/// mid-stream, writes, drops, pings.
pub fn forged_frame() -> impl Strategy<Value = Vec<u8>> {
    use crate::wire::{Found, GetOutcome, KeyRate, Message, WireLimits};
    let key = prop_oneof![Just(Bytes::from_static(b"key-1")), Just(Bytes::from_static(b"key-2"))];
    let message = prop_oneof![
        (key.clone(), any::<u8>()).prop_map(|(key, n)| Message::Get {
            keyspace: Bytes::from_static(KEYSPACE),
            key,
            timeout_ms: u32::from(n)
        }),
        any::<u8>().prop_map(|n| Message::GetReply(GetOutcome::Found(Found {
            value: Bytes::from(alloc::vec![n; 3]),
            expires_at: None,
            key_rate: KeyRate::from_per_second(f64::from(n)),
        }))),
        key.clone().prop_map(|key| Message::DropHot {
            keyspace: Bytes::from_static(KEYSPACE),
            keys: alloc::vec![key]
        }),
        key.prop_map(|key| Message::Delete { keyspace: Bytes::from_static(KEYSPACE), key }),
        Just(Message::Ping),
        Just(Message::Leaving),
        Just(Message::Ack(Ok(()))),
        Just(Message::Hello {
            protocol_version: 1,
            cluster: Bytes::from_static(b"sim"),
            node_id: Bytes::from_static(b"node-9"),
            nonce: None,
        }),
        Just(Message::HelloProof { mac: [7; 32] }),
    ];
    (message, 0u64..40).prop_map(|(message, request_id)| {
        let mut out = Vec::new();
        message
            .encode(request_id, &mut out, &WireLimits::default())
            .expect("small frames fit the limits");
        out
    })
}

/// Applies `ops`, checking the invariants after each, then heals and runs until idle.
pub fn run_ops(config: SimConfig, ops: &[Op]) -> Result<Sim, String> {
    let seed = config.seed;
    let mut sim = Sim::new(config);
    for op in ops {
        sim.apply(op);
        sim.check().map_err(|e| format!("seed {seed}: {e}"))?;
    }
    sim.heal();
    sim.run_until_idle(STEPS).map_err(|e| format!("seed {seed}: {e}"))?;
    Ok(sim)
}

/// Operations for [`cluster_invariants_hold_under_faults`].
pub fn fault_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(true), 1..120)
}

/// Random operations with crashes, restarts, partitions, resets, membership changes (split
/// views, a crashed node dropped and taken back) and skewed or stepped clocks over 4 nodes, a
/// source that fails 5 % of the time and expires values: every invariant holds after every
/// step.
pub fn cluster_invariants_hold_under_faults(
    stores: Stores,
    seed: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let config = SimConfig {
        nodes: NODES,
        seed,
        source_failures_per_mille: 50,
        source_delay: (Duration::from_millis(1), Duration::from_millis(150)),
        source_ttl: Some(Duration::from_millis(400)),
        max_bytes: 4_000,
        // Mirror readily, so that hot copies exist for writes to invalidate.
        hot_threshold_per_second: 0.5,
        stores,
        ..SimConfig::default()
    };
    run_ops(config, ops).map(drop).map_err(TestCaseError::fail)
}

/// Operations for [`invariants_hold_as_members_fail_and_recover`]: members crash without a
/// goodbye, come back, and are cut off, with time enough between them for liveness to find
/// them down (seconds) and back, among gets and writes.
pub fn failure_and_recovery_ops() -> impl Strategy<Value = Vec<Op>> {
    let nodes = 0..NODES;
    let key = 0..8u8;
    let op = prop_oneof![
        8 => (nodes.clone(), key.clone()).prop_map(|(node, key)| Op::Get { node, key }),
        2 => (nodes.clone(), proptest::collection::vec(key.clone(), 1..4)).prop_map(|(node, keys)| Op::GetMany { node, keys }),
        4 => (nodes.clone(), key.clone()).prop_map(|(node, key)| Op::Put { node, key }),
        2 => (nodes.clone(), key).prop_map(|(node, key)| Op::Delete { node, key }),
        3 => (0u16..100).prop_map(|ms| Op::Advance { ms }),
        3 => (500u16..1_001).prop_map(|ms| Op::Advance { ms }),
        1 => nodes.clone().prop_map(|node| Op::Crash { node }),
        1 => nodes.clone().prop_map(|node| Op::Restart { node }),
        1 => (nodes.clone(), nodes).prop_map(|(a, b)| Op::Partition { a, b }),
        1 => Just(Op::Heal),
    ];
    proptest::collection::vec(op, 1..150)
}

/// Members crash, restart and are cut off long enough to be found down and back (liveness
/// changes the rings by itself), with no minimum member count or with a majority of the 4
/// (`min_members_majority`: writes refused and copies dropped short of it): every invariant
/// holds after every step — among them, no get issued after a write was acknowledged while a
/// member was down returns a value older than the write, and the crashed member's return
/// serves nothing stale.
pub fn invariants_hold_as_members_fail_and_recover(
    stores: Stores,
    seed: u64,
    min_members_majority: bool,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let liveness = crate::node::LivenessConfig {
        min_members: if min_members_majority { NODES / 2 + 1 } else { 1 },
        ..crate::node::LivenessConfig::default()
    };
    let config = SimConfig {
        nodes: NODES,
        seed,
        source_delay: (Duration::from_millis(1), Duration::from_millis(50)),
        max_bytes: 8_000,
        hot_threshold_per_second: 0.5,
        liveness,
        stores,
        ..SimConfig::default()
    };
    run_ops(config, ops).map(drop).map_err(TestCaseError::fail)
}

/// Operations for [`nodes_survive_garbage_and_forged_frames`].
pub fn garbage_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            6 => op_strategy(false),
            1 => (0..NODES, any::<usize>(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(node, pick, data)| Op::Inject { node, pick, data }),
            1 => (0..NODES, any::<usize>(), forged_frame()).prop_map(|(node, pick, data)| Op::Inject { node, pick, data }),
        ],
        1..80,
    )
}

/// Peers that send garbage or forged frames: no node panics, every request is still
/// answered by its deadline, budgets hold, and only the offending connections close.
pub fn nodes_survive_garbage_and_forged_frames(
    stores: Stores,
    seed: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let config = SimConfig { nodes: NODES, seed, stores, ..SimConfig::default() };
    run_ops(config, ops).map(drop).map_err(TestCaseError::fail)
}

/// Operations for [`one_load_per_key_on_a_stable_ring`]: the nodes' clocks skewed at the
/// start, then gets, short advances and clocks stepping backwards. (A clock jumping forward
/// mid-run fires that node's timeouts early, as a slow peer would, which may legitimately
/// reload a key; the fault properties have those.)
pub fn stable_ring_ops() -> impl Strategy<Value = Vec<Op>> {
    let get = (0..NODES, 0..KEYS, 0u16..5)
        .prop_map(|(node, key, ms)| alloc::vec![Op::Get { node, key }, Op::Advance { ms }]);
    let step_back = step_back_op().prop_map(|op| alloc::vec![op]);
    let skews = proptest::collection::vec(skew_op(), 0..=NODES);
    let steps = proptest::collection::vec(prop_oneof![8 => get, 1 => step_back], 1..120);
    (skews, steps)
        .prop_map(|(skews, steps)| skews.into_iter().chain(steps.into_iter().flatten()).collect())
}

/// On a ring that never changes, with no faults and no writes, expiry or eviction, each key
/// asked for is loaded exactly once, however the gets are spread and however the nodes'
/// clocks disagree or step back.
pub fn one_load_per_key_on_a_stable_ring(
    stores: Stores,
    seed: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let config = SimConfig { nodes: NODES, seed, stores, ..SimConfig::default() };
    let sim = run_ops(config, ops).map_err(TestCaseError::fail)?;
    for key in 0..KEYS {
        let asked = ops.iter().any(|op| matches!(op, Op::Get { key: k, .. } if *k == key));
        let loads = sim.loads(&format!("key-{key}"));
        prop_assert_eq!(
            loads,
            u64::from(asked),
            "seed {}: key-{} loaded {} times",
            seed,
            key,
            loads
        );
    }
    prop_assert!(sim.reloads_on_a_stable_ring().is_empty());
    Ok(())
}

/// One step of [`one_load_per_stable_period_across_membership_changes`]: an operation, run
/// after the cluster comes to rest or not.
pub type SettledOp = (Op, bool);

/// Operations for [`one_load_per_stable_period_across_membership_changes`]: gets, short
/// advances, cluster-wide membership changes and skewed clocks, some after the cluster came
/// to rest (so that stable periods begin).
pub fn membership_change_ops() -> impl Strategy<Value = Vec<SettledOp>> {
    let get = (0..NODES, 0..KEYS).prop_map(|(node, key)| Op::Get { node, key });
    let advance = (0u16..5).prop_map(|ms| Op::Advance { ms });
    let members = prop_oneof![
        1 => Just(0b1111u8),
        2 => (0..NODES).prop_map(|gone| 0b1111u8 & !(1 << gone)),
        1 => 1u8..16,
    ]
    .prop_map(|members| Op::SetMembersAll { members });
    let op = prop_oneof![8 => get, 4 => advance, 1 => members, 1 => clock_op()];
    proptest::collection::vec((op, proptest::bool::weighted(0.1)), 1..160)
}

/// Membership changes, in mid-flight or at rest, with no faults and no writes, expiry or
/// eviction: within each stable period (every live node's ring the same, begun at rest;
/// see [`Sim::reloads_on_a_stable_ring`]) each key is loaded at most once, and every
/// invariant holds after every step.
pub fn one_load_per_stable_period_across_membership_changes(
    stores: Stores,
    seed: u64,
    ops: &[SettledOp],
) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(SimConfig { nodes: NODES, seed, stores, ..SimConfig::default() });
    for (op, settle_first) in ops {
        if *settle_first {
            sim.run_until_idle(STEPS)
                .map_err(|e| TestCaseError::fail(format!("seed {seed}: {e}")))?;
        }
        sim.apply(op);
        sim.check().map_err(|e| TestCaseError::fail(format!("seed {seed}: {e}")))?;
    }
    sim.run_until_idle(STEPS).map_err(|e| TestCaseError::fail(format!("seed {seed}: {e}")))?;
    let reloads = sim.reloads_on_a_stable_ring();
    prop_assert!(reloads.is_empty(), "seed {}: loaded again on a stable ring: {:?}", seed, reloads);
    Ok(())
}

/// Gets before a join, (node, key), and after it, (node, key, then milliseconds to advance).
pub type JoinOps = (Vec<(usize, u8)>, Vec<(usize, u8, u16)>);

/// Operations for [`a_join_loads_no_key_again`]: gets at the first three nodes before the
/// fourth joins, then gets anywhere (with short advances) after.
pub fn join_ops() -> impl Strategy<Value = JoinOps> {
    let before = proptest::collection::vec((0..NODES - 1, 0..KEYS), 0..40);
    let after = proptest::collection::vec((0..NODES, 0..KEYS, 0u16..5), 1..60);
    (before, after)
}

/// Three warm nodes, then a fourth joins (every node gets the new member list; it starts with
/// it) and gets go anywhere, concurrently: with the handoff window (on by default) no key is
/// loaded again — the keys that moved to the new node are peeked at their previous owners, or
/// served from the copies those kept — and each key first asked after the join is loaded once.
/// Every invariant holds after every step.
pub fn a_join_loads_no_key_again(
    stores: Stores,
    seed: u64,
    before: &[(usize, u8)],
    after: &[(usize, u8, u16)],
) -> Result<(), TestCaseError> {
    let fail = |e: String| TestCaseError::fail(format!("seed {seed}: {e}"));
    let mut sim = Sim::new(SimConfig { nodes: NODES, seed, stores, ..SimConfig::default() });
    let joiner = NODES - 1;
    let staying: Vec<usize> = (0..joiner).collect();
    let everyone: Vec<usize> = (0..NODES).collect();
    sim.crash(joiner);
    sim.set_members_everywhere(&staying);
    for &(node, key) in before {
        sim.apply(&Op::Get { node, key });
        sim.check().map_err(fail)?;
    }
    sim.run_until_idle(STEPS).map_err(fail)?;
    sim.set_members(joiner, everyone.clone());
    sim.restart(joiner);
    for node in 0..joiner {
        sim.set_members(node, everyone.clone());
    }
    // One heartbeat: the members dial each other.
    sim.advance(Duration::from_millis(300));
    for &(node, key, ms) in after {
        sim.apply(&Op::Get { node, key });
        sim.apply(&Op::Advance { ms });
        sim.check().map_err(fail)?;
    }
    sim.run_until_idle(STEPS).map_err(fail)?;
    for key in 0..KEYS {
        let asked =
            before.iter().any(|&(_, k)| k == key) || after.iter().any(|&(_, k, _)| k == key);
        let loads = sim.loads(&format!("key-{key}"));
        prop_assert_eq!(
            loads,
            u64::from(asked),
            "seed {}: key-{} loaded {} times",
            seed,
            key,
            loads
        );
    }
    Ok(())
}

/// The reply's value, if it is a get's value.
#[must_use]
pub fn value_of(reply: Option<&Reply>) -> Option<Bytes> {
    match reply {
        Some(Reply::Get(Ok(value))) => Some(value.bytes.clone()),
        _ => None,
    }
}

/// Whether every request in `requests` got a value.
#[must_use]
pub fn all_have_values(sim: &Sim, requests: &[RequestId]) -> bool {
    requests.iter().all(|request| value_of(sim.reply(*request)).is_some())
}
