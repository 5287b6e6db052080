//! Setting a node up: the builder every runtime crate offers, and what it assembles.

use crate::inbound::{DEFAULT_MAX_INBOUND, TransportGuard};
use crate::tls::TlsConfig;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::collections::HashMap;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::discovery::{Discovery, DiscoveryTask};
use crate::front::{Clock, Front, WakeDriver};
use crate::handle::Shared;
use crate::source::{IntoSource, SharedSource};
use crate::transport::{SendBuffer, SendLimits};
use herdcache_proto::UnixTime;
use herdcache_proto::{ConfigError, KeyspaceConfig, NodeConfig};

/// A runtime crate, as its [`Builder`] sees it: how a [`Setup`] becomes a running node. The
/// value carries the runtime's own settings ([`Builder::runtime`]; herdcache-mio's worker
/// pool), its default what `Node::builder()` starts with. Every async
/// [`Runtime`](crate::Runtime) has it (the one shared driver); herdcache-mio implements it
/// for its event loop.
pub trait Start: Default + 'static {
    /// What [`Builder::start`] returns: for an async runtime, a future of the node's
    /// [`Handle`](crate::Handle) ([`Starting`]); for herdcache-mio, the
    /// [`blocking::Handle`](crate::blocking::Handle) itself.
    type Started;

    /// Binds the listener (at [`Setup::listen_addr`]), assembles the node
    /// ([`Setup::assemble`]) and starts its driver.
    fn start(self, setup: Setup) -> Self::Started;
}

impl<R: crate::Runtime> Start for R {
    type Started = Starting;

    /// Binds the listener and starts the shared async driver on `R`.
    fn start(self, setup: Setup) -> Starting {
        Box::pin(crate::async_driver::start(self, setup))
    }
}

/// What [`Builder::start`] returns on an async runtime crate: the future of the node's
/// [`Handle`](crate::Handle), which any executor can await.
pub type Starting =
    core::pin::Pin<Box<dyn Future<Output = Result<crate::Handle, StartError>> + Send + 'static>>;

type ConfigureFn = Box<dyn FnOnce(&mut NodeConfig) + Send>;

/// Everything a [`Builder`] was told, for the runtime crate to start the node from. Generic
/// over what a keyspace's data source is (`S`), so that a runtime with another kind of source
/// (a blocking one) assembles nodes the same way.
pub struct Setup<S = SharedSource> {
    listen: SocketAddr,
    advertise: Option<String>,
    cluster: Bytes,
    peers: Vec<String>,
    keyspaces: Vec<(KeyspaceConfig, S)>,
    configure: Vec<ConfigureFn>,
    idle_timeout: Option<Duration>,
    send_buffer: SendBuffer,
    stop_timeout: Duration,
    groupcache: bool,
    clock: Option<Clock>,
    discovery: Option<Box<dyn Discovery>>,
    tls: Option<TlsConfig>,
    max_inbound: usize,
}

impl<S> fmt::Debug for Setup<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setup")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("cluster", &self.cluster)
            .field("peers", &self.peers)
            .field("keyspaces", &self.keyspaces.iter().map(|(c, _)| &c.name).collect::<Vec<_>>())
            .field("idle_timeout", &self.idle_timeout)
            .field("send_buffer", &self.send_buffer)
            .field("stop_timeout", &self.stop_timeout)
            .field("groupcache", &self.groupcache)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .field("discovery", &self.discovery.as_ref().map(|provider| provider.kind()))
            .field("tls", &self.tls)
            .field("max_inbound", &self.max_inbound)
            .finish_non_exhaustive()
    }
}

impl<S> Default for Setup<S> {
    fn default() -> Self {
        Setup::new()
    }
}

/// What [`Setup::assemble`] made: the node's shared state (its front included) and the
/// transport settings its driver needs.
#[derive(Debug)]
pub struct Assembled<S = SharedSource> {
    /// What the node's handles and its driver share.
    pub shared: Arc<Shared<S>>,
    /// How long a dial may take ([`NodeConfig::connect_timeout`]).
    pub connect_timeout: Duration,
    /// Close connections without traffic for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The send-buffer policy every connection follows (sized by the node's wire limits).
    pub send_limits: SendLimits,
    /// How long a graceful stop may take before everything is closed.
    pub stop_timeout: Duration,
}

