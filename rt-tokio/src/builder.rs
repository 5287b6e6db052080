//! Setting a node up and starting it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herdcache_proto::front::{Front, WakeDriver};
use herdcache_proto::{ConfigError, KeyspaceConfig, NodeConfig, UnixTime};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::driver::{Driver, DriverConfig, Shared};
use crate::handle::Handle;
use crate::source::{DataSource, SharedSource, erase};

/// The entry point: `Node::builder()` sets up a cluster member.
#[derive(Debug, Clone, Copy)]
pub struct Node;

impl Node {
    /// A [`Builder`] with defaults (see [`Builder::new`]).
    #[must_use]
    pub fn builder() -> Builder {
        Builder::new()
    }
}

type ConfigureFn = Box<dyn FnOnce(&mut NodeConfig) + Send>;

/// Sets a node up: where it listens, who its peers are, its keyspaces and limits.
pub struct Builder {
    listen: SocketAddr,
    advertise: Option<String>,
    cluster: Bytes,
    peers: Vec<String>,
    keyspaces: Vec<(KeyspaceConfig, SharedSource)>,
    configure: Vec<ConfigureFn>,
    idle_timeout: Option<Duration>,
    stop_timeout: Duration,
    groupcache: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("cluster", &self.cluster)
            .field("peers", &self.peers)
            .field("keyspaces", &self.keyspaces.iter().map(|(c, _)| &c.name).collect::<Vec<_>>())
            .field("idle_timeout", &self.idle_timeout)
            .field("stop_timeout", &self.stop_timeout)
            .field("groupcache", &self.groupcache)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: listen on `127.0.0.1:0` (a free port), advertise the bound address, cluster
    /// `"herdcache"`, no peers (a ring of one), no keyspaces, no idle timeout, a 10 s deadline
    /// for a graceful stop, and [`NodeConfig::new`]'s limits and timeouts.
    #[must_use]
    pub fn new() -> Self {
        Builder {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise: None,
            cluster: Bytes::from_static(b"herdcache"),
            peers: Vec::new(),
            keyspaces: Vec::new(),
            configure: Vec::new(),
            idle_timeout: None,
            stop_timeout: Duration::from_secs(10),
            groupcache: false,
        }
    }

    /// The address to listen on for peers; port 0 picks a free one.
    #[must_use]
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    /// The address peers reach this node at, which is also its node id (default: the bound
    /// address, so port 0 works; set it when listening on an unspecified address such as
    /// `0.0.0.0`). Every member must name this node the same way in its peer list. With
    /// [`groupcache_compat`](Self::groupcache_compat) it is the base URL, `http://host:port`.
    #[must_use]
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// Joins a ring of Go groupcache peers: the node speaks groupcache's HTTP protocol
    /// ([`PeerProtocol::GroupcacheHttp`](herdcache_proto::PeerProtocol::GroupcacheHttp)) on
    /// its listener and to its peers, and places keys on groupcache's ring.
    ///
    /// In this mode [`advertise`](Self::advertise) is this node's base URL (default
    /// `http://{bound address}`), [`peers`](Self::peers) are base URLs (`http://host:port`,
    /// exactly as the Go peers name each other, since the ring hashes the strings), keyspace
    /// names are group names, and the cluster label is not used. Puts and deletes apply to this
    /// node only: groupcache has no writes on its wire.
    #[must_use]
    pub fn groupcache_compat(mut self) -> Self {
        self.groupcache = true;
        self
    }

    /// The cluster label: peers with another label are refused.
    #[must_use]
    pub fn cluster(mut self, label: impl Into<Bytes>) -> Self {
        self.cluster = label.into();
        self
    }

