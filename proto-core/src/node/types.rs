//! The data the [`Node`](super::Node) takes in and hands out.

use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

use super::MemberState;
use crate::time::{Duration, Instant};
use crate::wire::{ErrorCode, FrameKind, ReplyError};

/// A local request, named by the driver; every one is answered by exactly one
/// [`Output::Reply`] with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A connection to a peer, named by the driver when it is accepted or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A data-source call the node asked for with [`Output::Load`]; answer it with [`Input::Loaded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoadId(pub u64);

/// Why a request failed. The same set crosses the wire between peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The data source has no value for the key.
    NotFound,
    /// The data source failed; its message.
    DataSource(Bytes),
    /// The request's deadline passed first.
    TimedOut,
    /// The keyspace's rate limiter refused the data-source call.
    RateLimited,
    /// The keyspace's circuit breaker is open.
    CircuitOpen,
    /// A key or value over the configured limits.
    TooLarge,
    /// No keyspace of that name.
    UnknownKeyspace,
    /// The node is leaving the cluster.
    ShuttingDown,
    /// Too much in progress (flights, waiters or peer requests over their limits).
    Overloaded,
    /// The owning peer could not be reached for a write (or did not confirm it in time).
    Unavailable,
    /// A request that makes no sense (a duplicate id, an empty batch, …).
    BadRequest,
    /// The peer that had to apply the request did not take it from this node: it does not
    /// count this node as a current member (yet, or any more). Nothing changed there.
    Unauthorized,
}

impl Error {
    /// The wire form of this error.
    #[must_use]
    pub fn to_reply_error(&self) -> ReplyError {
        let (code, message): (ErrorCode, &[u8]) = match self {
            Error::NotFound => (ErrorCode::NotFound, b""),
            Error::DataSource(message) => {
                return ReplyError { code: ErrorCode::DataSource, message: message.clone() };
            }
            Error::TimedOut => (ErrorCode::TimedOut, b""),
            Error::RateLimited => (ErrorCode::RateLimited, b""),
            Error::CircuitOpen => (ErrorCode::CircuitOpen, b""),
            Error::TooLarge => (ErrorCode::TooLarge, b""),
            Error::UnknownKeyspace => (ErrorCode::UnknownKeyspace, b""),
            Error::ShuttingDown => (ErrorCode::ShuttingDown, b""),
            Error::Overloaded => (ErrorCode::Overloaded, b""),
            Error::Unavailable => (ErrorCode::Unavailable, b""),
            Error::BadRequest => (ErrorCode::BadRequest, b""),
            Error::Unauthorized => (ErrorCode::Unauthorized, b""),
        };
        ReplyError { code, message: Bytes::from_static(message) }
    }

    /// The error a peer's wire error stands for.
    #[must_use]
    pub fn from_reply_error(error: &ReplyError) -> Error {
        match error.code {
            ErrorCode::NotFound => Error::NotFound,
            ErrorCode::DataSource => Error::DataSource(Bytes::copy_from_slice(&error.message)),
            ErrorCode::TimedOut => Error::TimedOut,
            ErrorCode::RateLimited => Error::RateLimited,
            ErrorCode::CircuitOpen => Error::CircuitOpen,
            ErrorCode::TooLarge => Error::TooLarge,
            ErrorCode::UnknownKeyspace => Error::UnknownKeyspace,
            ErrorCode::ShuttingDown => Error::ShuttingDown,
            ErrorCode::Overloaded => Error::Overloaded,
            ErrorCode::Unavailable => Error::Unavailable,
            ErrorCode::Unauthorized => Error::Unauthorized,
            ErrorCode::BadRequest
            | ErrorCode::ProtocolVersion
            | ErrorCode::ClusterMismatch
            | ErrorCode::Malformed
            | ErrorCode::FrameTooLarge
            | ErrorCode::TooManyInFlight
            | ErrorCode::Unauthenticated => Error::BadRequest,
        }
    }

