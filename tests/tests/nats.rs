//! The NATS discovery provider against a real nats-server (Debian's, started by the test on
//! a free loopback port): tokio nodes in this process find each other through NATS
//! announcements and membership queries, drop a member that leaves (at once, on its leave
//! announcement) or is killed (when the liveness window passes without a word from it), keep
//! their last list through a nats-server outage, and announce again after it, so that a node
//! started after the restart is learned by all.
//!
//! Skipped (with a message) where nats-server is not installed; never skipped in CI.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::{KeyspaceConfig, MemberState, Path};
use herdcache_runtime::discovery::{DEFAULT_ANNOUNCE_INTERVAL, LIVENESS_PERIODS, NatsDiscovery};
use herdcache_tests::etcd::{Timeline, wait_until};
use herdcache_tests::nats::NatsServer;
use herdcache_tests::{drive, within};
use herdcache_tokio::{Handle, Node, source_fn};

const KEYSPACE: &str = "nats-test";
const SUBJECT: &str = "herdcache.in-process";
/// How long nodes may take to see each other after they start.
const CONVERGE: Duration = Duration::from_secs(10);
/// Beyond the liveness window: the expiry runs every quarter announcement period, and the
/// status is polled every 20 ms.
const EXPIRY_SLACK: Duration = Duration::from_millis(750);

fn liveness_window() -> Duration {
    DEFAULT_ANNOUNCE_INTERVAL * LIVENESS_PERIODS
}

/// A tokio node on a one-worker runtime of its own, with NATS discovery.
struct NatsNode {
    handle: Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl NatsNode {
    async fn start(endpoint: &str) -> NatsNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("node-tokio")
            .enable_all()
            .build()
            .expect("a tokio runtime for a node");
        let source = source_fn(|key: Bytes| async move {
            Ok::<_, io::Error>(Bytes::from([b"loaded:".as_slice(), &key].concat()))
        });
        let builder = Node::builder()
            .cluster("nats-test")
            .discovery(NatsDiscovery::new(endpoint, SUBJECT))
            .keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20), source);
        let handle =
            runtime.spawn(builder.start()).await.expect("the start task").expect("the node starts");
        NatsNode { handle, runtime: Some(runtime) }
    }

    fn id(&self) -> String {
        self.handle.node_id().to_owned()
    }

    /// The ids on this node's member list, sorted.
    fn member_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.handle.members().members.into_iter().map(|member| member.id).collect();
        ids.sort();
        ids
    }

    /// Whether this node lists exactly `ids`, all alive.
    fn lists_alive(&self, ids: &[String]) -> bool {
        let members = self.handle.members();
        members.members.len() == ids.len()
            && ids.iter().all(|id| members.get(id).is_some_and(|m| m.state == MemberState::Alive))
    }

    /// The member list the provider reported last, sorted.
    fn discovered(&self) -> Vec<String> {
        self.handle.discovery().map(|status| status.members).unwrap_or_default()
    }

    fn is_healthy(&self) -> bool {
        self.handle.discovery().is_some_and(|status| status.healthy)
    }

    async fn stop(mut self) {
        self.handle.clone().stop().await;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    fn kill(mut self) {
        self.handle.kill();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            self.handle.kill();
            runtime.shutdown_background();
        }
    }
}

fn sorted_ids(nodes: &[&NatsNode]) -> Vec<String> {
    let mut ids: Vec<String> = nodes.iter().map(|node| node.id()).collect();
    ids.sort();
    ids
}

async fn start_nodes(endpoint: &str, n: usize) -> Vec<NatsNode> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(NatsNode::start(endpoint).await);
    }
    nodes
}

/// Waits until every node lists exactly `expected`, all alive; returns how long it took.
async fn converge(
    nodes: &[&NatsNode],
    expected: &[String],
    limit: Duration,
    what: &str,
) -> Duration {
    wait_until(limit, what, || nodes.iter().all(|node| node.lists_alive(expected))).await
}

/// Puts and gets a round of keys through every node: each value put on one node is read
/// back from every node, and each node fetches some keys from their owner.
async fn serve_round(nodes: &[&NatsNode], round: &str) {
    for (writer, node) in nodes.iter().enumerate() {
        for i in 0..10 {
            let key = format!("{round}/w{writer}/k{i}");
            let value = Bytes::from(format!("value of {key}"));
            within(Duration::from_secs(5), "a put", node.handle.put(KEYSPACE, &key, value))
                .await
                .unwrap_or_else(|error| panic!("put {key} on node {writer}: {error}"));
        }
    }
    for (reader, node) in nodes.iter().enumerate() {
        let mut from_peers = 0;
        for writer in 0..nodes.len() {
            for i in 0..10 {
                let key = format!("{round}/w{writer}/k{i}");
                let got =
                    within(Duration::from_secs(5), "a get", node.handle.get_value(KEYSPACE, &key))
                        .await
                        .unwrap_or_else(|error| panic!("get {key} on node {reader}: {error}"));
                assert_eq!(got.bytes, format!("value of {key}"), "node {reader}, key {key}");
                from_peers += usize::from(got.path == Path::PeerFetch);
            }
        }
        if nodes.len() > 1 {
            assert!(from_peers > 0, "node {reader} fetched no key from its owner");
        }
    }
}

