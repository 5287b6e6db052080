//! The runtime-independent half of a driver: the drive loop's bookkeeping around the front
//! (executing its outputs, the one timer, the table of connections), so that a runtime crate's
//! driver only spawns, reads, writes and sleeps.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;
use std::collections::HashMap;

use crate::front::Front;
use crate::handle::Shared;
use crate::log_throttle::LogThrottle;
use crate::source::SharedSource;
use herdcache_proto::Instant;
use herdcache_proto::{ConnId, Event, Input, LoadId, LoadResult, Output, PeerIdentity};

/// What a driver does with the runtime: the IO half of the node's outputs. `Conn` is what it keeps per
/// connection (its writer's queue, its tasks).
pub trait DriverIo<S = SharedSource> {
    /// A connection's runtime handles.
    type Conn;

    /// Calls `source` for `key` (a task of its own), then reports
    /// [`DriverCore::loaded`].
    fn load(&mut self, load: LoadId, source: S, key: Bytes);

    /// Dials `address` (`host:port`, as the core names it) within the connect timeout, then
    /// reports [`DriverCore::open`] with `peer`, or [`DriverCore::connect_failed`].
    fn connect(&mut self, peer: Bytes, address: Bytes);

    /// Queues `data` on the connection's writer, after what was queued before, counting it
    /// against the connection's send buffer ([`Outflow::queue`](crate::Outflow::queue));
    /// `false` when that refused it (past the hard cap): the connection is then dropped at
    /// once, its tasks with it.
    #[must_use]
    fn transmit(&mut self, conn: &mut Self::Conn, data: Vec<u8>) -> bool;

    /// Stops reading `conn` and lets its writer flush what was queued and shut the socket
    /// down; the writer then reports [`DriverCore::writer_done`]. With `grace`, also
    /// reports [`DriverCore::close_grace_over`] after [`CLOSE_GRACE`](crate::CLOSE_GRACE),
    /// which cuts a writer whose peer does not read.
    fn close(&mut self, id: ConnId, conn: &mut Self::Conn, grace: bool);

    /// Something observers may want to know (the driver has logged it already: see
    /// `EventLog`). Nothing by default.
    fn event(&mut self, node: &str, event: &Event) {
        let _ = (node, event);
    }
}

/// The log records of a node's events, the same on every runtime: a drain at info, refused
/// connections and requests at warn with the reason — at most one of each kind a second,
/// the next one saying how many were held back (a flood of refusals is counted in the
/// stats, not written line by line) — and everything else at debug.
#[derive(Debug, Default)]
struct EventLog {
    refused_connections: LogThrottle,
    refused_requests: LogThrottle,
}

impl EventLog {
    fn record(&mut self, node: &str, event: &Event) {
        match event {
            Event::Drained => tracing::info!(node, "drained"),
            Event::ConnectionRefused { conn, reason } => {
                if let Some(held_back) = self.refused_connections.admit(std::time::Instant::now()) {
                    tracing::warn!(node, conn = conn.0, ?reason, held_back, "connection refused");
                }
            }
            Event::RequestRefused { conn, peer, frame, reason } => {
                if let Some(held_back) = self.refused_requests.admit(std::time::Instant::now()) {
                    let peer = alloc::string::String::from_utf8_lossy(peer);
                    tracing::warn!(
                        node,
                        conn = conn.0,
                        %peer,
                        ?frame,
                        ?reason,
                        held_back,
                        "peer request refused"
                    );
                }
            }
            Event::PeerUp { peer } => {
                let peer = alloc::string::String::from_utf8_lossy(peer);
                tracing::debug!(node, %peer, "peer up");
            }
            other => tracing::debug!(node, event = ?other, "event"),
        }
    }
}

/// What the driver waits for next, from [`DriverCore::turn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The node drained after a leave: shut down.
    Drained,
    /// Wait for a wake-up, an IO event, or the timer.
    Wait {
        /// Set the timer to fire this far from now (the deadline moved); `None`: leave it.
        rearm: Option<Duration>,
        /// Whether the timer is armed at all (else wait without it).
        armed: bool,
    },
}

struct ConnEntry<C> {
    io: C,
    /// The node closed it: the writer is flushing, the reader stopped.
    closing: bool,
}

