//! The Node in the deterministic cluster simulation: named scenarios (the random operations
//! and their properties are in `sim/strategies.rs`).

use super::*;
use crate::sim::{KEYSPACE, Sim, SimConfig};
use alloc::format;
use alloc::string::String;

const STEPS: u64 = 2_000_000;

fn value_of(reply: Option<&Reply>) -> Option<Bytes> {
    match reply {
        Some(Reply::Get(Ok(value))) => Some(value.bytes.clone()),
        _ => None,
    }
}

#[test]
fn stampede_loads_once() {
    let mut sim = Sim::new(SimConfig { nodes: 3, ..SimConfig::default() });
    let requests: Vec<RequestId> = (0..1_000).map(|i| sim.get(i % 3, "cold-key")).collect();
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.loads("cold-key"), 1, "exactly one data-source load for the whole cluster");
    let first = value_of(sim.reply(requests[0])).expect("a value");
    for request in requests {
        assert_eq!(
            value_of(sim.reply(request)).as_ref(),
            Some(&first),
            "every caller gets the same bytes"
        );
    }
}

#[test]
fn owner_crash_mid_flight_answers_every_get() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        source_delay: (Duration::from_millis(50), Duration::from_millis(60)),
        ..SimConfig::default()
    });
    let key = "crash-key";
    let owner = sim.owner(key).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&n| n != owner).collect();
    let requests: Vec<RequestId> = (0..30).map(|i| sim.get(survivors[i % 2], key)).collect();
    sim.advance(Duration::from_millis(20)); // the owner's load is in flight
    assert_eq!(sim.loads_by(owner), 1);
    sim.crash(owner);
    sim.run_until_idle(STEPS).unwrap();
    for request in &requests {
        assert!(value_of(sim.reply(*request)).is_some(), "{:?}", sim.reply(*request));
    }
    let survivor_loads: u64 = survivors.iter().map(|&n| sim.loads_by(n)).sum();
    assert!(
        survivor_loads <= survivors.len() as u64,
        "{survivor_loads} loads by {} survivors",
        survivors.len()
    );
}

#[test]
fn split_view_neither_loops_nor_waits_on_itself() {
    let mut sim = Sim::new(SimConfig { nodes: 3, ..SimConfig::default() });
    // Node 0 believes the cluster is {0, 1}; node 1 believes {1, 2}; node 2 sees all three.
    sim.set_members(0, alloc::vec![0, 1]);
    sim.set_members(1, alloc::vec![1, 2]);
    let mut requests = Vec::new();
    for i in 0..60 {
        requests.push(sim.get(i % 3, &format!("split-{}", i % 20)));
    }
    sim.run_until_idle(STEPS).unwrap();
    for request in requests {
        assert!(
            value_of(sim.reply(request)).is_some(),
            "answered with a value: {:?}",
            sim.reply(request)
        );
    }
    // Loads are bounded by nodes per key, never a loop.
    for i in 0..20 {
        assert!(sim.loads(&format!("split-{i}")) <= 3);
    }
}

#[test]
fn delete_racing_a_load_leaves_no_stale_value() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        source_delay: (Duration::from_millis(40), Duration::from_millis(40)),
        ..SimConfig::default()
    });
    let key = "raced";
    let early = sim.get(1, key);
    sim.advance(Duration::from_millis(10)); // the load has started
    let delete = sim.delete(2, key);
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(delete), Some(&Reply::Write(Ok(()))));
    let stale = value_of(sim.reply(early)).expect("the early get is answered");
    let after: Vec<RequestId> = (0..3).map(|n| sim.get(n, key)).collect();
    sim.run_until_idle(STEPS).unwrap(); // the simulation's invariants check staleness too
    for request in after {
        let value = value_of(sim.reply(request)).expect("reloaded");
        assert_ne!(value, stale, "the load that raced the delete was not cached");
    }
}

