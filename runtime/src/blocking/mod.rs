//! The blocking side of the API, for programs without an async runtime: a [`DataSource`]
//! whose fetch blocks, and [`Handle`] and [`KeyspaceHandle`], a facade over the shared
//! [`crate::Handle`] whose calls block the calling thread until the node answers.
//!
//! Contract: the facade adds no state and no thread. Each call makes the request the async
//! handle makes, then waits for the front's answer ([`Pending::wait`](crate::front::Pending)):
//! a hit is answered in the call without waiting or allocating a waker; anything else parks
//! the thread until the node's driver answers, which it does within the request's timeout
//! (`NodeConfig::request_timeout`), or at once with `Error::ShuttingDown` when the node stops.
//! [`Handle::as_async`] and `From` convert between the two handles of one node, so blocking
//! threads and async tasks can share a node.
//!
//! A blocking source may serve a node of any runtime: herdcache-mio calls it on its worker
//! threads; an async runtime on a thread of its own per load, never on its executor.

#[cfg(not(herdcache_loom))]
mod handle;

#[cfg(not(herdcache_loom))]
pub use handle::{Handle, KeyspaceHandle};

use core::fmt;

use bytes::Bytes;

/// Where a keyspace's values come from on a miss, for code that blocks: a database client,
/// a file, a computation.
///
/// The node calls [`DataSource::fetch`] at most once per key at a time across the whole
/// cluster (on the key's owner), on a thread that may block (herdcache-mio's worker threads;
/// a thread of its own per load on an async runtime's node). `Ok(bytes)` is cached with the
/// keyspace's default TTL; `Err(e)` fails every waiting caller with
/// [`Error::DataSource`](herdcache_proto::Error::DataSource) carrying `e.to_string()`, unless
/// [`DataSource::is_not_found`] says the error means "no such key", in which case callers get
/// [`Error::NotFound`](herdcache_proto::Error::NotFound) and the circuit breaker counts a
/// success. A fetch that panics fails its load ("data source panicked"); the node serves on.
///
/// A fetch that outlives the keyspace's read timeout is answered `TimedOut` to its callers by
/// the node, but keeps its thread busy until it returns: give your client its own timeout.
///
/// Closures work through [`source_fn`].
pub trait DataSource: Send + Sync + 'static {
    /// The error a fetch can fail with.
    type Error: fmt::Display + Send + 'static;

    /// Loads the value of `key`, blocking this thread as long as it takes.
    ///
    /// # Errors
    /// Whatever the source fails with.
    fn fetch(&self, key: Bytes) -> Result<Bytes, Self::Error>;

    /// Whether `error` means the source has no value for the key (an answer, not a failure).
    /// The default: never.
    fn is_not_found(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }
}

/// A blocking [`DataSource`] made from a closure; see [`source_fn`].
#[derive(Clone)]
pub struct SourceFn<F> {
    fetch: F,
}

impl<F> fmt::Debug for SourceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("blocking::SourceFn")
    }
}

/// Makes a blocking [`DataSource`] from a closure:
///
/// ```
/// use bytes::Bytes;
/// use herdcache_runtime::blocking::source_fn;
/// let source = source_fn(|key: Bytes| {
///     Ok::<_, std::io::Error>(Bytes::from(format!("value of {}", String::from_utf8_lossy(&key))))
/// });
/// # let _ = source;
/// ```
pub fn source_fn<F, E>(fetch: F) -> SourceFn<F>
where
    F: Fn(Bytes) -> Result<Bytes, E> + Send + Sync + 'static,
    E: fmt::Display + Send + 'static,
{
    SourceFn { fetch }
}

impl<F, E> DataSource for SourceFn<F>
where
    F: Fn(Bytes) -> Result<Bytes, E> + Send + Sync + 'static,
    E: fmt::Display + Send + 'static,
{
    type Error = E;

    fn fetch(&self, key: Bytes) -> Result<Bytes, E> {
        (self.fetch)(key)
    }
}
