//! Writing requests and responses into a caller's buffer.

use alloc::vec::Vec;
use core::fmt::Write as _;

use super::HttpError;

/// Appends a request to `out`: the request line, `headers` in order, a `Content-Length` when
/// `body` is not empty, the blank line and the body. `target` is written as given (the caller
/// escapes it); `headers` should include `Host` for HTTP/1.1.
///
/// # Errors
/// [`HttpError::InvalidField`] when the method or a header name is not a token, or the target
/// or a header value holds a control character or a space (target only). Nothing is written
/// then.
pub fn emit_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &[u8],
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<(), HttpError> {
    let target_ok = !target.is_empty() && target.iter().all(|&byte| byte > b' ' && byte != 0x7f);
    if !is_token(method.as_bytes()) || !target_ok || !headers_ok(headers) {
        return Err(HttpError::InvalidField);
    }
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(out, headers, body.len(), !body.is_empty());
    out.extend_from_slice(body);
    Ok(())
}

/// Appends a response to `out`: the status line (with [`reason_phrase`]), `headers` in order,
/// `Content-Length`, `Connection: close` unless `keep_alive`, the blank line and the body.
///
/// # Errors
/// [`HttpError::InvalidField`] when `status` is outside 100–999 or a header is not writable.
/// Nothing is written then.
pub fn emit_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
) -> Result<(), HttpError> {
    if !(100..=999).contains(&status) || !headers_ok(headers) {
        return Err(HttpError::InvalidField);
    }
    let mut line = heapless_line();
    let _ = write!(line, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    out.extend_from_slice(line.as_bytes());
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    write_headers(out, headers, body.len(), true);
    out.extend_from_slice(body);
    Ok(())
}

/// The standard reason phrase of the statuses this crate sends, `"Status"` for the rest.
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn heapless_line() -> alloc::string::String {
    alloc::string::String::with_capacity(48)
}

fn write_headers(out: &mut Vec<u8>, headers: &[(&str, &[u8])], body_len: usize, length: bool) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if length {
        let mut line = heapless_line();
        let _ = write!(line, "Content-Length: {body_len}\r\n");
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn headers_ok(headers: &[(&str, &[u8])]) -> bool {
    headers.iter().all(|(name, value)| {
        is_token(name.as_bytes())
            && value.iter().all(|&byte| byte == b'\t' || (byte >= b' ' && byte != 0x7f))
    })
}

/// An RFC 9110 token: one or more visible characters other than delimiters.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}
