//! herdcache's native frames on a connection: parsing in bounded turns, the hello, and the
//! dispatch of each message to the part of the node that handles its family — control
//! (hello, error, ping, leaving) here (every frame after the hello, and the hello, count as
//! hearing from the peer: [`super::heartbeats`]), gets in [`super::gets`], peeks in
//! [`super::handoff`], writes in [`super::writes`], replies to this node's calls in
//! [`super::calls`].
//!
//! Contract: nothing but the handshake is accepted before it completed; a hello must carry
//! this protocol version and cluster label, another node id than this one's, and — on a
//! connection this node dialled — the id it dialled; otherwise the connection is refused (an
//! error frame, then closed). With a cluster secret, or a transport identity, the handshake
//! must also authenticate the peer ([`super::auth`]): a hello without a nonce, a missing or
//! wrong proof, or a hello id other than the transport's identity refuse the connection
//! ([`ErrorCode::Unauthenticated`]). Writes, drops, clears and goodbyes are dispatched only
//! from a connection authenticated as a current member ([`Node::authorize`]). A malformed
//! frame refuses the connection too, and nothing else is touched. An error frame from the peer
//! closes the connection without an answer.

use bytes::Bytes;

use super::auth::{Role, Transcript};
use super::ids::CallId;
use super::links::AwaitedProof;
use super::timers::Timer;
use super::{ConnId, Event, Node, Output};
use crate::time::Instant;
use crate::wire::{ErrorCode, Message, PROTOCOL_VERSION, ReplyError};

/// Bytes of frames one connection's input may queue on that connection before the node stops
/// parsing its buffered frames for this turn: the rest are parsed on the next one (a timer due
/// at once), after the driver has taken — and written, paused or refused — what was produced.
/// So a burst of pipelined gets of large values cannot make one input build every reply in
/// memory at once.
pub(super) const OUTPUT_PER_TURN: usize = 1 << 20;

impl Node {
    /// Bytes arrived on a native connection: buffered, then parsed unless the connection is
    /// waiting for its next turn.
    pub(super) fn on_native_bytes(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let Some(state) = self.links.get_mut(conn) else { return };
        let Some(decoder) = state.codec.native_mut() else { return };
        if let Err(error) = decoder.push(data) {
            self.refuse(conn, error.error_code());
            return;
        }
        if !state.backlogged {
            self.parse_frames(now, conn);
        }
    }

    /// A connection's turn to parse came (its output was drained meanwhile).
    pub(super) fn on_parse_turn(&mut self, now: Instant, conn: ConnId) {
        if let Some(state) = self.links.get_mut(conn).filter(|state| state.backlogged) {
            state.backlogged = false;
            self.parse_frames(now, conn);
        }
    }

    /// Handles a connection's buffered frames until the buffer is drained, the connection was
    /// closed meanwhile, or this turn's output on it reached [`OUTPUT_PER_TURN`].
    fn parse_frames(&mut self, now: Instant, conn: ConnId) {
        while let Some(state) = self.links.get_mut(conn) {
            if state.out.len() >= OUTPUT_PER_TURN {
                state.backlogged = true;
                self.timers.set(now, Timer::Parse(conn));
                break;
            }
            let Some(decoder) = state.codec.native_mut() else { break };
            match decoder.next_frame() {
                Ok(Some((header, message))) => self.on_frame(now, conn, header.request_id, message),
                Ok(None) => break,
                Err(error) => {
                    self.refuse(conn, error.error_code());
                    break;
                }
            }
        }
    }