    /// Whether a peer answering this to a fetch means "the peer could not serve it" (the
    /// requester then loads locally) rather than a real answer about the key.
    pub(crate) fn is_peer_failure(&self) -> bool {
        matches!(
            self,
            Error::TimedOut | Error::ShuttingDown | Error::Overloaded | Error::Unavailable
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found"),
            Error::DataSource(message) => {
                write!(f, "data source error: {}", alloc::string::String::from_utf8_lossy(message))
            }
            Error::TimedOut => f.write_str("timed out"),
            Error::RateLimited => f.write_str("rate limited"),
            Error::CircuitOpen => f.write_str("circuit open"),
            Error::TooLarge => f.write_str("too large"),
            Error::UnknownKeyspace => f.write_str("unknown keyspace"),
            Error::ShuttingDown => f.write_str("shutting down"),
            Error::Overloaded => f.write_str("overloaded"),
            Error::Unavailable => f.write_str("owner unavailable"),
            Error::BadRequest => f.write_str("bad request"),
            Error::Unauthorized => f.write_str("not authorized by the peer"),
        }
    }
}

impl core::error::Error for Error {}

/// Where a value came from, for latency accounting by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// This node's main cache.
    LocalHit,
    /// This node's hot cache (a mirrored copy of another peer's key).
    HotHit,
    /// Fetched from the owning peer.
    PeerFetch,
    /// Loaded from the data source (by this node, possibly waiting on another request's load).
    Load,
    /// After a ring change, found in the cache of the key's previous owner (a peek) by this
    /// node, its new owner, instead of a load.
    PreviousOwner,
}

/// A value handed to a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The bytes (a reference count, never a copy).
    pub bytes: Bytes,
    /// When it expires, on the driver's clock; `None` for never.
    pub expires_at: Option<Instant>,
    /// Where it came from.
    pub path: Path,
}

/// The answer to a local request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// To [`Input::Get`].
    Get(Result<Value, Error>),
    /// To [`Input::GetMany`]: one result per key, in request order.
    GetMany(Vec<Result<Value, Error>>),
    /// To [`Input::Put`], [`Input::Delete`] and [`Input::DeleteKeyspace`].
    Write(Result<(), Error>),
    /// To [`Input::PutMany`] and [`Input::DeleteMany`]: one result per key, in request order.
    WriteMany(Vec<Result<(), Error>>),
}

/// What the data source answered for an [`Output::Load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadResult {
    /// The value, with an expiry of its own (`None`: the keyspace's default TTL applies).
    Value {
        /// The bytes.
        bytes: Bytes,
        /// Its expiry on the driver's clock.
        expires_at: Option<Instant>,
    },
    /// The source has no value for the key (an answer, not a failure: the breaker counts it as
    /// a success).
    NotFound,
    /// The source failed, with a message for the callers.
    Failed(Bytes),
}

/// One entry of a [`Input::PutMany`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Its expiry (`None`: the keyspace's default TTL).
    pub expires_at: Option<Instant>,
}

