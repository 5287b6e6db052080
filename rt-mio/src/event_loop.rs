//! The event loop: one thread, one `mio::Poll`, the driver of one node.
//!
//! It makes no protocol decision, and keeps no table of its own but the connects and TLS
//! handshakes in progress: the connection table, executing the front's outputs and the one timer's deadline
//! are the shared [`DriverCore`]'s, whose IO half ([`DriverIo`]) this file implements with
//! mio. Everything it does is one of: move bytes between a socket and the core, open or
//! close a socket, hand a data-source call or a name lookup to the workers, read the clock,
//! log an event.
//!
//! Each turn: run the command of a handle (close, kill), feed the workers' results, expire
//! transport timers, let the core act (an overdue deadline, then every output; then write
//! every connection that got bytes, once, vectored; until nothing is left), and sleep in
//! `Poll::poll` until the earliest of the core's deadline and the transport's. Readiness is
//! edge-triggered: the listener is accepted from and every readable connection read until
//! `WouldBlock`, at most [`READ_BUDGET`] bytes (or [`ACCEPTS_PER_WAKE`] connections) per turn
//! so that one busy peer cannot starve the others; a connection cut short is read again next
//! turn without sleeping. A write that would block keeps its bytes and registers WRITABLE,
//! which is dropped once they are written.
//!
//! Before the core hears of a connection: an accepted one takes a place under the node's
//! inbound cap ([`TransportGuard::admit`]; over it, it is closed at once), and with TLS every
//! new connection runs its handshake first, the shared runtime's [`TlsSession`] fed from the
//! socket's readiness under a token of its own, bounded by the handshake timeout (a transport
//! timer) and the session's byte budget; the core is then told with the peer's identity.
//! Afterwards what is read is decrypted before the core sees it and what the core transmits
//! is encrypted before the outbox takes it (the outbox counts ciphertext); a close queues
//! close_notify.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herdcache_proto::{ConnId, LoadId, LoadResult, PeerIdentity};
use herdcache_runtime::tls::{SessionError, TlsConfig, TlsSession};
use herdcache_runtime::{
    CLOSE_GRACE, DriverCore, DriverIo, InboundSlot, READ_CHUNK, SendLimits, Shared, SharedSource,
    TransportGuard, Turn,
};
use mio::event::Event as Readiness;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::conn::{Conn, Connecting, HandshakeStep, Handshaking, Phase, token_of};
use crate::workers::{Done, Task, Workers};

/// The token of the waker (front wake-ups, workers' results, handles' commands).
pub(crate) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection tokens count up from here (a connection's token is this plus its id).
const FIRST_CONN: usize = 2;
/// Tokens of connects in progress count up from here, apart from connections'.
const FIRST_CONNECTING: usize = 1 << (usize::BITS - 1);

/// Readiness events taken per `poll`.
const EVENTS_PER_POLL: usize = 256;
/// Bytes read from one connection per turn.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// Connections accepted per turn.
const ACCEPTS_PER_WAKE: usize = 64;
/// How long the listener rests after an accept error (out of file descriptors and the like).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What the handles ask of the loop, in increasing force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Command {
    Run = 0,
    /// Close every connection (flushing, bounded) and exit, drained or not.
    Close = 1,
    /// Exit at once, dropping every socket, as a crash would.
    Kill = 2,
}

/// How a node's control reaches its event loop: the loop's waker and the command.
pub(crate) struct Remote {
    waker: Arc<Waker>,
    command: AtomicU8,
}

impl Remote {
    pub(crate) fn new(waker: Arc<Waker>) -> Self {
        Remote { waker, command: AtomicU8::new(Command::Run as u8) }
    }

    /// Asks the loop for `command` (a weaker one than already asked is ignored) and wakes it.
    pub(crate) fn send(&self, command: Command) {
        self.command.fetch_max(command as u8, Ordering::AcqRel);
        if let Err(error) = self.waker.wake() {
            tracing::error!(%error, "cannot wake the event loop");
        }
    }

    fn command(&self) -> Command {
        match self.command.load(Ordering::Acquire) {
            0 => Command::Run,
            1 => Command::Close,
            _ => Command::Kill,
        }
    }
}

