//! The data source behind a keyspace: the user's async loader, stored type-erased.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use herdcache_proto::LoadResult;

/// Where a keyspace's values come from on a miss: a database, a service, a computation.
///
/// The node calls [`DataSource::fetch`] at most once per key at a time across the whole
/// cluster (on the key's owner), from a task of its own. `Ok(bytes)` is cached with the
/// keyspace's default TTL; `Err(e)` fails every waiting caller with
/// [`Error::DataSource`](crate::Error::DataSource) carrying `e.to_string()`, unless
/// [`DataSource::is_not_found`] says the error means "no such key", in which case callers get
/// [`Error::NotFound`](crate::Error::NotFound) and the circuit breaker counts a success.
///
/// Closures work through [`source_fn`].
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
/// use herdcache_tokio::{source_fn, Bytes};
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

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A [`DataSource`] with its types erased, as the driver stores it per keyspace.
pub(crate) trait ErasedSource: Send + Sync + 'static {
    /// Fetches `key` and turns the outcome into the core's [`LoadResult`].
    fn load(&self, key: Bytes) -> BoxFuture<'_, LoadResult>;
}

impl<S: DataSource> ErasedSource for S {
    fn load(&self, key: Bytes) -> BoxFuture<'_, LoadResult> {
        Box::pin(async move {
            match self.fetch(key).await {
                Ok(bytes) => LoadResult::Value { bytes, expires_at: None },
                Err(error) if self.is_not_found(&error) => LoadResult::NotFound,
                Err(error) => LoadResult::Failed(Bytes::from(error.to_string())),
            }
        })
    }
}

/// A shared, type-erased data source.
pub(crate) type SharedSource = Arc<dyn ErasedSource>;

/// Erases a source's types.
pub(crate) fn erase<S: DataSource>(source: S) -> SharedSource {
    Arc::new(source)
}
