//! A deterministic cluster simulation: N real [`Node`]s, a virtual clock, a seeded network and a
//! data source that can be slow or fail. Test support (feature `_sim`), not a public API.
//!
//! - **Stores.** Each node keeps its keyspace in the store [`SimConfig::stores`] makes: the
//!   exact-LRU [`LruStores`] by default (the core's own, what `Node::new` uses);
//!   herdcache-runtime's tests (`runtime/tests/sim.rs`) run the same properties on the sharded
//!   CLOCK store the runtimes ship.
//! - **Network.** Connections behave like TCP: bytes on one connection arrive in order, after a
//!   seeded latency; different connections reorder freely. Faults: a partition between two
//!   nodes stalls their bytes (as TCP retransmitting into a black hole) and refuses new
//!   connections; a reset closes one connection on both ends; a crash closes every connection
//!   of a node and loses its state; a restart brings a fresh node back with the same id.
//! - **Membership.** Each node is told its member list ([`Sim::set_members`], as a discovery
//!   provider would), one node at a time or all at once; a crashed node keeps the last list it
//!   was given and boots with it, so a crashed node can be dropped from the others' lists and
//!   rejoin them after its restart. Liveness changes the rings by itself too
//!   ([`SimConfig::liveness`]): a crashed or cut-off member leaves the others' rings once it
//!   has been silent for `down_after`, and returns when it answers again. Every node runs with
//!   the handoff window after ring changes ([`SimConfig::handoff_window`], on by default as in
//!   production): old owners keep what moved, and new owners peek at them before loading.
//! - **Clocks.** Each node reads the simulation's clock plus its own skew, bounded by
//!   [`MAX_CLOCK_SKEW`] ([`Sim::skew_clock`]): it may run ahead or behind the others, and a
//!   lower skew than before steps its clock backwards. A node's wall clock (the
//!   `unix_time_at_start` it boots with) is skewed alike. The core treats time going backwards
//!   as no time passing, so a node's *own* clock, as the core sees it, is the highest time it
//!   was ever given; the invariants below that involve time are stated on that clock.
//! - **Data source.** Every load produces a value that names its key and a unique sequence
//!   number, after a seeded delay; it can fail with a seeded probability. Its expiry is the
//!   loading node's clock plus the TTL, as a driver reading that node's clock would set it.
//! - **Invariants**, checked after every step (a violation is recorded, and
//!   [`Sim::run_until_idle`] / [`Sim::check`] report it):
//!   - every value returned was produced for that key, by the data source or by a put;
//!   - no value is returned at or after its expiry, read on the serving node's clock (with
//!     skewed clocks a node behind the loader's serves a value for that much longer in real
//!     time: expiry that crosses the wire is wall-clock, and no node can do better than its
//!     own clock);
//!   - no get that starts after a write was acknowledged returns a value older than that write
//!     (unless the value is another write's that overlaps it) — judged for writes issued and
//!     acknowledged within one *view epoch* in which every live node's ring has the same
//!     members, and gets issued in such an epoch: with split views a node outside the owner's
//!     view is never told to drop its copy, which no protocol can avoid without a membership
//!     agreement the nodes do not have;
//!   - every request is answered by its deadline on its node's clock (a clock stepped back by
//!     `d` holds that node's deadlines `d` longer in real time);
//!   - every node's cache bytes stay within their budget;
//!   - one load per key on a stable ring: a *stable period* starts when every live node's ring
//!     has the same members and the cluster is at rest (no request open, every node idle), and
//!     ends at the next ring change, crash, restart or jump forward of a node's clock (which
//!     fires its timeouts early, as a slow peer would); within one, each key is loaded at most
//!     once. It is not a violation by itself, because faults, writes, expiry, eviction and
//!     failing loads each legitimately reload a key: [`Sim::reloads_on_a_stable_ring`] lists
//!     the extra loads for the tests whose operations exclude those. Periods start only at
//!     rest because a ring change in mid-flight legitimately loads twice: the old owner
//!     finishes a flight it began, a peer's request that reaches a node after it stopped
//!     owning the key is loaded there (never forwarded twice), and the new owner loads keys
//!     that moved to it (warmup, or its first get).
//! - [`Sim::run_until_idle`] is bounded, so a livelock fails instead of hanging.
//! - [`strategies`] (with `proptest`, which `_sim` brings) holds the random operations and the
//!   properties, so every crate that ships a store runs the same ones.

pub mod strategies;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;

use crate::cache::{LruStores, StoreFactory};
use crate::node::{
    ConnId, Entry, Error, Input, InputError, KeyspaceConfig, LivenessConfig, LoadId, LoadResult,
    Node, NodeConfig, Output, Reply, RequestId, Value,
};
use crate::time::{Duration, Instant, UnixTime};
use crate::wire::{FrameDecoder, FrameKind, WireLimits};

/// The keyspace every simulated node serves.
pub const KEYSPACE: &[u8] = b"ks";

/// How far a node's clock may run ahead of or behind the simulation's ([`Sim::skew_clock`]).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);

/// The keyspace's read timeout: how long a node waits for its data source.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);

/// The wall-clock time (Unix microseconds) at the simulation's [`Instant::ZERO`], on every
/// node's clock alike but for its skew.
const UNIX_AT_ZERO: u64 = 1_700_000_000_000_000;

/// How a simulation is set up.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Seeds the network, the data source and every node.
    pub seed: u64,
    /// One-way latency range of the network.
    pub latency: (Duration, Duration),
    /// The data source's delay range.
    pub source_delay: (Duration, Duration),
    /// Chance per load, in thousandths, that the data source fails.
    pub source_failures_per_mille: u32,
    /// Expiry the data source gives its values (`None`: never).
    pub source_ttl: Option<Duration>,
    /// Each node's cache budget for the keyspace.
    pub max_bytes: u64,
    /// How long a request waits.
    pub request_timeout: Duration,
    /// Mirror threshold (requests per second) for hot keys.
    pub hot_threshold_per_second: f64,
    /// Nodes speak groupcache's HTTP protocol, named `http://node-N:80` (gets only: writes
    /// are local in that mode, which the write invariants do not model).
    pub groupcache: bool,
    /// Every node's liveness settings.
    pub liveness: LivenessConfig,
    /// Every node's handoff window after a ring change (zero: off; see
    /// [`NodeConfig::handoff_window`]).
    pub handoff_window: Duration,
    /// Every node's peek timeout ([`NodeConfig::peek_timeout`]).
    pub peek_timeout: Duration,
    /// Makes each node's store factory, at every boot: [`LruStores`] by default; the runtime
    /// crate passes the sharded store it ships.
    pub stores: fn() -> Box<dyn StoreFactory>,
}

