//! The data source behind a keyspace: the user's loader, async ([`DataSource`]) or blocking
//! ([`blocking::DataSource`](crate::blocking::DataSource)), stored type-erased as one
//! [`SharedSource`] whatever its kind, and the mapping of its outcome to the core's
//! [`LoadResult`].
//!
//! Contract: a node of any runtime takes sources of either kind. A [`SharedSource`] is called
//! the way the runtime calls loads: an async runtime polls [`LoadSource::load`] on its
//! executor (an async source's future; a blocking source's fetch on a thread of its own per
//! load, so that it never blocks the executor); herdcache-mio calls
//! [`LoadSource::load_blocking`] on a worker thread (a blocking source's fetch; an async
//! source's future driven on that thread, woken by whatever it waits on). Either way a panic
//! of the source fails its load ([`PANICKED`]) and the node serves on.

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};
use std::thread;

use bytes::Bytes;

use crate::blocking;
use herdcache_proto::LoadResult;

/// Where a keyspace's values come from on a miss: a database, a service, a computation.
///
/// The node calls [`DataSource::fetch`] at most once per key at a time across the whole
/// cluster (on the key's owner). `Ok(bytes)` is cached with the keyspace's default TTL;
/// `Err(e)` fails every waiting caller with
/// [`Error::DataSource`](herdcache_proto::Error::DataSource) carrying `e.to_string()`, unless
/// [`DataSource::is_not_found`] says the error means "no such key", in which case callers get
/// [`Error::NotFound`](herdcache_proto::Error::NotFound) and the circuit breaker counts a
/// success. A fetch that panics fails its load ("data source panicked"); the node serves on.
///
/// On an async runtime crate the future runs on that crate's executor: use that runtime's
/// timers and IO in it (tokio's under herdcache-tokio; async-io's — async-std's or smol's —
/// under herdcache-async-std). herdcache-mio drives it on one of its worker threads, so there
/// it must not need a runtime's context (async-io's timers and sockets work: their reactor
/// runs on a thread of its own; tokio's do not). Closures work through [`source_fn`]; code
/// that blocks implements [`blocking::DataSource`](crate::blocking::DataSource) instead.
pub trait DataSource: Send + Sync + 'static {
    /// The error a fetch can fail with.
    type Error: fmt::Display + Send + 'static;

    /// Loads the value of `key`.
    fn fetch(&self, key: Bytes) -> impl Future<Output = Result<Bytes, Self::Error>> + Send;

    /// Whether `error` means the source has no value for the key (an answer, not a failure).
    /// The default: never.
    fn is_not_found(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }
}

/// A [`DataSource`] made from an async closure; see [`source_fn`].
#[derive(Clone)]
pub struct SourceFn<F> {
    fetch: F,
}

impl<F> fmt::Debug for SourceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceFn")
    }
}

/// Makes a [`DataSource`] from a closure returning a future:
///
/// ```
/// use bytes::Bytes;
/// use herdcache_runtime::source_fn;
/// let source = source_fn(|key: Bytes| async move {
///     Ok::<_, std::io::Error>(Bytes::from(format!("value of {}", String::from_utf8_lossy(&key))))
/// });
/// # let _ = source;
/// ```
pub fn source_fn<F, Fut, E>(fetch: F) -> SourceFn<F>
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    SourceFn { fetch }
}

impl<F, Fut, E> DataSource for SourceFn<F>
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type Error = E;

    fn fetch(&self, key: Bytes) -> impl Future<Output = Result<Bytes, E>> + Send {
        (self.fetch)(key)
    }
}

/// The core's answer for a fetch's outcome: a value (cached with the keyspace's TTL), "not
/// found", or a failure carrying the error's text.
pub fn load_result<E: fmt::Display>(outcome: Result<Bytes, E>, not_found: bool) -> LoadResult {
    match outcome {
        Ok(bytes) => LoadResult::Value { bytes, expires_at: None },
        Err(_) if not_found => LoadResult::NotFound,
        Err(error) => LoadResult::Failed(Bytes::from(error.to_string())),
    }
}