#[test]
fn put_then_get_from_every_node_sees_the_put() {
    let mut sim = Sim::new(SimConfig { nodes: 5, ..SimConfig::default() });
    for i in 0..20 {
        let key = format!("put-{i}");
        let _ = sim.get(i % 5, &key); // something cached first, so the put must replace it
    }
    sim.run_until_idle(STEPS).unwrap();
    let puts: Vec<RequestId> = (0..20).map(|i| sim.put((i + 2) % 5, &format!("put-{i}"))).collect();
    sim.run_until_idle(STEPS).unwrap();
    for put in &puts {
        assert_eq!(sim.reply(*put), Some(&Reply::Write(Ok(()))));
    }
    for i in 0..20 {
        for node in 0..5 {
            let request = sim.get(node, &format!("put-{i}"));
            sim.run_until_idle(STEPS).unwrap();
            let value = value_of(sim.reply(request)).unwrap();
            assert!(value.as_ref().starts_with(format!("put-{i}=put#").as_bytes()), "{value:?}");
        }
    }
}

#[test]
fn delete_keyspace_clears_every_node() {
    let mut sim =
        Sim::new(SimConfig { nodes: 3, hot_threshold_per_second: 0.1, ..SimConfig::default() });
    for round in 0..3 {
        for i in 0..10 {
            sim.get((i + round) % 3, &format!("ks-{i}"));
        }
        sim.run_until_idle(STEPS).unwrap();
    }
    assert_eq!(sim.total_loads(), 10);
    let delete = sim.delete_keyspace(1);
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(delete), Some(&Reply::Write(Ok(()))));
    for node in 0..3 {
        let stats = sim.node(node).unwrap().keyspace_stats(KEYSPACE).unwrap();
        assert_eq!(stats.cache.main.items + stats.cache.hot.items, 0, "node {node} kept data");
    }
    for i in 0..10 {
        sim.get(i % 3, &format!("ks-{i}"));
    }
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.total_loads(), 20, "every key reloaded once");
}

#[test]
fn batch_gets_group_keys_by_owner() {
    use crate::wire::FrameKind;
    let mut sim = Sim::new(SimConfig { nodes: 3, ..SimConfig::default() });
    let keys: Vec<String> = (0..30).map(|i| format!("batch-{i}")).collect();
    let owners: Vec<usize> = keys.iter().map(|key| sim.owner(key).unwrap()).collect();
    let owned = |node| owners.iter().filter(|&&owner| owner == node).count() as u64;
    assert!((0..3).all(|node| owned(node) > 0), "every node owns some of the keys");
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let request = sim.get_many(0, &refs);
    sim.run_until_idle(STEPS).unwrap();
    let Some(Reply::GetMany(results)) = sim.reply(request) else { panic!("a batch reply") };
    assert_eq!(results.len(), 30);
    for (key, result) in keys.iter().zip(results) {
        let value = result.as_ref().unwrap();
        assert!(value.bytes.starts_with(key.as_bytes()));
        assert_eq!(sim.loads(key), 1);
        let path = if sim.owner(key) == Some(0) { Path::Load } else { Path::PeerFetch };
        assert_eq!(value.path, path, "{key}");
    }
    // One message per remote owner, carrying all its keys; each owner loaded its own keys.
    for owner in 1..3 {
        assert_eq!(sim.frames_sent(0, owner, FrameKind::GetMany), 1, "one batch to {owner}");
        assert_eq!(sim.frames_sent(0, owner, FrameKind::Get), 0, "no single gets to {owner}");
    }
    for node in 0..3 {
        assert_eq!(sim.loads_by(node), owned(node), "node {node} loaded the keys it owns");
    }
}