/// An input to [`Node::handle_input`](super::Node::handle_input).
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// Get one key. `timeout` overrides the node's request timeout.
    Get {
        /// Answered by a [`Reply::Get`] with this id.
        request: RequestId,
        /// The keyspace.
        keyspace: Bytes,
        /// The key.
        key: Bytes,
        /// How long the caller waits.
        timeout: Option<Duration>,
    },
    /// Get several keys of one keyspace; keys are grouped by owner, one message per peer.
    GetMany {
        /// Answered by a [`Reply::GetMany`] with this id.
        request: RequestId,
        /// The keyspace.
        keyspace: Bytes,
        /// The keys.
        keys: Vec<Bytes>,
        /// How long the caller waits.
        timeout: Option<Duration>,
    },
    /// Store a value at the key's owner, which tells every peer to drop its copy.
    Put {
        /// Answered by a [`Reply::Write`] with this id.
        request: RequestId,
        /// The keyspace.
        keyspace: Bytes,
        /// The entry.
        entry: Entry,
        /// How long the caller waits.
        timeout: Option<Duration>,
    },
    /// Store several values.
    PutMany {
        /// Answered by a [`Reply::WriteMany`] with this id.
        request: RequestId,
        /// The keyspace.
        keyspace: Bytes,
        /// The entries.
        entries: Vec<Entry>,
        /// How long the caller waits.
        timeout: Option<Duration>,
    },
    /// Remove a key at its owner, which tells every peer to drop its copy. Beats a load of the
    /// key already in flight: that load's result is not cached.
    Delete {
        /// Answered by a [`Reply::Write`] with this id.
        request: RequestId,
        /// The keyspace.
        keyspace: Bytes,
        /// The key.
        key: Bytes,
        /// How long the caller waits.
        timeout: Option<Duration>,
    },
    /// Remove several keys.
    DeleteMany {
        /// Answered by a [`Reply::WriteMany`] with this id.
        request: RequestId,
        /// The keyspace.
        keyspace: Bytes,
        /// The keys.
        keys: Vec<Bytes>,
        /// How long the caller waits.
        timeout: Option<Duration>,
    },
    /// Delete every key of a keyspace on every node (the keyspace itself stays); loads in
    /// flight are not cached. Acknowledged once every ring member confirmed.
    DeleteKeyspace {
        /// Answered by a [`Reply::Write`] with this id.
        request: RequestId,
        /// The keyspace.
        keyspace: Bytes,
        /// How long the caller waits.
        timeout: Option<Duration>,
    },
    /// The data source answered an [`Output::Load`].
    Loaded {
        /// The load.
        load: LoadId,
        /// Its result.
        result: LoadResult,
    },
    /// The cluster's members (node ids, this node's own included or not); rebuilds the ring.
    SetPeers(Vec<Bytes>),
    /// Leave the cluster gracefully: tell the peers, refuse new requests, finish what is in
    /// progress, then emit [`Event::Drained`]. Until then a peer's get is still answered from
    /// the cache or by joining a load in flight here (never by starting one).
    Leave,
    /// An outbound connection asked for by [`Output::Connect`] is open.
    Connected {
        /// The driver's name for it.
        conn: ConnId,
        /// The peer it was opened to.
        peer: Bytes,
        /// This connection's hello nonce: fresh, unpredictable bytes (the core has no
        /// randomness of its own). Used only with a [cluster
        /// secret](super::NodeConfig::cluster_secret), where a nonce that repeats or can be
        /// guessed would let a recorded proof be replayed; never reuse one.
        nonce: [u8; 16],
        /// The peer's identity as the transport authenticated it (for TLS, the names its
        /// verified certificate carries), or `None` on a transport that authenticates
        /// nothing (plain TCP). When set, it must admit `peer` (the id dialled; for
        /// groupcache peers, the base URL's authority) or the connection is closed at once,
        /// and the peer's hello must carry an id it admits
        /// ([`PeerIdentity::admits`](crate::PeerIdentity::admits)); either refusal counts in
        /// [`SecurityStats::refused_unauthenticated`].
        peer_identity: Option<crate::PeerIdentity>,
    },
    /// An outbound connection asked for by [`Output::Connect`] could not be opened.
    ConnectFailed {
        /// The peer.
        peer: Bytes,
    },
    /// A peer connected to this node.
    Accepted {
        /// The driver's name for it.
        conn: ConnId,
        /// As in [`Input::Connected`]: this connection's fresh hello nonce.
        nonce: [u8; 16],
        /// As in [`Input::Connected`]: the identity the transport authenticated, which must
        /// admit the hello's node id (groupcache peers send no hello: any peer the transport
        /// authenticated is served).
        peer_identity: Option<crate::PeerIdentity>,
    },
    /// Bytes arrived on a connection (any split: the node reassembles frames).
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: &'a [u8],
    },
    /// A connection closed (by the peer, an IO error, or after an [`Output::Close`]).
    Closed {
        /// The connection.
        conn: ConnId,
    },
}

/// Work for the driver, drained with [`Node::poll_output`](super::Node::poll_output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Answer a local request.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// Call the keyspace's data source for the key, then feed [`Input::Loaded`].
    Load {
        /// Name of this call.
        load: LoadId,
        /// The keyspace.
        keyspace: Bytes,
        /// The key.
        key: Bytes,
    },
    /// Write these bytes to the connection (all frames queued for it since the last drain).
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Open a TCP connection to `address`, then feed [`Input::Connected`] or
    /// [`Input::ConnectFailed`] naming `peer`.
    Connect {
        /// The peer (its node id).
        peer: Bytes,
        /// Where to dial, `host:port`: the node id itself with the native protocol, the
        /// authority of the base URL with groupcache's.
        address: Bytes,
    },
    /// Close the connection (after writing what was transmitted before), then feed
    /// [`Input::Closed`].
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Something observers may want to know.
    Event(Event),
}

