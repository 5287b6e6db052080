//! The concurrent front of a [`Node`]: many threads, one node (feature `std`).
//!
//! The node is `&mut self` everywhere; the front is the shape around it that every runtime
//! crate shares, so that no driver has to invent one:
//!
//! - **Hits never reach the node.** Each keyspace's entries live in a sharded store
//!   (`store.rs`) that the node writes and any thread reads under one shard's read lock. A hit
//!   passes through no channel, no task and no lock but that shard's; hits on different keys
//!   proceed in parallel.
//! - **Everything else goes through the node**, behind one mutex held only for an
//!   `handle_input` and the drain that follows: misses (which join the node's singleflight),
//!   writes, membership, and the driver's network and data-source events.
//! - **Replies go straight to the caller.** The front drains the node's outputs itself: a
//!   [`Output::Reply`] completes the caller's [`Pending`] (a future, or a blocking wait); every
//!   other [`Output`] is queued for the driver, in the node's order. When a user thread queued
//!   outputs, or moved the node's next deadline earlier than the one the driver is sleeping
//!   towards, the front calls the driver's [`WakeDriver`] once; the driver then drains with
//!   [`Front::poll_output`] until `None` and re-arms its timer from
//!   [`Front::poll_timeout_in`].
//! - **Lock order**: node mutex, then the keyspace registry, then one shard; a completion's
//!   waker runs after every lock is released.
//! - [`Front::close`] answers every waiting request `ShuttingDown` and refuses new ones; a
//!   driver calls it when it exits, so no caller waits forever.
//!
//! What stays per runtime: sockets, timers, spawning data-source calls.
//!
//! Hot-key tracking sees misses and peers' requests, not local hits (those never reach the
//! node); warmup candidates and the rates sent to peers come from those.

mod members;
mod pending;
mod store;
mod sync;

#[cfg(all(test, herdcache_loom))]
mod loom_tests;
#[cfg(all(test, not(herdcache_loom)))]
mod tests;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use bytes::Bytes;
use hashbrown::HashMap;

use members::MembersWatch;
pub use members::{MembersView, WatchPoll};
pub use pending::{Answer, Pending};
use pending::{Outcome, Slot};
pub use store::ShardedStores;
use store::{SharedStore, StoreWriter};
use sync::{Arc, Mutex, MutexGuard, RwLock, unpoison};

use herdcache_proto::Instant;
use herdcache_proto::{CacheConfig, Store, StoreFactory, Tier};
use herdcache_proto::{
    ConfigError, Entry, Error, Input, InputError, KeyspaceConfig, KeyspaceStats, Node, NodeConfig,
    Output, Path, RequestId, SecurityStats, Value,
};
use herdcache_proto::{KeyHashBuilder, key_hash_builder};

/// How the front wakes its driver when a user thread queued outputs or moved the next
/// deadline: called outside every front lock, at most once until the driver drains.
pub type WakeDriver = alloc::sync::Arc<dyn Fn() + Send + Sync>;

/// The clock the front reads for the node and for expiry checks on hits.
pub type Clock = alloc::sync::Arc<dyn Fn() -> Instant + Send + Sync>;

/// The concurrent front of one node. Cloning is cheap (a reference count); every clone is the
/// same node. See the module docs.
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

struct Inner {
    core: Mutex<Core>,
    registry: Arc<Registry>,
    wake: WakeDriver,
    clock: Clock,
    node_id: Bytes,
}

/// The keyspaces' stores, as readers find them: one copy per stripe, each behind its own
/// lock on its own cache lines, and each thread reads the copy of its stripe, so that gets on
/// two threads do not both write one lock word. Creating or removing a keyspace (rare) writes
/// every copy.
struct Registry {
    stripes: Box<[RegistryStripe]>,
}

#[repr(align(128))]
struct RegistryStripe(RwLock<HashMap<Bytes, Arc<SharedStore>, KeyHashBuilder>>);

#[cfg(not(herdcache_loom))]
const REGISTRY_STRIPES: usize = 16;
#[cfg(herdcache_loom)]
const REGISTRY_STRIPES: usize = 2;

impl Registry {
    fn new(seed: u64) -> Registry {
        let stripes = (0..REGISTRY_STRIPES)
            .map(|_| RegistryStripe(RwLock::new(HashMap::with_hasher(key_hash_builder(seed)))))
            .collect();
        Registry { stripes }
    }

