//! groupcache compatibility: the node's peer connections speaking golang/groupcache's HTTP
//! protocol ([`PeerProtocol::GroupcacheHttp`]).
//!
//! The loading process is the node's own; this part only changes how a fetch travels and how
//! a peer's get arrives:
//! - **Client side.** A fetch is one `GET` on a connection of the owner's pool. A connection
//!   carries one request at a time (HTTP/1.1 answers come back in order and cannot be matched
//!   otherwise); a fetch waits in the peer's queue for a free connection, and the pool grows
//!   one connection at a time up to `max_connections_per_peer` while fetches wait. A fetch
//!   that times out closes its connection (its answer can no longer be told from the next
//!   one's). A malformed answer closes the connection and fails the fetch: the node loads the
//!   key itself.
//! - **Server side.** Requests on an accepted connection are answered in order, one at a time:
//!   the next pipelined request is read when the previous one was answered. A malformed
//!   request is answered with its status and the connection closed.

use alloc::format;
use alloc::vec::Vec;
use bytes::Bytes;

use super::calls::{Call, CallKind};
use super::ids::CallId;
use super::{Error, Event, Node, NodeConfig, Output, PeerProtocol};
use crate::groupcache::{
    GetReply, PeerUrl, encode_error_response, encode_value_response, parse_get_request,
    parse_get_response,
};
use crate::http::{HttpError, RequestDecoder, ResponseDecoder};
use crate::node::{ConnId, Instant};
use crate::wire::{ErrorCode, Found, GetOutcome, KeyRate, Message};

/// An accepted connection's state: serving groupcache gets.
#[derive(Debug)]
pub(super) struct HttpServing {
    decoder: RequestDecoder,
    /// A request is being answered; the next one waits in the decoder.
    busy: bool,
    /// Whether the request being answered lets the connection stay open.
    keep_alive: bool,
}

/// An opened connection's state: fetching from a peer.
#[derive(Debug)]
pub(super) struct HttpFetching {
    decoder: ResponseDecoder,
    /// The call whose request is on the wire, answered by the next response. `Some` even
    /// after the call itself finished another way: the connection is busy until the answer
    /// arrives.
    call: Option<CallId>,
}

/// Serving connections whose answer went out during a mutation: after it, they read their
/// next request or close — never inside it, where the answer may have been given from within
/// that connection's own reading loop.
#[derive(Default)]
pub(super) struct HttpTurns {
    resume: Vec<ConnId>,
    closing: Vec<ConnId>,
}

/// How a connection reads its bytes.
#[derive(Debug)]
pub(super) enum Codec {
    /// herdcache's frames.
    Native(crate::wire::FrameDecoder),
    /// groupcache HTTP, accepted: serving gets.
    HttpServer(HttpServing),
    /// groupcache HTTP, opened: fetching.
    HttpClient(HttpFetching),
}

impl Codec {
    /// The codec of a new connection of a node configured by `config`.
    pub(super) fn new(config: &NodeConfig, outbound: bool) -> Codec {
        let limits = config.groupcache.limits;
        match (config.peer_protocol, outbound) {
            // Until the handshake completes, no frame larger than a handshake's
            // (`Node::complete_handshake` raises the limit).
            (PeerProtocol::Native, _) => {
                Codec::Native(crate::wire::FrameDecoder::new(config.limits.for_handshake()))
            }
            (PeerProtocol::GroupcacheHttp, false) => Codec::HttpServer(HttpServing {
                decoder: RequestDecoder::new(limits),
                busy: false,
                keep_alive: true,
            }),
            (PeerProtocol::GroupcacheHttp, true) => Codec::HttpClient(HttpFetching {
                decoder: ResponseDecoder::new(limits),
                call: None,
            }),
        }
    }

    /// The frame decoder of a native connection.
    pub(super) fn native(&self) -> Option<&crate::wire::FrameDecoder> {
        match self {
            Codec::Native(decoder) => Some(decoder),
            _ => None,
        }
    }

    /// The frame decoder of a native connection.
    pub(super) fn native_mut(&mut self) -> Option<&mut crate::wire::FrameDecoder> {
        match self {
            Codec::Native(decoder) => Some(decoder),
            _ => None,
        }
    }
}

