//! Peer connections and the links to peers over them.
//!
//! Contract of [`Links`]: every open connection has one [`Conn`], which owns its output buffer
//! and an index of what depends on it — the calls whose request went out on it and the peer
//! requests that came in on it — so that closing a connection touches only what it owns. A
//! peer has a [`PeerLink`] while it has a connection, an attempt in progress or calls queued
//! (and while it is on the ring); a link to a node off the ring goes with its last connection,
//! so clients claiming many node ids cannot grow the table. Bytes queued on a connection go out
//! together with the next drain ([`Links::flush`]): one [`Output::Transmit`] per connection.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;
use bytes::Bytes;
use hashbrown::HashMap;

use super::compat::Codec;
use super::ids::{AttemptId, CallId, PendingId};
use super::{ConnId, Output};
use crate::hash::KeyHashBuilder;
use crate::ring::Ring;
use crate::time::{Duration, Instant};
use crate::wire::{Message, WireError, WireLimits};

/// One open connection.
pub(super) struct Conn {
    /// How its bytes are read.
    pub(super) codec: Codec,
    /// The peer: known at once on a connection this node opened, after the hello otherwise.
    pub(super) peer: Option<Bytes>,
    pub(super) outbound: bool,
    /// The handshake completed: the peer's hello (and, with a cluster secret, its proof) was
    /// accepted. Nothing but the handshake is read before.
    pub(super) hello_received: bool,
    /// The node id this connection authenticated as ([`super::auth`]); `None` until the
    /// handshake completed.
    pub(super) identity: Option<Bytes>,
    /// This connection's hello nonce, from the driver.
    pub(super) nonce: [u8; 16],
    /// The peer's identity as the transport authenticated it (a TLS certificate's names),
    /// which must admit the hello's id.
    pub(super) transport_identity: Option<crate::PeerIdentity>,
    /// With a cluster secret: the peer's hello was accepted and its proof is awaited.
    pub(super) awaiting_proof: Option<AwaitedProof>,
    /// Bytes for the next [`Output::Transmit`].
    pub(super) out: Vec<u8>,
    dirty: bool,
    /// Frames are buffered that wait for the next turn (a parse timer is set).
    pub(super) backlogged: bool,
    /// Calls whose request went out on this connection and are not answered yet.
    calls: BTreeSet<CallId>,
    /// Peer requests that came on this connection and are not answered yet.
    requests: BTreeSet<PendingId>,
}

impl Conn {
    /// A new connection to or from `peer`; `hello_received` when the protocol has no hello.
    pub(super) fn new(
        codec: Codec,
        peer: Option<Bytes>,
        outbound: bool,
        hello_received: bool,
    ) -> Conn {
        Conn {
            codec,
            peer,
            outbound,
            hello_received,
            identity: None,
            nonce: [0; 16],
            transport_identity: None,
            awaiting_proof: None,
            out: Vec::new(),
            dirty: false,
            backlogged: false,
            calls: BTreeSet::new(),
            requests: BTreeSet::new(),
        }
    }

    /// Peer requests from this connection in progress.
    pub(super) fn in_flight(&self) -> usize {
        self.requests.len()
    }
}

/// A hello accepted on a connection whose peer has still to prove the cluster secret.
pub(super) struct AwaitedProof {
    /// The node id the hello claimed.
    pub(super) node_id: Bytes,
    /// The nonce the hello carried.
    pub(super) peer_nonce: [u8; 16],
}

/// What a closed connection left behind, for the node to fail and abandon.
pub(super) struct Closed {
    /// The connection's state.
    pub(super) conn: Conn,
    /// Its outbound handshake never completed: as good as a failed connect.
    pub(super) never_greeted: bool,
    /// Its calls, oldest first.
    pub(super) calls: Vec<CallId>,
    /// Its peers' requests, oldest first.
    pub(super) requests: Vec<PendingId>,
}

/// The node's state toward one peer.
#[derive(Default)]
pub(super) struct PeerLink {
    /// The native connection calls go out on.
    pub(super) conn: Option<ConnId>,
    /// A connection attempt in progress.
    pub(super) attempt: Option<AttemptId>,
    /// Calls waiting for a connection (native: for the connection; groupcache HTTP: for a
    /// free one).
    pub(super) queued: VecDeque<CallId>,
    pub(super) backoff: Duration,
    /// No new connection before this.
    pub(super) retry_at: Instant,
    /// groupcache HTTP: every open connection to the peer…
    pub(super) pool: Vec<ConnId>,
    /// …and those with no request on the wire.
    pub(super) idle: Vec<ConnId>,
}

impl PeerLink {
    /// Whether a connection attempt is in progress.
    pub(super) fn is_connecting(&self) -> bool {
        self.attempt.is_some()
    }

