//! One TCP connection of the event loop: its socket, where it is in its life, and the bytes
//! the node transmitted that the socket has not taken yet. Transport only: the connection
//! table itself is the shared [`DriverCore`](herdcache_runtime::DriverCore)'s.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herdcache_proto::ConnId;
use herdcache_runtime::tls::{SessionError, TlsSession};
use herdcache_runtime::{InboundSlot, MAX_GATHER, WriteQueue};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// The bytes transmitted to a connection and not yet written, in order (the shared
/// [`WriteQueue`]), and how many. The event loop never waits on one peer's socket; it bounds
/// the count with the node's [`SendLimits`](herdcache_runtime::SendLimits) (stop reading,
/// close).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: WriteQueue,
    /// Bytes queued and not written.
    queued: usize,
}

impl Outbox {
    pub(crate) fn push(&mut self, data: Vec<u8>) {
        self.queued += data.len();
        self.queue.push(data);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Writes as much as `socket` takes, with vectored writes, until everything is written
    /// (`Ok(true)`) or the socket would block (`Ok(false)`: the rest stays queued).
    pub(crate) fn write_to(&mut self, socket: &mut impl Write) -> io::Result<bool> {
        while !self.queue.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_GATHER];
                let filled = self.queue.io_slices(&mut slices);
                socket.write_vectored(&slices[..filled])
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(taken) => {
                    self.queue.advance(taken);
                    self.queued -= taken;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }
}

/// Where an open connection is in its life (a connect in progress is not a connection yet:
/// the event loop keeps it apart, see [`Connecting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Open both ways.
    Open,
    /// The node closed it: what it transmitted before is being written, nothing is read.
    Closing,
}

/// A non-blocking connect in progress: the core does not know it yet.
#[derive(Debug)]
pub(crate) struct Connecting {
    pub(crate) stream: TcpStream,
    pub(crate) peer: Bytes,
    /// When the connect gives up (`None`: a timeout too far to count).
    pub(crate) deadline: Option<Instant>,
}

/// A connection in its TLS handshake (after the accept, or after the connect): the core does
/// not know it yet. The session is the shared runtime's ([`TlsSession`]); this only moves its
/// bytes between it and the socket.
pub(crate) struct Handshaking {
    pub(crate) stream: TcpStream,
    pub(crate) session: TlsSession,
    /// The peer dialled (`None`: accepted).
    pub(crate) peer: Option<Bytes>,
    /// An accepted connection's place under the inbound cap.
    pub(crate) slot: Option<InboundSlot>,
    /// When the handshake gives up (`None`: a timeout too far to count).
    pub(crate) deadline: Option<Instant>,
    /// Handshake bytes the socket has not taken yet.
    outbox: Outbox,
    /// Plaintext that came with the last handshake bytes (the peer's first frames).
    pub(crate) early: BytesMut,
}

/// Where a handshake is after [`Handshaking::advance`].
#[derive(Debug)]
pub(crate) enum HandshakeStep {
    /// Complete, everything written: the connection is ready for the core.
    Done,
    /// Waiting for the socket with this interest.
    Waiting(Interest),
    /// Failed: close the socket.
    Failed(SessionError),
}

impl Handshaking {
    pub(crate) fn new(
        stream: TcpStream,
        session: TlsSession,
        peer: Option<Bytes>,
        slot: Option<InboundSlot>,
        deadline: Option<Instant>,
    ) -> Self {
        Handshaking {
            stream,
            session,
            peer,
            slot,
            deadline,
            outbox: Outbox::default(),
            early: BytesMut::new(),
        }
    }

