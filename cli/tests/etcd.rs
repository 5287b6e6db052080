//! `herdcache node` processes that find each other through a real etcd (Debian's etcd-server,
//! started by the test on free loopback ports) with `--discovery etcd://…`: each lists the
//! others and fetches the keys it does not own from their owners; they keep serving through
//! a 10 s etcd outage and follow again after it; a member stopped with SIGTERM withdraws its
//! key at once; one killed with SIGKILL is dropped when its lease expires.
//!
//! The test prints a log of what happened and when (`--nocapture` shows it). Skipped (with a
//! message) where etcd is not installed; never skipped in CI.

mod support;

use std::time::{Duration, Instant};

use herdcache_runtime::discovery::DEFAULT_LEASE_TTL;
use herdcache_tests::etcd::{EtcdServer, Timeline};
use hyper::StatusCode;
use serde_json::Value as Json;

use support::*;

const PREFIX: &str = "/herdcache/processes";
/// How long nodes may take to see each other.
const CONVERGE: Duration = Duration::from_secs(10);
/// Keys per round of gets: enough that every node surely asks for some it does not own.
const KEYS_PER_ROUND: usize = 30;
/// Beyond the lease TTL: etcd checks expiry every 500 ms; the watch, the node's bookkeeping
/// and the polling here take a little more.
const EXPIRY_SLACK: Duration = Duration::from_secs(3);

/// Starts a node with etcd discovery on a free port (fresh ports when one was taken).
fn start_node(endpoint: &str) -> NodeProcess {
    let discovery = format!("etcd://{endpoint}{PREFIX}");
    let flags = ["--discovery", &discovery, "--keyspace", "ks:8MiB", "--source", "echo:v-"];
    for _ in 0..BIND_ATTEMPTS {
        match NodeProcess::try_start(&node_flags(free_addr(), &[], &flags)) {
            Ok(node) => return node,
            Err(stderr) if stderr.contains(LOST_PORT) => continue,
            Err(stderr) => panic!("no ready line within {READY_TIMEOUT:?}; stderr:\n{stderr}"),
        }
    }
    panic!("no free port in {BIND_ATTEMPTS} attempts");
}

/// The ids `members` lists, sorted, and whether all are alive and connected.
fn listed(members: &Json) -> (Vec<String>, bool) {
    let list = members["members"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<String> =
        list.iter().map(|m| m["id"].as_str().unwrap_or_default().to_owned()).collect();
    ids.sort();
    let all_up =
        list.iter().all(|m| m["self"] == true || (m["state"] == "alive" && m["connected"] == true));
    (ids, all_up)
}

fn sorted_ids(nodes: &[&NodeProcess]) -> Vec<String> {
    let mut ids: Vec<String> = nodes.iter().map(|node| node.id.clone()).collect();
    ids.sort();
    ids
}

/// Every node lists exactly `ids`, all alive and connected.
async fn until_listed(
    nodes: &[&NodeProcess],
    ids: &[String],
    limit: Duration,
    what: &str,
) -> Duration {
    until_all(nodes, limit, what, |_, m| listed(m) == (ids.to_vec(), true)).await
}

async fn counter_sum(nodes: &[&NodeProcess], name: &str) -> u64 {
    let mut sum = 0;
    for node in nodes {
        sum += counter(&node.stats().await, "ks", name);
    }
    sum
}

/// Gets [`KEYS_PER_ROUND`] fresh keys through every node (each from the first node that asks,
/// then from the others): every answer is the source's value, each key is loaded once in the
/// cluster (by its owner), and every node fetched keys from their owners (the chance that one
/// node owns them all, so fetches none, is below 1e-6). Puts one key through each node.
async fn serve_round(nodes: &[&NodeProcess], round: &str) {
    let n = KEYS_PER_ROUND;
    let loads_before = counter_sum(nodes, "local_loads").await;
    let mut peer_loads_before = Vec::new();
    for node in nodes {
        peer_loads_before.push(counter(&node.stats().await, "ks", "peer_loads"));
    }
    for i in 0..n {
        let key = format!("{round}-{i}");
        for node in nodes {
            let answer = node.get("ks", key.as_bytes()).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "get {key} via {}: {}",
                node.id,
                answer.text()
            );
            assert_eq!(answer.body, format!("v-{key}").into_bytes());
        }
    }
    let loads = counter_sum(nodes, "local_loads").await - loads_before;
    assert_eq!(loads, n as u64, "each key loaded once in the cluster, by its owner");
    for (node, before) in nodes.iter().zip(peer_loads_before) {
        let fetched = counter(&node.stats().await, "ks", "peer_loads") - before;
        assert!(fetched > 0, "{} fetched no key from its owner", node.id);
    }
    for node in nodes {
        let answer = node.put("ks", format!("{round}-put").as_bytes(), b"w").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "put via {}: {}", node.id, answer.text());
    }
}

async fn discovery_healthy(node: &NodeProcess) -> bool {
    node.members().await["discovery"]["healthy"] == true
}

