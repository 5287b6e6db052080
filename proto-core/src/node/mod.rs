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
//!    For a while after a ring change, a flight of a key this node owns first asks the key's
//!    previous owner for its cached copy ([`handoff`]: a peek, answered from that node's
//!    cache alone), and loads only when it has none.
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
//! with an error frame; with a cluster secret, each side also proves it knows the secret, over
//! nonces the driver passes with each connection — [`auth`]), who may write (only current
//! members: [`auth`]), framing and limits (a malformed frame closes that connection and
//! nothing else), request ids, in-flight limits, reconnect backoff, and batching (all frames
//! for a connection since the last drain go out in one [`Output::Transmit`]).
//!
//! # Parts
//! `Node` owns its state in parts that keep their own invariants (the shape of quinn-proto's
//! `connection/`). The tables of requests, links, calls, loads and timers are private to their
//! types, so what each states — a local id names one request, a connection indexes what depends
//! on it, a call ends once, a timer fires once per setting — holds whatever the node does with
//! them. The node's handlers (`on_*`) live beside the part they mostly drive:
//! - [`requests`]: requests in progress, local or from peers, each answered once;
//! - [`links`]: connections and peer links, each connection indexing the calls and requests
//!   that depend on it;
//! - [`calls`]: calls to peers, ended exactly once;
//! - [`loading`]: loads from the data source through limiter and breaker, and the end of
//!   flights; [`keyspace`]: each keyspace's cache, flights, tracker, breaker and counters;
//! - [`gets`] and [`writes`]: the two request families; [`batching`]: frames that fit the
//!   limits;
//! - [`membership`]: the member list, the ring of the members up, warmup, the graceful leave;
//!   [`liveness`]: which members answer; [`heartbeats`]: the node acting on it (pings, dials,
//!   members going down and coming back, the minimum member count); [`handoff`]: the window
//!   after a ring change in which old owners keep what moved and new owners ask them first;
//! - [`timers`]: every deadline, with generations;
//! - [`auth`]: the cluster secret's proof in the hello, and which peer requests need a
//!   connection authenticated as a current member;
//! - [`frames`]: native frames by message family; [`transport`]: the one seam where the
//!   native protocol and groupcache's HTTP ([`compat`]) differ.

mod auth;
mod batching;
mod calls;
mod compat;
mod config;
mod frames;
mod gets;
mod handoff;
mod heartbeats;
mod ids;
mod keyspace;
mod links;
mod liveness;
mod loading;
mod membership;
mod requests;
mod timers;
mod transport;
mod types;
mod writes;

#[cfg(test)]
mod compat_tests;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use bytes::Bytes;
use hashbrown::HashMap;

use crate::cache::{LruStores, StoreFactory};
use crate::hash::{KeyHashBuilder, key_hash_builder};
use crate::ring::Ring;
use crate::time::{Instant, Monotonic, UnixTime};

use calls::Calls;
use handoff::Handoff;
use ids::Ids;
use keyspace::Keyspace;
use links::Links;
use liveness::Liveness;
use loading::Loads;
use membership::Membership;
use requests::Requests;
use timers::{Timer, TimerQueue};
use writes::WriteOp;

pub use config::{
    ConfigError, GroupcacheConfig, KeyspaceConfig, MIN_CLUSTER_SECRET_LEN, NodeConfig, PeerProtocol,
};
pub use keyspace::KeyspaceStats;
pub use liveness::{LivenessConfig, MemberInfo, MemberState};
pub use types::{
    ConnId, Entry, Error, Event, Input, InputError, LoadId, LoadResult, Output, Path, Reply,
    RequestId, SecurityStats, Value,
};

