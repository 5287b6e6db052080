//! Transport pieces every connection of every runtime needs: the queue a writer gathers into
//! vectored writes, the activity clock of the idle timeout, and the send-buffer policy.
//!
//! The send-buffer policy is [`SendLimits`]'s (its docs state it), configured as a
//! [`SendBuffer`] and counted by an [`Outflow`] where a connection's reader and writer are
//! tasks of their own.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker, ready};
use core::time::Duration;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, PoisonError};

use herdcache_proto::Instant;
use herdcache_proto::{NodeConfig, PeerProtocol};

/// Bytes asked of one read.
pub const READ_CHUNK: usize = 64 * 1024;
/// Chunks a connection's reader may have handed to its driver that the driver has not fed
/// to the node yet; the reader waits beyond that ([`Outflow::read_permit`]). So a reader
/// cannot run ahead of the node (on a busy machine, a task that finds data ready reads on
/// without yielding): what a peer pipelines beyond it stays in TCP, which pushes back, and
/// the replies to what was read stay bounded by what the send buffer is told about in time.
/// Without it, a peer that pipelined gets of a large value was read megabytes ahead before
/// the first reply was queued, and the backlog's replies passed the hard cap.
pub const READ_AHEAD: usize = 4;
/// The most queued chunks one vectored write gathers.
pub const MAX_GATHER: usize = 64;
/// Capacity of the bounded channel from a node's IO tasks to its driver: when it is full,
/// readers wait, and TCP pushes back on the peers.
pub const EVENT_QUEUE: usize = 1024;
/// IO events a driver handles per wake-up before it looks at its other sources again.
pub const EVENTS_PER_WAKE: usize = 64;
/// How long a closing connection may take to flush what the node transmitted before.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How many bytes a connection may have queued for its socket, as a builder is told
/// (`Builder::send_buffer`); [`SendBuffer::limits`] turns it into the [`SendLimits`] a driver
/// applies (its docs state the policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendBuffer {
    /// Stop reading a connection while more than this many bytes are queued for it
    /// (`usize::MAX`, the default: never; see [`SendLimits`] for why).
    pub high_water: usize,
    /// Read it again once at most this many are (clamped to `high_water`).
    pub low_water: usize,
    /// Close a connection at once when a transmit would queue more than this; `None`:
    /// [`SendBuffer::CAP_HEADROOM`] plus the largest transmit the node's wire limits allow.
    pub hard_cap: Option<usize>,
    /// Close a connection whose queued bytes see no write progress for this long.
    pub write_stall: Duration,
}

impl SendBuffer {
    /// A high-water mark for nodes that pause reading (the default is not to): 1 MiB, a few
    /// socket buffers' worth.
    pub const DEFAULT_HIGH_WATER: usize = 1 << 20;
    /// What the default hard cap allows above one largest transmit: 1 MiB.
    pub const CAP_HEADROOM: usize = 1 << 20;
    /// Default [`SendBuffer::low_water`]: 256 KiB.
    pub const DEFAULT_LOW_WATER: usize = 256 << 10;
    /// Default [`SendBuffer::write_stall`]: 30 s, far above any honest peer's pause.
    pub const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(30);

    /// The limits for a node configured as `config` (whose wire limits size the hard cap).
    #[must_use]
    pub fn limits(&self, config: &NodeConfig) -> SendLimits {
        let largest_transmit = match config.peer_protocol {
            // A frame is its length prefix and at most `max_frame` bytes.
            PeerProtocol::Native => config.limits.max_frame as usize + 4,
            PeerProtocol::GroupcacheHttp => {
                let http = &config.groupcache.limits;
                http.max_head as usize + http.max_body as usize
            }
        };
        let hard_cap = self
            .hard_cap
            .unwrap_or_else(|| SendBuffer::CAP_HEADROOM.saturating_add(largest_transmit));
        SendLimits {
            high_water: self.high_water,
            low_water: self.low_water.min(self.high_water),
            hard_cap,
            write_stall: self.write_stall,
        }
    }
}

impl Default for SendBuffer {
    fn default() -> Self {
        SendBuffer {
            high_water: usize::MAX,
            low_water: SendBuffer::DEFAULT_LOW_WATER,
            hard_cap: None,
            write_stall: SendBuffer::DEFAULT_WRITE_STALL,
        }
    }
}

