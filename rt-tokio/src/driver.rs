//! The driver task: executes the front's actions, feeds it IO events, keeps its one timer.
//!
//! It makes no protocol decision. Everything it does is one of: move bytes between a socket
//! and the front, open or close a socket, call a data source, read the clock, log an event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::front::{Action, Front};
use herdcache_proto::{ConnId, Event, Input, LoadId, LoadResult};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use crate::conn::{self, Activity, CLOSE_GRACE};
use crate::source::SharedSource;

/// Capacity of the channel from the IO tasks to the driver. When it is full, readers wait, and
/// TCP pushes back on the peers.
const EVENT_QUEUE: usize = 1024;
/// IO events handled per wake-up before the driver looks at its other sources again.
const EVENTS_PER_WAKE: usize = 64;
/// A timer this far away stands for "no timer".
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the node shares between its [`Handle`](crate::Handle)s and its driver task.
pub(crate) struct Shared {
    /// The concurrent front of the node.
    pub(crate) front: Front,
    /// The data source of each keyspace.
    pub(crate) sources: RwLock<HashMap<Bytes, SharedSource>>,
    /// Signalled by the front when a user call queued actions.
    pub(crate) wake: Arc<Notify>,
    /// Signalled to end the driver now (after a graceful stop's deadline).
    pub(crate) stop_now: Notify,
    /// This node's id: its advertised address.
    pub(crate) node_id: String,
    /// The address the listener is bound to.
    pub(crate) local_addr: SocketAddr,
}

impl Shared {
    pub(crate) fn source(&self, keyspace: &[u8]) -> Option<SharedSource> {
        let sources = self.sources.read().unwrap_or_else(PoisonError::into_inner);
        sources.get(keyspace).cloned()
    }
}

/// What an IO task tells the driver.
pub(crate) enum IoEvent {
    /// The listener accepted a connection.
    Accepted { stream: TcpStream },
    /// Bytes arrived.
    Received { conn: ConnId, data: Bytes },
    /// The reader stopped: EOF, a read error, or the idle timeout.
    ReaderDone { conn: ConnId },
    /// The writer stopped: flushed and shut down after a close, or a write error.
    WriterDone { conn: ConnId },
}

/// What a one-shot job (a dial or a data-source call) ends with.
enum Job {
    Connected {
        peer: Bytes,
        stream: TcpStream,
    },
    ConnectFailed {
        peer: Bytes,
    },
    Loaded {
        load: LoadId,
        result: LoadResult,
    },
    /// A closing connection's grace period ended: if its writer is still flushing (the peer
    /// does not read), it is cut.
    CloseGraceOver {
        conn: ConnId,
    },
}

/// A connection's tasks. `queue` is `None` once the node closed it: the writer is flushing.
struct Conn {
    queue: Option<mpsc::UnboundedSender<Vec<u8>>>,
    reader: AbortHandle,
    writer: AbortHandle,
}

/// Transport settings of the driver.
pub(crate) struct DriverConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
}

