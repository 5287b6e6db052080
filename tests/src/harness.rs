//! What a scenario sees of a node and of a cluster, whatever runtime each node runs on.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::{Error, KeyspaceStats, NodeConfig, Ring, RingScheme, Value};
use herdcache_runtime::tls::TlsConfig;
use herdcache_runtime::{Handle, SendBuffer};

use crate::source::Source;

/// A boxed future that any executor can drive.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The cluster label of every test node.
pub const CLUSTER: &str = "herdcache-tests";

/// The one keyspace every test node serves.
pub const KEYSPACE: &str = "ks";

/// Its byte budget: large enough that nothing is evicted in a scenario.
pub const KEYSPACE_BYTES: u64 = 64 << 20;

/// How to start one node.
#[derive(Clone)]
pub struct NodeSpec {
    /// The address to listen on (`127.0.0.1:0` for a fresh node, the old address for a restart).
    pub listen: SocketAddr,
    /// The address peers reach it at, which is its node id (`None`: the bound address). The
    /// hostile suite puts a proxy there.
    pub advertise: Option<String>,
    /// Every member's advertised address, this node's own included when known.
    pub peers: Vec<String>,
    /// The data source of [`KEYSPACE`].
    pub source: Arc<Source>,
    /// Adjusts the node's configuration after the runtime filled it in.
    pub tune: fn(&mut NodeConfig),
    /// The send-buffer limits of its connections.
    pub send_buffer: SendBuffer,
    /// Mutual TLS between peers (`None`: plain TCP).
    pub tls: Option<TlsConfig>,
    /// The inbound connection cap (`None`: the default).
    pub max_inbound: Option<usize>,
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSpec")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// A herdcache runtime crate, seen from the tests: it starts nodes.
///
/// A node runs on its runtime's own executor and threads, not on the test's: the futures of
/// its [`TestNode`] can be awaited from any executor.
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's name, for messages.
    fn name(&self) -> &'static str;

    /// Starts a node. An address still in use is [`io::ErrorKind::AddrInUse`].
    fn start(&self, spec: NodeSpec) -> BoxFuture<io::Result<Arc<TestNode>>>;
}

/// A running node of any runtime, serving [`KEYSPACE`]: every runtime crate hands out the
/// same [`Handle`] (herdcache-mio's blocking handle is a facade over it), so one type serves
/// them all. Its futures run on any executor.
pub struct TestNode {
    handle: Handle,
    /// The tokio runtime of a herdcache-tokio node: kept running as long as the node, and
    /// where its stop runs (it waits on tokio's timers).
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
}

impl fmt::Debug for TestNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TestNode").field(&self.handle).finish()
    }
}

impl TestNode {
    /// A node whose stop needs no particular executor.
    #[must_use]
    pub fn new(handle: Handle) -> Self {
        TestNode { handle, tokio: Mutex::new(None) }
    }

    /// A herdcache-tokio node and the runtime its driver runs on.
    #[must_use]
    pub fn on_tokio(handle: Handle, runtime: tokio::runtime::Runtime) -> Self {
        TestNode { handle, tokio: Mutex::new(Some(runtime)) }
    }

