//! The blocking facade over the shared handle.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use bytes::Bytes;

use crate::front::{Answer, Pending};
use crate::source::IntoSource;
use herdcache_proto::{ConfigError, Entry, Error, Instant, KeyspaceConfig, KeyspaceStats, Value};

/// Blocks until the answer is there: at once on a hit (no waker is made then), else when the
/// node answers.
fn wait<T: Answer>(mut pending: Pending<T>) -> T {
    match pending.try_take() {
        Some(answer) => answer,
        None => pending.wait(),
    }
}

/// A running node, with calls that block the calling thread until they are answered: the
/// shared [`crate::Handle`]'s API, call for call. Cheap to clone; every clone (and the async
/// handle it converts to and from) talks to the same node.
///
/// The node runs until [`Handle::stop`] or [`Handle::kill`], or until the last handle of
/// either kind (and keyspace handle) is dropped, which kills it.
#[derive(Clone)]
pub struct Handle {
    node: crate::Handle,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Handle").field(&self.node).finish()
    }
}

impl From<crate::Handle> for Handle {
    fn from(node: crate::Handle) -> Self {
        Handle { node }
    }
}

impl From<Handle> for crate::Handle {
    fn from(handle: Handle) -> Self {
        handle.node
    }
}

impl Handle {
    /// The async handle of the same node: its futures complete on any executor.
    #[must_use]
    pub fn as_async(&self) -> &crate::Handle {
        &self.node
    }

    /// This node's id: its advertised address.
    #[must_use]
    pub fn node_id(&self) -> &str {
        self.node.node_id()
    }

    /// The address the node listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr()
    }

    /// The value of `key`: from this node's caches, from the owning peer, or loaded from the
    /// keyspace's data source (once in the cluster, however many callers). Returns when the
    /// value is there or the request's deadline passed (`NodeConfig::request_timeout`); a hit
    /// returns at once.
    ///
    /// # Errors
    /// Any [`Error`]: `NotFound`, `DataSource(message)`, `TimedOut`, `UnknownKeyspace`, …
    pub fn get(&self, keyspace: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Bytes, Error> {
        self.get_value(keyspace, key).map(|value| value.bytes)
    }

    /// Like [`Handle::get`], with the value's expiry and the [`Path`](herdcache_proto::Path)
    /// it took.
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get_value(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<Value, Error> {
        wait(self.node.get_value(keyspace, key))
    }

    /// The values of several keys of one keyspace, in order; keys are grouped by owner and
    /// fetched with one message per peer.
    pub fn get_many<I, K>(&self, keyspace: impl AsRef<[u8]>, keys: I) -> Vec<Result<Value, Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        wait(self.node.request_get_many(keyspace.as_ref(), keys))
    }

    /// Stores `value` under `key` (with the keyspace's default TTL) at the key's owner, which
    /// tells every peer to drop its copy.
    ///
    /// # Errors
    /// `TooLarge`, `Unavailable` (the owner could not be reached), `UnknownKeyspace`, …
    pub fn put(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        wait(self.node.request_put(keyspace.as_ref(), key, value.into(), None))
    }

    /// Like [`Handle::put`], expiring `ttl` from now.
    ///
    /// # Errors
    /// As [`Handle::put`].
    pub fn put_with_ttl(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        wait(self.node.request_put(keyspace.as_ref(), key, value.into(), Some(ttl)))
    }

    /// Stores several entries; one result per entry, in order. An entry's `expires_at` is on
    /// the node's clock ([`Handle::now`]); `None` takes the keyspace's default TTL.
    pub fn put_many(
        &self,
        keyspace: impl AsRef<[u8]>,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Vec<Result<(), Error>> {
        let entries = entries.into_iter().collect();
        wait(self.node.front().put_many(keyspace.as_ref(), entries))
    }

    /// Removes `key` at its owner and from every peer's hot cache; a load of the key already
    /// in flight is not cached.
    ///
    /// # Errors
    /// `Unavailable` (the owner could not be reached), `UnknownKeyspace`, …
    pub fn delete(&self, keyspace: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<(), Error> {
        wait(self.node.front().delete(keyspace.as_ref(), Bytes::copy_from_slice(key.as_ref())))
    }

    /// Removes several keys; one result per key, in order.
    pub fn delete_many<I, K>(&self, keyspace: impl AsRef<[u8]>, keys: I) -> Vec<Result<(), Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        wait(self.node.request_delete_many(keyspace.as_ref(), keys))
    }

    /// Removes every key of a keyspace on every member (the keyspace itself stays).
    ///
    /// # Errors
    /// `Unavailable` when a member did not confirm, `UnknownKeyspace`, …
    pub fn delete_keyspace(&self, keyspace: impl AsRef<[u8]>) -> Result<(), Error> {
        wait(self.node.front().delete_keyspace(keyspace.as_ref()))
    }

    /// Creates a keyspace on this node, with the data source its misses load from (blocking
    /// or async). Create it on every member, with the same configuration.
    ///
    /// # Errors
    /// `DuplicateKeyspace`, `BadKeyspaceName`, … ; nothing changed then.
    pub fn create_keyspace<K>(
        &self,
        config: KeyspaceConfig,
        source: impl IntoSource<K>,
    ) -> Result<(), ConfigError> {
        self.node.create_keyspace(config, source)
    }

    /// Changes a keyspace's configuration (budget, TTL, timeouts, limiter, breaker, …); its
    /// data source stays.
    ///
    /// # Errors
    /// `UnknownKeyspace`, … ; nothing changed then.
    pub fn update_keyspace(&self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        self.node.update_keyspace(config)
    }

    /// Removes a keyspace from this node, with its cached values and its data source.
    ///
    /// # Errors
    /// `UnknownKeyspace`; nothing changed then.
    pub fn remove_keyspace(&self, name: impl AsRef<[u8]>) -> Result<(), ConfigError> {
        self.node.remove_keyspace(name)
    }

    /// The configuration of every keyspace.
    #[must_use]
    pub fn keyspaces(&self) -> Vec<KeyspaceConfig> {
        self.node.keyspaces()
    }

    /// The statistics of every keyspace, by name.
    #[must_use]
    pub fn stats(&self) -> Vec<(Bytes, KeyspaceStats)> {
        self.node.stats()
    }

    /// The statistics of one keyspace.
    #[must_use]
    pub fn keyspace_stats(&self, name: impl AsRef<[u8]>) -> Option<KeyspaceStats> {
        self.node.keyspace_stats(name)
    }

    /// How many hellos and peer requests this node refused for want of authentication or
    /// authorization (see the async handle's `security_stats`).
    #[must_use]
    pub fn security_stats(&self) -> herdcache_proto::SecurityStats {
        self.node.security_stats()
    }

    /// The transport's counters (see the async handle's `transport_stats`).
    #[must_use]
    pub fn transport_stats(&self) -> crate::TransportStats {
        self.node.transport_stats()
    }

    /// The TLS configuration between peers, for reloads (see the async handle's `tls`).
    #[must_use]
    pub fn tls(&self) -> Option<crate::tls::TlsConfig> {
        self.node.tls()
    }

    /// A handle on one keyspace, whose `get` skips the keyspace lookup: the fast hit path.
    #[must_use]
    pub fn keyspace(&self, name: impl AsRef<[u8]>) -> Option<KeyspaceHandle> {
        self.node.keyspace(name).map(KeyspaceHandle::from)
    }

    /// Replaces the cluster's member list (advertised addresses; this node's own may be among
    /// them) while serving: the ring is rebuilt and keys move to their new owners.
    pub fn set_peers<I, S>(&self, peers: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.node.set_peers(peers);
    }

    /// The cluster's members as this node sees them now (see [`crate::Handle::members`]).
    #[must_use]
    pub fn members(&self) -> crate::Members {
        self.node.members()
    }

    /// What the discovery provider reported last (see [`crate::Handle::discovery`]).
    #[must_use]
    pub fn discovery(&self) -> Option<crate::discovery::DiscoveryStatus> {
        self.node.discovery()
    }

    /// The stream of the members' snapshots (see [`crate::Handle::subscribe`]); a blocking
    /// caller reads it with [`crate::Subscription::next_blocking`].
    #[must_use]
    pub fn subscribe(&self) -> crate::Subscription {
        self.node.subscribe()
    }

    /// The node's clock, on which [`Entry::expires_at`] counts.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.node.now()
    }

    /// Leaves the cluster gracefully, as [`crate::Handle::stop`] does, and returns once the
    /// node's driver ended. Calls still waiting then fail with [`Error::ShuttingDown`].
    pub fn stop(self) {
        self.node.stop_blocking();
    }

    /// Stops the node abruptly, as a crash would (see [`crate::Handle::kill`]).
    pub fn kill(&self) {
        self.node.kill();
    }
}