/// Found in review: a batch over `max_batch` keys for one owner could not be encoded, and a
/// made-up reply went out under the call's id. Batches are now cut to the wire limits.
#[test]
fn batches_larger_than_the_wire_limit_are_split() {
    let mut sim = Sim::new(SimConfig { nodes: 2, ..SimConfig::default() });
    let keys: Vec<String> = (0..3_000).map(|i| format!("many-{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let request = sim.get_many(0, &refs);
    sim.run_until_idle(STEPS).unwrap(); // a refused frame would be a violation
    let Some(Reply::GetMany(results)) = sim.reply(request) else { panic!("a batch reply") };
    assert_eq!(results.len(), 3_000);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(sim.total_loads(), 3_000);
    let stats = sim.node(0).unwrap().keyspace_stats(KEYSPACE).unwrap();
    assert_eq!(stats.peer_errors, 0, "no fetch failed: every part was fetched from its owner");
}

#[test]
fn an_oversized_batch_reply_sheds_its_largest_values_as_overloaded() {
    use crate::wire::{Found, GetOutcome, KeyRate, Message, WireLimits};
    let limits = WireLimits { max_frame: 1_000, max_value: 600, ..WireLimits::default() };
    let found = |len| {
        GetOutcome::Found(Found {
            value: Bytes::from(alloc::vec![7; len]),
            expires_at: None,
            key_rate: KeyRate::ZERO,
        })
    };
    let reply = Message::GetManyReply(alloc::vec![found(500), found(100), found(450)]);
    let Message::GetManyReply(outcomes) = super::fit_reply(reply, &limits) else {
        panic!("same kind")
    };
    assert!(matches!(&outcomes[0], GetOutcome::Failed(e) if e.code == ErrorCode::Overloaded));
    assert!(matches!(outcomes[1], GetOutcome::Found(_)));
    assert!(matches!(outcomes[2], GetOutcome::Found(_)), "only as many as needed are shed");
    assert!(Message::GetManyReply(outcomes).checked_len(&limits).is_ok());
}

#[test]
fn hot_keys_are_mirrored_by_requesters() {
    let mut sim =
        Sim::new(SimConfig { nodes: 3, hot_threshold_per_second: 1.0, ..SimConfig::default() });
    let key = "hot";
    let requester = (0..3).find(|&n| Some(n) != sim.owner(key)).unwrap();
    for _ in 0..200 {
        let _ = sim.get(requester, key);
        sim.run_until_idle(STEPS).unwrap();
        sim.advance(Duration::from_millis(20));
    }
    let stats = sim.node(requester).unwrap().keyspace_stats(KEYSPACE).unwrap();
    assert!(stats.hot_hits > 100, "{stats:?}");
    assert_eq!(sim.total_loads(), 1);
}

#[test]
fn failing_source_opens_the_breaker_and_errors_are_distinct() {
    let mut sim =
        Sim::new(SimConfig { nodes: 1, source_failures_per_mille: 1_000, ..SimConfig::default() });
    let mut errors = Vec::new();
    for i in 0..10 {
        let request = sim.get(0, &format!("k{i}"));
        sim.run_until_idle(STEPS).unwrap();
        errors.push(sim.reply(request).cloned());
    }
    assert!(matches!(errors[0], Some(Reply::Get(Err(Error::DataSource(_))))));
    assert!(matches!(errors[9], Some(Reply::Get(Err(Error::CircuitOpen)))), "{:?}", errors[9]);
    assert_eq!(sim.total_loads(), 5, "the breaker opened after 5 consecutive failures");
}

#[test]
fn expired_values_are_reloaded() {
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        source_ttl: Some(Duration::from_millis(100)),
        ..SimConfig::default()
    });
    let first = sim.get(0, "ttl");
    sim.run_until_idle(STEPS).unwrap();
    sim.advance(Duration::from_millis(150));
    let second = sim.get(1, "ttl");
    sim.run_until_idle(STEPS).unwrap();
    assert_ne!(value_of(sim.reply(first)), value_of(sim.reply(second)));
    assert_eq!(sim.loads("ttl"), 2);
}

/// Found by the simulation: an owner's reply stalled in a partition arrived after the value's
/// expiry, and the requester served it.
#[test]
fn a_value_that_expires_in_transit_is_not_served() {
    let mut sim = Sim::new(SimConfig {
        nodes: 2,
        source_ttl: Some(Duration::from_millis(100)),
        source_delay: (Duration::from_millis(5), Duration::from_millis(5)),
        ..SimConfig::default()
    });
    let key = "in-transit";
    let owner = sim.owner(key).unwrap();
    let requester = 1 - owner;
    let first = sim.get(owner, key);
    sim.run_until_idle(STEPS).unwrap();
    sim.advance(Duration::from_millis(50));
    sim.partition(owner, requester);
    let late = sim.get(requester, key); // the owner's answer (expiring at 105 ms) stalls
    sim.advance(Duration::from_millis(100));
    sim.heal();
    sim.run_until_idle(STEPS).unwrap();
    let value = value_of(sim.reply(late)).expect("answered with a fresh load");
    assert_ne!(Some(value), value_of(sim.reply(first)));
}