fn lru_stores() -> Box<dyn StoreFactory> {
    Box::new(LruStores)
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            seed: 1,
            latency: (Duration::from_micros(200), Duration::from_millis(2)),
            source_delay: (Duration::from_millis(5), Duration::from_millis(20)),
            source_failures_per_mille: 0,
            source_ttl: None,
            max_bytes: 1 << 20,
            request_timeout: Duration::from_secs(2),
            hot_threshold_per_second: 10.0,
            groupcache: false,
            liveness: LivenessConfig::default(),
            handoff_window: NodeConfig::new("", "").handoff_window,
            peek_timeout: NodeConfig::new("", "").peek_timeout,
            stores: lru_stores,
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    /// The next chunk in that connection end's inbox is due.
    Deliver {
        node: usize,
        epoch: u32,
        conn: ConnId,
    },
    Accepted {
        node: usize,
        epoch: u32,
        conn: ConnId,
    },
    Connected {
        node: usize,
        epoch: u32,
        conn: ConnId,
        peer: Bytes,
    },
    ConnectFailed {
        node: usize,
        epoch: u32,
        peer: Bytes,
    },
    Closed {
        node: usize,
        epoch: u32,
        conn: ConnId,
    },
    Loaded {
        node: usize,
        epoch: u32,
        load: LoadId,
        result: LoadResult,
    },
}

/// What was asked, for checking the answer.
#[derive(Clone, Debug)]
struct RequestRecord {
    node: usize,
    issued: Instant,
    /// The deadline on the node's own clock (moved to the first reading after a forward jump
    /// of that clock over it).
    deadline: Instant,
    /// Issued while every live node's ring had the same members: its value is judged stale
    /// or not.
    judged: bool,
    keys: Vec<Bytes>,
    write: Option<usize>,
    answered: bool,
    lost: bool,
}

#[derive(Clone, Debug)]
struct Produced {
    key: Bytes,
    at: Instant,
    /// On the common wall clock (every node's `Instant` maps to the same Unix time but for its
    /// skew, so this is the loading node's `Instant` of expiry).
    expires_at: Option<Instant>,
    put: Option<usize>,
}

#[derive(Clone, Debug)]
struct WriteRecord {
    /// The key written, or `None` for a whole-keyspace delete.
    key: Option<Bytes>,
    issued: Instant,
    /// When the write was acknowledged; `None` while open or after it failed.
    acked: Option<Instant>,
    /// When it can no longer take effect: the ack time, or never for a failed write.
    settled: Option<Instant>,
    /// The view epoch it was issued in.
    epoch: u64,
    /// Acknowledged in the agreeing view epoch it was issued in: gets after it are judged.
    judged: bool,
}

struct SimNode {
    id: Bytes,
    node: Option<Node>,
    epoch: u32,
    members: Vec<usize>,
    /// The node's clock minus the simulation's, in microseconds.
    skew: i64,
    /// The highest time the node was given since it booted: its clock as the core sees it.
    clock: Instant,
    /// Its ring's members at the last look, sorted (`None` while crashed).
    ring: Option<Vec<Bytes>>,
}

/// One step of a random run, for proptest strategies and the `node_ops` fuzz target. Node
/// numbers are taken modulo the cluster's size; keys are `key-{n}`.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// A get.
    Get { node: usize, key: u8 },
    /// A batch get (at most 8 keys are used).
    GetMany { node: usize, keys: Vec<u8> },
    /// A put of a fresh value.
    Put { node: usize, key: u8 },
    /// A delete.
    Delete { node: usize, key: u8 },
    /// A cluster-wide delete of the keyspace's data.
    DeleteKeyspace { node: usize },
    /// The clock moves (at most a second).
    Advance { ms: u16 },
    /// A node crashes.
    Crash { node: usize },
    /// A crashed node comes back, empty.
    Restart { node: usize },
    /// Two nodes stop hearing each other.
    Partition { a: usize, b: usize },
    /// Every partition ends.
    Heal,
    /// One connection resets.
    Reset { pick: usize },
    /// Raw bytes arrive on one of a node's connections.
    Inject { node: usize, pick: usize, data: Vec<u8> },
    /// One node's member list changes (bit `i` of `members`: node `i`), as its discovery
    /// provider would report; a crashed node boots with it.
    SetMembers { node: usize, members: u8 },
    /// Every node's member list becomes the same one (a membership change the whole cluster
    /// sees), crashed nodes included: dropping a crashed node, or taking it back after it
    /// restarted, is this.
    SetMembersAll { members: u8 },
    /// A node's clock now runs `ms` (at most [`MAX_CLOCK_SKEW`] either way) ahead of the
    /// simulation's, or behind it if negative; lower than before steps it backwards.
    Skew { node: usize, ms: i16 },
    /// A node's clock steps back by `ms` (its skew falls, to at most [`MAX_CLOCK_SKEW`]
    /// behind).
    StepBack { node: usize, ms: u16 },
}