    /// Runs `read` on this thread's copy.
    fn with<R>(
        &self,
        read: impl FnOnce(&HashMap<Bytes, Arc<SharedStore>, KeyHashBuilder>) -> R,
    ) -> R {
        let copy = unpoison(self.stripes[this_thread_stripe()].0.read());
        read(&copy)
    }

    fn insert(&self, name: &Bytes, store: &Arc<SharedStore>) {
        for stripe in self.stripes.iter() {
            unpoison(stripe.0.write()).insert(name.clone(), store.clone());
        }
    }

    fn remove(&self, name: &[u8]) {
        for stripe in self.stripes.iter() {
            unpoison(stripe.0.write()).remove(name);
        }
    }
}

/// The registry stripe of the calling thread: threads take stripes round-robin as they first
/// ask.
#[cfg(not(herdcache_loom))]
fn this_thread_stripe() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % REGISTRY_STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

#[cfg(herdcache_loom)]
fn this_thread_stripe() -> usize {
    0
}

struct Core {
    node: Node,
    waiting: HashMap<u64, Arc<Slot>, KeyHashBuilder>,
    /// The node's outputs for the driver: every kind but [`Output::Reply`].
    outputs: VecDeque<Output>,
    next_request: u64,
    closed: bool,
    /// The driver was woken and has not drained since.
    woken: bool,
    /// The deadline the driver last read; a user call that moves the node's next deadline
    /// earlier wakes it.
    armed: Option<Instant>,
    /// The members' view as subscribers last saw it, and who waits for its next change.
    members: MembersWatch,
}

/// Makes each keyspace's sharded store and lists it in the registry.
struct SharedStores {
    registry: Arc<Registry>,
}

impl StoreFactory for SharedStores {
    fn create(&mut self, name: &Bytes, config: CacheConfig) -> Box<dyn Store> {
        let writer = StoreWriter::new(config);
        self.registry.insert(name, &writer.shared());
        Box::new(writer)
    }
}

/// A cheap handle on one keyspace of a [`Front`]: its gets skip the keyspace lookup. After
/// the keyspace is removed it only misses (and the node answers `UnknownKeyspace`).
#[derive(Clone)]
pub struct KeyspaceFront {
    name: Bytes,
    store: Arc<SharedStore>,
    front: Front,
}

impl KeyspaceFront {
    /// The keyspace's name.
    #[must_use]
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// Gets `key`: ready at once on a hit, else the node's answer when it comes.
    pub fn get(&self, key: &[u8]) -> Pending<Result<Value, Error>> {
        match self.front.hit(&self.store, key) {
            Some(value) => Pending::ready(Ok(value)),
            None => self.front.miss(&self.name, key),
        }
    }

    /// A hit without touching the value's reference count: `read` sees the bytes in place,
    /// under the shard's read lock (keep it short). `None` on a miss, which this does not
    /// load.
    pub fn peek_with<R>(&self, key: &[u8], read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let clock = &self.front.inner.clock;
        self.store.read(key, || clock(), |_, value, _| read(value))
    }
}

impl core::fmt::Debug for KeyspaceFront {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyspaceFront").field("name", &self.name).finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Front {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Front").field("node_id", &self.inner.node_id).finish_non_exhaustive()
    }
}

fn path_of(tier: Tier) -> Path {
    match tier {
        Tier::Main => Path::LocalHit,
        Tier::Hot => Path::HotHit,
    }
}

impl Front {
    /// A front for a new node, on the process's monotonic clock ([`Instant::now`]).
    pub fn new(config: NodeConfig, wake: WakeDriver) -> Result<Front, ConfigError> {
        Front::with_clock(config, wake, alloc::sync::Arc::new(Instant::now))
    }

    /// A front for a new node, reading `clock`.
    pub fn with_clock(
        config: NodeConfig,
        wake: WakeDriver,
        clock: Clock,
    ) -> Result<Front, ConfigError> {
        let registry = Arc::new(Registry::new(config.seed));
        let node_id = config.node_id.clone();
        let hasher = key_hash_builder(config.seed);
        let factory = SharedStores { registry: registry.clone() };
        let node = Node::with_stores(config, clock(), Box::new(factory))?;
        let members = MembersWatch::new(&node);
        let core = Core {
            node,
            waiting: HashMap::with_hasher(hasher),
            outputs: VecDeque::new(),
            next_request: 1,
            closed: false,
            woken: false,
            armed: None,
            members,
        };
        Ok(Front {
            inner: Arc::new(Inner { core: Mutex::new(core), registry, wake, clock, node_id }),
        })
    }