/// Found by the simulation: a batch answered when its last part came in carried an earlier
/// part whose value had expired meanwhile.
#[test]
fn a_batch_part_that_expires_while_the_batch_waits_is_fetched_again() {
    let mut sim = Sim::new(SimConfig {
        nodes: 1,
        source_ttl: Some(Duration::from_millis(400)),
        source_delay: (Duration::from_millis(150), Duration::from_millis(150)),
        ..SimConfig::default()
    });
    let first = sim.get(0, "a"); // loaded at 0, arrives at 150 ms, expires at 400 ms
    sim.run_until_idle(STEPS).unwrap();
    sim.advance(Duration::from_millis(150));
    // At 300 ms "a" hits; "b" arrives at 450 ms, when "a" has expired: "a" is loaded again.
    let batch = sim.get_many(0, &["a", "b"]);
    sim.run_until_idle(STEPS).unwrap();
    let Some(Reply::GetMany(results)) = sim.reply(batch) else { panic!("a batch reply") };
    let a = results[0].as_ref().unwrap();
    assert!(a.expires_at.unwrap() > sim.now() - Duration::from_millis(1));
    assert_ne!(Some(a.bytes.clone()), value_of(sim.reply(first)), "\"a\" was fetched again");
    assert_eq!(sim.loads("a"), 2);
}

/// Found by the simulation: when loads are slower than the TTL, two parts of a batch kept
/// expiring each other until the deadline, which then delivered expired values.
#[test]
fn batch_parts_that_keep_expiring_time_out_instead_of_serving_stale_values() {
    let mut sim = Sim::new(SimConfig {
        nodes: 1,
        source_ttl: Some(Duration::from_millis(200)),
        source_delay: (Duration::from_millis(150), Duration::from_millis(150)),
        ..SimConfig::default()
    });
    sim.get(0, "a");
    sim.run_until_idle(STEPS).unwrap();
    let batch = sim.get_many(0, &["a", "b"]);
    sim.run_until_idle(STEPS).unwrap(); // the simulation rejects any expired value delivered
    let Some(Reply::GetMany(results)) = sim.reply(batch) else { panic!("a batch reply") };
    assert!(results.iter().any(|r| matches!(r, Err(Error::TimedOut))), "{results:?}");
    assert!(sim.now() < Instant::from_secs(1), "answered long before the deadline");
}

// ---------------------------------------------------------------------------------------------
// Direct Node tests: connections, hello, garbage, leave, warmup, limiter.

fn node(id: &str, cluster: &str) -> Node {
    let config = NodeConfig::new(
        Bytes::copy_from_slice(id.as_bytes()),
        Bytes::copy_from_slice(cluster.as_bytes()),
    )
    .with_keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20));
    Node::new(config, Instant::ZERO).unwrap()
}

fn drain(node: &mut Node) -> Vec<Output> {
    core::iter::from_fn(|| node.poll_output()).collect()
}

#[test]
fn garbage_on_a_connection_closes_only_that_connection() {
    let mut n = node("a", "c");
    n.handle_input(Instant::ZERO, Input::Accepted { conn: ConnId(1) }).unwrap();
    n.handle_input(Instant::ZERO, Input::Accepted { conn: ConnId(2) }).unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &[0xff; 64] }).unwrap();
    let outputs = drain(&mut n);
    assert!(outputs.contains(&Output::Close { conn: ConnId(1) }), "{outputs:?}");
    assert!(
        outputs.iter().any(|o| matches!(o, Output::Transmit { conn: ConnId(1), .. })),
        "an error frame first"
    );
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { conn: ConnId(2) })));
    // The node keeps serving its own callers.
    let get = Input::Get {
        request: RequestId(9),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get).unwrap();
    assert!(drain(&mut n).iter().any(|o| matches!(o, Output::Load { .. })));
}