/// The send-buffer policy of one node: every runtime's driver asks it, so that the rule is
/// written once.
///
/// Every runtime counts, per connection, the bytes the node transmitted that the socket has
/// not taken yet ("queued"), and applies the one policy of [`SendLimits`]:
///
/// - **A transmit that would take the queued bytes above the hard cap closes the connection
///   at once** (its bytes are dropped). By default the cap is the largest transmit the wire
///   limits allow plus [`SendBuffer::CAP_HEADROOM`], so that a lone reply of any legal size
///   is always taken. The core makes at most about 1 MiB of replies per connection and turn
///   (it parses the rest of a read on the next turn), so a peer that pipelines requests and
///   never reads is cut off at the cap, not after the core built every reply.
/// - **Bytes queued with no write progress for the write-stall timeout close the
///   connection.**
/// - **Above the high-water mark, stop reading the connection** (off by default); read again
///   once the queued bytes fall to the low-water mark. The core answers only what it read,
///   so it makes no more replies for that peer, and TCP pushes back on the peer. Off by
///   default because peers share one connection both ways: two nodes fetching large values
///   from each other would each stop reading the replies the other is waiting to write, and
///   wait for the write-stall timeout. Set it on nodes whose clients only ask.
///
/// Worst case per connection: `hard_cap` queued bytes (with the defaults, 64 MiB + 1 MiB +
/// 4 bytes for the native protocol), plus about 1 MiB the core builds in one turn, the
/// partial frame it is reassembling (at most a frame) and the kernel's socket buffers. In the
/// common case (a peer that keeps up) the queue stays near empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendLimits {
    /// Reading stops above this many queued bytes.
    pub high_water: usize,
    /// Reading resumes at or below this many (at most `high_water`).
    pub low_water: usize,
    /// A transmit that would queue more closes the connection (at least `high_water`).
    pub hard_cap: usize,
    /// Queued bytes without write progress for this long close the connection.
    pub write_stall: Duration,
}

impl SendLimits {
    /// Whether `more` bytes may be queued after `queued`; if not, close the connection.
    #[must_use]
    pub fn admits(&self, queued: usize, more: usize) -> bool {
        queued.saturating_add(more) <= self.hard_cap
    }

    /// Whether reading stops now, with `queued` bytes queued (while reading).
    #[must_use]
    pub fn pauses_reading(&self, queued: usize) -> bool {
        queued > self.high_water
    }

    /// Whether reading resumes now, with `queued` bytes queued (while paused).
    #[must_use]
    pub fn resumes_reading(&self, queued: usize) -> bool {
        queued <= self.low_water
    }

    /// Whether bytes are queued and none was written since `last_progress` for the
    /// write-stall timeout, at `now`.
    #[must_use]
    pub fn stalled(&self, queued: usize, last_progress: Instant, now: Instant) -> bool {
        queued > 0 && now.saturating_duration_since(last_progress) >= self.write_stall
    }
}

/// The queued-byte count of one connection whose reader and writer are tasks of their own,
/// with the reader's gate: the driver counts what it queues ([`Outflow::queue`]), the writer
/// what the socket took ([`Outflow::written`]), the reader takes a [`ReadPermit`] for each
/// chunk it hands to the driver, and waits on [`Outflow::poll_may_read`] before each read.
/// Applies [`SendLimits`] and the [`READ_AHEAD`] window.
#[derive(Debug)]
pub struct Outflow {
    limits: SendLimits,
    queued: AtomicUsize,
    /// Reading stopped above the high-water mark and waits for the low-water mark.
    paused: AtomicBool,
    /// Chunks read and not yet fed to the node (live [`ReadPermit`]s).
    unfed: AtomicUsize,
    /// The reader waiting for the low-water mark or for a permit.
    reader: Mutex<Option<Waker>>,
}

/// One chunk a reader handed to the driver, counted against [`READ_AHEAD`] until dropped:
/// the driver drops it once it fed the chunk to the node (or dropped the chunk).
#[derive(Debug)]
pub struct ReadPermit(Arc<Outflow>);

impl Drop for ReadPermit {
    fn drop(&mut self) {
        let before = self.0.unfed.fetch_sub(1, Ordering::AcqRel);
        if before == READ_AHEAD {
            self.0.wake_reader();
        }
    }
}

impl Outflow {
    /// Nothing queued yet.
    #[must_use]
    pub fn new(limits: SendLimits) -> Self {
        Outflow {
            limits,
            queued: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            unfed: AtomicUsize::new(0),
            reader: Mutex::new(None),
        }
    }

    /// The bytes queued and not yet written.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Counts `bytes` the driver queues; `false` (nothing counted) when they would pass the
    /// hard cap: the driver closes the connection then.
    #[must_use]
    pub fn queue(&self, bytes: usize) -> bool {
        // Only the driver adds, so the check and the add cannot race another add.
        if !self.limits.admits(self.queued(), bytes) {
            return false;
        }
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        true
    }

