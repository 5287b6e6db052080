//! The small trait an async runtime implements so that the one driver ([`crate::Start`] for
//! every `R: Runtime`) runs on it: spawn a task, one timer, connect, accept, a byte stream.
//! The shape of quinn's `quinn::Runtime` (`runtime/{tokio,smol}.rs`).
//!
//! Everything else — the drive loop, the connection loops, the send-buffer policy, jobs,
//! stopping — is written once, over these operations, in this crate. A runtime crate that
//! finds itself repeating a loop here is a sign this trait misses something.

use core::future::Future;
use core::net::SocketAddr;
use core::task::{Context, Poll};
use core::time::Duration;
use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::BytesMut;

/// An async runtime, as the shared driver uses it. Implemented by a runtime crate's marker
/// type (`herdcache_tokio::Tokio`, `herdcache_async_std::AsyncStd`); its [`Default`] is what
/// `Node::builder()` starts with.
///
/// Cancellation: every future the driver makes of these operations may be dropped before it
/// completes (a timeout won, the node was killed); dropping one must leave no bytes half
/// taken (a read either delivered its bytes into the buffer or took none).
pub trait Runtime: Default + Send + Sync + 'static {
    /// Where one node's tasks run, as the driver spawns them (a runtime handle, a reference
    /// to the node's executor). Cheap to clone.
    type Spawner: Clone + Send + Sync + 'static;
    /// A spawned task: completes with its future, and **cancels the future when dropped**
    /// (so dropping a connection's tasks closes its socket, and dropping the driver ends
    /// the node).
    type Task: Future<Output = ()> + Send + Sync + Unpin + 'static;
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// A connected TCP stream, before it is split.
    type Stream: Send + 'static;
    /// The reading half of a stream.
    type Reader: Send + 'static;
    /// The writing half of a stream.
    type Writer: Send + 'static;
    /// A timer that can be moved ([`Runtime::reset_timer`]).
    type Timer: Send + 'static;

    /// Prepares where one node's tasks run. What it returns besides the spawner is dropped
    /// after the node's driver task, when the node ends: an executor thread of the node's
    /// own ends then (herdcache-async-std), nothing for a shared runtime (herdcache-tokio).
    ///
    /// # Errors
    /// When the runtime cannot be set up (no runtime to spawn on, a thread refused).
    fn home(&self) -> io::Result<(Self::Spawner, Box<dyn Send + Sync>)>;

    /// Runs `future` to completion on the calling thread, which is not one of the runtime's
    /// (a blocking caller's), with whatever context the runtime's timers need. The default
    /// parks the thread between polls, for a runtime whose timers need no context.
    fn block_on<T>(spawner: &Self::Spawner, future: impl Future<Output = T>) -> T {
        let _ = spawner;
        crate::source::block_on(future)
    }

    /// Runs `task` in the background on `spawner`.
    fn spawn(
        spawner: &Self::Spawner,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self::Task;

    /// Binds a listener to `address`.
    fn bind(address: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address `listener` is bound to.
    ///
    /// # Errors
    /// As the operating system reports it.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// The next connection `listener` accepts.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + '_;

    /// Dials `address` (`host:port`, resolved as the runtime resolves names).
    fn connect(address: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send + '_;

    /// Sets `TCP_NODELAY` and splits `stream` into its halves.
    ///
    /// # Errors
    /// When the option cannot be set; the stream is then dropped.
    fn split(stream: Self::Stream) -> io::Result<(Self::Reader, Self::Writer)>;

    /// Reads what is available (at least one byte, `0` at the end of the stream), appending
    /// it to `buffer`, which has room for at least [`READ_CHUNK`](crate::READ_CHUNK) more.
    fn read<'a>(
        reader: &'a mut Self::Reader,
        buffer: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Writes some of `slices` (a vectored write that may be partial), or registers the
    /// task to be woken when the socket may take more.
    fn poll_write_vectored(
        writer: &mut Self::Writer,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;

    /// Shuts the writing direction down (the peer reads the end of the stream).
    fn shutdown(writer: &mut Self::Writer) -> impl Future<Output = io::Result<()>> + Send + '_;

    /// A timer that fires at `at`.
    fn timer(at: Instant) -> Self::Timer;

    /// Moves `timer` to fire at `at` (whether or not it fired).
    fn reset_timer(timer: &mut Self::Timer, at: Instant);

    /// Ready once the timer's instant has passed; else registers the task to be woken then.
    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()>;
}

/// A timer this far away stands for "no deadline" (a `Duration::MAX` timeout cannot be added
/// to a clock).
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// The instant `wait` from now, saturating at a year from now.
#[must_use]
pub(crate) fn deadline_in(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(FAR_FUTURE)).unwrap_or(now)
}

/// Waits `wait` on `R`'s timers.
pub(crate) async fn sleep<R: Runtime>(wait: Duration) {
    let mut timer = R::timer(deadline_in(wait));
    core::future::poll_fn(|cx| R::poll_timer(&mut timer, cx)).await;
}

/// `value` once `wait` has passed, on `R`'s timers.
pub(crate) async fn elapsed<R: Runtime, T>(wait: Duration, value: T) -> T {
    sleep::<R>(wait).await;
    value
}
