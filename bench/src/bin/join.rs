//! `join`: data-source loads when a fourth node joins a warm three-node cluster, without and
//! with the handoff window (the previous owner first, galaxycache's peek).
//!
//! `cargo run --release -p herdcache-bench --bin join -- [--keys N]`
//!
//! Three herdcache-tokio nodes on loopback TCP load every key once (each through its owner);
//! a fourth node starts and every node is given the four-node member list; once every node
//! reports every member connected, one pass gets every key, round-robin over the four nodes, and
//! the data-source loads of that pass are counted. Run once with `handoff_window` zero (keys
//! that moved to the new node are loaded again) and once with the default.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use bytes::Bytes;
use herdcache_proto::{Duration, KeyspaceConfig, KeyspaceStats, Path};
use herdcache_runtime::{Builder, Handle};
use herdcache_tokio::Tokio;

const KEYSPACE: &str = "join";
/// Keys per `get_many`: the nodes group them by owner, one message per peer.
const BATCH: usize = 250;

/// What one run measured.
struct Outcome {
    loads_warming: u64,
    loads_in_pass: u64,
    peek_hits: u64,
    peek_misses: u64,
    previous_owner_paths: u64,
    errors: u64,
    pass_time: StdDuration,
}

fn main() {
    let mut keys = 10_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|value| value.parse().ok())) {
            ("--keys", Some(n)) if n > 0 => keys = n,
            _ => {
                eprintln!("usage: join [--keys N]");
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let default_window = herdcache_proto::NodeConfig::new("", "").handoff_window;
    println!("join: 3 warm nodes, {keys} keys, a 4th node joins, one pass round-robin over 4");
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>11} {:>9} {:>8}",
        "handoff window", "loads (pass)", "of keys", "peek hits", "peek misses", "errors", "pass"
    );
    for window in [Duration::ZERO, default_window] {
        let outcome = runtime.block_on(run(keys, window));
        assert_eq!(outcome.loads_warming, keys as u64, "each key loaded once while warming");
        let label = if window.is_zero() {
            "0 (off: today)".to_owned()
        } else {
            format!("{} s (default)", window.as_secs())
        };
        println!(
            "{:<28} {:>12} {:>9.2}% {:>10} {:>11} {:>9} {:>6}ms",
            label,
            outcome.loads_in_pass,
            100.0 * outcome.loads_in_pass as f64 / keys as f64,
            outcome.peek_hits,
            outcome.peek_misses,
            outcome.errors,
            outcome.pass_time.as_millis(),
        );
        if !window.is_zero() {
            println!(
                "  values answered with Path::PreviousOwner in the pass: {}",
                outcome.previous_owner_paths
            );
        }
    }
}

async fn start_node(window: Duration, loads: &Arc<AtomicU64>) -> Handle {
    let counter = loads.clone();
    let source = herdcache_runtime::source_fn(move |key: Bytes| {
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut value = key.to_vec();
            value.resize(100, b'.');
            Ok::<_, String>(Bytes::from(value))
        }
    });
    Builder::<Tokio>::new()
        .cluster("join-bench")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 64 << 20), source)
        .config(move |config| config.handoff_window = window)
        .start()
        .await
        .expect("a node starts")
}

/// Gets `keys` through `node`, in batches; the errors and the values a peek answered.
async fn get_all(node: &Handle, keys: &[Bytes]) -> (u64, u64) {
    let (mut errors, mut peeked) = (0, 0);
    for batch in keys.chunks(BATCH) {
        for result in node.get_many(KEYSPACE, batch.iter().cloned()).await {
            match result {
                Ok(value) => peeked += u64::from(value.path == Path::PreviousOwner),
                Err(_) => errors += 1,
            }
        }
    }
    (errors, peeked)
}

fn stats(node: &Handle) -> KeyspaceStats {
    node.keyspace_stats(KEYSPACE).expect("the bench keyspace")
}

async fn run(count: usize, window: Duration) -> Outcome {
    let loads = Arc::new(AtomicU64::new(0));
    let keys: Vec<Bytes> = (0..count).map(|i| Bytes::from(format!("key-{i:06}"))).collect();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(window, &loads).await);
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    // Warm: each key through one node; its owner loads it once.
    let mut errors = 0;
    for (index, node) in nodes.iter().enumerate() {
        let mine: Vec<Bytes> = keys.iter().skip(index).step_by(3).cloned().collect();
        errors += get_all(node, &mine).await.0;
    }
    assert_eq!(errors, 0, "warming answered every key");
    let loads_warming = loads.load(Ordering::Relaxed);
    let before: Vec<KeyspaceStats> = nodes.iter().map(stats).collect();

    // The fourth node joins: it starts with the four-node list, and every node gets it.
    nodes.push(start_node(window, &loads).await);
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    // The members dial each other at their next heartbeat (250 ms): wait until every node
    // reports every member connected.
    let waited = StdInstant::now();
    while !nodes.iter().all(|node| node.members().members.iter().all(|member| member.connected)) {
        assert!(waited.elapsed() < StdDuration::from_secs(10), "the members connect");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }

    let start = StdInstant::now();
    let mut previous_owner_paths = 0;
    for (index, node) in nodes.iter().enumerate() {
        let mine: Vec<Bytes> = keys.iter().skip(index).step_by(4).cloned().collect();
        let (failed, peeked) = get_all(node, &mine).await;
        errors += failed;
        previous_owner_paths += peeked;
    }
    let pass_time = start.elapsed();
    let loads_in_pass = loads.load(Ordering::Relaxed) - loads_warming;
    let (mut peek_hits, mut peek_misses) = (0, 0);
    for (index, node) in nodes.iter().enumerate() {
        let now = stats(node);
        let earlier = before.get(index).copied().unwrap_or_default();
        peek_hits += now.peek_hits - earlier.peek_hits;
        peek_misses += now.peek_misses - earlier.peek_misses;
    }
    for node in nodes {
        node.stop().await;
    }
    Outcome {
        loads_warming,
        loads_in_pass,
        peek_hits,
        peek_misses,
        previous_owner_paths,
        errors,
        pass_time,
    }
}
