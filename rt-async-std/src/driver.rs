//! The driver task: executes the front's actions, feeds it IO events, keeps its one timer.
//!
//! It makes no protocol decision. Everything it does is one of: move bytes between a socket
//! and the front, open or close a socket, call a data source, read the clock, log an event.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_executor::{Executor, Task};
use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use futures_lite::FutureExt;
use herdcache_proto::front::{Action, Front};
use herdcache_proto::runtime::{Activity, CLOSE_GRACE, Shared};
use herdcache_proto::{ConnId, Event as NodeEvent, Input, LoadId, LoadResult};

use crate::conn;

/// Capacity of the channel from the node's tasks to the driver. When it is full, readers
/// wait, and TCP pushes back on the peers.
const EVENT_QUEUE: usize = 1024;
/// Events handled per wake-up before the driver looks at its other sources again.
const EVENTS_PER_WAKE: usize = 64;

/// What the node's tasks (IO, dials, data-source calls, grace timers) tell the driver.
pub(crate) enum Event {
    /// The listener accepted a connection.
    Accepted { stream: TcpStream },
    /// Bytes arrived.
    Received { conn: ConnId, data: Bytes },
    /// The reader stopped: EOF, a read error, or the idle timeout.
    ReaderDone { conn: ConnId },
    /// The writer stopped: flushed and shut down after a close, or a write error.
    WriterDone { conn: ConnId },
    /// A dial succeeded.
    Connected { peer: Bytes, stream: TcpStream },
    /// A dial failed or timed out.
    ConnectFailed { peer: Bytes },
    /// A data-source call ended.
    Loaded { load: LoadId, result: LoadResult },
    /// A closing connection's grace period ended: if its writer is still flushing (the peer
    /// does not read), it is cut.
    CloseGraceOver { conn: ConnId },
}

/// How the front and the handles reach the driver.
pub(crate) struct Signals {
    /// The front's wake-ups (capacity 1: a wake-up pending is enough).
    pub(crate) wake: Receiver<()>,
    /// Told to end now, after a graceful stop's deadline.
    pub(crate) stop_now: Receiver<()>,
}

/// A connection's tasks; dropping a task cancels it. `queue` is `None` once the node closed
/// it: the writer is flushing.
struct Conn {
    queue: Option<Sender<Vec<u8>>>,
    reader: Option<Task<()>>,
    /// Held only to be cancelled with the connection.
    _writer: Task<()>,
}

/// Transport settings of the driver.
pub(crate) struct DriverConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
}

