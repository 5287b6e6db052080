//! Members failing and coming back, in the simulation: detection within the bound (virtual
//! time), writes that stop waiting on a dead member, a returning member that serves no stale
//! value, the minimum member count.

use super::*;
use crate::sim::{Sim, SimConfig};
use crate::time::Duration;
use alloc::format;

/// The ring sizes of every node that is up.
fn ring_sizes(sim: &Sim, nodes: usize) -> Vec<Option<usize>> {
    (0..nodes).map(|i| sim.node(i).map(|node| node.ring().len())).collect()
}

/// Advances in 5 ms steps until `done`, at most `limit`; the virtual time it took.
fn time_until(sim: &mut Sim, limit: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
    let start = sim.now();
    while sim.now().saturating_duration_since(start) <= limit {
        if done(sim) {
            return Some(sim.now().saturating_duration_since(start));
        }
        sim.advance(Duration::from_millis(5));
    }
    None
}

/// The detection bound of the default settings: the silence that makes a member down, one
/// heartbeat until it is evaluated, and a little network.
fn bound() -> Duration {
    let config = LivenessConfig::default();
    config.down_after + config.heartbeat_interval + Duration::from_millis(20)
}

#[test]
fn a_crashed_member_is_dropped_within_the_bound() {
    let mut worst = Duration::ZERO;
    for seed in 1..=20 {
        let mut sim = Sim::new(SimConfig { nodes: 3, seed, ..SimConfig::default() });
        // Traffic and heartbeats run a while first, so the crash lands at any heartbeat phase.
        sim.advance(Duration::from_millis(500 + seed * 37));
        assert_eq!(ring_sizes(&sim, 3), [Some(3); 3]);
        let dead = (seed % 3) as usize;
        sim.crash(dead);
        let took = time_until(&mut sim, Duration::from_secs(5), |sim| {
            (0..3).filter(|&i| i != dead).all(|i| sim.node(i).unwrap().ring().len() == 2)
        })
        .unwrap_or_else(|| panic!("seed {seed}: still on a ring after 5 s"));
        assert!(took <= bound(), "seed {seed}: dropped after {took:?}, over {:?}", bound());
        // Heard last up to two heartbeats before the crash (a ping each way, every other beat).
        let config = LivenessConfig::default();
        let earliest = config.down_after - config.heartbeat_interval * 2;
        assert!(took >= earliest, "seed {seed}: down after {took:?}, too early");
        worst = worst.max(took);
        for survivor in (0..3).filter(|&i| i != dead) {
            let members = sim.node(survivor).unwrap().members();
            let record = members.iter().find(|m| m.id == format!("node-{dead}")).unwrap();
            assert_eq!(record.state, MemberState::Down);
            assert_eq!(record.ring_share, 0.0);
            assert!(!record.connected);
        }
        sim.run_until_idle(STEPS).unwrap();
    }
    assert!(worst <= Duration::from_secs(3));
}

#[test]
fn writes_succeed_again_after_detection() {
    let mut sim = Sim::new(SimConfig { nodes: 3, ..SimConfig::default() });
    sim.advance(Duration::from_millis(300));
    sim.crash(2);
    // Before detection a write waits for the dead member to drop its copy, and fails.
    let early = sim.put(0, "k");
    sim.run_until_idle(STEPS).unwrap();
    assert!(matches!(sim.reply(early), Some(Reply::Write(Err(_)))), "{:?}", sim.reply(early));
    sim.advance(bound());
    let put = sim.put(0, "k");
    let delete = sim.delete(1, "other");
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))));
    assert_eq!(sim.reply(delete), Some(&Reply::Write(Ok(()))));
    let get = sim.get(1, "k");
    sim.run_until_idle(STEPS).unwrap();
    let value = value_of(sim.reply(get)).expect("the put's value");
    assert!(value.starts_with(b"k=put#"), "{value:?}");
}