/// The simulated cluster.
pub struct Sim {
    config: SimConfig,
    now: Instant,
    nodes: Vec<SimNode>,
    events: BTreeMap<(Instant, u64), Event>,
    sequence: u64,
    rng: u64,
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Connection ends the node still has open (until their `Closed` is delivered).
    open_ends: BTreeSet<(usize, ConnId)>,
    fifo: BTreeMap<(usize, ConnId), Instant>,
    /// Bytes on their way to each connection end, in order.
    inbox: BTreeMap<(usize, ConnId), VecDeque<Vec<u8>>>,
    partitions: BTreeSet<(usize, usize)>,
    /// Each connection end's outgoing byte stream, cut back into frames to count them.
    sent_streams: BTreeMap<(usize, ConnId), FrameDecoder>,
    /// Frames sent, by sender, receiver and kind (native protocol only).
    frames_sent: BTreeMap<(usize, usize, FrameKind), u64>,
    next_conn: u64,
    next_request: u64,
    requests: BTreeMap<RequestId, RequestRecord>,
    replies: BTreeMap<RequestId, Reply>,
    produced: BTreeMap<Bytes, Produced>,
    writes: Vec<WriteRecord>,
    loads_per_key: BTreeMap<Bytes, u64>,
    loads_per_node: Vec<u64>,
    violations: Vec<String>,
    /// Every live node's ring has the same members.
    views_agree: bool,
    /// Counts changes of any live node's ring or of the set of live nodes.
    view_epoch: u64,
    /// Loads per key in the current stable period (see the module docs); `None` outside one.
    stable_loads: Option<BTreeMap<Bytes, u64>>,
    /// Keys loaded more than once within one stable period, and how often.
    stable_reloads: Vec<(Bytes, u64)>,
    /// When each node's loads began, on its clock.
    loads_started: BTreeMap<(usize, LoadId), Instant>,
    /// Raw bytes were injected: peers may lie, so values and refusals are not judged.
    tampered: bool,
    /// Steps taken, for the livelock bound and the report.
    pub steps: u64,
}

impl Sim {
    /// A cluster of `config.nodes` nodes that all know each other.
    #[must_use]
    pub fn new(config: SimConfig) -> Sim {
        let mut sim = Sim {
            now: Instant::ZERO,
            nodes: Vec::new(),
            events: BTreeMap::new(),
            sequence: 0,
            rng: config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            links: BTreeMap::new(),
            open_ends: BTreeSet::new(),
            fifo: BTreeMap::new(),
            inbox: BTreeMap::new(),
            partitions: BTreeSet::new(),
            sent_streams: BTreeMap::new(),
            frames_sent: BTreeMap::new(),
            next_conn: 1,
            next_request: 1,
            requests: BTreeMap::new(),
            replies: BTreeMap::new(),
            produced: BTreeMap::new(),
            writes: Vec::new(),
            loads_per_key: BTreeMap::new(),
            loads_per_node: alloc::vec![0; config.nodes],
            violations: Vec::new(),
            views_agree: true,
            view_epoch: 0,
            stable_loads: None,
            stable_reloads: Vec::new(),
            loads_started: BTreeMap::new(),
            tampered: false,
            steps: 0,
            config,
        };
        let all: Vec<usize> = (0..sim.config.nodes).collect();
        for index in 0..sim.config.nodes {
            sim.nodes.push(SimNode {
                id: Bytes::from(if sim.config.groupcache {
                    format!("http://node-{index}:80")
                } else {
                    format!("node-{index}")
                }),
                node: None,
                epoch: 0,
                members: all.clone(),
                skew: 0,
                clock: Instant::ZERO,
                ring: None,
            });
        }
        for index in 0..sim.config.nodes {
            sim.boot(index);
        }
        sim.maybe_start_stable_period();
        sim
    }

    fn boot(&mut self, index: usize) {
        let node_config = {
            let mut keyspace = KeyspaceConfig::new(KEYSPACE, self.config.max_bytes);
            keyspace.read_timeout = LOAD_TIMEOUT;
            keyspace.write_timeout = Duration::from_secs(1);
            let mut config =
                NodeConfig::new(self.nodes[index].id.clone(), "sim").with_keyspace(keyspace);
            config.seed = self.config.seed ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
            config.request_timeout = self.config.request_timeout;
            config.peer_timeout = Duration::from_millis(300);
            config.hot_threshold_per_second = self.config.hot_threshold_per_second;
            config.liveness = self.config.liveness;
            config.handoff_window = self.config.handoff_window;
            config.peek_timeout = self.config.peek_timeout;
            config.unix_time_at_start =
                UnixTime::from_micros(UNIX_AT_ZERO + self.local_now(index).as_micros());
            if self.config.groupcache {
                config = config.with_groupcache_compat();
            }
            config
        };
        let now = self.local_now(index);
        let node = Node::with_stores(node_config, now, (self.config.stores)())
            .expect("the simulation's config is valid");
        self.nodes[index].node = Some(node);
        self.nodes[index].clock = now;
        let members = self.nodes[index].members.iter().map(|&m| self.nodes[m].id.clone()).collect();
        self.input(index, Input::SetPeers(members));
    }

    // -----------------------------------------------------------------------------------------
    // Operations

    /// Issues a get of `key` at `node`.
    pub fn get(&mut self, node: usize, key: &str) -> RequestId {
        let key = Bytes::copy_from_slice(key.as_bytes());
        let request = self.record(node, alloc::vec![key.clone()], None);
        let input =
            Input::Get { request, keyspace: Bytes::from_static(KEYSPACE), key, timeout: None };
        self.input(node, input);
        request
    }

    /// Issues a batch get at `node`.
    pub fn get_many(&mut self, node: usize, keys: &[&str]) -> RequestId {
        let keys: Vec<Bytes> =
            keys.iter().map(|key| Bytes::copy_from_slice(key.as_bytes())).collect();
        let request = self.record(node, keys.clone(), None);
        self.input(
            node,
            Input::GetMany { request, keyspace: Bytes::from_static(KEYSPACE), keys, timeout: None },
        );
        request
    }

