//! The HTTP front end of `herdcache node`: the cache for clients that are not written in Rust.
//!
//! - `GET /v1/{keyspace}/{key}` → 200 with the value (`application/octet-stream`).
//! - `PUT /v1/{keyspace}/{key}` with the value as the body (`?ttl=30s` for an expiry) → 204.
//! - `DELETE /v1/{keyspace}/{key}` → 204.
//! - `GET /v1/stats` → 200, JSON: per keyspace groupcache's counters (`gets`, `cache_hits`,
//!   `peer_loads`, `peer_errors`, `loads`, `loads_deduped`, `local_loads`, `local_load_errs`,
//!   `server_requests`), herdcache's (`hot_hits`, `rate_limited`, `circuit_open`, `breaker`,
//!   and the previous-owner peeks after a ring change: `peek_hits`, `peek_misses`,
//!   `peeks_served`)
//!   and the cache figures (`bytes`, `items`, `evictions`, `expirations`, `max_bytes`, and per
//!   tier under `main_cache` and `hot_cache`); `quorate` at the top: whether at least the
//!   minimum member count is up; `security`: peers refused at the hello for want of the
//!   cluster secret (`refused_unauthenticated`), peer writes, drops, clears and goodbyes
//!   refused because their connection is not a current member's (`refused_unauthorized`),
//!   peer TLS handshakes that failed (`tls_handshake_failures`: a certificate from another
//!   CA or none, plaintext, a timeout), and accepted peer
//!   connections open now and closed over `--max-peer-connections`
//!   (`peer_connections_open`, `peer_connections_refused`).
//! - With a bearer token (`--http-token-file`), PUT and DELETE need `Authorization: Bearer
//!   TOKEN` (and reads too with `--http-token-for-reads`; `/v1/ready` never does): 401 with
//!   `WWW-Authenticate: Bearer` without it or with another token.
//! - `GET /v1/ready` → 200 while the node is quorate (at least `--min-members` up), else 503
//!   with the reason: for a load balancer's readiness check.
//! - `GET /v1/members` → 200, JSON: the members as this node sees them (`id`, `address`,
//!   `self`, `state` alive | suspect | down, `ring_share`, `connected`, `last_heard_ms`), the
//!   view's `version`, `quorate`, and what the discovery provider reported last
//!   (`discovery`: `kind`, `healthy`, `last_error`, `members`, `updates`; null without one).
//!
//! Keyspace and key are percent-decoded path segments (`+` stays `+`); the key is the rest of
//! the path, so it may hold `/`; neither may be empty. Errors answer a status with the error
//! as text: 404 not found or unknown keyspace, 400 bad request, 405 other methods, 408 a body
//! that did not arrive in time, 413 too large, 429 rate limited, 502 the data source failed,
//! 503 circuit open / overloaded / owner unavailable / shutting down / too many connections,
//! 504 timed out.
//!
//! With a certificate (`--http-tls-cert`, `--http-tls-key`) every connection is TLS (HTTP/1.1
//! inside): a client that starts with anything but a TLS handshake is closed at once, and one
//! that starts like a plain HTTP request is first answered 400. The certificate in use is the
//! one in force at each handshake (`herdcache_runtime::tls::ServerCert`).
//!
//! Clients are bounded, so that slow or hostile ones cannot hold the node: at most
//! `max_connections` are open at once (one more is answered 503 and closed at once, unread);
//! each has the client timeout to finish its TLS handshake (a connection in handshake holds its
//! place under the cap), to send a request's headers (an idle keep-alive connection
//! too), again to send a body, and again to take an answer once its socket is full. A PUT
//! whose declared length is over the largest value is answered 413 before any of its body is
//! read (no `100 Continue`); a chunked one when it crosses the limit. Answers that leave a
//! body unread close the connection.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use herdcache_proto::{BreakerState, MemberState, TierStats};
use herdcache_tokio::{Bytes, Error, Handle, KeyspaceStats};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{
    ALLOW, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use crate::units::parse_duration;

/// What a connection over the limit is told before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\n\
too many connections\n";

/// What the front end needs to serve.
#[derive(Clone, Debug)]
pub(crate) struct Front {
    /// The node.
    pub(crate) node: Handle,
    /// The largest value a PUT may carry.
    pub(crate) max_value: usize,
    /// How long a client may take to send a request's headers, to send its body, and to take
    /// an answer once its socket is full.
    pub(crate) client_timeout: Duration,
    /// The bearer token writes (and maybe reads) need, when one is set.
    pub(crate) token: Option<BearerToken>,
}

/// The front end's bearer token (RFC 6750), and whether reads need it too.
#[derive(Clone)]
pub(crate) struct BearerToken {
    token: Arc<[u8]>,
    for_reads: bool,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken").field("for_reads", &self.for_reads).finish_non_exhaustive()
    }
}