/// What a load whose source panicked answers.
pub const PANICKED: &[u8] = b"data source panicked";

fn panicked() -> LoadResult {
    LoadResult::Failed(Bytes::from_static(PANICKED))
}

/// A data source of either kind with its types erased, as a node stores it per keyspace. A
/// runtime calls the method that fits how it runs loads (see the module docs).
pub trait LoadSource: Send + Sync + 'static {
    /// Fetches `key` on an executor; the [`Load`] turns the outcome into the core's
    /// [`LoadResult`]. It never blocks the thread that polls it.
    fn load(self: Arc<Self>, key: Bytes) -> Load;

    /// Fetches `key` on the calling thread, which may block as long as the source takes.
    fn load_blocking(self: Arc<Self>, key: Bytes) -> LoadResult;
}

/// An async [`DataSource`] as a [`LoadSource`].
struct AsyncLoader<S>(S);

impl<S: DataSource> AsyncLoader<S> {
    async fn fetch(&self, key: Bytes) -> LoadResult {
        let outcome = self.0.fetch(key).await;
        let not_found = outcome.as_ref().is_err_and(|error| self.0.is_not_found(error));
        load_result(outcome, not_found)
    }
}

impl<S: DataSource> LoadSource for AsyncLoader<S> {
    fn load(self: Arc<Self>, key: Bytes) -> Load {
        Load(Box::pin(async move { self.fetch(key).await }))
    }

    fn load_blocking(self: Arc<Self>, key: Bytes) -> LoadResult {
        block_on(self.load(key))
    }
}

/// A [`blocking::DataSource`] as a [`LoadSource`].
struct BlockingLoader<S>(S);

impl<S: blocking::DataSource> BlockingLoader<S> {
    fn fetch(&self, key: Bytes) -> LoadResult {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let outcome = self.0.fetch(key);
            let not_found = outcome.as_ref().is_err_and(|error| self.0.is_not_found(error));
            load_result(outcome, not_found)
        }));
        outcome.unwrap_or_else(|_panic| panicked())
    }
}

impl<S: blocking::DataSource> LoadSource for BlockingLoader<S> {
    /// The fetch runs on a thread of its own, so that it never blocks the executor; the
    /// future waits for its answer.
    fn load(self: Arc<Self>, key: Bytes) -> Load {
        let slot = Arc::new(Handoff::default());
        let answer = Arc::clone(&slot);
        let spawned = thread::Builder::new()
            .name("herdcache-load".into())
            .spawn(move || answer.complete(self.fetch(key)));
        match spawned {
            Ok(_detached) => Load(Box::pin(HandoffFuture(slot))),
            Err(error) => {
                let message = Bytes::from(alloc::format!("no thread for a blocking load: {error}"));
                Load(Box::pin(core::future::ready(LoadResult::Failed(message))))
            }
        }
    }

    fn load_blocking(self: Arc<Self>, key: Bytes) -> LoadResult {
        self.fetch(key)
    }
}

/// The answer of a blocking fetch on its own thread, for the future that waits on it.
#[derive(Default)]
struct Handoff {
    state: Mutex<(Option<LoadResult>, Option<Waker>)>,
}

