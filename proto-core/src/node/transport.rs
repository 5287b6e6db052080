//! The seam between the node and its peer protocol ([`PeerProtocol`]): where herdcache's
//! native frames and groupcache's HTTP ([`super::compat`]) differ, it is decided here — once
//! per operation, by the node's protocol or by the connection's codec — or by one of the
//! [`PeerProtocol`] capabilities defined here (writes on the wire, a hello, keys per fetch,
//! the peek).
//! The rest of the node does not know which protocol it speaks.
//!
//! Contract, for both protocols: a call handed to [`Node::dispatch_call`] is sent, queued for a
//! connection (opened on demand, at most one attempt per peer at a time, none while the peer is
//! backed off or this node is leaving), or failed at once; a connection that closes fails the
//! calls whose requests went out on it and abandons the peer requests that came on it
//! ([`Node::on_conn_closed`]), touching nothing else.

use bytes::Bytes;

use super::batching::{fit_reply, overloaded_like};
use super::calls::Call;
use super::compat::Codec;
use super::ids::CallId;
use super::links::Conn;
use super::timers::Timer;
use super::{ConnId, Node, Output, PeerProtocol};
use crate::cache::Tier;
use crate::time::{Duration, Instant};
use crate::wire::{ErrorCode, Message};

impl Node {
    /// A new connection's state, and its hello timer when the protocol has a hello. `security`
    /// is the driver's nonce for its hello and the identity its transport authenticated.
    pub(super) fn open_conn(
        &mut self,
        conn: ConnId,
        peer: Option<Bytes>,
        outbound: bool,
        (nonce, transport_identity): ([u8; 16], Option<crate::PeerIdentity>),
    ) {
        let has_hello = self.config.peer_protocol.has_hello();
        if has_hello {
            let hello_by = self.clock.latest() + self.config.connect_timeout;
            self.timers.set(hello_by, Timer::Hello(conn));
        }
        let codec = Codec::new(&self.config, outbound);
        let mut state = Conn::new(codec, peer, outbound, !has_hello);
        state.nonce = nonce;
        state.transport_identity = transport_identity;
        self.links.insert(conn, state);
    }

