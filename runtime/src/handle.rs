//! The user's side of a running node: the handle every async runtime crate hands out, and the
//! state it shares with the node's driver.

use crate::inbound::{TransportGuard, TransportStats};
use crate::tls::TlsConfig;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use bytes::Bytes;

use crate::discovery::{DiscoveryStatus, DiscoveryTask};
use crate::front::{Front, KeyspaceFront, Pending};
use crate::members::{Members, Subscription};
use crate::source::{IntoSource, SharedSource};
use herdcache_proto::Instant;
use herdcache_proto::{ConfigError, Entry, Error, KeyspaceConfig, KeyspaceStats, Value};

/// What a node's handles and its driver share: the front, the data source of each keyspace,
/// the node's id and address. `S` is what a data source is (a [`SharedSource`] for the async
/// runtimes).
pub struct Shared<S = SharedSource> {
    front: Front,
    sources: RwLock<HashMap<Bytes, S>>,
    node_id: String,
    local_addr: SocketAddr,
    discovery: Option<DiscoveryTask>,
    transport: Arc<TransportGuard>,
}

impl<S> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<S> Shared<S> {
    pub(super) fn new(
        front: Front,
        sources: HashMap<Bytes, S>,
        node_id: String,
        local_addr: SocketAddr,
        discovery: Option<DiscoveryTask>,
        transport: TransportGuard,
    ) -> Self {
        let (sources, transport) = (RwLock::new(sources), Arc::new(transport));
        Shared { front, sources, node_id, local_addr, discovery, transport }
    }

    /// What the node's transport guards before the core hears of a connection: the inbound
    /// cap, TLS, their counters.
    #[must_use]
    pub fn transport(&self) -> &Arc<TransportGuard> {
        &self.transport
    }

    /// What the discovery provider reported last (`None`: the node has none).
    #[must_use]
    pub fn discovery_status(&self) -> Option<DiscoveryStatus> {
        self.discovery.as_ref().map(DiscoveryTask::status)
    }

    /// A graceful stop's first step: the provider withdraws this node from its source (so
    /// the others drop it at once), bounded by `timeout`.
    async fn leave_discovery(&self, timeout: Duration) {
        if let Some(discovery) = &self.discovery {
            discovery.leave(timeout.min(DISCOVERY_LEAVE_GRACE)).await;
        }
    }

    /// A kill: the provider returns without withdrawing anything.
    fn abort_discovery(&self) {
        if let Some(discovery) = &self.discovery {
            discovery.abort();
        }
    }
}

/// The longest a graceful stop waits for the discovery provider to withdraw this node.
const DISCOVERY_LEAVE_GRACE: Duration = Duration::from_secs(3);

impl<S: Clone> Shared<S> {
    /// The node's concurrent front.
    #[must_use]
    pub fn front(&self) -> &Front {
        &self.front
    }