    /// One frame from a peer, dispatched by message family.
    fn on_frame(&mut self, now: Instant, conn: ConnId, request_id: u64, message: Message) {
        let Some(state) = self.links.get(conn) else { return };
        if let Message::Error(error) = &message {
            // The peer refused us (or gives up): close without answering.
            let reason = error.code;
            self.outputs.push_back(Output::Event(Event::ConnectionRefused { conn, reason }));
            self.outputs.push_back(Output::Close { conn });
            self.on_conn_closed(now, conn);
            return;
        }
        if !state.hello_received {
            if state.awaiting_proof.is_some() {
                self.on_hello_proof(now, conn, message);
            } else {
                self.on_hello(now, conn, message);
            }
            return;
        }
        if let Some(peer) = state.peer.clone() {
            self.on_peer_heard(now, &peer, false);
        }
        let Some(state) = self.links.get(conn) else { return };
        let overloaded = state.in_flight() >= self.config.max_in_flight_per_connection as usize
            || self.requests.len() >= self.config.max_pending;
        match message {
            Message::Hello { .. } | Message::HelloProof { .. } => {
                self.refuse(conn, ErrorCode::Malformed);
            }
            // Handled above.
            Message::Error(_) => {}
            Message::Ping => self.send_reply(conn, request_id, Message::Pong),
            Message::Pong => {}
            Message::Leaving => {
                if self.authorize(conn, request_id, &Message::Leaving) {
                    self.on_leaving_frame(now, conn, request_id);
                }
            }
            message @ (Message::Get { .. } | Message::GetMany { .. }) => {
                self.on_get_frame(now, conn, request_id, overloaded, message);
            }
            // Answered from the cache at once, so never refused as overload.
            Message::Peek { keyspace, key } => {
                self.on_peek_frame(now, conn, request_id, &keyspace, &key);
            }
            message @ (Message::Put { .. }
            | Message::PutMany { .. }
            | Message::Delete { .. }
            | Message::DeleteMany { .. }
            | Message::DropHot { .. }
            | Message::ClearKeyspace { .. }) => {
                if self.authorize(conn, request_id, &message) {
                    self.on_write_frame(now, conn, request_id, overloaded, message);
                }
            }
            reply @ (Message::GetReply(_)
            | Message::GetManyReply(_)
            | Message::Ack(_)
            | Message::AckMany(_)) => self.on_reply(now, conn, CallId(request_id), reply),
        }
    }