/// One herdcache cluster member as a pure state machine. See the module docs.
pub struct Node {
    config: NodeConfig,
    stores: Box<dyn StoreFactory>,
    clock: Monotonic,
    started_at: Instant,
    ring: Ring<Bytes>,
    keyspaces: HashMap<Bytes, Keyspace, KeyHashBuilder>,
    requests: Requests,
    links: Links,
    calls: Calls,
    loads: Loads,
    membership: Membership,
    /// The handoff window after a ring change (the previous owner first).
    handoff: Handoff,
    /// The member list and who of it answers (the ring holds the members up).
    liveness: Liveness,
    timers: TimerQueue,
    outputs: VecDeque<Output>,
    ids: Ids,
    rng: u64,
    /// Hellos and requests refused for want of authentication or authorization.
    security: SecurityStats,
    /// groupcache HTTP: serving connections that move on after this mutation.
    http_turns: compat::HttpTurns,
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
        if let Some(secret) = &config.cluster_secret {
            if secret.len() < config::MIN_CLUSTER_SECRET_LEN
                || config.peer_protocol == PeerProtocol::GroupcacheHttp
            {
                return Err(ConfigError::BadClusterSecret);
            }
        }
        if config.request_timeout.is_zero()
            || config.peer_timeout.is_zero()
            || config.connect_timeout.is_zero()
            || (!config.handoff_window.is_zero() && config.peek_timeout.is_zero())
            || !config.hot_threshold_per_second.is_finite()
            || config.hot_threshold_per_second < 0.0
        {
            return Err(ConfigError::BadTiming);
        }
        if !config.liveness.is_valid() {
            return Err(ConfigError::BadLiveness);
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
            requests: Requests::new(&hasher),
            links: Links::new(&hasher),
            calls: Calls::new(&hasher),
            loads: Loads::new(&hasher),
            membership: Membership::default(),
            handoff: Handoff::default(),
            liveness: Liveness::default(),
            timers: TimerQueue::new(hasher),
            outputs: VecDeque::new(),
            ids: Ids::new(),
            rng: config.seed | 1,
            security: SecurityStats::default(),
            http_turns: compat::HttpTurns::default(),
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

    /// Creates a keyspace. Its settings must pass [`KeyspaceConfig::validate`].
    pub fn create_keyspace(&mut self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        if self.keyspaces.contains_key(&config.name) {
            return Err(ConfigError::DuplicateKeyspace);
        }
        let now = self.clock.latest();
        let keyspace = Keyspace::new(&self.config, now, self.stores.as_mut(), config)?;
        self.keyspaces.insert(keyspace.config.name.clone(), keyspace);
        Ok(())
    }

    /// Changes a keyspace's settings, which must pass [`KeyspaceConfig::validate`] (nothing
    /// changes otherwise). Its cached values stay (evicted down to a smaller budget), and its
    /// breaker keeps its state: an open breaker stays open until its reset timeout, under the
    /// new settings.
    pub fn update_keyspace(&mut self, config: KeyspaceConfig) -> Result<(), ConfigError> {
        let now = self.clock.latest();
        let Some(keyspace) = self.keyspaces.get_mut(&config.name) else {
            return Err(ConfigError::UnknownKeyspace);
        };
        keyspace.update(&self.config, now, config)
    }

    /// Removes a keyspace and its data; requests waiting on its loads are answered
    /// `UnknownKeyspace`.
    pub fn remove_keyspace(&mut self, name: &[u8]) -> Result<(), ConfigError> {
        let now = self.clock.latest();
        let Some(keyspace) = self.keyspaces.get(name) else {
            return Err(ConfigError::UnknownKeyspace);
        };
        let name = keyspace.config.name.clone();
        let flights: Vec<_> = keyspace.meta.keys().copied().collect();
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
        self.keyspaces.get(name).map(|keyspace| keyspace.stats(now))
    }

    /// How many hellos and peer requests this node refused for want of authentication or
    /// authorization (see [`SecurityStats`]).
    #[must_use]
    pub fn security_stats(&self) -> SecurityStats {
        self.security
    }

    /// Feeds one input. Drain [`Node::poll_output`] afterwards.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), InputError> {
        let now = self.clock.observe(now);
        let result = self.on_input(now, input);
        self.after_mutation(now);
        result
    }

    /// Fires every deadline at or before `now`. Early or repeated calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        // Parsed after the other timers, once each: parsing may set the timer again, due now.
        let mut backlogged = Vec::new();
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Pending(id) => self.on_request_timeout(id),
                Timer::Call(id) => self.fail_call(now, id),
                Timer::Load(id) => self.on_load_timeout(now, id),
                Timer::StartLoad(id) => self.on_load_start_due(now, id),
                Timer::Connect(attempt) => self.on_connect_timeout(now, attempt),
                Timer::Hello(conn) => self.on_hello_timeout(conn),
                Timer::Parse(conn) => backlogged.push(conn),
                Timer::Heartbeat => self.on_heartbeat(now),
                Timer::HandoffEnd => self.on_handoff_end(now),
            }
        }
        for conn in backlogged {
            self.on_parse_turn(now, conn);
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
        self.keyspaces
            .values()
            .filter_map(|keyspace| keyspace.cache.poll_timeout())
            .chain(self.timers.next_deadline())
            .min()
    }

    /// Whether nothing is in progress: no request, load or peer call.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
            && self.loads.is_empty()
            && self.calls.is_empty()
            && !self.membership.is_warming_up()
    }

    /// One input, dispatched to the part that handles it.
    fn on_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), InputError> {
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
            Input::Loaded { load, result } => return self.on_loaded(now, load, result),
            Input::SetPeers(members) => self.on_peers(now, members),
            Input::Leave => self.on_leave(now),
            Input::Connected { conn, peer, nonce, peer_identity } => {
                if self.links.contains(conn) {
                    return Err(InputError::DuplicateConnection(conn));
                }
                self.on_connected(now, conn, peer, nonce, peer_identity);
            }
            Input::ConnectFailed { peer } => self.on_connect_failed(now, &peer),
            Input::Accepted { conn, nonce, peer_identity } => {
                if self.links.contains(conn) {
                    return Err(InputError::DuplicateConnection(conn));
                }
                self.open_conn(conn, None, false, (nonce, peer_identity));
            }
            Input::Received { conn, data } => {
                if !self.links.contains(conn) {
                    return Err(InputError::UnknownConnection(conn));
                }
                self.on_received(now, conn, data);
            }
            // A close the node asked for is reported back too: nothing left to do then.
            Input::Closed { conn } => self.on_closed(now, conn),
        }
        Ok(())
    }

    /// After every input and timeout: queued warmups start, groupcache serving connections
    /// move on, queued bytes become transmits, and a leaving node that went idle says so once.
    fn after_mutation(&mut self, now: Instant) {
        self.start_warmups(now);
        self.http_after_mutation(now);
        self.links.flush(&mut self.outputs);
        let idle = self.is_idle();
        if self.membership.drains_now(idle) {
            self.outputs.push_back(Output::Event(Event::Drained));
        }
    }

    /// The wall-clock time of `instant` (expiries cross the wire as wall-clock time).
    fn unix_of(&self, instant: Instant) -> UnixTime {
        UnixTime::from_instant(instant, self.started_at, self.config.unix_time_at_start)
    }

    /// The instant on this node's clock of wall-clock time `unix`.
    fn instant_of(&self, unix: UnixTime) -> Instant {
        unix.to_instant(self.started_at, self.config.unix_time_at_start)
    }

    /// The next number of the seeded generator (xorshift64*), so a run replays exactly.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
