//! The runtimes a demo node can run on, behind one small interface.
//!
//! Contract:
//! - [`Runtime`] names every runtime crate this build has; [`Runtime::start`] starts a node of
//!   the demo's keyspace on it and hands back a [`DemoNode`].
//! - A [`DemoNode`] is what the demo needs of a running node, whatever its runtime: its id,
//!   its peers, its keyspace stats, clients that get through its keyspace handle, and a
//!   graceful leave. Nothing it does blocks a tokio worker thread: a blocking runtime's calls
//!   run on threads of their own (client threads, tokio's blocking pool).
//! - Clients of async runtimes are tokio tasks ([`Client::run_async`]: those runtimes' futures
//!   are executor-neutral); clients of blocking runtimes are dedicated OS threads
//!   ([`Client::run_blocking`]). Both hand their tally to the same [`JoinSet`], so a phase's
//!   report merges them alike.
//!
//! - The async runtime crates (herdcache-tokio, herdcache-async-std) hand out the same
//!   `Handle` and `KeyspaceHandle` types (the core's), so one [`AsyncNode`] serves both; only
//!   starting differs (each crate's builder, and the source's way of waiting: tokio's timer,
//!   or async-io's for async-std via [`AsyncIoSlowSource`]).
//!
//! Adding a runtime: a variant of [`Runtime`] (the compiler then asks for its arms in
//! [`Runtime::name`], [`Runtime::blocks`] and [`Runtime::start`]; add it to [`Runtime::ALL`]
//! and to the list in `--runtimes`' help), a start function giving an [`AsyncNode`] (an async
//! runtime whose handle is the core's) or a `DemoNode` implementation like [`MioNode`] (a
//! blocking one), and its flavour of [`SlowSource`] (the `DataSource` impl: counting shared,
//! its own way of waiting).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use herdcache_tokio::{Error, KeyspaceConfig, KeyspaceStats, Value};
use tokio::task::JoinSet;