impl Node {
    /// Where to dial a groupcache peer: its base URL's `host:port`.
    fn dial_address(peer: &Bytes) -> Option<Bytes> {
        PeerUrl::parse(peer).ok().map(|url| url.address().clone())
    }

    // -----------------------------------------------------------------------------------
    // Client side

    /// Sends or queues a fetch to `peer` (the call is registered already).
    pub(super) fn http_send_call(&mut self, now: Instant, id: CallId, peer: Bytes) {
        let settings = self.config.groupcache;
        let address = Node::dial_address(&peer);
        let leaving = self.membership.is_leaving();
        let link = self.links.link_or_default(&peer);
        if let Some(conn) = link.idle.pop() {
            self.transmit_call(id, conn);
            return;
        }
        if link.queued.len() >= settings.max_queued_per_peer as usize {
            self.fail_call(now, id);
            return;
        }
        let may_grow = link.pool.len() < settings.max_connections_per_peer as usize;
        if link.is_connecting() || (!link.pool.is_empty() && !may_grow) {
            link.queued.push_back(id);
        } else if may_grow && now >= link.retry_at && !leaving && address.is_some() {
            link.queued.push_back(id);
            if let Some(address) = address {
                self.begin_connect(now, &peer, address);
            }
        } else if !link.pool.is_empty() {
            link.queued.push_back(id); // backing off from growing: wait for a busy connection
        } else {
            self.fail_call(now, id);
        }
    }

    /// `conn` has no request on the wire: it takes the next waiting fetch or becomes idle;
    /// the pool grows while fetches still wait.
    pub(super) fn http_conn_free(&mut self, now: Instant, conn: ConnId) {
        let Some(peer) = self.links.get(conn).and_then(|state| state.peer.clone()) else {
            return;
        };
        loop {
            let Some(link) = self.links.link_mut(&peer) else { return };
            let Some(id) = link.queued.pop_front() else {
                link.idle.push(conn);
                return;
            };
            if self.calls.get(id).is_some_and(|call| call.unsent.is_some()) {
                self.transmit_call(id, conn);
                break;
            }
        }
        let settings = self.config.groupcache;
        let address = Node::dial_address(&peer);
        let leaving = self.membership.is_leaving();
        let Some(link) = self.links.link_mut(&peer) else { return };
        let grow = !link.queued.is_empty()
            && !link.is_connecting()
            && link.pool.len() < settings.max_connections_per_peer as usize
            && now >= link.retry_at
            && !leaving;
        if let (true, Some(address)) = (grow, address) {
            self.begin_connect(now, &peer, address);
        }
    }

    /// Writes a call's request on `conn`. `false` when it cannot be (the call then fails).
    pub(super) fn http_transmit(&mut self, id: CallId, conn: ConnId, message: &Message) -> bool {
        let Some(peer) = self.calls.get(id).map(|call| call.peer.clone()) else { return false };
        let (Message::Get { keyspace, key, .. }, Ok(url)) = (message, PeerUrl::parse(&peer)) else {
            return false;
        };
        let Some(state) = self.links.get_mut(conn) else { return false };
        let Codec::HttpClient(fetching) = &mut state.codec else { return false };
        fetching.call = Some(id);
        url.encode_get(keyspace, key, &mut state.out);
        self.links.mark_dirty(conn);
        true
    }

    /// A call failed while its request was on `conn`: the connection goes too.
    pub(super) fn http_abandon(&mut self, now: Instant, call: &Call) {
        let Some(conn) = call.conn else { return };
        let on_wire = self.links.get(conn).is_some_and(
            |state| matches!(&state.codec, Codec::HttpClient(fetching) if fetching.call.is_some()),
        );
        if on_wire {
            self.close_now(now, conn);
        }
    }