    /// The first frame on a connection, which must be an acceptable hello (see the module
    /// docs). Without a cluster secret it completes the handshake; with one, the acceptor
    /// answers with its own hello and its proof, and both sides wait for the peer's proof.
    fn on_hello(&mut self, now: Instant, conn: ConnId, message: Message) {
        let Some(state) = self.links.get_mut(conn) else { return };
        let Message::Hello { protocol_version, cluster, node_id, nonce } = message else {
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
        // A transport that authenticated the peer (TLS) names the only ids it may claim.
        if state.transport_identity.as_ref().is_some_and(|identity| !identity.admits(&node_id)) {
            self.refuse_unauthenticated(conn);
            return;
        }
        let node_id = Bytes::copy_from_slice(&node_id);
        if self.config.cluster_secret.is_none() {
            self.complete_handshake(now, conn, node_id);
            return;
        }
        let Some(peer_nonce) = nonce else {
            self.refuse_unauthenticated(conn);
            return;
        };
        let outbound = state.outbound;
        state.awaiting_proof = Some(AwaitedProof { node_id, peer_nonce });
        if !outbound {
            // The acceptor proves first: the dialler checks it before it proves in turn.
            let hello = self.hello(conn);
            self.send_frame(conn, 0, &hello);
            if let Some(mac) = self.proof(conn, Role::Acceptor) {
                self.send_frame(conn, 0, &Message::HelloProof { mac });
            }
        }
    }

    /// The peer's proof of the cluster secret, after its hello: a good one completes the
    /// handshake (the dialler proves in turn first); anything else refuses the connection.
    fn on_hello_proof(&mut self, now: Instant, conn: ConnId, message: Message) {
        let Message::HelloProof { mac } = message else {
            self.refuse_unauthenticated(conn);
            return;
        };
        let Some(state) = self.links.get(conn) else { return };
        let outbound = state.outbound;
        let peer_role = if outbound { Role::Acceptor } else { Role::Dialler };
        let good = self
            .with_transcript(conn, |transcript, secret| transcript.verify(secret, peer_role, &mac));
        if good != Some(true) {
            self.refuse_unauthenticated(conn);
            return;
        }
        if outbound {
            if let Some(mac) = self.proof(conn, Role::Dialler) {
                self.send_frame(conn, 0, &Message::HelloProof { mac });
            }
        }
        let awaited = self.links.get_mut(conn).and_then(|state| state.awaiting_proof.take());
        if let Some(awaited) = awaited {
            self.complete_handshake(now, conn, awaited.node_id);
        }
    }

    /// `role`'s proof on `conn`, once the peer's hello is in.
    fn proof(&self, conn: ConnId, role: Role) -> Option<[u8; 32]> {
        self.with_transcript(conn, |transcript, secret| transcript.prove(secret, role))
    }

    /// Runs `f` over the transcript of `conn`'s handshake and the cluster secret; `None`
    /// without a secret or before the peer's hello.
    fn with_transcript<T>(
        &self,
        conn: ConnId,
        f: impl FnOnce(&Transcript<'_>, &[u8]) -> T,
    ) -> Option<T> {
        let secret = self.config.cluster_secret.as_ref()?;
        let state = self.links.get(conn)?;
        let awaited = state.awaiting_proof.as_ref()?;
        let own: &[u8] = &self.config.node_id;
        let (dialler, acceptor, dialler_nonce, acceptor_nonce) = if state.outbound {
            (own, &awaited.node_id[..], &state.nonce, &awaited.peer_nonce)
        } else {
            (&awaited.node_id[..], own, &awaited.peer_nonce, &state.nonce)
        };
        let transcript = Transcript {
            cluster: &self.config.cluster,
            dialler,
            acceptor,
            dialler_nonce,
            acceptor_nonce,
        };
        Some(f(&transcript, secret))
    }

    /// The handshake completed: the connection is `node_id`'s. On an accepted connection this
    /// node answers with its own hello (unless it did already, with a secret), makes it the
    /// peer's link if the peer has none, and — while leaving — says so at once; an outbound
    /// one authenticated by a secret is taken into use now.
    fn complete_handshake(&mut self, now: Instant, conn: ConnId, node_id: Bytes) {
        let Some(state) = self.links.get_mut(conn) else { return };
        state.hello_received = true;
        state.peer = Some(node_id.clone());
        state.identity = Some(node_id.clone());
        if let Some(decoder) = state.codec.native_mut() {
            decoder.set_limits(self.config.limits);
        }
        let outbound = state.outbound;
        self.timers.cancel(Timer::Hello(conn));
        let secret = self.config.cluster_secret.is_some();
        if outbound && secret {
            self.activate_outbound(now, conn, &node_id);
        }
        if !outbound {
            if !secret {
                let hello = self.hello(conn);
                self.send_frame(conn, 0, &hello);
            }
            let link = self.links.link_or_default(&node_id);
            if link.conn.is_none() {
                link.conn = Some(conn);
                let attempt = self.links.end_attempt(&node_id);
                if let Some(attempt) = attempt {
                    self.timers.cancel(Timer::Connect(attempt));
                }
                self.flush_queued(&node_id, conn);
            }
            if self.membership.is_leaving() {
                // A peer that connects during the leave hears of it before any refusal,
                // so that it asks the key's next owner rather than loading the key itself.
                self.send_frame(conn, 0, &Message::Leaving);
            }
        }
        self.outputs.push_back(Output::Event(Event::PeerUp { peer: node_id.clone() }));
        self.on_peer_heard(now, &node_id, true);
    }

    /// This node's hello on `conn`: with a cluster secret it carries the connection's nonce.
    pub(super) fn hello(&self, conn: ConnId) -> Message {
        let nonce = self
            .config
            .cluster_secret
            .as_ref()
            .and_then(|_| self.links.get(conn))
            .map(|state| state.nonce);
        Message::Hello {
            protocol_version: u16::from(PROTOCOL_VERSION),
            cluster: self.config.cluster.clone(),
            node_id: self.config.node_id.clone(),
            nonce,
        }
    }

    /// Queues a frame that fits the limits by construction (a hello, a goodbye, an error);
    /// one that does not is not sent.
    pub(super) fn send_frame(&mut self, conn: ConnId, request_id: u64, message: &Message) {
        let limits = self.config.limits;
        let _ = self.links.send(conn, request_id, message, &limits);
    }

    /// Sends an error frame and closes the connection (a malformed frame or a hello mismatch).
    /// A connection this node dialled reached a peer whose transport identity does not
    /// admit the id dialled: closed before a byte is sent (no hello, no request), counted and
    /// reported; the attempt fails as a dead connection does.
    pub(super) fn refuse_dialled_identity(&mut self, conn: ConnId, peer: &Bytes) {
        self.security.refused_unauthenticated += 1;
        let reason = ErrorCode::Unauthenticated;
        self.outputs.push_back(Output::Event(Event::ConnectionRefused { conn, reason }));
        let now = self.clock.latest();
        self.outputs.push_back(Output::Close { conn });
        self.on_conn_closed(now, conn);
        self.on_connect_failed(now, peer);
    }

    pub(super) fn refuse(&mut self, conn: ConnId, reason: ErrorCode) {
        let message = Message::Error(ReplyError { code: reason, message: Bytes::new() });
        self.send_frame(conn, 0, &message);
        self.outputs.push_back(Output::Event(Event::ConnectionRefused { conn, reason }));
        let now = self.clock.latest();
        self.links.flush(&mut self.outputs);
        self.outputs.push_back(Output::Close { conn });
        self.on_conn_closed(now, conn);
    }
}