#[test]
fn hello_from_another_cluster_is_refused() {
    let mut client = node("a", "blue");
    let mut server = node("b", "green");
    client
        .handle_input(
            Instant::ZERO,
            Input::Connected { conn: ConnId(1), peer: Bytes::from_static(b"b") },
        )
        .unwrap();
    server.handle_input(Instant::ZERO, Input::Accepted { conn: ConnId(7) }).unwrap();
    let hello = drain(&mut client).into_iter().find_map(|o| match o {
        Output::Transmit { data, .. } => Some(data),
        _ => None,
    });
    server
        .handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data: &hello.unwrap() })
        .unwrap();
    let outputs = drain(&mut server);
    assert!(outputs.contains(&Output::Event(Event::ConnectionRefused {
        conn: ConnId(7),
        reason: ErrorCode::ClusterMismatch
    })));
    assert!(outputs.contains(&Output::Close { conn: ConnId(7) }));
}

fn hello_from(node_id: &'static str) -> Vec<u8> {
    use crate::wire::{Message, WireLimits};
    let hello = Message::Hello {
        protocol_version: 1,
        cluster: Bytes::from_static(b"c"),
        node_id: Bytes::from_static(node_id.as_bytes()),
    };
    let mut out = Vec::new();
    hello.encode(0, &mut out, &WireLimits::default()).unwrap();
    out
}

#[test]
fn pipelined_gets_of_large_values_are_answered_a_bounded_amount_per_turn() {
    use crate::wire::{Message, WireLimits};
    let mut config =
        NodeConfig::new("a", "c").with_keyspace(KeyspaceConfig::new(KEYSPACE, 64 << 20));
    config.max_in_flight_per_connection = 10_000;
    let mut n = Node::new(config, Instant::ZERO).unwrap();
    let value = Bytes::from(alloc::vec![7u8; 256 << 10]);
    let put = Input::Put {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        entry: Entry { key: Bytes::from_static(b"big"), value, expires_at: None },
        timeout: None,
    };
    n.handle_input(Instant::ZERO, put).unwrap();
    drain(&mut n);
    // One read carrying a hello and 200 gets of the 256 KiB value: 50 MiB of replies.
    let mut data = hello_from("b");
    for id in 1..=200u64 {
        let get = Message::Get {
            keyspace: Bytes::from_static(KEYSPACE),
            key: Bytes::from_static(b"big"),
            timeout_ms: 1_000,
        };
        get.encode(id, &mut data, &WireLimits::default()).unwrap();
    }
    n.handle_input(Instant::ZERO, Input::Accepted { conn: ConnId(1) }).unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &data }).unwrap();
    let sent = |outputs: Vec<Output>| -> usize {
        outputs
            .into_iter()
            .map(|o| match o {
                Output::Transmit { conn: ConnId(1), data } => data.len(),
                _ => 0,
            })
            .sum()
    };
    let first = sent(drain(&mut n));
    assert!(first < super::OUTPUT_PER_TURN + (300 << 10), "one turn queued {first} bytes");
    assert_eq!(n.poll_timeout(), Some(Instant::ZERO), "the rest is due at once");
    // Turn after turn, every get is answered, none is lost.
    let mut total = first;
    let mut turns = 1;
    while n.poll_timeout() == Some(Instant::ZERO) {
        n.handle_timeout(Instant::ZERO);
        let this = sent(drain(&mut n));
        assert!(this < super::OUTPUT_PER_TURN + (300 << 10), "a turn queued {this} bytes");
        total += this;
        turns += 1;
        assert!(turns < 1_000, "a bounded number of turns");
    }
    assert!(total > 200 * (256 << 10), "every get answered: {total} bytes in {turns} turns");
}

