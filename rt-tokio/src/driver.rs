//! The driver task: executes the front's actions, feeds it IO events, keeps its one timer.
//!
//! It makes no protocol decision. The bookkeeping (connection table, actions, the timer's
//! deadline) is the core's [`DriverCore`]; this file does the tokio half: tasks, sockets,
//! timers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herdcache_proto::{ConnId, Event, LoadId, LoadResult};
use herdcache_runtime::{
    Activity, CLOSE_GRACE, DriverCore, DriverIo, EVENT_QUEUE, EVENTS_PER_WAKE, Outflow, SendLimits,
    Shared, SharedSource, Turn,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::conn;

/// A timer this far away stands for "no timer".
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How the handles and the front reach the driver task.
pub(crate) struct Signals {
    /// Signalled by the front when a user call queued actions.
    pub(crate) wake: Arc<Notify>,
    /// Signalled to end the driver now (after a graceful stop's deadline).
    pub(crate) stop_now: Notify,
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

/// What a one-shot job (a dial, a data-source call, a close's grace timer) ends with.
enum Job {
    Connected { peer: Bytes, stream: TcpStream },
    ConnectFailed { peer: Bytes },
    Loaded { load: LoadId, result: LoadResult },
    CloseGraceOver { conn: ConnId },
}

/// A connection's tasks, aborted when it is dropped. `queue` is `None` once the node closed
/// it: the writer is flushing.
pub(crate) struct Conn {
    queue: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// The bytes in `queue` and the writer's, against the send buffer's limits.
    outflow: Arc<Outflow>,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Transport settings of the driver.
pub(crate) struct DriverConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) send_limits: SendLimits,
}

/// The tokio half of the driver: spawns the tasks.
struct TokioIo {
    config: DriverConfig,
    events_tx: mpsc::Sender<IoEvent>,
    /// Readers, writers and the accept loop.
    io: JoinSet<()>,
    /// Dials, data-source calls, grace timers.
    jobs: JoinSet<Job>,
}

/// The driver: owns every socket and task of the node. Dropping it (when its task is
/// aborted) aborts them all and closes the front.
pub(crate) struct Driver {
    core: DriverCore<Conn>,
    io: TokioIo,
    signals: Arc<Signals>,
    events_rx: mpsc::Receiver<IoEvent>,
    accept: AbortHandle,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        signals: Arc<Signals>,
        listener: TcpListener,
        config: DriverConfig,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut io = JoinSet::new();
        let accept = io.spawn(accept_loop(listener, events_tx.clone()));
        let io = TokioIo { config, events_tx, io, jobs: JoinSet::new() };
        Driver { core: DriverCore::new(shared), io, signals, events_rx, accept }
    }

    /// The drive loop: execute actions, re-arm the timer, wait for a wake-up, an IO event, a
    /// finished job or the timer; repeat until the node drained after a leave or is told to
    /// stop. Then closes every connection and the front.
    pub(crate) async fn run(mut self) {
        let signals = Arc::clone(&self.signals);
        let timer = tokio::time::sleep(FAR_FUTURE);
        tokio::pin!(timer);
        loop {
            let armed = match self.core.turn(&mut self.io) {
                Turn::Drained => break,
                Turn::Wait { rearm, armed } => {
                    if let Some(wait) = rearm {
                        timer.as_mut().reset(deadline_in(wait));
                    }
                    armed
                }
            };
            tokio::select! {
                () = signals.stop_now.notified() => break,
                () = signals.wake.notified() => {}
                Some(event) = self.events_rx.recv() => {
                    self.on_io(event);
                    for _ in 1..EVENTS_PER_WAKE {
                        let Ok(event) = self.events_rx.try_recv() else { break };
                        self.core.execute_actions(&mut self.io);
                        self.on_io(event);
                    }
                }
                Some(done) = self.io.jobs.join_next(), if !self.io.jobs.is_empty() => {
                    // Jobs do not panic (a source's panic fails its load); an aborted job
                    // has nothing to report.
                    if let Ok(job) = done {
                        self.on_job(job);
                    }
                }
                () = &mut timer, if armed => self.core.timer_fired(),
            }
        }
        self.shut_down().await;
    }

    fn on_io(&mut self, event: IoEvent) {
        match event {
            IoEvent::Accepted { stream } => {
                self.core.open(None, |id| self.io.start(id, stream));
            }
            IoEvent::Received { conn, data } => self.core.received(conn, &data),
            IoEvent::ReaderDone { conn } => self.core.reader_done(conn),
            IoEvent::WriterDone { conn } => self.core.writer_done(conn),
        }
    }

    fn on_job(&mut self, job: Job) {
        match job {
            Job::Connected { peer, stream } => {
                self.core.open(Some(peer), |id| self.io.start(id, stream));
            }
            Job::ConnectFailed { peer } => self.core.connect_failed(peer),
            Job::Loaded { load, result } => self.core.loaded(load, result),
            Job::CloseGraceOver { conn } => self.core.close_grace_over(conn),
        }
    }

    /// Stops accepting, lets every writer flush what the node transmitted (bounded), closes
    /// the front. Dropping `self` afterwards aborts whatever is left.
    async fn shut_down(mut self) {
        self.accept.abort();
        self.core.close_all(&mut self.io);
        let flushed = async {
            let mut done = self.core.flushed(None);
            while !done {
                match self.events_rx.recv().await {
                    Some(IoEvent::WriterDone { conn }) => done = self.core.flushed(Some(conn)),
                    Some(_) => {}
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, flushed).await;
        self.core.close_front();
        tracing::debug!(node = self.core.shared().node_id(), "driver stopped");
    }
}

impl DriverIo for TokioIo {
    type Conn = Conn;

    fn load(&mut self, load: LoadId, source: SharedSource, key: Bytes) {
        self.jobs.spawn(async move { Job::Loaded { load, result: source.load(key).await } });
    }

    fn connect(&mut self, peer: Bytes, address: Bytes) {
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

    fn transmit(&mut self, conn: &mut Conn, data: Vec<u8>) -> bool {
        if !conn.outflow.queue(data.len()) {
            tracing::debug!(queued = conn.outflow.queued(), "send buffer over its hard cap");
            return false;
        }
        // A send fails only when the writer already stopped; its WriterDone is on the way
        // and closes the connection.
        if let Some(queue) = &conn.queue {
            let _ = queue.send(data);
        }
        true
    }

    fn close(&mut self, id: ConnId, conn: &mut Conn, grace: bool) {
        // Dropping the queue lets the writer flush, shut down and report back.
        conn.queue = None;
        conn.reader.abort();
        if grace {
            self.jobs.spawn(async move {
                tokio::time::sleep(CLOSE_GRACE).await;
                Job::CloseGraceOver { conn: id }
            });
        }
    }

    fn event(&mut self, node: &str, event: &Event) {
        match event {
            Event::Drained => tracing::info!(node, "drained"),
            Event::ConnectionRefused { conn, reason } => {
                tracing::warn!(node, conn = conn.0, ?reason, "connection refused");
            }
            other => tracing::debug!(node, event = ?other, "event"),
        }
    }
}

impl TokioIo {
    /// Starts a connection's reader and writer.
    fn start(&mut self, conn: ConnId, stream: TcpStream) -> Conn {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(conn = conn.0, %error, "TCP_NODELAY not set");
        }
        let (read_half, write_half) = stream.into_split();
        let (queue, queued) = mpsc::unbounded_channel();
        let activity = Arc::new(Activity::default());
        activity.touch();
        let outflow = Arc::new(Outflow::new(self.config.send_limits));
        let (events, idle) = (self.events_tx.clone(), self.config.idle_timeout);
        let reader = conn::read_loop(
            conn,
            read_half,
            events,
            Arc::clone(&activity),
            Arc::clone(&outflow),
            idle,
        );
        let reader = self.io.spawn(reader);
        let events = self.events_tx.clone();
        let writer =
            conn::write_loop(conn, write_half, queued, events, activity, Arc::clone(&outflow));
        let writer = self.io.spawn(writer);
        Conn { queue: Some(queue), outflow, reader, writer }
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
