//! The data source behind a keyspace: the user's async loader, stored type-erased, and the
//! mapping of its outcome to the core's [`LoadResult`].

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;

use herdcache_proto::LoadResult;

/// Where a keyspace's values come from on a miss: a database, a service, a computation.
///
/// The node calls [`DataSource::fetch`] at most once per key at a time across the whole
/// cluster (on the key's owner), from a task of its own runtime. `Ok(bytes)` is cached with
/// the keyspace's default TTL; `Err(e)` fails every waiting caller with
/// [`Error::DataSource`](herdcache_proto::Error::DataSource) carrying `e.to_string()`, unless
/// [`DataSource::is_not_found`] says the error means "no such key", in which case callers get
/// [`Error::NotFound`](herdcache_proto::Error::NotFound) and the circuit breaker counts a success. A
/// fetch that panics fails its load ("data source panicked"); the node serves on.
///
/// The future runs on the runtime crate's executor: use that runtime's timers and IO in it
/// (tokio's under herdcache-tokio; async-io's — async-std's or smol's — under
/// herdcache-async-std). Closures work through [`source_fn`].
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
/// found", or a failure carrying the error's text. Synchronous sources use it too.
pub fn load_result<E: fmt::Display>(outcome: Result<Bytes, E>, not_found: bool) -> LoadResult {
    match outcome {
        Ok(bytes) => LoadResult::Value { bytes, expires_at: None },
        Err(_) if not_found => LoadResult::NotFound,
        Err(error) => LoadResult::Failed(Bytes::from(error.to_string())),
    }
}

/// What a load whose source panicked answers.
pub const PANICKED: &[u8] = b"data source panicked";

/// A [`DataSource`] with its types erased, as a node stores it per keyspace.
pub trait LoadSource: Send + Sync + 'static {
    /// Fetches `key`; the [`Load`] turns the outcome into the core's [`LoadResult`].
    fn load(self: Arc<Self>, key: Bytes) -> Load;
}

impl<S: DataSource> LoadSource for S {
    fn load(self: Arc<Self>, key: Bytes) -> Load {
        Load(Box::pin(async move {
            let outcome = self.fetch(key).await;
            let not_found = outcome.as_ref().is_err_and(|error| self.is_not_found(error));
            load_result(outcome, not_found)
        }))
    }
}

/// A shared, type-erased data source.
pub type SharedSource = Arc<dyn LoadSource>;

/// Erases a source's types.
pub fn erase<S: DataSource>(source: S) -> SharedSource {
    Arc::new(source)
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
            Err(_panic) => Poll::Ready(LoadResult::Failed(Bytes::from_static(PANICKED))),
        }
    }
}
