//! The one async driver: starts a node on any [`Runtime`] and runs its drive loop.
//!
//! It makes no protocol decision. The bookkeeping (connection table, outputs, the timer's
//! deadline) is [`DriverCore`]'s; this file does the async half over the runtime's
//! operations: tasks, sockets, timers. See the crate docs for its tasks and its contract.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::time::Duration;
use std::collections::HashMap;

use async_channel::{Receiver, Sender};
use bytes::{Bytes, BytesMut};
use futures_lite::FutureExt;
use herdcache_proto::{ConnId, LoadId, LoadResult, PeerIdentity};

use crate::connection::{self, TlsLink};
use crate::driver::{DriverCore, DriverIo, Turn};
use crate::front::WakeDriver;
use crate::handle::{Control, Handle, Shared};
use crate::inbound::{InboundSlot, TransportGuard};
use crate::rt::{Runtime, deadline_in, elapsed, sleep};
use crate::setup::{Setup, StartError};
use crate::source::SharedSource;
use crate::tls::{SessionError, TlsSession};
use crate::transport::{
    Activity, CLOSE_GRACE, EVENT_QUEUE, EVENTS_PER_WAKE, Outflow, ReadPermit, SendLimits,
};

/// What the node's tasks (IO, dials, data-source calls, grace timers) tell the driver.
pub(crate) enum IoEvent<R: Runtime> {
    /// The listener accepted a connection, under the inbound cap.
    Accepted { stream: R::Stream, slot: InboundSlot },
    /// Bytes arrived; the permit counts them against the reader's read-ahead until the
    /// event is dropped, after the node was fed.
    Received { conn: ConnId, data: Bytes, permit: ReadPermit },
    /// The reader stopped: EOF, a read error, or the idle timeout.
    ReaderDone { conn: ConnId },
    /// The writer stopped: flushed and shut down after a close, or a write error.
    WriterDone { conn: ConnId },
    /// A one-shot job ended.
    Job { job: u64, done: JobDone<R> },
}

/// What a one-shot job ends with.
pub(crate) enum JobDone<R: Runtime> {
    /// A dial succeeded (and its TLS handshake, with TLS).
    Connected { peer: Bytes, ready: Ready<R> },
    /// An accepted connection's TLS handshake succeeded.
    Secured { ready: Ready<R> },
    /// An accepted connection's TLS handshake failed (reported; the socket is closed).
    HandshakeFailed,
    /// A dial failed or timed out.
    ConnectFailed { peer: Bytes },
    /// A data-source call ended.
    Loaded { load: LoadId, result: LoadResult },
    /// A closing connection's grace period ended: if its writer is still flushing (the peer
    /// does not read), it is cut.
    CloseGraceOver { conn: ConnId },
}

/// A connection ready for the core: its socket's halves, its TLS session (with the peer's
/// identity) when TLS is on, its place under the inbound cap when accepted.
pub(crate) struct Ready<R: Runtime> {
    streams: (R::Reader, R::Writer),
    /// Boxed: a session is a kilobyte, and events move through a channel.
    tls: Option<Box<Secured>>,
    slot: Option<InboundSlot>,
}

/// A completed TLS handshake.
pub(crate) struct Secured {
    session: TlsSession,
    identity: PeerIdentity,
    /// Plaintext that came with the last handshake bytes (the peer's first frames).
    early: BytesMut,
}

/// Runs `session`'s handshake over `streams` within `timeout`, then reads the peer's
/// identity off its verified certificate. The streams come back either way, so that a
/// failure is reported before the socket closes.
async fn secure<R: Runtime>(
    mut streams: (R::Reader, R::Writer),
    mut session: TlsSession,
    timeout: Duration,
) -> ((R::Reader, R::Writer), Result<Secured, SessionError>) {
    let (reader, writer) = &mut streams;
    let handshake = async { Some(connection::handshake::<R>(reader, writer, &mut session).await) };
    let early = handshake.or(elapsed::<R, _>(timeout, None)).await;
    let secured = early
        .unwrap_or(Err(SessionError::HandshakeTimeout))
        .and_then(|early| Ok(Secured { identity: session.peer_identity()?, session, early }));
    (streams, secured)
}