impl<S> Setup<S> {
    /// The defaults of [`Builder::new`].
    #[must_use]
    pub fn new() -> Self {
        Setup {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise: None,
            cluster: Bytes::from_static(b"herdcache"),
            peers: Vec::new(),
            keyspaces: Vec::new(),
            configure: Vec::new(),
            idle_timeout: None,
            send_buffer: SendBuffer::default(),
            stop_timeout: Duration::from_secs(10),
            groupcache: false,
            clock: None,
            discovery: None,
            tls: None,
            max_inbound: DEFAULT_MAX_INBOUND,
        }
    }

    /// Sets TLS between peers ([`Builder::tls`]).
    pub fn set_tls(&mut self, tls: TlsConfig) {
        self.tls = Some(tls);
    }

    /// Sets the inbound connection cap ([`Builder::max_inbound_connections`]).
    pub fn set_max_inbound(&mut self, max: usize) {
        self.max_inbound = max;
    }

    /// The address to bind the listener to.
    #[must_use]
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Sets the listen address ([`Builder::listen`]).
    pub fn set_listen(&mut self, address: SocketAddr) {
        self.listen = address;
    }

    /// Sets the advertised address ([`Builder::advertise`]).
    pub fn set_advertise(&mut self, address: String) {
        self.advertise = Some(address);
    }

    /// Sets the cluster label ([`Builder::cluster`]).
    pub fn set_cluster(&mut self, label: Bytes) {
        self.cluster = label;
    }

    /// Sets the member list ([`Builder::peers`]).
    pub fn set_peers(&mut self, peers: Vec<String>) {
        self.peers = peers;
    }

    /// Sets the discovery provider ([`Builder::discovery`]).
    pub fn set_discovery(&mut self, provider: Box<dyn Discovery>) {
        self.discovery = Some(provider);
    }

    /// Speaks groupcache's HTTP protocol ([`Builder::groupcache_compat`]).
    pub fn set_groupcache_compat(&mut self) {
        self.groupcache = true;
    }

    /// Adds a keyspace and its source ([`Builder::keyspace`]).
    pub fn add_keyspace(&mut self, config: KeyspaceConfig, source: S) {
        self.keyspaces.push((config, source));
    }

    /// Adds a configuration step ([`Builder::config`]).
    pub fn add_config(&mut self, configure: impl FnOnce(&mut NodeConfig) + Send + 'static) {
        self.configure.push(Box::new(configure));
    }

