//! A counting HTTP origin, in the test's process: the one data source that every process of
//! a test cluster (Go groupcache peers, `herdcache node`s, in-process nodes) loads from, so
//! that loads are counted per key across the whole cluster.
//!
//! It serves `GET /{loader}/{key}`: `loader` is a tag naming who loads (one path segment,
//! e.g. the process's name), `key` is the percent-encoded key (decoded only: `+` stays `+`).
//! The answer is [`origin_value`]`(key)` after the configured delay, or the status set with
//! [`Origin::respond_with`] for that key. Every request counts, whatever it is answered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The value the origin answers for `key`: `origin:` then the key's bytes.
#[must_use]
pub fn origin_value(key: &[u8]) -> Bytes {
    let mut value = b"origin:".to_vec();
    value.extend_from_slice(key);
    Bytes::from(value)
}

/// A running origin server; it stops when dropped.
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    delay_micros: AtomicU64,
    total: AtomicUsize,
    /// Per key, who loaded it, in arrival order.
    loaders: Mutex<HashMap<Bytes, Vec<String>>>,
    /// Keys answered with a status instead of their value.
    statuses: Mutex<HashMap<Bytes, StatusCode>>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Origin {
    /// Starts an origin on a free loopback port, on the current tokio runtime.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start() -> io::Result<Origin> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Origin { addr, state, accept })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL template a process tagged `loader` loads from: `http://{addr}/{loader}/{key}`,
    /// with `{key}` left for the process to fill in. `loader` must not contain `/`.
    #[must_use]
    pub fn template(&self, loader: &str) -> String {
        assert!(!loader.contains('/'), "a loader tag is one path segment: {loader:?}");
        format!("http://{}/{loader}/{{key}}", self.addr)
    }

    /// Makes each answer that starts from now on wait `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.state.delay_micros.store(micros, Ordering::SeqCst);
    }

    /// Answers `key` with `status` (and a short text body) instead of its value from now on;
    /// e.g. 404 for a key the origin does not have, 500 for a failing one.
    pub fn respond_with(&self, key: impl AsRef<[u8]>, status: StatusCode) {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.state.statuses.lock().unwrap_or_else(PoisonError::into_inner).insert(key, status);
    }

    /// Requests so far, all keys.
    #[must_use]
    pub fn loads(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Requests for `key` so far.
    #[must_use]
    pub fn loads_of(&self, key: impl AsRef<[u8]>) -> usize {
        self.loaders_of(key).len()
    }

    /// Who requested `key`, by loader tag, in arrival order.
    #[must_use]
    pub fn loaders_of(&self, key: impl AsRef<[u8]>) -> Vec<String> {
        let loaders = self.state.loaders.lock().unwrap_or_else(PoisonError::into_inner);
        loaders.get(key.as_ref()).cloned().unwrap_or_default()
    }

    /// Requests per key so far.
    #[must_use]
    pub fn loads_per_key(&self) -> HashMap<Bytes, usize> {
        let loaders = self.state.loaders.lock().unwrap_or_else(PoisonError::into_inner);
        loaders.iter().map(|(key, who)| (key.clone(), who.len())).collect()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or the like: give the system a moment, do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(Arc::clone(&state), request));
            // A client that goes away mid-request is its own business.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let respond = |status: StatusCode, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        Ok(response)
    };
    if request.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, Bytes::from_static(b"GET only"));
    }
    let Some((loader, encoded_key)) =
        request.uri().path().strip_prefix('/').and_then(|path| path.split_once('/'))
    else {
        return respond(StatusCode::BAD_REQUEST, Bytes::from_static(b"GET /{loader}/{key}"));
    };
    let key = Bytes::from(percent_encoding::percent_decode_str(encoded_key).collect::<Vec<u8>>());
    state.total.fetch_add(1, Ordering::SeqCst);
    state
        .loaders
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.clone())
        .or_default()
        .push(loader.to_owned());
    let delay = Duration::from_micros(state.delay_micros.load(Ordering::SeqCst));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = state.statuses.lock().unwrap_or_else(PoisonError::into_inner).get(&key).copied();
    match status {
        Some(status) => respond(status, Bytes::from(format!("origin status {status}"))),
        None => respond(StatusCode::OK, origin_value(&key)),
    }
}