impl BearerToken {
    pub(crate) fn new(token: Vec<u8>, for_reads: bool) -> Self {
        BearerToken { token: token.into(), for_reads }
    }

    /// Whether `request` may go on: it needs no token, or carries this one. Compared in time
    /// that does not depend on where the first wrong byte is.
    fn admits<B>(&self, request: &Request<B>, write: bool) -> bool {
        if !write && !self.for_reads {
            return true;
        }
        let Some(given) = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        given.len() == self.token.len()
            && given.iter().zip(self.token.iter()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

/// 401 with the challenge RFC 6750 asks for.
fn unauthorized() -> Answer {
    let mut response =
        text(StatusCode::UNAUTHORIZED, "a bearer token is needed (Authorization: Bearer TOKEN)");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herdcache\""));
    response
}

/// The front end's open connections: at most a fixed number, and a way to wait until all
/// have closed.
#[derive(Clone, Debug)]
pub(crate) struct Connections {
    permits: Arc<Semaphore>,
    max: u32,
}

impl Connections {
    /// Room for `max` connections at once.
    pub(crate) fn new(max: u32) -> Self {
        let permits = usize::try_from(max).unwrap_or(Semaphore::MAX_PERMITS);
        Connections { permits: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))), max }
    }

    /// A place for one more connection, if there is room.
    fn try_open(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Returns once no connection is open. Call it when no more can be accepted, else it
    /// may wait for ever.
    pub(crate) async fn all_closed(&self) {
        // Every connection holds one permit until it is closed.
        let _ = self.permits.acquire_many(self.max).await;
    }
}

/// Serves the front end on `listener` until `stop` turns true; then accepts no more
/// connections (those open finish their request and close: wait for them with
/// [`Connections::all_closed`]). With `tls`, every connection is TLS first.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Front,
    tls: Option<TlsAcceptor>,
    connections: Connections,
    mut stop: watch::Receiver<bool>,
) {
    let front = Arc::new(front);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors or the like: wait a moment rather than spin.
                    eprintln!("herdcache node: accept on the front end: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = until_stopped(&mut stop) => return,
        };
        let Some(permit) = connections.try_open() else {
            // Refused at once, without reading or waiting: a fresh socket has room for this
            // much, and a client that cannot take it only misses the reason.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let front = Arc::clone(&front);
        let stop = stop.clone();
        match &tls {
            None => {
                tokio::spawn(async move {
                    let _open = permit;
                    serve_connection(stream, front, stop).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // The permit is held from the accept on: connections in handshake count
                    // against the cap too.
                    let _open = permit;
                    serve_tls_connection(stream, acceptor, front, stop).await;
                });
            }
        }
    }
}

/// What a client that speaks plain HTTP to the TLS front end is told before it is closed.
const PLAIN_HTTP_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 42\r\nconnection: close\r\n\r\n\
this front end speaks HTTPS: use https://\n";

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves one TLS connection: the handshake (within the client timeout, and given up when
/// `stop` turns true), then HTTP as [`serve_connection`]. A client that sends anything but a
/// TLS handshake is closed at once: one that starts like a plain HTTP request is first told
/// to use https.
async fn serve_tls_connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    front: Arc<Front>,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = front.client_timeout;
    let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |addr| addr.to_string());
    let handshake = async {
        let mut first = [0_u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err("closed before the handshake".to_owned()),
            Ok(_) if first[0] == TLS_HANDSHAKE_RECORD => {}
            Ok(_) if first[0].is_ascii_uppercase() => {
                refuse_plain_http(&stream, timeout).await;
                return Err("plain HTTP on the TLS front end (answered 400)".to_owned());
            }
            Ok(_) => return Err("not a TLS handshake".to_owned()),
            Err(error) => return Err(error.to_string()),
        }
        acceptor.accept(stream).await.map_err(|error| error.to_string())
    };
    let tls = tokio::select! {
        done = tokio::time::timeout(timeout, handshake) => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(why)) => {
                HANDSHAKE_FAILURES.log(format_args!("with {peer} failed: {why}"));
                return;
            }
            Err(_) => {
                HANDSHAKE_FAILURES.log(format_args!("with {peer} took over {timeout:?}: closed"));
                return;
            }
        },
        () = until_stopped(&mut stop) => return,
    };
    serve_connection(tls, front, stop).await;
}