/// The driver: owns every socket and task of the node. Dropping it cancels them all.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    front: Front,
    config: DriverConfig,
    /// The node's executor. Weak: the executor's thread owns it, so that ending that thread
    /// drops every task still on it, this driver included.
    executor: Weak<Executor<'static>>,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    accept: Option<Task<()>>,
    actions: Vec<Action>,
    drained: bool,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        executor: &Arc<Executor<'static>>,
        listener: TcpListener,
        config: DriverConfig,
    ) -> Self {
        let (events_tx, events_rx) = async_channel::bounded(EVENT_QUEUE);
        let accept = executor.spawn(accept_loop(listener, events_tx.clone()));
        Driver {
            front: shared.front().clone(),
            shared,
            config,
            executor: Arc::downgrade(executor),
            events_tx,
            events_rx,
            conns: HashMap::new(),
            next_conn: 0,
            accept: Some(accept),
            actions: Vec::new(),
            drained: false,
        }
    }

    /// The drive loop: execute actions, re-arm the timer, wait for a wake-up, an event or the
    /// timer; repeat until the node drained after a leave or is told to stop. Then closes
    /// every connection and the front.
    pub(crate) async fn run(mut self, signals: Signals) {
        let mut timer = Timer::never();
        // The core deadline the timer is set to; `None` after it fired.
        let mut armed_at = None;
        loop {
            // Expiry is checked against the clock, not only by the timer future.
            if self.front.poll_timeout_in() == Some(Duration::ZERO) {
                self.front.handle_timeout();
            }
            self.execute_actions();
            if self.drained {
                break;
            }
            // Re-armed only when the deadline moved.
            let next = self.front.poll_timeout();
            if let Some(at) = next.filter(|at| armed_at != Some(*at)) {
                let wait = at.saturating_duration_since(self.front.now());
                timer.set_at(Instant::now().checked_add(wait).unwrap_or_else(Instant::now));
            }
            armed_at = next;
            let woke = async { Woke::Event(self.events_rx.recv().await.ok()) }
                .or(async { Woke::Front(signals.wake.recv().await.is_ok()) })
                .or(async {
                    if armed_at.is_none() {
                        std::future::pending::<()>().await;
                    }
                    (&mut timer).await;
                    Woke::Timer
                })
                .or(async {
                    let _ = signals.stop_now.recv().await;
                    Woke::Stop
                })
                .await;
            match woke {
                Woke::Event(Some(event)) => {
                    self.on_event(event);
                    for _ in 1..EVENTS_PER_WAKE {
                        let Ok(event) = self.events_rx.try_recv() else { break };
                        self.execute_actions();
                        self.on_event(event);
                    }
                }
                Woke::Front(true) => {}
                Woke::Timer => {
                    armed_at = None;
                    self.front.handle_timeout();
                }
                // The driver holds a sender of the events, and the handles the senders of
                // the signals until they stop it.
                Woke::Event(None) | Woke::Front(false) | Woke::Stop => break,
            }
        }
        self.shut_down().await;
    }

    /// Drains the front's actions and executes them until none are left (executing one may
    /// feed an input, which may queue more).
    fn execute_actions(&mut self) {
        loop {
            self.front.drain_actions(&mut self.actions);
            if self.actions.is_empty() {
                return;
            }
            let mut actions = std::mem::take(&mut self.actions);
            for action in actions.drain(..) {
                self.execute(action);
            }
            // Keep the allocation for the next drain.
            self.actions = actions;
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::Load { load, keyspace, key } => match self.shared.source(&keyspace) {
                Some(source) => self
                    .detach(async move { Event::Loaded { load, result: source.load(key).await } }),
                None => {
                    let result = LoadResult::Failed(Bytes::from_static(b"no data source"));
                    self.feed(Input::Loaded { load, result });
                }
            },
            Action::Transmit { conn, data } => {
                match self.conns.get(&conn).and_then(|c| c.queue.as_ref()) {
                    // A send fails only when the writer already stopped; its WriterDone is on
                    // the way and closes the connection.
                    Some(queue) => drop(queue.try_send(data)),
                    None => tracing::trace!(conn = conn.0, "transmit on a closed connection"),
                }
            }
            Action::Connect { peer } => {
                let connect_timeout = self.config.connect_timeout;
                self.detach(async move {
                    let Ok(address) = std::str::from_utf8(&peer) else {
                        return Event::ConnectFailed { peer };
                    };
                    let dial = async { Some(TcpStream::connect(address).await) };
                    let give_up = async {
                        Timer::after(connect_timeout).await;
                        None
                    };
                    match dial.or(give_up).await {
                        Some(Ok(stream)) => Event::Connected { peer, stream },
                        Some(Err(error)) => {
                            tracing::debug!(peer = address, %error, "connect failed");
                            Event::ConnectFailed { peer }
                        }
                        None => Event::ConnectFailed { peer },
                    }
                });
            }
            Action::Close { conn } => {
                if let Some(state) = self.conns.get_mut(&conn) {
                    // Dropping the queue lets the writer flush, shut down and report back;
                    // `Closed` is fed then, or when the grace period ends, whichever is first.
                    state.queue = None;
                    state.reader = None;
                    self.detach(async move {
                        Timer::after(CLOSE_GRACE).await;
                        Event::CloseGraceOver { conn }
                    });
                }
            }
            Action::Event(event) => self.log_event(event),
        }
    }

    fn log_event(&mut self, event: NodeEvent) {
        let node = self.shared.node_id();
        match event {
            NodeEvent::Drained => {
                tracing::info!(node, "drained");
                self.drained = true;
            }
            NodeEvent::ConnectionRefused { conn, reason } => {
                tracing::warn!(node, conn = conn.0, ?reason, "connection refused");
            }
            other => tracing::debug!(node, event = ?other, "event"),
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Accepted { stream } => {
                let conn = self.open(stream);
                self.feed(Input::Accepted { conn });
            }
            Event::Received { conn, data } => self.feed(Input::Received { conn, data: &data }),
            Event::ReaderDone { conn } => {
                // After a close the reader was cancelled and the writer reports the end.
                if self.conns.get(&conn).is_some_and(|state| state.queue.is_some()) {
                    self.forget(conn);
                }
            }
            Event::WriterDone { conn } | Event::CloseGraceOver { conn } => self.forget(conn),
            Event::Connected { peer, stream } => {
                let conn = self.open(stream);
                self.feed(Input::Connected { conn, peer });
            }
            Event::ConnectFailed { peer } => self.feed(Input::ConnectFailed { peer }),
            Event::Loaded { load, result } => self.feed(Input::Loaded { load, result }),
        }
    }

    /// Runs a one-shot job on the node's executor; its event comes back on the channel.
    /// Detached: a job left when the node ends is dropped with the executor.
    fn detach(&self, job: impl Future<Output = Event> + Send + 'static) {
        let events = self.events_tx.clone();
        self.spawn(async move {
            let _ = events.send(job.await).await;
        })
        .detach();
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Task<()> {
        self.executor
            .upgrade()
            .expect("the driver runs on the executor, so the executor is alive")
            .spawn(task)
    }

    /// Starts a connection's reader and writer; the caller tells the front.
    fn open(&mut self, stream: TcpStream) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(conn = conn.0, %error, "TCP_NODELAY not set");
        }
        let (queue, queued) = async_channel::unbounded();
        let activity = Arc::new(Activity::default());
        activity.touch();
        let (events, idle) = (self.events_tx.clone(), self.config.idle_timeout);
        let reader = conn::read_loop(conn, stream.clone(), events, Arc::clone(&activity), idle);
        let writer = conn::write_loop(conn, stream, queued, self.events_tx.clone(), activity);
        let (reader, _writer) = (Some(self.spawn(reader)), self.spawn(writer));
        self.conns.insert(conn, Conn { queue: Some(queue), reader, _writer });
        conn
    }

    /// Ends a connection's tasks and tells the front it is closed.
    fn forget(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.feed(Input::Closed { conn });
        }
    }

    fn feed(&mut self, input: Input<'_>) {
        if let Err(error) = self.front.handle_input(input) {
            // Races the core resolves itself: bytes or a close for a connection it already
            // dropped, a load it already timed out.
            tracing::trace!(%error, "input refused");
        }
    }

    /// Stops accepting, lets every writer flush what the node transmitted (bounded), closes
    /// the front. Dropping `self` afterwards cancels whatever is left.
    async fn shut_down(mut self) {
        self.accept = None;
        for state in self.conns.values_mut() {
            state.queue = None;
            state.reader = None;
        }
        let flushed = async {
            while !self.conns.is_empty() {
                match self.events_rx.recv().await {
                    Ok(Event::WriterDone { conn }) => drop(self.conns.remove(&conn)),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        };
        flushed
            .or(async {
                Timer::after(CLOSE_GRACE).await;
            })
            .await;
        self.front.close();
        self.front.drain_actions(&mut self.actions);
        tracing::debug!(node = self.shared.node_id(), "driver stopped");
    }
}

/// What woke the driver.
enum Woke {
    /// An event, or `None` when every sender is gone.
    Event(Option<Event>),
    /// The front has work (`false`: the front is gone).
    Front(bool),
    /// The node's deadline passed.
    Timer,
    /// A stop's deadline passed: close now.
    Stop,
}

impl Drop for Driver {
    /// However the driver ends (a stop, a cancel, a panic), no caller waits forever.
    fn drop(&mut self) {
        self.front.close();
    }
}

/// Accepts connections until the driver drops this task.
async fn accept_loop(listener: TcpListener, events: Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if events.send(Event::Accepted { stream }).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accept failed");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}