    /// This node's id: its advertised address.
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The data source of `keyspace`, for an `Output::Load` (`None`: the keyspace has none,
    /// answer the load failed).
    #[must_use]
    pub fn source(&self, keyspace: &[u8]) -> Option<S> {
        let sources = self.sources.read().unwrap_or_else(PoisonError::into_inner);
        sources.get(keyspace).cloned()
    }

    /// Creates a keyspace with its source. The source table is locked across the creation,
    /// so that a load of the new keyspace finds its source and a refused creation leaves the
    /// existing source in place.
    ///
    /// # Errors
    /// As [`Front::create_keyspace`]; nothing changed then.
    pub fn create_keyspace(&self, config: KeyspaceConfig, source: S) -> Result<(), ConfigError> {
        let name = config.name.clone();
        let mut sources = self.sources.write().unwrap_or_else(PoisonError::into_inner);
        self.front.create_keyspace(config)?;
        sources.insert(name, source);
        Ok(())
    }

    /// Removes a keyspace, its cached values and its source.
    ///
    /// # Errors
    /// As [`Front::remove_keyspace`]; nothing changed then.
    pub fn remove_keyspace(&self, name: &[u8]) -> Result<(), ConfigError> {
        let mut sources = self.sources.write().unwrap_or_else(PoisonError::into_inner);
        self.front.remove_keyspace(name)?;
        sources.remove(name);
        Ok(())
    }

    /// The statistics of every keyspace, by name.
    #[must_use]
    pub fn stats(&self) -> Vec<(Bytes, KeyspaceStats)> {
        let front = &self.front;
        front
            .keyspaces()
            .into_iter()
            .filter_map(|config| front.stats(&config.name).map(|stats| (config.name, stats)))
            .collect()
    }
}

/// How a [`Handle`] ends the driver of a runtime crate.
pub trait Control: Send + Sync + 'static {
    /// Called after the front was told to leave: waits up to `timeout` for the driver to end
    /// by itself (it does once the node drained), else makes it close every connection now
    /// (with a bounded grace for flushing), and aborts it if even that hangs.
    fn stop(self: Box<Self>, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// [`Control::stop`] for a thread that may block (the blocking facade's
    /// [`Handle::stop`](crate::blocking::Handle::stop)): returns once the driver ended. The
    /// default drives `stop`'s future on this thread, which works where that future needs no
    /// runtime context; a runtime whose timers do (tokio's) or whose driver is a thread
    /// (herdcache-mio) overrides it.
    fn stop_blocking(self: Box<Self>, timeout: Duration) {
        crate::source::block_on(self.stop(timeout));
    }

    /// Aborts the driver and every task and socket of the node at once, as a crash would.
    fn kill(self: Box<Self>);
}

/// A running node: the cache API and the node's lifecycle. Cheap to clone; every clone talks
/// to the same node.
///
/// The node runs until [`Handle::stop`] or [`Handle::kill`], or until the last `Handle` (and
/// [`KeyspaceHandle`]) is dropped, which kills it. Its futures complete on any executor: a
/// hit is answered in the call, anything else by the node's driver waking the caller.
/// `get` and `get_value` look the key up when called (a miss's request starts then, see
/// [`GetFuture`]); the other methods start when first polled.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    control: Mutex<Option<Box<dyn Control>>>,
    stop_timeout: Duration,
}

impl Inner {
    fn take_control(&self) -> Option<Box<dyn Control>> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.abort_discovery();
        if let Some(control) = self.take_control() {
            control.kill();
        }
        self.shared.front.close();
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("node_id", &self.inner.shared.node_id)
            .field("local_addr", &self.inner.shared.local_addr)
            .finish_non_exhaustive()
    }
}

fn bytes_of(data: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(data.as_ref())
}

