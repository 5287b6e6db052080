//! One TCP connection of the event loop: its socket, where it is in its life, and the bytes
//! the node transmitted that the socket has not taken yet. Transport only.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// The most chunks one vectored write gathers (Linux takes up to 1024 slices per call).
const MAX_GATHER: usize = 64;

/// The bytes transmitted to a connection and not yet written, in order, and how many. The
/// event loop never waits on one peer's socket; it bounds the count with the node's
/// [`SendLimits`](herdcache_runtime::SendLimits) (stop reading, close).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    written: usize,
    /// Bytes queued and not written.
    queued: usize,
}

impl Outbox {
    pub(crate) fn push(&mut self, data: Vec<u8>) {
        if !data.is_empty() {
            self.queued += data.len();
            self.chunks.push_back(data);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Writes as much as `socket` takes, with vectored writes, until everything is written
    /// (`Ok(true)`) or the socket would block (`Ok(false)`: the rest stays queued).
    pub(crate) fn write_to(&mut self, socket: &mut impl Write) -> io::Result<bool> {
        while let Some(front) = self.chunks.front() {
            let mut slices = [IoSlice::new(&[]); MAX_GATHER];
            slices[0] = IoSlice::new(&front[self.written..]);
            let mut count = 1;
            for chunk in self.chunks.iter().skip(1).take(MAX_GATHER - 1) {
                slices[count] = IoSlice::new(chunk);
                count += 1;
            }
            match socket.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(taken) => self.consume(taken),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }

    /// Drops the first `taken` bytes.
    fn consume(&mut self, mut taken: usize) {
        self.queued -= taken;
        while let Some(front) = self.chunks.front() {
            let left = front.len() - self.written;
            if taken < left {
                self.written += taken;
                return;
            }
            taken -= left;
            self.written = 0;
            self.chunks.pop_front();
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// A non-blocking connect to `peer` is in progress (the core does not know the
    /// connection yet).
    Connecting { peer: Bytes },
    /// Open both ways.
    Open,
    /// The node closed it: what it transmitted before is being written, nothing is read.
    Closing,
}

/// A socket and its state.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) token: Token,
    pub(crate) phase: Phase,
    pub(crate) outbox: Outbox,
    /// The interest registered with the poller now.
    interest: Interest,
    /// When bytes last moved either way, for the idle timeout.
    pub(crate) last_activity: Instant,
    /// When the socket last took bytes, or bytes were queued on an empty outbox: the start
    /// of the write-stall window.
    pub(crate) last_write_progress: Instant,
    /// Reading stopped: the outbox is above the high-water mark (until the low-water mark).
    pub(crate) reading_paused: bool,
    /// When a connect or a closing flush gives up.
    pub(crate) deadline: Option<Instant>,
    /// The earliest entry of this connection in the loop's timer heap (others are stale).
    pub(crate) timer: Option<Instant>,
}

impl Conn {
    /// Registers `stream` for `interest` (connecting: writable; accepted: readable).
    pub(crate) fn register(
        registry: &Registry,
        mut stream: TcpStream,
        token: Token,
        phase: Phase,
        interest: Interest,
        now: Instant,
    ) -> io::Result<Conn> {
        registry.register(&mut stream, token, interest)?;
        let outbox = Outbox::default();
        Ok(Conn {
            stream,
            token,
            phase,
            outbox,
            interest,
            last_activity: now,
            last_write_progress: now,
            reading_paused: false,
            deadline: None,
            timer: None,
        })
    }

    /// Registers the interest the connection needs now: readable while open (and reading is
    /// not paused), writable while connecting or while bytes are pending (and only then).
    pub(crate) fn update_interest(&mut self, registry: &Registry) -> io::Result<()> {
        let pending = !self.outbox.is_empty();
        let wanted = match self.phase {
            Phase::Connecting { .. } => Interest::WRITABLE,
            // Paused reading implies bytes pending (above the high-water mark).
            Phase::Open if self.reading_paused => Interest::WRITABLE,
            Phase::Open if pending => Interest::READABLE | Interest::WRITABLE,
            Phase::Open => Interest::READABLE,
            // Readable too, so that what the peer still sends is drained and dropping the
            // socket sends a FIN, not a reset that could destroy what was just written.
            Phase::Closing if pending => Interest::READABLE | Interest::WRITABLE,
            Phase::Closing => Interest::READABLE,
        };
        if wanted != self.interest {
            registry.reregister(&mut self.stream, self.token, wanted)?;
            self.interest = wanted;
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
    /// bytes sends a reset, which may destroy what was just written), deregister, drop.
    pub(crate) fn finish(mut self, registry: &Registry, scratch: &mut [u8]) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.read(scratch);
        let _ = registry.deregister(&mut self.stream);
    }

    /// The next instant a timer of this connection is due: its connect or close deadline,
    /// or (while open) the end of its idle window or of its write-stall window (while bytes
    /// are pending), whichever is first. `None` when no deadline can be counted (too far).
    pub(crate) fn next_deadline(
        &self,
        idle: Option<Duration>,
        write_stall: Duration,
    ) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { .. } | Phase::Closing => self.deadline,
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

    /// The crate docs promise about 200 bytes of state per connection (with its map entry).
    #[test]
    fn a_connection_costs_what_the_docs_say() {
        let entry = std::mem::size_of::<(Token, Conn)>();
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