    /// The cluster's members by advertised address (static discovery); this node's own may
    /// be among them. Replace the list at run time with [`Handle::set_peers`].
    #[must_use]
    pub fn peers<I, S>(mut self, peers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.peers = peers.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a keyspace and the data source its misses load from.
    #[must_use]
    pub fn keyspace(mut self, config: KeyspaceConfig, source: impl DataSource) -> Self {
        self.keyspaces.push((config, erase(source)));
        self
    }

    /// Adjusts the node's configuration (limits, timeouts, ring scheme, seed, breaker, …)
    /// after the builder filled in the node id, the cluster label, the keyspaces and the
    /// wall-clock time at start. Several calls apply in order.
    #[must_use]
    pub fn config(mut self, configure: impl FnOnce(&mut NodeConfig) + Send + 'static) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    /// Closes a connection with no traffic either way for this long (default: never; the
    /// node reconnects when it next needs the peer).
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// How long [`Handle::stop`] waits for the node to finish what is in progress before it
    /// closes everything (default 10 s).
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Binds the listener, builds the node and starts its driver task on the current tokio
    /// runtime.
    ///
    /// # Errors
    /// [`StartError::Bind`] when the address cannot be bound, [`StartError::DuplicateKeyspace`]
    /// when two keyspaces share a name, [`StartError::Config`] when the core refuses the
    /// configuration.
    pub async fn start(self) -> Result<Handle, StartError> {
        let mut sources = HashMap::new();
        let mut config = NodeConfig::new(Bytes::new(), self.cluster);
        for (keyspace, source) in self.keyspaces {
            if sources.insert(keyspace.name.clone(), source).is_some() {
                let name = String::from_utf8_lossy(&keyspace.name).into_owned();
                return Err(StartError::DuplicateKeyspace(name));
            }
            config.keyspaces.push(keyspace);
        }
        let listener = TcpListener::bind(self.listen).await.map_err(StartError::Bind)?;
        let local_addr = listener.local_addr().map_err(StartError::Bind)?;
        let node_id = match (self.advertise, self.groupcache) {
            (Some(advertised), _) => advertised,
            (None, false) => local_addr.to_string(),
            (None, true) => format!("http://{local_addr}"),
        };
        config.node_id = Bytes::from(node_id.clone());
        if self.groupcache {
            config = config.with_groupcache_compat();
        }
        config.unix_time_at_start = unix_now();
        for configure in self.configure {
            configure(&mut config);
        }
        let driver_config = DriverConfig {
            connect_timeout: config.connect_timeout,
            idle_timeout: self.idle_timeout,
        };

        let wake = Arc::new(Notify::new());
        let wake_driver: WakeDriver = {
            let wake = Arc::clone(&wake);
            Arc::new(move || wake.notify_one())
        };
        let front = Front::new(config, wake_driver).map_err(StartError::Config)?;
        if !self.peers.is_empty() {
            front.set_peers(self.peers.into_iter().map(Bytes::from).collect());
        }
        let shared = Arc::new(Shared {
            front,
            sources: RwLock::new(sources),
            wake,
            stop_now: Notify::new(),
            node_id,
            local_addr,
        });
        let driver = Driver::new(Arc::clone(&shared), listener, driver_config);
        let task = tokio::spawn(driver.run());
        tracing::info!(node = shared.node_id.as_str(), %local_addr, "node started");
        Ok(Handle::new(shared, task, self.stop_timeout))
    }
}

/// The wall-clock time now, as the core counts it.
fn unix_now() -> UnixTime {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixTime::from_micros(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX))
}

/// Why [`Builder::start`] failed. Nothing was started.
#[derive(Debug)]
pub enum StartError {
    /// The listen address could not be bound.
    Bind(io::Error),
    /// Two keyspaces with this name.
    DuplicateKeyspace(String),
    /// The core refused the configuration.
    Config(ConfigError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind(error) => write!(f, "cannot bind the listen address: {error}"),
            StartError::DuplicateKeyspace(name) => write!(f, "keyspace {name:?} added twice"),
            StartError::Config(error) => write!(f, "invalid configuration: {error}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind(error) => Some(error),
            StartError::Config(error) => Some(error),
            StartError::DuplicateKeyspace(_) => None,
        }
    }
}
