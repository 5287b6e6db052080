//! The HTTP front end of `herdcache node`: the cache for clients that are not written in Rust.
//!
//! - `GET /v1/{keyspace}/{key}` → 200 with the value (`application/octet-stream`).
//! - `PUT /v1/{keyspace}/{key}` with the value as the body (`?ttl=30s` for an expiry) → 204.
//! - `DELETE /v1/{keyspace}/{key}` → 204.
//! - `GET /v1/stats` → 200, JSON: per keyspace groupcache's counters (`gets`, `cache_hits`,
//!   `peer_loads`, `peer_errors`, `loads`, `loads_deduped`, `local_loads`, `local_load_errs`,
//!   `server_requests`), herdcache's (`hot_hits`, `rate_limited`, `circuit_open`, `breaker`)
//!   and the cache figures (`bytes`, `items`, `evictions`, `expirations`, `max_bytes`, and per
//!   tier under `main_cache` and `hot_cache`).
//!
//! Keyspace and key are percent-decoded path segments (`+` stays `+`); the key is the rest of
//! the path, so it may hold `/`. Errors answer a status with the error as text:
//! 404 not found or unknown keyspace, 400 bad request, 405 other methods, 413 too large,
//! 429 rate limited, 502 the data source failed, 503 circuit open / overloaded / owner
//! unavailable / shutting down, 504 timed out.

use std::convert::Infallible;
use std::time::Duration;

use herdcache_proto::{BreakerState, TierStats};
use herdcache_tokio::{Bytes, Error, Handle, KeyspaceStats};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::units::parse_duration;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the front end needs to serve.
#[derive(Clone, Debug)]
pub(crate) struct Front {
    /// The node.
    pub(crate) node: Handle,
    /// The largest value a PUT may carry.
    pub(crate) max_value: usize,
}

/// Serves the front end on `listener` until `stop` turns true; then accepts no more
/// connections (those open finish their request and close).
pub(crate) async fn serve(listener: TcpListener, front: Front, mut stop: watch::Receiver<bool>) {
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
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(front.answer(request).await) }
            });
            // A client that trickles its headers is dropped rather than held forever.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                // A client that goes away mid-request is its own business.
                _ = connection.as_mut() => {}
                () = until_stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
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
        Error::CircuitOpen | Error::ShuttingDown | Error::Overloaded | Error::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

fn failure(error: &Error) -> Answer {
    text(status_of(error), error.to_string())
}

fn decode(segment: &str) -> Bytes {
    Bytes::from(percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>())
}

impl Front {
    async fn answer(&self, request: Request<Incoming>) -> Answer {
        let path = request.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/v1/") else {
            return text(StatusCode::NOT_FOUND, "use /v1/{keyspace}/{key} or /v1/stats");
        };
        if rest == "stats" {
            return if request.method() == Method::GET {
                let body = serde_json::to_vec_pretty(&self.stats()).unwrap_or_default();
                bytes(StatusCode::OK, "application/json", Bytes::from(body))
            } else {
                method_not_allowed("GET")
            };
        }
        let Some((keyspace, key)) = rest.split_once('/') else {
            return text(StatusCode::BAD_REQUEST, "use /v1/{keyspace}/{key}");
        };
        let (keyspace, key) = (decode(keyspace), decode(key));
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
        let value = match Limited::new(request.into_body(), self.max_value).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a value is at most {} bytes", self.max_value),
                );
            }
            Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
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

    /// The stats document: `{"node": id, "keyspaces": {name: {...}}}`.
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
        json!({ "node": self.node.node_id(), "keyspaces": keyspaces })
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
    fn ttl_comes_from_the_query() {
        assert_eq!(ttl_of("ttl=30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(ttl_of("a=1&ttl=1m30s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(ttl_of("a=1"), Ok(None));
        assert!(ttl_of("ttl=0s").is_err());
        assert!(ttl_of("ttl=soon").is_err());
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