use super::{Client, ClientTally, DemoError, KEYSPACE};
use crate::source::{AsyncIoSlowSource, SlowSource};

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
    ) -> Result<Box<dyn DemoNode>, DemoError> {
        let keyspace = KeyspaceConfig::new(KEYSPACE, budget);
        match self {
            Runtime::Tokio => AsyncNode::start_tokio(keyspace, source).await,
            Runtime::AsyncStd => AsyncNode::start_async_std(keyspace, source).await,
            Runtime::Mio => MioNode::start(keyspace, source).await,
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

/// A boxed future the demo awaits on its tokio runtime.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running demo node, whatever its runtime. See the module docs.
pub(crate) trait DemoNode: Send + Sync {
    /// The runtime it runs on.
    fn runtime(&self) -> Runtime;

    /// Its node id (its advertised loopback address).
    fn node_id(&self) -> &str;

    /// Replaces its view of the ring's members.
    fn set_peers(&self, members: &[String]);

    /// Its counters for the demo keyspace.
    fn stats(&self) -> Option<KeyspaceStats>;

    /// Starts `client` on this node's keyspace handle; its tally comes out of `clients`.
    ///
    /// # Errors
    /// When the OS refuses a client thread.
    fn spawn_client(
        &self,
        client: Client,
        clients: &mut JoinSet<Option<ClientTally>>,
    ) -> std::io::Result<()>;

    /// Leaves the ring gracefully; done when the node has stopped.
    fn leave(self: Box<Self>) -> BoxFuture;
}

/// What a client of an async runtime calls: a get through the keyspace handle, as a future
/// that runs on any executor.
pub(crate) trait AsyncKeyspace: Send + Sync + 'static {
    /// The value of `key`, with the path it took.
    fn get_value(&self, key: &[u8]) -> impl Future<Output = Result<Value, Error>> + Send;
}

/// A node of an async runtime crate: herdcache-tokio's and herdcache-async-std's handles are
/// the same types (the core's), and their futures run on any executor, so the demo's tokio
/// tasks drive the clients of both.
struct AsyncNode {
    runtime: Runtime,
    node: herdcache_runtime::Handle,
    keyspace: herdcache_runtime::KeyspaceHandle,
}

impl AsyncKeyspace for herdcache_runtime::KeyspaceHandle {
    fn get_value(&self, key: &[u8]) -> impl Future<Output = Result<Value, Error>> + Send {
        herdcache_runtime::KeyspaceHandle::get_value(self, key)
    }
}

impl AsyncNode {
    async fn start_tokio(
        keyspace: KeyspaceConfig,
        source: SlowSource,
    ) -> Result<Box<dyn DemoNode>, DemoError> {
        let started = herdcache_tokio::Node::builder()
            .listen(LOOPBACK_FREE_PORT)
            .cluster(CLUSTER)
            .keyspace(keyspace, source)
            .stop_timeout(STOP_TIMEOUT)
            .start()
            .await;
        AsyncNode::started(Runtime::Tokio, started)
    }

    async fn start_async_std(
        keyspace: KeyspaceConfig,
        source: SlowSource,
    ) -> Result<Box<dyn DemoNode>, DemoError> {
        let started = herdcache_async_std::Node::builder()
            .listen(LOOPBACK_FREE_PORT)
            .cluster(CLUSTER)
            .keyspace(keyspace, AsyncIoSlowSource::from(source))
            .stop_timeout(STOP_TIMEOUT)
            .start()
            .await;
        AsyncNode::started(Runtime::AsyncStd, started)
    }

    fn started(
        runtime: Runtime,
        started: Result<herdcache_runtime::Handle, herdcache_runtime::StartError>,
    ) -> Result<Box<dyn DemoNode>, DemoError> {
        let node = started.map_err(|error| DemoError::Start(runtime, Box::new(error)))?;
        let keyspace = node.keyspace(KEYSPACE).ok_or(DemoError::NoKeyspace)?;
        Ok(Box::new(AsyncNode { runtime, node, keyspace }))
    }
}

impl DemoNode for AsyncNode {
    fn runtime(&self) -> Runtime {
        self.runtime
    }

    fn node_id(&self) -> &str {
        self.node.node_id()
    }

    fn set_peers(&self, members: &[String]) {
        self.node.set_peers(members.iter().cloned());
    }

    fn stats(&self) -> Option<KeyspaceStats> {
        self.node.keyspace_stats(KEYSPACE)
    }

    fn spawn_client(
        &self,
        client: Client,
        clients: &mut JoinSet<Option<ClientTally>>,
    ) -> std::io::Result<()> {
        let keyspace = self.keyspace.clone();
        clients.spawn(async move { Some(client.run_async(&keyspace).await) });
        Ok(())
    }

    fn leave(self: Box<Self>) -> BoxFuture {
        let AsyncNode { node, keyspace, .. } = *self;
        drop(keyspace);
        Box::pin(node.stop())
    }
}

/// A herdcache-mio node: its calls block, so they never run on a tokio worker thread.
struct MioNode {
    node: herdcache_mio::Handle,
    keyspace: herdcache_mio::KeyspaceHandle,
}

impl MioNode {
    async fn start(
        keyspace: KeyspaceConfig,
        source: SlowSource,
    ) -> Result<Box<dyn DemoNode>, DemoError> {
        let start = move || {
            herdcache_mio::Node::builder()
                .listen(LOOPBACK_FREE_PORT)
                .cluster(CLUSTER)
                .keyspace(keyspace, source)
                .stop_timeout(STOP_TIMEOUT)
                .start()
        };
        let node = tokio::task::spawn_blocking(start)
            .await
            .map_err(|error| DemoError::Start(Runtime::Mio, Box::new(error)))?
            .map_err(|error| DemoError::Start(Runtime::Mio, Box::new(error)))?;
        let keyspace = node.keyspace(KEYSPACE).ok_or(DemoError::NoKeyspace)?;
        Ok(Box::new(MioNode { node, keyspace }))
    }
}

impl DemoNode for MioNode {
    fn runtime(&self) -> Runtime {
        Runtime::Mio
    }

    fn node_id(&self) -> &str {
        self.node.node_id()
    }

    fn set_peers(&self, members: &[String]) {
        self.node.set_peers(members.iter().cloned());
    }

    fn stats(&self) -> Option<KeyspaceStats> {
        self.node.keyspace_stats(KEYSPACE)
    }

    fn spawn_client(
        &self,
        client: Client,
        clients: &mut JoinSet<Option<ClientTally>>,
    ) -> std::io::Result<()> {
        let keyspace = self.keyspace.clone();
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

    fn leave(self: Box<Self>) -> BoxFuture {
        let MioNode { node, keyspace } = *self;
        drop(keyspace);
        Box::pin(async move {
            if let Err(error) = tokio::task::spawn_blocking(move || node.stop()).await {
                eprintln!("a herdcache-mio node's stop failed: {error}");
            }
        })
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