    /// An outbound connection opened: native connections say hello and take the calls queued
    /// for the peer; groupcache HTTP connections join the peer's pool. With a cluster secret
    /// the connection is taken into use only once the peer proved the secret
    /// ([`Node::activate_outbound`]): until then the attempt stays in progress (calls queue,
    /// and its deadline bounds the handshake too).
    pub(super) fn on_connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: Bytes,
        nonce: [u8; 16],
        peer_identity: Option<crate::PeerIdentity>,
    ) {
        // The transport authenticated someone: it must be the peer this node dialled.
        let wrong_peer =
            peer_identity.as_ref().is_some_and(|identity| match self.config.peer_protocol {
                PeerProtocol::Native => !identity.admits(&peer),
                PeerProtocol::GroupcacheHttp => !identity.admits_base_url(&peer),
            });
        self.open_conn(conn, Some(peer.clone()), true, (nonce, peer_identity));
        if wrong_peer {
            self.refuse_dialled_identity(conn, &peer);
            return;
        }
        if self.config.peer_protocol == PeerProtocol::Native && self.config.cluster_secret.is_some()
        {
            let hello = self.hello(conn);
            self.send_frame(conn, 0, &hello);
            return;
        }
        self.activate_outbound(now, conn, &peer);
    }

    /// An outbound connection becomes the peer's: its attempt ends and — native — it takes
    /// the calls queued for the peer (saying hello first unless it was said already).
    pub(super) fn activate_outbound(&mut self, now: Instant, conn: ConnId, peer: &Bytes) {
        let peer = peer.clone();
        if let Some(attempt) = self.links.end_attempt(&peer) {
            self.timers.cancel(Timer::Connect(attempt));
        }
        let link = self.links.link_or_default(&peer);
        link.backoff = Duration::ZERO;
        match self.config.peer_protocol {
            PeerProtocol::Native => {
                link.conn = Some(conn);
                if self.config.cluster_secret.is_none() {
                    let hello = self.hello(conn);
                    self.send_frame(conn, 0, &hello);
                }
                self.flush_queued(&peer, conn);
            }
            PeerProtocol::GroupcacheHttp => {
                link.pool.push(conn);
                // groupcache peers answer no ping: an accepted connection is their answer.
                self.on_peer_heard(now, &peer, false);
                self.http_conn_free(now, conn);
            }
        }
    }

    /// An outbound connection could not be opened (or its attempt timed out): the peer is
    /// backed off, and the calls waiting for it fail — unless open connections of a
    /// groupcache pool will serve them.
    pub(super) fn on_connect_failed(&mut self, now: Instant, peer: &Bytes) {
        if let Some(attempt) = self.links.end_attempt(peer) {
            self.timers.cancel(Timer::Connect(attempt));
        }
        self.back_off(now, peer);
        self.on_peer_failed(now, peer);
        let Some(link) = self.links.link_mut(peer) else { return };
        if self.config.peer_protocol == PeerProtocol::GroupcacheHttp && !link.pool.is_empty() {
            return;
        }
        for id in core::mem::take(&mut link.queued) {
            self.fail_call(now, id);
        }
    }

    /// A connection attempt's deadline passed without a word from the driver.
    pub(super) fn on_connect_timeout(&mut self, now: Instant, attempt: super::ids::AttemptId) {
        if let Some(peer) = self.links.attempt_peer(attempt) {
            self.on_connect_failed(now, &peer);
        }
    }

    /// A connection's hello did not arrive in time: it is closed.
    pub(super) fn on_hello_timeout(&mut self, conn: ConnId) {
        if self.links.get(conn).is_some_and(|state| !state.hello_received) {
            // Counted and reported like any refusal, so a slowloris shows in the stats and
            // the logs; an honest peer that was merely slow reads why.
            self.security.hello_timeouts += 1;
            self.refuse(conn, ErrorCode::TimedOut);
        }
    }

    /// No new connection to `peer` before a backoff that doubles with each failure.
    pub(super) fn back_off(&mut self, now: Instant, peer: &Bytes) {
        let bounds = (self.config.reconnect_backoff_min, self.config.reconnect_backoff_max);
        let random = self.next_random();
        self.links.back_off(now, peer, bounds, random);
    }

    /// Asks the driver for a connection to `peer` (at `address`), with a deadline.
    pub(super) fn begin_connect(&mut self, now: Instant, peer: &Bytes, address: Bytes) {
        let attempt = self.ids.attempt();
        self.links.begin_attempt(peer, attempt);
        self.outputs.push_back(Output::Connect { peer: peer.clone(), address });
        self.timers.set(now + self.config.connect_timeout, Timer::Connect(attempt));
    }

    /// Bytes arrived on a connection: its codec reads them.
    pub(super) fn on_received(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let native = self.links.get(conn).is_some_and(|state| state.codec.native().is_some());
        if native {
            self.on_native_bytes(now, conn, data);
        } else {
            self.http_received(now, conn, data);
        }
    }

    /// The driver reports a connection closed (by the peer, an error, or after an
    /// [`Output::Close`]).
    pub(super) fn on_closed(&mut self, now: Instant, conn: ConnId) {
        self.http_closed(now, conn);
        self.on_conn_closed(now, conn);
    }

    /// Sends, queues or fails a registered call (see the module docs).
    pub(super) fn dispatch_call(&mut self, now: Instant, id: CallId, peer: Bytes) {
        if self.config.peer_protocol == PeerProtocol::GroupcacheHttp {
            self.http_send_call(now, id, peer);
            return;
        }
        let leaving = self.membership.is_leaving();
        let link = self.links.link_or_default(&peer);
        if let Some(conn) = link.conn {
            self.transmit_call(id, conn);
        } else if link.is_connecting() {
            link.queued.push_back(id);
        } else if now >= link.retry_at && !leaving {
            link.queued.push_back(id);
            let address = peer.clone();
            self.begin_connect(now, &peer, address);
        } else {
            // The peer refused recently: do not wait for it.
            self.fail_call(now, id);
        }
    }

    /// Writes a call's request on `conn` in the protocol's form; a call that cannot be written
    /// fails (gets load locally), and nothing goes out under its id.
    pub(super) fn transmit_call(&mut self, id: CallId, conn: ConnId) {
        let Some(message) = self.bind_call(id, conn) else { return };
        let sent = match self.config.peer_protocol {
            PeerProtocol::Native => {
                // Batches are cut to the limits before they are built, so a refusal here is a
                // bug guard.
                let limits = self.config.limits;
                self.links.send(conn, id.0, &message, &limits).is_ok()
            }
            PeerProtocol::GroupcacheHttp => self.http_transmit(id, conn, &message),
        };
        if !sent {
            let now = self.clock.latest();
            self.fail_call(now, id);
        }
    }

    /// Sends the calls queued for `peer` on its new connection.
    pub(super) fn flush_queued(&mut self, peer: &Bytes, conn: ConnId) {
        let queued = self
            .links
            .link_mut(peer)
            .map(|link| core::mem::take(&mut link.queued))
            .unwrap_or_default();
        for id in queued {
            self.transmit_call(id, conn);
        }
    }

    /// A call ended without its answer: a groupcache HTTP request still on the wire takes its
    /// connection down with it (the answer could not be told from the next one's).
    pub(super) fn abandon_call(&mut self, now: Instant, call: &Call) {
        if self.config.peer_protocol == PeerProtocol::GroupcacheHttp {
            self.http_abandon(now, call);
        }
    }

    /// Answers a peer's request on `conn`: a native frame (a batch shrunk to fit the frame
    /// limit), or the HTTP response to the request in progress.
    pub(super) fn send_reply(&mut self, conn: ConnId, request_id: u64, message: Message) {
        let Some(state) = self.links.get(conn) else { return };
        if state.codec.native().is_none() {
            self.http_reply(conn, &message);
            return;
        }
        let limits = self.config.limits;
        let message = fit_reply(message, &limits);
        if self.links.send(conn, request_id, &message, &limits).is_err() {
            // Nothing else can exceed the limits (values over `max_value` are refused before
            // they are stored): still, answer in the expected shape rather than not at all.
            self.send_frame(conn, request_id, &overloaded_like(&message));
        }
    }

    /// Whether a value fetched now goes to the hot cache by chance: groupcache mirrors one
    /// fetch in `hot_one_in` (from the seeded generator, drawn only in that mode).
    pub(super) fn mirrors_at_random(&mut self) -> bool {
        let one_in = u64::from(self.config.groupcache.hot_one_in);
        self.config.peer_protocol == PeerProtocol::GroupcacheHttp
            && one_in > 0
            && self.next_random() % one_in == 0
    }

    /// Sends what is queued on `conn`, closes it and forgets it (its calls fail).
    pub(super) fn close_now(&mut self, now: Instant, conn: ConnId) {
        if !self.links.contains(conn) {
            return;
        }
        self.links.flush(&mut self.outputs);
        self.outputs.push_back(Output::Close { conn });
        self.on_conn_closed(now, conn);
    }

    /// Forgets a connection: its calls fail (gets fall back to local loads), requests that
    /// came on it are abandoned, and hot copies are dropped when the protocol invalidates them
    /// over connections (a "drop your copy" may have been missed).
    pub(super) fn on_conn_closed(&mut self, now: Instant, conn: ConnId) {
        let liveness = &self.liveness;
        let kept = |peer: &[u8]| liveness.is_member(peer);
        let Some(closed) = self.links.remove(conn, &self.ring, kept) else { return };
        self.timers.cancel(Timer::Hello(conn));
        self.timers.cancel(Timer::Parse(conn));
        if let (true, Some(peer)) = (closed.never_greeted, &closed.conn.peer) {
            // It never got as far as a hello: as good as a failed connect. With a cluster
            // secret its attempt was still in progress: it failed.
            let attempt_open = self.links.link_mut(peer).is_some_and(|link| link.is_connecting());
            if self.config.cluster_secret.is_some() && attempt_open {
                self.on_connect_failed(now, peer);
            } else {
                self.back_off(now, peer);
            }
        }
        // A lost native link may have missed a "drop your copy"; groupcache's HTTP never
        // sends one, so its hot copies do not depend on connections.
        if closed.conn.peer.is_some() && closed.conn.codec.native().is_some() {
            for keyspace in self.keyspaces.values_mut() {
                keyspace.cache.clear_tier(Tier::Hot);
            }
            self.drop_kept_on_lost_link(now);
        }
        for id in closed.calls {
            self.fail_call(now, id);
        }
        for id in closed.requests {
            // Answered into the void: the deadline path leaves flights and cleans up.
            self.on_request_timeout(id);
        }
    }
}

impl PeerProtocol {
    /// Whether writes travel on the wire: puts and deletes go to the owner and drops of hot
    /// copies to every member. groupcache's HTTP has no writes: they apply locally only.
    pub(super) fn carries_writes(self) -> bool {
        self == PeerProtocol::Native
    }

    /// Whether the protocol has the peek frame ([`super::handoff`]): groupcache's HTTP peers
    /// do not know it, and are never sent one.
    pub(super) fn has_peek(self) -> bool {
        self == PeerProtocol::Native
    }

    /// Whether a connection starts with a hello (groupcache's HTTP connections are ready when
    /// open).
    pub(super) fn has_hello(self) -> bool {
        self == PeerProtocol::Native
    }

    /// Keys one fetch may carry, given the wire's batch limit: groupcache asks for one key per
    /// request.
    pub(super) fn max_keys_per_fetch(self, max_batch: usize) -> usize {
        match self {
            PeerProtocol::Native => max_batch,
            PeerProtocol::GroupcacheHttp => 1,
        }
    }
}