impl Handle {
    /// The handle of a node whose driver a runtime crate started; `control` ends it.
    #[must_use]
    pub fn new(shared: Arc<Shared>, control: Box<dyn Control>, stop_timeout: Duration) -> Self {
        Handle {
            inner: Arc::new(Inner { shared, control: Mutex::new(Some(control)), stop_timeout }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub(crate) fn front(&self) -> &Front {
        &self.inner.shared.front
    }

    /// This node's id: its advertised address.
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.shared().node_id
    }

    /// The address the node listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// The value of `key`: from this node's caches, from the owning peer, or loaded from the
    /// keyspace's data source (once in the cluster, however many callers).
    ///
    /// The lookup happens in this call (see [`GetFuture`]): a hit is ready at once, a miss's
    /// request is on its way when `get` returns.
    ///
    /// # Errors
    /// Any [`Error`]: `NotFound`, `DataSource(message)`, `TimedOut`, `UnknownKeyspace`, …
    pub fn get(&self, keyspace: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> GetFuture {
        GetFuture { pending: self.get_value(keyspace, key) }
    }

    /// Like [`Handle::get`], with the value's expiry and the [`Path`](herdcache_proto::Path) it took:
    /// the front's [`Pending`] itself, looked up in this call as [`Handle::get`].
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get_value(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Pending<Result<Value, Error>> {
        self.front().get(keyspace.as_ref(), key.as_ref())
    }

    /// The values of several keys of one keyspace, in order; keys are grouped by owner and
    /// fetched with one message per peer.
    pub async fn get_many<I, K>(
        &self,
        keyspace: impl AsRef<[u8]>,
        keys: I,
    ) -> Vec<Result<Value, Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.request_get_many(keyspace.as_ref(), keys).await
    }

    /// The request of [`Handle::get_many`] (and of the blocking facade's), made now.
    pub(crate) fn request_get_many<K: AsRef<[u8]>>(
        &self,
        keyspace: &[u8],
        keys: impl IntoIterator<Item = K>,
    ) -> Pending<Vec<Result<Value, Error>>> {
        self.front().get_many(keyspace, keys.into_iter().map(bytes_of).collect())
    }

    /// The request of a put (with the keyspace's TTL, or `ttl` from now), made now.
    pub(crate) fn request_put(
        &self,
        keyspace: &[u8],
        key: impl AsRef<[u8]>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Pending<Result<(), Error>> {
        let front = self.front();
        let expires_at = ttl.map(|ttl| front.now().saturating_add(ttl));
        front.put(keyspace, Entry { key: bytes_of(key), value, expires_at })
    }

    /// Stores `value` under `key` (with the keyspace's default TTL) at the key's owner, which
    /// tells every peer to drop its copy.
    ///
    /// # Errors
    /// `TooLarge`, `Unavailable` (the owner could not be reached), `UnknownKeyspace`, …
    pub async fn put(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.request_put(keyspace.as_ref(), key, value.into(), None).await
    }

    /// Like [`Handle::put`], expiring `ttl` from now.
    ///
    /// # Errors
    /// As [`Handle::put`].
    pub async fn put_with_ttl(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.request_put(keyspace.as_ref(), key, value.into(), Some(ttl)).await
    }

    /// Stores several entries; one result per entry, in order. An entry's `expires_at` is on
    /// the node's clock ([`Handle::now`]); `None` takes the keyspace's default TTL.
    pub async fn put_many(
        &self,
        keyspace: impl AsRef<[u8]>,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Vec<Result<(), Error>> {
        let entries = entries.into_iter().collect();
        self.front().put_many(keyspace.as_ref(), entries).await
    }

    /// Removes `key` at its owner and from every peer's hot cache; a load of the key already
    /// in flight is not cached.
    ///
    /// # Errors
    /// `Unavailable` (the owner could not be reached), `UnknownKeyspace`, …
    pub async fn delete(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        self.front().delete(keyspace.as_ref(), bytes_of(key)).await
    }

    /// Removes several keys; one result per key, in order.
    pub async fn delete_many<I, K>(
        &self,
        keyspace: impl AsRef<[u8]>,
        keys: I,
    ) -> Vec<Result<(), Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.request_delete_many(keyspace.as_ref(), keys).await
    }

    /// The request of [`Handle::delete_many`] (and of the blocking facade's), made now.
    pub(crate) fn request_delete_many<K: AsRef<[u8]>>(
        &self,
        keyspace: &[u8],
        keys: impl IntoIterator<Item = K>,
    ) -> Pending<Vec<Result<(), Error>>> {
        self.front().delete_many(keyspace, keys.into_iter().map(bytes_of).collect())
    }

    /// Removes every key of a keyspace on every member (the keyspace itself stays).
    ///
    /// # Errors
    /// `Unavailable` when a member did not confirm, `UnknownKeyspace`, …
    pub async fn delete_keyspace(&self, keyspace: impl AsRef<[u8]>) -> Result<(), Error> {
        self.front().delete_keyspace(keyspace.as_ref()).await
    }

    /// Creates a keyspace on this node, with the data source its misses load from: an async
    /// [`DataSource`](crate::DataSource) or a [`blocking::DataSource`](crate::blocking::DataSource),
    /// on a node of any runtime. Create it on every member, with the same configuration.
    ///
    /// # Errors
    /// `DuplicateKeyspace`, `BadKeyspaceName`, … ; nothing changed then.
    pub fn create_keyspace<K>(
        &self,
        config: KeyspaceConfig,
        source: impl IntoSource<K>,
    ) -> Result<(), ConfigError> {
        self.shared().create_keyspace(config, source.into_shared())
    }

    /// Changes a keyspace's configuration (budget, TTL, timeouts, limiter, breaker, …); its
    /// data source stays.
    ///
    /// # Errors
    /// `UnknownKeyspace`, … ; nothing changed then.
    pub fn update_keyspace(&self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        self.front().update_keyspace(config)
    }

    /// Removes a keyspace from this node, with its cached values and its data source.
    ///
    /// # Errors
    /// `UnknownKeyspace`; nothing changed then.
    pub fn remove_keyspace(&self, name: impl AsRef<[u8]>) -> Result<(), ConfigError> {
        self.shared().remove_keyspace(name.as_ref())
    }

    /// The configuration of every keyspace.
    #[must_use]
    pub fn keyspaces(&self) -> Vec<KeyspaceConfig> {
        self.front().keyspaces()
    }

    /// The statistics of every keyspace, by name.
    #[must_use]
    pub fn stats(&self) -> Vec<(Bytes, KeyspaceStats)> {
        self.shared().stats()
    }

    /// The statistics of one keyspace.
    #[must_use]
    pub fn keyspace_stats(&self, name: impl AsRef<[u8]>) -> Option<KeyspaceStats> {
        self.front().stats(name.as_ref())
    }

    /// How many hellos and peer requests this node refused for want of authentication (the
    /// cluster secret) or authorization (writes, drops, clears and goodbyes from non-members).
    #[must_use]
    pub fn security_stats(&self) -> herdcache_proto::SecurityStats {
        self.front().security_stats()
    }

    /// The transport's counters: inbound connections open and refused over the cap, failed
    /// TLS handshakes.
    #[must_use]
    pub fn transport_stats(&self) -> TransportStats {
        self.shared().transport.stats()
    }

    /// The TLS configuration between peers (`None`: plain TCP); call
    /// [`TlsConfig::reload`] on it to re-read its files (on SIGHUP, say).
    #[must_use]
    pub fn tls(&self) -> Option<TlsConfig> {
        self.shared().transport.tls().cloned()
    }

    /// A handle on one keyspace, whose `get` skips the keyspace lookup: the fast hit path.
    #[must_use]
    pub fn keyspace(&self, name: impl AsRef<[u8]>) -> Option<KeyspaceHandle> {
        let front = self.front().keyspace(name.as_ref())?;
        Some(KeyspaceHandle { front, _node: Arc::clone(&self.inner) })
    }

    /// Replaces the cluster's member list (advertised addresses; this node's own may be among
    /// them) while serving: the ring is rebuilt and keys move to their new owners.
    pub fn set_peers<I, S>(&self, peers: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let peers = peers.into_iter().map(|peer| Bytes::from(peer.into())).collect();
        self.front().set_peers(peers);
    }

    /// The cluster's members as this node sees them now: id, address, state, share of the
    /// ring, connected, when last heard (this node first).
    #[must_use]
    pub fn members(&self) -> Members {
        let front = self.front();
        Members::from_view(front.members(), front.now(), 0)
    }

    /// A stream of the members' snapshots: the current one first, then one at every change
    /// (a slow subscriber gets the latest, with the count of changes it skipped); it ends
    /// when the node stops. See [`Subscription`].
    #[must_use]
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.front().clone())
    }

    /// What the discovery provider reported last: its kind, last member list, health and
    /// last error (`None`: the node was built without one).
    #[must_use]
    pub fn discovery(&self) -> Option<DiscoveryStatus> {
        self.shared().discovery_status()
    }

    /// The node's clock, on which [`Entry::expires_at`] counts.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.front().now()
    }

    /// Leaves the cluster gracefully: tells the peers, refuses new requests, finishes what is
    /// in progress (up to the builder's stop timeout), then closes every connection. Calls
    /// still waiting then fail with [`Error::ShuttingDown`].
    pub async fn stop(self) {
        let Some(control) = self.inner.take_control() else { return };
        self.shared().leave_discovery(self.inner.stop_timeout).await;
        self.front().leave();
        control.stop(self.inner.stop_timeout).await;
        self.front().close();
    }

    /// [`Handle::stop`], blocking this thread until the driver ended.
    #[cfg(not(herdcache_loom))]
    pub(crate) fn stop_blocking(self) {
        let Some(control) = self.inner.take_control() else { return };
        crate::source::block_on(self.shared().leave_discovery(self.inner.stop_timeout));
        self.front().leave();
        control.stop_blocking(self.inner.stop_timeout);
        self.front().close();
    }

    /// Stops the node abruptly, as a crash would: aborts every task and drops every socket
    /// without telling the peers. Calls still waiting fail with [`Error::ShuttingDown`]. For
    /// fault-injection tests.
    pub fn kill(&self) {
        self.shared().abort_discovery();
        if let Some(control) = self.inner.take_control() {
            control.kill();
        }
        self.front().close();
    }
}

/// One keyspace of a running node; `get` skips the keyspace lookup. Cheap to clone; keeps the
/// node running like a [`Handle`].
#[derive(Clone)]
pub struct KeyspaceHandle {
    front: KeyspaceFront,
    _node: Arc<Inner>,
}

impl fmt::Debug for KeyspaceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyspaceHandle").field("name", self.front.name()).finish_non_exhaustive()
    }
}

