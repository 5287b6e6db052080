//! The driver task: executes the front's actions, feeds it IO events, keeps its one timer.
//!
//! It makes no protocol decision. Everything it does is one of: move bytes between a socket
//! and the front, open or close a socket, call a data source, read the clock, log an event.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_executor::{Executor, Task};
use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use futures_lite::FutureExt;
use herdcache_proto::{ConnId, Event as NodeEvent, LoadId, LoadResult};
use herdcache_runtime::{
    Activity, CLOSE_GRACE, DriverCore, DriverIo, EVENT_QUEUE, EVENTS_PER_WAKE, Outflow, SendLimits,
    Shared, SharedSource, Turn,
};

use crate::conn;

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
pub(crate) struct Conn {
    queue: Option<Sender<Vec<u8>>>,
    /// The bytes in `queue` and the writer's, against the send buffer's limits.
    outflow: Arc<Outflow>,
    reader: Option<Task<()>>,
    /// Held only to be cancelled with the connection.
    _writer: Task<()>,
}

/// Transport settings of the driver.
pub(crate) struct DriverConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) send_limits: SendLimits,
}

/// The IO half of the driver: spawns tasks on the node's executor; they report on the event
/// channel.
struct AsyncIo {
    /// The node's executor. Weak: the executor's thread owns it, so that ending that thread
    /// drops every task still on it, the driver included.
    executor: Weak<Executor<'static>>,
    events: Sender<Event>,
    config: DriverConfig,
}