/// Found in review: a hello naming another node than the one dialled took over the link's
/// identity, and the dialled peer's link pointed at a dead connection forever.
#[test]
fn a_dialled_peer_that_answers_as_another_node_is_refused() {
    let mut n = node("a", "c");
    n.handle_input(
        Instant::ZERO,
        Input::SetPeers(alloc::vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]),
    )
    .unwrap();
    let owned_by_b: Vec<Bytes> = (0..100u32)
        .map(|i| Bytes::from(format!("k{i}")))
        .filter(|k| n.ring().owner(k).is_some_and(|o| o == "b"))
        .take(2)
        .collect();
    let get = |request, key: &Bytes| Input::Get {
        request: RequestId(request),
        keyspace: Bytes::from_static(KEYSPACE),
        key: key.clone(),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get(1, &owned_by_b[0])).unwrap();
    assert!(drain(&mut n).contains(&Output::Connect {
        peer: Bytes::from_static(b"b"),
        address: Bytes::from_static(b"b")
    }));
    n.handle_input(
        Instant::ZERO,
        Input::Connected { conn: ConnId(5), peer: Bytes::from_static(b"b") },
    )
    .unwrap();
    drain(&mut n);
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(5), data: &hello_from("z") })
        .unwrap();
    let outputs = drain(&mut n);
    assert!(outputs.contains(&Output::Event(Event::ConnectionRefused {
        conn: ConnId(5),
        reason: ErrorCode::ClusterMismatch
    })));
    assert!(
        outputs.iter().any(|o| matches!(o, Output::Load { .. })),
        "the get fell back to a local load"
    );
    // After the backoff, a fetch from "b" dials it again instead of using a dead connection.
    n.handle_input(Instant::from_secs(1), get(2, &owned_by_b[1])).unwrap();
    assert!(drain(&mut n).contains(&Output::Connect {
        peer: Bytes::from_static(b"b"),
        address: Bytes::from_static(b"b")
    }));
}

#[test]
fn a_connect_the_driver_never_reports_on_times_out() {
    let mut n = node("a", "c");
    n.handle_input(
        Instant::ZERO,
        Input::SetPeers(alloc::vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]),
    )
    .unwrap();
    let key = (0..100u32)
        .map(|i| format!("k{i}"))
        .find(|k| n.ring().owner(k.as_bytes()).is_some_and(|o| o == "b"))
        .unwrap();
    let input = Input::Get {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from(key),
        timeout: Some(Duration::from_secs(10)),
    };
    n.handle_input(Instant::ZERO, input).unwrap();
    assert!(drain(&mut n).contains(&Output::Connect {
        peer: Bytes::from_static(b"b"),
        address: Bytes::from_static(b"b")
    }));
    // The call's own deadline (300 ms) comes first and falls back to a local load; the connect
    // attempt itself is abandoned at 2 s, so the link is free to dial again.
    n.handle_timeout(Instant::from_secs(2));
    let outputs = drain(&mut n);
    assert!(outputs.iter().any(|o| matches!(o, Output::Load { .. })));
}

#[test]
fn an_accepted_connection_that_never_says_hello_is_closed() {
    let mut n = node("a", "c");
    n.handle_input(Instant::ZERO, Input::Accepted { conn: ConnId(3) }).unwrap();
    n.handle_timeout(Instant::from_secs(2));
    assert!(drain(&mut n).contains(&Output::Close { conn: ConnId(3) }));
    assert_eq!(
        n.handle_input(Instant::from_secs(2), Input::Received { conn: ConnId(3), data: b"x" }),
        Err(InputError::UnknownConnection(ConnId(3)))
    );
}

#[test]
fn duplicate_request_ids_are_refused_without_changing_state() {
    let mut n = node("a", "c");
    let get = |request| Input::Get {
        request,
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get(RequestId(1))).unwrap();
    assert_eq!(
        n.handle_input(Instant::ZERO, get(RequestId(1))),
        Err(InputError::DuplicateRequest(RequestId(1)))
    );
    assert_eq!(drain(&mut n).iter().filter(|o| matches!(o, Output::Load { .. })).count(), 1);
}

#[test]
fn a_request_whose_load_hangs_is_answered_timed_out() {
    let mut n = node("a", "c");
    let get = Input::Get {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: Some(Duration::from_millis(100)),
    };
    n.handle_input(Instant::ZERO, get).unwrap();
    drain(&mut n);
    assert_eq!(n.poll_timeout(), Some(Instant::from_millis(100)));
    n.handle_timeout(Instant::from_millis(100));
    assert!(drain(&mut n).contains(&Output::Reply {
        request: RequestId(1),
        reply: Reply::Get(Err(Error::TimedOut))
    }));
}

#[test]
fn rate_limited_loads_get_their_own_error() {
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.limiter =
        Some(crate::LimiterConfig::new(crate::Rate::per_second(1).unwrap(), 1).unwrap());
    config.read_timeout = Duration::from_millis(10);
    let mut n = Node::new(NodeConfig::new("a", "c").with_keyspace(config), Instant::ZERO).unwrap();
    for i in 0..2u64 {
        let key = Bytes::from(format!("k{i}"));
        let input = Input::Get {
            request: RequestId(i),
            keyspace: Bytes::from_static(KEYSPACE),
            key,
            timeout: None,
        };
        n.handle_input(Instant::ZERO, input).unwrap();
    }
    let outputs = drain(&mut n);
    assert_eq!(outputs.iter().filter(|o| matches!(o, Output::Load { .. })).count(), 1);
    assert!(outputs.contains(&Output::Reply {
        request: RequestId(1),
        reply: Reply::Get(Err(Error::RateLimited))
    }));
}