/// Starts a node on `runtime`: binds the listener, assembles the node, spawns its driver.
pub(crate) async fn start<R: Runtime>(runtime: R, setup: Setup) -> Result<Handle, StartError> {
    // First, so that a runtime that cannot be used here (tokio's, outside its context) is an
    // error rather than a panic of its socket calls; a home made for nothing ends on return.
    let (spawner, home) = runtime.home().map_err(StartError::Runtime)?;
    let listener = R::bind(setup.listen_addr()).await.map_err(StartError::Bind)?;
    let local_addr = R::local_addr(&listener).map_err(StartError::Bind)?;
    let (wake_tx, wake) = async_channel::bounded(1);
    let wake_driver: WakeDriver = Arc::new(move || {
        // Full means a wake-up is pending already.
        let _ = wake_tx.try_send(());
    });
    let node = setup.assemble(local_addr, wake_driver)?;
    let (stop_now, stop_now_rx) = async_channel::bounded(1);
    let config = DriverConfig {
        connect_timeout: node.connect_timeout,
        idle_timeout: node.idle_timeout,
        send_limits: node.send_limits,
    };
    let driver = Driver::<R>::new(Arc::clone(&node.shared), spawner.clone(), listener, config);
    let task = R::spawn(&spawner, driver.run(Signals { wake, stop_now: stop_now_rx }));
    tracing::info!(node = node.shared.node_id(), %local_addr, "node started");
    let control = Box::new(NodeControl::<R> { driver: task, stop_now, spawner, home });
    Ok(Handle::new(node.shared, control, node.stop_timeout))
}

/// How the front and the handles reach the driver.
struct Signals {
    /// The front's wake-ups (capacity 1: a wake-up pending is enough).
    wake: Receiver<()>,
    /// Told to end now, after a graceful stop's deadline.
    stop_now: Receiver<()>,
}

/// The node's driver task, as a [`Handle`] ends it. Dropping it cancels the driver (which
/// drops every task and socket of the node) and then the runtime's home for the node.
struct NodeControl<R: Runtime> {
    driver: R::Task,
    stop_now: Sender<()>,
    /// For a blocking stop, which waits on the runtime's timers.
    spawner: R::Spawner,
    /// Dropped after `driver` (fields drop in order).
    #[allow(dead_code, reason = "held only to be dropped with the node")]
    home: Box<dyn Send + Sync>,
}

impl<R: Runtime> Control for NodeControl<R> {
    fn stop(self: Box<Self>, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut this = *self;
            if !finishes_within::<R>(&mut this.driver, timeout).await {
                tracing::warn!("not drained in time: closing");
                let _ = this.stop_now.try_send(());
                // Past this second grace the driver is cancelled (dropped with `this`).
                finishes_within::<R>(&mut this.driver, CLOSE_GRACE * 2).await;
            }
        })
    }

    /// From a thread outside the runtime (a blocking facade's caller).
    fn stop_blocking(self: Box<Self>, timeout: Duration) {
        let spawner = self.spawner.clone();
        R::block_on(&spawner, self.stop(timeout));
    }

    fn kill(self: Box<Self>) {
        drop(self);
    }
}

/// Whether `task` finishes within `limit`.
async fn finishes_within<R: Runtime>(task: &mut R::Task, limit: Duration) -> bool {
    async {
        task.await;
        true
    }
    .or(elapsed::<R, _>(limit, false))
    .await
}

/// Transport settings of the driver.
struct DriverConfig {
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    send_limits: SendLimits,
}

/// A connection's tasks; dropping a task cancels it. `queue` is `None` once the node closed
/// it: the writer is flushing.
struct Conn<R: Runtime> {
    queue: Option<Sender<Vec<u8>>>,
    /// The bytes in `queue` and the writer's, against the send buffer's limits.
    outflow: Arc<Outflow>,
    reader: Option<R::Task>,
    /// Held only to be cancelled with the connection.
    _writer: R::Task,
    /// An accepted connection's place under the inbound cap, freed with the connection.
    _slot: Option<InboundSlot>,
}