    /// Issues a put of a fresh value for `key` at `node`.
    pub fn put(&mut self, node: usize, key: &str) -> RequestId {
        let key = Bytes::copy_from_slice(key.as_bytes());
        let (request, write) = self.record_write(node, Some(key.clone()));
        self.sequence += 1;
        let value = Bytes::from(format!("{}=put#{}", String::from_utf8_lossy(&key), self.sequence));
        let produced =
            Produced { key: key.clone(), at: self.now, expires_at: None, put: Some(write) };
        self.produced.insert(value.clone(), produced);
        let entry = Entry { key, value, expires_at: None };
        let keyspace = Bytes::from_static(KEYSPACE);
        self.input(node, Input::Put { request, keyspace, entry, timeout: None });
        request
    }

    /// Issues a delete of `key` at `node`.
    pub fn delete(&mut self, node: usize, key: &str) -> RequestId {
        let key = Bytes::copy_from_slice(key.as_bytes());
        let (request, _) = self.record_write(node, Some(key.clone()));
        let keyspace = Bytes::from_static(KEYSPACE);
        self.input(node, Input::Delete { request, keyspace, key, timeout: None });
        request
    }

    /// Deletes the whole keyspace's data, cluster-wide, from `node`.
    pub fn delete_keyspace(&mut self, node: usize) -> RequestId {
        let (request, _) = self.record_write(node, None);
        let keyspace = Bytes::from_static(KEYSPACE);
        self.input(node, Input::DeleteKeyspace { request, keyspace, timeout: None });
        request
    }

    /// Crashes `node`: its state is lost, its connections close, its requests are void.
    pub fn crash(&mut self, index: usize) {
        if self.nodes[index].node.take().is_none() {
            return;
        }
        self.nodes[index].epoch += 1;
        self.open_ends.retain(|(node, _)| *node != index);
        self.loads_started.retain(|(node, _), _| *node != index);
        self.inbox.retain(|(node, _), _| *node != index);
        let conns: Vec<(usize, ConnId)> =
            self.links.keys().filter(|(n, _)| *n == index).copied().collect();
        for end in conns {
            if let Some(other) = self.links.remove(&end) {
                self.links.remove(&other);
                let at = self.now + self.latency();
                let epoch = self.nodes[other.0].epoch;
                self.schedule(at, Event::Closed { node: other.0, epoch, conn: other.1 });
            }
        }
        for record in self.requests.values_mut().filter(|r| r.node == index && !r.answered) {
            record.lost = true;
        }
        self.refresh_views();
    }

    /// Restarts a crashed node with empty caches.
    pub fn restart(&mut self, index: usize) {
        if self.nodes[index].node.is_none() {
            self.boot(index);
        }
    }

