//! How a node and its keyspaces are set up.

use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

use crate::breaker::BreakerConfig;
use crate::hotkeys::HotKeysConfig;
use crate::http::HttpLimits;
use crate::limiter::LimiterConfig;
use crate::ring::RingScheme;
use crate::time::{Duration, UnixTime};
use crate::wire::WireLimits;

use super::liveness::LivenessConfig;

/// How a [`Node`](super::Node) is set up. `NodeConfig::new` gives production defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id: its name on the ring and the address peers connect to.
    pub node_id: Bytes,
    /// The cluster label; a peer whose hello carries another label is refused.
    pub cluster: Bytes,
    /// A secret shared by the cluster's members (at least [`MIN_CLUSTER_SECRET_LEN`] bytes),
    /// or `None` (the default) for none. With a secret, a native hello must prove knowledge
    /// of it (an HMAC-SHA256 over fresh nonces of both sides, both ids, the cluster label and
    /// the sender's role: [`Message::HelloProof`](crate::Message::HelloProof)), and a
    /// connection without a good proof is refused before any other frame is read. Every member
    /// needs the same secret. It authenticates the hello only: frames after it are not
    /// authenticated, and nothing is encrypted — on an untrusted network use TLS between peers.
    pub cluster_secret: Option<Bytes>,
    /// How keys are placed on the ring; every node of a cluster must use the same.
    pub ring: RingScheme,
    /// Seeds every hash and the jitter, so a run replays exactly.
    pub seed: u64,
    /// Wire limits, enforced on every frame received and sent.
    pub limits: WireLimits,
    /// Requests one peer may have in progress on one connection; more are answered
    /// `Overloaded`.
    pub max_in_flight_per_connection: u32,
    /// Local and peer requests in progress at once; more are answered `Overloaded`.
    pub max_pending: usize,
    /// How long a local request waits when it names no timeout.
    pub request_timeout: Duration,
    /// The longest a fetch from the owning peer may take before this node loads the key
    /// itself (capped at half of the request's remaining time).
    pub peer_timeout: Duration,
    /// The longest a connection may take to open (the driver's connect) and to complete its
    /// hello; then it counts as failed.
    pub connect_timeout: Duration,
    /// Waiting before retrying a peer that refused a connection: doubles from this…
    pub reconnect_backoff_min: Duration,
    /// …up to this (with seeded jitter).
    pub reconnect_backoff_max: Duration,
    /// A value fetched from its owner is mirrored in the hot cache when the owner reports at
    /// least this many requests per second for the key.
    pub hot_threshold_per_second: f64,
    /// The longest a hot copy lives (it is also dropped when its owner says so).
    pub hot_ttl: Duration,
    /// Keys one warmup prefetches per keyspace at most.
    pub warmup_max_keys: usize,
    /// Warmup loads in progress at once.
    pub warmup_concurrency: usize,
    /// The handoff window after a ring change (galaxycache's peek; see
    /// [`Node`](super::Node)'s "previous owner first"): for this long after the ring last
    /// changed, this node keeps the entries it no longer owns (copies that writes invalidate
    /// like any other) instead of dropping them, and a miss on a key it owns asks the key's
    /// previous owner before loading from the data source. Zero turns both off: entries this
    /// node no longer owns are dropped at the change, and misses load at once. Native protocol
    /// only (groupcache peers do not know the peek frame). Default 30 s: long enough for a
    /// deploy's ring changes to settle and for the keys in use to be asked for once, short
    /// enough that the kept entries (charged to the budget like any) do not linger.
    pub handoff_window: Duration,
    /// The longest a miss waits for the previous owner's answer to a peek before loading
    /// (capped at half of the request's remaining time); must not be zero while
    /// `handoff_window` is not. Default 200 ms: a peek is answered from memory in one round
    /// trip (well under a millisecond on a LAN), so this only bounds what a stalled previous
    /// owner can add to a miss — a down or unconnected one is never asked at all.
    pub peek_timeout: Duration,
    /// The wall-clock time at the `now` passed to `Node::new` (expiries cross the wire as
    /// wall-clock time).
    pub unix_time_at_start: UnixTime,
    /// The rate limit of every keyspace's data source unless the keyspace overrides it;
    /// `None` for unlimited.
    pub limiter: Option<LimiterConfig>,
    /// The circuit breaker of every keyspace's data source unless the keyspace overrides it.
    pub breaker: BreakerConfig,
    /// Keyspaces to create at start.
    pub keyspaces: Vec<KeyspaceConfig>,
    /// The protocol spoken with peers: herdcache's native frames, or groupcache's HTTP.
    pub peer_protocol: PeerProtocol,
    /// Settings of the groupcache HTTP protocol (used in [`PeerProtocol::GroupcacheHttp`]).
    pub groupcache: GroupcacheConfig,
    /// How members are found alive, suspect or down, and the fewest members up for writes
    /// (see [`LivenessConfig`]; must pass [`LivenessConfig::is_valid`]).
    pub liveness: LivenessConfig,
}

