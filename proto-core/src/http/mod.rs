//! HTTP/1.1 message framing without IO: incremental request and response decoders, and emit
//! of requests and responses into a caller's buffer.
//!
//! The groupcache peer protocol ([`crate::groupcache`]) is built on it, and it is general
//! enough for any HTTP/1.1 endpoint a runtime serves (an HTTP front end, an admin endpoint):
//! it knows framing, not meaning.
//!
//! # Contract
//! - **Heads are parsed by [`httparse`]** (no `std`); this module adds what `httparse` leaves
//!   to its caller: message framing (`Content-Length`, `chunked`, and for responses a body
//!   that ends when the connection closes), keep-alive, pipelining, and limits.
//! - **Limits before allocation.** A head over [`HttpLimits::max_head`] or with more than
//!   [`HttpLimits::max_headers`] fields is refused as soon as the bytes show it; a declared
//!   `Content-Length` or a chunk size that takes the body over [`HttpLimits::max_body`] is
//!   refused before any of the body is buffered. Memory grows with the bytes that actually
//!   arrived, never with what a peer announced.
//! - **Peer bytes never panic.** Anything malformed is a typed [`HttpError`]; after one the
//!   decoder is failed (every later call returns the same error) and the connection is to be
//!   closed — for a server, after answering `400 Bad Request` ([`HttpError::status`]).
//!   Framing that could be read two ways (both `Content-Length` and `Transfer-Encoding`, two
//!   different lengths, a transfer coding other than `chunked`) is refused, not guessed: that
//!   is how request smuggling starts.
//! - **Zero copy where the wire allows it**: header names and values, and a `Content-Length`
//!   body, are `Bytes` slices of the received buffer; a chunked body is assembled once.
//! - **Emit is all or nothing**: a field that cannot be written (a CR or LF in a header value,
//!   a method that is not a token, a status out of range) is an error before a byte is written.

mod decoder;
mod emit;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

pub use decoder::{RequestDecoder, ResponseDecoder};
pub use emit::{emit_request, emit_response, reason_phrase};

/// The most header fields any decoder accepts, whatever [`HttpLimits::max_headers`] says (the
/// parser's field table lives on the stack).
pub const MAX_HEADERS: u16 = 64;

/// Size limits of one HTTP connection's receive side.
///
/// Defaults: a 32 KiB head (room for a request line carrying an 8 KiB key percent-encoded,
/// which can triple it), 64 header fields, and an 8 MiB + 64 KiB body (an 8 MiB value and its
/// protobuf or chunk framing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HttpLimits {
    /// The longest head (request or status line, header fields and the blank line), in bytes.
    pub max_head: u32,
    /// The most header fields (at most [`MAX_HEADERS`]).
    pub max_headers: u16,
    /// The longest body, in bytes, after any chunked coding is removed.
    pub max_body: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 32 << 10,
            max_headers: MAX_HEADERS,
            max_body: (8 << 20) + (64 << 10),
        }
    }
}

/// One header field, as received: the name as sent (compare it case-insensitively) and the
/// value with surrounding whitespace removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name.
    pub name: Bytes,
    /// The field value.
    pub value: Bytes,
}

/// A complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET` (case-sensitive, as the protocol says).
    pub method: Bytes,
    /// The request target as sent: usually an absolute path with an optional query.
    pub target: Bytes,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The header fields, in order.
    pub headers: Vec<Header>,
    /// The body (empty when none was sent).
    pub body: Bytes,
    /// Whether the client keeps the connection open after the response (HTTP/1.1 unless it
    /// sent `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

impl Request {
    /// The value of the first header field called `name` (ASCII case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        find_header(&self.headers, name)
    }
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code (interim 1xx responses are skipped by the decoder, never returned).
    pub status: u16,
    /// The reason phrase as sent.
    pub reason: Bytes,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The header fields, in order.
    pub headers: Vec<Header>,
    /// The body, with any chunked coding removed.
    pub body: Bytes,
    /// Whether the server keeps the connection open for another request.
    pub keep_alive: bool,
}

impl Response {
    /// The value of the first header field called `name` (ASCII case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a Bytes> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|header| &header.value)
}

/// Why HTTP bytes were refused. A decoder that returned one is failed for good (except
/// [`HttpError::DecoderFull`], which leaves it as it was); an emit that returned one wrote
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The head is longer than [`HttpLimits::max_head`].
    HeadTooLarge {
        /// The limit.
        limit: u32,
    },
    /// More header fields than [`HttpLimits::max_headers`].
    TooManyHeaders {
        /// The limit.
        limit: u16,
    },
    /// The request line, status line or a header field is malformed (also an HTTP version
    /// other than 1.0 and 1.1).
    MalformedHead,
    /// A `Content-Length` that is not a decimal number, or two that disagree.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: the body could be read two ways.
    AmbiguousFraming,
    /// A transfer coding other than a final `chunked`.
    UnsupportedTransferEncoding,
    /// The body (declared, or received so far) is longer than [`HttpLimits::max_body`].
    BodyTooLarge {
        /// The limit.
        limit: u32,
    },
    /// A chunk size line, chunk terminator or trailer section of a chunked body is malformed.
    BadChunk,
    /// The connection ended in the middle of a message.
    Truncated,
    /// A `101 Switching Protocols` answer: this connection no longer speaks HTTP.
    ProtocolSwitch,
    /// More bytes were pushed while the decoder already held its limit (the caller did not
    /// take the messages out). Nothing changed: take messages out, then push again.
    DecoderFull,
    /// Emit only: a method or header name that is not a token, a target or header value with
    /// control characters, or a status outside 100–999. Nothing was written.
    InvalidField,
}

impl HttpError {
    /// The status a server answers with before closing the connection.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } => 431,
            HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedTransferEncoding => 501,
            _ => 400,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::HeadTooLarge { limit } => write!(f, "HTTP head over {limit} bytes"),
            HttpError::TooManyHeaders { limit } => write!(f, "more than {limit} header fields"),
            HttpError::MalformedHead => f.write_str("malformed HTTP head"),
            HttpError::BadContentLength => f.write_str("invalid Content-Length"),
            HttpError::AmbiguousFraming => f.write_str("both Content-Length and Transfer-Encoding"),
            HttpError::UnsupportedTransferEncoding => f.write_str("unsupported transfer coding"),
            HttpError::BodyTooLarge { limit } => write!(f, "HTTP body over {limit} bytes"),
            HttpError::BadChunk => f.write_str("malformed chunked body"),
            HttpError::Truncated => f.write_str("connection closed inside an HTTP message"),
            HttpError::ProtocolSwitch => f.write_str("the server switched protocols"),
            HttpError::DecoderFull => f.write_str("HTTP decoder full: take messages out first"),
            HttpError::InvalidField => f.write_str("a field cannot be written in HTTP/1.1"),
        }
    }
}

impl core::error::Error for HttpError {}