#[test]
fn three_nodes_find_each_other_and_a_leave_is_heard_at_once() {
    let Some(nats) = NatsServer::start() else { return };
    drive(async {
        let log = Timeline::new("nats graceful stop");
        let nodes = start_nodes(&nats.endpoint(), 3).await;
        let all: Vec<&NatsNode> = nodes.iter().collect();
        let ids = sorted_ids(&all);
        let took = converge(&all, &ids, CONVERGE, "3 nodes list each other").await;
        log.note(format!("3 nodes list each other, all alive ({took:?})"));
        assert!(all.iter().all(|node| node.discovered() == ids && node.is_healthy()));
        serve_round(&all, "before").await;
        log.note("every node serves puts and gets, fetching from the owners");

        let mut nodes = nodes;
        let leaving = nodes.pop().expect("3 nodes");
        let leaving_id = leaving.id();
        leaving.stop().await;
        log.note(format!("node {leaving_id} stopped gracefully"));
        let rest: Vec<&NatsNode> = nodes.iter().collect();
        let remaining = sorted_ids(&rest);
        let took = wait_until(CONVERGE, "the others drop the stopped node", || {
            rest.iter().all(|node| node.discovered() == remaining && node.member_ids() == remaining)
        })
        .await;
        let window = liveness_window();
        log.note(format!("the others dropped it after {took:?} (liveness window {window:?})"));
        assert!(took < window / 2, "dropped after {took:?}: the leave, not the window");
        serve_round(&rest, "after").await;
    });
}

#[test]
fn a_killed_node_is_dropped_within_the_liveness_window() {
    let Some(nats) = NatsServer::start() else { return };
    drive(async {
        let log = Timeline::new("nats kill");
        let mut nodes = start_nodes(&nats.endpoint(), 3).await;
        let all: Vec<&NatsNode> = nodes.iter().collect();
        converge(&all, &sorted_ids(&all), CONVERGE, "3 nodes list each other").await;
        log.note("3 nodes list each other");

        let killed = nodes.pop().expect("3 nodes");
        let killed_id = killed.id();
        killed.kill();
        log.note(format!("node {killed_id} killed"));
        let rest: Vec<&NatsNode> = nodes.iter().collect();
        let remaining = sorted_ids(&rest);
        let window = liveness_window();
        let took = wait_until(window + EXPIRY_SLACK, "the providers drop the killed node", || {
            rest.iter().all(|node| node.discovered() == remaining)
        })
        .await;
        log.note(format!("the providers dropped it after {took:?} (liveness window {window:?})"));
        assert!(
            took + Duration::from_millis(100) >= window - DEFAULT_ANNOUNCE_INTERVAL,
            "dropped after {took:?}: a kill says nothing, so only the window drops it"
        );
        wait_until(CONVERGE, "the member lists follow", || {
            rest.iter().all(|node| node.member_ids() == remaining)
        })
        .await;
        serve_round(&rest, "after").await;
    });
}

#[test]
fn nodes_keep_their_list_through_a_nats_outage_and_announce_again_after() {
    let Some(mut nats) = NatsServer::start() else { return };
    let endpoint = nats.endpoint();
    drive(async {
        let log = Timeline::new("nats outage");
        let mut nodes = start_nodes(&endpoint, 3).await;
        let all: Vec<&NatsNode> = nodes.iter().collect();
        let ids = sorted_ids(&all);
        converge(&all, &ids, CONVERGE, "3 nodes list each other").await;
        log.note("3 nodes list each other");

        nats.stop();
        log.note("nats-server stopped");
        let took = wait_until(CONVERGE, "every node reports discovery unhealthy", || {
            all.iter().all(|node| !node.is_healthy())
        })
        .await;
        log.note(format!("every node reports discovery unhealthy ({took:?})"));
        // Well past the liveness window: nobody can be heard, so nobody expires.
        let outage = std::time::Instant::now();
        let mut rounds = 0;
        while outage.elapsed() < liveness_window() * 2 {
            serve_round(&all, &format!("outage{rounds}")).await;
            assert!(all.iter().all(|node| node.discovered() == ids), "the last list stays");
            assert!(all.iter().all(|node| node.lists_alive(&ids)), "the ring stays");
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let error = all[0].handle.discovery().and_then(|status| status.last_error);
        log.note(format!(
            "{:?} without nats-server: {rounds} rounds served on the last list; last error: {}",
            outage.elapsed(),
            error.unwrap_or_default()
        ));

        nats.restart();
        log.note("nats-server restarted on the same port");
        let took = wait_until(CONVERGE, "every node reports discovery healthy again", || {
            all.iter().all(|node| node.is_healthy())
        })
        .await;
        log.note(format!("every node is healthy again ({took:?})"));
        nodes.push(NatsNode::start(&endpoint).await);
        let all: Vec<&NatsNode> = nodes.iter().collect();
        let ids = sorted_ids(&all);
        let took = converge(&all, &ids, CONVERGE, "a 4th node is seen by all").await;
        assert!(all.iter().all(|node| node.discovered() == ids));
        log.note(format!("a 4th node joined; all 4 list each other after {took:?}"));
        // Announcements keep going: after another window nobody expired.
        tokio::time::sleep(liveness_window() + EXPIRY_SLACK).await;
        assert!(all.iter().all(|node| node.discovered() == ids), "announcements resumed");
        serve_round(&all, "after").await;
    });
}