    /// A response (or a failure to read one) on a fetching connection: it answers the call on
    /// the wire, if that call still waits; the connection then takes the next fetch or closes.
    fn http_response(
        &mut self,
        now: Instant,
        conn: ConnId,
        reply: Result<(GetReply, bool), HttpError>,
    ) {
        let call = match self.links.get_mut(conn).map(|state| &mut state.codec) {
            Some(Codec::HttpClient(fetching)) => fetching.call.take(),
            _ => return,
        };
        let Ok((reply, keep_alive)) = reply else {
            let reason = ErrorCode::Malformed;
            self.outputs.push_back(Output::Event(Event::ConnectionRefused { conn, reason }));
            self.close_now(now, conn);
            return;
        };
        if let Some(peer) = self.links.get(conn).and_then(|state| state.peer.clone()) {
            self.on_peer_heard(now, &peer, false);
        }
        let Some(id) = call else {
            // An answer nobody asked for: the peer is confused.
            self.close_now(now, conn);
            return;
        };
        if self.calls.get(id).is_some_and(|call| call.conn == Some(conn)) {
            let call = self.take_call(id).expect("just looked up");
            if let CallKind::Get { keyspace, flight } = call.kind {
                match reply {
                    GetReply::Value { value, minute_qps } => {
                        let rate = minute_qps.unwrap_or(0.0) / 60.0;
                        let found = Found {
                            value,
                            expires_at: None,
                            key_rate: KeyRate::from_per_second(rate),
                        };
                        self.on_fetched(
                            now,
                            &keyspace,
                            flight,
                            id,
                            &call.peer,
                            GetOutcome::Found(found),
                        );
                    }
                    // The owner's load failed: its answer, as groupcache's own error.
                    GetReply::Failed { status: 500, message } => {
                        let error = Error::DataSource(message).to_reply_error();
                        self.on_fetched(
                            now,
                            &keyspace,
                            flight,
                            id,
                            &call.peer,
                            GetOutcome::Failed(error),
                        );
                    }
                    // 404 (the owner lacks the group), 503 (overloaded), anything else: the
                    // owner could not serve it; load here.
                    GetReply::Failed { .. } => {
                        self.on_fetch_failed(now, &keyspace, flight, id, &call.peer);
                    }
                }
            }
        }
        if keep_alive {
            self.http_conn_free(now, conn);
        } else {
            self.close_now(now, conn);
        }
    }

    // -----------------------------------------------------------------------------------
    // Bytes in

    /// Bytes arrived on an HTTP connection.
    pub(super) fn http_received(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let Some(state) = self.links.get_mut(conn) else { return };
        let pushed = match &mut state.codec {
            Codec::HttpServer(serving) => serving.decoder.push(data),
            Codec::HttpClient(fetching) => fetching.decoder.push(data),
            Codec::Native(_) => return,
        };
        if let Err(error) = pushed {
            self.http_failed(now, conn, error);
            return;
        }
        self.http_read(now, conn);
    }

    /// The peer closed an HTTP connection: an answer that ran until the close is complete.
    pub(super) fn http_closed(&mut self, now: Instant, conn: ConnId) {
        let finished = match self.links.get_mut(conn).map(|state| &mut state.codec) {
            Some(Codec::HttpClient(fetching)) if fetching.call.is_some() => {
                fetching.decoder.finish()
            }
            _ => return,
        };
        if let Ok(Some(response)) = finished {
            let reply = parse_get_response(&response).map_err(|_| HttpError::MalformedHead);
            self.http_response(now, conn, reply.map(|reply| (reply, false)));
        }
    }