/// Transport settings of the loop.
pub(crate) struct LoopConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) send_limits: SendLimits,
    pub(crate) workers: usize,
    pub(crate) worker_stack_size: usize,
}

/// The loop: the shared bookkeeping and its mio half. Dropping it closes the front (the
/// core's `Drop`) and the worker pool, and drops every socket.
pub(crate) struct EventLoop {
    core: DriverCore<Conn>,
    io: MioIo,
    remote: Arc<Remote>,
    /// When the core's timer is due, as [`DriverCore::turn`] last set it.
    core_deadline: Option<Instant>,
}

/// The mio half of the driver: the poller, the listener, connects in progress, transport
/// timers and the workers.
struct MioIo {
    poll: Poll,
    listener: Option<TcpListener>,
    connecting: HashMap<Token, Connecting>,
    /// Connections in their TLS handshake (tokens from the connects' range).
    handshaking: HashMap<Token, Handshaking>,
    next_connecting: usize,
    /// The inbound cap, TLS, their counters.
    transport: Arc<TransportGuard>,
    /// Decrypted bytes of one read, before the core takes them.
    plaintext: BytesMut,
    /// Transport deadlines (connect, close grace, idle, write stall) by token, checked
    /// against the connection's own state when due: stale entries are skipped or moved.
    timers: BinaryHeap<Reverse<(Instant, Token)>>,
    accept_retry_at: Option<Instant>,
    workers: Workers,
    config: LoopConfig,
    /// Results to feed the core: the workers' and the loop's own (a connect that failed at
    /// once, a load no worker could take).
    done: Vec<Done>,
    /// Connections that got bytes to write (or a close) since the last flush.
    to_flush: Vec<ConnId>,
    /// The listener or connections whose budget ran out before `WouldBlock`.
    unread: Vec<Token>,
    /// The one read buffer of the node, shared by every connection (the core keeps partial
    /// frames).
    read_buffer: Box<[u8]>,
}

fn id_of(token: Token) -> ConnId {
    ConnId((token.0 - FIRST_CONN) as u64)
}

fn token(id: ConnId) -> Token {
    token_of(id, FIRST_CONN)
}

impl EventLoop {
    /// Registers the listener with `poll`, whose waker is [`WAKER`].
    pub(crate) fn new(
        shared: Arc<Shared>,
        remote: Arc<Remote>,
        poll: Poll,
        mut listener: TcpListener,
        config: LoopConfig,
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::clone(&remote.waker);
        let notify = Arc::new(move || drop(waker.wake()));
        let workers = Workers::new(
            config.workers,
            config.worker_stack_size,
            format!("{}-worker", shared.node_id()),
            notify,
        );
        let io = MioIo {
            poll,
            listener: Some(listener),
            connecting: HashMap::new(),
            handshaking: HashMap::new(),
            next_connecting: FIRST_CONNECTING,
            transport: Arc::clone(shared.transport()),
            plaintext: BytesMut::new(),
            timers: BinaryHeap::new(),
            accept_retry_at: None,
            workers,
            config,
            done: Vec::new(),
            to_flush: Vec::new(),
            unread: Vec::new(),
            read_buffer: vec![0; READ_CHUNK].into_boxed_slice(),
        };
        Ok(EventLoop { core: DriverCore::new(shared), io, remote, core_deadline: None })
    }

