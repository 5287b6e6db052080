//! The `Node` state machine: one cluster member, with no IO.
//!
//! A `Node` composes the foundations — ring, caches, singleflight, breaker, limiter, hot keys —
//! and the wire protocol into the whole of herdcache's behaviour. It is driven like every
//! machine in this crate: `handle_input` / `handle_timeout` take input and return no work;
//! `poll_output` yields [`Output`]s until `None`; `poll_timeout` says when to wake it.
//!
//! # The loading process (groupcache's, extended)
//! 1. A get is answered from the main or hot cache when the value is there and not expired.
//! 2. Otherwise it joins the key's flight, or starts one (singleflight). The leader's flight
//!    loads from the data source when this node owns the key — or when the request came from a
//!    peer: **a peer's request is never forwarded again**, and never waits on a fetch from a
//!    third node, so rings that briefly disagree cannot chain requests or wait on themselves.
//! 3. When another peer owns the key the flight fetches it from that peer. If the fetch fails
//!    (connection, timeout, the peer overloaded or leaving), the flight loads locally instead,
//!    still as one flight; a not-found or data-source error answered by the owner is final.
//! 4. The owner reports the key's request rate in its reply; a requester mirrors values whose
//!    rate is over `hot_threshold_per_second` into its hot cache.
//!
//! Puts and deletes go to the key's owner, which applies them, invalidates any flight of the
//! key (a delete beats an in-flight load: that load's result is not cached, and later gets do
//! not join it), and tells every other ring member to drop its copy; the write is acknowledged
//! only when every member confirmed, so no get that starts after the acknowledgement can see the
//! old value on a node that shares the owner's view of the ring. A member that cannot be
//! reached fails the write (`Unavailable` or `TimedOut`) instead. Every request gets exactly one answer by its deadline: a value, an error, or
//! `TimedOut` — never silence.
//!
//! # Connections
//! The driver opens and accepts TCP connections and moves bytes; the node decides everything
//! else: the hello (cluster label and protocol version must match, or the connection is refused
//! with an error frame), framing and limits (a malformed frame closes that connection and
//! nothing else), request ids, in-flight limits, reconnect backoff, and batching (all frames
//! for a connection since the last drain go out in one [`Output::Transmit`]).

mod compat;
mod config;
mod types;

#[cfg(test)]
mod compat_tests;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use bytes::Bytes;
use core::cmp::Reverse;
use hashbrown::HashMap;

use crate::breaker::{Breaker, BreakerState, CallOutcome, Permit};
use crate::cache::{CacheConfig, CacheStats, InsertError, LruStores, Store, StoreFactory, Tier};
use crate::flight::{Begin, FlightError, FlightId, FlightLimits, FlightTable};
use crate::hash::{KeyHashBuilder, key_hash_builder};
use crate::hotkeys::HotKeys;
use crate::limiter::{Grant, Limiter};
use crate::ring::Ring;
use crate::time::{Duration, Instant, Monotonic, UnixTime};
use crate::wire::{
    ErrorCode, Found, GetOutcome, KeyRate, Message, PROTOCOL_VERSION, PutEntry, ReplyError,
    WireError, WireLimits,
};

use compat::Codec;
pub use config::{ConfigError, GroupcacheConfig, KeyspaceConfig, NodeConfig, PeerProtocol};
pub use types::{
    ConnId, Entry, Error, Event, Input, InputError, LoadId, LoadResult, Output, Path, Reply,
    RequestId, Value,
};

/// Counters of one keyspace, groupcache's names where they exist.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KeyspaceStats {
    /// Local gets (each key of a batch counts).
    pub gets: u64,
    /// Gets answered from the main cache.
    pub cache_hits: u64,
    /// Gets answered from the hot cache.
    pub hot_hits: u64,
    /// Values fetched from owning peers.
    pub peer_loads: u64,
    /// Fetches from peers that failed (connection, timeout, overload): each fell back to a
    /// local load.
    pub peer_errors: u64,
    /// Gets (local or from peers) that missed the cache.
    pub loads: u64,
    /// Misses that started a flight (the rest joined one).
    pub loads_deduped: u64,
    /// Data-source calls made.
    pub local_loads: u64,
    /// Data-source calls that failed or timed out.
    pub local_load_errs: u64,
    /// Gets received from peers.
    pub server_requests: u64,
    /// Data-source calls refused by the rate limiter.
    pub rate_limited: u64,
    /// Data-source calls refused by the open breaker.
    pub circuit_open: u64,
    /// The caches.
    pub cache: CacheStats,
    /// The breaker now.
    pub breaker: Option<BreakerState>,
}

/// Who waits on a flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// A pending single get.
    One(u64),
    /// Part `index` of a pending batch get.
    Part(u64, u32),
    /// A warmup prefetch.
    Warmup,
}

/// What a flight is doing now.
#[derive(Default)]
struct FlightMeta {
    load: Option<LoadId>,
    call: Option<u64>,
    /// The flight already asked a second owner after the first one failed it.
    rerouted: bool,
}

struct Keyspace {
    config: KeyspaceConfig,
    cache: Box<dyn Store>,
    flights: FlightTable<Waiter>,
    meta: HashMap<FlightId, FlightMeta, KeyHashBuilder>,
    hot: HotKeys,
    breaker: Breaker,
    limiter: Option<Limiter>,
    stats: KeyspaceStats,
}

/// A value served, with the key's request rate as this node sees it.
#[derive(Clone, Debug)]
struct Served {
    value: Value,
    rate: f64,
}

type GetResult = Result<Served, Error>;

/// One key of a batch get.
#[derive(Default)]
struct Part {
    result: Option<GetResult>,
    flight: Option<FlightId>,
    /// Looked up again once because its value expired before the batch could be answered.
    refreshed: bool,
}

enum Origin {
    Local(RequestId),
    Peer { conn: ConnId, request_id: u64 },
}

/// One index of a pending write: how many units still cover it, and the first error.
#[derive(Clone, Default)]
struct WriteSlot {
    waiting: u32,
    error: Option<Error>,
}

enum PendingState {
    Get { keyspace: Bytes, flight: Option<FlightId> },
    GetMany { keyspace: Bytes, keys: Vec<Bytes>, parts: Vec<Part>, remaining: usize },
    Write { slots: Vec<WriteSlot>, many: bool },
}

struct Pending {
    origin: Origin,
    deadline: Instant,
    state: PendingState,
}

enum CallKind {
    Get {
        keyspace: Bytes,
        flight: FlightId,
    },
    GetMany {
        keyspace: Bytes,
        flights: Vec<FlightId>,
    },
    /// A write sent to its owner, covering `indices` of pending write `pending`.
    Write {
        pending: u64,
        indices: Vec<u32>,
    },
    /// A leaving node's goodbye to one peer, acknowledged once the peer took it off its ring:
    /// the peer's requests sent before then came on the same connection, ahead of the ack, so
    /// the node drains only after it has seen them.
    Leave,
    /// An owner's "drop your copy" to one peer, covering `indices` of pending write `pending`.
    DropHot {
        pending: u64,
        indices: Vec<u32>,
    },
}

/// A request this node sent (or will send) to a peer.
struct Call {
    peer: Bytes,
    conn: Option<ConnId>,
    deadline: Instant,
    kind: CallKind,
    /// The message, until a connection takes it.
    unsent: Option<Message>,
}

struct Load {
    keyspace: Bytes,
    key: Bytes,
    /// `None` once the flight finished another way (the load's answer then only feeds the breaker).
    flight: Option<FlightId>,
    permit: Option<Permit>,
    deadline: Instant,
}

struct Conn {
    codec: Codec,
    peer: Option<Bytes>,
    outbound: bool,
    hello_received: bool,
    out: Vec<u8>,
    dirty: bool,
    in_flight: u32,
    /// Frames are buffered that wait for the next turn ([`Timer::Parse`] is set).
    backlogged: bool,
}

/// Bytes of frames one connection's input may queue on that connection before the node stops
/// parsing its buffered frames for this turn: the rest are parsed on the next one (a timer due
/// at once), after the driver has taken — and written, paused or refused — what was produced.
/// So a burst of pipelined gets of large values cannot make one input build every reply in
/// memory at once.
const OUTPUT_PER_TURN: usize = 1 << 20;

/// The longest a leaving node waits for a peer to acknowledge its goodbye.
const LEAVE_ACK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct PeerLink {
    conn: Option<ConnId>,
    connecting: bool,
    /// Names the connection attempt in progress, for its timeout.
    attempt: u64,
    queued: Vec<u64>,
    backoff: Duration,
    retry_at: Instant,
    /// groupcache HTTP: every open connection to the peer…
    pool: Vec<ConnId>,
    /// …and those with no request on the wire.
    idle: Vec<ConnId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Pending(u64),
    Call(u64),
    Load(LoadId),
    StartLoad(LoadId),
    /// A connection attempt (`PeerLink::attempt`) the driver has not reported on.
    Connect(u64),
    /// A connection whose hello has not arrived.
    Hello(ConnId),
    /// A connection with frames left for the next turn.
    Parse(ConnId),
}

/// Where a miss that needs the owner's copy goes — (owner, (key, flight)) — collected while a
/// batch is processed so that one message per owner goes out.
type FetchPlan = Vec<(Bytes, (Bytes, FlightId))>;

/// One herdcache cluster member as a pure state machine. See the module docs.
pub struct Node {
    config: NodeConfig,
    stores: Box<dyn StoreFactory>,
    clock: Monotonic,
    started_at: Instant,
    ring: Ring<Bytes>,
    keyspaces: HashMap<Bytes, Keyspace, KeyHashBuilder>,
    pending: HashMap<u64, Pending, KeyHashBuilder>,
    local_requests: HashMap<RequestId, u64, KeyHashBuilder>,
    conns: HashMap<ConnId, Conn, KeyHashBuilder>,
    peers: HashMap<Bytes, PeerLink, KeyHashBuilder>,
    calls: HashMap<u64, Call, KeyHashBuilder>,
    loads: HashMap<LoadId, Load, KeyHashBuilder>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    outputs: VecDeque<Output>,
    dirty: Vec<ConnId>,
    warmup: VecDeque<(Bytes, Bytes)>,
    warmup_active: usize,
    next_id: u64,
    rng: u64,
    leaving: bool,
    drained: bool,
    /// groupcache HTTP: serving connections to read the next request from, and to close.
    http_resume: Vec<ConnId>,
    http_closing: Vec<ConnId>,
}

impl Node {
    /// A node at `now`, with the keyspaces of `config`. Connect it to its cluster with
    /// [`Input::SetPeers`]; until then it owns every key.
    pub fn new(config: NodeConfig, now: Instant) -> Result<Node, ConfigError> {
        Node::with_stores(config, now, Box::new(LruStores))
    }

