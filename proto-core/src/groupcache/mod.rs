//! groupcache's HTTP peer protocol, as golang/groupcache speaks it, without IO.
//!
//! A peer is named by its base URL (`http://host:port`); the groupcache ring
//! ([`RingScheme::GROUPCACHE`](crate::RingScheme::GROUPCACHE)) is keyed by these URLs exactly
//! as written. A fetch is `GET {base}/_groupcache/{group}/{key}`; the answer is `200` with
//! `Content-Type: application/x-protobuf` and a proto2 [`GetResponse`] body, or an error
//! status with the error text: `400` for a path that is not `{group}/{key}`, `404` with
//! `no such group: X`, `500` with the load's error. Any method is a get.
//!
//! # Escaping (measured on golang/groupcache)
//! - As a client, [`escape`] percent-encodes every byte outside the unreserved set
//!   (`A–Z a–z 0–9 - . _ ~`): space → `%20`, `+` → `%2B`, `/` → `%2F`. (Go's client uses
//!   `url.QueryEscape`, which writes a space as `+`; Go's server then reads a literal `+`, so
//!   a key with a space reaches a Go owner as a different key. Writing `%20` is read as a
//!   space by every server.)
//! - As a server, the request path is percent-decoded ([`unescape`]) and nothing else: `+`
//!   stays `+`, and the path is never cleaned or redirected. The group is what comes before
//!   the first `/` after the base path, the key all the rest (it may contain `/` and may be
//!   empty), as Go's `strings.SplitN(path, "/", 2)` on the decoded path.
//!
//! # Contract
//! - Framing is [`crate::http`]'s; this module gives it meaning. Everything malformed is a
//!   [`GroupcacheError`], never a panic, and [`GroupcacheError::status`] says what a server
//!   answers.
//! - The protobuf body is encoded and decoded by [`prost`] (derived, no build script): its
//!   size is bounded by the HTTP body limit before it is decoded, and unknown fields are
//!   skipped as proto2 says.

use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

use crate::http::{HttpError, Request, Response, emit_request, emit_response};

/// The path under a peer's base URL that groupcache serves (Go's `defaultBasePath`).
pub const BASE_PATH: &str = "/_groupcache/";

/// The content type of a successful answer.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// The body of a successful answer (groupcachepb's `GetResponse`, proto2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResponse {
    /// The value (absent means empty).
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub value: Option<Bytes>,
    /// Requests per minute for the key at the owner. Go groupcache defines it and never sets
    /// it; herdcache sets it, and mirrors a hot key when a herdcache owner reports it.
    #[prost(double, optional, tag = "2")]
    pub minute_qps: Option<f64>,
}

/// Why groupcache HTTP bytes or names were refused. Nothing was written or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupcacheError {
    /// The HTTP framing was malformed or over a limit (see [`HttpError::status`]).
    Http(HttpError),
    /// A peer's base URL is not `http://host[:port][/path]`.
    BadPeerUrl,
    /// A `%` not followed by two hex digits in a request path.
    BadEscape,
    /// A path under the base path without a `/` between group and key.
    BadPath,
    /// A path outside the base path.
    NotGroupcache,
    /// A `200` answer whose body is not a `GetResponse`.
    BadProtobuf,
}

impl GroupcacheError {
    /// The status a server answers with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            GroupcacheError::Http(error) => error.status(),
            GroupcacheError::NotGroupcache => 404,
            GroupcacheError::BadProtobuf => 500,
            _ => 400,
        }
    }

    /// The error text a server sends with [`GroupcacheError::status`] (Go's words where Go
    /// has them).
    #[must_use]
    pub fn message(&self) -> &'static str {
        match self {
            GroupcacheError::NotGroupcache => "404 page not found",
            GroupcacheError::Http(
                HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. },
            ) => "431 Request Header Fields Too Large",
            GroupcacheError::Http(HttpError::BodyTooLarge { .. }) => "413 Request Entity Too Large",
            _ => "bad request",
        }
    }
}

impl From<HttpError> for GroupcacheError {
    fn from(error: HttpError) -> Self {
        GroupcacheError::Http(error)
    }
}

