//! A minimal HTTP/1.1 client for the tests: one request per connection, bounded in time and
//! in the size of the answer. Used to talk to Go peers' front ends and to `herdcache node`.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The longest one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer body read.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// `bytes` percent-encoded for a path segment or a query value, by the core's
/// [`herdcache_proto::groupcache::escape`]: everything outside the unreserved set
/// (`A-Z a-z 0-9 - . _ ~`), so space is `%20` and `+` is `%2B`.
#[must_use]
pub fn escape(bytes: &[u8]) -> String {
    let mut escaped = Vec::with_capacity(bytes.len());
    herdcache_proto::groupcache::escape(bytes, &mut escaped);
    // Only ASCII is written.
    String::from_utf8_lossy(&escaped).into_owned()
}

/// An answer: its status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as text (lossy), for messages.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to an `http://host:port/...` URL on a fresh connection and reads the whole
/// answer, within [`REQUEST_TIMEOUT`].
///
/// # Errors
/// A malformed URL, a connection or protocol error, a body over [`MAX_BODY_BYTES`], or the
/// timeout, as an [`io::Error`].
pub async fn request(method: Method, url: &str, body: impl Into<Bytes>) -> io::Result<Answer> {
    request_with(method, url, &[], body).await
}

/// [`request`] with extra `headers` (name, value).
///
/// # Errors
/// As [`request`].
pub async fn request_with(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> io::Result<Answer> {
    let body = body.into();
    match tokio::time::timeout(REQUEST_TIMEOUT, send(method, url, headers, body)).await {
        Ok(answer) => answer,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{url}: no answer"))),
    }
}

/// `GET url`.
///
/// # Errors
/// As [`request`].
pub async fn get(url: &str) -> io::Result<Answer> {
    request(Method::GET, url, Bytes::new()).await
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> io::Result<Answer> {
    let uri: Uri = url.parse().map_err(|error| invalid(format!("{url}: {error}")))?;
    let authority = uri.authority().ok_or_else(|| invalid(format!("{url}: no host")))?.clone();
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io_error)?;
    let connection = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header(hyper::header::HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).map_err(|error| invalid(error.to_string()))?;
    let response = sender.send_request(request).await.map_err(io_error)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|error| io::Error::other(error.to_string()))?
        .to_bytes();
    connection.abort();
    Ok(Answer { status, body })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn io_error(error: hyper::Error) -> io::Error {
    io::Error::other(error)
}