/// Found in review: a batch part whose load was refused on the spot was answered before the
/// batch's state existed, so the batch waited for its deadline instead of answering at once.
#[test]
fn a_batch_with_a_refused_load_is_answered_at_once() {
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.limiter =
        Some(crate::LimiterConfig::new(crate::Rate::per_second(1).unwrap(), 1).unwrap());
    config.read_timeout = Duration::from_millis(10);
    let mut n = Node::new(NodeConfig::new("a", "c").with_keyspace(config), Instant::ZERO).unwrap();
    let keys = alloc::vec![Bytes::from_static(b"k0"), Bytes::from_static(b"k1")];
    let input = Input::GetMany {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        keys,
        timeout: None,
    };
    n.handle_input(Instant::ZERO, input).unwrap();
    let load = drain(&mut n).into_iter().find_map(|o| match o {
        Output::Load { load, .. } => Some(load),
        _ => None,
    });
    let result = LoadResult::Value { bytes: Bytes::from_static(b"v0"), expires_at: None };
    n.handle_input(Instant::from_millis(1), Input::Loaded { load: load.unwrap(), result }).unwrap();
    let reply = drain(&mut n).into_iter().find_map(|o| match o {
        Output::Reply { reply: Reply::GetMany(results), .. } => Some(results),
        _ => None,
    });
    let results = reply.expect("answered when the one load finished, not at the deadline");
    assert_eq!(results[0].as_ref().unwrap().bytes, Bytes::from_static(b"v0"));
    assert_eq!(results[1], Err(Error::RateLimited));
}

#[test]
fn keyspaces_inherit_the_node_limiter_unless_they_override_it() {
    let one_per_second = crate::LimiterConfig::new(crate::Rate::per_second(1).unwrap(), 1).unwrap();
    let generous = crate::LimiterConfig::new(crate::Rate::per_second(1_000).unwrap(), 100).unwrap();
    let mut own = KeyspaceConfig::new("own", 1 << 20);
    own.limiter = Some(generous);
    let mut config = NodeConfig::new("a", "c")
        .with_keyspace(KeyspaceConfig::new("inherits", 1 << 20))
        .with_keyspace(own);
    config.limiter = Some(one_per_second);
    let mut n = Node::new(config, Instant::ZERO).unwrap();
    let mut loads = |keyspace: &'static [u8]| {
        for i in 0..3u64 {
            let request = RequestId(i + if keyspace == b"own" { 100 } else { 0 });
            let key = Bytes::from(format!("k{i}"));
            let input = Input::Get {
                request,
                keyspace: Bytes::from_static(keyspace),
                key,
                timeout: Some(Duration::from_millis(10)),
            };
            n.handle_input(Instant::ZERO, input).unwrap();
        }
        drain(&mut n).iter().filter(|o| matches!(o, Output::Load { .. })).count()
    };
    assert_eq!(loads(b"inherits"), 1, "the node's limit of 1/s applies");
    assert_eq!(loads(b"own"), 3, "the keyspace's own limit applies");
}

#[test]
fn warmup_loads_warm_keys_this_node_comes_to_own() {
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.warm_keys = (0..50).map(|i| Bytes::from(format!("warm-{i}"))).collect();
    let mut n = Node::new(NodeConfig::new("a", "c").with_keyspace(config), Instant::ZERO).unwrap();
    n.handle_input(
        Instant::ZERO,
        Input::SetPeers(alloc::vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]),
    )
    .unwrap();
    let outputs = drain(&mut n);
    let loads: Vec<&Output> = outputs.iter().filter(|o| matches!(o, Output::Load { .. })).collect();
    assert_eq!(loads.len(), 8, "bounded by warmup_concurrency");
    let owned = (0..50)
        .filter(|i| n.ring().owner(format!("warm-{i}").as_bytes()).is_some_and(|o| o == "a"))
        .count();
    assert!(outputs.contains(&Output::Event(Event::WarmupStarted { keys: owned })));
}

