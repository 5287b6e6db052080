//! The user's side of a running node: blocking calls.

use std::fmt;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::{ConfigError, Entry, Error, KeyspaceConfig, KeyspaceStats, Value};
use herdcache_runtime::front::{Answer, KeyspaceFront, Pending};

use crate::event_loop::{CLOSE_GRACE, Command, Shared};
use crate::source::{DataSource, erase};

/// Blocks until the answer is there: at once on a hit (no waker is made then), else when the
/// node answers, which it does within the request's timeout, or with `ShuttingDown` when the
/// node stops.
fn wait<T: Answer>(mut pending: Pending<T>) -> T {
    match pending.try_take() {
        Some(answer) => answer,
        None => pending.wait(),
    }
}

fn bytes_of(data: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(data.as_ref())
}

/// The event-loop thread, and a channel that disconnects when it ends (even by a panic).
pub(crate) struct LoopThread {
    pub(crate) thread: JoinHandle<()>,
    pub(crate) exited: Receiver<()>,
}

impl LoopThread {
    /// Waits up to `limit` for the loop to end; whether it did.
    fn ended_within(&self, limit: Duration) -> bool {
        // The loop never sends: the only answers are its end and the timeout.
        !matches!(self.exited.recv_timeout(limit), Err(RecvTimeoutError::Timeout))
    }

    /// Joins the thread if it ended (it holds nothing then), else lets it go.
    fn reap(self) {
        let ended = self.ended_within(Duration::ZERO);
        if ended && self.thread.thread().id() != thread::current().id() {
            let _ = self.thread.join();
        }
    }
}

/// A running node: the cache API and the node's lifecycle. Cheap to clone; every clone talks
/// to the same node. Every call blocks the calling thread until it is answered.
///
/// The node runs until [`Handle::stop`] or [`Handle::kill`], or until the last `Handle` (and
/// [`KeyspaceHandle`]) is dropped, which kills it.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    event_loop: Mutex<Option<LoopThread>>,
    stop_timeout: Duration,
}