/// The IO half of the driver ([`DriverIo`]): spawns tasks that report on the event channel.
struct AsyncIo<R: Runtime> {
    spawner: R::Spawner,
    events: Sender<IoEvent<R>>,
    config: DriverConfig,
    /// The inbound cap, TLS, their counters.
    transport: Arc<TransportGuard>,
    /// One-shot jobs in progress, cancelled with the driver.
    jobs: HashMap<u64, R::Task>,
    next_job: u64,
}

/// The driver task: the core's bookkeeping and the runtime's IO. Dropping it cancels every
/// task and socket of the node and closes the front.
struct Driver<R: Runtime> {
    core: DriverCore<Conn<R>>,
    io: AsyncIo<R>,
    events: Receiver<IoEvent<R>>,
    accept: Option<R::Task>,
}

/// What woke the driver.
enum Woke<R: Runtime> {
    /// An event, or `None` when every sender is gone.
    Event(Option<IoEvent<R>>),
    /// The front has work (`false`: the front is gone).
    Front(bool),
    /// The node's deadline passed.
    Timer,
    /// A stop's deadline passed: close now.
    Stop,
}

impl<R: Runtime> Driver<R> {
    fn new(
        shared: Arc<Shared>,
        spawner: R::Spawner,
        listener: R::Listener,
        config: DriverConfig,
    ) -> Self {
        let (events_tx, events) = async_channel::bounded(EVENT_QUEUE);
        let transport = Arc::clone(shared.transport());
        let accept = R::spawn(
            &spawner,
            accept_loop::<R>(listener, events_tx.clone(), Arc::clone(&transport)),
        );
        let io = AsyncIo {
            spawner,
            events: events_tx,
            config,
            transport,
            jobs: HashMap::new(),
            next_job: 0,
        };
        Driver { core: DriverCore::new(shared), io, events, accept: Some(accept) }
    }