/// The shortest [`NodeConfig::cluster_secret`], in bytes: 128 bits, so that the secret cannot
/// be guessed from recorded handshakes.
pub const MIN_CLUSTER_SECRET_LEN: usize = 16;

/// The protocol a node speaks with its peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PeerProtocol {
    /// herdcache's binary frames ([`Message`](crate::Message)): hello, batches, writes through
    /// the owner, invalidation of hot copies.
    #[default]
    Native,
    /// golang/groupcache's HTTP protocol ([`crate::groupcache`]), so that the node can join a
    /// ring of Go groupcache peers:
    /// - node ids (this node's and its peers') are base URLs, `http://host:port`, and the ring
    ///   must be [`RingScheme::GROUPCACHE`] (keyed by the URLs exactly as written, as Go does);
    /// - a fetch from the owner is `GET {peer}/_groupcache/{keyspace}/{escaped key}` over a
    ///   small pool of keep-alive connections per peer, one request in flight per connection;
    ///   a connection failure, a timeout, or an answer other than `200` or `500` makes the
    ///   node load the key itself (groupcache's rule); a `500` is the owner's load error;
    /// - accepted connections speak HTTP; every method is a get; a peer's request is loaded
    ///   here, never forwarded;
    /// - hot keys are mirrored as groupcache does: a fetched value goes to the hot cache with
    ///   probability 1/[`GroupcacheConfig::hot_one_in`] (from the seeded generator), or when a
    ///   herdcache owner reports a rate over `hot_threshold_per_second`;
    /// - there are no writes on groupcache's wire: puts and deletes (and keyspace deletes)
    ///   apply to this node's own caches only, and no peer is told.
    GroupcacheHttp,
}

/// Settings of the groupcache HTTP peer protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupcacheConfig {
    /// Limits of every HTTP connection's receive side.
    pub limits: HttpLimits,
    /// Connections opened to one peer at most (each carries one request at a time).
    pub max_connections_per_peer: u32,
    /// Fetches waiting for a free connection to one peer at most; more load locally at once.
    pub max_queued_per_peer: u32,
    /// A fetched value is mirrored in the hot cache with probability `1 / hot_one_in`
    /// (groupcache: 10); 0 turns random mirroring off.
    pub hot_one_in: u32,
}

impl Default for GroupcacheConfig {
    fn default() -> Self {
        GroupcacheConfig {
            limits: HttpLimits::default(),
            max_connections_per_peer: 8,
            max_queued_per_peer: 1_024,
            hot_one_in: 10,
        }
    }
}

impl NodeConfig {
    /// Production defaults for a node `node_id` in `cluster`.
    #[must_use]
    pub fn new(node_id: impl Into<Bytes>, cluster: impl Into<Bytes>) -> Self {
        NodeConfig {
            node_id: node_id.into(),
            cluster: cluster.into(),
            cluster_secret: None,
            ring: RingScheme::BALANCED,
            seed: 0x6865_7264,
            limits: WireLimits::default(),
            max_in_flight_per_connection: 4_096,
            max_pending: 100_000,
            request_timeout: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
            hot_threshold_per_second: 10.0,
            hot_ttl: Duration::from_secs(60),
            warmup_max_keys: 1_000,
            warmup_concurrency: 8,
            handoff_window: Duration::from_secs(30),
            peek_timeout: Duration::from_millis(200),
            unix_time_at_start: UnixTime::EPOCH,
            limiter: None,
            breaker: BreakerConfig::default(),
            keyspaces: Vec::new(),
            peer_protocol: PeerProtocol::Native,
            groupcache: GroupcacheConfig::default(),
            liveness: LivenessConfig::default(),
        }
    }

    /// Defaults for a node in a ring of groupcache peers ([`PeerProtocol::GroupcacheHttp`]):
    /// `base_url` (`http://host:port`) is its node id, and the ring is
    /// [`RingScheme::GROUPCACHE`]. Keyspace names are group names.
    #[must_use]
    pub fn groupcache(base_url: impl Into<Bytes>) -> Self {
        NodeConfig::new(base_url, Bytes::new()).with_groupcache_compat()
    }

    /// Switches to groupcache's HTTP protocol and ring (see [`PeerProtocol::GroupcacheHttp`]);
    /// the node id must be a base URL then.
    #[must_use]
    pub fn with_groupcache_compat(mut self) -> Self {
        self.peer_protocol = PeerProtocol::GroupcacheHttp;
        self.ring = RingScheme::GROUPCACHE;
        self
    }

    /// Adds a keyspace created at start.
    #[must_use]
    pub fn with_keyspace(mut self, keyspace: KeyspaceConfig) -> Self {
        self.keyspaces.push(keyspace);
        self
    }
}

