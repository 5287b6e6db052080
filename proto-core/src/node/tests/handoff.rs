//! The previous owner first (galaxycache's peek) in the simulation, in virtual time: a fourth
//! node joins three warm ones, and the keys that move to it are asked of their old owners
//! before any load; the window's end, its absence, a previous owner that is gone or stalled,
//! writes during the window, expiry, two changes in one window, and groupcache peers.

use super::*;
use crate::sim::{Sim, SimConfig};
use crate::time::Duration;
use crate::wire::FrameKind;
use alloc::format;

/// The keys of the scenarios.
fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("k-{i}")).collect()
}

/// A cluster of `config.nodes` nodes whose last `joiners` nodes are out (crashed, off the
/// others' member lists); `warm` keys are loaded once each, through their owners, and the
/// window of that membership change has closed.
fn warm_cluster(config: SimConfig, joiners: usize, warm: &[String]) -> Sim {
    let nodes = config.nodes;
    let mut sim = Sim::new(config);
    let staying: Vec<usize> = (0..nodes - joiners).collect();
    for out in nodes - joiners..nodes {
        sim.crash(out);
    }
    sim.set_members_everywhere(&staying);
    sim.advance(Duration::from_secs(31));
    for key in warm {
        let owner = sim.owner_among(key, &staying).unwrap();
        sim.get(owner, key);
    }
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.total_loads(), warm.len() as u64, "each key loaded once");
    sim
}

/// Node `joiner` starts with the member list `members`, which every other member gets too;
/// then the cluster runs until the members are connected (one heartbeat).
fn join(sim: &mut Sim, joiner: usize, members: &[usize]) {
    sim.set_members(joiner, members.to_vec());
    sim.restart(joiner);
    for &member in members.iter().filter(|&&m| m != joiner) {
        sim.set_members(member, members.to_vec());
    }
    sim.advance(Duration::from_millis(300));
}

fn stats(sim: &Sim, node: usize) -> KeyspaceStats {
    sim.node(node).unwrap().keyspace_stats(KEYSPACE).unwrap()
}

fn get_value(sim: &mut Sim, node: usize, key: &str) -> Value {
    let request = sim.get(node, key);
    sim.run_until_idle(STEPS).unwrap();
    sim.check().unwrap();
    match sim.reply(request) {
        Some(Reply::Get(Ok(value))) => value.clone(),
        other => panic!("{key} at node {node}: {other:?}"),
    }
}

/// The keys of `all` whose owner moves from one of `before` to `to` on the ring of `after`.
fn moved_to(
    sim: &Sim,
    all: &[String],
    before: &[usize],
    after: &[usize],
    to: usize,
) -> Vec<String> {
    all.iter()
        .filter(|key| {
            sim.owner_among(key, after) == Some(to) && sim.owner_among(key, before) != Some(to)
        })
        .cloned()
        .collect()
}

