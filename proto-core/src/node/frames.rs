//! herdcache's native frames on a connection: parsing in bounded turns, the hello, and the
//! dispatch of each message to the part of the node that handles its family — control
//! (hello, error, ping, leaving) here (every frame after the hello, and the hello, count as
//! hearing from the peer: [`super::heartbeats`]), gets in [`super::gets`], peeks in
//! [`super::handoff`], writes in [`super::writes`], replies to this node's calls in
//! [`super::calls`].
//!
//! Contract: nothing but a hello is accepted before the hello; a hello must carry this
//! protocol version and cluster label, another node id than this one's, and — on a connection
//! this node dialled — the id it dialled; otherwise the connection is refused (an error frame,
//! then closed). A malformed frame refuses the connection too, and nothing else is touched. An
//! error frame from the peer closes the connection without an answer.

use bytes::Bytes;

use super::ids::CallId;
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
            self.on_hello(now, conn, message);
            return;
        }
        if let Some(peer) = state.peer.clone() {
            self.on_peer_heard(now, &peer, false);
        }
        let Some(state) = self.links.get(conn) else { return };
        let overloaded = state.in_flight() >= self.config.max_in_flight_per_connection as usize
            || self.requests.len() >= self.config.max_pending;
        match message {
            Message::Hello { .. } => self.refuse(conn, ErrorCode::Malformed),
            // Handled above.
            Message::Error(_) => {}
            Message::Ping => self.send_reply(conn, request_id, Message::Pong),
            Message::Pong => {}
            Message::Leaving => self.on_leaving_frame(now, conn, request_id),
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
                self.on_write_frame(now, conn, request_id, overloaded, message);
            }
            reply @ (Message::GetReply(_)
            | Message::GetManyReply(_)
            | Message::Ack(_)
            | Message::AckMany(_)) => self.on_reply(now, conn, CallId(request_id), reply),
        }
    }

    /// The first frame on a connection, which must be an acceptable hello (see the module
    /// docs). On an accepted connection this node answers with its own hello, makes it the
    /// peer's link if the peer has none, and — while leaving — says so at once.
    fn on_hello(&mut self, now: Instant, conn: ConnId, message: Message) {
        let Some(state) = self.links.get_mut(conn) else { return };
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
        self.timers.cancel(Timer::Hello(conn));
        if !outbound {
            let hello = self.hello();
            self.send_frame(conn, 0, &hello);
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

    /// This node's hello.
    pub(super) fn hello(&self) -> Message {
        Message::Hello {
            protocol_version: u16::from(PROTOCOL_VERSION),
            cluster: self.config.cluster.clone(),
            node_id: self.config.node_id.clone(),
        }
    }

    /// Queues a frame that fits the limits by construction (a hello, a goodbye, an error);
    /// one that does not is not sent.
    pub(super) fn send_frame(&mut self, conn: ConnId, request_id: u64, message: &Message) {
        let limits = self.config.limits;
        let _ = self.links.send(conn, request_id, message, &limits);
    }

    /// Sends an error frame and closes the connection (a malformed frame or a hello mismatch).
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