impl KeyspaceHandle {
    /// The keyspace's name.
    #[must_use]
    pub fn name(&self) -> &Bytes {
        self.front.name()
    }

    /// The value of `key`, as [`Handle::get`]: looked up in this call, so a hit's future is
    /// ready at once.
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> GetFuture {
        GetFuture { pending: self.get_value(key) }
    }

    /// A local hit read in place, without touching the value's reference count: `read` sees
    /// the bytes; `None` on a miss (nothing is loaded or fetched then).
    pub fn peek_with<R>(&self, key: impl AsRef<[u8]>, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.front.peek_with(key.as_ref(), read)
    }

    /// Like [`KeyspaceHandle::get`], with the value's expiry and path: the front's
    /// [`Pending`] itself.
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get_value(&self, key: impl AsRef<[u8]>) -> Pending<Result<Value, Error>> {
        self.front.get(key.as_ref())
    }
}

/// The value's bytes from a [`Handle::get`] or [`KeyspaceHandle::get`]: the front's
/// [`Pending`] with the value's expiry and path dropped on completion.
///
/// `get` looks the key up before it returns this future, which only delivers the answer: a
/// hit is ready on the first poll and allocates nothing, with no state machine around it
/// (an `async fn` would move its arguments and the `Pending` into its own state and poll
/// through it); a miss's request is already with the node. The future borrows nothing, so it
/// may outlive the handle and move to another task. Like every future of the handles it
/// completes on any executor. Dropping it abandons the answer; the request itself goes on,
/// bounded by its timeout.
#[must_use = "the answer is lost unless the future is awaited"]
#[derive(Debug)]
pub struct GetFuture {
    pending: Pending<Result<Value, Error>>,
}

impl GetFuture {
    /// Whether the answer was there when `get` returned (a cache hit, or an error found
    /// without the node's help).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.pending.is_ready()
    }
}

impl Future for GetFuture {
    type Output = Result<Bytes, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.pending).poll(cx).map(|answer| answer.map(|value| value.bytes))
    }
}