    /// The node's id.
    #[must_use]
    pub fn node_id(&self) -> Bytes {
        self.inner.node_id.clone()
    }

    /// The front's clock now.
    #[must_use]
    pub fn now(&self) -> Instant {
        (self.inner.clock)()
    }

    /// A handle on one keyspace, for gets without the keyspace lookup.
    #[must_use]
    pub fn keyspace(&self, name: &[u8]) -> Option<KeyspaceFront> {
        let (name, store) = self.inner.registry.with(|registry| {
            registry.get_key_value(name).map(|(name, store)| (name.clone(), store.clone()))
        })?;
        Some(KeyspaceFront { name, store, front: self.clone() })
    }

    /// Gets `key`: ready at once on a hit, else the node's answer when it comes.
    pub fn get(&self, keyspace: &[u8], key: &[u8]) -> Pending<Result<Value, Error>> {
        let hit = self
            .inner
            .registry
            .with(|registry| registry.get(keyspace).map(|store| self.hit(store, key)));
        match hit {
            Some(Some(value)) => Pending::ready(Ok(value)),
            Some(None) => self.miss(keyspace, key),
            None if self.is_closed() => Pending::failed(Error::ShuttingDown, 1),
            None => Pending::failed(Error::UnknownKeyspace, 1),
        }
    }

    fn hit(&self, store: &SharedStore, key: &[u8]) -> Option<Value> {
        let clock = &self.inner.clock;
        store.read(
            key,
            || clock(),
            |tier, bytes, expires_at| Value {
                bytes: bytes.clone(),
                expires_at,
                path: path_of(tier),
            },
        )
    }

    fn miss(&self, keyspace: &[u8], key: &[u8]) -> Pending<Result<Value, Error>> {
        let (keyspace, key) = (Bytes::copy_from_slice(keyspace), Bytes::copy_from_slice(key));
        self.request(1, |request| Input::Get { request, keyspace, key, timeout: None })
    }

    /// Gets several keys of one keyspace; one result per key, in order. Hits are served from
    /// the node's store too (a batch goes to the node in one piece, so its misses are grouped
    /// by owner).
    pub fn get_many(
        &self,
        keyspace: &[u8],
        keys: Vec<Bytes>,
    ) -> Pending<Vec<Result<Value, Error>>> {
        let keyspace = Bytes::copy_from_slice(keyspace);
        self.request(keys.len(), |request| Input::GetMany {
            request,
            keyspace,
            keys,
            timeout: None,
        })
    }

    /// Stores a value at the key's owner, which tells every peer to drop its copy.
    pub fn put(&self, keyspace: &[u8], entry: Entry) -> Pending<Result<(), Error>> {
        let keyspace = Bytes::copy_from_slice(keyspace);
        self.request(1, |request| Input::Put { request, keyspace, entry, timeout: None })
    }

    /// Stores several values; one result per entry, in order.
    pub fn put_many(
        &self,
        keyspace: &[u8],
        entries: Vec<Entry>,
    ) -> Pending<Vec<Result<(), Error>>> {
        let keyspace = Bytes::copy_from_slice(keyspace);
        self.request(entries.len(), |request| Input::PutMany {
            request,
            keyspace,
            entries,
            timeout: None,
        })
    }

    /// Removes a key everywhere; a load of it already in flight is not cached.
    pub fn delete(&self, keyspace: &[u8], key: Bytes) -> Pending<Result<(), Error>> {
        let keyspace = Bytes::copy_from_slice(keyspace);
        self.request(1, |request| Input::Delete { request, keyspace, key, timeout: None })
    }

    /// Removes several keys everywhere; one result per key, in order.
    pub fn delete_many(
        &self,
        keyspace: &[u8],
        keys: Vec<Bytes>,
    ) -> Pending<Vec<Result<(), Error>>> {
        let keyspace = Bytes::copy_from_slice(keyspace);
        self.request(keys.len(), |request| Input::DeleteMany {
            request,
            keyspace,
            keys,
            timeout: None,
        })
    }

    /// Deletes every key of the keyspace on every node (the keyspace stays).
    pub fn delete_keyspace(&self, keyspace: &[u8]) -> Pending<Result<(), Error>> {
        let keyspace = Bytes::copy_from_slice(keyspace);
        self.request(1, |request| Input::DeleteKeyspace { request, keyspace, timeout: None })
    }

    /// Creates a keyspace on this node.
    pub fn create_keyspace(&self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        self.with_node(|node| node.create_keyspace(config))
    }