    /// The drive loop: execute outputs, re-arm the one timer, wait for a stop, an event, a
    /// wake-up or the timer; feed what came; repeat until the node drained after a leave or
    /// is told to stop. Then closes every connection and the front.
    async fn run(mut self, signals: Signals) {
        let mut timer = R::timer(deadline_in(Duration::MAX));
        loop {
            // Acts on an overdue deadline against the clock, executes every output.
            let armed = match self.core.turn(&mut self.io) {
                Turn::Drained => break,
                Turn::Wait { rearm, armed } => {
                    if let Some(wait) = rearm {
                        R::reset_timer(&mut timer, deadline_in(wait));
                    }
                    armed
                }
            };
            // The stop first: a flood of events must not hide it. The others are all looked
            // at each turn anyway (`turn` drains the front and checks the deadline).
            let woke = async {
                let _ = signals.stop_now.recv().await;
                Woke::Stop
            }
            .or(async { Woke::Event(self.events.recv().await.ok()) })
            .or(async { Woke::Front(signals.wake.recv().await.is_ok()) })
            .or(async {
                if !armed {
                    core::future::pending::<()>().await;
                }
                core::future::poll_fn(|cx| R::poll_timer(&mut timer, cx)).await;
                Woke::Timer
            })
            .await;
            match woke {
                Woke::Event(Some(event)) => {
                    self.on_event(event);
                    // Bounded work per wake-up.
                    for _ in 1..EVENTS_PER_WAKE {
                        let Ok(event) = self.events.try_recv() else { break };
                        self.core.execute_outputs(&mut self.io);
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

    fn on_event(&mut self, event: IoEvent<R>) {
        let core = &mut self.core;
        match event {
            IoEvent::Accepted { stream, slot } => {
                if let Some(streams) = self.io.split(stream) {
                    if self.io.transport.tls().is_some() {
                        self.io.handshake_inbound(streams, slot);
                    } else {
                        let ready = Ready { streams, tls: None, slot: Some(slot) };
                        self.io.open(core, None, ready);
                    }
                }
            }
            IoEvent::Received { conn, data, permit } => {
                core.received(conn, &data);
                drop(permit);
            }
            IoEvent::ReaderDone { conn } => core.reader_done(conn),
            IoEvent::WriterDone { conn } => core.writer_done(conn),
            IoEvent::Job { job, done } => {
                self.io.jobs.remove(&job);
                match done {
                    JobDone::Connected { peer, ready } => self.io.open(core, Some(peer), ready),
                    JobDone::Secured { ready } => self.io.open(core, None, ready),
                    JobDone::HandshakeFailed => {}
                    JobDone::ConnectFailed { peer } => core.connect_failed(peer),
                    JobDone::Loaded { load, result } => core.loaded(load, result),
                    JobDone::CloseGraceOver { conn } => core.close_grace_over(conn),
                }
            }
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
                    Ok(IoEvent::WriterDone { conn }) => done = self.core.flushed(Some(conn)),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        };
        flushed.or(sleep::<R>(CLOSE_GRACE)).await;
        self.core.close_front();
        tracing::debug!(node = self.core.shared().node_id(), "driver stopped");
    }
}

impl<R: Runtime> DriverIo for AsyncIo<R> {
    type Conn = Conn<R>;

    fn load(&mut self, load: LoadId, source: SharedSource, key: Bytes) {
        self.job(async move { JobDone::Loaded { load, result: source.load(key).await } });
    }

    fn connect(&mut self, peer: Bytes, address: Bytes) {
        let connect_timeout = self.config.connect_timeout;
        let transport = Arc::clone(&self.transport);
        self.job(async move {
            let Ok(address) = String::from_utf8(address.to_vec()) else {
                return JobDone::ConnectFailed { peer };
            };
            let dial = async { Some(R::connect(&address).await) };
            match dial.or(elapsed::<R, _>(connect_timeout, None)).await {
                Some(Ok(stream)) => {
                    let Some(streams) = split::<R>(stream) else {
                        return JobDone::ConnectFailed { peer };
                    };
                    let Some(tls) = transport.tls() else {
                        return JobDone::Connected {
                            peer,
                            ready: Ready { streams, tls: None, slot: None },
                        };
                    };
                    let (streams, secured) = match TlsSession::connect(tls, &peer) {
                        Ok(session) => {
                            secure::<R>(streams, session, tls.handshake_timeout_value()).await
                        }
                        Err(error) => (streams, Err(error)),
                    };
                    match secured {
                        Ok(secured) => {
                            let ready = Ready { streams, tls: Some(Box::new(secured)), slot: None };
                            JobDone::Connected { peer, ready }
                        }
                        Err(error) => {
                            // Counted before the socket closes.
                            transport.handshake_failed(&address, &error);
                            drop(streams);
                            JobDone::ConnectFailed { peer }
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(peer = address, %error, "connect failed");
                    JobDone::ConnectFailed { peer }
                }
                None => JobDone::ConnectFailed { peer },
            }
        });
    }

    fn transmit(&mut self, conn: &mut Conn<R>, data: Vec<u8>) -> bool {
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

    fn close(&mut self, id: ConnId, conn: &mut Conn<R>, grace: bool) {
        // Dropping the queue lets the writer flush, shut down and report back.
        conn.queue = None;
        conn.reader = None;
        if grace {
            self.job(elapsed::<R, _>(CLOSE_GRACE, JobDone::CloseGraceOver { conn: id }));
        }
    }
}

impl<R: Runtime> AsyncIo<R> {
    /// Runs a one-shot job; its end comes back on the event channel. Cancelled with the
    /// driver (a kill).
    fn job(&mut self, job: impl Future<Output = JobDone<R>> + Send + 'static) {
        let (id, events) = (self.next_job, self.events.clone());
        self.next_job += 1;
        let task = R::spawn(&self.spawner, async move {
            let _ = events.send(IoEvent::Job { job: id, done: job.await }).await;
        });
        self.jobs.insert(id, task);
    }

    /// Splits a new stream; `None` (logged) when its options cannot be set.
    fn split(&self, stream: R::Stream) -> Option<(R::Reader, R::Writer)> {
        split::<R>(stream)
    }

    /// Runs an accepted connection's TLS handshake as a job (bounded in time and bytes; it
    /// keeps its place under the inbound cap meanwhile); the core hears of it once it
    /// succeeded.
    fn handshake_inbound(&mut self, streams: (R::Reader, R::Writer), slot: InboundSlot) {
        let transport = Arc::clone(&self.transport);
        self.job(async move {
            let Some(tls) = transport.tls() else { return JobDone::HandshakeFailed };
            let (streams, secured) = match TlsSession::accept(tls) {
                Ok(session) => secure::<R>(streams, session, tls.handshake_timeout_value()).await,
                Err(error) => (streams, Err(error)),
            };
            match secured {
                Ok(secured) => JobDone::Secured {
                    ready: Ready { streams, tls: Some(Box::new(secured)), slot: Some(slot) },
                },
                Err(error) => {
                    // Counted before the socket closes.
                    transport.handshake_failed(&"an inbound peer", &error);
                    drop((streams, slot));
                    JobDone::HandshakeFailed
                }
            }
        });
    }

    /// Hands a ready connection to the core (and the plaintext that came with its
    /// handshake).
    fn open(&self, core: &mut DriverCore<Conn<R>>, peer: Option<Bytes>, ready: Ready<R>) {
        let Ready { streams, tls, slot } = ready;
        let (identity, session, early) = match tls.map(|secured| *secured) {
            Some(Secured { session, identity, early }) => (Some(identity), Some(session), early),
            None => (None, None, BytesMut::new()),
        };
        let conn = core.open(peer, identity, |id| self.start(id, streams, session, slot));
        if !early.is_empty() {
            core.received(conn, &early);
        }
    }

    /// Starts a connection's reader and writer.
    fn start(
        &self,
        conn: ConnId,
        (reader, writer): (R::Reader, R::Writer),
        session: Option<TlsSession>,
        slot: Option<InboundSlot>,
    ) -> Conn<R> {
        let (link, wakes) = match session.map(TlsLink::new) {
            Some((link, wakes)) => (Some(link), Some(wakes)),
            None => (None, None),
        };
        let (queue, queued) = async_channel::unbounded();
        let activity = Arc::new(Activity::default());
        activity.touch();
        let outflow = Arc::new(Outflow::new(self.config.send_limits));
        let read = connection::read_loop::<R>(
            conn,
            reader,
            self.events.clone(),
            Arc::clone(&activity),
            Arc::clone(&outflow),
            self.config.idle_timeout,
            link.clone(),
        );
        let write = connection::write_loop::<R>(
            conn,
            writer,
            queued,
            self.events.clone(),
            activity,
            Arc::clone(&outflow),
            link.zip(wakes),
        );
        Conn {
            queue: Some(queue),
            outflow,
            reader: Some(R::spawn(&self.spawner, read)),
            _writer: R::spawn(&self.spawner, write),
            _slot: slot,
        }
    }
}

/// Splits a new stream; `None` (logged) when its options cannot be set.
fn split<R: Runtime>(stream: R::Stream) -> Option<(R::Reader, R::Writer)> {
    R::split(stream).map_err(|error| tracing::debug!(%error, "a new connection is dropped")).ok()
}

/// Accepts connections until the driver drops this task; over the inbound cap a connection
/// is closed at once (dropped here).
async fn accept_loop<R: Runtime>(
    listener: R::Listener,
    events: Sender<IoEvent<R>>,
    transport: Arc<TransportGuard>,
) {
    loop {
        match R::accept(&listener).await {
            Ok(stream) => {
                let Some(slot) = transport.admit() else { continue };
                if events.send(IoEvent::Accepted { stream, slot }).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accept failed");
                sleep::<R>(Duration::from_millis(50)).await;
            }
        }
    }
}
