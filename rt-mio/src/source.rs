//! The data source behind a keyspace: the user's blocking loader, stored type-erased.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use herdcache_proto::LoadResult;

use herdcache_runtime::load_result;

/// Where a keyspace's values come from on a miss: a database, a service, a computation.
///
/// The node calls [`DataSource::fetch`] at most once per key at a time across the whole
/// cluster (on the key's owner), on one of its worker threads (see the crate docs): a fetch
/// may block. `Ok(bytes)` is cached with the keyspace's default TTL; `Err(e)` fails every
/// waiting caller with [`Error::DataSource`](crate::Error::DataSource) carrying
/// `e.to_string()`, unless [`DataSource::is_not_found`] says the error means "no such key", in
/// which case callers get [`Error::NotFound`](crate::Error::NotFound) and the circuit breaker
/// counts a success. A fetch that panics fails its load; the worker and the node go on.
///
/// A fetch that outlives the keyspace's read timeout is answered `TimedOut` to its callers by
/// the node, but keeps its worker busy until it returns: give your client its own timeout.
///
/// Closures work through [`source_fn`].
pub trait DataSource: Send + Sync + 'static {
    /// The error a fetch can fail with.
    type Error: fmt::Display + Send + 'static;

    /// Loads the value of `key`, blocking this worker thread as long as it takes.
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

/// A [`DataSource`] made from a closure; see [`source_fn`].
#[derive(Clone)]
pub struct SourceFn<F> {
    fetch: F,
}

impl<F> fmt::Debug for SourceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceFn")
    }
}

/// Makes a [`DataSource`] from a blocking closure:
///
/// ```
/// use herdcache_mio::{source_fn, Bytes};
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

/// A [`DataSource`] with its types erased, as the node stores it per keyspace.
pub(crate) trait ErasedSource: Send + Sync + 'static {
    /// Fetches `key` and turns the outcome into the core's [`LoadResult`].
    fn load(&self, key: Bytes) -> LoadResult;
}

impl<S: DataSource> ErasedSource for S {
    fn load(&self, key: Bytes) -> LoadResult {
        let fetched = self.fetch(key);
        let not_found = fetched.as_ref().is_err_and(|error| self.is_not_found(error));
        load_result(fetched, not_found)
    }
}

/// A shared, type-erased data source.
pub(crate) type SharedSource = Arc<dyn ErasedSource>;

/// Erases a source's types.
pub(crate) fn erase<S: DataSource>(source: S) -> SharedSource {
    Arc::new(source)
}