impl fmt::Display for GroupcacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupcacheError::Http(error) => error.fmt(f),
            GroupcacheError::BadPeerUrl => f.write_str("peer URL is not http://host[:port][/path]"),
            GroupcacheError::BadEscape => f.write_str("invalid percent-escape in the path"),
            GroupcacheError::BadPath => f.write_str("path is not {base}/{group}/{key}"),
            GroupcacheError::NotGroupcache => {
                f.write_str("path is outside the groupcache base path")
            }
            GroupcacheError::BadProtobuf => f.write_str("answer is not a GetResponse"),
        }
    }
}

impl core::error::Error for GroupcacheError {}

/// Appends `bytes` percent-encoded to `out`: every byte outside `A–Z a–z 0–9 - . _ ~` as `%XX`
/// (upper-case hex).
pub fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]);
        }
    }
}

/// Percent-decodes `bytes`: `%XX` (either case) becomes the byte, everything else — `+`
/// included — stays as it is.
///
/// # Errors
/// [`GroupcacheError::BadEscape`] for a `%` not followed by two hex digits.
pub fn unescape(bytes: &[u8]) -> Result<Vec<u8>, GroupcacheError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let (Some(high), Some(low)) =
                (tail.first().and_then(hex_value), tail.get(1).and_then(hex_value))
            else {
                return Err(GroupcacheError::BadEscape);
            };
            out.push(high << 4 | low);
            rest = &tail[2..];
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    Ok(out)
}

fn hex_value(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|value| value as u8)
}

/// A peer's base URL, parsed: what the ring names it by, where to dial, and how to address it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerUrl {
    url: Bytes,
    authority: Bytes,
    address: Bytes,
    prefix: Vec<u8>,
}

impl PeerUrl {
    /// Parses `http://host[:port][/path]` (the port defaults to 80) or
    /// `https://host[:port][/path]` (443; the driver runs TLS under it).
    ///
    /// # Errors
    /// [`GroupcacheError::BadPeerUrl`] for another scheme, an empty host, user info, a port
    /// that is not a number, or characters a request line cannot carry.
    pub fn parse(url: &Bytes) -> Result<PeerUrl, GroupcacheError> {
        let bad = GroupcacheError::BadPeerUrl;
        let starts_with = |scheme: &[u8]| {
            url.get(..scheme.len()).is_some_and(|start| start.eq_ignore_ascii_case(scheme))
        };
        let (scheme, default_port): (&[u8], &[u8]) = if starts_with(b"http://") {
            (b"http://", b":80")
        } else if starts_with(b"https://") {
            (b"https://", b":443")
        } else {
            return Err(bad);
        };
        if !url.iter().all(|&byte| byte > b' ' && byte < 0x7f) {
            return Err(bad);
        }
        let rest = &url[scheme.len()..];
        let end =
            rest.iter().position(|&byte| matches!(byte, b'/' | b'?' | b'#')).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty()
            || authority.contains(&b'@')
            || path.contains(&b'?')
            || path.contains(&b'#')
        {
            return Err(bad);
        }
        // A port is what follows the last ':' outside an IPv6 literal's brackets.
        let port_at = authority
            .iter()
            .rposition(|&byte| byte == b':')
            .filter(|&at| !authority[at..].contains(&b']'));
        let host = &authority[..port_at.unwrap_or(authority.len())];
        if host.is_empty() {
            return Err(bad);
        }
        let address = match port_at {
            Some(at) => {
                let port = &authority[at + 1..];
                if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
                    return Err(bad);
                }
                url.slice_ref(authority)
            }
            None => {
                let mut address = Vec::with_capacity(host.len() + 3);
                address.extend_from_slice(host);
                address.extend_from_slice(default_port);
                Bytes::from(address)
            }
        };
        let mut prefix = Vec::with_capacity(path.len() + BASE_PATH.len());
        prefix.extend_from_slice(path);
        prefix.extend_from_slice(BASE_PATH.as_bytes());
        Ok(PeerUrl { url: url.clone(), authority: url.slice_ref(authority), address, prefix })
    }

    /// The URL as given (the peer's name on the ring).
    #[must_use]
    pub fn url(&self) -> &Bytes {
        &self.url
    }

    /// `host:port` to open a TCP connection to.
    #[must_use]
    pub fn address(&self) -> &Bytes {
        &self.address
    }

    /// The value of the `Host` header.
    #[must_use]
    pub fn authority(&self) -> &Bytes {
        &self.authority
    }

    /// Appends the request for `key` of `group` to `out`: `GET {path}/_groupcache/{group}/{key}`
    /// with both names escaped, and a `Host` header.
    pub fn encode_get(&self, group: &[u8], key: &[u8], out: &mut Vec<u8>) {
        let mut target = Vec::with_capacity(self.prefix.len() + 3 * (group.len() + key.len()) + 1);
        target.extend_from_slice(&self.prefix);
        escape(group, &mut target);
        target.push(b'/');
        escape(key, &mut target);
        emit_request(out, "GET", &target, &[("Host", &self.authority)], &[])
            .expect("a parsed URL and an escaped path are valid in a request line");
    }
}

