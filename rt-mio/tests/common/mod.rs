//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use herdcache_mio::{Bytes, DataSource, Handle, KeyspaceConfig, Node};

/// A data source that counts its calls, sleeps a little, and answers `v:<key>`; keys starting
/// with `missing` are not found, keys starting with `fail` fail.
#[derive(Clone, Default)]
pub struct Counting {
    pub calls: Arc<AtomicUsize>,
    pub delay: Duration,
}

impl Counting {
    pub fn new(delay: Duration) -> Self {
        Counting { calls: Arc::default(), delay }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub enum SourceError {
    Missing,
    Broken(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Missing => f.write_str("missing"),
            SourceError::Broken(why) => write!(f, "broken: {why}"),
        }
    }
}

impl DataSource for Counting {
    type Error = SourceError;

    fn fetch(&self, key: Bytes) -> Result<Bytes, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        thread::sleep(self.delay);
        if key.starts_with(b"missing") {
            return Err(SourceError::Missing);
        }
        if key.starts_with(b"fail") {
            return Err(SourceError::Broken("database down".into()));
        }
        let mut value = b"v:".to_vec();
        value.extend_from_slice(&key);
        Ok(value.into())
    }

    fn is_not_found(&self, error: &SourceError) -> bool {
        matches!(error, SourceError::Missing)
    }
}

pub const KEYSPACE: &str = "ks";

/// Starts one node on a free loopback port with the keyspace `ks` backed by `source`.
pub fn start_node(source: Counting) -> Handle {
    Node::builder()
        .cluster("test")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source)
        // "One load per key" holds while owners answer within the peer timeout: generous,
        // for slow CI machines.
        .config(|config| config.peer_timeout = Duration::from_secs(10))
        .start()
        .expect("node starts")
}

/// Starts `n` nodes sharing `source`, each with every node (itself included) as its peers.
pub fn start_cluster(n: usize, source: &Counting) -> Vec<Handle> {
    let nodes: Vec<Handle> = (0..n).map(|_| start_node(source.clone())).collect();
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    nodes
}

/// Runs `call` on a thread of its own; fails the test instead of hanging.
pub fn within<T: Send + 'static>(what: &str, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(call());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

/// Runs every call on a thread of its own, all at once; their answers in order.
pub fn concurrently<T: Send + 'static>(
    calls: impl IntoIterator<Item = Box<dyn FnOnce() -> T + Send>>,
) -> Vec<T> {
    let threads: Vec<_> = calls.into_iter().map(thread::spawn).collect();
    threads.into_iter().map(|thread| thread.join().expect("no panic")).collect()
}