/// The driver's bookkeeping: owns the connection table (ids unique for the node's lifetime),
/// feeds the front, executes its outputs through a [`DriverIo`], and keeps the one timer's
/// deadline. Dropping it closes the front, so no caller waits forever however the driver
/// ends.
pub struct DriverCore<C, S = SharedSource> {
    shared: Arc<Shared<S>>,
    front: Front,
    conns: HashMap<ConnId, ConnEntry<C>>,
    next_conn: u64,
    drained: bool,
    /// The core deadline the timer is set to; `None` when unarmed or fired.
    armed_at: Option<Instant>,
    /// Each connection's hello nonce.
    nonces: Nonces,
    log: EventLog,
}

/// Fresh, unpredictable hello nonces (the cluster secret's proofs cover them, so one that
/// repeats or can be guessed would let a recorded proof be replayed): SipHash under std's
/// per-process random keys (`RandomState`, seeded by the operating system) of a counter and
/// the clock. No extra dependency, and nothing an outsider who sees earlier nonces can
/// extrapolate from.
struct Nonces {
    keys: std::collections::hash_map::RandomState,
    counter: u64,
}

impl Nonces {
    fn new() -> Nonces {
        Nonces { keys: std::collections::hash_map::RandomState::new(), counter: 0 }
    }

    fn next(&mut self) -> [u8; 16] {
        use core::hash::BuildHasher;
        self.counter += 1;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let high = self.keys.hash_one((self.counter, time, 0u8));
        let low = self.keys.hash_one((self.counter, time, 1u8));
        let mut nonce = [0; 16];
        nonce[..8].copy_from_slice(&high.to_be_bytes());
        nonce[8..].copy_from_slice(&low.to_be_bytes());
        nonce
    }
}

impl<C, S: Clone> DriverCore<C, S> {
    /// The bookkeeping of the node `shared`.
    #[must_use]
    pub fn new(shared: Arc<Shared<S>>) -> Self {
        DriverCore {
            front: shared.front().clone(),
            shared,
            conns: HashMap::new(),
            next_conn: 0,
            drained: false,
            armed_at: None,
            nonces: Nonces::new(),
            log: EventLog::default(),
        }
    }