    /// Changes a keyspace's settings on this node.
    pub fn update_keyspace(&self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        self.with_node(|node| node.update_keyspace(config))
    }

    /// Removes a keyspace and its data from this node.
    pub fn remove_keyspace(&self, name: &[u8]) -> Result<(), ConfigError> {
        self.with_node(|node| node.remove_keyspace(name))?;
        self.inner.registry.remove(name);
        Ok(())
    }

    /// The keyspaces' settings.
    #[must_use]
    pub fn keyspaces(&self) -> Vec<KeyspaceConfig> {
        self.with_node(|node| node.keyspaces().cloned().collect())
    }

    /// A keyspace's counters, hits served by the front included.
    #[must_use]
    pub fn stats(&self, keyspace: &[u8]) -> Option<KeyspaceStats> {
        let mut stats = self.with_node(|node| node.keyspace_stats(keyspace))?;
        // The store counts every hit; the node only those that reached it.
        let front_main = stats.cache.main.hits.saturating_sub(stats.cache_hits);
        let front_hot = stats.cache.hot.hits.saturating_sub(stats.hot_hits);
        stats.gets += front_main + front_hot;
        stats.cache_hits += front_main;
        stats.hot_hits += front_hot;
        Some(stats)
    }

    /// How many hellos and peer requests the node refused for want of authentication or
    /// authorization.
    #[must_use]
    pub fn security_stats(&self) -> SecurityStats {
        self.with_node(|node| node.security_stats())
    }

    /// Replaces the cluster's members (node ids; this node's own included or not).
    pub fn set_peers(&self, peers: Vec<Bytes>) {
        let now = self.now();
        self.with_node(|node| node.handle_input(now, Input::SetPeers(peers)))
            .unwrap_or_else(|_| unreachable!("SetPeers is always accepted"));
    }

    /// Leaves the cluster gracefully: peers are told, new requests refused, what is in
    /// progress finishes, then the driver sees [`Event::Drained`](herdcache_proto::Event::Drained).
    pub fn leave(&self) {
        let now = self.now();
        self.with_node(|node| node.handle_input(now, Input::Leave))
            .unwrap_or_else(|_| unreachable!("Leave is always accepted"));
    }

    /// Answers every waiting request `ShuttingDown`, refuses new ones, and empties the stores
    /// (a node that no longer hears of writes must not serve hits). Drivers call it when they
    /// stop, so that no caller waits forever.
    pub fn close(&self) {
        let mut core = self.lock();
        core.closed = true;
        let waiting: Vec<Arc<Slot>> = core.waiting.drain().map(|(_, slot)| slot).collect();
        let names: Vec<Bytes> = core.node.keyspaces().map(|config| config.name.clone()).collect();
        for name in names {
            // Dropping the keyspace drops its store writer, which empties the shards.
            let _ = core.node.remove_keyspace(&name);
            self.inner.registry.remove(&name);
        }
        // Its flights were answered `UnknownKeyspace` to nobody: every waiter is gone already.
        let _ = core.drain();
        let subscribers = core.members.close();
        drop(core);
        subscribers.into_iter().for_each(core::task::Waker::wake);
        for slot in waiting {
            slot.complete(Err(Error::ShuttingDown));
        }
    }

    /// The members' view now: this node first, then every member on its list, with the
    /// version subscribers compare.
    #[must_use]
    pub fn members(&self) -> MembersView {
        self.lock().members_view()
    }

    /// The members' view when its version is not `seen` (any version when `None`), else
    /// registers the task's waker for the next change; [`WatchPoll::Closed`] once the node
    /// stopped.
    pub fn poll_members(&self, seen: Option<u64>, cx: &mut core::task::Context<'_>) -> WatchPoll {
        let mut core = self.lock();
        if core.members.is_closed() {
            return WatchPoll::Closed;
        }
        if seen == Some(core.members.version()) {
            core.members.wait(cx.waker());
            return WatchPoll::Pending;
        }
        WatchPoll::Changed(core.members_view())
    }

    /// Whether [`Front::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Feeds the driver's input (network, data source) to the node. Drain
    /// [`Front::poll_output`] afterwards.
    pub fn handle_input(&self, input: Input<'_>) -> Result<(), InputError> {
        let now = self.now();
        let mut core = self.lock();
        if matches!(input, Input::Closed { .. } | Input::ConnectFailed { .. }) {
            // A member's `connected` may change without an event of the node's.
            core.members.mark_dirty();
        }
        let result = core.node.handle_input(now, input);
        let completions = core.drain();
        drop(core);
        complete(completions);
        result
    }