/// The log of failed front-end handshakes: at most one line a second, so that a flood of bad
/// connections cannot flood stderr; a line says how many went unsaid since the last.
static HANDSHAKE_FAILURES: RateLimitedLog = RateLimitedLog::new();

/// A log that writes at most one line a second and counts the rest.
#[derive(Debug)]
struct RateLimitedLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimitedLog {
    const INTERVAL: Duration = Duration::from_secs(1);

    const fn new() -> Self {
        RateLimitedLog { state: std::sync::Mutex::new((None, 0)) }
    }

    /// Writes `what` unless a line went out less than a second ago (then counts it).
    fn log(&self, what: std::fmt::Arguments<'_>) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, unsaid) = &mut *state;
        if last.is_some_and(|last| last.elapsed() < Self::INTERVAL) {
            *unsaid += 1;
            return;
        }
        *last = Some(std::time::Instant::now());
        let more = std::mem::take(unsaid);
        if more == 0 {
            eprintln!("herdcache node: front-end TLS handshake {what}");
        } else {
            eprintln!(
                "herdcache node: front-end TLS handshake {what} (and {more} more failed since)"
            );
        }
    }
}

/// Answers a plain HTTP request on the TLS port with [`PLAIN_HTTP_TO_TLS`] and closes. What
/// arrived is read first, so that the close does not reset the connection (and lose the
/// answer) for unread bytes; all of it within `limit`.
async fn refuse_plain_http(stream: &TcpStream, limit: Duration) {
    let answer = async {
        let mut sink = [0_u8; 4096];
        let _ = stream.try_read(&mut sink);
        let mut written = 0;
        while written < PLAIN_HTTP_TO_TLS.len() {
            stream.writable().await?;
            match stream.try_write(&PLAIN_HTTP_TO_TLS[written..]) {
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(limit, answer).await;
}

/// Serves one connection until the client closes it, breaks a time limit, or `stop` turns
/// true (then the request in progress finishes first).
async fn serve_connection<S>(stream: S, front: Arc<Front>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = front.client_timeout;
    let service = service_fn(move |request| {
        let front = Arc::clone(&front);
        async move { Ok::<_, Infallible>(front.answer(request).await) }
    });
    // A client that trickles its headers, or idles between requests, is dropped rather than
    // held for ever; so is one that does not take its answer.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(WriteDeadline::new(stream, timeout)), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        // A client that goes away mid-request is its own business.
        _ = connection.as_mut() => {}
        () = until_stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A stream whose writes may not stay blocked for long: once a write finds the socket full,
/// the peer has `limit` to take enough that a later write is accepted whole, else writing
/// fails with [`io::ErrorKind::TimedOut`]. A client that reads a trickle thus cannot hold an
/// answer for longer than `limit`, however slowly it drains it.
#[derive(Debug)]
struct WriteDeadline<S> {
    stream: S,
    limit: Duration,
    /// Armed by the first write that found the socket full; disarmed by a whole write.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(stream: S, limit: Duration) -> Self {
        WriteDeadline { stream, limit, deadline: None }
    }

    /// A write is blocked: pending until the socket has room, an error once past the deadline.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no answer for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// `written` of `offered` bytes went into the socket.
    fn wrote(&mut self, written: usize, offered: usize) {
        if written == offered {
            self.deadline = None;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                this.wrote(written, buf.len());
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.blocked(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(written)) => {
                this.wrote(written, bufs.iter().map(|buf| buf.len()).sum());
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.blocked(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_flush(cx) {
            Poll::Pending => this.blocked(cx),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_shutdown(cx) {
            Poll::Pending => this.blocked(cx),
            done => done,
        }
    }
}

/// Returns once `stop` is true (or its sender is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    // The borrow of the value ends here, so the future stays `Send`.
    let _ = stop.wait_for(|stopping| *stopping).await.map(drop);
}

type Answer = Response<Full<Bytes>>;

fn text(status: StatusCode, message: impl Into<String>) -> Answer {
    let mut body = message.into();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn no_content() -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// The status a node error answers with.
pub(crate) fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::NotFound | Error::UnknownKeyspace => StatusCode::NOT_FOUND,
        Error::DataSource(_) => StatusCode::BAD_GATEWAY,
        Error::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        Error::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Error::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Error::BadRequest => StatusCode::BAD_REQUEST,
        // The owner did not take the write from this node: not the client's fault.
        Error::CircuitOpen
        | Error::ShuttingDown
        | Error::Overloaded
        | Error::Unavailable
        | Error::Unauthorized => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn failure(error: &Error) -> Answer {
    text(status_of(error), error.to_string())
}

fn decode(segment: &str) -> Bytes {
    Bytes::from(percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>())
}

/// `response` with `Connection: close`: the connection ends once it is written (its
/// request's body may be left unread).
fn closing(mut response: Answer) -> Answer {
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Where a request goes, by its path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `/v1/stats`.
    Stats,
    /// `/v1/members`.
    Members,
    /// `/v1/ready`.
    Ready,
    /// `/v1/{keyspace}/{key}`, both decoded, neither empty.
    Item { keyspace: Bytes, key: Bytes },
}

/// The route of `path`, or the status and message that refuse it.
fn route(path: &str) -> Result<Route, (StatusCode, &'static str)> {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err((StatusCode::NOT_FOUND, "use /v1/{keyspace}/{key}, /v1/stats or /v1/members"));
    };
    if rest == "stats" {
        return Ok(Route::Stats);
    }
    if rest == "members" {
        return Ok(Route::Members);
    }
    if rest == "ready" {
        return Ok(Route::Ready);
    }
    let Some((keyspace, key)) = rest.split_once('/') else {
        return Err((StatusCode::BAD_REQUEST, "use /v1/{keyspace}/{key}"));
    };
    let (keyspace, key) = (decode(keyspace), decode(key));
    if keyspace.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "empty keyspace: use /v1/{keyspace}/{key}"));
    }
    if key.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "empty key: use /v1/{keyspace}/{key}"));
    }
    Ok(Route::Item { keyspace, key })
}