/// What a peer answered to a get.
#[derive(Clone, Debug, PartialEq)]
pub enum GetReply {
    /// `200`: the value, and the key's requests per minute at the owner if it said.
    Value {
        /// The value.
        value: Bytes,
        /// The owner's `minute_qps`.
        minute_qps: Option<f64>,
    },
    /// Another status, with its body (Go's error text, without the newline `http.Error` adds).
    Failed {
        /// The status.
        status: u16,
        /// The text.
        message: Bytes,
    },
}

/// Reads a peer's answer to [`PeerUrl::encode_get`].
///
/// # Errors
/// [`GroupcacheError::BadProtobuf`] for a `200` whose body is not a `GetResponse`.
pub fn parse_get_response(response: &Response) -> Result<GetReply, GroupcacheError> {
    if response.status != 200 {
        let body = &response.body;
        let message = body.slice(..body.strip_suffix(b"\n").map_or(body.len(), <[u8]>::len));
        return Ok(GetReply::Failed { status: response.status, message });
    }
    let decoded = <GetResponse as prost::Message>::decode(response.body.clone())
        .map_err(|_| GroupcacheError::BadProtobuf)?;
    Ok(GetReply::Value { value: decoded.value.unwrap_or_default(), minute_qps: decoded.minute_qps })
}

/// Reads the group and key a request asks for (any method), as a Go server does.
///
/// # Errors
/// [`GroupcacheError::BadEscape`] or [`GroupcacheError::BadPath`] (answer `400`),
/// [`GroupcacheError::NotGroupcache`] (answer `404`).
pub fn parse_get_request(request: &Request) -> Result<(Bytes, Bytes), GroupcacheError> {
    let mut target: &[u8] = &request.target;
    // The absolute form (`http://host/path`) names the path after the authority.
    if let Some(at) = target.windows(3).position(|window| window == b"://") {
        if target[..at].iter().all(u8::is_ascii_alphabetic) {
            let after = &target[at + 3..];
            target = after
                .iter()
                .position(|&byte| byte == b'/')
                .map_or(&b"/"[..], |slash| &after[slash..]);
        }
    }
    let path = target.split(|&byte| byte == b'?').next().unwrap_or_default();
    let path = unescape(path)?;
    let rest = path.strip_prefix(BASE_PATH.as_bytes()).ok_or(GroupcacheError::NotGroupcache)?;
    let slash = rest.iter().position(|&byte| byte == b'/').ok_or(GroupcacheError::BadPath)?;
    let path = Bytes::from(path.clone());
    let start = BASE_PATH.len();
    Ok((path.slice(start..start + slash), path.slice(start + slash + 1..)))
}

/// Appends a `200` answer carrying `value` (and `minute_qps` when given) to `out`.
pub fn encode_value_response(
    value: &Bytes,
    minute_qps: Option<f64>,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let message = GetResponse { value: Some(value.clone()), minute_qps };
    let body = prost::Message::encode_to_vec(&message);
    emit_response(out, 200, &[("Content-Type", CONTENT_TYPE.as_bytes())], &body, keep_alive)
        .expect("a fixed status and header are valid");
}

/// Appends an error answer to `out` as Go's `http.Error` writes it: `text/plain`, the text
/// and a newline. A status outside 100–999 is sent as 500.
pub fn encode_error_response(status: u16, message: &[u8], keep_alive: bool, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(message.len() + 1);
    body.extend_from_slice(message);
    body.push(b'\n');
    let headers: [(&str, &[u8]); 2] =
        [("Content-Type", b"text/plain; charset=utf-8"), ("X-Content-Type-Options", b"nosniff")];
    let status = if (100..=999).contains(&status) { status } else { 500 };
    emit_response(out, status, &headers, &body, keep_alive).expect("fixed headers are valid");
}

#[cfg(test)]
mod tests;