    /// The node's handle.
    #[must_use]
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Its node id (the advertised address).
    #[must_use]
    pub fn id(&self) -> String {
        self.handle.node_id().to_owned()
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Gets `key`, with the path the value took.
    pub fn get(&self, key: &str) -> BoxFuture<Result<Value, Error>> {
        let (handle, key) = (self.handle.clone(), key.to_owned());
        Box::pin(async move { handle.get_value(KEYSPACE, key).await })
    }

    /// Puts `value` under `key`.
    pub fn put(&self, key: &str, value: Bytes) -> BoxFuture<Result<(), Error>> {
        let (handle, key) = (self.handle.clone(), key.to_owned());
        Box::pin(async move { handle.put(KEYSPACE, key, value).await })
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) -> BoxFuture<Result<(), Error>> {
        let (handle, key) = (self.handle.clone(), key.to_owned());
        Box::pin(async move { handle.delete(KEYSPACE, key).await })
    }

    /// Replaces the member list.
    pub fn set_peers(&self, peers: &[String]) {
        self.handle.set_peers(peers.iter().cloned());
    }

    /// The statistics of [`KEYSPACE`].
    #[must_use]
    pub fn stats(&self) -> Option<KeyspaceStats> {
        self.handle.keyspace_stats(KEYSPACE)
    }

    /// Leaves gracefully and closes everything.
    pub fn stop(&self) -> BoxFuture<()> {
        let stop = self.handle.clone().stop();
        let tokio = self.tokio.lock().unwrap_or_else(PoisonError::into_inner);
        match tokio.as_ref() {
            Some(runtime) => {
                let stopping = runtime.spawn(stop);
                Box::pin(async move {
                    let _ = stopping.await;
                })
            }
            None => Box::pin(stop),
        }
    }

    /// Stops abruptly, as a crash would: no goodbye, every socket dropped.
    pub fn kill(&self) {
        self.handle.kill();
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a test driver's task must not; let it go instead.
        if let Some(runtime) = self.tokio.lock().unwrap_or_else(PoisonError::into_inner).take() {
            runtime.shutdown_background();
        }
    }
}

/// The configuration every scenario's nodes use unless a scenario says otherwise: the
/// defaults, with a reconnect backoff capped at 500 ms so that a restarted peer is retried
/// within a test's few seconds, and a peer timeout as long as the request timeout allows
/// (half of it), so that a slow fetch on a loaded machine does not turn into a second load
/// (a dead peer still fails fast: its connection closes).
pub fn default_tune(config: &mut NodeConfig) {
    config.reconnect_backoff_max = Duration::from_millis(500);
    config.peer_timeout = config.request_timeout / 2;
}

/// What a scenario's cluster is made of: one runtime per node (a mixed cluster is a list of
/// different runtimes).
pub type ClusterSpec = Vec<&'static dyn Runtime>;

/// One member of a [`Cluster`].
struct Member {
    runtime: &'static dyn Runtime,
    node: Arc<TestNode>,
    source: Arc<Source>,
    addr: SocketAddr,
}

/// N nodes on loopback, each with its own counting [`Source`], all in one ring.
pub struct Cluster {
    members: Vec<Member>,
    version: Arc<AtomicU64>,
    delay: Duration,
    tune: fn(&mut NodeConfig),
    send_buffer: SendBuffer,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> =
            self.members.iter().map(|m| format!("{}@{}", m.runtime.name(), m.addr)).collect();
        f.debug_struct("Cluster").field("nodes", &nodes).finish_non_exhaustive()
    }
}

/// How [`Cluster::take_down`] takes a node down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// [`TestNode::stop`]: the node says goodbye, and its peers take it off their rings.
    Stop,
    /// [`TestNode::kill`]: the peers only see the connections drop.
    Kill,
}

impl Cluster {
    /// Starts one node per runtime of `spec` on `127.0.0.1:0`, each source waiting `delay`
    /// per load, then gives every node the full member list.
    pub async fn start(spec: &ClusterSpec, delay: Duration, tune: fn(&mut NodeConfig)) -> Self {
        Cluster::start_with(spec, delay, tune, SendBuffer::default()).await
    }

    /// [`Cluster::start`] with the send-buffer limits `send_buffer` on every node.
    pub async fn start_with(
        spec: &ClusterSpec,
        delay: Duration,
        tune: fn(&mut NodeConfig),
        send_buffer: SendBuffer,
    ) -> Self {
        let version = Arc::new(AtomicU64::new(0));
        let mut members = Vec::new();
        for &runtime in spec {
            let source = Source::new(delay, Arc::clone(&version));
            let node_spec = NodeSpec {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertise: None,
                peers: Vec::new(),
                source: Arc::clone(&source),
                tune,
                send_buffer,
                tls: None,
                max_inbound: None,
            };
            let node = within(Duration::from_secs(10), "start", runtime.start(node_spec))
                .await
                .unwrap_or_else(|error| panic!("{} node starts: {error}", runtime.name()));
            let addr = node.addr();
            members.push(Member { runtime, node, source, addr });
        }
        let cluster = Cluster { members, version, delay, tune, send_buffer };
        let ids = cluster.ids();
        for member in &cluster.members {
            member.node.set_peers(&ids);
        }
        cluster
    }