/// One keyspace of a running node, with a blocking `get` that skips the keyspace lookup.
/// Cheap to clone; keeps the node running like a [`Handle`].
#[derive(Clone)]
pub struct KeyspaceHandle {
    keyspace: crate::KeyspaceHandle,
}

impl fmt::Debug for KeyspaceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::KeyspaceHandle").field(&self.keyspace).finish()
    }
}

impl From<crate::KeyspaceHandle> for KeyspaceHandle {
    fn from(keyspace: crate::KeyspaceHandle) -> Self {
        KeyspaceHandle { keyspace }
    }
}

impl From<KeyspaceHandle> for crate::KeyspaceHandle {
    fn from(handle: KeyspaceHandle) -> Self {
        handle.keyspace
    }
}

impl KeyspaceHandle {
    /// The async keyspace handle of the same keyspace.
    #[must_use]
    pub fn as_async(&self) -> &crate::KeyspaceHandle {
        &self.keyspace
    }

    /// The keyspace's name.
    #[must_use]
    pub fn name(&self) -> &Bytes {
        self.keyspace.name()
    }

    /// The value of `key`, as [`Handle::get`]. A hit is answered on this thread, without
    /// waiting for anything.
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Bytes, Error> {
        self.get_value(key).map(|value| value.bytes)
    }

    /// A local hit read in place, without touching the value's reference count: `read` sees
    /// the bytes; `None` on a miss (nothing is loaded or fetched then).
    pub fn peek_with<R>(&self, key: impl AsRef<[u8]>, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.keyspace.peek_with(key, read)
    }

    /// Like [`KeyspaceHandle::get`], with the value's expiry and path.
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get_value(&self, key: impl AsRef<[u8]>) -> Result<Value, Error> {
        wait(self.keyspace.get_value(key))
    }
}
