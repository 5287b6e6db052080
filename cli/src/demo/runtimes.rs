//! The runtimes a demo node can run on.
//!
//! Contract:
//! - [`Runtime`] names every runtime crate this build has; [`Runtime::start`] starts a node of
//!   the demo's keyspace on it and hands back a [`DemoNode`].
//! - A [`DemoNode`] is what the demo needs of a running node, whatever its runtime: its id,
//!   its peers, its keyspace stats, clients that get through its keyspace handle, and a
//!   graceful leave. Every runtime crate hands out the same `Handle` and `KeyspaceHandle`
//!   (herdcache-runtime's; herdcache-mio's blocking ones are a facade over them), so one type
//!   serves all; only starting differs (each crate's builder, and the source's way of
//!   waiting: tokio's timer, async-io's for async-std via [`AsyncIoSlowSource`], a sleeping
//!   worker thread for mio via [`BlockingSlowSource`]). Nothing it does blocks a tokio worker
//!   thread.
//! - Clients of async runtimes are tokio tasks (`Client::run_async`: the handle's futures are
//!   executor-neutral); clients of blocking runtimes are dedicated OS threads calling the
//!   blocking facade (`Client::run_blocking`). Both hand their tally to the same [`JoinSet`],
//!   so a phase's report merges them alike.
//!
//! Adding a runtime: a variant of [`Runtime`] (the compiler then asks for its arms in
//! [`Runtime::name`], [`Runtime::blocks`] and [`Runtime::start`]; add it to [`Runtime::ALL`]
//! and to the list in `--runtimes`' help), a start function on [`DemoNode`], and its flavour
//! of [`SlowSource`] if it waits its own way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use herdcache_tokio::{KeyspaceConfig, KeyspaceStats};
use tokio::task::JoinSet;

use super::{Client, ClientTally, DemoError, KEYSPACE};
use crate::source::{AsyncIoSlowSource, BlockingSlowSource, SlowSource};

/// A runtime crate a demo node can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// herdcache-tokio: async, on the demo's own tokio runtime.
    Tokio,
    /// herdcache-async-std: async, its driver on async-std's executor, its source waiting on
    /// async-io's timer; its clients are tokio tasks all the same.
    AsyncStd,
    /// herdcache-mio: a mio event-loop thread per node, a blocking API, a synchronous source.
    Mio,
}

impl Runtime {
    /// Every runtime this build has, in the order `--runtimes all` uses.
    pub(crate) const ALL: [Runtime; 3] = [Runtime::Tokio, Runtime::AsyncStd, Runtime::Mio];

    /// The runtime's name on the command line (its crate is `herdcache-` + the name).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::AsyncStd => "async-std",
            Runtime::Mio => "mio",
        }
    }

    /// Whether its API blocks (its clients are then threads, not tasks).
    pub(crate) fn blocks(self) -> bool {
        match self {
            Runtime::Tokio | Runtime::AsyncStd => false,
            Runtime::Mio => true,
        }
    }

    /// Starts a demo node on this runtime: the demo's keyspace of `budget` bytes in front of
    /// `source`, on a free loopback port.
    pub(crate) async fn start(
        self,
        budget: u64,
        source: SlowSource,
    ) -> Result<DemoNode, DemoError> {
        let keyspace = KeyspaceConfig::new(KEYSPACE, budget);
        match self {
            Runtime::Tokio => DemoNode::start_tokio(keyspace, source).await,
            Runtime::AsyncStd => DemoNode::start_async_std(keyspace, source).await,
            Runtime::Mio => DemoNode::start_mio(keyspace, source).await,
        }
    }
}

/// The runtimes of `--runtimes`: node `i` runs on entry `i % len`. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuntimeList(Vec<Runtime>);

impl RuntimeList {
    /// The runtime of node `node`.
    pub(crate) fn of_node(&self, node: usize) -> Runtime {
        self.0[node % self.0.len()]
    }
}

/// Parses `--runtimes`: `all`, or comma-separated runtime names (repeats allowed: the list is
/// the pattern the nodes follow).
pub(crate) fn parse_runtimes(text: &str) -> Result<RuntimeList, String> {
    let known = || Runtime::ALL.map(Runtime::name).join(", ");
    if text.trim() == "all" {
        return Ok(RuntimeList(Runtime::ALL.to_vec()));
    }
    text.split(',')
        .map(|name| {
            let name = name.trim();
            Runtime::ALL.into_iter().find(|runtime| runtime.name() == name).ok_or_else(|| {
                format!("unknown runtime {name:?}: expected `all` or a list of {}", known())
            })
        })
        .collect::<Result<_, _>>()
        .map(RuntimeList)
}

/// A running demo node, whatever its runtime: every runtime crate hands out the same
/// [`Handle`](herdcache_runtime::Handle) (herdcache-mio's blocking handle is a facade over
/// it), so one type serves them all; only starting differs, and how its clients call it.
pub(crate) struct DemoNode {
    runtime: Runtime,
    node: herdcache_runtime::Handle,
    keyspace: herdcache_runtime::KeyspaceHandle,
}

impl DemoNode {
    async fn start_tokio(keyspace: KeyspaceConfig, source: SlowSource) -> Result<Self, DemoError> {
        let started = herdcache_tokio::Node::builder()
            .listen(LOOPBACK_FREE_PORT)
            .cluster(CLUSTER)
            .keyspace(keyspace, source)
            .stop_timeout(STOP_TIMEOUT)
            .start()
            .await;
        DemoNode::started(Runtime::Tokio, started)
    }