    /// Stalls traffic between `a` and `b` and refuses their new connections.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.partitions.insert((a.min(b), a.max(b)));
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.partitions.clear();
    }

    /// Resets one connection (chosen by `pick`) on both ends.
    pub fn reset_connection(&mut self, pick: usize) {
        let mut ends: Vec<(usize, ConnId)> = self.links.keys().copied().collect();
        ends.sort();
        if ends.is_empty() {
            return;
        }
        let end = ends[pick % ends.len()];
        if let Some(other) = self.links.remove(&end) {
            self.links.remove(&other);
            for (node, conn) in [end, other] {
                let epoch = self.nodes[node].epoch;
                let at = self.now + self.latency();
                self.schedule(at, Event::Closed { node, epoch, conn });
            }
        }
    }

    /// Delivers raw bytes (garbage, or forged frames) to one open connection end of `node`,
    /// chosen by `pick`, as if its peer had sent them. From then on values are not judged (a
    /// forged frame is a lying peer) but every other invariant still is.
    pub fn inject(&mut self, node: usize, pick: usize, data: &[u8]) {
        let ends: Vec<ConnId> =
            self.open_ends.iter().filter(|(n, _)| *n == node).map(|(_, conn)| *conn).collect();
        if ends.is_empty() || self.nodes[node].node.is_none() {
            return;
        }
        self.tampered = true;
        let conn = ends[pick % ends.len()];
        self.input(node, Input::Received { conn, data });
    }

    /// Makes `node` leave the cluster gracefully ([`Input::Leave`]): it tells its peers, which
    /// take it off their rings, and finishes what it has in progress. The members' views of the
    /// ring differ from then on.
    pub fn leave(&mut self, node: usize) {
        self.input(node, Input::Leave);
    }

    /// Gives `node` its own member list (a split view of the cluster until every node has the
    /// same one). A crashed node keeps it for its restart.
    pub fn set_members(&mut self, node: usize, members: Vec<usize>) {
        self.nodes[node].members = members.clone();
        let ids: Vec<Bytes> = members.iter().map(|&m| self.nodes[m].id.clone()).collect();
        self.input(node, Input::SetPeers(ids));
    }

    /// Gives every node, crashed ones included, the same member list.
    pub fn set_members_everywhere(&mut self, members: &[usize]) {
        for node in 0..self.nodes.len() {
            self.set_members(node, members.to_vec());
        }
    }

    /// Sets how far `node`'s clock runs ahead of the simulation's (behind it if negative),
    /// bounded by [`MAX_CLOCK_SKEW`]. A skew lower than the node's current one steps its clock
    /// backwards; the node sees the new time at its next input or timer.
    pub fn skew_clock(&mut self, node: usize, ahead_micros: i64) {
        let bound = MAX_CLOCK_SKEW.as_micros() as i64;
        let skew = ahead_micros.clamp(-bound, bound);
        let jumps = skew > self.nodes[node].skew;
        self.nodes[node].skew = skew;
        if jumps {
            // A jump forward fires the node's timers early in real time, as a slow peer or
            // source would: it may legitimately reload a key.
            self.stable_loads = None;
            // A deadline the clock jumps over can only be met at the node's first reading
            // after the jump, which is this one: its timer is due at once.
            let (before, after) = (self.nodes[node].clock, self.local_now(node));
            for record in self.requests.values_mut() {
                if record.node == node && !record.answered && record.deadline > before {
                    record.deadline = record.deadline.max(after);
                }
            }
        }
    }

    /// The node's own clock: the highest time it was given since it booted.
    #[must_use]
    pub fn clock_of(&self, node: usize) -> Instant {
        self.nodes[node].clock
    }

    /// Applies one [`Op`].
    pub fn apply(&mut self, op: &Op) {
        let nodes = self.nodes.len();
        let key = |k: &u8| format!("key-{k}");
        match op {
            Op::Get { node, key: k } => {
                self.get(node % nodes, &key(k));
            }
            Op::GetMany { node, keys } => {
                let keys: Vec<String> = keys.iter().take(8).map(key).collect();
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.get_many(node % nodes, &refs);
            }
            Op::Put { node, key: k } => {
                self.put(node % nodes, &key(k));
            }
            Op::Delete { node, key: k } => {
                self.delete(node % nodes, &key(k));
            }
            Op::DeleteKeyspace { node } => {
                self.delete_keyspace(node % nodes);
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(*ms % 1_001))),
            Op::Crash { node } => self.crash(node % nodes),
            Op::Restart { node } => self.restart(node % nodes),
            Op::Partition { a, b } if a % nodes != b % nodes => {
                self.partition(a % nodes, b % nodes)
            }
            Op::Partition { .. } => {}
            Op::Heal => self.heal(),
            Op::Reset { pick } => self.reset_connection(*pick),
            Op::Inject { node, pick, data } => self.inject(node % nodes, *pick, data),
            Op::SetMembers { node, members } => {
                let members = Self::members_of(*members, nodes);
                self.set_members(node % nodes, members);
            }
            Op::SetMembersAll { members } => {
                self.set_members_everywhere(&Self::members_of(*members, nodes));
            }
            Op::Skew { node, ms } => {
                let bound = MAX_CLOCK_SKEW.as_millis() as i64;
                let ms = i64::from(*ms) % (bound + 1);
                self.skew_clock(node % nodes, ms * 1_000);
            }
            Op::StepBack { node, ms } => {
                let node = node % nodes;
                let back = i64::from(*ms) * 1_000;
                self.skew_clock(node, self.nodes[node].skew - back);
            }
        }
        self.maybe_start_stable_period();
    }

    /// The nodes named by the bits of `mask` (bit `i`: node `i`, for the first 8 nodes).
    fn members_of(mask: u8, nodes: usize) -> Vec<usize> {
        (0..nodes.min(8)).filter(|i| mask >> i & 1 == 1).collect()
    }

    // -----------------------------------------------------------------------------------------
    // Running

    /// Processes the next event or timer. Returns `false` when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let (next_event, next_timer) = self.next_wakeups();
        let Some(at) = [next_event, next_timer].into_iter().flatten().min() else { return false };
        self.now = self.now.max(at);
        self.steps += 1;
        if next_event == Some(at) {
            let (_, event) = self.events.pop_first().expect("peeked");
            self.deliver(event);
        } else {
            for index in 0..self.nodes.len() {
                let local = self.local_now(index);
                let due = self.nodes[index]
                    .node
                    .as_ref()
                    .and_then(Node::poll_timeout)
                    .is_some_and(|t| t <= local);
                if due {
                    let now = self.tick(index);
                    if let Some(node) = self.nodes[index].node.as_mut() {
                        node.handle_timeout(now);
                    }
                    self.refresh_views();
                    self.drain(index);
                }
            }
        }
        self.check_budgets();
        self.maybe_start_stable_period();
        true
    }

    /// The next event and the next node timer, on the simulation's clock: a node's deadline
    /// `t` is due once its own clock reads `t`.
    fn next_wakeups(&self) -> (Option<Instant>, Option<Instant>) {
        let next_event = self.events.first_key_value().map(|((at, _), _)| *at);
        let next_timer = (0..self.nodes.len())
            .filter_map(|index| {
                let at = self.nodes[index].node.as_ref()?.poll_timeout()?;
                let skew = self.nodes[index].skew;
                Some(Instant::from_micros(at.as_micros().saturating_add_signed(-skew)))
            })
            .min();
        (next_event, next_timer)
    }

    /// Runs until nothing is in flight (requests answered, loads and calls done), at most
    /// `max_steps` steps; then checks that every request was answered.
    pub fn run_until_idle(&mut self, max_steps: u64) -> Result<(), String> {
        let start = self.steps;
        while self.busy() {
            if self.steps - start > max_steps {
                return Err(format!(
                    "livelock: still busy after {max_steps} steps at {:?}",
                    self.now
                ));
            }
            if !self.step() {
                break;
            }
        }
        self.check()?;
        for (id, record) in &self.requests {
            if !record.answered && !record.lost {
                return Err(format!("request {id:?} at node {} was never answered", record.node));
            }
        }
        Ok(())
    }

    /// Advances the clock by `duration`, processing everything due meanwhile.
    pub fn advance(&mut self, duration: Duration) {
        let until = self.now + duration;
        loop {
            let (next_event, next_timer) = self.next_wakeups();
            match [next_event, next_timer].into_iter().flatten().min() {
                Some(at) if at <= until => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// The invariant violations seen so far.
    pub fn check(&self) -> Result<(), String> {
        match self.violations.first() {
            Some(first) => Err(format!("{} violation(s); first: {first}", self.violations.len())),
            None => Ok(()),
        }
    }

    /// The reply to a request, once answered.
    #[must_use]
    pub fn reply(&self, request: RequestId) -> Option<&Reply> {
        self.replies.get(&request)
    }

    /// Data-source loads of `key` so far, over all nodes.
    #[must_use]
    pub fn loads(&self, key: &str) -> u64 {
        self.loads_per_key.get(key.as_bytes()).copied().unwrap_or(0)
    }

    /// Keys loaded more than once within one stable period, with the count at each extra
    /// load (see the module docs; empty when the property held).
    #[must_use]
    pub fn reloads_on_a_stable_ring(&self) -> &[(Bytes, u64)] {
        &self.stable_reloads
    }

    /// Whether every live node's ring has the same members.
    #[must_use]
    pub fn views_agree(&self) -> bool {
        self.views_agree
    }

    /// Data-source loads so far, over all keys and nodes.
    #[must_use]
    pub fn total_loads(&self) -> u64 {
        self.loads_per_key.values().sum()
    }

    /// Frames of `kind` node `from` sent to node `to` so far (native protocol; counted when
    /// written, whether or not they arrived).
    #[must_use]
    pub fn frames_sent(&self, from: usize, to: usize, kind: FrameKind) -> u64 {
        self.frames_sent.get(&(from, to, kind)).copied().unwrap_or(0)
    }

    /// Data-source loads made by one node so far.
    #[must_use]
    pub fn loads_by(&self, node: usize) -> u64 {
        self.loads_per_node[node]
    }

    /// The current virtual time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// A node, if it is up.
    #[must_use]
    pub fn node(&self, index: usize) -> Option<&Node> {
        self.nodes[index].node.as_ref()
    }

    /// The node that owns `key` on node 0's ring.
    #[must_use]
    pub fn owner(&self, key: &str) -> Option<usize> {
        let node = self.nodes.iter().find_map(|n| n.node.as_ref())?;
        let owner = node.ring().owner(key.as_bytes())?;
        self.nodes.iter().position(|n| n.id == *owner)
    }

    /// The owner of `key` on a ring of `members` alone (by the first live node's scheme).
    pub fn owner_among(&self, key: &str, members: &[usize]) -> Option<usize> {
        let scheme = self.nodes.iter().find_map(|n| n.node.as_ref())?.ring().scheme();
        let ids: Vec<Bytes> = members.iter().map(|&m| self.nodes[m].id.clone()).collect();
        let ring = crate::ring::Ring::with_peers(scheme, ids).ok()?;
        let owner = ring.owner(key.as_bytes())?;
        self.nodes.iter().position(|n| n.id == *owner)
    }

    fn busy(&self) -> bool {
        !self.events.is_empty()
            || self.requests.values().any(|r| !r.answered && !r.lost)
            || self.nodes.iter().any(|n| n.node.as_ref().is_some_and(|node| !node.is_idle()))
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing

    /// Records a write of `key` (`None`: the whole keyspace); returns its request and record.
    fn record_write(&mut self, node: usize, key: Option<Bytes>) -> (RequestId, usize) {
        let write = self.writes.len();
        self.writes.push(WriteRecord {
            key: key.clone(),
            issued: self.now,
            acked: None,
            settled: None,
            epoch: self.view_epoch,
            judged: false,
        });
        (self.record(node, key.into_iter().collect(), Some(write)), write)
    }

    fn record(&mut self, node: usize, keys: Vec<Bytes>, write: Option<usize>) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let lost = self.nodes[node].node.is_none();
        // The node reads its clock when the request arrives: the time it will see.
        let deadline =
            self.nodes[node].clock.max(self.local_now(node)) + self.config.request_timeout;
        let record = RequestRecord {
            node,
            issued: self.now,
            deadline,
            judged: self.views_agree,
            keys,
            write,
            answered: false,
            lost,
        };
        self.requests.insert(id, record);
        id
    }

    fn input(&mut self, index: usize, input: Input<'_>) {
        if self.nodes[index].node.is_none() {
            return;
        }
        let now = self.tick(index);
        let node = self.nodes[index].node.as_mut().expect("checked above");
        match node.handle_input(now, input) {
            Ok(()) => {}
            // The node gave up on the load (its read timeout passed on its clock) before the
            // source answered: the documented outcome, with the value dropped.
            Err(InputError::UnknownLoad(load))
                if self
                    .loads_started
                    .get(&(index, load))
                    .is_some_and(|started| self.nodes[index].clock >= *started + LOAD_TIMEOUT) => {}
            Err(error) => self.violations.push(format!("node {index} refused an input: {error}")),
        }
        // A ring change shows before the outputs it causes (warmup loads) are counted.
        self.refresh_views();
        self.drain(index);
    }

    /// The time `index`'s clock reads now: the simulation's plus its skew.
    fn local_now(&self, index: usize) -> Instant {
        let skew = self.nodes[index].skew;
        Instant::from_micros(self.now.as_micros().saturating_add_signed(skew))
    }

    /// Reads `index`'s clock for an input or a timer: returns what it reads and keeps the
    /// highest reading, which is the node's own clock.
    fn tick(&mut self, index: usize) -> Instant {
        let local = self.local_now(index);
        let node = &mut self.nodes[index];
        node.clock = node.clock.max(local);
        local
    }

    /// Notes ring changes: a change of any live node's ring, or of which nodes are live,
    /// starts a new view epoch and ends the stable period.
    fn refresh_views(&mut self) {
        let mut changed = false;
        for sim_node in &mut self.nodes {
            let ring = sim_node.node.as_ref().map(|node| {
                let mut members = node.ring().peers().to_vec();
                members.sort();
                members
            });
            if ring != sim_node.ring {
                sim_node.ring = ring;
                changed = true;
            }
        }
        if !changed {
            return;
        }
        self.view_epoch += 1;
        self.stable_loads = None;
        let mut rings = self.nodes.iter().filter_map(|n| n.ring.as_ref());
        let first = rings.next();
        self.views_agree = rings.all(|ring| Some(ring) == first);
    }

    /// Starts a stable period (see the module docs) when the views agree and the cluster is
    /// at rest.
    fn maybe_start_stable_period(&mut self) {
        if self.stable_loads.is_some() || !self.views_agree {
            return;
        }
        let at_rest = self.requests.values().all(|r| r.answered || r.lost)
            && self.nodes.iter().all(|n| n.node.as_ref().is_none_or(Node::is_idle));
        if at_rest {
            self.stable_loads = Some(BTreeMap::new());
        }
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.sequence += 1;
        self.events.insert((at, self.sequence), event);
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, (low, high): (Duration, Duration)) -> Duration {
        let span = high.saturating_sub(low).as_micros() as u64;
        low + Duration::from_micros(self.random() % (span + 1))
    }

    fn latency(&mut self) -> Duration {
        self.between(self.config.latency)
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.partitions.contains(&(a.min(b), a.max(b)))
    }

    fn index_of(&self, id: &[u8]) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    fn deliver(&mut self, event: Event) {
        let live = |sim: &Sim, node: usize, epoch: u32| {
            sim.nodes[node].epoch == epoch && sim.nodes[node].node.is_some()
        };
        match event {
            Event::Deliver { node, epoch, conn } => {
                if !live(self, node, epoch) || !self.open_ends.contains(&(node, conn)) {
                    return;
                }
                if let Some(&(from, _)) = self.links.get(&(node, conn)) {
                    if self.partitioned(node, from) {
                        // Stalled, not lost: TCP retransmits once the partition heals.
                        let at = self.now + Duration::from_millis(10);
                        self.schedule(at, Event::Deliver { node, epoch, conn });
                        return;
                    }
                }
                let Some(data) = self.inbox.get_mut(&(node, conn)).and_then(VecDeque::pop_front)
                else {
                    return;
                };
                self.input(node, Input::Received { conn, data: &data });
            }
            Event::Accepted { node, epoch, conn } => {
                if live(self, node, epoch) && self.links.contains_key(&(node, conn)) {
                    self.open_ends.insert((node, conn));
                    self.input(
                        node,
                        Input::Accepted { conn, nonce: sim_nonce(conn), peer_identity: None },
                    );
                }
            }
            Event::Connected { node, epoch, conn, peer } => {
                if !live(self, node, epoch) {
                    return;
                }
                if self.links.contains_key(&(node, conn)) {
                    self.open_ends.insert((node, conn));
                    self.input(
                        node,
                        Input::Connected {
                            conn,
                            peer,
                            nonce: sim_nonce(conn),
                            peer_identity: None,
                        },
                    );
                } else {
                    // Reset before it was established: the connect failed.
                    self.input(node, Input::ConnectFailed { peer });
                }
            }
            Event::ConnectFailed { node, epoch, peer } => {
                if live(self, node, epoch) {
                    self.input(node, Input::ConnectFailed { peer });
                }
            }
            Event::Closed { node, epoch, conn } => {
                if live(self, node, epoch) && self.open_ends.remove(&(node, conn)) {
                    self.input(node, Input::Closed { conn });
                }
            }
            Event::Loaded { node, epoch, load, result } => {
                if live(self, node, epoch) {
                    self.input(node, Input::Loaded { load, result });
                }
            }
        }
    }

    /// Counts the frames that `data`, the next bytes node `from` wrote on `conn` (to `to`),
    /// completes. A stream that does not parse stops being counted (the invariants judge
    /// nodes, not this tally).
    fn count_frames(&mut self, from: usize, conn: ConnId, to: usize, data: &[u8]) {
        if self.config.groupcache {
            return;
        }
        let stream = self
            .sent_streams
            .entry((from, conn))
            .or_insert_with(|| FrameDecoder::new(WireLimits::default()));
        if stream.push(data).is_err() {
            return;
        }
        while let Ok(Some((header, _))) = stream.next_frame() {
            *self.frames_sent.entry((from, to, header.kind)).or_default() += 1;
        }
    }

    fn drain(&mut self, index: usize) {
        loop {
            let Some(node) = self.nodes[index].node.as_mut() else { return };
            let Some(output) = node.poll_output() else { return };
            self.handle_output(index, output);
        }
    }

    fn handle_output(&mut self, index: usize, output: Output) {
        let epoch = self.nodes[index].epoch;
        match output {
            Output::Reply { request, reply } => self.on_reply(request, reply),
            Output::Load { load, key, .. } => {
                *self.loads_per_key.entry(key.clone()).or_default() += 1;
                self.loads_per_node[index] += 1;
                self.loads_started.insert((index, load), self.nodes[index].clock);
                if let Some(stable) = self.stable_loads.as_mut() {
                    let loads = stable.entry(key.clone()).or_default();
                    *loads += 1;
                    if *loads > 1 {
                        self.stable_reloads.push((key.clone(), *loads));
                    }
                }
                let delay = self.between(self.config.source_delay);
                let fails =
                    self.random() % 1_000 < u64::from(self.config.source_failures_per_mille);
                let result = if fails {
                    LoadResult::Failed(Bytes::from_static(b"source down"))
                } else {
                    self.sequence += 1;
                    let bytes = Bytes::from(format!(
                        "{}=load#{}",
                        String::from_utf8_lossy(&key),
                        self.sequence
                    ));
                    // The driver reads the loading node's clock, which may be behind it.
                    let local = self.local_now(index);
                    let expires_at = self.config.source_ttl.map(|ttl| local + ttl);
                    self.produced.insert(
                        bytes.clone(),
                        Produced { key, at: self.now, expires_at, put: None },
                    );
                    LoadResult::Value { bytes, expires_at }
                };
                let at = self.now + delay;
                self.schedule(at, Event::Loaded { node: index, epoch, load, result });
            }
            Output::Transmit { conn, data } => {
                let Some(&(to, to_conn)) = self.links.get(&(index, conn)) else { return };
                self.count_frames(index, conn, to, &data);
                let latency = self.latency();
                let last = self.fifo.get(&(to, to_conn)).copied().unwrap_or(Instant::ZERO);
                let at = (self.now + latency).max(last);
                self.fifo.insert((to, to_conn), at);
                let to_epoch = self.nodes[to].epoch;
                self.inbox.entry((to, to_conn)).or_default().push_back(data);
                self.schedule(at, Event::Deliver { node: to, epoch: to_epoch, conn: to_conn });
            }
            Output::Connect { peer, .. } => {
                let latency = self.latency();
                let target = self
                    .index_of(&peer)
                    .filter(|&t| self.nodes[t].node.is_some() && !self.partitioned(index, t));
                match target {
                    Some(target) => {
                        let (mine, theirs) = (ConnId(self.next_conn), ConnId(self.next_conn + 1));
                        self.next_conn += 2;
                        self.links.insert((index, mine), (target, theirs));
                        self.links.insert((target, theirs), (index, mine));
                        let target_epoch = self.nodes[target].epoch;
                        self.schedule(
                            self.now + latency,
                            Event::Accepted { node: target, epoch: target_epoch, conn: theirs },
                        );
                        self.schedule(
                            self.now + latency * 2,
                            Event::Connected { node: index, epoch, conn: mine, peer },
                        );
                    }
                    None => self.schedule(
                        self.now + latency * 4,
                        Event::ConnectFailed { node: index, epoch, peer },
                    ),
                }
            }
            Output::Close { conn } => {
                if let Some(other) = self.links.remove(&(index, conn)) {
                    self.links.remove(&other);
                    let at = self.now + self.latency();
                    let other_epoch = self.nodes[other.0].epoch;
                    // The closing side's queued bytes are delivered first (FIFO), then the close.
                    let at = at.max(self.fifo.get(&other).copied().unwrap_or(Instant::ZERO));
                    self.schedule(
                        at,
                        Event::Closed { node: other.0, epoch: other_epoch, conn: other.1 },
                    );
                }
                // The driver stops reading at once; the node needs no `Closed` for its own close.
                self.open_ends.remove(&(index, conn));
            }
            Output::Event(crate::node::Event::ConnectionRefused { conn, reason })
                if !self.tampered && reason != crate::ErrorCode::TimedOut =>
            {
                // Nothing in the simulation sends malformed frames or mismatched hellos. A
                // hello that does not arrive in time is no violation: partitions, crashes and
                // clock jumps delay honest ones.
                self.violations
                    .push(format!("node {index} refused connection {conn:?}: {reason:?}"));
            }
            Output::Event(_) => {}
        }
    }

    fn on_reply(&mut self, request: RequestId, reply: Reply) {
        let now = self.now;
        let Some(record) = self.requests.get_mut(&request) else {
            self.violations.push(format!("reply to an unknown request {request:?}"));
            return;
        };
        if record.answered {
            self.violations.push(format!("request {request:?} answered twice"));
            return;
        }
        record.answered = true;
        let clock = self.nodes[record.node].clock;
        if clock > record.deadline {
            self.violations.push(format!(
                "request {request:?} answered at {clock:?} on node {}'s clock (simulation {now:?}), after its deadline {:?}",
                record.node, record.deadline
            ));
        }
        let record = record.clone();
        match &reply {
            Reply::Get(result) => self.check_value(&record, 0, result.as_ref().ok()),
            Reply::GetMany(results) => {
                if results.len() != record.keys.len() {
                    self.violations.push(format!(
                        "batch {request:?}: {} results for {} keys",
                        results.len(),
                        record.keys.len()
                    ));
                }
                for (index, result) in results.iter().enumerate() {
                    self.check_value(&record, index, result.as_ref().ok());
                }
            }
            Reply::Write(result) => {
                if let Some(write) = record.write {
                    let ok = result.is_ok();
                    let judged = self.views_agree;
                    let epoch = self.view_epoch;
                    let entry = &mut self.writes[write];
                    entry.acked = ok.then_some(now);
                    entry.settled = ok.then_some(now);
                    entry.judged = ok && judged && entry.epoch == epoch;
                }
            }
            Reply::WriteMany(_) => {}
        }
        if let Reply::Get(Err(Error::BadRequest)) = &reply {
            self.violations.push(format!("request {request:?} answered BadRequest"));
        }
        self.replies.insert(request, reply);
    }

    fn check_value(&mut self, record: &RequestRecord, index: usize, value: Option<&Value>) {
        let Some(served) = value else { return };
        let clock = self.nodes[record.node].clock;
        if served.expires_at.is_some_and(|at| at <= clock) {
            self.violations.push(format!(
                "value {:?} returned at {clock:?} on node {}'s clock past its own expiry {:?}",
                served.bytes, record.node, served.expires_at
            ));
        }
        if self.tampered {
            return;
        }
        let value = &served.bytes;
        let key = &record.keys[index];
        let Some(produced) = self.produced.get(value) else {
            self.violations.push(format!("a value nobody produced: {value:?} for {key:?}"));
            return;
        };
        if produced.key != *key {
            self.violations.push(format!("wrong value: {value:?} returned for {key:?}"));
            return;
        }
        if produced.expires_at.is_some_and(|at| clock >= at) {
            self.violations.push(format!(
                "expired value {value:?} (expiring {:?}) returned at {clock:?} by node {} via {:?}",
                produced.expires_at, record.node, served.path
            ));
        }
        // Staleness is judged only within view epochs where every node shares one ring view
        // (see the module docs).
        if !record.judged {
            return;
        }
        for (position, write) in self.writes.iter().enumerate() {
            let Some(acked) = write.acked.filter(|_| write.judged) else { continue };
            let covers = write.key.as_ref().is_none_or(|written| written == key);
            if !covers || acked >= record.issued || produced.at >= write.issued {
                continue;
            }
            // Another write's value that overlaps this one may legitimately win the race.
            let overlaps = produced.put.is_some_and(|other| {
                let other_write = &self.writes[other];
                other != position
                    && other_write.issued <= acked
                    && other_write.settled.is_none_or(|settled| settled >= write.issued)
            });
            if !overlaps {
                self.violations.push(format!(
                    "stale value {value:?} (produced {:?}) returned for a get issued {:?}, after a write issued {:?} was acknowledged {:?}",
                    produced.at, record.issued, write.issued, acked
                ));
            }
        }
    }

    fn check_budgets(&mut self) {
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(node) = &node.node else { continue };
            if let Some(stats) = node.keyspace_stats(KEYSPACE) {
                let bytes = stats.cache.main.bytes + stats.cache.hot.bytes;
                if bytes > self.config.max_bytes {
                    self.violations
                        .push(format!("node {index} holds {bytes} bytes over its budget"));
                }
            }
        }
    }
}

/// A connection's hello nonce in the simulation: distinct per connection.
fn sim_nonce(conn: ConnId) -> [u8; 16] {
    u128::from(conn.0).to_be_bytes()
}