    /// Reads what the socket has (until `WouldBlock`, or the handshake completed), then
    /// writes what the session has to send.
    pub(crate) fn advance(&mut self, buffer: &mut [u8]) -> HandshakeStep {
        while self.session.is_handshaking() {
            match self.stream.read(buffer) {
                Ok(0) => return HandshakeStep::Failed(SessionError::Closed),
                Ok(read) => {
                    let Some(bytes) = buffer.get(..read) else { break };
                    if let Err(error) = self.session.receive(bytes, &mut self.early) {
                        // The alert for the peer, best effort.
                        let mut alert = Vec::new();
                        self.session.pending_ciphertext(&mut alert);
                        let _ = self.stream.write(&alert);
                        return HandshakeStep::Failed(error);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return HandshakeStep::Failed(SessionError::Io(error)),
            }
        }
        let mut ciphertext = Vec::new();
        self.session.pending_ciphertext(&mut ciphertext);
        self.outbox.push(ciphertext);
        match self.outbox.write_to(&mut self.stream) {
            Err(error) => HandshakeStep::Failed(SessionError::Io(error)),
            Ok(true) if !self.session.is_handshaking() => HandshakeStep::Done,
            Ok(true) => HandshakeStep::Waiting(Interest::READABLE),
            Ok(false) => HandshakeStep::Waiting(Interest::READABLE | Interest::WRITABLE),
        }
    }
}

/// A connection's socket and transport state, as the driver's connection table
/// ([`DriverCore`](herdcache_runtime::DriverCore)) keeps it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) id: ConnId,
    pub(crate) phase: Phase,
    pub(crate) outbox: Outbox,
    /// The interest registered with the poller now (`None`: registering failed, the
    /// connection is dropped at once).
    interest: Option<Interest>,
    /// When bytes last moved either way, for the idle timeout.
    pub(crate) last_activity: Instant,
    /// When the socket last took bytes, or bytes were queued on an empty outbox: the start
    /// of the write-stall window.
    pub(crate) last_write_progress: Instant,
    /// Reading stopped: the outbox is above the high-water mark (until the low-water mark).
    pub(crate) reading_paused: bool,
    /// When a closing flush gives up (`None` while open, or closing without a grace timer).
    pub(crate) deadline: Option<Instant>,
    /// The earliest entry of this connection in the loop's timer heap (others are stale).
    pub(crate) timer: Option<Instant>,
    /// Its TLS session (`None`: plain TCP): what is read is decrypted before the core sees
    /// it, what the core transmits is encrypted before the outbox takes it.
    pub(crate) tls: Option<Box<TlsSession>>,
    /// An accepted connection's place under the inbound cap, freed with the connection.
    pub(crate) _slot: Option<InboundSlot>,
}

/// The poll token of connection `id`: connection tokens count up from `first`, never reused.
pub(crate) fn token_of(id: ConnId, first: usize) -> Token {
    Token(usize::try_from(id.0).unwrap_or(usize::MAX).saturating_add(first))
}

impl Conn {
    /// Adopts `stream` as connection `id`, readable under its token (a connected stream
    /// registered for its connect under another token is moved to it). A registration that
    /// fails leaves the connection [`Conn::is_registered`] false.
    pub(crate) fn adopt(
        registry: &Registry,
        (mut stream, tls, slot): (TcpStream, Option<Box<TlsSession>>, Option<InboundSlot>),
        id: ConnId,
        token: Token,
        already_registered: bool,
        now: Instant,
    ) -> Conn {
        let registered = if already_registered {
            registry.reregister(&mut stream, token, Interest::READABLE)
        } else {
            registry.register(&mut stream, token, Interest::READABLE)
        };
        if let Err(error) = &registered {
            tracing::warn!(conn = id.0, %error, "cannot register a connection");
        }
        Conn {
            stream,
            id,
            phase: Phase::Open,
            outbox: Outbox::default(),
            interest: registered.ok().map(|()| Interest::READABLE),
            last_activity: now,
            last_write_progress: now,
            reading_paused: false,
            deadline: None,
            timer: None,
            tls,
            _slot: slot,
        }
    }

    /// Queues bytes for the socket that the core did not transmit (TLS records of the
    /// session's own: alerts, key updates, close_notify); `true` when the outbox was empty
    /// (the caller schedules a flush).
    pub(crate) fn queue_own(&mut self, bytes: Vec<u8>, now: Instant) -> bool {
        if bytes.is_empty() {
            return false;
        }
        let was_empty = self.outbox.is_empty();
        if was_empty {
            self.last_write_progress = now;
        }
        self.outbox.push(bytes);
        was_empty
    }

    /// Whether the socket is registered with the poller (else it is dropped at once).
    pub(crate) fn is_registered(&self) -> bool {
        self.interest.is_some()
    }