impl Front {
    async fn answer(&self, request: Request<Incoming>) -> Answer {
        let route = route(request.uri().path());
        if let Some(token) = &self.token {
            let write = matches!(*request.method(), Method::PUT | Method::DELETE);
            if route != Ok(Route::Ready) && !token.admits(&request, write) {
                return unauthorized();
            }
        }
        let (keyspace, key) = match route {
            Ok(Route::Stats) if request.method() == Method::GET => {
                let body = serde_json::to_vec_pretty(&self.stats()).unwrap_or_default();
                return bytes(StatusCode::OK, "application/json", Bytes::from(body));
            }
            Ok(Route::Members) if request.method() == Method::GET => {
                let body = serde_json::to_vec_pretty(&self.members()).unwrap_or_default();
                return bytes(StatusCode::OK, "application/json", Bytes::from(body));
            }
            Ok(Route::Ready) if request.method() == Method::GET => return self.ready(),
            Ok(Route::Stats | Route::Members | Route::Ready) => return method_not_allowed("GET"),
            Ok(Route::Item { keyspace, key }) => (keyspace, key),
            Err((status, message)) => return text(status, message),
        };
        match *request.method() {
            Method::GET => match self.node.get(&keyspace, &key).await {
                Ok(value) => bytes(StatusCode::OK, "application/octet-stream", value),
                Err(error) => failure(&error),
            },
            Method::PUT => self.put(request, &keyspace, &key).await,
            Method::DELETE => match self.node.delete(&keyspace, &key).await {
                Ok(()) => no_content(),
                Err(error) => failure(&error),
            },
            _ => method_not_allowed("GET, PUT, DELETE"),
        }
    }