    /// Turns until the node drained after a leave, or a handle closes or kills it.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            match self.remote.command() {
                Command::Run => {}
                Command::Close => break,
                Command::Kill => return,
            }
            let now = Instant::now();
            if self.core_deadline.is_some_and(|at| at <= now) {
                self.core_deadline = None;
                self.core.timer_fired();
            }
            self.feed_done();
            self.expire(now);
            if self.act() == Turn::Drained {
                break;
            }
            let timeout = self.poll_timeout();
            if let Err(error) = self.io.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(%error, "poll failed: the node stops");
                return;
            }
            for event in &events {
                self.on_event(event);
            }
            for token in std::mem::take(&mut self.io.unread) {
                self.on_readable(token);
            }
        }
        self.shut_down();
    }

    /// Lets the core act until nothing is left: its turn (an overdue deadline, every output),
    /// then the writes the outputs asked for, which may feed it more (a connection ended).
    /// Keeps the core's deadline for the poll timeout.
    fn act(&mut self) -> Turn {
        loop {
            let turn = self.core.turn(&mut self.io);
            if let Turn::Wait { rearm, armed } = turn {
                if let Some(wait) = rearm {
                    self.core_deadline = Instant::now().checked_add(wait);
                }
                if !armed {
                    self.core_deadline = None;
                }
            }
            if turn == Turn::Drained || self.io.to_flush.is_empty() {
                return turn;
            }
            for id in std::mem::take(&mut self.io.to_flush) {
                self.flush(id);
            }
        }
    }

    /// How long `poll` may sleep: until the core's deadline or the transport's, whichever is
    /// first; not at all while a connection has bytes left to read or results wait.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.io.unread.is_empty() || !self.io.done.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let transport = self.io.timers.peek().map(|Reverse((at, _))| *at);
        [transport, self.io.accept_retry_at, self.core_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn on_event(&mut self, event: &Readiness) {
        match event.token() {
            WAKER => {} // commands, results and outputs are looked at every turn
            LISTENER => self.accept(),
            token if self.io.handshaking.contains_key(&token) => self.advance_handshake(token),
            token if token.0 >= FIRST_CONNECTING => self.on_connect_ready(token),
            token => {
                let id = id_of(token);
                if event.is_writable() {
                    self.flush(id);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(token);
                }
            }
        }
    }

    /// Feeds the workers' results and the loop's own.
    fn feed_done(&mut self) {
        self.io.workers.take_done(&mut self.io.done);
        for done in std::mem::take(&mut self.io.done) {
            match done {
                Done::Loaded { load, result } => self.core.loaded(load, result),
                Done::Resolved { peer, address: Some(address) } => {
                    self.io.connect_to(peer, address)
                }
                Done::Resolved { peer, address: None } => {
                    tracing::debug!(peer = %String::from_utf8_lossy(&peer), "no address");
                    self.core.connect_failed(peer);
                }
                Done::ConnectFailed { peer } => self.core.connect_failed(peer),
            }
        }
    }

    /// Makes `stream` connection `id` of the core (accepted, or dialled to `peer`), or
    /// starts its TLS handshake first when TLS is on.
    fn open(
        &mut self,
        peer: Option<Bytes>,
        stream: TcpStream,
        registered_as: Option<Token>,
        slot: Option<InboundSlot>,
    ) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        match self.io.transport.tls().cloned() {
            Some(tls) => self.start_handshake(&tls, peer, stream, registered_as, slot),
            None => {
                self.adopt(peer, None, (stream, None, slot), registered_as.is_some());
            }
        }
    }

    /// Hands a connection (plain, or after its handshake) to the core.
    fn adopt(
        &mut self,
        peer: Option<Bytes>,
        identity: Option<PeerIdentity>,
        socket: (TcpStream, Option<Box<TlsSession>>, Option<InboundSlot>),
        registered: bool,
    ) -> ConnId {
        let (registry, now) = (self.io.poll.registry(), Instant::now());
        let id = self.core.open(peer, identity, |id| {
            Conn::adopt(registry, socket, id, token(id), registered, now)
        });
        match self.core.conn_mut(id) {
            Some(conn) if conn.is_registered() => self.io.arm(conn),
            Some(_) => self.core.reader_done(id),
            None => {}
        }
        id
    }

    /// Starts the TLS handshake of a new connection, bounded by the handshake timeout (a
    /// transport timer under the token it is registered with).
    fn start_handshake(
        &mut self,
        tls: &TlsConfig,
        peer: Option<Bytes>,
        mut stream: TcpStream,
        registered_as: Option<Token>,
        slot: Option<InboundSlot>,
    ) {
        let session = match &peer {
            Some(peer) => TlsSession::connect(tls, peer),
            None => TlsSession::accept(tls),
        };
        let token = registered_as.unwrap_or_else(|| {
            let token = Token(self.io.next_connecting);
            self.io.next_connecting += 1;
            token
        });
        let registry = self.io.poll.registry();
        let registered = match registered_as {
            Some(_) => registry.reregister(&mut stream, token, Interest::READABLE),
            None => registry.register(&mut stream, token, Interest::READABLE),
        };
        let session = match (session, registered) {
            (Ok(session), Ok(())) => session,
            (Err(error), _) => return self.handshake_failed(peer, &mut stream, &error),
            (_, Err(error)) => {
                return self.handshake_failed(peer, &mut stream, &SessionError::Io(error));
            }
        };
        let deadline = Instant::now().checked_add(tls.handshake_timeout_value());
        if let Some(at) = deadline {
            self.io.timers.push(Reverse((at, token)));
        }
        let handshaking = Handshaking::new(stream, session, peer, slot, deadline);
        self.io.handshaking.insert(token, handshaking);
        // The client speaks first; a server may have bytes waiting already.
        self.advance_handshake(token);
    }

    /// Moves a handshake on after readiness: done (the core is told), waiting, or failed.
    fn advance_handshake(&mut self, token: Token) {
        let Some(handshaking) = self.io.handshaking.get_mut(&token) else { return };
        match handshaking.advance(&mut self.io.read_buffer) {
            HandshakeStep::Waiting(interest) => {
                let stream = &mut handshaking.stream;
                if let Err(error) = self.io.poll.registry().reregister(stream, token, interest) {
                    self.fail_handshake(token, SessionError::Io(error));
                }
            }
            HandshakeStep::Failed(error) => self.fail_handshake(token, error),
            HandshakeStep::Done => {
                let Some(done) = self.io.handshaking.remove(&token) else { return };
                let identity = match done.session.peer_identity() {
                    Ok(identity) => identity,
                    Err(error) => {
                        let mut stream = done.stream;
                        return self.handshake_failed(done.peer, &mut stream, &error);
                    }
                };
                let (peer, early) = (done.peer, done.early);
                let socket = (done.stream, Some(Box::new(done.session)), done.slot);
                let id = self.adopt(peer, Some(identity), socket, true);
                if !early.is_empty() {
                    self.core.received(id, &early);
                }
                // Edge-triggered: bytes that came after the handshake's are not announced
                // again.
                self.io.unread.push(token_of(id, FIRST_CONN));
            }
        }
    }

    /// A handshake failed or timed out: reported, the socket closed, a dial failed.
    fn fail_handshake(&mut self, token: Token, error: SessionError) {
        if let Some(mut handshaking) = self.io.handshaking.remove(&token) {
            self.handshake_failed(handshaking.peer.take(), &mut handshaking.stream, &error);
        }
    }

    fn handshake_failed(
        &mut self,
        peer: Option<Bytes>,
        stream: &mut TcpStream,
        error: &SessionError,
    ) {
        let _ = self.io.poll.registry().deregister(stream);
        match peer {
            Some(peer) => {
                self.io.transport.handshake_failed(&String::from_utf8_lossy(&peer), error);
                self.core.connect_failed(peer);
            }
            None => self.io.transport.handshake_failed(&"an inbound peer", error),
        }
    }

    /// A connecting socket became writable (or failed): connected, failed, or not yet.
    fn on_connect_ready(&mut self, token: Token) {
        let Some(connecting) = self.io.connecting.get_mut(&token) else { return };
        let outcome = match connecting.stream.take_error() {
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => match connecting.stream.peer_addr() {
                Ok(_) => Ok(()),
                // A wake-up before the handshake completed.
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => Err(error),
            },
        };
        let Some(mut connecting) = self.io.connecting.remove(&token) else { return };
        match outcome {
            Ok(()) => self.open(Some(connecting.peer), connecting.stream, Some(token), None),
            Err(error) => {
                let peer = connecting.peer;
                tracing::debug!(peer = %String::from_utf8_lossy(&peer), %error, "connect failed");
                let _ = self.io.poll.registry().deregister(&mut connecting.stream);
                self.core.connect_failed(peer);
            }
        }
    }

    /// Accepts until `WouldBlock`, at most [`ACCEPTS_PER_WAKE`] connections.
    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = &self.io.listener else { return };
            match listener.accept() {
                Ok((stream, _)) => {
                    // Over the cap: closed at once (dropped), counted and logged.
                    if let Some(slot) = self.io.transport.admit() {
                        self.open(None, stream, None, Some(slot));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    self.io.accept_retry_at = Instant::now().checked_add(ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.io.unread.push(LISTENER);
    }

    /// Reads until `WouldBlock`, at most [`READ_BUDGET`] bytes, feeding every chunk to the
    /// core (a closing connection's bytes are dropped).
    fn on_readable(&mut self, token: Token) {
        if token == LISTENER {
            self.accept();
            return;
        }
        let id = id_of(token);
        let now = Instant::now();
        let mut budget = READ_BUDGET;
        while let Some(conn) = self.core.conn_mut(id) {
            if conn.reading_paused {
                return; // read again when the outbox drains to the low-water mark
            }
            let closing = conn.phase == Phase::Closing;
            match conn.stream.read(&mut self.io.read_buffer) {
                Ok(0) if closing => return, // the peer is done too; the flush goes on
                Ok(0) => return self.lost(id, None),
                Ok(read) => {
                    conn.last_activity = now;
                    let bytes = &self.io.read_buffer[..read];
                    match &mut conn.tls {
                        _ if closing => {}
                        None => self.core.received(id, bytes),
                        Some(session) => {
                            let received = session.receive(bytes, &mut self.io.plaintext);
                            let peer_closed = session.peer_closed();
                            let mut own = Vec::new();
                            session.pending_ciphertext(&mut own);
                            if conn.queue_own(own, now) {
                                self.io.to_flush.push(id);
                            }
                            if !self.io.plaintext.is_empty() {
                                self.core.received(id, &self.io.plaintext);
                                self.io.plaintext.clear();
                            }
                            if let Err(error) = received {
                                return self.lost(id, Some(io::Error::other(error)));
                            }
                            if peer_closed {
                                return self.lost(id, None);
                            }
                        }
                    }
                    budget = budget.saturating_sub(read);
                    if budget == 0 {
                        self.io.unread.push(token);
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.lost(id, Some(error)),
            }
        }
    }

    /// Writes a connection's pending bytes; a closing connection whose bytes are all written
    /// is ended.
    fn flush(&mut self, id: ConnId) {
        let Some(conn) = self.core.conn_mut(id) else { return };
        let flushed = conn.flush(Instant::now());
        let limits = self.io.config.send_limits;
        if conn.reading_paused && limits.resumes_reading(conn.outbox.queued()) {
            conn.reading_paused = false;
            // Edge-triggered: what arrived meanwhile may not be announced again.
            self.io.unread.push(token(id));
        }
        let registry = self.io.poll.registry();
        match flushed {
            Ok(true) if conn.phase == Phase::Closing => {
                conn.finish(registry, &mut self.io.read_buffer);
                self.core.writer_done(id);
            }
            Ok(_) => {
                if let Err(error) = conn.update_interest(registry, token(id)) {
                    self.lost(id, Some(error));
                }
            }
            Err(error) => self.lost(id, Some(error)),
        }
    }

    /// Fires the transport timers that are due: a connect that took too long fails, a closing
    /// connection that could not write everything in its grace period is cut, an open one
    /// idle for the idle timeout, or whose queued bytes saw no write progress for the
    /// write-stall timeout, is closed. A timer that is early for its connection's state is
    /// moved to the right time.
    fn expire(&mut self, now: Instant) {
        if self.io.accept_retry_at.is_some_and(|at| at <= now) {
            self.io.accept_retry_at = None;
            self.accept();
        }
        let (idle, limits) = (self.io.config.idle_timeout, self.io.config.send_limits);
        while let Some(&Reverse((at, token))) = self.io.timers.peek() {
            if at > now {
                return;
            }
            self.io.timers.pop();
            if let Some(handshaking) = self.io.handshaking.get(&token) {
                if handshaking.deadline.is_some_and(|due| due <= now) {
                    self.fail_handshake(token, SessionError::HandshakeTimeout);
                }
                continue;
            }
            if token.0 >= FIRST_CONNECTING {
                let due = self.io.connecting.get(&token).and_then(|c| c.deadline);
                if due.is_some_and(|due| due <= now) {
                    if let Some(mut connecting) = self.io.connecting.remove(&token) {
                        let peer = connecting.peer;
                        tracing::debug!(peer = %String::from_utf8_lossy(&peer), "connect timed out");
                        let _ = self.io.poll.registry().deregister(&mut connecting.stream);
                        self.core.connect_failed(peer);
                    }
                }
                continue;
            }
            let id = id_of(token);
            let Some(conn) = self.core.conn_mut(id) else { continue };
            if conn.timer != Some(at) {
                continue; // stale: the connection has an earlier entry
            }
            conn.timer = None;
            match conn.next_deadline(idle, limits.write_stall) {
                Some(due) if due <= now => {}
                Some(_later) => {
                    self.io.arm(conn);
                    continue;
                }
                None => continue,
            }
            conn.deregister(self.io.poll.registry());
            match conn.phase {
                Phase::Open => {
                    let queued = conn.outbox.queued();
                    if limits.stalled(queued, conn.last_write_progress.into(), now.into()) {
                        tracing::debug!(conn = id.0, queued, "closing: writes stalled");
                    } else {
                        tracing::debug!(conn = id.0, "closing idle connection");
                    }
                    self.core.reader_done(id);
                }
                Phase::Closing => self.core.close_grace_over(id),
            }
        }
    }

    /// A connection ended by the peer (EOF) or by an IO error: dropped, the core told.
    fn lost(&mut self, id: ConnId, error: Option<io::Error>) {
        match error {
            Some(error) => tracing::debug!(conn = id.0, %error, "connection failed"),
            None => tracing::trace!(conn = id.0, "connection closed by the peer"),
        }
        let Some(conn) = self.core.conn_mut(id) else { return };
        conn.deregister(self.io.poll.registry());
        // Over both ways, whether the node had closed it or not.
        self.core.writer_done(id);
    }

    /// Stops accepting and closes every connection, writing what the node transmitted (within
    /// [`CLOSE_GRACE`], or until a kill); then fails every waiting caller.
    fn shut_down(mut self) {
        if let Some(mut listener) = self.io.listener.take() {
            let _ = self.io.poll.registry().deregister(&mut listener);
        }
        self.io.connecting.clear();
        self.io.handshaking.clear();
        self.core.close_all(&mut self.io);
        for id in std::mem::take(&mut self.io.to_flush) {
            self.flush(id);
        }
        let deadline = Instant::now().checked_add(CLOSE_GRACE);
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !self.core.flushed(None) && self.remote.command() != Command::Kill {
            let now = Instant::now();
            let left = deadline.map(|at| at.saturating_duration_since(now));
            if left == Some(Duration::ZERO) {
                break;
            }
            self.expire(now);
            let timeout = if self.io.unread.is_empty() { left } else { Some(Duration::ZERO) };
            if let Err(error) = self.io.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            for event in &events {
                self.on_event(event);
            }
            for token in std::mem::take(&mut self.io.unread) {
                self.on_readable(token);
            }
        }
        self.core.close_front();
        tracing::debug!(node = self.core.shared().node_id(), "event loop stopped");
    }
}

impl MioIo {
    fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Makes sure the timer heap holds the connection's next deadline (an entry at or before
    /// it; an earlier entry re-arms it when it fires).
    fn arm(&mut self, conn: &mut Conn) {
        let (idle, stall) = (self.config.idle_timeout, self.config.send_limits.write_stall);
        let Some(at) = conn.next_deadline(idle, stall) else { return };
        if conn.timer.is_none_or(|armed| at < armed) {
            conn.timer = Some(at);
            self.timers.push(Reverse((at, token(conn.id))));
        }
    }

    /// Starts a non-blocking connect to `peer`, bounded by the core's connect timeout.
    fn connect_to(&mut self, peer: Bytes, address: SocketAddr) {
        let token = Token(self.next_connecting);
        self.next_connecting += 1;
        let connecting = TcpStream::connect(address).and_then(|mut stream| {
            self.registry().register(&mut stream, token, Interest::WRITABLE)?;
            Ok(stream)
        });
        match connecting {
            Ok(stream) => {
                // No deadline when the timeout is too far to count (`Duration::MAX`).
                let deadline = Instant::now().checked_add(self.config.connect_timeout);
                if let Some(at) = deadline {
                    self.timers.push(Reverse((at, token)));
                }
                self.connecting.insert(token, Connecting { stream, peer, deadline });
            }
            Err(error) => {
                tracing::debug!(%address, %error, "connect failed");
                self.done.push(Done::ConnectFailed { peer });
            }
        }
    }
}

impl DriverIo for MioIo {
    type Conn = Conn;

    /// Queues the call on a worker.
    fn load(&mut self, load: LoadId, source: SharedSource, key: Bytes) {
        if let Err(error) = self.workers.submit(Task::Load { load, source, key }) {
            tracing::error!(%error, "no worker thread for a load");
            let result = LoadResult::Failed(Bytes::from_static(b"no worker thread"));
            self.done.push(Done::Loaded { load, result });
        }
    }

    /// An IP address is dialled at once; a host name is looked up on a worker first.
    fn connect(&mut self, peer: Bytes, address: Bytes) {
        let parsed = std::str::from_utf8(&address).ok().and_then(|a| a.parse().ok());
        match parsed {
            Some(parsed) => self.connect_to(peer, parsed),
            None => {
                let task = Task::Resolve { peer: peer.clone(), address };
                if let Err(error) = self.workers.submit(task) {
                    tracing::error!(%error, "no worker thread for a name lookup");
                    self.done.push(Done::ConnectFailed { peer });
                }
            }
        }
    }

    /// Appends to the connection's outbox, written after the outputs of this turn, under the
    /// send-buffer policy: past the hard cap the connection is dropped; above the high-water
    /// mark it stops being read; bytes on an empty outbox start its write-stall window.
    fn transmit(&mut self, conn: &mut Conn, data: Vec<u8>) -> bool {
        let limits = self.config.send_limits;
        if !limits.admits(conn.outbox.queued(), data.len()) {
            tracing::debug!(
                conn = conn.id.0,
                queued = conn.outbox.queued(),
                "send buffer over its hard cap: closed"
            );
            conn.deregister(self.registry());
            return false;
        }
        let data = match &mut conn.tls {
            None => data,
            Some(session) => {
                let mut ciphertext = Vec::with_capacity(data.len() + 64);
                session.send(&data, &mut ciphertext);
                ciphertext
            }
        };
        // Already queued for a flush, or waiting for WRITABLE, when bytes were pending.
        if conn.outbox.is_empty() {
            conn.last_write_progress = Instant::now();
            self.to_flush.push(conn.id);
        }
        conn.outbox.push(data);
        if conn.phase == Phase::Open
            && !conn.reading_paused
            && limits.pauses_reading(conn.outbox.queued())
        {
            // The flush registers the interest without READABLE.
            conn.reading_paused = true;
            self.to_flush.push(conn.id);
        }
        self.arm(conn);
        true
    }

    /// Stops reading and writes what was transmitted before, then ends the connection (its
    /// flush reports [`DriverCore::writer_done`]); with `grace`, within [`CLOSE_GRACE`].
    fn close(&mut self, _id: ConnId, conn: &mut Conn, grace: bool) {
        if let Some(session) = &mut conn.tls {
            let mut close_notify = Vec::new();
            session.close(&mut close_notify);
            let _ = conn.queue_own(close_notify, Instant::now());
        }
        conn.phase = Phase::Closing;
        conn.reading_paused = false;
        conn.deadline = if grace { Instant::now().checked_add(CLOSE_GRACE) } else { None };
        self.arm(conn);
        // Ends it at once when nothing is pending.
        self.to_flush.push(conn.id);
    }
}

impl Drop for EventLoop {
    /// However the loop ends (drained, closed, killed, a panic), the workers stop taking
    /// tasks; the core's own `Drop` fails every waiting caller.
    fn drop(&mut self) {
        self.io.workers.close();
    }
}