    /// Lets the node act on the passing of time. Drain [`Front::poll_output`] afterwards.
    pub fn handle_timeout(&self) {
        let now = self.now();
        let mut core = self.lock();
        core.node.handle_timeout(now);
        let completions = core.drain();
        drop(core);
        complete(completions);
    }

    /// When [`Front::handle_timeout`] is next due; reading it re-arms the driver's timer, so
    /// the front wakes the driver if a user call moves it earlier.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut core = self.lock();
        let at = core.node.poll_timeout();
        core.armed = at;
        at
    }

    /// How long from now until [`Front::handle_timeout`] is due (zero when overdue); `None`
    /// when no timer is pending.
    pub fn poll_timeout_in(&self) -> Option<core::time::Duration> {
        let at = self.poll_timeout()?;
        Some(at.saturating_duration_since(self.now()))
    }

    /// The next output for the driver (never an [`Output::Reply`]: the front delivers those
    /// itself), in the node's order; drain until `None`. Outputs queued while the driver
    /// drains are returned in the same drain; once it returned `None`, the next one queued
    /// by a user call wakes the driver.
    #[must_use]
    pub fn poll_output(&self) -> Option<Output> {
        let mut core = self.lock();
        let output = core.outputs.pop_front();
        if output.is_none() {
            core.woken = false;
        }
        output
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        unpoison(self.inner.core.lock())
    }

    /// Runs `f` on the node, then delivers what it replied and wakes the driver if needed.
    fn with_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        let mut core = self.lock();
        let result = f(&mut core.node);
        let completions = core.drain();
        let wake = core.needs_wake();
        drop(core);
        complete(completions);
        if wake {
            (self.inner.wake)();
        }
        result
    }

    /// Sends a request to the node; its answer completes the returned [`Pending`].
    fn request<T: Answer>(
        &self,
        parts: usize,
        input: impl FnOnce(RequestId) -> Input<'static>,
    ) -> Pending<T> {
        let now = self.now();
        let mut core = self.lock();
        if core.closed {
            return Pending::failed(Error::ShuttingDown, parts);
        }
        let id = core.next_request;
        core.next_request += 1;
        match core.node.handle_input(now, input(RequestId(id))) {
            Ok(()) => {}
            Err(InputError::Overloaded(_)) => return Pending::failed(Error::Overloaded, parts),
            Err(_) => return Pending::failed(Error::BadRequest, parts),
        }
        let slot = Slot::new();
        core.waiting.insert(id, slot.clone());
        let completions = core.drain();
        let wake = core.needs_wake();
        drop(core);
        complete(completions);
        if wake {
            (self.inner.wake)();
        }
        Pending::waiting(slot, parts)
    }
}

/// What a drain of the node delivers once every front lock is released: replies to callers,
/// and wake-ups of members subscribers when the members' view changed.
#[must_use]
struct Completions {
    replies: Vec<(Arc<Slot>, Outcome)>,
    subscribers: Vec<core::task::Waker>,
}

fn complete(completions: Completions) {
    for (slot, outcome) in completions.replies {
        slot.complete(outcome);
    }
    completions.subscribers.into_iter().for_each(core::task::Waker::wake);
}

impl Core {
    /// The members' view now, with the version subscribers compare.
    fn members_view(&self) -> MembersView {
        MembersView {
            version: self.members.version(),
            quorate: self.node.is_quorate(),
            members: self.node.members(),
        }
    }

    /// Drains the node: replies become completions (delivered after the lock is released),
    /// the rest queue for the driver.
    fn drain(&mut self) -> Completions {
        let mut replies = Vec::new();
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Reply { request, reply } => {
                    if let Some(slot) = self.waiting.remove(&request.0) {
                        replies.push((slot, Ok(reply)));
                    }
                }
                other => {
                    if let Output::Event(event) = &other {
                        self.members.note(event);
                    }
                    self.outputs.push_back(other);
                }
            }
        }
        let subscribers = self.members.settle(&self.node);
        Completions { replies, subscribers }
    }

    /// Whether a user call left work the driver does not know of: queued outputs, or a
    /// deadline earlier than the one it sleeps towards. Marks the driver woken.
    fn needs_wake(&mut self) -> bool {
        if self.woken {
            return false;
        }
        let earlier = match (self.node.poll_timeout(), self.armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if self.outputs.is_empty() && !earlier {
            return false;
        }
        self.woken = true;
        true
    }
}