impl Inner {
    fn take_loop(&self) -> Option<LoopThread> {
        self.event_loop.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn kill(&self) {
        let event_loop = self.take_loop();
        self.shared.send(Command::Kill);
        self.shared.node.front().close();
        if let Some(event_loop) = event_loop {
            // A killed loop exits at its next turn: the sockets are closed when this returns.
            event_loop.ended_within(CLOSE_GRACE);
            event_loop.reap();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("node_id", &self.inner.shared.node.node_id())
            .field("local_addr", &self.inner.shared.node.local_addr())
            .finish_non_exhaustive()
    }
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>, event_loop: LoopThread, stop_timeout: Duration) -> Self {
        let event_loop = Mutex::new(Some(event_loop));
        Handle { inner: Arc::new(Inner { shared, event_loop, stop_timeout }) }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// This node's id: its advertised address.
    #[must_use]
    pub fn node_id(&self) -> &str {
        self.shared().node.node_id()
    }

    /// The address the node listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().node.local_addr()
    }

    /// The value of `key`: from this node's caches, from the owning peer, or loaded from the
    /// keyspace's data source (once in the cluster, however many callers). Returns when the
    /// value is there or the request's deadline passed (`NodeConfig::request_timeout`).
    ///
    /// # Errors
    /// Any [`Error`]: `NotFound`, `DataSource(message)`, `TimedOut`, `UnknownKeyspace`, …
    pub fn get(&self, keyspace: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Bytes, Error> {
        self.get_value(keyspace, key).map(|value| value.bytes)
    }

    /// Like [`Handle::get`], with the value's expiry and the [`Path`](crate::Path) it took.
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get_value(
        &self,
        keyspace: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<Value, Error> {
        wait(self.shared().node.front().get(keyspace.as_ref(), key.as_ref()))
    }

    /// The values of several keys of one keyspace, in order; keys are grouped by owner and
    /// fetched with one message per peer.
    pub fn get_many<I, K>(&self, keyspace: impl AsRef<[u8]>, keys: I) -> Vec<Result<Value, Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let keys = keys.into_iter().map(bytes_of).collect();
        wait(self.shared().node.front().get_many(keyspace.as_ref(), keys))
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
        let entry = Entry { key: bytes_of(key), value: value.into(), expires_at: None };
        wait(self.shared().node.front().put(keyspace.as_ref(), entry))
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
        let front = &self.shared().node.front();
        let expires_at = Some(front.now().saturating_add(ttl));
        let entry = Entry { key: bytes_of(key), value: value.into(), expires_at };
        wait(front.put(keyspace.as_ref(), entry))
    }

    /// Stores several entries; one result per entry, in order. An entry's `expires_at` is on
    /// the node's clock ([`Handle::now`]); `None` takes the keyspace's default TTL.
    pub fn put_many(
        &self,
        keyspace: impl AsRef<[u8]>,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Vec<Result<(), Error>> {
        let entries = entries.into_iter().collect();
        wait(self.shared().node.front().put_many(keyspace.as_ref(), entries))
    }

    /// Removes `key` at its owner and from every peer's hot cache; a load of the key already
    /// in flight is not cached.
    ///
    /// # Errors
    /// `Unavailable` (the owner could not be reached), `UnknownKeyspace`, …
    pub fn delete(&self, keyspace: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<(), Error> {
        wait(self.shared().node.front().delete(keyspace.as_ref(), bytes_of(key)))
    }

    /// Removes several keys; one result per key, in order.
    pub fn delete_many<I, K>(&self, keyspace: impl AsRef<[u8]>, keys: I) -> Vec<Result<(), Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let keys = keys.into_iter().map(bytes_of).collect();
        wait(self.shared().node.front().delete_many(keyspace.as_ref(), keys))
    }

    /// Removes every key of a keyspace on every member (the keyspace itself stays).
    ///
    /// # Errors
    /// `Unavailable` when a member did not confirm, `UnknownKeyspace`, …
    pub fn delete_keyspace(&self, keyspace: impl AsRef<[u8]>) -> Result<(), Error> {
        wait(self.shared().node.front().delete_keyspace(keyspace.as_ref()))
    }

    /// Creates a keyspace on this node, with the data source its misses load from. Create it
    /// on every member, with the same configuration.
    ///
    /// # Errors
    /// `DuplicateKeyspace`, `BadKeyspaceName`, … ; nothing changed then.
    pub fn create_keyspace(
        &self,
        config: KeyspaceConfig,
        source: impl DataSource,
    ) -> Result<(), ConfigError> {
        let shared = self.shared();
        shared.node.create_keyspace(config, erase(source))
    }

    /// Changes a keyspace's configuration (budget, TTL, timeouts, limiter, breaker, …); its
    /// data source stays.
    ///
    /// # Errors
    /// `UnknownKeyspace`, … ; nothing changed then.
    pub fn update_keyspace(&self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        self.shared().node.front().update_keyspace(config)
    }

    /// Removes a keyspace from this node, with its cached values and its data source.
    ///
    /// # Errors
    /// `UnknownKeyspace`; nothing changed then.
    pub fn remove_keyspace(&self, name: impl AsRef<[u8]>) -> Result<(), ConfigError> {
        let shared = self.shared();
        shared.node.remove_keyspace(name.as_ref())
    }

    /// The configuration of every keyspace.
    #[must_use]
    pub fn keyspaces(&self) -> Vec<KeyspaceConfig> {
        self.shared().node.front().keyspaces()
    }

    /// The statistics of every keyspace, by name.
    #[must_use]
    pub fn stats(&self) -> Vec<(Bytes, KeyspaceStats)> {
        let front = &self.shared().node.front();
        front
            .keyspaces()
            .into_iter()
            .filter_map(|config| front.stats(&config.name).map(|stats| (config.name, stats)))
            .collect()
    }

    /// The statistics of one keyspace.
    #[must_use]
    pub fn keyspace_stats(&self, name: impl AsRef<[u8]>) -> Option<KeyspaceStats> {
        self.shared().node.front().stats(name.as_ref())
    }

    /// A handle on one keyspace, whose `get` skips the keyspace lookup: the fast hit path.
    #[must_use]
    pub fn keyspace(&self, name: impl AsRef<[u8]>) -> Option<KeyspaceHandle> {
        let front = self.shared().node.front().keyspace(name.as_ref())?;
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
        self.shared().node.front().set_peers(peers);
    }

    /// The node's clock, on which [`Entry::expires_at`] counts.
    #[must_use]
    pub fn now(&self) -> herdcache_proto::Instant {
        self.shared().node.front().now()
    }

    /// Leaves the cluster gracefully: tells the peers, refuses new requests, finishes what is
    /// in progress (up to the builder's stop timeout), then closes every connection (writing
    /// what was transmitted, for up to 2 s more). Calls still waiting then fail with
    /// [`Error::ShuttingDown`]. Returns when the event loop has ended.
    pub fn stop(self) {
        let Some(event_loop) = self.inner.take_loop() else { return };
        let shared = self.shared();
        shared.node.front().leave();
        if !event_loop.ended_within(self.inner.stop_timeout) {
            tracing::warn!(node = shared.node.node_id(), "not drained in time: closing");
            shared.send(Command::Close);
            if !event_loop.ended_within(CLOSE_GRACE * 2) {
                shared.send(Command::Kill);
                event_loop.ended_within(CLOSE_GRACE);
            }
        }
        event_loop.reap();
        shared.node.front().close();
    }

    /// Stops the node abruptly, as a crash would: ends the event loop at once and drops every
    /// socket without telling the peers. Calls still waiting fail with
    /// [`Error::ShuttingDown`]. For fault-injection tests.
    pub fn kill(&self) {
        self.inner.kill();
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
        self.front.peek_with(key.as_ref(), read)
    }

    /// Like [`KeyspaceHandle::get`], with the value's expiry and path.
    ///
    /// # Errors
    /// As [`Handle::get`].
    pub fn get_value(&self, key: impl AsRef<[u8]>) -> Result<Value, Error> {
        wait(self.front.get(key.as_ref()))
    }
}