    /// Handles what the connection's decoder holds, as far as it can now.
    pub(super) fn http_read(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(state) = self.links.get_mut(conn) else { return };
            match &mut state.codec {
                Codec::HttpClient(fetching) => match fetching.decoder.next_response() {
                    Ok(Some(response)) => {
                        let keep_alive = response.keep_alive;
                        // A body that is not a GetResponse is as malformed as a bad head.
                        let reply = parse_get_response(&response)
                            .map(|reply| (reply, keep_alive))
                            .map_err(|_| HttpError::MalformedHead);
                        self.http_response(now, conn, reply);
                    }
                    Ok(None) => return,
                    Err(error) => {
                        self.http_response(now, conn, Err(error));
                        return;
                    }
                },
                Codec::HttpServer(serving) => {
                    if serving.busy {
                        return;
                    }
                    match serving.decoder.next_request() {
                        Ok(Some(request)) => {
                            serving.busy = true;
                            serving.keep_alive = request.keep_alive;
                            match parse_get_request(&request) {
                                Ok((group, key)) => self.http_serve(now, conn, group, key),
                                Err(error) => self.http_answer(
                                    conn,
                                    error.status(),
                                    error.message().as_bytes(),
                                ),
                            }
                        }
                        Ok(None) => return,
                        Err(error) => {
                            self.http_failed(now, conn, error);
                            return;
                        }
                    }
                }
                Codec::Native(_) => return,
            }
        }
    }

    /// Malformed bytes on an HTTP connection: a server answers with the status first; either
    /// side closes.
    fn http_failed(&mut self, now: Instant, conn: ConnId, error: HttpError) {
        let server =
            matches!(self.links.get(conn).map(|state| &state.codec), Some(Codec::HttpServer(_)));
        if !server {
            self.http_response(now, conn, Err(error));
            return;
        }
        let mut out = Vec::new();
        let message = crate::groupcache::GroupcacheError::Http(error).message();
        encode_error_response(error.status(), message.as_bytes(), false, &mut out);
        if let Some(state) = self.links.get_mut(conn) {
            state.out.extend_from_slice(&out);
            self.links.mark_dirty(conn);
        }
        let reason = ErrorCode::Malformed;
        self.outputs.push_back(Output::Event(Event::ConnectionRefused { conn, reason }));
        self.close_now(now, conn);
    }

    // -----------------------------------------------------------------------------------
    // Server side

    /// A peer's get: loaded here if missing (never forwarded), answered in order.
    fn http_serve(&mut self, now: Instant, conn: ConnId, group: Bytes, key: Bytes) {
        if !self.keyspaces.contains_key(&group) {
            let text = format!("no such group: {}", alloc::string::String::from_utf8_lossy(&group));
            self.http_answer(conn, 404, text.as_bytes());
            return;
        }
        if self.requests.len() >= self.config.max_pending {
            self.http_answer(conn, 503, b"overloaded");
            return;
        }
        let pending = self.new_remote(now, conn, 0, 0);
        self.start_get(now, pending, group, key, true);
    }

    /// Answers the request in progress on a serving connection with a get's outcome.
    pub(super) fn http_reply(&mut self, conn: ConnId, message: &Message) {
        let Message::GetReply(outcome) = message else { return };
        match outcome {
            GetOutcome::Found(found) => {
                let per_minute = found.key_rate.as_per_second() * 60.0;
                let minute_qps = (per_minute > 0.0).then_some(per_minute);
                let keep_alive = self.http_keep_alive(conn);
                if let Some(state) = self.links.get_mut(conn) {
                    encode_value_response(&found.value, minute_qps, keep_alive, &mut state.out);
                }
                self.http_answered(conn);
            }
            GetOutcome::Failed(error) => {
                let error = Error::from_reply_error(error);
                // Go answers every load error 500; an owner that could not serve at all says
                // 503, so that a herdcache requester loads the key itself.
                let status = if error.is_peer_failure() { 503 } else { 500 };
                let text = format!("{error}");
                self.http_answer(conn, status, text.as_bytes());
            }
        }
    }

    /// Whether the request in progress on a serving connection lets it stay open.
    fn http_keep_alive(&self, conn: ConnId) -> bool {
        match self.links.get(conn).map(|state| &state.codec) {
            Some(Codec::HttpServer(serving)) => serving.keep_alive,
            _ => false,
        }
    }

    /// Answers the request in progress with an error status and text.
    fn http_answer(&mut self, conn: ConnId, status: u16, text: &[u8]) {
        let keep_alive = self.http_keep_alive(conn);
        if let Some(state) = self.links.get_mut(conn) {
            encode_error_response(status, text, keep_alive, &mut state.out);
        }
        self.http_answered(conn);
    }

    /// The request in progress was answered: the connection reads its next one (after this
    /// mutation, not inside it) or closes.
    fn http_answered(&mut self, conn: ConnId) {
        let Some(state) = self.links.get_mut(conn) else { return };
        let Codec::HttpServer(serving) = &mut state.codec else { return };
        serving.busy = false;
        let keep_alive = serving.keep_alive;
        self.links.mark_dirty(conn);
        if keep_alive {
            self.http_turns.resume.push(conn);
        } else {
            self.http_turns.closing.push(conn);
        }
    }

    /// After a mutation: serving connections whose answer went out read their next request;
    /// those that asked for it close.
    pub(super) fn http_after_mutation(&mut self, now: Instant) {
        while !self.http_turns.resume.is_empty() || !self.http_turns.closing.is_empty() {
            for conn in core::mem::take(&mut self.http_turns.resume) {
                self.http_read(now, conn);
            }
            for conn in core::mem::take(&mut self.http_turns.closing) {
                self.close_now(now, conn);
            }
        }
    }
}
