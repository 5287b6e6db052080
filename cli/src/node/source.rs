//! The data sources `herdcache node` can front: an HTTP origin (a URL template with `{key}`)
//! and `echo:PREFIX` (answers PREFIX + key, for tests and demos).

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use herdcache_tokio::{Builder, Bytes, DataSource, KeyspaceConfig, source_fn};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The placeholder a URL template must contain.
const KEY_PLACEHOLDER: &str = "{key}";

/// A `--source` value: where a keyspace's misses load from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SourceSpec {
    /// `http://host:port/path/{key}...`: a GET per miss, the key percent-encoded in.
    Http(String),
    /// `echo:PREFIX`: the value is PREFIX followed by the key.
    Echo(String),
}

impl SourceSpec {
    /// Parses `http://…{key}…` or `echo:PREFIX`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(prefix) = text.strip_prefix("echo:") {
            return Ok(SourceSpec::Echo(prefix.to_owned()));
        }
        if text.starts_with("https://") {
            return Err(format!(
                "{text:?}: https origins are not supported; use http:// (e.g. a local TLS proxy)"
            ));
        }
        if !text.starts_with("http://") {
            return Err(format!("{text:?}: a source is http://…{{key}}… or echo:PREFIX"));
        }
        if !text.contains(KEY_PLACEHOLDER) {
            return Err(format!("{text:?}: an origin URL template needs {KEY_PLACEHOLDER}"));
        }
        let example: Uri = text
            .replace(KEY_PLACEHOLDER, "key")
            .parse()
            .map_err(|error| format!("{text:?} is not a URL: {error}"))?;
        if example.host().is_none_or(str::is_empty) {
            return Err(format!("{text:?}: no host"));
        }
        Ok(SourceSpec::Http(text.to_owned()))
    }

    /// Adds keyspace `config` to `builder` with this source behind it. The node answers a
    /// call that takes longer than the keyspace's `read_timeout` with `TimedOut`; an origin
    /// request gives up `timeout` plus a second after it started, so that none lingers.
    pub(crate) fn add_to(
        &self,
        builder: Builder,
        config: KeyspaceConfig,
        timeout: Duration,
        max_value: usize,
    ) -> Builder {
        match self {
            SourceSpec::Echo(prefix) => {
                let prefix = Bytes::from(prefix.clone());
                builder.keyspace(
                    config,
                    source_fn(move |key: Bytes| {
                        let mut value = Vec::with_capacity(prefix.len() + key.len());
                        value.extend_from_slice(&prefix);
                        value.extend_from_slice(&key);
                        async move { Ok::<_, Infallible>(Bytes::from(value)) }
                    }),
                )
            }
            SourceSpec::Http(template) => {
                let give_up = timeout.saturating_add(Duration::from_secs(1));
                builder.keyspace(config, HttpOrigin::new(template.clone(), give_up, max_value))
            }
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Http(template) => f.write_str(template),
            SourceSpec::Echo(prefix) => write!(f, "echo:{prefix}"),
        }
    }
}

/// The key percent-encoded into `template` (every `{key}`).
fn origin_url(template: &str, key: &[u8]) -> String {
    // The core's escaping: every byte outside the unreserved set (`A-Z a-z 0-9 - . _ ~`), so
    // space is `%20`, `+` is `%2B`, `/` is `%2F`.
    let mut escaped = Vec::with_capacity(key.len());
    herdcache_proto::groupcache::escape(key, &mut escaped);
    template.replace(KEY_PLACEHOLDER, &String::from_utf8_lossy(&escaped))
}

/// An HTTP origin: `GET` the templated URL on a pooled keep-alive client. 2xx is the value,
/// 404 is "not found" (cached by nobody, counted as a success by the breaker), anything else
/// a data-source error carrying the status.
#[derive(Debug)]
struct HttpOrigin {
    template: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    max_value: usize,
}

impl HttpOrigin {
    fn new(template: String, timeout: Duration, max_value: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        HttpOrigin { template, client, timeout, max_value }
    }

    async fn get(&self, key: &[u8]) -> Result<Bytes, OriginError> {
        let url = origin_url(&self.template, key);
        let uri: Uri = url.parse().map_err(|error| OriginError::Request(format!("{error}")))?;
        let response =
            self.client.get(uri).await.map_err(|error| OriginError::Request(error.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), self.max_value)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    OriginError::TooLarge(self.max_value)
                } else {
                    OriginError::Request(error.to_string())
                }
            })?
            .to_bytes();
        match status {
            status if status.is_success() => Ok(body),
            StatusCode::NOT_FOUND => Err(OriginError::NotFound),
            status => Err(OriginError::Status(status)),
        }
    }
}

/// Why an origin fetch failed.
#[derive(Debug)]
enum OriginError {
    /// 404: the origin has no such key.
    NotFound,
    /// Another non-2xx status.
    Status(StatusCode),
    /// No answer: connection refused, reset, malformed HTTP, …
    Request(String),
    /// No complete answer within the timeout.
    TimedOut(Duration),
    /// The body is over the node's value limit.
    TooLarge(usize),
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::NotFound => f.write_str("origin: 404 Not Found"),
            OriginError::Status(status) => write!(f, "origin: {status}"),
            OriginError::Request(error) => write!(f, "origin: {error}"),
            OriginError::TimedOut(timeout) => write!(f, "origin: no answer within {timeout:?}"),
            OriginError::TooLarge(limit) => write!(f, "origin: value over {limit} bytes"),
        }
    }
}

impl DataSource for HttpOrigin {
    type Error = OriginError;

    async fn fetch(&self, key: Bytes) -> Result<Bytes, OriginError> {
        tokio::time::timeout(self.timeout, self.get(&key))
            .await
            .unwrap_or(Err(OriginError::TimedOut(self.timeout)))
    }

    fn is_not_found(&self, error: &OriginError) -> bool {
        matches!(error, OriginError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(SourceSpec::parse("echo:v-"), Ok(SourceSpec::Echo("v-".into())));
        assert_eq!(SourceSpec::parse("echo:"), Ok(SourceSpec::Echo(String::new())));
        let template = "http://127.0.0.1:8080/items/{key}?v=1";
        assert_eq!(SourceSpec::parse(template), Ok(SourceSpec::Http(template.into())));
        for bad in [
            "http://127.0.0.1:8080/items/",
            "https://example.invalid/{key}",
            "ftp://x/{key}",
            "http:///{key}",
            "127.0.0.1:8080/{key}",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn keys_are_percent_encoded_into_the_template() {
        let template = "http://h/items/{key}?again={key}";
        assert_eq!(
            origin_url(template, b"a b+c/d%"),
            "http://h/items/a%20b%2Bc%2Fd%25?again=a%20b%2Bc%2Fd%25"
        );
        assert_eq!(
            origin_url(template, "ü~._-".as_bytes()),
            "http://h/items/%C3%BC~._-?again=%C3%BC~._-"
        );
        assert!(origin_url(template, b"\xff\x00").parse::<Uri>().is_ok());
    }
}