    /// Counts `bytes` more queued for the socket that the driver did not queue itself (a TLS
    /// record's overhead, an alert): past any cap, since they go with what was admitted.
    pub fn grow(&self, bytes: usize) {
        self.queued.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Counts `bytes` the socket took; wakes a paused reader at the low-water mark.
    pub fn written(&self, bytes: usize) {
        let left = self.queued.fetch_sub(bytes, Ordering::AcqRel).saturating_sub(bytes);
        if self.paused.load(Ordering::Acquire) && self.limits.resumes_reading(left) {
            self.wake_reader();
        }
    }

    /// The reader hands a chunk to the driver: counts it against [`READ_AHEAD`] until the
    /// permit is dropped.
    #[must_use]
    pub fn read_permit(self: &Arc<Self>) -> ReadPermit {
        self.unfed.fetch_add(1, Ordering::AcqRel);
        ReadPermit(Arc::clone(self))
    }

    fn wake_reader(&self) {
        let reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Ready when the reader may read: fewer than [`READ_AHEAD`] chunks unfed, and below the
    /// high-water mark or, once paused above it, back at the low-water mark.
    pub fn poll_may_read(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.may_read_now() {
            return Poll::Ready(());
        }
        *self.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        // The writer may have drained, or the driver fed a chunk, between the check and the
        // registration.
        if self.may_read_now() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn may_read_now(&self) -> bool {
        self.unfed.load(Ordering::Acquire) < READ_AHEAD && self.send_buffer_allows_reading()
    }

    /// The high-water mark's hysteresis.
    fn send_buffer_allows_reading(&self) -> bool {
        let queued = self.queued();
        if self.paused.load(Ordering::Acquire) {
            let resumed = self.limits.resumes_reading(queued);
            if resumed {
                self.paused.store(false, Ordering::Release);
            }
            resumed
        } else if self.limits.pauses_reading(queued) {
            self.paused.store(true, Ordering::Release);
            false
        } else {
            true
        }
    }

    /// [`Outflow::poll_may_read`] as a future.
    pub async fn may_read(&self) {
        core::future::poll_fn(|cx| self.poll_may_read(cx)).await;
    }

    /// The policy it applies.
    #[must_use]
    pub fn limits(&self) -> &SendLimits {
        &self.limits
    }
}

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

    /// Makes one vectored write of the queued bytes with `write_vectored` (a socket's
    /// `poll_write_vectored`), which may take part of what it is given, and consumes what it
    /// took; returns how many bytes that was (0 when the queue is empty). A write of zero
    /// bytes is [`io::ErrorKind::WriteZero`]; an error leaves the unwritten bytes queued.
    /// A writer loops on it, counting each write's progress (the write-stall timeout).
    pub fn poll_write_some(
        &mut self,
        cx: &mut Context<'_>,
        write_vectored: impl FnOnce(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut slices = [IoSlice::new(&[]); MAX_GATHER];
        let filled = self.io_slices(&mut slices);
        let written = ready!(write_vectored(cx, &slices[..filled]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.advance(written);
        Poll::Ready(Ok(written))
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
    fn poll_write_some_takes_one_write_and_refuses_a_zero_write() {
        let mut cx = Context::from_waker(core::task::Waker::noop());
        let mut queue = WriteQueue::new();
        queue.push(b"hello".to_vec());
        queue.push(b" world".to_vec());
        let mut written = Vec::new();
        while !queue.is_empty() {
            let took = queue.poll_write_some(&mut cx, |_, slices| {
                let n = slices[0].len().min(4);
                written.extend_from_slice(&slices[0][..n]);
                Poll::Ready(Ok(n))
            });
            assert!(matches!(took, Poll::Ready(Ok(n)) if (1..=4).contains(&n)));
        }
        assert_eq!(written, b"hello world");
        assert!(matches!(
            queue.poll_write_some(&mut cx, |_, _| unreachable!()),
            Poll::Ready(Ok(0))
        ));

        queue.push(b"x".to_vec());
        let zero = queue.poll_write_some(&mut cx, |_, _| Poll::Ready(Ok(0)));
        assert!(matches!(zero, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WriteZero));
        let blocked = queue.poll_write_some(&mut cx, |_, _| Poll::Pending);
        assert!(blocked.is_pending());
        assert_eq!(queue.len(), 1, "unwritten bytes stay queued");
    }

    fn limits() -> SendLimits {
        let buffer = SendBuffer {
            high_water: 100,
            low_water: 40,
            hard_cap: Some(1000),
            write_stall: Duration::from_secs(1),
        };
        buffer.limits(&NodeConfig::new("n", "c"))
    }

    #[test]
    fn the_default_hard_cap_takes_one_reply_of_any_legal_size_and_reading_never_pauses() {
        let config = NodeConfig::new("n", "c");
        let limits = SendBuffer::default().limits(&config);
        let largest = config.limits.max_frame as usize + 4;
        assert!(limits.admits(SendBuffer::CAP_HEADROOM, largest));
        assert!(!limits.admits(SendBuffer::CAP_HEADROOM, largest + 1));
        assert_eq!(limits.hard_cap, (1 << 20) + (64 << 20) + 4, "as the module docs say");
        assert!(!limits.pauses_reading(limits.hard_cap), "pausing is opt-in");
        let http = SendBuffer::default().limits(&config.with_groupcache_compat());
        assert!(http.hard_cap > 8 << 20, "an 8 MiB body fits");
    }

    #[test]
    fn reading_pauses_above_the_high_water_mark_and_resumes_at_the_low_water_mark() {
        let waker = alloc::sync::Arc::new(CountingWaker::default());
        let as_waker = Waker::from(alloc::sync::Arc::clone(&waker));
        let mut cx = Context::from_waker(&as_waker);
        let outflow = Outflow::new(limits());
        assert!(outflow.queue(100));
        assert!(outflow.poll_may_read(&mut cx).is_ready(), "at the mark: still reading");
        assert!(outflow.queue(900), "up to the hard cap");
        assert!(!outflow.queue(1), "past the hard cap: refused, not counted");
        assert_eq!(outflow.queued(), 1000);
        assert!(outflow.poll_may_read(&mut cx).is_pending(), "above the mark: paused");
        outflow.written(900);
        assert!(outflow.poll_may_read(&mut cx).is_pending(), "between the marks: still paused");
        assert_eq!(waker.0.load(Ordering::SeqCst), 0);
        outflow.written(60);
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "the low-water mark wakes the reader");
        assert!(outflow.poll_may_read(&mut cx).is_ready());
        assert!(outflow.queue(80), "back to 120 queued");
        assert!(outflow.poll_may_read(&mut cx).is_pending(), "above the mark again");
    }

    #[test]
    fn ciphertext_overhead_is_counted_until_the_socket_takes_it() {
        let outflow = Outflow::new(limits());
        assert!(outflow.queue(100), "the driver counts plaintext");
        outflow.grow(29); // the TLS record's overhead, added by the writer
        assert_eq!(outflow.queued(), 129);
        assert!(!outflow.queue(1000 - 128), "the overhead counts against the hard cap");
        outflow.written(129);
        assert_eq!(outflow.queued(), 0, "every byte the socket took is uncounted");
    }

    #[test]
    fn the_reader_stays_at_most_read_ahead_chunks_ahead_of_the_driver() {
        let waker = alloc::sync::Arc::new(CountingWaker::default());
        let as_waker = Waker::from(alloc::sync::Arc::clone(&waker));
        let mut cx = Context::from_waker(&as_waker);
        // Pausing on the send buffer is off by default: only the window gates.
        let default = SendBuffer::default().limits(&NodeConfig::new("n", "c"));
        let outflow = Arc::new(Outflow::new(default));
        let mut handed = Vec::new();
        while outflow.poll_may_read(&mut cx).is_ready() {
            handed.push(outflow.read_permit());
            assert!(handed.len() <= READ_AHEAD, "never more than the window");
        }
        assert_eq!(handed.len(), READ_AHEAD);
        drop(handed.pop());
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "feeding a chunk wakes the reader");
        assert!(outflow.poll_may_read(&mut cx).is_ready());
        handed.push(outflow.read_permit());
        assert!(outflow.poll_may_read(&mut cx).is_pending(), "full again");
        handed.clear();
        assert_eq!(waker.0.load(Ordering::SeqCst), 2, "one wake-up when the window opens");
        assert!(outflow.poll_may_read(&mut cx).is_ready());
    }

    #[test]
    fn a_stall_is_queued_bytes_without_progress_for_the_timeout() {
        let limits = limits();
        let start = Instant::from_micros(1_000_000);
        let later = Instant::from_micros(2_000_000);
        assert!(!limits.stalled(0, start, later), "nothing queued is never a stall");
        assert!(!limits.stalled(10, start, Instant::from_micros(1_999_999)));
        assert!(limits.stalled(10, start, later));
        assert!(!limits.stalled(10, later, start), "time going backwards is no time");
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl alloc::task::Wake for CountingWaker {
        fn wake(self: alloc::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
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
