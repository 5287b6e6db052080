//! The event loop: one thread, one `mio::Poll`, the front's driver side.
//!
//! It makes no protocol decision. Everything it does is one of: move bytes between a socket
//! and the front, open or close a socket, hand a data-source call or a name lookup to the
//! workers, read the clock, log an event.
//!
//! Each turn: run the command of a handle (stop, kill), feed the workers' results, let the
//! core act on time when its deadline passed, execute the front's outputs (then write every
//! connection that got bytes, once, vectored), expire transport timers, and sleep in
//! `Poll::poll` until the earliest of the core's deadline and the transport's. Readiness is
//! edge-triggered: the listener is accepted from and every readable connection read until
//! `WouldBlock`, at most [`READ_BUDGET`] bytes (or [`ACCEPTS_PER_WAKE`] connections) per turn
//! so that one busy peer cannot starve the others; a connection cut short is read again next
//! turn without sleeping. A write that would block keeps its bytes and registers WRITABLE,
//! which is dropped once they are written.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herdcache_proto::{ConnId, Input, LoadResult, Output};
use herdcache_runtime::SendLimits;
use herdcache_runtime::front::Front;
use mio::event::Event as Readiness;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::{Conn, Phase};
use crate::setup::{log_event, no_source};
use crate::source::SharedSource;
use crate::workers::{Done, Task, Workers};

/// The token of the waker (front wake-ups, workers' results, handles' commands).
pub(crate) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection tokens count up from here, never reused; a connection's [`ConnId`] is its token.
const FIRST_CONN: usize = 2;

/// Readiness events taken per `poll`.
const EVENTS_PER_POLL: usize = 256;
/// The one read buffer of the node, shared by every connection (the core keeps partial frames).
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection per turn.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// Connections accepted per turn.
const ACCEPTS_PER_WAKE: usize = 64;
/// How long a closing connection may take to write what the node transmitted before.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);
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

/// What the node shares between its handles and its event loop: the core's shared state of
/// a node (front, sources, id, address) and the loop's waker and command.
pub(crate) struct Shared {
    pub(crate) node: Arc<herdcache_runtime::Shared<SharedSource>>,
    pub(crate) waker: Arc<Waker>,
    command: AtomicU8,
}