    /// A node whose keyspaces keep their entries in stores made by `stores` (the concurrent
    /// front's sharded store, for one).
    pub fn with_stores(
        config: NodeConfig,
        now: Instant,
        stores: Box<dyn StoreFactory>,
    ) -> Result<Node, ConfigError> {
        let max_label = config.limits.max_label as usize;
        if config.node_id.is_empty() || config.node_id.len() > max_label {
            return Err(ConfigError::BadNodeId);
        }
        if config.cluster.len() > max_label {
            return Err(ConfigError::BadClusterLabel);
        }
        if config.request_timeout.is_zero()
            || config.peer_timeout.is_zero()
            || config.connect_timeout.is_zero()
            || !config.hot_threshold_per_second.is_finite()
            || config.hot_threshold_per_second < 0.0
        {
            return Err(ConfigError::BadTiming);
        }
        let limits = config.limits;
        let largest_item = u64::from(limits.max_key) + u64::from(limits.max_value) + 2 * 1_024;
        if limits.max_batch == 0
            || u64::from(limits.max_frame) < largest_item + u64::from(limits.max_label)
        {
            return Err(ConfigError::BadLimits);
        }
        if config.peer_protocol == PeerProtocol::GroupcacheHttp {
            if crate::groupcache::PeerUrl::parse(&config.node_id).is_err() {
                return Err(ConfigError::BadNodeId);
            }
            if config.ring != crate::ring::RingScheme::GROUPCACHE {
                return Err(ConfigError::IncompatibleRing);
            }
            if config.groupcache.max_connections_per_peer == 0 {
                return Err(ConfigError::BadLimits);
            }
        }
        let hasher = key_hash_builder(config.seed);
        let mut ring = Ring::new(config.ring);
        ring.add(config.node_id.clone()).expect("an empty ring takes one peer");
        let mut node = Node {
            stores,
            clock: Monotonic::new(now),
            started_at: now,
            ring,
            keyspaces: HashMap::with_hasher(hasher.clone()),
            pending: HashMap::with_hasher(hasher.clone()),
            local_requests: HashMap::with_hasher(hasher.clone()),
            conns: HashMap::with_hasher(hasher.clone()),
            peers: HashMap::with_hasher(hasher.clone()),
            calls: HashMap::with_hasher(hasher.clone()),
            loads: HashMap::with_hasher(hasher),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            dirty: Vec::new(),
            warmup: VecDeque::new(),
            warmup_active: 0,
            next_id: 1,
            rng: config.seed | 1,
            leaving: false,
            drained: false,
            http_resume: Vec::new(),
            http_closing: Vec::new(),
            config,
        };
        for keyspace in core::mem::take(&mut node.config.keyspaces) {
            node.create_keyspace(keyspace)?;
        }
        Ok(node)
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> &Bytes {
        &self.config.node_id
    }

    /// The current ring.
    #[must_use]
    pub fn ring(&self) -> &Ring<Bytes> {
        &self.ring
    }

    /// Creates a keyspace.
    pub fn create_keyspace(&mut self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        if self.keyspaces.contains_key(&config.name) {
            return Err(ConfigError::DuplicateKeyspace);
        }
        let now = self.clock.latest();
        let keyspace = build_keyspace(&self.config, now, self.stores.as_mut(), config)?;
        self.keyspaces.insert(keyspace.config.name.clone(), keyspace);
        Ok(())
    }

    /// Changes a keyspace's settings; its cached values stay (evicted down to a smaller budget).
    pub fn update_keyspace(&mut self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        let now = self.clock.latest();
        let Some(keyspace) = self.keyspaces.get_mut(&config.name) else {
            return Err(ConfigError::UnknownKeyspace);
        };
        if config.hot_keys != keyspace.config.hot_keys {
            keyspace.hot =
                HotKeys::new(config.hot_keys, now).map_err(|_| ConfigError::BadHotKeys)?;
        }
        if config.breaker != keyspace.config.breaker {
            keyspace.breaker = Breaker::new(config.breaker.unwrap_or(self.config.breaker), now);
        }
        if config.limiter != keyspace.config.limiter {
            let limiter = config.limiter.or(self.config.limiter);
            keyspace.limiter = limiter.map(|limiter| Limiter::new(limiter, now));
        }
        keyspace.cache.set_max_bytes(config.max_bytes);
        keyspace.config = config;
        Ok(())
    }

    /// Removes a keyspace and its data; requests waiting on its loads are answered
    /// `UnknownKeyspace`.
    pub fn remove_keyspace(&mut self, name: &[u8]) -> Result<(), ConfigError> {
        let now = self.clock.latest();
        let Some(keyspace) = self.keyspaces.get(name) else {
            return Err(ConfigError::UnknownKeyspace);
        };
        let name = keyspace.config.name.clone();
        let flights: Vec<FlightId> = keyspace.meta.keys().copied().collect();
        for flight in flights {
            self.complete_flight(now, &name, flight, Err(Error::UnknownKeyspace), None, None);
        }
        self.keyspaces.remove(&name);
        self.after_mutation(now);
        Ok(())
    }

    /// The keyspaces' settings.
    pub fn keyspaces(&self) -> impl Iterator<Item = &KeyspaceConfig> + '_ {
        self.keyspaces.values().map(|keyspace| &keyspace.config)
    }

    /// A keyspace's counters.
    #[must_use]
    pub fn keyspace_stats(&self, name: &[u8]) -> Option<KeyspaceStats> {
        let now = self.clock.latest();
        self.keyspaces.get(name).map(|keyspace| KeyspaceStats {
            cache: keyspace.cache.stats(),
            breaker: Some(keyspace.breaker.state(now)),
            ..keyspace.stats
        })
    }