#[test]
fn herdcache_nodes_find_each_other_through_etcd_and_follow_leaves_kills_and_an_outage() {
    let Some(mut etcd) = EtcdServer::start() else { return };
    let endpoint = etcd.endpoint();
    let log = Timeline::new("etcd processes");
    log.note(format!("etcd on {endpoint}; lease TTL {DEFAULT_LEASE_TTL:?} (the default)"));
    let mut nodes: Vec<NodeProcess> = (0..3).map(|_| start_node(&endpoint)).collect();
    log.note(format!(
        "3 herdcache node processes started with --discovery etcd://{endpoint}{PREFIX}"
    ));
    herdcache_tests::drive(async {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let ids = sorted_ids(&all);
        let took = until_listed(&all, &ids, CONVERGE, "3 nodes list each other").await;
        log.note(format!("each node lists all 3, alive and connected ({took:?})"));
        assert_eq!(etcd.values_under(PREFIX).await, ids, "etcd holds the 3 registrations");
        for node in &all {
            assert_eq!(node.members().await["discovery"]["kind"], "etcd");
        }
        serve_round(&all, "start").await;
        log.note("30 keys through each node: one load per key, each node fetched from owners");

        // etcd stops for 10 s: the nodes keep serving on their last list.
        etcd.stop();
        log.note("etcd stopped");
        let mut took = Duration::ZERO;
        for node in &all {
            let started = Instant::now();
            while discovery_healthy(node).await {
                assert!(started.elapsed() < CONVERGE, "{} notices the outage", node.id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            took = took.max(started.elapsed());
        }
        log.note(format!("every node reports discovery unhealthy ({took:?})"));
        let outage = Instant::now();
        let mut rounds = 0;
        while outage.elapsed() < Duration::from_secs(10) {
            serve_round(&all, &format!("outage{rounds}")).await;
            for node in &all {
                assert_eq!(listed(&node.members().await), (ids.clone(), true), "the last list");
            }
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        log.note(format!("10 s without etcd: {rounds} rounds of gets and puts served, lists kept"));
        etcd.restart();
        log.note("etcd restarted");
        let started = Instant::now();
        for node in &all {
            while !discovery_healthy(node).await {
                assert!(started.elapsed() < CONVERGE, "{} follows etcd again", node.id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        log.note(format!("every node reports discovery healthy again ({:?})", started.elapsed()));
    });

    nodes.push(start_node(&endpoint));
    log.note(format!("a 4th node {} started", nodes[3].id));
    herdcache_tests::drive(async {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let ids = sorted_ids(&all);
        let took = until_listed(&all, &ids, CONVERGE, "4 nodes list each other").await;
        log.note(format!("the watch resumed: all 4 list each other ({took:?})"));
        assert_eq!(etcd.values_under(PREFIX).await, ids);
    });

    // SIGTERM: the node revokes its lease as it leaves; the others drop it at once.
    let leaving = nodes.pop().expect("4 nodes");
    let leaving_id = leaving.id.clone();
    let signalled = Instant::now();
    let (status, stderr) = leaving.signal_and_wait("TERM");
    assert!(status.success(), "a graceful exit: {status}; stderr:\n{stderr}");
    log.note(format!("SIGTERM to {leaving_id}: exited after {:?}", signalled.elapsed()));
    herdcache_tests::drive(async {
        let values = etcd.values_under(PREFIX).await;
        assert!(!values.contains(&leaving_id), "its key left etcd: {values:?}");
        log.note("its key is gone from etcd");
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let ids = sorted_ids(&all);
        let took = until_listed(&all, &ids, CONVERGE, "the others drop the leaver").await;
        let since = signalled.elapsed();
        log.note(format!(
            "the 3 others dropped it {since:?} after the signal ({took:?} after its exit)"
        ));
        assert!(since < DEFAULT_LEASE_TTL / 2, "dropped after {since:?}: the revoke, not the TTL");
    });

    // SIGKILL: nothing withdrawn; the lease expires and the others drop it.
    let killed = nodes.pop().expect("3 nodes");
    let killed_id = killed.id.clone();
    drop(killed);
    let killed_at = Instant::now();
    log.note(format!("kill -9 {killed_id}"));
    herdcache_tests::drive(async {
        let values = etcd.values_under(PREFIX).await;
        assert!(values.contains(&killed_id), "a kill withdraws nothing: {values:?}");
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let ids = sorted_ids(&all);
        let limit = DEFAULT_LEASE_TTL + EXPIRY_SLACK;
        until_all(&all, limit, "the others drop the killed node", |_, m| listed(m).0 == ids).await;
        let since = killed_at.elapsed();
        log.note(format!("its lease expired: the 2 others dropped it {since:?} after the kill"));
        assert!(!etcd.values_under(PREFIX).await.contains(&killed_id), "its key expired");
        until_listed(&all, &ids, CONVERGE, "the 2 others list each other").await;
        serve_round(&all, "end").await;
        log.note("the 2 remaining nodes serve: one load per key, fetched from owners");
    });
}