    async fn put(&self, request: Request<Incoming>, keyspace: &[u8], key: &[u8]) -> Answer {
        let ttl = match request.uri().query().map(ttl_of).transpose() {
            Ok(ttl) => ttl.flatten(),
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        // A declared length (Content-Length) over the limit is refused before the body is
        // touched: hyper sends `100 Continue` only once the body is read.
        let too_large = || {
            closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a value is at most {} bytes", self.max_value),
            ))
        };
        let max_value = u64::try_from(self.max_value).unwrap_or(u64::MAX);
        if request.body().size_hint().lower() > max_value {
            return too_large();
        }
        let body = Limited::new(request.into_body(), self.max_value).collect();
        let value = match tokio::time::timeout(self.client_timeout, body).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return too_large(),
            Ok(Err(error)) => return closing(text(StatusCode::BAD_REQUEST, error.to_string())),
            Err(_) => {
                return closing(text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the body did not arrive within {:?}", self.client_timeout),
                ));
            }
        };
        let stored = match ttl {
            Some(ttl) => self.node.put_with_ttl(keyspace, key, value, ttl).await,
            None => self.node.put(keyspace, key, value).await,
        };
        match stored {
            Ok(()) => no_content(),
            Err(error) => failure(&error),
        }
    }

    /// The stats document: `{"node": id, "quorate": bool, "keyspaces": {name: {...}},
    /// "security": {"refused_unauthenticated": n, "refused_unauthorized": n, ...}}`.
    fn stats(&self) -> Json {
        let configs = self.node.keyspaces();
        let keyspaces: serde_json::Map<String, Json> = self
            .node
            .stats()
            .into_iter()
            .map(|(name, stats)| {
                let max_bytes = configs
                    .iter()
                    .find(|config| config.name == name)
                    .map(|config| config.max_bytes);
                (String::from_utf8_lossy(&name).into_owned(), keyspace_json(&stats, max_bytes))
            })
            .collect();
        let quorate = self.node.members().quorate;
        let security = self.node.security_stats();
        let transport = self.node.transport_stats();
        json!({
            "node": self.node.node_id(),
            "quorate": quorate,
            "keyspaces": keyspaces,
            "security": {
                "refused_unauthenticated": security.refused_unauthenticated,
                "refused_unauthorized": security.refused_unauthorized,
                "tls_handshake_failures": transport.tls_handshake_failures,
                "peer_connections_open": transport.inbound_open,
                "peer_connections_refused": transport.inbound_refused,
            },
        })
    }

    /// Ready while quorate; else 503 with how many members are up.
    fn ready(&self) -> Answer {
        let view = self.node.members();
        if view.quorate {
            return text(StatusCode::OK, "ready");
        }
        let up = view.members.iter().filter(|member| member.state != MemberState::Down).count();
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {up} members up, fewer than the minimum"),
        )
    }

    /// The members document (see the module docs).
    fn members(&self) -> Json {
        let view = self.node.members();
        let members: Vec<Json> = view
            .members
            .iter()
            .map(|member| {
                json!({
                    "id": member.id,
                    "address": member.address,
                    "self": member.is_self,
                    "state": state_name(member.state),
                    "ring_share": member.ring_share,
                    "connected": member.connected,
                    "last_heard_ms": u64::try_from(member.last_heard.as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        let discovery = self.node.discovery().map(|status| {
            json!({
                "kind": status.kind,
                "healthy": status.healthy,
                "last_error": status.last_error,
                "members": status.members,
                "updates": status.updates,
            })
        });
        json!({
            "node": self.node.node_id(),
            "version": view.version,
            "quorate": view.quorate,
            "members": members,
            "discovery": discovery,
        })
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    }
}

fn method_not_allowed(allow: &'static str) -> Answer {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, format!("methods: {allow}"));
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The `ttl=` of a query string, if any.
fn ttl_of(query: &str) -> Result<Option<Duration>, String> {
    let Some(value) = query.split('&').find_map(|pair| pair.strip_prefix("ttl=")) else {
        return Ok(None);
    };
    let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
    let ttl = parse_duration(&value)?;
    if ttl.is_zero() {
        return Err("ttl must be more than zero".to_owned());
    }
    Ok(Some(ttl))
}

/// `{"state": "closed" | "open" | "half_open", ...}`; an open breaker's deadline is on the
/// node's clock, so only its state is shown.
fn breaker_json(state: &BreakerState) -> Json {
    match state {
        BreakerState::Closed { consecutive_failures } => {
            json!({ "state": "closed", "consecutive_failures": consecutive_failures })
        }
        BreakerState::Open { .. } => json!({ "state": "open" }),
        BreakerState::HalfOpen { probe_in_flight } => {
            json!({ "state": "half_open", "probe_in_flight": probe_in_flight })
        }
    }
}

fn keyspace_json(stats: &KeyspaceStats, max_bytes: Option<u64>) -> Json {
    let (main, hot) = (&stats.cache.main, &stats.cache.hot);
    let tier = |tier: &TierStats| {
        json!({
            "items": tier.items,
            "bytes": tier.bytes,
            "hits": tier.hits,
            "evictions": tier.evictions,
            "expirations": tier.expirations,
        })
    };
    json!({
        "gets": stats.gets,
        "cache_hits": stats.cache_hits + stats.hot_hits,
        "peer_loads": stats.peer_loads,
        "peer_errors": stats.peer_errors,
        "loads": stats.loads,
        "loads_deduped": stats.loads_deduped,
        "local_loads": stats.local_loads,
        "local_load_errs": stats.local_load_errs,
        "server_requests": stats.server_requests,
        "main_hits": stats.cache_hits,
        "hot_hits": stats.hot_hits,
        "rate_limited": stats.rate_limited,
        "circuit_open": stats.circuit_open,
        "peek_hits": stats.peek_hits,
        "peek_misses": stats.peek_misses,
        "peeks_served": stats.peeks_served,
        "breaker": stats.breaker.map(|state| breaker_json(&state)),
        "bytes": main.bytes + hot.bytes,
        "items": main.items + hot.items,
        "evictions": main.evictions + hot.evictions,
        "expirations": main.expirations + hot.expirations,
        "max_bytes": max_bytes,
        "main_cache": tier(main),
        "hot_cache": tier(hot),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_guards_writes_and_reads_when_asked() {
        let with = |authorization: Option<&str>, method: Method| {
            let mut request = Request::builder().method(method);
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            request.body(()).expect("a request")
        };
        let writes = BearerToken::new(b"0123456789abcdef".to_vec(), false);
        let reads = BearerToken::new(b"0123456789abcdef".to_vec(), true);
        let right = Some("Bearer 0123456789abcdef");
        for (authorization, admitted) in [
            (right, true),
            (None, false),
            (Some("Bearer 0123456789abcdeX"), false),
            (Some("Bearer 0123456789abcde"), false),
            (Some("Bearer 0123456789abcdef0"), false),
            (Some("bearer 0123456789abcdef"), false),
            (Some("Basic 0123456789abcdef"), false),
        ] {
            let write = with(authorization, Method::PUT);
            assert_eq!(writes.admits(&write, true), admitted, "{authorization:?}");
            assert_eq!(reads.admits(&write, true), admitted, "{authorization:?}");
            let read = with(authorization, Method::GET);
            assert!(writes.admits(&read, false), "reads are open: {authorization:?}");
            assert_eq!(reads.admits(&read, false), admitted, "{authorization:?}");
        }
        let refused = unauthorized();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().get(WWW_AUTHENTICATE).is_some());
    }

    #[test]
    fn ttl_comes_from_the_query() {
        assert_eq!(ttl_of("ttl=30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(ttl_of("a=1&ttl=1m30s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(ttl_of("a=1"), Ok(None));
        assert!(ttl_of("ttl=0s").is_err());
        assert!(ttl_of("ttl=soon").is_err());
    }

    #[test]
    fn paths_route_to_stats_or_a_nonempty_keyspace_and_key() {
        let item = |keyspace: &'static str, key: &'static str| {
            Ok(Route::Item { keyspace: Bytes::from(keyspace), key: Bytes::from(key) })
        };
        assert_eq!(route("/v1/stats"), Ok(Route::Stats));
        assert_eq!(route("/v1/members"), Ok(Route::Members));
        assert_eq!(route("/v1/ready"), Ok(Route::Ready));
        assert_eq!(route("/v1/ks/a%20b+c/d"), item("ks", "a b+c/d"));
        assert_eq!(route("/v1/ks//"), item("ks", "/"));
        assert_eq!(route("/v1/stats/x"), item("stats", "x"));
        for (path, status) in [
            ("/v1/ks/", StatusCode::BAD_REQUEST),
            ("/v1//x", StatusCode::BAD_REQUEST),
            ("/v1//", StatusCode::BAD_REQUEST),
            ("/v1/ks", StatusCode::BAD_REQUEST),
            ("/v1/", StatusCode::BAD_REQUEST),
            ("/v2/ks/x", StatusCode::NOT_FOUND),
        ] {
            assert_eq!(route(path).map_err(|(status, _)| status), Err(status), "{path}");
        }
        assert!(route("/v1/ks/").is_err_and(|(_, message)| message.contains("empty key")));
        assert!(route("/v1//x").is_err_and(|(_, message)| message.contains("empty keyspace")));
    }

    #[test]
    fn every_error_has_its_status() {
        assert_eq!(status_of(&Error::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(&Error::DataSource(Bytes::new())), StatusCode::BAD_GATEWAY);
        assert_eq!(status_of(&Error::TimedOut), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status_of(&Error::TooLarge), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status_of(&Error::BadRequest), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&Error::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(&Error::RateLimited), StatusCode::TOO_MANY_REQUESTS);
    }
}