    /// Number of members.
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's node id, in member order.
    #[must_use]
    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|member| member.node.id()).collect()
    }

    /// Member `i`.
    #[must_use]
    pub fn node(&self, i: usize) -> Arc<TestNode> {
        Arc::clone(&self.members[i].node)
    }

    /// Member `i`'s data source.
    #[must_use]
    pub fn source(&self, i: usize) -> &Arc<Source> {
        &self.members[i].source
    }

    /// Member `i`'s runtime name.
    #[must_use]
    pub fn runtime_name(&self, i: usize) -> &'static str {
        self.members[i].runtime.name()
    }

    /// Data-source loads so far, summed over the members.
    #[must_use]
    pub fn total_loads(&self) -> usize {
        self.members.iter().map(|member| member.source.loads()).sum()
    }

    /// Loads of `key` so far, summed over the members.
    #[must_use]
    pub fn loads_of(&self, key: &str) -> usize {
        self.members.iter().map(|member| member.source.loads_of(key)).sum()
    }

    /// The member that owns `key` on the full ring (the core's default ring scheme).
    #[must_use]
    pub fn owner(&self, key: &str) -> usize {
        let ids = self.ids();
        let ring = Ring::with_peers(RingScheme::BALANCED, ids.iter().map(String::as_bytes))
            .expect("distinct node ids");
        let owner = ring.owner(key.as_bytes()).expect("a ring with members");
        ids.iter().position(|id| id.as_bytes() == *owner).expect("the owner is a member")
    }

    /// The member among `members` that owns `key` on a ring of those members alone.
    #[must_use]
    pub fn owner_among(&self, key: &str, members: &[usize]) -> usize {
        let ids = self.ids();
        let ring =
            Ring::with_peers(RingScheme::BALANCED, members.iter().map(|&m| ids[m].as_bytes()))
                .expect("distinct node ids");
        let owner = ring.owner(key.as_bytes()).expect("a ring with members");
        ids.iter().position(|id| id.as_bytes() == *owner).expect("the owner is a member")
    }

    /// `count` keys `"<prefix>-<n>"` owned by member `owner`.
    #[must_use]
    pub fn keys_owned_by(&self, owner: usize, prefix: &str, count: usize) -> Vec<String> {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .filter(|key| self.owner(key) == owner)
            .take(count)
            .collect()
    }

    /// Changes every member's source delay (for loads that start from now on; a restarted
    /// member's new source takes the cluster's initial delay).
    pub fn set_delay(&self, delay: Duration) {
        for member in &self.members {
            member.source.set_delay(delay);
        }
    }

    /// The version the sources answer with now.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Changes what every source answers from now on; returns the new version.
    pub fn bump_version(&self) -> u64 {
        self.version.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Takes member `i` down as `how` says; the member stays in the list, down, until
    /// [`Cluster::restart`].
    pub async fn take_down(&self, i: usize, how: Down) {
        match how {
            Down::Stop => {
                within(Duration::from_secs(15), "stop", self.members[i].node.stop()).await;
            }
            Down::Kill => self.members[i].node.kill(),
        }
    }

    /// Starts a new node (with a fresh source) for member `i`, which [`Cluster::take_down`]
    /// took down `how`, on its old address with the full member list, retrying while the
    /// address is still in use. After [`Down::Stop`] the other members took it off their
    /// rings, so the test plays discovery and gives them the full list again.
    pub async fn restart(&mut self, i: usize, how: Down) {
        let member = &self.members[i];
        let source = Source::new(self.delay, Arc::clone(&self.version));
        let spec = NodeSpec {
            listen: member.addr,
            advertise: None,
            peers: self.ids(),
            source: Arc::clone(&source),
            tune: self.tune,
            send_buffer: self.send_buffer,
            tls: None,
            max_inbound: None,
        };
        let mut attempt = 0;
        let node = loop {
            attempt += 1;
            let start = member.runtime.start(spec.clone());
            match within(Duration::from_secs(10), "restart", start).await {
                Ok(node) => break node,
                Err(error) if error.kind() == io::ErrorKind::AddrInUse && attempt < 40 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!(
                    "{} node restarts on {} (attempt {attempt}): {error}",
                    member.runtime.name(),
                    member.addr
                ),
            }
        };
        assert_eq!(node.addr(), member.addr, "restarted on the same address");
        self.members[i].node = node;
        self.members[i].source = source;
        if how == Down::Stop {
            let ids = self.ids();
            for (j, member) in self.members.iter().enumerate() {
                if j != i {
                    member.node.set_peers(&ids);
                }
            }
        }
    }

    /// Stops every member gracefully (a member already killed or stopped returns at once).
    pub async fn shutdown(self) {
        let stops: Vec<_> = self.members.iter().map(|member| member.node.stop()).collect();
        for stop in stops {
            within(Duration::from_secs(15), "shutdown", stop).await;
        }
    }
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no answer within {limit:?}"),
    }
}

/// Runs a scenario's body on a fresh tokio runtime of its own (the test's driver; the nodes
/// run on their own runtimes).
pub fn drive<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("test-driver")
        .enable_all()
        .build()
        .expect("a tokio runtime for the test driver")
        .block_on(body)
}