#[test]
fn a_joining_owner_peeks_the_keys_that_moved_instead_of_loading_them() {
    let all = keys(200);
    let mut sim = warm_cluster(SimConfig { nodes: 4, ..SimConfig::default() }, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let moved = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    assert!(moved.len() > 20, "a quarter of the keys move: {}", moved.len());
    // Through every node: the new owner itself, and the others (which fetch from it). The old
    // owner answers a moved key from the copy it kept, like a hot copy.
    let mut kept_hits = 0;
    for (i, key) in all.iter().enumerate() {
        let node = i % 4;
        let value = get_value(&mut sim, node, key);
        assert!(value.bytes.starts_with(format!("{key}=").as_bytes()), "{:?}", value.bytes);
        if moved.contains(key) && sim.owner_among(key, &[0, 1, 2]) == Some(node) {
            assert_eq!(value.path, Path::LocalHit);
            kept_hits += 1;
        }
    }
    assert_eq!(sim.total_loads(), all.len() as u64, "nothing was loaded again");
    let joiner = stats(&sim, 3);
    let peeked = (moved.len() - kept_hits) as u64;
    assert_eq!((joiner.peek_hits, joiner.peek_misses, joiner.local_loads), (peeked, 0, 0));
    let served: u64 = (0..3).map(|n| stats(&sim, n).peeks_served).sum();
    assert_eq!(served, peeked);
    // The new owner cached what it peeked: asked again, it answers from its main cache.
    let again = get_value(&mut sim, 3, &moved[0]);
    assert_eq!(again.path, Path::LocalHit);
}

#[test]
fn a_peeked_value_answers_every_waiter_of_the_flight_with_its_path() {
    let all = keys(60);
    let mut sim = warm_cluster(SimConfig { nodes: 4, ..SimConfig::default() }, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let key = &moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3)[0];
    let local: Vec<RequestId> = (0..5).map(|_| sim.get(3, key)).collect();
    let remote: Vec<RequestId> = (0..3).map(|n| sim.get(n, key)).collect();
    sim.run_until_idle(STEPS).unwrap();
    sim.check().unwrap();
    for request in &local {
        let Some(Reply::Get(Ok(value))) = sim.reply(*request) else { panic!("{request:?}") };
        assert_eq!(value.path, Path::PreviousOwner);
    }
    let first = value_of(sim.reply(local[0]));
    for request in local.iter().chain(&remote) {
        assert_eq!(value_of(sim.reply(*request)), first);
    }
    assert_eq!(sim.total_loads(), all.len() as u64);
    let previous = sim.owner_among(key, &[0, 1, 2]).unwrap();
    assert_eq!(sim.frames_sent(3, previous, FrameKind::Peek), 1, "one peek for the flight");
}

#[test]
fn a_peek_that_finds_nothing_loads_once() {
    let all = keys(60);
    let mut sim = warm_cluster(SimConfig { nodes: 4, ..SimConfig::default() }, 1, &[]);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let cold = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    for key in &cold {
        assert_eq!(get_value(&mut sim, 3, key).path, Path::Load);
        assert_eq!(sim.loads(key), 1);
    }
    let joiner = stats(&sim, 3);
    assert_eq!((joiner.peek_hits, joiner.peek_misses), (0, cold.len() as u64));
}

#[test]
fn the_old_owner_keeps_moved_entries_until_the_window_closes() {
    let all = keys(100);
    let config =
        SimConfig { nodes: 4, handoff_window: Duration::from_secs(5), ..SimConfig::default() };
    let mut sim = warm_cluster(config, 1, &all);
    let main_items = |sim: &Sim, node: usize| stats(sim, node).cache.main.items;
    let before: Vec<u64> = (0..3).map(|n| main_items(&sim, n)).collect();
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let kept: Vec<u64> = (0..3).map(|n| main_items(&sim, n)).collect();
    assert_eq!(kept, before, "nothing dropped at the change");
    sim.advance(Duration::from_secs(5));
    let moved = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    let after: u64 = (0..3).map(|n| main_items(&sim, n)).sum();
    assert_eq!(after, all.len() as u64 - moved.len() as u64, "moved entries gone at the end");
    // Past the window, a miss loads at once: no peek.
    for key in &moved {
        assert_eq!(get_value(&mut sim, 3, key).path, Path::Load);
    }
    let peeks: u64 = (0..3).map(|n| sim.frames_sent(3, n, FrameKind::Peek)).sum();
    assert_eq!(peeks, 0);
    assert_eq!(sim.total_loads(), (all.len() + moved.len()) as u64);
}

#[test]
fn a_zero_window_drops_moved_entries_at_the_change_and_never_peeks() {
    let all = keys(100);
    let config = SimConfig { nodes: 4, handoff_window: Duration::ZERO, ..SimConfig::default() };
    let mut sim = warm_cluster(config, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let moved = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    let left: u64 = (0..3).map(|n| stats(&sim, n).cache.main.items).sum();
    assert_eq!(left, (all.len() - moved.len()) as u64);
    for key in &moved {
        assert_eq!(get_value(&mut sim, 3, key).path, Path::Load);
    }
    let peeks: u64 = (0..3).map(|n| sim.frames_sent(3, n, FrameKind::Peek)).sum();
    assert_eq!(peeks, 0);
    assert_eq!(sim.total_loads(), (all.len() + moved.len()) as u64);
}

#[test]
fn a_crashed_previous_owner_is_not_asked_and_the_load_does_not_wait() {
    let all = keys(200);
    let mut sim = warm_cluster(SimConfig { nodes: 4, ..SimConfig::default() }, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let moved = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    let key = moved.iter().find(|key| sim.owner_among(key, &[0, 1, 2]) == Some(0)).unwrap();
    sim.crash(0);
    sim.advance(Duration::from_millis(10)); // the connections' close arrives
    let start = sim.now();
    let request = sim.get(3, key);
    sim.run_until_idle(STEPS).unwrap();
    let Some(Reply::Get(Ok(value))) = sim.reply(request) else { panic!() };
    assert_eq!(value.path, Path::Load);
    assert_eq!(sim.frames_sent(3, 0, FrameKind::Peek), 0);
    // The load alone: the source's delay (at most 20 ms), no peek timeout.
    assert!(sim.now().saturating_duration_since(start) < Duration::from_millis(50));
    assert_eq!(stats(&sim, 3).peek_misses, 0);
}

#[test]
fn a_stalled_previous_owner_costs_at_most_the_peek_timeout_then_the_key_loads() {
    let all = keys(200);
    let mut sim = warm_cluster(SimConfig { nodes: 4, ..SimConfig::default() }, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let moved = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    let key = moved.iter().find(|key| sim.owner_among(key, &[0, 1, 2]) == Some(1)).unwrap();
    // Alive and connected, but its bytes stall: the peek times out.
    sim.partition(1, 3);
    let start = sim.now();
    let request = sim.get(3, key);
    while sim.reply(request).is_none() {
        sim.advance(Duration::from_millis(5));
    }
    let took = sim.now().saturating_duration_since(start);
    let Some(Reply::Get(Ok(value))) = sim.reply(request) else { panic!() };
    assert_eq!(value.path, Path::Load);
    assert!(took >= Duration::from_millis(200), "waited the peek timeout: {took:?}");
    assert!(took < Duration::from_millis(260), "then loaded at once: {took:?}");
    assert_eq!(sim.frames_sent(3, 1, FrameKind::Peek), 1);
    assert_eq!(stats(&sim, 3).peek_misses, 1);
    assert_eq!(sim.loads(key), 2, "the warm load, then this one");
    sim.heal();
    sim.run_until_idle(STEPS).unwrap();
    sim.check().unwrap();
}

#[test]
fn writes_during_the_window_invalidate_kept_copies_and_no_peek_returns_a_stale_value() {
    let all = keys(200);
    let mut sim = warm_cluster(SimConfig { nodes: 4, ..SimConfig::default() }, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let moved = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    assert!(moved.len() >= 3);
    let (put_key, delete_key, racing_key) = (&moved[0], &moved[1], &moved[2]);
    let old_owner = |key: &str| sim.owner_among(key, &[0, 1, 2]).unwrap();
    let (put_old, delete_old) = (old_owner(put_key), old_owner(delete_key));

    // A put through the old owner goes to the new one, which makes every member drop its copy.
    let put = sim.put(put_old, put_key);
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(put), Some(&Reply::Write(Ok(()))));
    for node in 0..4 {
        let value = get_value(&mut sim, node, put_key);
        assert!(value.bytes.starts_with(format!("{put_key}=put#").as_bytes()), "{value:?}");
    }

    // A delete: the kept copy goes; the new owner's peek finds nothing and loads afresh.
    let delete = sim.delete(delete_old, delete_key);
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(delete), Some(&Reply::Write(Ok(()))));
    let value = get_value(&mut sim, 3, delete_key);
    assert_eq!(value.path, Path::Load);
    assert_eq!(sim.loads(delete_key), 2);
    let value = get_value(&mut sim, delete_old, delete_key);
    assert_ne!(value.path, Path::LocalHit, "the old owner's kept copy went with the delete");

    // A delete that races the peek: the peek's answer is not cached, and a get after the
    // delete's acknowledgement loads afresh (the simulation judges every value as it goes).
    let early = sim.get(3, racing_key);
    let delete = sim.delete(3, racing_key);
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.reply(delete), Some(&Reply::Write(Ok(()))));
    assert!(value_of(sim.reply(early)).is_some());
    let after = get_value(&mut sim, 3, racing_key);
    assert_eq!(after.path, Path::Load, "the peeked value was not cached past the delete");
    assert_eq!(sim.loads(racing_key), 2);
    sim.check().unwrap();
}

#[test]
fn a_peeked_value_keeps_its_remaining_expiry() {
    let all = keys(60);
    let config =
        SimConfig { nodes: 4, source_ttl: Some(Duration::from_secs(40)), ..SimConfig::default() };
    let mut sim = warm_cluster(config, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let key = &moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3)[0];
    let previous = sim.owner_among(key, &[0, 1, 2]).unwrap();
    // The old owner's expiry, as its own hit reports it (all clocks agree here).
    let original = get_value(&mut sim, previous, key).expires_at.unwrap();
    sim.advance(Duration::from_secs(5));
    let peeked = get_value(&mut sim, 3, key);
    assert_eq!(peeked.path, Path::PreviousOwner);
    assert_eq!(peeked.expires_at, Some(original), "no fresh TTL");
    // It expires on time at the new owner, and is loaded again then.
    let expires = original.saturating_duration_since(sim.now());
    sim.advance(expires);
    assert_eq!(get_value(&mut sim, 3, key).path, Path::Load);
}

#[test]
fn two_changes_in_one_window_chain_through_the_last_previous_owner() {
    let all = keys(300);
    let mut sim = warm_cluster(SimConfig { nodes: 5, ..SimConfig::default() }, 2, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    // Keys that move 0|1|2 → 3 → 4: node 3 peeks them, then node 4 peeks node 3.
    let twice: Vec<String> = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3)
        .into_iter()
        .filter(|key| sim.owner_among(key, &[0, 1, 2, 3, 4]) == Some(4))
        .collect();
    assert!(!twice.is_empty());
    for key in &twice {
        assert_eq!(get_value(&mut sim, 3, key).path, Path::PreviousOwner);
    }
    join(&mut sim, 4, &[0, 1, 2, 3, 4]);
    for key in &twice {
        assert_eq!(get_value(&mut sim, 4, key).path, Path::PreviousOwner, "{key}");
    }
    assert_eq!(sim.frames_sent(4, 3, FrameKind::Peek), twice.len() as u64, "asked of node 3");
    assert_eq!(sim.total_loads(), all.len() as u64);
}

#[test]
fn groupcache_peers_are_never_peeked_and_keep_no_moved_entries() {
    let all = keys(100);
    let config = SimConfig { nodes: 4, groupcache: true, ..SimConfig::default() };
    let mut sim = warm_cluster(config, 1, &all);
    join(&mut sim, 3, &[0, 1, 2, 3]);
    let moved = moved_to(&sim, &all, &[0, 1, 2], &[0, 1, 2, 3], 3);
    let left: u64 = (0..3).map(|n| stats(&sim, n).cache.main.items).sum();
    assert_eq!(left, (all.len() - moved.len()) as u64, "dropped at the change, as before");
    for key in &moved {
        assert_eq!(get_value(&mut sim, 3, key).path, Path::Load);
    }
    for node in 0..4 {
        let stats = stats(&sim, node);
        assert_eq!((stats.peek_hits, stats.peek_misses, stats.peeks_served), (0, 0, 0));
    }
    assert_eq!(sim.total_loads(), (all.len() + moved.len()) as u64);
}

#[test]
fn a_zero_peek_timeout_is_refused_while_the_window_is_on() {
    let mut config = NodeConfig::new("a", "c");
    config.peek_timeout = Duration::ZERO;
    assert_eq!(Node::new(config.clone(), Instant::ZERO).err(), Some(ConfigError::BadTiming));
    config.handoff_window = Duration::ZERO;
    assert!(Node::new(config, Instant::ZERO).is_ok(), "no window, no peek: nothing to time");
}