    /// Sets the node's clock ([`Builder::clock`]).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = Some(clock);
    }

    /// Sets the idle timeout ([`Builder::idle_timeout`]).
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle_timeout = Some(idle);
    }

    /// Sets the send-buffer limits ([`Builder::send_buffer`]).
    pub fn set_send_buffer(&mut self, buffer: SendBuffer) {
        self.send_buffer = buffer;
    }

    /// Sets the stop timeout ([`Builder::stop_timeout`]).
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.stop_timeout = timeout;
    }

    /// Builds the node once the listener is bound at `local_addr`: the configuration (node
    /// id: the advertised address, else `local_addr`, as a base URL `http://{local_addr}`
    /// (`https://` with TLS) in groupcache mode; the cluster label; the keyspaces; groupcache's protocol and ring when
    /// asked; the wall-clock time now; then the caller's adjustments in order), the front (which calls
    /// `wake` when it has work for the driver) with the initial member list, and the table of
    /// sources; then starts the discovery provider's thread, if there is one.
    ///
    /// # Errors
    /// [`StartError::DuplicateKeyspace`] when two keyspaces share a name,
    /// [`StartError::Config`] when the core refuses the configuration,
    /// [`StartError::Runtime`] when the discovery thread cannot be started.
    pub fn assemble(
        self,
        local_addr: SocketAddr,
        wake: WakeDriver,
    ) -> Result<Assembled<S>, StartError> {
        let node_id = match (self.advertise, self.groupcache) {
            (Some(advertised), _) => advertised,
            (None, false) => local_addr.to_string(),
            // Under TLS a groupcache peer is reached at an https base URL.
            (None, true) if self.tls.is_some() => format!("https://{local_addr}"),
            (None, true) => format!("http://{local_addr}"),
        };
        let mut config = NodeConfig::new(Bytes::from(node_id.clone()), self.cluster);
        let mut sources = HashMap::new();
        for (keyspace, source) in self.keyspaces {
            if sources.insert(keyspace.name.clone(), source).is_some() {
                let name = String::from_utf8_lossy(&keyspace.name).into_owned();
                return Err(StartError::DuplicateKeyspace(name));
            }
            config.keyspaces.push(keyspace);
        }
        if self.groupcache {
            config = config.with_groupcache_compat();
        }
        config.unix_time_at_start = unix_now();
        for configure in self.configure {
            configure(&mut config);
        }
        let connect_timeout = config.connect_timeout;
        let send_limits = self.send_buffer.limits(&config);
        let front = match self.clock {
            Some(clock) => Front::with_clock(config, wake, clock),
            None => Front::new(config, wake),
        }
        .map_err(StartError::Config)?;
        if !self.peers.is_empty() {
            front.set_peers(self.peers.into_iter().map(Bytes::from).collect());
        }
        let discovery = match self.discovery {
            Some(provider) => Some(
                DiscoveryTask::start(provider, node_id.clone(), front.clone())
                    .map_err(StartError::Runtime)?,
            ),
            None => None,
        };
        let transport = TransportGuard::new(self.tls, self.max_inbound);
        let shared =
            Arc::new(Shared::new(front, sources, node_id, local_addr, discovery, transport));
        Ok(Assembled {
            shared,
            connect_timeout,
            idle_timeout: self.idle_timeout,
            send_limits,
            stop_timeout: self.stop_timeout,
        })
    }
}

/// The entry point: `Node::builder()` sets up a cluster member. A runtime crate names it
/// `Node` (`herdcache_tokio::Node` is `Node<Tokio>`).
pub struct Node<R> {
    runtime: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Node<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Node")
    }
}

impl<R: Start> Node<R> {
    /// A [`Builder`] with defaults (see [`Builder::new`]).
    #[must_use]
    pub fn builder() -> Builder<R> {
        Builder::new()
    }
}

/// Sets a node up: where it listens, who its peers are, its keyspaces and limits. A runtime
/// crate names it `Builder` (`herdcache_tokio::Builder` is `Builder<Tokio>`); its `start`
/// starts the node on that runtime.
pub struct Builder<R> {
    setup: Setup,
    runtime: R,
}

impl<R: fmt::Debug> fmt::Debug for Builder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("setup", &self.setup)
            .field("runtime", &self.runtime)
            .finish()
    }
}

impl<R: Start> Default for Builder<R> {
    fn default() -> Self {
        Builder::new()
    }
}

impl<R: Start> Builder<R> {
    /// Defaults: listen on `127.0.0.1:0` (a free port), advertise the bound address, cluster
    /// `"herdcache"`, no peers (a ring of one), no keyspaces, no idle timeout, a 10 s deadline
    /// for a graceful stop, and [`NodeConfig::new`]'s limits and timeouts.
    #[must_use]
    pub fn new() -> Self {
        Builder { setup: Setup::new(), runtime: R::default() }
    }

    /// The runtime's own settings (default: `R::default()`), such as herdcache-mio's worker
    /// pool (`Mio::default().workers(4)`).
    #[must_use]
    pub fn runtime(mut self, runtime: R) -> Self {
        self.runtime = runtime;
        self
    }