/// The driver: owns every socket and task of the node. Dropping it (when its task is
/// aborted) aborts them all.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    front: Front,
    config: DriverConfig,
    events_tx: mpsc::Sender<IoEvent>,
    events_rx: mpsc::Receiver<IoEvent>,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    /// Readers, writers and the accept loop.
    io: JoinSet<()>,
    accept: AbortHandle,
    /// Dials and data-source calls.
    jobs: JoinSet<Job>,
    /// The load each data-source job answers, to fail it if the source panics.
    loads: HashMap<tokio::task::Id, LoadId>,
    actions: Vec<Action>,
    drained: bool,
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>, listener: TcpListener, config: DriverConfig) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut io = JoinSet::new();
        let accept = io.spawn(accept_loop(listener, events_tx.clone()));
        Driver {
            front: shared.front.clone(),
            shared,
            config,
            events_tx,
            events_rx,
            conns: HashMap::new(),
            next_conn: 0,
            io,
            accept,
            jobs: JoinSet::new(),
            loads: HashMap::new(),
            actions: Vec::new(),
            drained: false,
        }
    }

    /// The drive loop: execute actions, re-arm the timer, wait for a wake-up, an IO event, a
    /// finished job or the timer; repeat until the node drained after a leave or is told to
    /// stop. Then closes every connection and the front.
    pub(crate) async fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let timer = tokio::time::sleep(FAR_FUTURE);
        tokio::pin!(timer);
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
            // Re-armed only when the deadline moved: no timer-wheel churn per event.
            let next = self.front.poll_timeout();
            if let Some(at) = next.filter(|at| armed_at != Some(*at)) {
                let wait = at.saturating_duration_since(self.front.now());
                timer.as_mut().reset(deadline_in(wait));
            }
            armed_at = next;
            let armed = next.is_some();
            tokio::select! {
                () = shared.stop_now.notified() => break,
                () = shared.wake.notified() => {}
                Some(event) = self.events_rx.recv() => {
                    self.on_io(event);
                    for _ in 1..EVENTS_PER_WAKE {
                        let Ok(event) = self.events_rx.try_recv() else { break };
                        self.execute_actions();
                        self.on_io(event);
                    }
                }
                Some(done) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => {
                    self.on_job(done);
                }
                () = &mut timer, if armed => {
                    armed_at = None;
                    self.front.handle_timeout();
                }
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
                Some(source) => {
                    let job = self.jobs.spawn(async move {
                        let result = source.load(key).await;
                        Job::Loaded { load, result }
                    });
                    self.loads.insert(job.id(), load);
                }
                None => {
                    let result = LoadResult::Failed(Bytes::from_static(b"no data source"));
                    self.feed(Input::Loaded { load, result });
                }
            },
            Action::Transmit { conn, data } => {
                match self.conns.get(&conn).and_then(|c| c.queue.as_ref()) {
                    // A send fails only when the writer already stopped; its WriterDone is on
                    // the way and closes the connection.
                    Some(queue) => drop(queue.send(data)),
                    None => tracing::trace!(conn = conn.0, "transmit on a closed connection"),
                }
            }
            Action::Connect { peer, address } => {
                let connect_timeout = self.config.connect_timeout;
                self.jobs.spawn(async move {
                    let Ok(address) = std::str::from_utf8(&address) else {
                        return Job::ConnectFailed { peer };
                    };
                    match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
                        Ok(Ok(stream)) => Job::Connected { peer, stream },
                        Ok(Err(error)) => {
                            tracing::debug!(peer = address, %error, "connect failed");
                            Job::ConnectFailed { peer }
                        }
                        Err(_elapsed) => Job::ConnectFailed { peer },
                    }
                });
            }
            Action::Close { conn } => {
                if let Some(state) = self.conns.get_mut(&conn) {
                    // Dropping the queue lets the writer flush, shut down and report back;
                    // `Closed` is fed then, or when the grace period ends, whichever is first.
                    state.queue = None;
                    state.reader.abort();
                    self.jobs.spawn(async move {
                        tokio::time::sleep(CLOSE_GRACE).await;
                        Job::CloseGraceOver { conn }
                    });
                }
            }
            Action::Event(event) => self.log_event(event),
        }
    }

    fn log_event(&mut self, event: Event) {
        let node = self.shared.node_id.as_str();
        match event {
            Event::Drained => {
                tracing::info!(node, "drained");
                self.drained = true;
            }
            Event::ConnectionRefused { conn, reason } => {
                tracing::warn!(node, conn = conn.0, ?reason, "connection refused");
            }
            Event::PeerUp { peer } => {
                tracing::debug!(node, peer = %String::from_utf8_lossy(&peer), "peer up");
            }
            other => tracing::debug!(node, event = ?other, "event"),
        }
    }

    fn on_io(&mut self, event: IoEvent) {
        match event {
            IoEvent::Accepted { stream } => {
                let conn = self.open(stream);
                self.feed(Input::Accepted { conn });
            }
            IoEvent::Received { conn, data } => self.feed(Input::Received { conn, data: &data }),
            IoEvent::ReaderDone { conn } => {
                // After a close the reader was aborted and the writer reports the end.
                if self.conns.get(&conn).is_some_and(|state| state.queue.is_some()) {
                    self.forget(conn);
                }
            }
            IoEvent::WriterDone { conn } => self.forget(conn),
        }
    }

    fn on_job(&mut self, done: Result<(tokio::task::Id, Job), JoinError>) {
        match done {
            Ok((id, job)) => {
                self.loads.remove(&id);
                match job {
                    Job::Connected { peer, stream } => {
                        let conn = self.open(stream);
                        self.feed(Input::Connected { conn, peer });
                    }
                    Job::ConnectFailed { peer } => self.feed(Input::ConnectFailed { peer }),
                    Job::Loaded { load, result } => self.feed(Input::Loaded { load, result }),
                    Job::CloseGraceOver { conn } => self.forget(conn),
                }
            }
            Err(error) => {
                if let Some(load) = self.loads.remove(&error.id()) {
                    tracing::error!(load = load.0, %error, "data source panicked");
                    let result = LoadResult::Failed(Bytes::from_static(b"data source panicked"));
                    self.feed(Input::Loaded { load, result });
                }
            }
        }
    }

    /// Starts a connection's reader and writer; the caller tells the front.
    fn open(&mut self, stream: TcpStream) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(conn = conn.0, %error, "TCP_NODELAY not set");
        }
        let (read_half, write_half) = stream.into_split();
        let (queue, queued) = mpsc::unbounded_channel();
        let activity = Arc::new(Activity::default());
        activity.touch();
        let events = self.events_tx.clone();
        let idle = self.config.idle_timeout;
        let reader =
            self.io.spawn(conn::read_loop(conn, read_half, events, Arc::clone(&activity), idle));
        let events = self.events_tx.clone();
        let writer = self.io.spawn(conn::write_loop(conn, write_half, queued, events, activity));
        self.conns.insert(conn, Conn { queue: Some(queue), reader, writer });
        conn
    }

    /// Ends a connection's tasks and tells the front it is closed.
    fn forget(&mut self, conn: ConnId) {
        let Some(state) = self.conns.remove(&conn) else { return };
        state.reader.abort();
        state.writer.abort();
        self.feed(Input::Closed { conn });
    }

    fn feed(&mut self, input: Input<'_>) {
        if let Err(error) = self.front.handle_input(input) {
            // Races the core resolves itself: bytes or a close for a connection it already
            // dropped, a load it already timed out.
            tracing::trace!(%error, "input refused");
        }
    }

    /// Stops accepting, lets every writer flush what the node transmitted (bounded), closes
    /// the front. Dropping `self` afterwards aborts whatever is left.
    async fn shut_down(mut self) {
        self.accept.abort();
        for state in self.conns.values_mut() {
            state.queue = None;
            state.reader.abort();
        }
        let flushed = async {
            while !self.conns.is_empty() {
                match self.events_rx.recv().await {
                    Some(IoEvent::WriterDone { conn }) => drop(self.conns.remove(&conn)),
                    Some(_) => {}
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, flushed).await;
        self.front.close();
        self.front.drain_actions(&mut self.actions);
        tracing::debug!(node = self.shared.node_id.as_str(), "driver stopped");
    }
}

impl Drop for Driver {
    /// However the driver ends (a stop, an abort, a panic), no caller waits forever.
    fn drop(&mut self) {
        self.front.close();
    }
}

/// Accepts connections until the driver goes away.
async fn accept_loop(listener: TcpListener, events: mpsc::Sender<IoEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if events.send(IoEvent::Accepted { stream }).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn deadline_in(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait.min(FAR_FUTURE)).unwrap_or(now)
}
