//! What starting and running a node takes that has nothing to do with the runtime: the
//! builder's settings, assembling the core's configuration, the data sources by keyspace, and
//! recording the core's events.
//!
//! The start error, the wall clock and the mapping of a source's answer are the core's
//! already ([`herdcache_proto::runtime`]); the rest has its counterpart there too
//! (`Setup::assemble`, `Shared`) and can move onto it.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::front::Front;
use herdcache_proto::runtime::{PANICKED, StartError, unix_now};
use herdcache_proto::{ConfigError, Event, KeyspaceConfig, LoadResult, NodeConfig};

/// A change to the node's configuration, applied after the builder filled it in.
pub(crate) type ConfigureFn = Box<dyn FnOnce(&mut NodeConfig) + Send>;

/// Everything a builder collects, whatever the runtime; `S` is the runtime's stored source.
pub(crate) struct Settings<S> {
    pub(crate) listen: SocketAddr,
    pub(crate) advertise: Option<String>,
    pub(crate) cluster: Bytes,
    pub(crate) peers: Vec<String>,
    pub(crate) keyspaces: Vec<(KeyspaceConfig, S)>,
    pub(crate) configure: Vec<ConfigureFn>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) stop_timeout: Duration,
}

impl<S> Default for Settings<S> {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise: None,
            cluster: Bytes::from_static(b"herdcache"),
            peers: Vec::new(),
            keyspaces: Vec::new(),
            configure: Vec::new(),
            idle_timeout: None,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

impl<S> fmt::Debug for Settings<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("cluster", &self.cluster)
            .field("peers", &self.peers)
            .field("keyspaces", &self.keyspaces.iter().map(|(c, _)| &c.name).collect::<Vec<_>>())
            .field("idle_timeout", &self.idle_timeout)
            .field("stop_timeout", &self.stop_timeout)
            .finish_non_exhaustive()
    }
}

/// The pieces of [`Settings`] that outlive the start.
pub(crate) struct Assembled<S> {
    /// The core's configuration (node id, cluster, keyspaces, wall clock, user changes).
    pub(crate) config: NodeConfig,
    /// Each keyspace's source, by name.
    pub(crate) sources: HashMap<Bytes, S>,
    /// The initial member list.
    pub(crate) peers: Vec<Bytes>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) stop_timeout: Duration,
}

impl<S> Settings<S> {
    /// Checks the keyspaces (before anything is bound), then builds the core's configuration
    /// once the runtime knows the bound address.
    ///
    /// # Errors
    /// [`StartError::DuplicateKeyspace`] before `bind` is called; whatever `bind` returns.
    pub(crate) fn assemble<L>(
        self,
        bind: impl FnOnce(SocketAddr) -> Result<(L, SocketAddr), StartError>,
    ) -> Result<(Assembled<S>, L, SocketAddr), StartError> {
        let mut sources = HashMap::new();
        let mut config = NodeConfig::new(Bytes::new(), self.cluster);
        for (keyspace, source) in self.keyspaces {
            if sources.insert(keyspace.name.clone(), source).is_some() {
                let name = String::from_utf8_lossy(&keyspace.name).into_owned();
                return Err(StartError::DuplicateKeyspace(name));
            }
            config.keyspaces.push(keyspace);
        }
        let (listener, local_addr) = bind(self.listen)?;
        let node_id = self.advertise.unwrap_or_else(|| local_addr.to_string());
        config.node_id = Bytes::from(node_id);
        config.unix_time_at_start = unix_now();
        for configure in self.configure {
            configure(&mut config);
        }
        let assembled = Assembled {
            config,
            sources,
            peers: self.peers.into_iter().map(Bytes::from).collect(),
            idle_timeout: self.idle_timeout,
            stop_timeout: self.stop_timeout,
        };
        Ok((assembled, listener, local_addr))
    }
}

/// What a load answers when its source panicked.
pub(crate) fn panicked() -> LoadResult {
    LoadResult::Failed(Bytes::from_static(PANICKED))
}

/// What a load answers when its keyspace has no source (removed meanwhile).
pub(crate) fn no_source() -> LoadResult {
    LoadResult::Failed(Bytes::from_static(b"no data source"))
}

/// Records a core event for observers (`tracing`); whether it is [`Event::Drained`], which
/// ends a graceful stop.
pub(crate) fn log_event(node: &str, event: Event) -> bool {
    match event {
        Event::Drained => {
            tracing::info!(node, "drained");
            return true;
        }
        Event::ConnectionRefused { conn, reason } => {
            tracing::warn!(node, conn = conn.0, ?reason, "connection refused");
        }
        Event::PeerUp { peer } => {
            tracing::debug!(node, peer = %String::from_utf8_lossy(&peer), "peer up");
        }
        other => tracing::debug!(node, event = ?other, "event"),
    }
    false
}

/// Each keyspace's data source, kept in step with the front's keyspaces.
pub(crate) struct Sources<S> {
    by_keyspace: RwLock<HashMap<Bytes, S>>,
}

impl<S: Clone> Sources<S> {
    pub(crate) fn new(sources: HashMap<Bytes, S>) -> Self {
        Sources { by_keyspace: RwLock::new(sources) }
    }

    /// The source of `keyspace`, if it has one.
    pub(crate) fn get(&self, keyspace: &[u8]) -> Option<S> {
        let sources = self.by_keyspace.read().unwrap_or_else(PoisonError::into_inner);
        sources.get(keyspace).cloned()
    }

    /// Creates the keyspace in `front` and records its source. The lock is held across the
    /// creation, so that a load of the new keyspace finds its source and a refused creation
    /// leaves the existing source in place.
    pub(crate) fn create(
        &self,
        front: &Front,
        config: KeyspaceConfig,
        source: S,
    ) -> Result<(), ConfigError> {
        let mut sources = self.by_keyspace.write().unwrap_or_else(PoisonError::into_inner);
        let name = config.name.clone();
        front.create_keyspace(config)?;
        sources.insert(name, source);
        Ok(())
    }

    /// Removes the keyspace from `front`, then its source.
    pub(crate) fn remove(&self, front: &Front, name: &[u8]) -> Result<(), ConfigError> {
        let mut sources = self.by_keyspace.write().unwrap_or_else(PoisonError::into_inner);
        front.remove_keyspace(name)?;
        sources.remove(name);
        Ok(())
    }
}