    /// The node's shared state.
    #[must_use]
    pub fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }

    /// Before each wait: acts on an overdue deadline (expiry is checked against the clock,
    /// not only by the timer), executes every output, and says what to wait for. The timer
    /// is re-armed only when the deadline moved.
    pub fn turn(&mut self, io: &mut impl DriverIo<S, Conn = C>) -> Turn {
        if self.front.poll_timeout_in() == Some(Duration::ZERO) {
            self.front.handle_timeout();
        }
        self.execute_outputs(io);
        if self.drained {
            return Turn::Drained;
        }
        let next = self.front.poll_timeout();
        let rearm = next
            .filter(|at| self.armed_at != Some(*at))
            .map(|at| at.saturating_duration_since(self.front.now()));
        self.armed_at = next;
        Turn::Wait { rearm, armed: next.is_some() }
    }

    /// The timer fired.
    pub fn timer_fired(&mut self) {
        self.armed_at = None;
        self.front.handle_timeout();
    }

    /// Drains the front's outputs and executes them until none is left (executing one may
    /// feed an input, which queues more behind it). Call it between events handled in a
    /// batch.
    pub fn execute_outputs(&mut self, io: &mut impl DriverIo<S, Conn = C>) {
        while let Some(output) = self.front.poll_output() {
            self.execute(io, output);
        }
    }

    fn execute(&mut self, io: &mut impl DriverIo<S, Conn = C>, output: Output) {
        match output {
            Output::Load { load, keyspace, key } => match self.shared.source(&keyspace) {
                Some(source) => io.load(load, source, key),
                None => {
                    let result = LoadResult::Failed(Bytes::from_static(b"no data source"));
                    self.feed(Input::Loaded { load, result });
                }
            },
            // A connection no longer in the table: its close is on the way to the node.
            Output::Transmit { conn, data } => {
                if let Some(entry) = self.conns.get_mut(&conn).filter(|entry| !entry.closing) {
                    if !io.transmit(&mut entry.io, data) {
                        self.forget(conn);
                    }
                }
            }
            Output::Connect { peer, address } => io.connect(peer, address),
            Output::Close { conn } => {
                if let Some(entry) = self.conns.get_mut(&conn).filter(|entry| !entry.closing) {
                    entry.closing = true;
                    io.close(conn, &mut entry.io, true);
                }
            }
            Output::Event(event) => {
                self.drained |= event == Event::Drained;
                self.log.record(self.shared.node_id(), &event);
                io.event(self.shared.node_id(), &event);
            }
            // The front answers its callers itself and never queues a reply.
            Output::Reply { .. } => {}
        }
    }

    /// A connection was accepted (`peer` `None`) or dialled: `make` starts its IO under the
    /// new id; the front is told, with the identity the transport authenticated (TLS: the
    /// names of the peer's verified certificate; plain TCP: `None`).
    pub fn open(
        &mut self,
        peer: Option<Bytes>,
        peer_identity: Option<PeerIdentity>,
        make: impl FnOnce(ConnId) -> C,
    ) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(conn, ConnEntry { io: make(conn), closing: false });
        let nonce = self.nonces.next();
        match peer {
            Some(peer) => self.feed(Input::Connected { conn, peer, nonce, peer_identity }),
            None => self.feed(Input::Accepted { conn, nonce, peer_identity }),
        }
        conn
    }

    /// The IO of connection `conn`, open or closing (`None`: not in the table), for a
    /// driver that handles readiness itself (herdcache-mio).
    pub fn conn_mut(&mut self, conn: ConnId) -> Option<&mut C> {
        self.conns.get_mut(&conn).map(|entry| &mut entry.io)
    }

    /// Bytes arrived on `conn`.
    pub fn received(&mut self, conn: ConnId, data: &[u8]) {
        self.feed(Input::Received { conn, data });
    }

    /// The reader of `conn` stopped (EOF, error, idle): the connection is over, unless the
    /// node closed it, in which case the writer reports the end.
    pub fn reader_done(&mut self, conn: ConnId) {
        if self.conns.get(&conn).is_some_and(|entry| !entry.closing) {
            self.forget(conn);
        }
    }

    /// The writer of `conn` stopped (flushed after a close, or a write error).
    pub fn writer_done(&mut self, conn: ConnId) {
        self.forget(conn);
    }

    /// The grace period of a closing connection ended.
    pub fn close_grace_over(&mut self, conn: ConnId) {
        self.forget(conn);
    }

    /// A dial failed.
    pub fn connect_failed(&mut self, peer: Bytes) {
        self.feed(Input::ConnectFailed { peer });
    }

    /// A data-source call ended.
    pub fn loaded(&mut self, load: LoadId, result: LoadResult) {
        self.feed(Input::Loaded { load, result });
    }

    /// Drops a connection's IO (which ends its tasks) and tells the front it is closed.
    fn forget(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.feed(Input::Closed { conn });
        }
    }

    fn feed(&mut self, input: Input<'_>) {
        // Refused inputs are races the core resolves itself: bytes or a close for a
        // connection it already dropped, a load it already timed out.
        let _ = self.front.handle_input(input);
    }

    /// Shutting down: closes every connection without a grace timer (the caller bounds the
    /// flush), then waits for [`DriverCore::flushed`].
    pub fn close_all(&mut self, io: &mut impl DriverIo<S, Conn = C>) {
        for (&conn, entry) in &mut self.conns {
            if !entry.closing {
                entry.closing = true;
                io.close(conn, &mut entry.io, false);
            }
        }
    }

    /// While shutting down: a writer finished; whether every connection is flushed now.
    pub fn flushed(&mut self, writer_done: Option<ConnId>) -> bool {
        if let Some(conn) = writer_done {
            self.conns.remove(&conn);
        }
        self.conns.is_empty()
    }

    /// The end of a shutdown: every waiting caller gets `ShuttingDown`.
    pub fn close_front(&mut self) {
        self.front.close();
        // Nothing is executed any more: what the close queued is dropped.
        while self.front.poll_output().is_some() {}
    }
}

impl<C, S> Drop for DriverCore<C, S> {
    fn drop(&mut self) {
        self.front.close();
    }
}

// The front's locks are loom's under `herdcache_loom`, usable only inside a loom model.
#[cfg(all(test, not(herdcache_loom)))]
mod tests {
    use super::*;
    use crate::Setup;
    use alloc::vec;
    use core::net::SocketAddr;
    use herdcache_proto::{Error, KeyspaceConfig};

    /// The runtime half, recording what the core asked of it.
    #[derive(Default)]
    struct Recorder {
        /// Transmits longer than this are refused (over the hard cap).
        refuse_above: usize,
        transmitted: Vec<(ConnId, usize)>,
        closed: Vec<(ConnId, bool)>,
        loads: Vec<(LoadId, Bytes)>,
        events: Vec<Event>,
    }

    impl DriverIo<()> for Recorder {
        type Conn = ConnId;

        fn load(&mut self, load: LoadId, _source: (), key: Bytes) {
            self.loads.push((load, key));
        }