    /// Whether the link holds nothing: no connection, attempt or queued call.
    fn is_unused(&self) -> bool {
        self.conn.is_none()
            && self.pool.is_empty()
            && self.attempt.is_none()
            && self.queued.is_empty()
    }
}

/// Every connection and peer link.
pub(super) struct Links {
    conns: HashMap<ConnId, Conn, KeyHashBuilder>,
    peers: HashMap<Bytes, PeerLink, KeyHashBuilder>,
    /// Attempts in progress, to find their peer when their timer fires.
    attempts: HashMap<AttemptId, Bytes, KeyHashBuilder>,
    /// Connections with bytes queued since the last flush, in the order they were queued.
    dirty: Vec<ConnId>,
}

impl Links {
    /// No connection; `hasher` seeds the tables.
    pub(super) fn new(hasher: &KeyHashBuilder) -> Links {
        Links {
            conns: HashMap::with_hasher(hasher.clone()),
            peers: HashMap::with_hasher(hasher.clone()),
            attempts: HashMap::with_hasher(hasher.clone()),
            dirty: Vec::new(),
        }
    }

    /// Whether `conn` is open.
    pub(super) fn contains(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The connection, while open.
    pub(super) fn get(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(&conn)
    }

    /// The connection, while open.
    pub(super) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&conn)
    }

    /// Registers an open connection.
    pub(super) fn insert(&mut self, id: ConnId, conn: Conn) {
        self.conns.insert(id, conn);
    }

    /// Open connections, for the leave.
    pub(super) fn conns(&self) -> impl Iterator<Item = (ConnId, &Conn)> + '_ {
        self.conns.iter().map(|(id, conn)| (*id, conn))
    }

    /// The peer's link, if it has one.
    pub(super) fn link_mut(&mut self, peer: &[u8]) -> Option<&mut PeerLink> {
        self.peers.get_mut(peer)
    }

    /// The peer's link, made if missing.
    pub(super) fn link_or_default(&mut self, peer: &Bytes) -> &mut PeerLink {
        self.peers.entry(peer.clone()).or_default()
    }

    /// Records a connection attempt to `peer` in progress.
    pub(super) fn begin_attempt(&mut self, peer: &Bytes, attempt: AttemptId) {
        let link = self.link_or_default(peer);
        if let Some(old) = link.attempt.replace(attempt) {
            self.attempts.remove(&old);
        }
        self.attempts.insert(attempt, peer.clone());
    }

    /// Ends `peer`'s attempt in progress, if any, and returns it (for its timer).
    pub(super) fn end_attempt(&mut self, peer: &[u8]) -> Option<AttemptId> {
        let attempt = self.peers.get_mut(peer)?.attempt.take()?;
        self.attempts.remove(&attempt);
        Some(attempt)
    }

    /// The peer an attempt in progress is for.
    pub(super) fn attempt_peer(&self, attempt: AttemptId) -> Option<Bytes> {
        self.attempts.get(&attempt).cloned()
    }

    /// No new connection to `peer` before a backoff that doubles with each failure, between
    /// `min` and `max`, plus up to a quarter of it from `random`.
    pub(super) fn back_off(
        &mut self,
        now: Instant,
        peer: &[u8],
        (min, max): (Duration, Duration),
        random: u64,
    ) {
        let Some(link) = self.peers.get_mut(peer) else { return };
        link.backoff = match link.backoff.checked_mul(2) {
            _ if link.backoff.is_zero() => min,
            Some(doubled) => doubled.min(max),
            None => max,
        };
        // Up to a quarter of jitter, so peers that lost the same node do not retry in step.
        let quarter = u64::try_from(link.backoff.as_micros() / 4).unwrap_or(u64::MAX);
        let jitter = Duration::from_micros(random % quarter.saturating_add(1));
        link.retry_at = now + link.backoff + jitter;
    }

    /// Indexes a call whose request went out on `conn`.
    pub(super) fn bind_call(&mut self, conn: ConnId, call: CallId) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.calls.insert(call);
        }
    }

    /// Unindexes a call that finished.
    pub(super) fn unbind_call(&mut self, conn: ConnId, call: CallId) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.calls.remove(&call);
        }
    }

    /// Indexes a peer request that came on `conn`.
    pub(super) fn bind_request(&mut self, conn: ConnId, request: PendingId) {
        if let Some(state) = self.conns.get_mut(&conn) {
            state.requests.insert(request);
        }
    }

    /// Unindexes a peer request being answered; whether its connection is still open (the
    /// answer goes out only then).
    pub(super) fn unbind_request(&mut self, conn: ConnId, request: PendingId) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else { return false };
        state.requests.remove(&request);
        true
    }

    /// Whether this node has a usable connection to `peer` (native: its link's connection;
    /// groupcache: any pooled one).
    pub(super) fn is_connected(&self, peer: &[u8]) -> bool {
        self.peers.get(peer).is_some_and(|link| link.conn.is_some() || !link.pool.is_empty())
    }

    /// Forgets a connection and returns what depended on it. Its peer's link lets go of it,
    /// and goes too if it is unused and the peer is neither on `ring` nor `kept` (a member,
    /// whose backoff must survive while it is down).
    pub(super) fn remove(
        &mut self,
        id: ConnId,
        ring: &Ring<Bytes>,
        kept: impl Fn(&[u8]) -> bool,
    ) -> Option<Closed> {
        let mut conn = self.conns.remove(&id)?;
        let never_greeted = conn.outbound && !conn.hello_received;
        if let Some(peer) = &conn.peer {
            if let Some(link) = self.peers.get_mut(peer) {
                if link.conn == Some(id) {
                    link.conn = None;
                }
                link.pool.retain(|&c| c != id);
                link.idle.retain(|&c| c != id);
                if link.is_unused() && !ring.contains(peer) && !kept(peer) {
                    self.peers.remove(peer);
                }
            }
        }
        let calls = core::mem::take(&mut conn.calls).into_iter().collect();
        let requests = core::mem::take(&mut conn.requests).into_iter().collect();
        Some(Closed { conn, never_greeted, calls, requests })
    }

    /// Encodes a frame on `conn`; it goes out with the next flush. Encodes nothing, and says
    /// so, when the frame would break `limits`. Sending on a connection that is gone is not an
    /// error: its calls fail with it.
    pub(super) fn send(
        &mut self,
        conn: ConnId,
        request_id: u64,
        message: &Message,
        limits: &WireLimits,
    ) -> Result<(), WireError> {
        let Some(state) = self.conns.get_mut(&conn) else { return Ok(()) };
        message.encode(request_id, &mut state.out, limits)?;
        self.mark_dirty(conn);
        Ok(())
    }

    /// Bytes were queued on `conn`: they go out with the next flush.
    pub(super) fn mark_dirty(&mut self, conn: ConnId) {
        let Some(state) = self.conns.get_mut(&conn) else { return };
        if !state.dirty {
            state.dirty = true;
            self.dirty.push(conn);
        }
    }

    /// One [`Output::Transmit`] per connection with bytes queued, in the order they were
    /// first queued.
    pub(super) fn flush(&mut self, outputs: &mut VecDeque<Output>) {
        for conn in core::mem::take(&mut self.dirty) {
            if let Some(state) = self.conns.get_mut(&conn) {
                state.dirty = false;
                if !state.out.is_empty() {
                    let data = core::mem::take(&mut state.out);
                    outputs.push_back(Output::Transmit { conn, data });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::key_hash_builder;
    use crate::node::NodeConfig;
    use crate::ring::RingScheme;

    fn conn(peer: &'static [u8]) -> Conn {
        let codec = Codec::new(&NodeConfig::new("a", "c"), true);
        Conn::new(codec, Some(Bytes::from_static(peer)), true, true)
    }

    #[test]
    fn closing_a_connection_returns_only_what_it_owns() {
        let mut links = Links::new(&key_hash_builder(1));
        links.insert(ConnId(1), conn(b"b"));
        links.insert(ConnId(2), conn(b"c"));
        links.link_or_default(&Bytes::from_static(b"b")).conn = Some(ConnId(1));
        links.bind_call(ConnId(1), CallId(7));
        links.bind_call(ConnId(1), CallId(3));
        links.bind_call(ConnId(2), CallId(8));
        links.bind_request(ConnId(1), PendingId(4));
        links.bind_request(ConnId(2), PendingId(5));
        links.unbind_call(ConnId(1), CallId(7));
        assert_eq!(links.get(ConnId(1)).unwrap().in_flight(), 1);

        let ring = Ring::new(RingScheme::BALANCED);
        let closed = links.remove(ConnId(1), &ring, |_| false).unwrap();
        assert_eq!(closed.calls, [CallId(3)], "an answered call is no longer its");
        assert_eq!(closed.requests, [PendingId(4)]);
        assert!(!closed.never_greeted);
        assert!(links.link_mut(b"b").is_none(), "an unused link off the ring goes");
        assert!(!links.unbind_request(ConnId(1), PendingId(4)), "the connection is gone");
        let other = links.get(ConnId(2)).unwrap();
        assert_eq!(other.in_flight(), 1, "the other connection is untouched");
        assert!(other.calls.contains(&CallId(8)));
    }
}