impl Handoff {
    fn complete(&self, result: LoadResult) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = Some(result);
        let waker = state.1.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

struct HandoffFuture(Arc<Handoff>);

impl Future for HandoffFuture {
    type Output = LoadResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LoadResult> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.0.take() {
            Some(result) => Poll::Ready(result),
            None => {
                state.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Runs `future` to completion on this thread, parking it while the future waits.
pub(crate) fn block_on<T>(future: impl Future<Output = T>) -> T {
    struct Unpark(thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// A shared, type-erased data source of either kind: an async runtime calls
/// [`LoadSource::load`] on its executor, herdcache-mio [`LoadSource::load_blocking`] on a
/// worker thread (see the module docs).
pub type SharedSource = Arc<dyn LoadSource>;

/// Marks an async [`DataSource`] in [`IntoSource`]; inferred, never named.
#[derive(Debug)]
pub enum AsyncFetch {}

/// Marks a [`blocking::DataSource`](crate::blocking::DataSource) in [`IntoSource`];
/// inferred, never named.
#[derive(Debug)]
pub enum BlockingFetch {}

/// A data source a builder or a handle takes: an async [`DataSource`] or a
/// [`blocking::DataSource`](crate::blocking::DataSource). `Kind` ([`AsyncFetch`] or
/// [`BlockingFetch`]) only keeps the two implementations apart; the compiler infers it (a type
/// that implements both traits must name it).
pub trait IntoSource<Kind>: Send + Sync + 'static {
    /// Erases the source's types.
    fn into_shared(self) -> SharedSource;
}

impl<S: DataSource> IntoSource<AsyncFetch> for S {
    fn into_shared(self) -> SharedSource {
        Arc::new(AsyncLoader(self))
    }
}

impl<S: blocking::DataSource> IntoSource<BlockingFetch> for S {
    fn into_shared(self) -> SharedSource {
        Arc::new(BlockingLoader(self))
    }
}

/// Erases a source's types.
pub fn erase<K>(source: impl IntoSource<K>) -> SharedSource {
    source.into_shared()
}

/// One data-source call in progress, on any executor. A panic of the source's future ends it
/// with a failed load ([`PANICKED`]) instead of unwinding into the executor.
#[must_use = "a load does nothing unless polled"]
pub struct Load(Pin<Box<dyn Future<Output = LoadResult> + Send>>);

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Load")
    }
}

impl Future for Load {
    type Output = LoadResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LoadResult> {
        let fetch = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fetch.poll(cx))) {
            Ok(poll) => poll,
            Err(_panic) => Poll::Ready(panicked()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn value(bytes: &'static str) -> LoadResult {
        LoadResult::Value { bytes: Bytes::from_static(bytes.as_bytes()), expires_at: None }
    }

    /// An async source that answers from another thread after a while, as one waiting on IO.
    fn async_echo() -> SharedSource {
        erase(source_fn(|key: Bytes| async move {
            let slot = Arc::new(Handoff::default());
            let answer = Arc::clone(&slot);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                answer.complete(LoadResult::NotFound);
            });
            HandoffFuture(slot).await;
            Ok::<_, String>(key)
        }))
    }

    fn blocking_echo() -> SharedSource {
        erase(blocking::source_fn(|key: Bytes| {
            assert!(key.as_ref() != b"boom", "the source panics on boom");
            thread::sleep(Duration::from_millis(20));
            Ok::<_, String>(key)
        }))
    }

    #[test]
    fn an_async_source_is_driven_to_its_answer_on_a_blocking_thread() {
        assert_eq!(async_echo().load_blocking(Bytes::from_static(b"k")), value("k"));
    }

    #[test]
    fn a_blocking_source_answers_a_future_without_blocking_its_poller() {
        // The fetch waits for the test to release it after the first poll: had the poll
        // fetched inline, it would give up waiting and fail the load.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let source = erase(blocking::source_fn(move |key: Bytes| {
            let released = released.lock().unwrap_or_else(PoisonError::into_inner);
            match released.recv_timeout(Duration::from_secs(30)) {
                Ok(()) => Ok(key),
                Err(_) => Err("the poll fetched inline"),
            }
        }));
        let mut load = source.load(Bytes::from_static(b"k"));
        let waker = Waker::noop();
        assert!(Pin::new(&mut load).poll(&mut Context::from_waker(waker)).is_pending());
        release.send(()).expect("the fetch is waiting");
        assert_eq!(block_on(load), value("k"));
    }

    #[test]
    fn a_panicking_blocking_source_fails_its_load_either_way() {
        let boom = Bytes::from_static(b"boom");
        assert_eq!(blocking_echo().load_blocking(boom.clone()), panicked());
        assert_eq!(block_on(blocking_echo().load(boom)), panicked());
    }
}