        fn connect(&mut self, _peer: Bytes, _address: Bytes) {}

        fn transmit(&mut self, conn: &mut ConnId, data: Vec<u8>) -> bool {
            self.transmitted.push((*conn, data.len()));
            data.len() <= self.refuse_above
        }

        fn close(&mut self, id: ConnId, _conn: &mut ConnId, grace: bool) {
            self.closed.push((id, grace));
        }

        fn event(&mut self, _node: &str, event: &Event) {
            self.events.push(event.clone());
        }
    }

    fn driver() -> DriverCore<ConnId, ()> {
        let mut setup = Setup::<()>::new();
        setup.add_keyspace(KeyspaceConfig::new("sourced", 1 << 20), ());
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let node = setup.assemble(addr, Arc::new(|| {})).expect("valid setup");
        DriverCore::new(node.shared)
    }

    #[test]
    fn hello_nonces_do_not_repeat_within_or_across_drivers() {
        let (mut first, mut second) = (Nonces::new(), Nonces::new());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            assert!(seen.insert(first.next()), "a nonce repeated");
            assert!(seen.insert(second.next()), "a nonce repeated");
        }
    }

    #[test]
    fn garbage_closes_the_connection_once_and_nothing_is_sent_after_the_close() {
        let (mut core, mut io) =
            (driver(), Recorder { refuse_above: usize::MAX, ..Default::default() });
        let conn = core.open(None, None, |id| id);
        core.received(conn, &[0xff; 64]);
        core.execute_outputs(&mut io);
        assert!(!io.transmitted.is_empty(), "an error frame for the peer");
        assert_eq!(io.closed, vec![(conn, true)], "closed with a grace period");
        // The reader ending after the close does not end the connection: the writer flushes.
        core.reader_done(conn);
        assert!(!core.flushed(None), "still flushing");
        core.writer_done(conn);
        assert!(core.flushed(None));
        core.close_grace_over(conn);
        core.execute_outputs(&mut io);
        assert_eq!(io.closed.len(), 1, "one close");
    }

    #[test]
    fn a_transmit_the_send_buffer_refuses_drops_the_connection_at_once() {
        let (mut core, mut io) = (driver(), Recorder::default());
        let conn = core.open(None, None, |id| id);
        core.received(conn, &[0xff; 64]);
        core.execute_outputs(&mut io);
        assert_eq!(io.transmitted.len(), 1, "the error frame was refused");
        assert!(io.closed.is_empty(), "dropped, not closed with a flush");
        assert!(core.flushed(None), "the connection is gone");
    }

    #[test]
    fn loads_go_to_the_source_or_fail_without_one() {
        let (mut core, mut io) =
            (driver(), Recorder { refuse_above: usize::MAX, ..Default::default() });
        let front = core.shared().front().clone();
        let mut sourced = front.get(b"sourced", b"k");
        front.create_keyspace(KeyspaceConfig::new("bare", 1 << 20)).expect("created");
        let bare = front.get(b"bare", b"k");
        assert!(matches!(core.turn(&mut io), Turn::Wait { armed: true, .. }));
        let keys: Vec<&Bytes> = io.loads.iter().map(|(_, key)| key).collect();
        assert_eq!(keys, vec![&Bytes::from_static(b"k")], "one load, of the sourced keyspace");
        assert!(sourced.try_take().is_none(), "waits for its load");
        assert_eq!(
            bare.wait().map(|value| value.bytes),
            Err(Error::DataSource(Bytes::from_static(b"no data source")))
        );
    }

    #[test]
    fn the_timer_is_rearmed_only_when_the_deadline_moves_and_a_leave_drains() {
        let (mut core, mut io) =
            (driver(), Recorder { refuse_above: usize::MAX, ..Default::default() });
        let front = core.shared().front().clone();
        let _pending = front.get(b"sourced", b"k");
        let Turn::Wait { rearm: Some(_), armed: true } = core.turn(&mut io) else {
            panic!("a load's deadline arms the timer")
        };
        assert_eq!(core.turn(&mut io), Turn::Wait { rearm: None, armed: true }, "unchanged");
        front.leave();
        let (load, _) = io.loads[0];
        core.loaded(load, LoadResult::NotFound);
        let mut turns = 0;
        while core.turn(&mut io) != Turn::Drained {
            core.timer_fired();
            turns += 1;
            assert!(turns < 10, "a lone node drains: {:?}", io.events);
        }
        assert!(io.events.contains(&Event::Drained));
    }
}