/// One keyspace: a name, a budget, expiry and timeouts, and the data source's protection.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyspaceConfig {
    /// The name (at most `WireLimits::max_label` bytes).
    pub name: Bytes,
    /// The byte budget of this node's main and hot caches for the keyspace.
    pub max_bytes: u64,
    /// Expiry for values stored without one; `None` for never.
    pub default_ttl: Option<Duration>,
    /// The longest a data-source call may take before its waiters are answered `TimedOut`.
    pub read_timeout: Duration,
    /// The longest a put or delete may take at the owner (including every peer confirming it
    /// dropped its copy).
    pub write_timeout: Duration,
    /// Keys to prefetch when this node comes to own them.
    pub warm_keys: Vec<Bytes>,
    /// The data source's rate limit for this keyspace; `None`: the node's
    /// [`NodeConfig::limiter`].
    pub limiter: Option<LimiterConfig>,
    /// The data source's circuit breaker for this keyspace; `None`: the node's
    /// [`NodeConfig::breaker`].
    pub breaker: Option<BreakerConfig>,
    /// The hot-key tracker (request rates reported to requesters, and warmup candidates).
    pub hot_keys: HotKeysConfig,
}

impl KeyspaceConfig {
    /// A keyspace with a budget and production defaults for the rest.
    #[must_use]
    pub fn new(name: impl Into<Bytes>, max_bytes: u64) -> Self {
        KeyspaceConfig {
            name: name.into(),
            max_bytes,
            default_ttl: None,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(2),
            warm_keys: Vec::new(),
            limiter: None,
            breaker: None,
            hot_keys: HotKeysConfig::default(),
        }
    }

    /// Checks the settings against the node's wire `limits`: the one check both
    /// `Node::create_keyspace` and `Node::update_keyspace` (and `Node::new`, for the keyspaces
    /// of its config) apply, so a keyspace can never be updated into a state it could not be
    /// created in.
    ///
    /// # Errors
    /// [`ConfigError::BadKeyspaceName`] for an empty name or one over `max_label`;
    /// [`ConfigError::BadTiming`] for a zero read or write timeout;
    /// [`ConfigError::BadHotKeys`] for a hot-key tracker capacity or half-life out of range.
    pub fn validate(&self, limits: &WireLimits) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > limits.max_label as usize {
            return Err(ConfigError::BadKeyspaceName);
        }
        if self.read_timeout.is_zero() || self.write_timeout.is_zero() {
            return Err(ConfigError::BadTiming);
        }
        let hot = &self.hot_keys;
        if hot.capacity == 0
            || hot.capacity > HotKeysConfig::MAX_CAPACITY
            || hot.half_life < HotKeysConfig::MIN_HALF_LIFE
        {
            return Err(ConfigError::BadHotKeys);
        }
        Ok(())
    }
}

/// Why a configuration was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The node id is empty or longer than `max_label` (or, in groupcache compatibility, not
    /// an `http://host[:port]` base URL).
    BadNodeId,
    /// The cluster label is longer than `max_label`.
    BadClusterLabel,
    /// A keyspace name is empty or longer than `max_label`.
    BadKeyspaceName,
    /// Two keyspaces with one name, or creating one that exists.
    DuplicateKeyspace,
    /// No keyspace of that name (for update or remove).
    UnknownKeyspace,
    /// The hot-key tracker configuration is invalid.
    BadHotKeys,
    /// A zero timeout (the peek timeout counts while the handoff window is on), or a
    /// non-finite or negative hot threshold.
    BadTiming,
    /// groupcache compatibility with another ring scheme than [`RingScheme::GROUPCACHE`].
    IncompatibleRing,
    /// Wire limits that cannot work together: a zero batch, or a frame too small to carry one
    /// key and one value of the maximum sizes.
    BadLimits,
    /// Liveness settings that do not work together (see [`LivenessConfig::is_valid`]).
    BadLiveness,
    /// A cluster secret shorter than [`MIN_CLUSTER_SECRET_LEN`], or one set together with
    /// groupcache's HTTP protocol (which has no hello to carry its proof).
    BadClusterSecret,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::BadNodeId => "node id is empty or too long",
            ConfigError::BadClusterLabel => "cluster label is too long",
            ConfigError::BadKeyspaceName => "keyspace name is empty or too long",
            ConfigError::DuplicateKeyspace => "keyspace already exists",
            ConfigError::UnknownKeyspace => "no such keyspace",
            ConfigError::BadHotKeys => "invalid hot-key tracker configuration",
            ConfigError::BadTiming => "invalid timeout or threshold",
            ConfigError::IncompatibleRing => "groupcache compatibility needs the groupcache ring",
            ConfigError::BadLimits => "wire limits do not fit together",
            ConfigError::BadLiveness => "invalid liveness settings",
            ConfigError::BadClusterSecret => {
                "cluster secret shorter than 16 bytes, or set with groupcache compatibility"
            }
        })
    }
}

impl core::error::Error for ConfigError {}