    async fn start_async_std(
        keyspace: KeyspaceConfig,
        source: SlowSource,
    ) -> Result<Self, DemoError> {
        let started = herdcache_async_std::Node::builder()
            .listen(LOOPBACK_FREE_PORT)
            .cluster(CLUSTER)
            .keyspace(keyspace, AsyncIoSlowSource::from(source))
            .stop_timeout(STOP_TIMEOUT)
            .start()
            .await;
        DemoNode::started(Runtime::AsyncStd, started)
    }

    /// Starts on a blocking-pool thread: herdcache-mio's `start` waits for its event loop.
    async fn start_mio(keyspace: KeyspaceConfig, source: SlowSource) -> Result<Self, DemoError> {
        let start = move || {
            herdcache_mio::Node::builder()
                .listen(LOOPBACK_FREE_PORT)
                .cluster(CLUSTER)
                .keyspace(keyspace, BlockingSlowSource::from(source))
                .stop_timeout(STOP_TIMEOUT)
                .start()
                .map(herdcache_runtime::Handle::from)
        };
        let started = tokio::task::spawn_blocking(start)
            .await
            .map_err(|error| DemoError::Start(Runtime::Mio, Box::new(error)))?;
        DemoNode::started(Runtime::Mio, started)
    }

    fn started(
        runtime: Runtime,
        started: Result<herdcache_runtime::Handle, herdcache_runtime::StartError>,
    ) -> Result<Self, DemoError> {
        let node = started.map_err(|error| DemoError::Start(runtime, Box::new(error)))?;
        let keyspace = node.keyspace(KEYSPACE).ok_or(DemoError::NoKeyspace)?;
        Ok(DemoNode { runtime, node, keyspace })
    }

    /// The runtime it runs on.
    pub(crate) fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// Its node id (its advertised loopback address).
    pub(crate) fn node_id(&self) -> &str {
        self.node.node_id()
    }

    /// Replaces its view of the ring's members.
    pub(crate) fn set_peers(&self, members: &[String]) {
        self.node.set_peers(members.iter().cloned());
    }

    /// Its counters for the demo keyspace.
    pub(crate) fn stats(&self) -> Option<KeyspaceStats> {
        self.node.keyspace_stats(KEYSPACE)
    }

    /// Starts `client` on this node's keyspace handle; its tally comes out of `clients`. A
    /// blocking runtime's client is a thread of its own calling the blocking facade; an async
    /// runtime's is a task of the demo's tokio runtime (the handle's futures run on any
    /// executor).
    ///
    /// # Errors
    /// When the OS refuses a client thread.
    pub(crate) fn spawn_client(
        &self,
        client: Client,
        clients: &mut JoinSet<Option<ClientTally>>,
    ) -> std::io::Result<()> {
        if !self.runtime.blocks() {
            let keyspace = self.keyspace.clone();
            clients.spawn(async move { Some(client.run_async(&keyspace).await) });
            return Ok(());
        }
        let keyspace = herdcache_runtime::blocking::KeyspaceHandle::from(self.keyspace.clone());
        let (tally_tx, tally_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name(format!("demo-client-{}", client.task)).spawn(
            move || {
                let tally = client.run_blocking(|key| keyspace.get_value(key));
                // The phase waits for every tally; it has gone only if the demo is ending.
                let _ = tally_tx.send(tally);
            },
        )?;
        // `None` when the thread panicked before it sent its tally.
        clients.spawn(async move { tally_rx.await.ok() });
        Ok(())
    }

    /// Leaves the ring gracefully; done when the node has stopped.
    pub(crate) async fn leave(self) {
        let DemoNode { node, keyspace, .. } = self;
        drop(keyspace);
        node.stop().await;
    }
}

/// Where every demo node listens: a free port on loopback.
const LOOPBACK_FREE_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// The cluster label of every demo node.
const CLUSTER: &str = "herdcache-demo";
/// How long a leaving node may take to finish what it has in progress.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_lists_parse() {
        let parsed = |text: &str| parse_runtimes(text).map(|list| list.0);
        assert_eq!(parsed("tokio"), Ok(vec![Runtime::Tokio]));
        assert_eq!(parsed("tokio,mio"), Ok(vec![Runtime::Tokio, Runtime::Mio]));
        assert_eq!(
            parsed(" mio , tokio,mio"),
            Ok(vec![Runtime::Mio, Runtime::Tokio, Runtime::Mio])
        );
        assert_eq!(parsed("all"), Ok(Runtime::ALL.to_vec()));
        assert_eq!(parsed("async-std,mio"), Ok(vec![Runtime::AsyncStd, Runtime::Mio]));
        let list = parse_runtimes("tokio,mio").expect("valid");
        let nodes: Vec<Runtime> = (0..5).map(|node| list.of_node(node)).collect();
        assert_eq!(
            nodes,
            [Runtime::Tokio, Runtime::Mio, Runtime::Tokio, Runtime::Mio, Runtime::Tokio]
        );
        for bad in ["", "tokio,", "smol", "all,tokio", "TOKIO"] {
            let error = parse_runtimes(bad).expect_err(bad);
            assert!(error.contains("tokio, async-std, mio"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn names_are_distinct() {
        for (i, a) in Runtime::ALL.iter().enumerate() {
            for b in &Runtime::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