    /// Feeds one input. Drain [`Node::poll_output`] afterwards.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), InputError> {
        let now = self.clock.observe(now);
        let result = self.dispatch(now, input);
        self.after_mutation(now);
        result
    }

    /// Fires every deadline at or before `now`. Early or repeated calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        // Parsed after the other timers, once each: parsing may set the timer again, due now.
        let mut backlogged = Vec::new();
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Pending(id) => self.pending_deadline(now, id),
                Timer::Call(id) => {
                    if self.calls.get(&id).is_some_and(|call| call.deadline <= now) {
                        self.fail_call(now, id);
                    }
                }
                Timer::Load(id) => self.load_deadline(now, id),
                Timer::StartLoad(id) => self.begin_delayed_load(now, id),
                Timer::Connect(attempt) => {
                    let peer = self
                        .peers
                        .iter()
                        .find(|(_, link)| link.connecting && link.attempt == attempt)
                        .map(|(peer, _)| peer.clone());
                    if let Some(peer) = peer {
                        self.connect_failed(now, &peer);
                    }
                }
                Timer::Hello(conn) => {
                    if self.conns.get(&conn).is_some_and(|state| !state.hello_received) {
                        self.outputs.push_back(Output::Close { conn });
                        self.drop_conn(now, conn);
                    }
                }
                Timer::Parse(conn) => backlogged.push(conn),
            }
        }
        for conn in backlogged {
            if let Some(state) = self.conns.get_mut(&conn).filter(|s| s.backlogged) {
                state.backlogged = false;
                self.parse_frames(now, conn);
            }
        }
        for keyspace in self.keyspaces.values_mut() {
            keyspace.cache.handle_timeout(now);
        }
        self.after_mutation(now);
    }

    /// The next output, until `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.peek().map(|Reverse((at, _))| *at);
        self.keyspaces
            .values()
            .filter_map(|keyspace| keyspace.cache.poll_timeout())
            .chain(timers)
            .min()
    }

    /// Whether nothing is in progress: no request, load or peer call.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.loads.is_empty()
            && self.calls.is_empty()
            && self.warmup_active == 0
    }

    // ---------------------------------------------------------------------------------------
    // Inputs

    fn dispatch(&mut self, now: Instant, input: Input<'_>) -> Result<(), InputError> {
        match input {
            Input::Get { request, keyspace, key, timeout } => {
                let pending = self.new_local(request, timeout)?;
                self.start_get(now, pending, keyspace, key, false);
            }
            Input::GetMany { request, keyspace, keys, timeout } => {
                let pending = self.new_local(request, timeout)?;
                self.start_get_many(now, pending, keyspace, keys, false);
            }
            Input::Put { request, keyspace, entry, timeout } => {
                let pending = self.new_local(request, timeout)?;
                self.start_write(now, pending, keyspace, vec![WriteOp::Put(entry)], false, true);
            }
            Input::PutMany { request, keyspace, entries, timeout } => {
                let pending = self.new_local(request, timeout)?;
                let ops = entries.into_iter().map(WriteOp::Put).collect();
                self.start_write(now, pending, keyspace, ops, true, true);
            }
            Input::Delete { request, keyspace, key, timeout } => {
                let pending = self.new_local(request, timeout)?;
                self.start_write(now, pending, keyspace, vec![WriteOp::Delete(key)], false, true);
            }
            Input::DeleteMany { request, keyspace, keys, timeout } => {
                let pending = self.new_local(request, timeout)?;
                let ops = keys.into_iter().map(WriteOp::Delete).collect();
                self.start_write(now, pending, keyspace, ops, true, true);
            }
            Input::DeleteKeyspace { request, keyspace, timeout } => {
                let pending = self.new_local(request, timeout)?;
                self.delete_keyspace(now, pending, keyspace);
            }
            Input::Loaded { load, result } => return self.loaded(now, load, result),
            Input::SetPeers(members) => self.set_peers(now, members),
            Input::Leave => self.leave(now),
            Input::Connected { conn, peer } => {
                if self.conns.contains_key(&conn) {
                    return Err(InputError::DuplicateConnection(conn));
                }
                if self.is_groupcache() {
                    self.http_connected(now, conn, peer);
                    return Ok(());
                }
                self.open_conn(conn, Some(peer.clone()), true);
                let link = self.peers.entry(peer.clone()).or_default();
                link.connecting = false;
                link.backoff = Duration::ZERO;
                link.conn = Some(conn);
                let hello = self.hello();
                let _ = self.send(conn, 0, &hello);
                self.flush_queued(&peer, conn);
            }
            Input::ConnectFailed { peer } => self.connect_failed(now, &peer),
            Input::Accepted { conn } => {
                if self.conns.contains_key(&conn) {
                    return Err(InputError::DuplicateConnection(conn));
                }
                self.open_conn(conn, None, false);
            }
            Input::Received { conn, data } => {
                let Some(state) = self.conns.get_mut(&conn) else {
                    return Err(InputError::UnknownConnection(conn));
                };
                let Codec::Native(decoder) = &mut state.codec else {
                    self.http_received(now, conn, data);
                    return Ok(());
                };
                if let Err(error) = decoder.push(data) {
                    self.refuse(conn, error.error_code());
                    return Ok(());
                }
                if !state.backlogged {
                    self.parse_frames(now, conn);
                }
            }
            // A close the node asked for is reported back too: nothing left to do then.
            Input::Closed { conn } => {
                self.http_closed(now, conn);
                self.drop_conn(now, conn);
            }
        }
        Ok(())
    }

    /// Handles a connection's buffered frames until the buffer is drained, the connection was
    /// closed meanwhile, or this turn's output on it reached [`OUTPUT_PER_TURN`].
    fn parse_frames(&mut self, now: Instant, conn: ConnId) {
        while let Some(state) = self.conns.get_mut(&conn) {
            let Codec::Native(decoder) = &mut state.codec else { break };
            if state.out.len() >= OUTPUT_PER_TURN {
                state.backlogged = true;
                self.push_timer(now, Timer::Parse(conn));
                break;
            }
            match decoder.next_frame() {
                Ok(Some((header, message))) => {
                    self.handle_frame(now, conn, header.request_id, message)
                }
                Ok(None) => break,
                Err(error) => {
                    self.refuse(conn, error.error_code());
                    break;
                }
            }
        }
    }

    fn new_local(
        &mut self,
        request: RequestId,
        timeout: Option<Duration>,
    ) -> Result<u64, InputError> {
        if self.local_requests.contains_key(&request) {
            return Err(InputError::DuplicateRequest(request));
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(InputError::Overloaded(request));
        }
        let now = self.clock.latest();
        let deadline = now + timeout.unwrap_or(self.config.request_timeout);
        let id = self.fresh_id();
        self.local_requests.insert(request, id);
        self.pending.insert(
            id,
            Pending {
                origin: Origin::Local(request),
                deadline,
                state: PendingState::Write { slots: Vec::new(), many: false },
            },
        );
        self.push_timer(deadline, Timer::Pending(id));
        Ok(id)
    }

    fn new_remote(&mut self, now: Instant, conn: ConnId, request_id: u64, timeout_ms: u32) -> u64 {
        let timeout = match timeout_ms {
            0 => self.config.request_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(self.config.request_timeout),
        };
        let deadline = now + timeout;
        let id = self.fresh_id();
        if let Some(state) = self.conns.get_mut(&conn) {
            state.in_flight += 1;
        }
        self.pending.insert(
            id,
            Pending {
                origin: Origin::Peer { conn, request_id },
                deadline,
                state: PendingState::Write { slots: Vec::new(), many: false },
            },
        );
        self.push_timer(deadline, Timer::Pending(id));
        id
    }

    // ---------------------------------------------------------------------------------------
    // Gets

    fn start_get(
        &mut self,
        now: Instant,
        pending: u64,
        keyspace: Bytes,
        key: Bytes,
        from_peer: bool,
    ) {
        let mut plan = FetchPlan::new();
        let outcome =
            self.get_key(now, &keyspace, &key, Waiter::One(pending), from_peer, &mut plan);
        match outcome {
            Lookup::Done(result) => {
                if let Some(entry) = self.pending.get_mut(&pending) {
                    entry.state = PendingState::Get { keyspace, flight: None };
                }
                self.answer_get(pending, result);
            }
            Lookup::Waiting(flight) => {
                if let Some(entry) = self.pending.get_mut(&pending) {
                    entry.state = PendingState::Get { keyspace, flight: Some(flight) };
                }
                self.run_plan(now, pending, plan);
            }
        }
    }

    fn start_get_many(
        &mut self,
        now: Instant,
        pending: u64,
        keyspace: Bytes,
        keys: Vec<Bytes>,
        from_peer: bool,
    ) {
        let count = keys.len();
        // The batch's state is in place before any lookup: an answer can come back before the
        // lookup that caused it returns (a load refused at once completes its flight).
        if let Some(entry) = self.pending.get_mut(&pending) {
            let parts = (0..count).map(|_| Part::default()).collect();
            entry.state =
                PendingState::GetMany { keyspace: keyspace.clone(), keys, parts, remaining: count };
        }
        if count == 0 {
            self.finish_pending(pending);
            return;
        }
        let mut plan = FetchPlan::new();
        for index in 0..count {
            self.lookup_part(now, pending, &keyspace, index, from_peer, &mut plan);
        }
        self.run_plan(now, pending, plan);
    }

    /// Looks up part `index` of a batch whose state is stored and counts the part outstanding.
    fn lookup_part(
        &mut self,
        now: Instant,
        pending: u64,
        keyspace: &Bytes,
        index: usize,
        from_peer: bool,
        plan: &mut FetchPlan,
    ) {
        let Some(key) = self.batch_key(pending, index) else { return };
        let waiter = Waiter::Part(pending, index as u32);
        match self.get_key(now, keyspace, &key, waiter, from_peer, plan) {
            Lookup::Done(result) => self.answer_part(pending, index as u32, result),
            Lookup::Waiting(flight) => {
                let state = self.pending.get_mut(&pending).map(|entry| &mut entry.state);
                if let Some(PendingState::GetMany { parts, .. }) = state {
                    // Unless it was answered already, on the way.
                    if let Some(part) = parts.get_mut(index).filter(|part| part.result.is_none()) {
                        part.flight = Some(flight);
                    }
                }
            }
        }
    }

    /// Steps 1–3 of the loading process for one key.
    fn get_key(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        key: &Bytes,
        waiter: Waiter,
        from_peer: bool,
        plan: &mut FetchPlan,
    ) -> Lookup {
        // A leaving node still answers peers from its cache (a refusal would make the asker
        // load the key itself while its new owner loads it too), but starts nothing new.
        if self.leaving && !from_peer {
            return Lookup::Done(Err(Error::ShuttingDown));
        }
        if key.len() > self.config.limits.max_key as usize {
            return Lookup::Done(Err(Error::TooLarge));
        }
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else {
            return Lookup::Done(Err(Error::UnknownKeyspace));
        };
        if from_peer {
            keyspace.stats.server_requests += 1;
        } else {
            keyspace.stats.gets += 1;
        }
        keyspace.hot.record(now, key);
        if let Some(hit) = keyspace.cache.get(now, key) {
            let path = match hit.tier {
                Tier::Main => {
                    keyspace.stats.cache_hits += 1;
                    Path::LocalHit
                }
                Tier::Hot => {
                    keyspace.stats.hot_hits += 1;
                    Path::HotHit
                }
            };
            let value = Value { bytes: hit.value, expires_at: hit.expires_at, path };
            // Only a peer's reply carries the key's rate; a local hit does not pay for it.
            let rate = if from_peer { keyspace.hot.rate(now, key).unwrap_or(0.0) } else { 0.0 };
            return Lookup::Done(Ok(Served { value, rate }));
        }
        if self.leaving {
            // A peer asking for a key this node is still loading joins that load: refusing
            // would make the asker load the key a second time. Nothing new starts.
            let loading = keyspace.flights.get(key).is_some_and(|flight| {
                keyspace.meta.get(&flight).is_some_and(|meta| meta.load.is_some())
            });
            if !(from_peer && loading) {
                return Lookup::Done(Err(Error::ShuttingDown));
            }
        }
        keyspace.stats.loads += 1;
        let flight = match keyspace.flights.begin(key, waiter) {
            Ok(begin) => begin,
            Err(FlightError::TooManyFlights { .. } | FlightError::TooManyWaiters { .. }) => {
                return Lookup::Done(Err(Error::Overloaded));
            }
            Err(_) => return Lookup::Done(Err(Error::BadRequest)),
        };
        match flight {
            Begin::Follower(id) => {
                // A peer's request never waits on a fetch from a third node: load here too.
                let fetch_only = keyspace.meta.get(&id).is_some_and(|meta| meta.load.is_none());
                if from_peer && fetch_only {
                    if let Err(error) = self.start_load(now, keyspace_name, id) {
                        // Refused: answer this peer alone; the fetch goes on for the others.
                        if let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) {
                            keyspace.flights.leave(id, waiter);
                        }
                        return Lookup::Done(Err(error));
                    }
                }
                Lookup::Waiting(id)
            }
            Begin::Leader(id) => {
                keyspace.stats.loads_deduped += 1;
                keyspace.meta.insert(id, FlightMeta::default());
                // The ring is consulted only on a miss, never on the hit path.
                let owner = self.ring.owner(key).filter(|owner| **owner != self.config.node_id);
                match owner.cloned() {
                    Some(owner) if !from_peer => plan.push((owner, (key.clone(), id))),
                    _ => self.load_or_fail(now, keyspace_name, id),
                }
                Lookup::Waiting(id)
            }
        }
    }

    /// The owner of `key` when it is another peer; `None` when it is this node.
    fn owner_of(&self, key: &[u8]) -> Option<Bytes> {
        self.ring.owner(key).filter(|owner| **owner != self.config.node_id).cloned()
    }

    /// Sends the fetches a get or batch collected: one message per owner.
    fn run_plan(&mut self, now: Instant, pending: u64, plan: FetchPlan) {
        if plan.is_empty() {
            return;
        }
        let Some(entry) = self.pending.get(&pending) else { return };
        let keyspace = match &entry.state {
            PendingState::Get { keyspace, .. } | PendingState::GetMany { keyspace, .. } => {
                keyspace.clone()
            }
            PendingState::Write { .. } => return,
        };
        let remaining = entry.deadline.saturating_duration_since(now);
        let deadline = now + self.config.peer_timeout.min(remaining / 2);
        let timeout_ms = u32::try_from((deadline - now).as_millis()).unwrap_or(u32::MAX).max(1);
        let (max_count, max_bytes) = self.batch_limits();
        // groupcache's HTTP asks for one key per request.
        let max_count = if self.is_groupcache() { 1 } else { max_count };
        for (owner, batch) in batches_by_owner(plan, max_count, max_bytes, |(key, _)| key.len() + 8)
        {
            let call = self.fresh_id();
            if let Some(state) = self.keyspaces.get_mut(&keyspace) {
                for (_, flight) in &batch {
                    if let Some(meta) = state.meta.get_mut(flight) {
                        meta.call = Some(call);
                    }
                }
            }
            let (message, kind) = match <[_; 1]>::try_from(batch) {
                Ok([(key, flight)]) => (
                    Message::Get { keyspace: keyspace.clone(), key, timeout_ms },
                    CallKind::Get { keyspace: keyspace.clone(), flight },
                ),
                Err(batch) => {
                    let (keys, flights) = batch.into_iter().unzip();
                    (
                        Message::GetMany { keyspace: keyspace.clone(), keys, timeout_ms },
                        CallKind::GetMany { keyspace: keyspace.clone(), flights },
                    )
                }
            };
            self.send_call(now, call, owner, deadline, kind, message);
        }
    }

    /// The most items, and about the most bytes of items, one batch frame may carry.
    fn batch_limits(&self) -> (usize, usize) {
        let limits = self.config.limits;
        let headroom = limits.max_label as usize + 1_024;
        ((limits.max_batch as usize).max(1), (limits.max_frame as usize).saturating_sub(headroom))
    }

    /// Starts the data-source call of a flight, through the rate limiter and the breaker. A
    /// refusal is returned, not acted on: the caller decides who hears of it.
    fn start_load(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
    ) -> Result<(), Error> {
        let load = LoadId(self.fresh_id());
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return Ok(()) };
        let Some(key) = keyspace.flights.key(flight).cloned() else { return Ok(()) };
        let read_timeout = keyspace.config.read_timeout;
        let start_at =
            match keyspace.limiter.as_mut().map(|limiter| limiter.acquire(now, 1, read_timeout)) {
                None | Some(Ok(Grant::Now)) => now,
                Some(Ok(Grant::At(at))) => at,
                Some(Err(_)) => {
                    keyspace.stats.rate_limited += 1;
                    return Err(Error::RateLimited);
                }
            };
        // A load that starts now takes its breaker permit now; a delayed one when it starts.
        let permit = if start_at <= now {
            match keyspace.breaker.try_acquire(now) {
                Ok(permit) => Some(permit),
                Err(_) => {
                    keyspace.stats.circuit_open += 1;
                    return Err(Error::CircuitOpen);
                }
            }
        } else {
            None
        };
        if let Some(meta) = keyspace.meta.get_mut(&flight) {
            meta.load = Some(load);
        }
        let deadline = start_at + read_timeout;
        let keyspace = keyspace_name.clone();
        self.loads
            .insert(load, Load { keyspace, key, flight: Some(flight), permit: None, deadline });
        match permit {
            Some(permit) => self.issue_load(load, permit),
            None => self.push_timer(start_at, Timer::StartLoad(load)),
        }
        Ok(())
    }

    /// Starts a load; on refusal, answers the whole flight with the error.
    fn load_or_fail(&mut self, now: Instant, keyspace_name: &Bytes, flight: FlightId) {
        if let Err(error) = self.start_load(now, keyspace_name, flight) {
            self.complete_flight(now, keyspace_name, flight, Err(error), None, None);
        }
    }

    fn issue_load(&mut self, id: LoadId, permit: Permit) {
        let Some(load) = self.loads.get_mut(&id) else { return };
        load.permit = Some(permit);
        let (keyspace, key, deadline) = (load.keyspace.clone(), load.key.clone(), load.deadline);
        if let Some(state) = self.keyspaces.get_mut(&keyspace) {
            state.stats.local_loads += 1;
        }
        self.push_timer(deadline, Timer::Load(id));
        self.outputs.push_back(Output::Load { load: id, keyspace, key });
    }

    /// A load the rate limiter delayed may start now.
    fn begin_delayed_load(&mut self, now: Instant, id: LoadId) {
        let Some(load) = self.loads.get(&id) else { return };
        if load.permit.is_some() {
            return;
        }
        let (keyspace_name, flight) = (load.keyspace.clone(), load.flight);
        let keyspace = self.keyspaces.get_mut(&keyspace_name);
        let (Some(keyspace), Some(flight)) = (keyspace, flight) else {
            // Its flight finished another way meanwhile: nothing to load for.
            self.loads.remove(&id);
            return;
        };
        match keyspace.breaker.try_acquire(now) {
            Ok(permit) => self.issue_load(id, permit),
            Err(_) => {
                keyspace.stats.circuit_open += 1;
                self.loads.remove(&id);
                let meta = keyspace.meta.get_mut(&flight);
                let fetching = meta.is_some_and(|meta| {
                    meta.load = None;
                    meta.call.is_some()
                });
                // A fetch still under way may yet answer; otherwise the refusal is the answer.
                if !fetching {
                    self.complete_flight(
                        now,
                        &keyspace_name,
                        flight,
                        Err(Error::CircuitOpen),
                        None,
                        None,
                    );
                }
            }
        }
    }

    fn loaded(&mut self, now: Instant, id: LoadId, result: LoadResult) -> Result<(), InputError> {
        if self.loads.get(&id).is_none_or(|load| load.permit.is_none()) {
            return Err(InputError::UnknownLoad(id));
        }
        let load = self.loads.remove(&id).expect("just looked up");
        let max_value = self.config.limits.max_value as usize;
        let Some(keyspace) = self.keyspaces.get_mut(&load.keyspace) else { return Ok(()) };
        let permit = load.permit.expect("checked above");
        let result = match result {
            LoadResult::Value { bytes, expires_at } => {
                keyspace.breaker.record(now, permit, CallOutcome::Success);
                let expires_at =
                    expires_at.or_else(|| keyspace.config.default_ttl.map(|ttl| now + ttl));
                if bytes.len() > max_value {
                    Err(Error::TooLarge)
                } else if expires_at.is_some_and(|at| at <= now) {
                    Err(Error::DataSource(Bytes::from_static(
                        b"the data source returned an expired value",
                    )))
                } else {
                    let rate = keyspace.hot.rate(now, &load.key).unwrap_or(0.0);
                    Ok(Served { value: Value { bytes, expires_at, path: Path::Load }, rate })
                }
            }
            LoadResult::NotFound => {
                keyspace.breaker.record(now, permit, CallOutcome::Success);
                Err(Error::NotFound)
            }
            LoadResult::Failed(message) => {
                keyspace.breaker.record(now, permit, CallOutcome::Failure);
                keyspace.stats.local_load_errs += 1;
                let cut = message.len().min(self.config.limits.max_message as usize);
                Err(Error::DataSource(message.slice(..cut)))
            }
        };
        if let Some(flight) = load.flight {
            self.complete_flight(now, &load.keyspace, flight, result, Some(Tier::Main), Some(id));
        }
        Ok(())
    }

    fn load_deadline(&mut self, now: Instant, id: LoadId) {
        let Some(load) = self.loads.get(&id) else { return };
        if load.deadline > now || load.permit.is_none() {
            return;
        }
        let load = self.loads.remove(&id).expect("just looked up");
        if let Some(keyspace) = self.keyspaces.get_mut(&load.keyspace) {
            keyspace.breaker.record(now, load.permit.expect("checked"), CallOutcome::Cancelled);
            keyspace.stats.local_load_errs += 1;
        }
        if let Some(flight) = load.flight {
            self.complete_flight(now, &load.keyspace, flight, Err(Error::TimedOut), None, Some(id));
        }
    }

    /// Finishes a flight: caches the value when it may be, and answers every waiter once.
    fn complete_flight(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        result: GetResult,
        store: Option<Tier>,
        finishing_load: Option<LoadId>,
    ) {
        let hot_ttl = self.config.hot_ttl;
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let Ok(done) = keyspace.flights.complete(flight) else { return };
        if let Some(meta) = keyspace.meta.remove(&flight) {
            // The other half of a flight that both fetched and loaded: its answer is no longer
            // needed (a load's still feeds the breaker).
            if let Some(load) = meta.load.filter(|&load| Some(load) != finishing_load) {
                if let Some(load) = self.loads.get_mut(&load) {
                    load.flight = None;
                }
            }
            if let Some(call) = meta.call {
                if let Some(Call { kind: CallKind::Get { .. }, .. }) = self.calls.get(&call) {
                    self.calls.remove(&call);
                }
            }
        }
        if let (Ok(served), true, Some(tier)) = (&result, done.cacheable, store) {
            let expires_at = match tier {
                Tier::Main => served.value.expires_at,
                Tier::Hot => {
                    Some(served.value.expires_at.map_or(now + hot_ttl, |at| at.min(now + hot_ttl)))
                }
            };
            let _ = keyspace.cache.insert(
                now,
                tier,
                done.key.clone(),
                served.value.bytes.clone(),
                expires_at,
            );
        }
        for waiter in done.waiters {
            match waiter {
                Waiter::One(pending) => self.answer_get(pending, result.clone()),
                Waiter::Part(pending, index) => self.answer_part(pending, index, result.clone()),
                Waiter::Warmup => self.warmup_active = self.warmup_active.saturating_sub(1),
            }
        }
    }

    fn answer_get(&mut self, pending: u64, result: GetResult) {
        let Some(entry) = self.pending.get_mut(&pending) else { return };
        entry.state = PendingState::Get { keyspace: Bytes::new(), flight: None };
        self.finish_pending_with(pending, Some(result));
    }

    fn answer_part(&mut self, pending: u64, index: u32, result: GetResult) {
        let Some(entry) = self.pending.get_mut(&pending) else { return };
        let PendingState::GetMany { parts, remaining, .. } = &mut entry.state else { return };
        let Some(part) = parts.get_mut(index as usize) else { return };
        if part.result.is_some() {
            return;
        }
        part.result = Some(result);
        part.flight = None;
        *remaining -= 1;
        if *remaining == 0 && !self.refresh_expired_parts(pending) {
            self.finish_pending(pending);
        }
    }

    /// A batch is answered when its last part is in; a value that came in early may have expired
    /// meanwhile and is looked up again, once (a part that expires again is answered `TimedOut`
    /// at delivery, so two slow parts cannot keep expiring each other until the deadline).
    /// Returns whether parts are outstanding again.
    fn refresh_expired_parts(&mut self, pending: u64) -> bool {
        let now = self.clock.latest();
        let Some(entry) = self.pending.get_mut(&pending) else { return false };
        let from_peer = matches!(entry.origin, Origin::Peer { .. });
        let PendingState::GetMany { keyspace, parts, remaining, .. } = &mut entry.state else {
            return false;
        };
        let mut expired = Vec::new();
        for (index, part) in parts.iter_mut().enumerate() {
            if !part.refreshed && part_expired(part, now) {
                // Outstanding again before its lookup: the answer may come back at once.
                *part = Part { result: None, flight: None, refreshed: true };
                *remaining += 1;
                expired.push(index);
            }
        }
        if expired.is_empty() {
            return false;
        }
        let keyspace = keyspace.clone();
        let mut plan = FetchPlan::new();
        for index in expired {
            self.lookup_part(now, pending, &keyspace, index, from_peer, &mut plan);
        }
        self.run_plan(now, pending, plan);
        // The batch is answered by the last part's `answer_part` (possibly already).
        true
    }

    fn batch_key(&self, pending: u64, index: usize) -> Option<Bytes> {
        match &self.pending.get(&pending)?.state {
            PendingState::GetMany { keys, .. } => keys.get(index).cloned(),
            _ => None,
        }
    }

    // ---------------------------------------------------------------------------------------
    // Writes

    /// Starts a put or delete (or a batch of them). `local` requests go to each key's owner;
    /// a peer's request is applied here (never forwarded again).
    fn start_write(
        &mut self,
        now: Instant,
        pending: u64,
        keyspace_name: Bytes,
        ops: Vec<WriteOp>,
        many: bool,
        local: bool,
    ) {
        let mut slots = vec![WriteSlot::default(); ops.len()];
        let limits = self.config.limits;
        let known =
            self.keyspaces.get(&keyspace_name).map(|keyspace| keyspace.config.write_timeout);
        let mut own: Vec<(u32, WriteOp)> = Vec::new();
        let mut remote: Vec<(Bytes, (u32, WriteOp))> = Vec::new();
        for (index, op) in ops.into_iter().enumerate() {
            let slot = &mut slots[index];
            if self.leaving {
                slot.error = Some(Error::ShuttingDown);
            } else if known.is_none() {
                slot.error = Some(Error::UnknownKeyspace);
            } else if op.key().len() > limits.max_key as usize
                || matches!(&op, WriteOp::Put(entry) if entry.value.len() > limits.max_value as usize)
            {
                slot.error = Some(Error::TooLarge);
            } else {
                // groupcache has no writes on the wire: they apply here only.
                let forward = local && !self.is_groupcache();
                match self.owner_of(op.key()).filter(|_| forward) {
                    Some(owner) => remote.push((owner, (index as u32, op))),
                    None => own.push((index as u32, op)),
                }
            }
        }
        if let (Some(write_timeout), Some(entry)) = (known, self.pending.get_mut(&pending)) {
            if matches!(entry.origin, Origin::Peer { .. }) {
                entry.deadline = entry.deadline.min(now + write_timeout);
                self.timers.push(Reverse((entry.deadline, Timer::Pending(pending))));
            }
        }
        if let Some(entry) = self.pending.get_mut(&pending) {
            entry.state = PendingState::Write { slots, many };
        }
        // Drop our own copies of keys written elsewhere, and keep our flights from caching
        // what they loaded before the write.
        if let Some(keyspace) = self.keyspaces.get_mut(&keyspace_name) {
            for (_, (_, op)) in &remote {
                keyspace.flights.invalidate(op.key());
                keyspace.cache.remove(op.key());
            }
        }
        let deadline = self.pending.get(&pending).map_or(now, |entry| entry.deadline);
        let (max_count, max_bytes) = self.batch_limits();
        let entry_size = |(_, op): &(u32, WriteOp)| match op {
            WriteOp::Put(entry) => entry.key.len() + entry.value.len() + 32,
            WriteOp::Delete(key) => key.len() + 8,
        };
        for (owner, group) in batches_by_owner(remote, max_count, max_bytes, entry_size) {
            let indices: Vec<u32> = group.iter().map(|(index, _)| *index).collect();
            let ops = group.into_iter().map(|(_, op)| op).collect();
            let message = write_message(&keyspace_name, ops, many, self);
            self.cover(pending, &indices);
            let call = self.fresh_id();
            let kind = CallKind::Write { pending, indices };
            self.send_call(now, call, owner, deadline, kind, message);
        }
        if !own.is_empty() {
            self.owner_write(now, pending, &keyspace_name, own);
        }
        self.maybe_finish_write(pending);
    }

    /// Applies writes this node is the owner for, then asks every other ring member to drop its
    /// copies; the write completes when all confirmed.
    fn owner_write(
        &mut self,
        now: Instant,
        pending: u64,
        keyspace_name: &Bytes,
        ops: Vec<(u32, WriteOp)>,
    ) {
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let mut applied: Vec<u32> = Vec::new();
        let mut keys: Vec<Bytes> = Vec::new();
        let mut errors: Vec<(u32, Error)> = Vec::new();
        for (index, op) in ops {
            keyspace.flights.invalidate(op.key());
            match op {
                WriteOp::Put(entry) => {
                    let expires_at = entry
                        .expires_at
                        .or_else(|| keyspace.config.default_ttl.map(|ttl| now + ttl));
                    let key = Bytes::copy_from_slice(&entry.key);
                    let value = Bytes::copy_from_slice(&entry.value);
                    match keyspace.cache.insert(now, Tier::Main, key, value, expires_at) {
                        Ok(_) | Err(InsertError::AlreadyExpired) => {}
                        Err(InsertError::TooLarge { .. }) => errors.push((index, Error::TooLarge)),
                    }
                    keys.push(entry.key);
                }
                WriteOp::Delete(key) => {
                    keyspace.cache.remove(&key);
                    keyspace.hot.forget(&key);
                    keys.push(key);
                }
            }
            applied.push(index);
        }
        if let Some(PendingState::Write { slots, .. }) =
            self.pending.get_mut(&pending).map(|entry| &mut entry.state)
        {
            for (index, error) in errors {
                slots[index as usize].error.get_or_insert(error);
            }
        }
        if self.is_groupcache() {
            return; // no peer to tell: groupcache peers keep their copies
        }
        let (max_count, max_bytes) = self.batch_limits();
        let no_owner = Bytes::new();
        let items = applied.into_iter().zip(keys).map(|item| (no_owner.clone(), item)).collect();
        for (_, batch) in batches_by_owner(items, max_count, max_bytes, |(_, key)| key.len() + 8) {
            let (indices, keys): (Vec<u32>, Vec<Bytes>) = batch.into_iter().unzip();
            let message = Message::DropHot { keyspace: keyspace_name.clone(), keys };
            self.confirm_with_members(now, pending, &indices, &message);
        }
    }

    /// Sends `message` to every other ring member as a call covering `indices` of a pending
    /// write. Every member must confirm, connected now or not: one whose connection dropped may
    /// still hold a copy it fetched earlier. An unreachable member fails the write (it is not
    /// acknowledged) rather than leave a stale copy out there.
    fn confirm_with_members(
        &mut self,
        now: Instant,
        pending: u64,
        indices: &[u32],
        message: &Message,
    ) {
        let deadline = self.pending.get(&pending).map_or(now, |entry| entry.deadline);
        let members: Vec<Bytes> = self
            .ring
            .peers()
            .iter()
            .filter(|member| **member != self.config.node_id)
            .cloned()
            .collect();
        for peer in members {
            self.cover(pending, indices);
            let call = self.fresh_id();
            let kind = CallKind::DropHot { pending, indices: indices.to_vec() };
            self.send_call(now, call, peer, deadline, kind, message.clone());
        }
    }

    /// Clears a keyspace here and on every other ring member; done when all confirmed.
    fn delete_keyspace(&mut self, now: Instant, pending: u64, keyspace: Bytes) {
        let error = if self.leaving {
            Some(Error::ShuttingDown)
        } else if !self.keyspaces.contains_key(&keyspace) {
            Some(Error::UnknownKeyspace)
        } else {
            None
        };
        if let Some(entry) = self.pending.get_mut(&pending) {
            let slot = WriteSlot { waiting: 0, error: error.clone() };
            entry.state = PendingState::Write { slots: vec![slot], many: false };
        }
        if error.is_none() {
            self.clear_keyspace(&keyspace);
        }
        if error.is_none() && !self.is_groupcache() {
            self.confirm_with_members(now, pending, &[0], &Message::ClearKeyspace { keyspace });
        }
        self.maybe_finish_write(pending);
    }

    /// Drops every cached key of a keyspace and keeps loads in flight from being cached.
    fn clear_keyspace(&mut self, name: &[u8]) {
        if let Some(keyspace) = self.keyspaces.get_mut(name) {
            keyspace.cache.clear();
            keyspace.flights.invalidate_all();
        }
    }

    fn cover(&mut self, pending: u64, indices: &[u32]) {
        if let Some(PendingState::Write { slots, .. }) =
            self.pending.get_mut(&pending).map(|entry| &mut entry.state)
        {
            for &index in indices {
                slots[index as usize].waiting += 1;
            }
        }
    }

    /// One unit covering `indices` of a pending write finished.
    fn uncover(&mut self, pending: u64, indices: &[u32], results: &[Result<(), Error>]) {
        let Some(PendingState::Write { slots, .. }) =
            self.pending.get_mut(&pending).map(|entry| &mut entry.state)
        else {
            return;
        };
        for (position, &index) in indices.iter().enumerate() {
            let Some(slot) = slots.get_mut(index as usize) else { continue };
            slot.waiting = slot.waiting.saturating_sub(1);
            let result = results.get(position).or(results.first());
            if let Some(Err(error)) = result {
                slot.error.get_or_insert(error.clone());
            }
        }
        self.maybe_finish_write(pending);
    }

    fn maybe_finish_write(&mut self, pending: u64) {
        let done = match self.pending.get(&pending).map(|entry| &entry.state) {
            Some(PendingState::Write { slots, .. }) => slots.iter().all(|slot| slot.waiting == 0),
            _ => false,
        };
        if done {
            self.finish_pending(pending);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Answers

    fn pending_deadline(&mut self, now: Instant, id: u64) {
        let Some(entry) = self.pending.get_mut(&id) else { return };
        if entry.deadline > now {
            return;
        }
        let mut leave: Vec<(Bytes, FlightId, Waiter)> = Vec::new();
        match &mut entry.state {
            PendingState::Get { keyspace, flight } => {
                if let Some(flight) = flight.take() {
                    leave.push((keyspace.clone(), flight, Waiter::One(id)));
                }
                self.finish_pending_with(id, Some(Err(Error::TimedOut)));
            }
            PendingState::GetMany { keyspace, parts, remaining, .. } => {
                for (index, part) in parts.iter_mut().enumerate() {
                    if part.result.is_none() {
                        if let Some(flight) = part.flight.take() {
                            leave.push((keyspace.clone(), flight, Waiter::Part(id, index as u32)));
                        }
                        part.result = Some(Err(Error::TimedOut));
                    }
                }
                *remaining = 0;
                self.finish_pending(id);
            }
            PendingState::Write { slots, .. } => {
                for slot in slots.iter_mut().filter(|slot| slot.waiting > 0) {
                    slot.waiting = 0;
                    slot.error.get_or_insert(Error::TimedOut);
                }
                self.finish_pending(id);
            }
        }
        for (keyspace, flight, waiter) in leave {
            if let Some(keyspace) = self.keyspaces.get_mut(&keyspace) {
                keyspace.flights.leave(flight, waiter);
            }
        }
    }

    fn finish_pending(&mut self, id: u64) {
        self.finish_pending_with(id, None);
    }

    /// Removes a pending request and answers its origin. `single` is the result of a single get.
    fn finish_pending_with(&mut self, id: u64, single: Option<GetResult>) {
        let Some(entry) = self.pending.remove(&id) else { return };
        let (reply, message) = match (entry.state, single) {
            (_, Some(result)) => {
                let message = Message::GetReply(self.get_outcome(&result));
                (Reply::Get(result.map(|served| served.value)), message)
            }
            (PendingState::GetMany { parts, .. }, None) => {
                // Never deliver a value that expired while the rest of the batch came in.
                let now = self.clock.latest();
                let results: Vec<GetResult> = parts
                    .into_iter()
                    .map(|part| match part.result {
                        Some(Ok(_)) if part_expired(&part, now) => Err(Error::TimedOut),
                        result => result.unwrap_or(Err(Error::TimedOut)),
                    })
                    .collect();
                let outcomes = results.iter().map(|result| self.get_outcome(result)).collect();
                (
                    Reply::GetMany(
                        results.into_iter().map(|r| r.map(|served| served.value)).collect(),
                    ),
                    Message::GetManyReply(outcomes),
                )
            }
            (PendingState::Write { slots, many }, None) => {
                let results: Vec<Result<(), Error>> =
                    slots.into_iter().map(|slot| slot.error.map_or(Ok(()), Err)).collect();
                if many {
                    let acks =
                        results.iter().map(|r| r.clone().map_err(|e| e.to_reply_error())).collect();
                    (Reply::WriteMany(results), Message::AckMany(acks))
                } else {
                    let result = results.into_iter().next().unwrap_or(Err(Error::BadRequest));
                    let ack = Message::Ack(result.clone().map_err(|e| e.to_reply_error()));
                    (Reply::Write(result), ack)
                }
            }
            (PendingState::Get { .. }, None) => (
                Reply::Get(Err(Error::TimedOut)),
                Message::GetReply(GetOutcome::Failed(Error::TimedOut.to_reply_error())),
            ),
        };
        match entry.origin {
            Origin::Local(request) => {
                self.local_requests.remove(&request);
                self.outputs.push_back(Output::Reply { request, reply });
            }
            Origin::Peer { conn, request_id } => {
                if let Some(state) = self.conns.get_mut(&conn) {
                    state.in_flight = state.in_flight.saturating_sub(1);
                    self.send_reply(conn, request_id, message);
                }
            }
        }
    }

    fn get_outcome(&self, result: &GetResult) -> GetOutcome {
        match result {
            Ok(served) => GetOutcome::Found(Found {
                value: served.value.bytes.clone(),
                expires_at: served.value.expires_at.map(|at| self.unix_of(at)),
                key_rate: KeyRate::from_per_second(served.rate),
            }),
            Err(error) => GetOutcome::Failed(error.to_reply_error()),
        }
    }

    fn unix_of(&self, instant: Instant) -> UnixTime {
        UnixTime::from_instant(instant, self.started_at, self.config.unix_time_at_start)
    }

    fn instant_of(&self, unix: UnixTime) -> Instant {
        unix.to_instant(self.started_at, self.config.unix_time_at_start)
    }

    // ---------------------------------------------------------------------------------------
    // Peer calls

    fn send_call(
        &mut self,
        now: Instant,
        id: u64,
        peer: Bytes,
        deadline: Instant,
        kind: CallKind,
        message: Message,
    ) {
        self.calls.insert(
            id,
            Call { peer: peer.clone(), conn: None, deadline, kind, unsent: Some(message) },
        );
        self.push_timer(deadline, Timer::Call(id));
        if self.is_groupcache() {
            self.http_send_call(now, id, peer);
            return;
        }
        let attempt = self.fresh_id();
        let link = self.peers.entry(peer.clone()).or_default();
        if let Some(conn) = link.conn {
            self.transmit_call(id, conn);
        } else if link.connecting {
            link.queued.push(id);
        } else if now >= link.retry_at && !self.leaving {
            link.connecting = true;
            link.attempt = attempt;
            link.queued.push(id);
            let address = peer.clone();
            self.outputs.push_back(Output::Connect { peer, address });
            self.push_timer(now + self.config.connect_timeout, Timer::Connect(attempt));
        } else {
            // The peer refused recently: do not wait for it.
            self.fail_call(now, id);
        }
    }

    fn transmit_call(&mut self, id: u64, conn: ConnId) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(message) = call.unsent.take() else { return };
        call.conn = Some(conn);
        if self.is_groupcache() {
            if !self.http_transmit(id, conn, &message) {
                let now = self.clock.latest();
                self.fail_call(now, id);
            }
            return;
        }
        if self.send(conn, id, &message).is_err() {
            // Batches are cut to the limits before they are built, so this is a bug guard: the
            // call fails here (gets load locally), and no frame goes out under its id.
            let now = self.clock.latest();
            self.fail_call(now, id);
        }
    }

    fn flush_queued(&mut self, peer: &Bytes, conn: ConnId) {
        let queued = self
            .peers
            .get_mut(peer)
            .map(|link| core::mem::take(&mut link.queued))
            .unwrap_or_default();
        for id in queued {
            self.transmit_call(id, conn);
        }
    }

    fn connect_failed(&mut self, now: Instant, peer: &Bytes) {
        if self.is_groupcache() {
            self.http_connect_failed(now, peer);
            return;
        }
        self.back_off(now, peer);
        let queued = self.peers.get_mut(peer).map(|link| core::mem::take(&mut link.queued));
        for id in queued.unwrap_or_default() {
            self.fail_call(now, id);
        }
    }

    /// No new connection to `peer` before a backoff that doubles with each failure.
    fn back_off(&mut self, now: Instant, peer: &Bytes) {
        let (min, max) = (self.config.reconnect_backoff_min, self.config.reconnect_backoff_max);
        let jitter = self.next_random();
        let Some(link) = self.peers.get_mut(peer) else { return };
        link.connecting = false;
        link.backoff = match link.backoff.checked_mul(2) {
            _ if link.backoff.is_zero() => min,
            Some(doubled) => doubled.min(max),
            None => max,
        };
        // Up to a quarter of jitter, so peers that lost the same node do not retry in step.
        let quarter = u64::try_from(link.backoff.as_micros() / 4).unwrap_or(u64::MAX);
        let jitter = Duration::from_micros(jitter % quarter.saturating_add(1));
        link.retry_at = now + link.backoff + jitter;
    }

    /// A call failed (connection, timeout, refused): gets fall back to loading here, writes
    /// report the owner unavailable.
    fn fail_call(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.remove(&id) else { return };
        if self.is_groupcache() {
            self.http_abandon(now, &call);
        }
        match call.kind {
            CallKind::Get { keyspace, flight } => {
                self.fetch_failed(now, &keyspace, flight, id, &call.peer);
            }
            CallKind::GetMany { keyspace, flights } => {
                for flight in flights {
                    self.fetch_failed(now, &keyspace, flight, id, &call.peer);
                }
            }
            // The peer went away or did not answer in time: nothing more to wait for.
            CallKind::Leave => {}
            CallKind::Write { pending, indices } | CallKind::DropHot { pending, indices } => {
                let error = if call.deadline <= now { Error::TimedOut } else { Error::Unavailable };
                self.uncover(pending, &indices, &[Err(error)]);
            }
        }
    }

    /// A fetch from `peer` failed. When the ring has meanwhile named another peer the key's
    /// owner (`peer` left, or was taken off), the flight asks that owner, once; otherwise it
    /// loads here (groupcache's rule). Asking the new owner keeps one load per key in the
    /// cluster through a graceful leave, where a local load would race the new owner's.
    fn fetch_failed(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        call: u64,
        peer: &Bytes,
    ) {
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        let Some(meta) = keyspace.meta.get_mut(&flight) else { return };
        if meta.call != Some(call) {
            return;
        }
        meta.call = None;
        keyspace.stats.peer_errors += 1;
        if meta.load.is_some() {
            return;
        }
        let rerouted = meta.rerouted;
        let key = keyspace.flights.key(flight).cloned();
        let new_owner = key.as_ref().filter(|_| !rerouted).and_then(|key| self.owner_of(key));
        match (key, new_owner.filter(|owner| owner != peer)) {
            (Some(key), Some(owner)) => {
                let call = self.fresh_id();
                if let Some(meta) = self.flight_meta(keyspace_name, flight) {
                    meta.rerouted = true;
                    meta.call = Some(call);
                }
                let deadline = now + self.config.peer_timeout;
                let timeout_ms =
                    u32::try_from(self.config.peer_timeout.as_millis()).unwrap_or(u32::MAX).max(1);
                let message = Message::Get { keyspace: keyspace_name.clone(), key, timeout_ms };
                let kind = CallKind::Get { keyspace: keyspace_name.clone(), flight };
                self.send_call(now, call, owner, deadline, kind, message);
            }
            _ => self.load_or_fail(now, keyspace_name, flight),
        }
    }

    fn flight_meta(&mut self, keyspace_name: &[u8], flight: FlightId) -> Option<&mut FlightMeta> {
        self.keyspaces.get_mut(keyspace_name)?.meta.get_mut(&flight)
    }

    fn fetched(
        &mut self,
        now: Instant,
        keyspace_name: &Bytes,
        flight: FlightId,
        call: u64,
        peer: &Bytes,
        outcome: GetOutcome,
    ) {
        let threshold = self.config.hot_threshold_per_second;
        // groupcache mirrors a fetched value at random, one time in `hot_one_in`.
        let one_in = u64::from(self.config.groupcache.hot_one_in);
        let lucky = self.is_groupcache() && one_in > 0 && self.next_random() % one_in == 0;
        let result = match outcome {
            GetOutcome::Found(found) => {
                let expires_at = found.expires_at.map(|unix| self.instant_of(unix));
                if expires_at.is_some_and(|at| at <= now) {
                    // It expired on the way (a slow link, or clocks apart): never serve it.
                    self.fetch_failed(now, keyspace_name, flight, call, peer);
                    return;
                }
                let value = Value {
                    bytes: Bytes::copy_from_slice(&found.value),
                    expires_at,
                    path: Path::PeerFetch,
                };
                Ok(Served { value, rate: found.key_rate.as_per_second() })
            }
            GetOutcome::Failed(error) => Err(Error::from_reply_error(&error)),
        };
        let Some(keyspace) = self.keyspaces.get_mut(keyspace_name) else { return };
        if keyspace.meta.get(&flight).is_none_or(|meta| meta.call != Some(call)) {
            return;
        }
        match result {
            Err(error) if error.is_peer_failure() => {
                self.fetch_failed(now, keyspace_name, flight, call, peer)
            }
            Ok(served) => {
                keyspace.stats.peer_loads += 1;
                let store = (served.rate >= threshold || lucky).then_some(Tier::Hot);
                self.complete_flight(now, keyspace_name, flight, Ok(served), store, None);
            }
            Err(error) => self.complete_flight(now, keyspace_name, flight, Err(error), None, None),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Connections and frames

    fn hello(&self) -> Message {
        Message::Hello {
            protocol_version: u16::from(PROTOCOL_VERSION),
            cluster: self.config.cluster.clone(),
            node_id: self.config.node_id.clone(),
        }
    }

    fn open_conn(&mut self, conn: ConnId, peer: Option<Bytes>, outbound: bool) {
        // groupcache's HTTP has no hello: a connection is ready when it is open.
        let hello = !self.is_groupcache();
        if hello {
            let hello_by = self.clock.latest() + self.config.connect_timeout;
            self.push_timer(hello_by, Timer::Hello(conn));
        }
        let codec = self.new_codec(outbound);
        self.conns.insert(
            conn,
            Conn {
                codec,
                peer,
                outbound,
                hello_received: !hello,
                out: Vec::new(),
                dirty: false,
                in_flight: 0,
                backlogged: false,
            },
        );
    }

    /// Queues a frame on a connection; it goes out with the next drain.
    /// Encodes nothing, and says so, when the frame would break a limit (the peer would refuse
    /// it). Sending on a connection that is gone is not an error: its calls fail with it.
    fn send(&mut self, conn: ConnId, request_id: u64, message: &Message) -> Result<(), WireError> {
        let limits = self.config.limits;
        let Some(state) = self.conns.get_mut(&conn) else { return Ok(()) };
        message.encode(request_id, &mut state.out, &limits)?;
        self.mark_dirty(conn);
        Ok(())
    }

    /// Bytes were queued on `conn`: they go out with the next drain.
    fn mark_dirty(&mut self, conn: ConnId) {
        let Some(state) = self.conns.get_mut(&conn) else { return };
        if !state.dirty {
            state.dirty = true;
            self.dirty.push(conn);
        }
    }

    /// Sends a reply, shrunk to fit the frame limit if it is a batch that does not: its
    /// largest values become `Overloaded`, which the requester answers by loading them itself.
    fn send_reply(&mut self, conn: ConnId, request_id: u64, message: Message) {
        if self.conns.get(&conn).is_some_and(compat::is_http) {
            self.http_reply(conn, &message);
            return;
        }
        let limits = self.config.limits;
        let message = fit_reply(message, &limits);
        if self.send(conn, request_id, &message).is_err() {
            // Nothing else can exceed the limits (values over `max_value` are refused before
            // they are stored): still, answer in the expected shape rather than not at all.
            let error = Error::Overloaded.to_reply_error();
            let fallback = match message {
                Message::GetReply(_) => Message::GetReply(GetOutcome::Failed(error)),
                Message::GetManyReply(outcomes) => {
                    Message::GetManyReply(vec![GetOutcome::Failed(error); outcomes.len()])
                }
                Message::AckMany(results) => Message::AckMany(vec![Err(error); results.len()]),
                _ => Message::Ack(Err(error)),
            };
            let _ = self.send(conn, request_id, &fallback);
        }
    }

    /// Sends an error frame and closes the connection (a malformed frame or a hello mismatch).
    fn refuse(&mut self, conn: ConnId, reason: ErrorCode) {
        let message = Message::Error(ReplyError { code: reason, message: Bytes::new() });
        let _ = self.send(conn, 0, &message);
        self.outputs.push_back(Output::Event(Event::ConnectionRefused { conn, reason }));
        let now = self.clock.latest();
        self.flush_transmits();
        self.outputs.push_back(Output::Close { conn });
        self.drop_conn(now, conn);
    }

    /// Forgets a connection: its calls fail (gets fall back to local loads), requests that
    /// came on it are abandoned, and hot copies are dropped (a delete may be missed now).
    fn drop_conn(&mut self, now: Instant, conn: ConnId) {
        let Some(state) = self.conns.remove(&conn) else { return };
        if let (true, false, Some(peer)) = (state.outbound, state.hello_received, &state.peer) {
            // It never got as far as a hello: as good as a failed connect.
            self.back_off(now, peer);
        }
        if let Some(peer) = &state.peer {
            if let Some(link) = self.peers.get_mut(peer) {
                if link.conn == Some(conn) {
                    link.conn = None;
                }
                Node::http_forget(link, conn);
                // Links to nodes off the ring go with their last connection, so that clients
                // claiming many node ids cannot grow the table.
                let idle = link.conn.is_none()
                    && link.pool.is_empty()
                    && !link.connecting
                    && link.queued.is_empty();
                if idle && !self.ring.contains(peer) {
                    self.peers.remove(peer);
                }
            }
            // A lost native link may have missed a "drop your copy"; groupcache's HTTP never
            // sends one, so its hot copies do not depend on connections.
            if !compat::is_http(&state) {
                for keyspace in self.keyspaces.values_mut() {
                    keyspace.cache.clear_tier(Tier::Hot);
                }
            }
        }
        let failed: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, call)| call.conn == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.fail_call(now, id);
        }
        let abandoned: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, entry)| matches!(entry.origin, Origin::Peer { conn: c, .. } if c == conn))
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            if let Some(entry) = self.pending.get_mut(&id) {
                // Answer into the void: the deadline path leaves flights and cleans up.
                entry.deadline = now;
            }
            self.pending_deadline(now, id);
        }
    }

    fn handle_frame(&mut self, now: Instant, conn: ConnId, request_id: u64, message: Message) {
        let Some(state) = self.conns.get_mut(&conn) else { return };
        if let Message::Error(error) = &message {
            // The peer refused us (or gives up): close without answering.
            let reason = error.code;
            self.outputs.push_back(Output::Event(Event::ConnectionRefused { conn, reason }));
            self.outputs.push_back(Output::Close { conn });
            self.drop_conn(now, conn);
            return;
        }
        if !state.hello_received {
            let Message::Hello { protocol_version, cluster, node_id } = message else {
                self.refuse(conn, ErrorCode::Malformed);
                return;
            };
            if protocol_version != u16::from(PROTOCOL_VERSION) {
                self.refuse(conn, ErrorCode::ProtocolVersion);
                return;
            }
            // On a connection this node opened, the peer must be the node it dialled.
            let unexpected = state.outbound && state.peer.as_ref() != Some(&node_id);
            if cluster != self.config.cluster || node_id == self.config.node_id || unexpected {
                self.refuse(conn, ErrorCode::ClusterMismatch);
                return;
            }
            state.hello_received = true;
            let outbound = state.outbound;
            let node_id = Bytes::copy_from_slice(&node_id);
            state.peer = Some(node_id.clone());
            if !outbound {
                let hello = self.hello();
                let _ = self.send(conn, 0, &hello);
                let link = self.peers.entry(node_id.clone()).or_default();
                if link.conn.is_none() {
                    link.conn = Some(conn);
                    link.connecting = false;
                    self.flush_queued(&node_id, conn);
                }
                if self.leaving {
                    // A peer that connects during the leave hears of it before any refusal,
                    // so that it asks the key's next owner rather than loading the key itself.
                    let _ = self.send(conn, 0, &Message::Leaving);
                }
            }
            self.outputs.push_back(Output::Event(Event::PeerUp { peer: node_id }));
            return;
        }
        let in_flight = state.in_flight;
        let overloaded = in_flight >= self.config.max_in_flight_per_connection
            || self.pending.len() >= self.config.max_pending;
        match message {
            Message::Hello { .. } => self.refuse(conn, ErrorCode::Malformed),
            // Handled before the hello check.
            Message::Error(_) => {}
            Message::Ping => self.send_reply(conn, request_id, Message::Pong),
            Message::Pong => {}
            Message::Leaving => {
                if let Some(peer) = self.conns.get(&conn).and_then(|state| state.peer.clone()) {
                    let members: Vec<Bytes> = self
                        .ring
                        .peers()
                        .iter()
                        .filter(|member| **member != peer)
                        .cloned()
                        .collect();
                    self.set_peers(now, members);
                }
                // Acknowledged after the peer is off the ring: whatever this node asked of it
                // before came on this connection ahead of the ack.
                if request_id != 0 {
                    self.send_reply(conn, request_id, Message::Ack(Ok(())));
                }
            }
            Message::Get { keyspace, key, timeout_ms } => {
                if overloaded {
                    let reply =
                        Message::GetReply(GetOutcome::Failed(Error::Overloaded.to_reply_error()));
                    self.send_reply(conn, request_id, reply);
                    return;
                }
                let pending = self.new_remote(now, conn, request_id, timeout_ms);
                self.start_get(now, pending, keyspace, key, true);
            }
            Message::GetMany { keyspace, keys, timeout_ms } => {
                if overloaded {
                    let outcome = GetOutcome::Failed(Error::Overloaded.to_reply_error());
                    self.send_reply(
                        conn,
                        request_id,
                        Message::GetManyReply(vec![outcome; keys.len()]),
                    );
                    return;
                }
                let pending = self.new_remote(now, conn, request_id, timeout_ms);
                self.start_get_many(now, pending, keyspace, keys, true);
            }
            Message::Put { keyspace, entry } => {
                self.remote_write(
                    now,
                    conn,
                    request_id,
                    overloaded,
                    keyspace,
                    vec![put_op(self, entry)],
                    false,
                );
            }
            Message::PutMany { keyspace, entries } => {
                let ops = entries.into_iter().map(|entry| put_op(self, entry)).collect();
                self.remote_write(now, conn, request_id, overloaded, keyspace, ops, true);
            }
            Message::Delete { keyspace, key } => {
                self.remote_write(
                    now,
                    conn,
                    request_id,
                    overloaded,
                    keyspace,
                    vec![WriteOp::Delete(key)],
                    false,
                );
            }
            Message::DeleteMany { keyspace, keys } => {
                let ops = keys.into_iter().map(WriteOp::Delete).collect();
                self.remote_write(now, conn, request_id, overloaded, keyspace, ops, true);
            }
            Message::DropHot { keyspace, keys } => {
                if let Some(keyspace) = self.keyspaces.get_mut(&keyspace) {
                    for key in &keys {
                        keyspace.flights.invalidate(key);
                        keyspace.cache.remove(key);
                    }
                }
                self.send_reply(conn, request_id, Message::Ack(Ok(())));
            }
            Message::ClearKeyspace { keyspace } => {
                self.clear_keyspace(&keyspace);
                self.send_reply(conn, request_id, Message::Ack(Ok(())));
            }
            reply @ (Message::GetReply(_)
            | Message::GetManyReply(_)
            | Message::Ack(_)
            | Message::AckMany(_)) => self.reply_to_call(now, conn, request_id, reply),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn remote_write(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: u64,
        overloaded: bool,
        keyspace: Bytes,
        ops: Vec<WriteOp>,
        many: bool,
    ) {
        if overloaded {
            let error = Error::Overloaded.to_reply_error();
            let reply = if many {
                Message::AckMany(vec![Err(error); ops.len()])
            } else {
                Message::Ack(Err(error))
            };
            self.send_reply(conn, request_id, reply);
            return;
        }
        let pending = self.new_remote(now, conn, request_id, 0);
        self.start_write(now, pending, keyspace, ops, many, false);
    }

    fn reply_to_call(&mut self, now: Instant, conn: ConnId, id: u64, reply: Message) {
        if self.calls.get(&id).is_none_or(|call| call.conn != Some(conn)) {
            return; // a late answer to a call that already timed out or fell back
        }
        let call = self.calls.remove(&id).expect("just looked up");
        let to_results = |results: Vec<Result<(), ReplyError>>| -> Vec<Result<(), Error>> {
            results
                .iter()
                .map(|r| r.as_ref().map(|_| ()).map_err(Error::from_reply_error))
                .collect()
        };
        match (call.kind, reply) {
            (CallKind::Get { keyspace, flight }, Message::GetReply(outcome)) => {
                self.fetched(now, &keyspace, flight, id, &call.peer, outcome);
            }
            (CallKind::GetMany { keyspace, flights }, Message::GetManyReply(outcomes))
                if outcomes.len() == flights.len() =>
            {
                for (flight, outcome) in flights.into_iter().zip(outcomes) {
                    self.fetched(now, &keyspace, flight, id, &call.peer, outcome);
                }
            }
            (CallKind::Write { pending, indices }, Message::Ack(result)) if indices.len() == 1 => {
                self.uncover(pending, &indices, &to_results(vec![result]));
            }
            (CallKind::Write { pending, indices }, Message::AckMany(results))
                if results.len() == indices.len() =>
            {
                self.uncover(pending, &indices, &to_results(results));
            }
            // One confirmation covers every key the drop named.
            (CallKind::DropHot { pending, indices }, Message::Ack(result)) => {
                self.uncover(pending, &indices, &to_results(vec![result]));
            }
            (CallKind::Leave, _) => {}
            (kind, _) => {
                // A reply of the wrong shape: the peer is broken; treat the call as failed.
                self.calls.insert(
                    id,
                    Call {
                        peer: call.peer,
                        conn: call.conn,
                        deadline: call.deadline,
                        kind,
                        unsent: None,
                    },
                );
                self.fail_call(now, id);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Membership

    fn set_peers(&mut self, now: Instant, members: Vec<Bytes>) {
        let mut unique: Vec<Bytes> = Vec::with_capacity(members.len() + 1);
        for member in members {
            if !member.is_empty() && !unique.contains(&member) {
                unique.push(member);
            }
        }
        if !self.leaving && !unique.contains(&self.config.node_id) {
            unique.push(self.config.node_id.clone());
        }
        let Ok(ring) = Ring::with_peers(self.config.ring, unique) else { return };
        let old = core::mem::replace(&mut self.ring, ring);
        self.outputs.push_back(Output::Event(Event::RingChanged { members: self.ring.len() }));
        let me = self.config.node_id.clone();
        let mut queued = 0;
        let names: Vec<Bytes> = self.keyspaces.keys().cloned().collect();
        for name in names {
            let keyspace = self.keyspaces.get_mut(&name).expect("listed above");
            // Keys this node no longer owns leave the main cache (the new owner loads them).
            let moved: Vec<Bytes> = keyspace
                .cache
                .keys(Tier::Main)
                .into_iter()
                .filter(|key| self.ring.owner(key).is_some_and(|owner| *owner != me))
                .collect();
            for key in moved {
                keyspace.cache.remove(&key);
            }
            // Warmup: warm keys and tracked hot keys that this node now owns and did not before.
            let mut candidates: Vec<Bytes> = keyspace.config.warm_keys.clone();
            candidates.extend(
                keyspace.hot.top(now, self.config.warmup_max_keys).into_iter().map(|(key, _)| key),
            );
            let mut picked = 0;
            for key in candidates {
                if picked >= self.config.warmup_max_keys {
                    break;
                }
                let owned_now = self.ring.owner(&key).is_some_and(|owner| *owner == me);
                let owned_before =
                    old.owner(&key).is_some_and(|owner| *owner == me) && old.len() > 1;
                if owned_now
                    && !owned_before
                    && !self.warmup.iter().any(|(k, q)| *k == name && *q == key)
                {
                    self.warmup.push_back((name.clone(), key));
                    picked += 1;
                }
            }
            queued += picked;
        }
        if queued > 0 {
            self.outputs.push_back(Output::Event(Event::WarmupStarted { keys: queued }));
        }
    }

    fn start_warmups(&mut self, now: Instant) {
        while self.warmup_active < self.config.warmup_concurrency && !self.leaving {
            let Some((name, key)) = self.warmup.pop_front() else { break };
            if self.owner_of(&key).is_some() {
                continue;
            }
            let Some(keyspace) = self.keyspaces.get_mut(&name) else { continue };
            if keyspace.cache.contains(now, &key) || keyspace.flights.get(&key).is_some() {
                continue;
            }
            let Ok(Begin::Leader(flight)) = keyspace.flights.begin(&key, Waiter::Warmup) else {
                continue;
            };
            keyspace.meta.insert(flight, FlightMeta::default());
            self.warmup_active += 1;
            self.load_or_fail(now, &name, flight);
        }
    }

    /// Tells every connected peer; each goodbye is a call the peer acknowledges, and the node
    /// is idle (so drained) only once every peer acknowledged, went away, or took longer than
    /// the leave timeout.
    fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.warmup.clear();
        let conns: Vec<(ConnId, Option<Bytes>)> = self
            .conns
            .iter()
            .filter(|(_, state)| {
                (state.hello_received || state.outbound) && !compat::is_http(state)
            })
            .map(|(id, state)| (*id, state.peer.clone()))
            .collect();
        let deadline = now + self.config.peer_timeout.min(LEAVE_ACK_TIMEOUT);
        for (conn, peer) in conns {
            let Some(peer) = peer else {
                let _ = self.send(conn, 0, &Message::Leaving);
                continue;
            };
            let id = self.fresh_id();
            let call =
                Call { peer, conn: Some(conn), deadline, kind: CallKind::Leave, unsent: None };
            self.calls.insert(id, call);
            self.push_timer(deadline, Timer::Call(id));
            if self.send(conn, id, &Message::Leaving).is_err() {
                self.calls.remove(&id);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Plumbing

    fn after_mutation(&mut self, now: Instant) {
        self.start_warmups(now);
        self.http_after_mutation(now);
        self.flush_transmits();
        if self.leaving && !self.drained && self.is_idle() {
            self.drained = true;
            self.outputs.push_back(Output::Event(Event::Drained));
        }
        self.compact_timers();
    }

    fn flush_transmits(&mut self) {
        for conn in core::mem::take(&mut self.dirty) {
            if let Some(state) = self.conns.get_mut(&conn) {
                state.dirty = false;
                if !state.out.is_empty() {
                    let data = core::mem::take(&mut state.out);
                    self.outputs.push_back(Output::Transmit { conn, data });
                }
            }
        }
    }

    fn push_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    /// Timers of finished work stay in the heap until they come due; rebuild it when they
    /// outnumber the live ones, so memory follows the work in progress.
    fn compact_timers(&mut self) {
        let live = self.pending.len() + self.calls.len() + 2 * self.loads.len();
        if self.timers.len() <= 2 * live + 1_024 {
            return;
        }
        let timers = core::mem::take(&mut self.timers).into_vec();
        let kept: Vec<Reverse<(Instant, Timer)>> = timers
            .into_iter()
            .filter(|Reverse((_, timer))| match timer {
                Timer::Pending(id) => self.pending.contains_key(id),
                Timer::Call(id) => self.calls.contains_key(id),
                Timer::Load(id) | Timer::StartLoad(id) => self.loads.contains_key(id),
                Timer::Connect(attempt) => {
                    self.peers.values().any(|link| link.connecting && link.attempt == *attempt)
                }
                Timer::Hello(conn) => self.conns.get(conn).is_some_and(|c| !c.hello_received),
                Timer::Parse(conn) => self.conns.get(conn).is_some_and(|c| c.backlogged),
            })
            .collect();
        self.timers = BinaryHeap::from(kept);
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: seeded from the config, so a run replays exactly.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A keyspace of a node configured by `node`, its store made by `stores` once the settings
/// are known to be valid.
fn build_keyspace(
    node: &NodeConfig,
    now: Instant,
    stores: &mut dyn StoreFactory,
    config: KeyspaceConfig,
) -> Result<Keyspace, ConfigError> {
    if config.name.is_empty() || config.name.len() > node.limits.max_label as usize {
        return Err(ConfigError::BadKeyspaceName);
    }
    if config.read_timeout.is_zero() || config.write_timeout.is_zero() {
        return Err(ConfigError::BadTiming);
    }
    let seed = node.seed ^ crate::hash::hash_key(&key_hash_builder(node.seed), &config.name);
    let hot = HotKeys::new(config.hot_keys, now).map_err(|_| ConfigError::BadHotKeys)?;
    Ok(Keyspace {
        cache: stores
            .create(&config.name, CacheConfig { max_bytes: config.max_bytes, hash_seed: seed }),
        flights: FlightTable::new(seed.rotate_left(17), FlightLimits::default()),
        meta: HashMap::with_hasher(key_hash_builder(seed.rotate_left(29))),
        hot,
        breaker: Breaker::new(config.breaker.unwrap_or(node.breaker), now),
        limiter: config.limiter.or(node.limiter).map(|limiter| Limiter::new(limiter, now)),
        stats: KeyspaceStats::default(),
        config,
    })
}

/// Groups `items` by owner and cuts each owner's share into batches of at most `max_count`
/// items and about `max_bytes` bytes (by `size`), so that no frame breaks a wire limit.
fn batches_by_owner<T>(
    mut items: Vec<(Bytes, T)>,
    max_count: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<(Bytes, Vec<T>)> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut batches: Vec<(Bytes, Vec<T>)> = Vec::new();
    let mut bytes = 0;
    for (owner, item) in items {
        let item_size = size(&item);
        match batches.last_mut() {
            Some((last, batch))
                if *last == owner && batch.len() < max_count && bytes + item_size <= max_bytes =>
            {
                bytes += item_size;
                batch.push(item);
            }
            _ => {
                bytes = item_size;
                batches.push((owner, vec![item]));
            }
        }
    }
    batches
}

/// A batch reply over the frame limit loses its largest values, each answered `Overloaded`
/// instead (a peer failure: the requester loads those keys itself). Other replies are small.
fn fit_reply(mut message: Message, limits: &WireLimits) -> Message {
    while matches!(message.checked_len(limits), Err(WireError::FrameTooLarge { .. })) {
        let Message::GetManyReply(outcomes) = &mut message else { break };
        let largest = outcomes
            .iter()
            .enumerate()
            .filter_map(|(index, outcome)| match outcome {
                GetOutcome::Found(found) => Some((found.value.len(), index)),
                GetOutcome::Failed(_) => None,
            })
            .max();
        let Some((_, index)) = largest else { break };
        outcomes[index] = GetOutcome::Failed(Error::Overloaded.to_reply_error());
    }
    message
}

fn part_expired(part: &Part, now: Instant) -> bool {
    matches!(&part.result, Some(Ok(served)) if served.value.expires_at.is_some_and(|at| at <= now))
}

enum Lookup {
    Done(GetResult),
    Waiting(FlightId),
}

#[derive(Clone)]
enum WriteOp {
    Put(Entry),
    Delete(Bytes),
}

impl WriteOp {
    fn key(&self) -> &Bytes {
        match self {
            WriteOp::Put(entry) => &entry.key,
            WriteOp::Delete(key) => key,
        }
    }
}

fn put_op(node: &Node, entry: PutEntry) -> WriteOp {
    WriteOp::Put(Entry {
        key: entry.key,
        value: entry.value,
        expires_at: entry.expires_at.map(|unix| node.instant_of(unix)),
    })
}

fn write_message(keyspace: &Bytes, ops: Vec<WriteOp>, many: bool, node: &Node) -> Message {
    let to_entry = |entry: Entry| PutEntry {
        key: entry.key,
        value: entry.value,
        expires_at: entry.expires_at.map(|at| node.unix_of(at)),
    };
    let all_puts = ops.iter().all(|op| matches!(op, WriteOp::Put(_)));
    match (many, ops.len(), all_puts) {
        (false, 1, true) => {
            let Some(WriteOp::Put(entry)) = ops.into_iter().next() else { unreachable!("one put") };
            Message::Put { keyspace: keyspace.clone(), entry: to_entry(entry) }
        }
        (false, 1, false) => {
            Message::Delete { keyspace: keyspace.clone(), key: ops[0].key().clone() }
        }
        (_, _, true) => Message::PutMany {
            keyspace: keyspace.clone(),
            entries: ops
                .into_iter()
                .filter_map(|op| if let WriteOp::Put(e) = op { Some(to_entry(e)) } else { None })
                .collect(),
        },
        (_, _, false) => Message::DeleteMany {
            keyspace: keyspace.clone(),
            keys: ops.iter().map(|op| op.key().clone()).collect(),
        },
    }
}