    /// The address to listen on for peers; port 0 picks a free one.
    #[must_use]
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.setup.set_listen(address);
        self
    }

    /// The address peers reach this node at, which is also its node id (default: the bound
    /// address, so port 0 works; set it when listening on an unspecified address such as
    /// `0.0.0.0`). Every member must name this node the same way in its peer list. With
    /// [`groupcache_compat`](Self::groupcache_compat) it is the base URL, `http://host:port`.
    #[must_use]
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.setup.set_advertise(address.into());
        self
    }

    /// Joins a ring of Go groupcache peers: the node speaks groupcache's HTTP protocol
    /// ([`PeerProtocol::GroupcacheHttp`](herdcache_proto::PeerProtocol::GroupcacheHttp)) on its
    /// listener and to its peers, and places keys on groupcache's ring.
    ///
    /// In this mode [`advertise`](Self::advertise) is this node's base URL (default
    /// `http://{bound address}`), [`peers`](Self::peers) are base URLs (`http://host:port`,
    /// exactly as the Go peers name each other, since the ring hashes the strings), keyspace
    /// names are group names, and the cluster label is not used. Puts and deletes apply to this
    /// node only: groupcache has no writes on its wire.
    #[must_use]
    pub fn groupcache_compat(mut self) -> Self {
        self.setup.set_groupcache_compat();
        self
    }

    /// The cluster label: peers with another label are refused.
    #[must_use]
    pub fn cluster(mut self, label: impl Into<Bytes>) -> Self {
        self.setup.set_cluster(label.into());
        self
    }

    /// A secret every member shares (at least
    /// [`MIN_CLUSTER_SECRET_LEN`](herdcache_proto::MIN_CLUSTER_SECRET_LEN) bytes): a peer must
    /// prove it knows it in the hello, or it is refused
    /// ([`NodeConfig::cluster_secret`](herdcache_proto::NodeConfig::cluster_secret)). It keeps
    /// processes without it out; it does not encrypt, and frames after the hello are not
    /// authenticated. A secret that is too short fails [`start`](Self::start).
    #[must_use]
    pub fn cluster_secret(mut self, secret: impl Into<Bytes>) -> Self {
        let secret = secret.into();
        self.setup.add_config(move |config| config.cluster_secret = Some(secret));
        self
    }

    /// Where the node learns its members while it runs (see [`crate::discovery`]): a
    /// [`StaticList`](crate::discovery::StaticList), DNS, etcd, or a provider of your own.
    /// Its lists replace the one given to [`peers`](Self::peers) (which then only serves
    /// until the provider's first list). The provider runs on a thread of its own; a graceful
    /// [`Handle::stop`](crate::Handle::stop) withdraws this node from it first.
    #[must_use]
    pub fn discovery(mut self, provider: impl Discovery) -> Self {
        self.setup.set_discovery(Box::new(provider));
        self
    }

    /// The cluster's members by advertised address (static discovery); this node's own may
    /// be among them. Replace the list at run time with
    /// [`Handle::set_peers`](crate::Handle::set_peers).
    #[must_use]
    pub fn peers<I, S>(mut self, peers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.setup.set_peers(peers.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a keyspace and the data source its misses load from: an async
    /// [`DataSource`](crate::DataSource) or a [`blocking::DataSource`](crate::blocking::DataSource),
    /// on any runtime (see [`SharedSource`] for where each kind runs).
    #[must_use]
    pub fn keyspace<K>(mut self, config: KeyspaceConfig, source: impl IntoSource<K>) -> Self {
        self.setup.add_keyspace(config, source.into_shared());
        self
    }

    /// Adjusts the node's configuration (limits, timeouts, ring scheme, seed, breaker, …)
    /// after the builder filled in the node id, the cluster label, the keyspaces and the
    /// wall-clock time at start. Several calls apply in order.
    #[must_use]
    pub fn config(mut self, configure: impl FnOnce(&mut NodeConfig) + Send + 'static) -> Self {
        self.setup.add_config(configure);
        self
    }

    /// The clock the node reads (default: the process's monotonic clock,
    /// [`Instant::now`](herdcache_proto::Instant::now)): every `now` the core sees, expiry
    /// checks on hits, and [`Handle::now`](crate::Handle::now). For tests that move time on
    /// instead of sleeping, e.g. a TTL that expires without waiting for it: a clock that runs
    /// with the real one plus an offset the test raises. It must never go backwards by much
    /// (the core treats time going back as no time passing). The driver's timer still waits in
    /// real time; a deadline a jump of the clock has passed is acted on at the next wake-up.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.setup.set_clock(clock);
        self
    }

    /// Closes a connection with no traffic either way for this long (default: never; the
    /// node reconnects when it next needs the peer).
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.setup.set_idle_timeout(idle);
        self
    }

    /// How many bytes a connection may have queued for its socket (default
    /// [`SendBuffer::default`]: close it when a transmit would pass the largest frame the wire
    /// limits allow plus 1 MiB, or when its queued bytes see no write progress for 30 s; never
    /// stop reading it). A peer that sends requests and does not read the answers is closed;
    /// it cannot grow the node's memory past the hard cap. A high-water mark (opt-in) also
    /// pushes such a peer back through TCP before that; see
    /// [`SendLimits`](crate::SendLimits) for why it is off by default.
    #[must_use]
    pub fn send_buffer(mut self, buffer: SendBuffer) -> Self {
        self.setup.set_send_buffer(buffer);
        self
    }

    /// Mutual TLS between peers (see [`crate::tls`]): every peer connection, accepted or
    /// dialled, runs a TLS handshake first; each side's certificate must chain to `tls`'s
    /// CA, and its names must admit the node id it speaks for. Off by default (plain TCP).
    /// [`Handle::tls`](crate::Handle::tls) returns it, for reloads.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.setup.set_tls(tls);
        self
    }

    /// At most `max` inbound peer connections open at once, those in their TLS handshake
    /// included (default [`DEFAULT_MAX_INBOUND`](crate::DEFAULT_MAX_INBOUND)); over it a new
    /// connection is accepted and closed at once, counted
    /// ([`TransportStats::inbound_refused`](crate::TransportStats)) and logged at most once a
    /// second. Plain TCP and TLS alike.
    #[must_use]
    pub fn max_inbound_connections(mut self, max: usize) -> Self {
        self.setup.set_max_inbound(max);
        self
    }

    /// How long [`Handle::stop`](crate::Handle::stop) waits for the node to finish what is in
    /// progress before it closes everything (default 10 s).
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.setup.set_stop_timeout(timeout);
        self
    }

    /// Binds the listener, builds the node and starts its driver on the runtime `R`; for an
    /// async runtime, await the result; herdcache-mio returns once the node accepts
    /// connections.
    ///
    /// # Errors
    /// [`StartError::Bind`] when the address cannot be bound, [`StartError::DuplicateKeyspace`]
    /// when two keyspaces share a name, [`StartError::Config`] when the core refuses the
    /// configuration. Nothing was started then.
    pub fn start(self) -> R::Started {
        self.runtime.start(self.setup)
    }
}

/// The wall-clock time now, as the core counts it.
#[must_use]
pub fn unix_now() -> UnixTime {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixTime::from_micros(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX))
}

/// Why starting a node failed. Nothing was started.
#[derive(Debug)]
pub enum StartError {
    /// The listen address could not be bound.
    Bind(io::Error),
    /// Two keyspaces with this name.
    DuplicateKeyspace(String),
    /// The core refused the configuration.
    Config(ConfigError),
    /// The runtime could not set itself up (its thread, its poller, …).
    Runtime(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind(error) => write!(f, "cannot bind the listen address: {error}"),
            StartError::DuplicateKeyspace(name) => write!(f, "keyspace {name:?} added twice"),
            StartError::Config(error) => write!(f, "invalid configuration: {error}"),
            StartError::Runtime(error) => write!(f, "cannot start the runtime: {error}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind(error) | StartError::Runtime(error) => Some(error),
            StartError::Config(error) => Some(error),
            StartError::DuplicateKeyspace(_) => None,
        }
    }
}