#[test]
fn a_write_waiting_on_a_member_that_goes_down_completes() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        request_timeout: Duration::from_secs(5),
        ..SimConfig::default()
    });
    sim.advance(Duration::from_millis(300));
    // Node 2 stops answering but keeps its connections (a partition, not a crash): the drop
    // of its copy waits until node 2 is found down, then the write is acknowledged.
    sim.partition(0, 2);
    sim.partition(1, 2);
    let key = (0..100)
        .map(|i| format!("w-{i}"))
        .find(|key| sim.owner_among(key, &[0, 1]) == Some(0))
        .unwrap();
    let put = sim.put(0, &key);
    assert!(time_until(&mut sim, bound(), |sim| sim.reply(put).is_some()).is_some());
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))));
    sim.heal();
    sim.run_until_idle(STEPS).unwrap();
}

#[test]
fn a_member_back_after_a_gap_drops_its_copies_and_serves_no_stale_value() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        // Mirror at once, so the others hold hot copies too.
        hot_threshold_per_second: 0.0,
        ..SimConfig::default()
    });
    sim.advance(Duration::from_millis(300));
    // A key node 2 owns, whose owner among the other two is node 0.
    let key = (0..1_000)
        .map(|i| format!("gap-{i}"))
        .find(|key| sim.owner(key) == Some(2) && sim.owner_among(key, &[0, 1]) == Some(0))
        .unwrap();
    let mut before = None;
    for node in [2, 0, 1] {
        let get = sim.get(node, &key);
        sim.run_until_idle(STEPS).unwrap();
        before = value_of(sim.reply(get));
        assert!(before.is_some());
    }
    assert_eq!(sim.loads(&key), 1);
    let hot = |sim: &Sim, node: usize| sim.node(node).unwrap().keyspace_stats(KEYSPACE).unwrap();
    assert_eq!(hot(&sim, 0).cache.hot.items, 1, "node 0 mirrors the key");
    // Node 2 is cut off (alive, its copy kept); the others find it down and write the key.
    sim.partition(0, 2);
    sim.partition(1, 2);
    sim.advance(bound());
    assert_eq!(ring_sizes(&sim, 3), [Some(2), Some(2), Some(1)]);
    let put = sim.put(1, &key);
    assert!(time_until(&mut sim, Duration::from_secs(1), |sim| sim.reply(put).is_some()).is_some());
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))), "acknowledged without node 2");
    // Node 2 answers again: it is cleared before the others rely on it again.
    sim.heal();
    let back =
        time_until(&mut sim, Duration::from_secs(6), |sim| ring_sizes(sim, 3) == [Some(3); 3]);
    assert!(back.is_some(), "rings after the heal: {:?}", ring_sizes(&sim, 3));
    // The copy from before the gap is gone everywhere. (The put's value itself lived in node
    // 0's main cache, which let go of the key when node 2 took it back; node 2 loads it anew.)
    for node in [2, 0, 1] {
        let get = sim.get(node, &key);
        sim.run_until_idle(STEPS).unwrap();
        let value = value_of(sim.reply(get)).expect("a value");
        assert_ne!(Some(&value), before.as_ref(), "node {node} served the copy from before");
    }
    assert_eq!(sim.loads(&key), 2, "loaded once more, by node 2 after its clear");
    sim.check().unwrap();
}

#[test]
fn below_the_minimum_member_count_writes_fail_and_gets_are_answered() {
    let liveness = LivenessConfig { min_members: 2, ..LivenessConfig::default() };
    let mut sim = Sim::new(SimConfig { nodes: 3, liveness, ..SimConfig::default() });
    sim.advance(Duration::from_millis(300));
    assert!(sim.node(0).unwrap().is_quorate());
    sim.crash(1);
    sim.advance(bound());
    assert!(sim.node(0).unwrap().is_quorate(), "two of three are up");
    let put = sim.put(0, "q");
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))));
    sim.crash(2);
    sim.advance(bound());
    assert!(!sim.node(0).unwrap().is_quorate());
    let put = sim.put(0, "q");
    let get = sim.get(0, "q");
    let fresh = sim.get(0, "never-written");
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(put), Some(&Reply::Write(Err(Error::Unavailable))));
    assert!(value_of(sim.reply(get)).is_some(), "answered without the missing members");
    assert!(value_of(sim.reply(fresh)).is_some(), "loaded from the data source");
    // A member comes back: quorate again.
    sim.restart(1);
    let back =
        time_until(&mut sim, Duration::from_secs(3), |sim| sim.node(0).unwrap().is_quorate());
    assert!(back.is_some());
    // The restarted member starts with every member alive: it finds node 2 down in its turn.
    sim.advance(bound());
    let put = sim.put(0, "q");
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))));
}