/// A notable change, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer completed the hello on a connection.
    PeerUp {
        /// The peer's node id.
        peer: Bytes,
    },
    /// A connection refused because of a hello mismatch, a hello that could not be
    /// authenticated ([`ErrorCode::Unauthenticated`]: counted in
    /// [`SecurityStats::refused_unauthenticated`]) or a malformed frame.
    ConnectionRefused {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: ErrorCode,
    },
    /// A peer's write, drop of hot copies, keyspace clear or goodbye was refused (answered
    /// with `reason` where the request has an answer) and changed nothing: the connection's
    /// authenticated node id is not a current member ([`ErrorCode::Unauthorized`]). Counted
    /// in [`SecurityStats::refused_unauthorized`]; the connection stays open.
    RequestRefused {
        /// The connection.
        conn: ConnId,
        /// The node id the connection authenticated as.
        peer: Bytes,
        /// What was refused.
        frame: FrameKind,
        /// Why.
        reason: ErrorCode,
    },
    /// The ring was rebuilt.
    RingChanged {
        /// Members now on the ring.
        members: usize,
    },
    /// Warmup queued prefetches of keys this node now owns.
    WarmupStarted {
        /// Keys queued.
        keys: usize,
    },
    /// After [`Input::Leave`]: nothing is in progress any more; the driver may exit.
    Drained,
    /// Fewer than `min_members` nodes are alive: every cached copy was dropped, and none is
    /// kept until enough are alive again (see [`LivenessConfig`](super::LivenessConfig)).
    CopiesDropped,
    /// A member's liveness changed (see [`MemberState`]); the ring follows when it went down
    /// or came back.
    MemberChanged {
        /// The member's node id.
        peer: Bytes,
        /// What it was.
        from: MemberState,
        /// What it is now.
        to: MemberState,
    },
}

/// Why [`Node::handle_input`](super::Node::handle_input) refused an input. State is unchanged
/// in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputError {
    /// A local request with this id is still in progress. State unchanged.
    DuplicateRequest(RequestId),
    /// `max_pending` requests are in progress already: fail this one with
    /// [`Error::Overloaded`] or retry later. State unchanged.
    Overloaded(RequestId),
    /// The connection is not known (never accepted, or already closed). State unchanged.
    UnknownConnection(ConnId),
    /// A connection with this id already exists. State unchanged.
    DuplicateConnection(ConnId),
    /// No load with this id is in progress (it timed out, or was answered already): the value
    /// is dropped. State unchanged.
    UnknownLoad(LoadId),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::DuplicateRequest(id) => {
                write!(f, "request {} is already in progress", id.0)
            }
            InputError::Overloaded(id) => write!(f, "request {} refused: node overloaded", id.0),
            InputError::UnknownConnection(id) => write!(f, "connection {} is not open", id.0),
            InputError::DuplicateConnection(id) => write!(f, "connection {} already exists", id.0),
            InputError::UnknownLoad(id) => write!(f, "load {} is not in progress", id.0),
        }
    }
}

impl core::error::Error for InputError {}

/// Refusals of peers for want of authentication or authorization, since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecurityStats {
    /// Connections refused at the hello: no proof of the cluster secret, a wrong one, one for
    /// other nonces (a replay), or a hello id that is not the transport's authenticated
    /// identity, or (on a connection this node dialled) a transport identity that does not
    /// admit the id dialled.
    pub refused_unauthenticated: u64,
    /// Peer requests refused because the connection's node id is not a current member:
    /// writes, drops of hot copies, keyspace clears and goodbyes.
    pub refused_unauthorized: u64,
    /// Connections closed because the peer did not complete its hello (and, with a cluster
    /// secret, its proof) within the hello timeout: slow or silent peers, slowloris.
    pub hello_timeouts: u64,
}