impl Shared {
    pub(crate) fn new(
        node: Arc<herdcache_runtime::Shared<SharedSource>>,
        waker: Arc<Waker>,
    ) -> Self {
        let command = AtomicU8::new(Command::Run as u8);
        Shared { node, waker, command }
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

/// The loop's state: owns every socket. Dropping it closes the front and the worker pool.
pub(crate) struct EventLoop {
    shared: Arc<Shared>,
    front: Front,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    /// Transport deadlines (connect, close grace, idle), checked against the connection's own
    /// state when due: stale entries are skipped or moved.
    timers: BinaryHeap<Reverse<(Instant, Token)>>,
    accept_retry_at: Option<Instant>,
    workers: Workers,
    config: LoopConfig,
    done: Vec<Done>,
    /// Connections that got bytes to write since the last flush.
    to_flush: Vec<Token>,
    /// The listener or connections whose budget ran out before `WouldBlock`.
    unread: Vec<Token>,
    read_buffer: Box<[u8]>,
    drained: bool,
}

fn conn_id(token: Token) -> ConnId {
    ConnId(token.0 as u64)
}

fn feed(front: &Front, input: Input<'_>) {
    if let Err(error) = front.handle_input(input) {
        // Races the core resolves itself: bytes or a close for a connection it already
        // dropped, a load it already timed out.
        tracing::trace!(%error, "input refused");
    }
}

impl EventLoop {
    /// Registers the listener with `poll`, whose waker is [`WAKER`].
    pub(crate) fn new(
        shared: Arc<Shared>,
        poll: Poll,
        mut listener: TcpListener,
        config: LoopConfig,
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::clone(&shared.waker);
        let notify = Arc::new(move || drop(waker.wake()));
        let workers = Workers::new(
            config.workers,
            config.worker_stack_size,
            format!("{}-worker", shared.node.node_id()),
            notify,
        );
        Ok(EventLoop {
            front: shared.node.front().clone(),
            shared,
            poll,
            listener: Some(listener),
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            timers: BinaryHeap::new(),
            accept_retry_at: None,
            workers,
            config,
            done: Vec::new(),
            to_flush: Vec::new(),
            unread: Vec::new(),
            read_buffer: vec![0; READ_CHUNK].into_boxed_slice(),
            drained: false,
        })
    }

    /// Turns until the node drained after a leave, or a handle closes or kills it.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            match self.shared.command() {
                Command::Run => {}
                Command::Close => break,
                Command::Kill => return,
            }
            self.take_done();
            // Expiry is checked against the clock, not only by the poll timeout.
            if self.front.poll_timeout_in() == Some(Duration::ZERO) {
                self.front.handle_timeout();
            }
            self.execute_outputs();
            self.expire(Instant::now());
            self.execute_outputs();
            if self.drained {
                break;
            }
            let timeout = self.poll_timeout();
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(%error, "poll failed: the node stops");
                return;
            }
            for event in &events {
                self.on_event(event);
            }
            for token in std::mem::take(&mut self.unread) {
                self.on_readable(token);
            }
        }
        self.shut_down();
    }

    /// How long `poll` may sleep: until the core's deadline or the transport's, whichever is
    /// first; not at all while a connection has bytes left to read.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.unread.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let transport = self.timers.peek().map(|Reverse((at, _))| *at);
        let transport = [transport, self.accept_retry_at]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now));
        // Read last: it tells the front which deadline the loop sleeps towards.
        let core = self.front.poll_timeout_in();
        match (core, transport) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_event(&mut self, event: &Readiness) {
        match event.token() {
            WAKER => {} // commands, results and actions are looked at every turn
            LISTENER => self.accept(),
            token => {
                let Some(conn) = self.conns.get(&token) else { return };
                if matches!(conn.phase, Phase::Connecting { .. }) {
                    self.on_connect_ready(token);
                    return;
                }
                if event.is_writable() {
                    self.flush(token);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(token);
                }
            }
        }
    }

    /// Feeds the workers' results.
    fn take_done(&mut self) {
        self.workers.take_done(&mut self.done);
        for done in std::mem::take(&mut self.done) {
            match done {
                Done::Loaded { load, result } => feed(&self.front, Input::Loaded { load, result }),
                Done::Resolved { peer, address: Some(address) } => self.connect(peer, address),
                Done::Resolved { peer, address: None } => {
                    tracing::debug!(peer = %String::from_utf8_lossy(&peer), "no address");
                    feed(&self.front, Input::ConnectFailed { peer });
                }
            }
        }
    }

    /// Drains the front's outputs and executes them, then writes every connection that got
    /// bytes; until neither leaves more work (executing one may feed an input that queues
    /// more).
    fn execute_outputs(&mut self) {
        loop {
            let mut executed = false;
            while let Some(output) = self.front.poll_output() {
                self.execute(output);
                executed = true;
            }
            if !executed && self.to_flush.is_empty() {
                return;
            }
            for token in std::mem::take(&mut self.to_flush) {
                self.flush(token);
            }
        }
    }

    fn execute(&mut self, output: Output) {
        match output {
            Output::Load { load, keyspace, key } => {
                let Some(source) = self.shared.node.source(&keyspace) else {
                    feed(&self.front, Input::Loaded { load, result: no_source() });
                    return;
                };
                if let Err(error) = self.workers.submit(Task::Load { load, source, key }) {
                    tracing::error!(%error, "no worker thread for a load");
                    let result = LoadResult::Failed(Bytes::from_static(b"no worker thread"));
                    feed(&self.front, Input::Loaded { load, result });
                }
            }
            Output::Transmit { conn, data } => match usize::try_from(conn.0).map(Token) {
                Ok(token) if self.conns.contains_key(&token) => self.transmit(token, data),
                _ => tracing::trace!(conn = conn.0, "transmit on a closed connection"),
            },
            Output::Connect { peer, address } => {
                let parsed = std::str::from_utf8(&address).ok().and_then(|a| a.parse().ok());
                match parsed {
                    Some(parsed) => self.connect(peer, parsed),
                    None => {
                        let task = Task::Resolve { peer: peer.clone(), address };
                        if let Err(error) = self.workers.submit(task) {
                            tracing::error!(%error, "no worker thread for a name lookup");
                            feed(&self.front, Input::ConnectFailed { peer });
                        }
                    }
                }
            }
            Output::Close { conn } => {
                let Ok(token) = usize::try_from(conn.0).map(Token) else { return };
                let Some(state) = self.conns.get_mut(&token) else { return };
                if matches!(state.phase, Phase::Open) {
                    state.phase = Phase::Closing;
                    state.deadline = Instant::now().checked_add(CLOSE_GRACE);
                    self.arm(token);
                    // Ends it at once when nothing is pending.
                    self.to_flush.push(token);
                }
            }
            Output::Event(event) => {
                self.drained |= log_event(self.shared.node.node_id(), event);
            }
            // The front answers its callers itself and never queues a reply.
            Output::Reply { .. } => {}
        }
    }

    /// Queues `data` on an open or closing connection, under the send-buffer policy: past
    /// the hard cap the connection is dropped at once; above the high-water mark it stops
    /// being read; bytes on an empty outbox start its write-stall window.
    fn transmit(&mut self, token: Token, data: Vec<u8>) {
        let limits = self.config.send_limits;
        let Some(state) = self.conns.get_mut(&token) else { return };
        if !limits.admits(state.outbox.queued(), data.len()) {
            tracing::debug!(
                conn = token.0,
                queued = state.outbox.queued(),
                "send buffer over its hard cap: closed"
            );
            if self.discard(token).is_some() {
                feed(&self.front, Input::Closed { conn: conn_id(token) });
            }
            return;
        }
        // Already queued or waiting for WRITABLE when bytes were pending.
        if state.outbox.is_empty() {
            state.last_write_progress = Instant::now();
            self.to_flush.push(token);
        }
        state.outbox.push(data);
        if matches!(state.phase, Phase::Open)
            && !state.reading_paused
            && limits.pauses_reading(state.outbox.queued())
        {
            // The flush registers the interest without READABLE.
            state.reading_paused = true;
            self.to_flush.push(token);
        }
        self.arm(token);
    }

    /// Makes sure the timer heap holds the connection's next deadline (an entry at or before
    /// it; an earlier entry re-arms it when it fires).
    fn arm(&mut self, token: Token) {
        let (idle, stall) = (self.config.idle_timeout, self.config.send_limits.write_stall);
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let Some(at) = conn.next_deadline(idle, stall) else { return };
        if conn.timer.is_none_or(|armed| at < armed) {
            conn.timer = Some(at);
            self.timers.push(Reverse((at, token)));
        }
    }

    fn next_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    /// Adds a registered connection and arms its first timer.
    fn insert(&mut self, conn: Conn) {
        let token = conn.token;
        self.conns.insert(token, conn);
        self.arm(token);
    }

    /// Starts a non-blocking connect to `peer`, bounded by the core's connect timeout.
    fn connect(&mut self, peer: Bytes, address: SocketAddr) {
        let now = Instant::now();
        let token = self.next_token();
        let connecting = TcpStream::connect(address).and_then(|stream| {
            let phase = Phase::Connecting { peer: peer.clone() };
            Conn::register(self.poll.registry(), stream, token, phase, Interest::WRITABLE, now)
        });
        match connecting {
            Ok(mut conn) => {
                // No deadline when the timeout is too far to count (`Duration::MAX`).
                conn.deadline = now.checked_add(self.config.connect_timeout);
                self.insert(conn);
            }
            Err(error) => {
                tracing::debug!(%address, %error, "connect failed");
                feed(&self.front, Input::ConnectFailed { peer });
            }
        }
    }

    /// A connecting socket became writable (or failed): connected, failed, or not yet.
    fn on_connect_ready(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let outcome = match conn.stream.take_error() {
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => match conn.stream.peer_addr() {
                Ok(_) => Ok(()),
                // A wake-up before the handshake completed.
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => Err(error),
            },
        };
        let Phase::Connecting { peer } = std::mem::replace(&mut conn.phase, Phase::Open) else {
            return;
        };
        let now = Instant::now();
        let opened = outcome.and_then(|()| {
            conn.stream.set_nodelay(true)?;
            conn.deadline = None;
            conn.last_activity = now;
            conn.update_interest(self.poll.registry())
        });
        match opened {
            Ok(()) => {
                self.arm(token);
                feed(&self.front, Input::Connected { conn: conn_id(token), peer });
            }
            Err(error) => {
                tracing::debug!(peer = %String::from_utf8_lossy(&peer), %error, "connect failed");
                self.discard(token);
                feed(&self.front, Input::ConnectFailed { peer });
            }
        }
    }

    /// Accepts until `WouldBlock`, at most [`ACCEPTS_PER_WAKE`] connections.
    fn accept(&mut self) {
        let now = Instant::now();
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = &self.listener else { return };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    self.accept_retry_at = now.checked_add(ACCEPT_RETRY);
                    return;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
            let token = self.next_token();
            let registry = self.poll.registry();
            match Conn::register(registry, stream, token, Phase::Open, Interest::READABLE, now) {
                Ok(conn) => {
                    self.insert(conn);
                    feed(&self.front, Input::Accepted { conn: conn_id(token) });
                }
                Err(error) => tracing::warn!(%error, "cannot register an accepted connection"),
            }
        }
        self.unread.push(LISTENER);
    }

    /// Reads until `WouldBlock`, at most [`READ_BUDGET`] bytes, feeding every chunk to the
    /// front (a closing connection's bytes are dropped).
    fn on_readable(&mut self, token: Token) {
        if token == LISTENER {
            self.accept();
            return;
        }
        let now = Instant::now();
        let mut budget = READ_BUDGET;
        if self.conns.get(&token).is_some_and(|conn| conn.reading_paused) {
            return; // read again when the outbox drains to the low-water mark
        }
        while let Some(conn) = self.conns.get_mut(&token) {
            let closing = matches!(conn.phase, Phase::Closing);
            match conn.stream.read(&mut self.read_buffer) {
                Ok(0) if closing => return, // the peer is done too; the flush goes on
                Ok(0) => return self.lost(token, None),
                Ok(read) => {
                    conn.last_activity = now;
                    if !closing {
                        let data = &self.read_buffer[..read];
                        feed(&self.front, Input::Received { conn: conn_id(token), data });
                    }
                    budget = budget.saturating_sub(read);
                    if budget == 0 {
                        self.unread.push(token);
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.lost(token, Some(error)),
            }
        }
    }

    /// Writes a connection's pending bytes; a closing connection whose bytes are all written
    /// is ended.
    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        if matches!(conn.phase, Phase::Connecting { .. }) {
            return;
        }
        let flushed = conn.flush(Instant::now());
        let queued = conn.outbox.queued();
        if conn.reading_paused && self.config.send_limits.resumes_reading(queued) {
            conn.reading_paused = false;
            // Edge-triggered: what arrived meanwhile may not be announced again.
            self.unread.push(token);
        }
        match flushed {
            Ok(true) if matches!(conn.phase, Phase::Closing) => {
                if let Some(conn) = self.conns.remove(&token) {
                    conn.finish(self.poll.registry(), &mut self.read_buffer);
                }
                feed(&self.front, Input::Closed { conn: conn_id(token) });
            }
            Ok(_) => {
                if let Err(error) = conn.update_interest(self.poll.registry()) {
                    self.lost(token, Some(error));
                }
            }
            Err(error) => self.lost(token, Some(error)),
        }
    }

    /// Fires the transport timers that are due: a connect that took too long fails, a closing
    /// connection that could not write everything in its grace period is cut, an open one
    /// idle for the idle timeout is closed. A timer that is early for its connection's state
    /// is moved to the right time.
    fn expire(&mut self, now: Instant) {
        if self.accept_retry_at.is_some_and(|at| at <= now) {
            self.accept_retry_at = None;
            self.accept();
        }
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&token) else { continue };
            if conn.timer != Some(at) {
                continue; // stale: the connection has an earlier entry
            }
            conn.timer = None;
            let (idle, limits) = (self.config.idle_timeout, self.config.send_limits);
            match conn.next_deadline(idle, limits.write_stall) {
                Some(due) if due <= now => {}
                Some(_later) => {
                    self.arm(token);
                    continue;
                }
                None => continue,
            }
            let Some(conn) = self.discard(token) else { continue };
            match conn.phase {
                Phase::Connecting { peer } => {
                    tracing::debug!(peer = %String::from_utf8_lossy(&peer), "connect timed out");
                    feed(&self.front, Input::ConnectFailed { peer });
                }
                Phase::Open => {
                    let queued = conn.outbox.queued();
                    if limits.stalled(queued, conn.last_write_progress.into(), now.into()) {
                        tracing::debug!(conn = token.0, queued, "closing: writes stalled");
                    } else {
                        tracing::debug!(conn = token.0, "closing idle connection");
                    }
                    feed(&self.front, Input::Closed { conn: conn_id(token) });
                }
                Phase::Closing => feed(&self.front, Input::Closed { conn: conn_id(token) }),
            }
        }
    }

    /// A connection ended by the peer (EOF) or by an IO error: dropped, the core told.
    fn lost(&mut self, token: Token, error: Option<io::Error>) {
        match error {
            Some(error) => tracing::debug!(conn = token.0, %error, "connection failed"),
            None => tracing::trace!(conn = token.0, "connection closed by the peer"),
        }
        if self.discard(token).is_some() {
            feed(&self.front, Input::Closed { conn: conn_id(token) });
        }
    }

    /// Removes a connection and deregisters its socket (closed when the result is dropped).
    fn discard(&mut self, token: Token) -> Option<Conn> {
        let mut conn = self.conns.remove(&token)?;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        Some(conn)
    }

    /// Stops accepting and closes every connection, writing what the node transmitted (within
    /// [`CLOSE_GRACE`], or until a kill); then the front is closed (by `Drop`).
    fn shut_down(mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            match self.conns.get(&token).map(|conn| &conn.phase) {
                Some(Phase::Connecting { .. }) => drop(self.discard(token)),
                Some(_) => self.execute(Output::Close { conn: conn_id(token) }),
                None => {}
            }
        }
        for token in std::mem::take(&mut self.to_flush) {
            self.flush(token);
        }
        let deadline = Instant::now().checked_add(CLOSE_GRACE);
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !self.conns.is_empty() && self.shared.command() != Command::Kill {
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                break;
            }
            let timeout = if self.unread.is_empty() { left } else { Some(Duration::ZERO) };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            for event in &events {
                self.on_event(event);
            }
            for token in std::mem::take(&mut self.unread) {
                self.on_readable(token);
            }
        }
        tracing::debug!(node = self.shared.node.node_id(), "event loop stopped");
    }
}

impl Drop for EventLoop {
    /// However the loop ends (drained, closed, killed, a panic), no caller waits forever.
    fn drop(&mut self) {
        self.front.close();
        self.workers.close();
    }
}