#[test]
fn member_changes_are_events_and_the_member_list_stays_apart_from_the_ring() {
    let mut n = node("a", "c");
    let peers = alloc::vec![Bytes::from_static(b"b")];
    n.handle_input(Instant::ZERO, Input::SetPeers(peers)).unwrap();
    drain(&mut n);
    // "b" never answers: suspect, then down, then off the ring; still a member.
    let mut events = Vec::new();
    let mut now = Instant::ZERO;
    while now < Instant::from_secs(3) {
        now = n.poll_timeout().unwrap().max(now);
        n.handle_timeout(now);
        for output in drain(&mut n) {
            match output {
                Output::Event(event @ Event::MemberChanged { .. }) => events.push((now, event)),
                Output::Connect { peer, .. } => {
                    n.handle_input(now, Input::ConnectFailed { peer }).unwrap();
                }
                _ => {}
            }
        }
    }
    let b = Bytes::from_static(b"b");
    let to: Vec<MemberState> = events
        .iter()
        .map(|(_, event)| match event {
            Event::MemberChanged { to, .. } => *to,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(to, [MemberState::Suspect, MemberState::Down]);
    assert!(events[1].0 <= Instant::from_millis(2_250));
    assert_eq!(n.ring().len(), 1, "down: off the ring");
    let members = n.members();
    assert_eq!(members.len(), 2, "still on the member list");
    assert_eq!(members[0].ring_share, 1.0);
    assert_eq!(members[1].id, b);
    assert_eq!(members[1].state, MemberState::Down);
}

#[test]
fn invalid_liveness_settings_are_refused() {
    let mut config = NodeConfig::new("a", "c");
    config.liveness.min_members = 0;
    assert_eq!(Node::new(config, Instant::ZERO).err(), Some(ConfigError::BadLiveness));
}

#[test]
fn groupcache_peers_are_found_down_by_failed_fetches_and_back_by_a_connection() {
    let mut sim = Sim::new(SimConfig { nodes: 3, groupcache: true, ..SimConfig::default() });
    sim.advance(Duration::from_secs(5));
    assert_eq!(ring_sizes(&sim, 3), [Some(3); 3], "silence alone marks no groupcache peer down");
    sim.crash(2);
    let keys: Vec<String> =
        (0..200).map(|i| format!("gc-{i}")).filter(|key| sim.owner(key) == Some(2)).collect();
    // Fetches of node 2's keys fail (its connections close, dials are refused): suspect at the
    // first failure, down once failures went on for `down_after`.
    let mut asked = 0;
    let took =
        time_until(&mut sim, Duration::from_secs(4), |sim| sim.node(0).unwrap().ring().len() == 2);
    assert!(took.is_none(), "no fetch failed yet: node 2 is still up for node 0");
    while sim.node(0).unwrap().ring().len() == 3 && asked < keys.len() {
        let get = sim.get(0, &keys[asked]);
        asked += 1;
        sim.run_until_idle(STEPS).unwrap();
        assert!(value_of(sim.reply(get)).is_some(), "loaded locally instead");
        sim.advance(Duration::from_millis(200));
    }
    assert_eq!(sim.node(0).unwrap().ring().len(), 2, "down after {asked} failed fetches");
    let state = |sim: &Sim| {
        let members = sim.node(0).unwrap().members();
        members.iter().find(|m| m.id.as_ref() == b"http://node-2:80").unwrap().state
    };
    assert_eq!(state(&sim), MemberState::Down);
    // Back: node 0 dials it every heartbeat, and an open connection is its answer.
    sim.restart(2);
    let back =
        time_until(&mut sim, Duration::from_secs(2), |sim| sim.node(0).unwrap().ring().len() == 3);
    assert!(back.is_some());
    assert_eq!(state(&sim), MemberState::Alive);
    sim.run_until_idle(STEPS).unwrap();
}