    /// Registers the interest the connection needs now: readable while open (and reading is
    /// not paused), writable while bytes are pending (and only then).
    pub(crate) fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let pending = !self.outbox.is_empty();
        let wanted = match self.phase {
            // Paused reading implies bytes pending (above the high-water mark).
            Phase::Open if self.reading_paused => Interest::WRITABLE,
            Phase::Open if pending => Interest::READABLE | Interest::WRITABLE,
            Phase::Open => Interest::READABLE,
            // Readable too, so that what the peer still sends is drained and dropping the
            // socket sends a FIN, not a reset that could destroy what was just written.
            Phase::Closing if pending => Interest::READABLE | Interest::WRITABLE,
            Phase::Closing => Interest::READABLE,
        };
        if self.interest != Some(wanted) {
            registry.reregister(&mut self.stream, token, wanted)?;
            self.interest = Some(wanted);
        }
        Ok(())
    }

    /// Writes what is pending; `Ok(true)` when nothing is left.
    pub(crate) fn flush(&mut self, now: Instant) -> io::Result<bool> {
        if self.outbox.is_empty() {
            return Ok(true);
        }
        let before = self.outbox.queued();
        let flushed = self.outbox.write_to(&mut self.stream)?;
        self.last_activity = now;
        if self.outbox.queued() < before {
            self.last_write_progress = now;
        }
        Ok(flushed)
    }

    /// Ends a connection whose pending bytes were written: half-close, drop what the peer
    /// sent that is still unread (at most `scratch.len()` bytes: closing a socket with unread
    /// bytes sends a reset, which may destroy what was just written), deregister. The socket
    /// closes when the connection is dropped.
    pub(crate) fn finish(&mut self, registry: &Registry, scratch: &mut [u8]) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.read(scratch);
        self.deregister(registry);
    }

    /// Takes the socket off the poller (before the connection is dropped).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        if self.interest.take().is_some() {
            let _ = registry.deregister(&mut self.stream);
        }
    }

    /// The next instant a timer of this connection is due: while closing, its grace
    /// deadline; while open, the end of its idle window or of its write-stall window (while
    /// bytes are pending), whichever is first. `None` when no deadline can be counted.
    pub(crate) fn next_deadline(
        &self,
        idle: Option<Duration>,
        write_stall: Duration,
    ) -> Option<Instant> {
        match self.phase {
            Phase::Closing => self.deadline,
            Phase::Open => {
                let idle = idle.and_then(|idle| self.last_activity.checked_add(idle));
                let stall = (!self.outbox.is_empty())
                    .then(|| self.last_write_progress.checked_add(write_stall))
                    .flatten();
                idle.into_iter().chain(stall).min()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `step` bytes per write across the slices it is given, and
    /// would block after `budget` bytes until given more.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut room = self.step.min(self.budget);
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(room);
                self.written.extend_from_slice(&buf[..n]);
                room -= n;
                taken += n;
            }
            self.budget -= taken;
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pending_bytes_survive_would_block_and_keep_their_order() {
        for step in [1, 2, 3, 5, 7, 64, 1000] {
            let chunks: Vec<Vec<u8>> =
                vec![b"hello".to_vec(), Vec::new(), b" ".to_vec(), b"world, again".to_vec()];
            let expected: Vec<u8> = chunks.concat();
            let mut outbox = Outbox::default();
            for chunk in chunks {
                outbox.push(chunk);
            }
            let mut socket = Trickle { written: Vec::new(), step, budget: 4 };
            assert!(!outbox.write_to(&mut socket).expect("no error"), "step {step}: blocked");
            assert_eq!(socket.written, expected[..4], "step {step}");
            assert!(!outbox.is_empty());
            socket.budget = usize::MAX;
            assert!(outbox.write_to(&mut socket).expect("no error"), "step {step}: flushed");
            assert_eq!(socket.written, expected, "step {step}");
            assert!(outbox.is_empty());
        }
    }

    /// The crate docs promise about 200 bytes of state per connection (with its entry in the
    /// driver's table: an id, a closing flag).
    #[test]
    fn a_connection_costs_what_the_docs_say() {
        let entry = std::mem::size_of::<(ConnId, Conn, bool)>();
        assert!(entry <= 200, "{entry} bytes per connection");
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error() {
        let mut outbox = Outbox::default();
        outbox.push(b"x".to_vec());
        let mut socket = Trickle { written: Vec::new(), step: 0, budget: 1 };
        let error = outbox.write_to(&mut socket).expect_err("write zero");
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    }
}