#[test]
fn a_peer_fetch_reaching_a_leaving_owner_mid_load_joins_that_load() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        source_delay: (Duration::from_millis(50), Duration::from_millis(50)),
        ..SimConfig::default()
    });
    let key = "leaving-owner";
    let owner = sim.owner(key).unwrap();
    let asker = (owner + 1) % 3;
    let mut requests = alloc::vec![sim.get(owner, key)];
    sim.advance(Duration::from_millis(5)); // the owner's load is in flight
    assert_eq!(sim.loads_by(owner), 1);
    // The owner leaves; the asker's fetch is still on the way and arrives during the leave.
    sim.leave(owner);
    requests.push(sim.get(asker, key));
    sim.run_until_idle(STEPS).unwrap();
    for request in &requests {
        assert!(value_of(sim.reply(*request)).is_some(), "{:?}", sim.reply(*request));
    }
    assert_eq!(sim.loads(key), 1, "the leaving owner's load served the late fetch too");
}

#[test]
fn a_fetch_refused_by_a_leaving_owner_goes_to_the_new_owner() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        source_delay: (Duration::from_millis(20), Duration::from_millis(20)),
        ..SimConfig::default()
    });
    // A key whose owner leaves, and whose new owner is neither the leaver nor the asker.
    let (key, owner, asker, heir) = (0..1_000)
        .find_map(|i| {
            let key = format!("moving-{i}");
            let owner = sim.owner(&key)?;
            let asker = (owner + 1) % 3;
            let heir = (owner + 2) % 3;
            let mut rest = alloc::vec![asker, heir];
            rest.sort_unstable();
            (sim.owner_among(&key, &rest) == Some(heir)).then_some((key, owner, asker, heir))
        })
        .expect("some key moves to the third node");
    // The asker's fetch crosses the owner's goodbye: the owner refuses it (it is not loading
    // the key), and by then the asker knows the key's new owner.
    sim.leave(owner);
    let request = sim.get(asker, &key);
    sim.run_until_idle(STEPS).unwrap();
    assert!(value_of(sim.reply(request)).is_some(), "{:?}", sim.reply(request));
    assert_eq!(sim.loads(&key), 1, "loaded once, by the new owner");
    assert_eq!(sim.loads_by(heir), 1, "the new owner (node {heir}) loaded it");
}

#[test]
fn a_leaving_node_drains_only_after_its_peers_acknowledged_the_goodbye() {
    use crate::wire::{FrameDecoder, Message, WireLimits};
    let mut n = node("a", "c");
    n.handle_input(Instant::ZERO, Input::Accepted { conn: ConnId(1) }).unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &hello_from("b") })
        .unwrap();
    drain(&mut n);
    n.handle_input(Instant::ZERO, Input::Leave).unwrap();
    let outputs = drain(&mut n);
    assert!(!outputs.contains(&Output::Event(Event::Drained)), "the peer has not acknowledged");
    let mut decoder = FrameDecoder::new(WireLimits::default());
    for output in &outputs {
        if let Output::Transmit { conn: ConnId(1), data } = output {
            decoder.push(data).unwrap();
        }
    }
    let (header, message) = decoder.next_frame().unwrap().expect("the goodbye");
    assert_eq!(message, Message::Leaving);
    assert_ne!(header.request_id, 0, "a call the peer answers");
    let mut ack = Vec::new();
    Message::Ack(Ok(())).encode(header.request_id, &mut ack, &WireLimits::default()).unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &ack }).unwrap();
    assert!(drain(&mut n).contains(&Output::Event(Event::Drained)));
}

#[test]
fn leave_tells_peers_and_drains() {
    let mut n = node("a", "c");
    n.handle_input(Instant::ZERO, Input::Leave).unwrap();
    assert!(drain(&mut n).contains(&Output::Event(Event::Drained)));
    let get = Input::Get {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get).unwrap();
    assert!(drain(&mut n).contains(&Output::Reply {
        request: RequestId(1),
        reply: Reply::Get(Err(Error::ShuttingDown))
    }));
}