/// The driver task: the core's bookkeeping and this runtime's IO. Dropping it cancels every
/// task and socket of the node and closes the front.
pub(crate) struct Driver {
    core: DriverCore<Conn>,
    io: AsyncIo,
    events: Receiver<Event>,
    accept: Option<Task<()>>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        executor: &Arc<Executor<'static>>,
        listener: TcpListener,
        config: DriverConfig,
    ) -> Self {
        let (events_tx, events) = async_channel::bounded(EVENT_QUEUE);
        let accept = executor.spawn(accept_loop(listener, events_tx.clone()));
        let io = AsyncIo { executor: Arc::downgrade(executor), events: events_tx, config };
        Driver { core: DriverCore::new(shared), io, events, accept: Some(accept) }
    }

    /// The drive loop: execute actions, re-arm the timer, wait for a wake-up, an event or the
    /// timer; repeat until the node drained after a leave or is told to stop. Then closes
    /// every connection and the front.
    pub(crate) async fn run(mut self, signals: Signals) {
        let mut timer = Timer::never();
        loop {
            let armed = match self.core.turn(&mut self.io) {
                Turn::Drained => break,
                Turn::Wait { rearm, armed } => {
                    if let Some(wait) = rearm {
                        timer.set_after(wait);
                    }
                    armed
                }
            };
            let woke = async { Woke::Event(self.events.recv().await.ok()) }
                .or(async { Woke::Front(signals.wake.recv().await.is_ok()) })
                .or(async {
                    if !armed {
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
                        let Ok(event) = self.events.try_recv() else { break };
                        self.core.execute_actions(&mut self.io);
                        self.on_event(event);
                    }
                }
                Woke::Front(true) => {}
                Woke::Timer => self.core.timer_fired(),
                // The driver holds a sender of the events, and the handles the senders of
                // the signals until they stop it.
                Woke::Event(None) | Woke::Front(false) | Woke::Stop => break,
            }
        }
        self.shut_down().await;
    }

    fn on_event(&mut self, event: Event) {
        let core = &mut self.core;
        match event {
            Event::Accepted { stream } => drop(core.open(None, |id| self.io.start(id, stream))),
            Event::Connected { peer, stream } => {
                core.open(Some(peer), |id| self.io.start(id, stream));
            }
            Event::Received { conn, data } => core.received(conn, &data),
            Event::ReaderDone { conn } => core.reader_done(conn),
            Event::WriterDone { conn } => core.writer_done(conn),
            Event::CloseGraceOver { conn } => core.close_grace_over(conn),
            Event::ConnectFailed { peer } => core.connect_failed(peer),
            Event::Loaded { load, result } => core.loaded(load, result),
        }
    }

    /// Stops accepting, lets every writer flush what the node transmitted (bounded), closes
    /// the front. Dropping `self` afterwards cancels whatever is left.
    async fn shut_down(mut self) {
        self.accept = None;
        self.core.close_all(&mut self.io);
        let flushed = async {
            let mut done = self.core.flushed(None);
            while !done {
                match self.events.recv().await {
                    Ok(Event::WriterDone { conn }) => done = self.core.flushed(Some(conn)),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        };
        flushed.or(elapsed(CLOSE_GRACE, ())).await;
        self.core.close_front();
        tracing::debug!(node = self.core.shared().node_id(), "driver stopped");
    }
}

impl DriverIo for AsyncIo {
    type Conn = Conn;

    fn load(&mut self, load: LoadId, source: SharedSource, key: Bytes) {
        self.detach(async move { Event::Loaded { load, result: source.load(key).await } });
    }

    fn connect(&mut self, peer: Bytes, address: Bytes) {
        let connect_timeout = self.config.connect_timeout;
        self.detach(async move {
            let Ok(address) = std::str::from_utf8(&address) else {
                return Event::ConnectFailed { peer };
            };
            let dial = async { Some(TcpStream::connect(address).await) };
            let give_up = elapsed(connect_timeout, None);
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

    fn transmit(&mut self, conn: &mut Conn, data: Vec<u8>) -> bool {
        if !conn.outflow.queue(data.len()) {
            tracing::debug!(queued = conn.outflow.queued(), "send buffer over its hard cap");
            return false;
        }
        // A send fails only when the writer already stopped; its WriterDone is on the way
        // and closes the connection.
        if let Some(queue) = &conn.queue {
            let _ = queue.try_send(data);
        }
        true
    }

    fn close(&mut self, id: ConnId, conn: &mut Conn, grace: bool) {
        // Dropping the queue lets the writer flush, shut down and report back.
        conn.queue = None;
        conn.reader = None;
        if grace {
            self.detach(elapsed(CLOSE_GRACE, Event::CloseGraceOver { conn: id }));
        }
    }

    fn event(&mut self, node: &str, event: &NodeEvent) {
        match event {
            NodeEvent::Drained => tracing::info!(node, "drained"),
            NodeEvent::ConnectionRefused { conn, reason } => {
                tracing::warn!(node, conn = conn.0, ?reason, "connection refused");
            }
            other => tracing::debug!(node, event = ?other, "event"),
        }
    }
}

impl AsyncIo {
    /// Runs a one-shot job on the node's executor; its event comes back on the channel.
    /// Detached: a job left when the node ends is dropped with the executor.
    fn detach(&self, job: impl Future<Output = Event> + Send + 'static) {
        let events = self.events.clone();
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

    /// Starts a connection's reader and writer.
    fn start(&self, conn: ConnId, stream: TcpStream) -> Conn {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(conn = conn.0, %error, "TCP_NODELAY not set");
        }
        let (queue, queued) = async_channel::unbounded();
        let activity = Arc::new(Activity::default());
        activity.touch();
        let outflow = Arc::new(Outflow::new(self.config.send_limits));
        let (events, idle) = (self.events.clone(), self.config.idle_timeout);
        let reader = conn::read_loop(
            conn,
            stream.clone(),
            events,
            Arc::clone(&activity),
            Arc::clone(&outflow),
            idle,
        );
        let events = self.events.clone();
        let writer = conn::write_loop(conn, stream, queued, events, activity, Arc::clone(&outflow));
        Conn {
            queue: Some(queue),
            outflow,
            reader: Some(self.spawn(reader)),
            _writer: self.spawn(writer),
        }
    }
}

/// `value` once `wait` has passed.
pub(crate) async fn elapsed<T>(wait: Duration, value: T) -> T {
    Timer::after(wait).await;
    value
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
