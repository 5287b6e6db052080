//! Transport pieces every connection of every runtime needs: the queue a writer gathers into
//! vectored writes, and the activity clock of the idle timeout.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, ready};
use core::time::Duration;
use std::io::{self, IoSlice};

use crate::time::Instant;

/// Bytes asked of one read.
pub const READ_CHUNK: usize = 64 * 1024;
/// The most queued chunks one vectored write gathers.
pub const MAX_GATHER: usize = 64;
/// Capacity of the bounded channel from a node's IO tasks to its driver: when it is full,
/// readers wait, and TCP pushes back on the peers.
pub const EVENT_QUEUE: usize = 1024;
/// IO events a driver handles per wake-up before it looks at its other sources again.
pub const EVENTS_PER_WAKE: usize = 64;
/// How long a closing connection may take to flush what the node transmitted before.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The chunks queued on one connection, written in order with vectored writes that may be
/// partial: [`WriteQueue::io_slices`] lends the next slices, [`WriteQueue::advance`] consumes
/// what a write took.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    offset: usize,
}

impl WriteQueue {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        WriteQueue::default()
    }

    /// Queues a chunk after the others.
    pub fn push(&mut self, chunk: Vec<u8>) {
        if !chunk.is_empty() {
            self.chunks.push_back(chunk);
        }
    }

    /// Chunks queued (partly written ones included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether every byte was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Fills `out` with the unwritten bytes, one slice per chunk, up to `out.len()` chunks;
    /// returns how many slices it filled.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, (i, chunk)) in out.iter_mut().zip(self.chunks.iter().enumerate()) {
            let start = if i == 0 { self.offset } else { 0 };
            *slot = IoSlice::new(&chunk[start..]);
            filled += 1;
        }
        filled
    }

    /// Writes until the queue is empty with `write_vectored` (a socket's
    /// `poll_write_vectored`), which may take part of what it is given. A write of zero bytes
    /// is [`io::ErrorKind::WriteZero`]; an error leaves the unwritten bytes queued.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        mut write_vectored: impl FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_GATHER];
            let filled = self.io_slices(&mut slices);
            let written = ready!(write_vectored(cx, &slices[..filled]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Consumes `written` bytes from the front (what a write reported).
    pub fn advance(&mut self, mut written: usize) {
        while let Some(front) = self.chunks.front() {
            let left = front.len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.offset = 0;
            self.chunks.pop_front();
        }
    }
}

/// When a connection last moved bytes either way (microseconds on the core's clock), for the
/// idle timeout: the reader and the writer touch it, the reader's timeout reads it.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

impl Activity {
    /// Activity now.
    pub fn touch(&self) {
        self.0.store(Instant::now().as_micros(), Ordering::Relaxed);
    }

    /// Time since the last activity.
    #[must_use]
    pub fn idle_for(&self) -> Duration {
        let last = Instant::from_micros(self.0.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Writes the queue through a socket that takes at most `step` bytes per call.
    fn trickle(queue: &mut WriteQueue, step: usize) -> (Vec<u8>, usize) {
        let (mut written, mut calls) = (Vec::new(), 0);
        while !queue.is_empty() {
            calls += 1;
            let mut slices = [IoSlice::new(&[]); 3];
            let filled = queue.io_slices(&mut slices);
            let mut room = step;
            let mut taken = 0;
            for slice in &slices[..filled] {
                let n = slice.len().min(room);
                written.extend_from_slice(&slice[..n]);
                room -= n;
                taken += n;
            }
            queue.advance(taken);
        }
        (written, calls)
    }

    #[test]
    fn partial_vectored_writes_keep_every_byte_in_order() {
        for step in [1, 2, 3, 5, 7, 64, 1000] {
            let chunks =
                vec![b"hello".to_vec(), Vec::new(), b" ".to_vec(), b"world, again".to_vec()];
            let expected: Vec<u8> = chunks.concat();
            let mut queue = WriteQueue::new();
            for chunk in chunks {
                queue.push(chunk);
            }
            assert_eq!(queue.len(), 3, "empty chunks are not queued");
            let (written, calls) = trickle(&mut queue, step);
            assert_eq!(written, expected, "step {step}");
            assert_eq!(calls, expected.len().div_ceil(step), "step {step}: one call per step");
        }
    }

    #[test]
    fn poll_write_all_retries_partial_writes_and_refuses_a_zero_write() {
        let mut cx = Context::from_waker(core::task::Waker::noop());
        let mut queue = WriteQueue::new();
        queue.push(b"hello".to_vec());
        queue.push(b" world".to_vec());
        let mut written = Vec::new();
        let done = queue.poll_write_all(&mut cx, |_, slices| {
            let n = slices[0].len().min(4);
            written.extend_from_slice(&slices[0][..n]);
            Poll::Ready(Ok(n))
        });
        assert!(matches!(done, Poll::Ready(Ok(()))));
        assert_eq!(written, b"hello world");

        queue.push(b"x".to_vec());
        let zero = queue.poll_write_all(&mut cx, |_, _| Poll::Ready(Ok(0)));
        assert!(matches!(zero, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WriteZero));
        let blocked = queue.poll_write_all(&mut cx, |_, _| Poll::Pending);
        assert!(blocked.is_pending());
        assert_eq!(queue.len(), 1, "unwritten bytes stay queued");
    }

    #[test]
    fn slices_are_capped_by_the_output_and_start_after_the_written_part() {
        let mut queue = WriteQueue::new();
        for chunk in [b"abc".to_vec(), b"de".to_vec(), b"f".to_vec()] {
            queue.push(chunk);
        }
        queue.advance(1);
        let mut two = [IoSlice::new(&[]); 2];
        assert_eq!(queue.io_slices(&mut two), 2);
        assert_eq!((&*two[0], &*two[1]), (&b"bc"[..], &b"de"[..]));
        queue.advance(4);
        assert_eq!(queue.len(), 1);
        let mut one = [IoSlice::new(&[])];
        assert_eq!(queue.io_slices(&mut one), 1);
        assert_eq!(&*one[0], b"f");
    }
}
