//! Cutting requests and responses out of a byte stream that arrives in pieces.

use alloc::vec::Vec;
use bytes::{Buf, Bytes, BytesMut};

use super::{Header, HttpError, HttpLimits, MAX_HEADERS, Request, Response};

/// The longest chunk-size line (size and extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 1_024;

/// An incremental request decoder for one server connection.
///
/// Push the bytes of each read with [`RequestDecoder::push`], then take requests out with
/// [`RequestDecoder::next_request`] until it returns `Ok(None)`. Requests may be split at any
/// byte, and several may arrive in one read (pipelining): the caller answers them in order.
///
/// A request body is framed by `Content-Length` or `Transfer-Encoding: chunked`; with neither
/// it is empty.
///
/// # Bounded memory
/// After a drain to `Ok(None)` the decoder holds less than `max_head + max_body` bytes plus
/// one chunk-size line (1 KiB); a push while it holds that much or more is refused with
/// [`HttpError::DecoderFull`] and changes nothing.
///
/// # Example
/// ```
/// use herdcache_proto::http::{HttpLimits, RequestDecoder};
/// let mut decoder = RequestDecoder::new(HttpLimits::default());
/// decoder.push(b"GET /_groupcache/users/ada HTTP/1.1\r\nHost: a\r\n")?;
/// assert_eq!(decoder.next_request()?, None); // the head is not complete yet
/// decoder.push(b"\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")?;
/// let first = decoder.next_request()?.expect("complete");
/// assert_eq!(&first.target[..], b"/_groupcache/users/ada");
/// assert!(first.keep_alive);
/// let second = decoder.next_request()?.expect("pipelined");
/// assert!(!second.keep_alive);
/// # Ok::<(), herdcache_proto::http::HttpError>(())
/// ```
#[derive(Debug)]
pub struct RequestDecoder {
    stream: Stream,
}

impl RequestDecoder {
    /// An empty decoder that enforces `limits`.
    #[must_use]
    pub fn new(limits: HttpLimits) -> Self {
        RequestDecoder { stream: Stream::new(limits) }
    }

    /// Appends received bytes.
    ///
    /// # Errors
    /// The decoder's failure, if it failed earlier; [`HttpError::DecoderFull`] when it holds
    /// its limit already (nothing changed).
    pub fn push(&mut self, data: &[u8]) -> Result<(), HttpError> {
        self.stream.push(data)
    }

    /// The next complete request, `Ok(None)` until more bytes arrive.
    ///
    /// # Errors
    /// Malformed or oversized input; the decoder is failed from then on.
    pub fn next_request(&mut self) -> Result<Option<Request>, HttpError> {
        let Some((head, body)) = self.stream.next_message(Kind::Request)? else {
            return Ok(None);
        };
        let StartLine::Request { method, target } = head.start else {
            unreachable!("a request decoder parses request lines only")
        };
        Ok(Some(Request {
            method,
            target,
            minor_version: head.minor_version,
            headers: head.headers,
            body,
            keep_alive: head.keep_alive,
        }))
    }

    /// Bytes received and not yet returned as requests.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.stream.buffered()
    }
}

/// An incremental response decoder for one client connection.
///
/// Like [`RequestDecoder`], for the answers to the requests sent on the connection, in order.
/// A response body is framed by `Transfer-Encoding: chunked`, by `Content-Length`, or — with
/// neither — by the end of the connection: call [`ResponseDecoder::finish`] when the
/// connection closes. `1xx` interim responses are skipped; `204` and `304` have no body.
/// Responses to `HEAD` requests are not supported (their headers announce a body that is not
/// sent).
#[derive(Debug)]
pub struct ResponseDecoder {
    stream: Stream,
}

impl ResponseDecoder {
    /// An empty decoder that enforces `limits`.
    #[must_use]
    pub fn new(limits: HttpLimits) -> Self {
        ResponseDecoder { stream: Stream::new(limits) }
    }

    /// Appends received bytes.
    ///
    /// # Errors
    /// As [`RequestDecoder::push`].
    pub fn push(&mut self, data: &[u8]) -> Result<(), HttpError> {
        self.stream.push(data)
    }

    /// The next complete response, `Ok(None)` until more bytes arrive.
    ///
    /// # Errors
    /// Malformed or oversized input; the decoder is failed from then on.
    pub fn next_response(&mut self) -> Result<Option<Response>, HttpError> {
        let message = self.stream.next_message(Kind::Response)?;
        Ok(message.map(into_response))
    }

    /// The connection closed: the response whose body ran until the close, if one was in
    /// progress; `Ok(None)` when the connection closed between responses.
    ///
    /// # Errors
    /// [`HttpError::Truncated`] when it closed inside a response of another framing.
    pub fn finish(&mut self) -> Result<Option<Response>, HttpError> {
        let message = self.stream.finish()?;
        Ok(message.map(into_response))
    }

    /// Bytes received and not yet returned as responses.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.stream.buffered()
    }
}

fn into_response((head, body): (Head, Bytes)) -> Response {
    let StartLine::Response { status, reason } = head.start else {
        unreachable!("a response decoder parses status lines only")
    };
    Response {
        status,
        reason,
        minor_version: head.minor_version,
        headers: head.headers,
        body,
        keep_alive: head.keep_alive,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

#[derive(Debug)]
enum StartLine {
    Request { method: Bytes, target: Bytes },
    Response { status: u16, reason: Bytes },
}

#[derive(Debug)]
struct Head {
    start: StartLine,
    minor_version: u8,
    headers: Vec<Header>,
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    /// Trailer fields after the last chunk; `seen` bytes of them so far.
    Trailers {
        seen: usize,
    },
}

#[derive(Debug)]
struct InBody {
    head: Head,
    framing: Framing,
    /// A chunked body assembled so far.
    data: BytesMut,
}

/// The receive side both decoders share.
#[derive(Debug)]
struct Stream {
    limits: HttpLimits,
    buffer: BytesMut,
    failed: Option<HttpError>,
    body: Option<InBody>,
}

impl Stream {
    fn new(limits: HttpLimits) -> Self {
        Stream { limits, buffer: BytesMut::new(), failed: None, body: None }
    }

    fn buffered(&self) -> usize {
        self.buffer.len() + self.body.as_ref().map_or(0, |body| body.data.len())
    }

    /// What a drained decoder may hold at most: less than a head, a body, or a chunk-size
    /// line (found by fuzzing: a chunk-size line can be longer than a small `max_head`).
    fn capacity_limit(&self) -> usize {
        self.limits.max_head as usize + self.limits.max_body as usize + MAX_CHUNK_LINE
    }

    fn push(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.buffer.len() >= self.capacity_limit() {
            return Err(HttpError::DecoderFull);
        }
        self.buffer.extend_from_slice(data);
        Ok(())
    }

    fn next_message(&mut self, kind: Kind) -> Result<Option<(Head, Bytes)>, HttpError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.advance(kind);
        if let Err(error) = result {
            self.failed = Some(error);
            self.buffer = BytesMut::new();
            self.body = None;
        }
        result
    }

    fn finish(&mut self) -> Result<Option<(Head, Bytes)>, HttpError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = match self.body.take() {
            Some(InBody { head, framing: Framing::UntilClose, .. }) => {
                Ok(Some((head, self.buffer.split().freeze())))
            }
            Some(_) => Err(HttpError::Truncated),
            None if self.buffer.is_empty() => Ok(None),
            None => Err(HttpError::Truncated),
        };
        self.failed = Some(result.as_ref().err().copied().unwrap_or(HttpError::Truncated));
        result
    }

    fn advance(&mut self, kind: Kind) -> Result<Option<(Head, Bytes)>, HttpError> {
        loop {
            if self.body.is_none() {
                let Some((head, framing)) = self.parse_head(kind)? else { return Ok(None) };
                if let StartLine::Response { status: 100..=199, .. } = head.start {
                    continue; // an interim response: the real one follows
                }
                self.body = Some(InBody { head, framing, data: BytesMut::new() });
            }
            let Some(body) = self.read_body()? else { return Ok(None) };
            let done = self.body.take().expect("a body was in progress");
            if self.buffer.is_empty() {
                // Let go of the allocation the message arrived in.
                self.buffer = BytesMut::new();
            }
            return Ok(Some((done.head, body)));
        }
    }

    fn parse_head(&mut self, kind: Kind) -> Result<Option<(Head, Framing)>, HttpError> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let max_head = self.limits.max_head;
        let max_headers = self.limits.max_headers.min(MAX_HEADERS);
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS as usize];
        let fields = &mut fields[..usize::from(max_headers)];
        let (base, buffer_len) = (self.buffer.as_ptr() as usize, self.buffer.len());
        // Where a parsed part lies in the buffer; a part that is not in it (an empty default)
        // becomes an empty span.
        let offset = |part: &[u8]| {
            (part.as_ptr() as usize)
                .checked_sub(base)
                .filter(|at| at + part.len() <= buffer_len)
                .map_or((0, 0), |at| (at, part.len()))
        };
        let parsed = match kind {
            Kind::Request => {
                let mut request = httparse::Request::new(fields);
                request.parse(&self.buffer).map(|status| match status {
                    httparse::Status::Complete(len) => {
                        let method = offset(request.method.unwrap_or_default().as_bytes());
                        let target = offset(request.path.unwrap_or_default().as_bytes());
                        let minor = request.version.unwrap_or(1);
                        let headers = header_offsets(request.headers, &offset);
                        Some((len, Start::Request(method, target), minor, headers))
                    }
                    httparse::Status::Partial => None,
                })
            }
            Kind::Response => {
                let mut response = httparse::Response::new(fields);
                response.parse(&self.buffer).map(|status| match status {
                    httparse::Status::Complete(len) => {
                        let reason = offset(response.reason.unwrap_or_default().as_bytes());
                        let code = response.code.unwrap_or_default();
                        let minor = response.version.unwrap_or(1);
                        let headers = header_offsets(response.headers, &offset);
                        Some((len, Start::Response(code, reason), minor, headers))
                    }
                    httparse::Status::Partial => None,
                })
            }
        };
        let (len, start, minor_version, offsets) = match parsed {
            Ok(Some(head)) => head,
            Ok(None) => {
                if self.buffer.len() > max_head as usize {
                    return Err(HttpError::HeadTooLarge { limit: max_head });
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders { limit: max_headers });
            }
            Err(_) => return Err(HttpError::MalformedHead),
        };
        if len > max_head as usize {
            return Err(HttpError::HeadTooLarge { limit: max_head });
        }
        let bytes = self.buffer.split_to(len).freeze();
        let slice = |(at, len): (usize, usize)| bytes.slice(at..at + len);
        let headers: Vec<Header> = offsets
            .into_iter()
            .map(|(name, value)| Header { name: slice(name), value: slice(value) })
            .collect();
        let start = match start {
            Start::Request(method, target) => {
                StartLine::Request { method: slice(method), target: slice(target) }
            }
            Start::Response(101, _) => return Err(HttpError::ProtocolSwitch),
            Start::Response(status, reason) => {
                StartLine::Response { status, reason: slice(reason) }
            }
        };
        let framing = framing(kind, &start, &headers, self.limits.max_body)?;
        let keep_alive = keep_alive(minor_version, &headers);
        Ok(Some((Head { start, minor_version, headers, keep_alive }, framing)))
    }

    /// The body of the message in progress, once complete.
    fn read_body(&mut self) -> Result<Option<Bytes>, HttpError> {
        let max_body = self.limits.max_body;
        let max_head = self.limits.max_head as usize;
        let body = self.body.as_mut().expect("a head was parsed");
        loop {
            match &mut body.framing {
                Framing::Length(len) => {
                    if self.buffer.len() < *len {
                        return Ok(None);
                    }
                    return Ok(Some(self.buffer.split_to(*len).freeze()));
                }
                Framing::UntilClose => {
                    if self.buffer.len() > max_body as usize {
                        return Err(HttpError::BodyTooLarge { limit: max_body });
                    }
                    return Ok(None);
                }
                Framing::Chunked(chunk) => match chunk {
                    Chunk::Size => match httparse::parse_chunk_size(&self.buffer) {
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                            return Err(HttpError::BadChunk);
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            self.buffer.advance(used);
                            if size == 0 {
                                *chunk = Chunk::Trailers { seen: 0 };
                            } else if body.data.len() as u64 + size > u64::from(max_body) {
                                return Err(HttpError::BodyTooLarge { limit: max_body });
                            } else {
                                *chunk = Chunk::Data(size);
                            }
                        }
                        Ok(httparse::Status::Partial) => {
                            if self.buffer.len() > MAX_CHUNK_LINE {
                                return Err(HttpError::BadChunk);
                            }
                            return Ok(None);
                        }
                        Err(_) => return Err(HttpError::BadChunk),
                    },
                    Chunk::Data(remaining) => {
                        if self.buffer.is_empty() {
                            return Ok(None);
                        }
                        let take = self
                            .buffer
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        body.data.extend_from_slice(&self.buffer[..take]);
                        self.buffer.advance(take);
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                    }
                    Chunk::DataEnd => {
                        if self.buffer.len() < 2 {
                            return Ok(None);
                        }
                        if &self.buffer[..2] != b"\r\n" {
                            return Err(HttpError::BadChunk);
                        }
                        self.buffer.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers { seen } => {
                        let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\r\n")
                        else {
                            // A partial trailer line of two bytes or more is not the final
                            // empty line: once complete it adds at least its length + 1 (its
                            // CRLF, of which a trailing CR may be here already). Refuse only
                            // what is sure to be over, so that reads cannot change the verdict
                            // (found by http_request_decode).
                            let partial = self.buffer.len();
                            if partial >= 2 && *seen + partial + 1 > max_head {
                                return Err(HttpError::HeadTooLarge { limit: max_head as u32 });
                            }
                            return Ok(None);
                        };
                        self.buffer.advance(end + 2);
                        if end == 0 {
                            return Ok(Some(core::mem::take(&mut body.data).freeze()));
                        }
                        *seen += end + 2;
                        if *seen > max_head {
                            return Err(HttpError::HeadTooLarge { limit: max_head as u32 });
                        }
                    }
                },
            }
        }
    }
}

/// A start line by offsets into the receive buffer, before the head is split off it.
enum Start {
    Request((usize, usize), (usize, usize)),
    Response(u16, (usize, usize)),
}

type Span = (usize, usize);

fn header_offsets(
    headers: &[httparse::Header<'_>],
    offset: &impl Fn(&[u8]) -> Span,
) -> Vec<(Span, Span)> {
    headers.iter().map(|header| (offset(header.name.as_bytes()), offset(header.value))).collect()
}

/// How the body of a message with this head is delimited.
fn framing(
    kind: Kind,
    start: &StartLine,
    headers: &[Header],
    max_body: u32,
) -> Result<Framing, HttpError> {
    if let StartLine::Response { status: 100..=199 | 204 | 304, .. } = start {
        return Ok(Framing::Length(0));
    }
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut chunked_last = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case(b"content-length") {
            for part in header.value.split(|&byte| byte == b',') {
                let value = parse_decimal(trim(part)).ok_or(HttpError::BadContentLength)?;
                if length.is_some_and(|seen| seen != value) {
                    return Err(HttpError::BadContentLength);
                }
                length = Some(value);
            }
        } else if header.name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in header.value.split(|&byte| byte == b',').map(trim) {
                if coding.is_empty() {
                    continue;
                }
                codings += 1;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        }
    }
    match (length, codings) {
        (Some(_), 1..) => Err(HttpError::AmbiguousFraming),
        (None, 1) if chunked_last => Ok(Framing::Chunked(Chunk::Size)),
        (None, 1..) => Err(HttpError::UnsupportedTransferEncoding),
        (Some(len), 0) if len > u64::from(max_body) => {
            Err(HttpError::BodyTooLarge { limit: max_body })
        }
        (Some(len), 0) => Ok(Framing::Length(len as usize)),
        (None, 0) if kind == Kind::Request => Ok(Framing::Length(0)),
        (None, 0) => Ok(Framing::UntilClose),
    }
}

fn keep_alive(minor_version: u8, headers: &[Header]) -> bool {
    let mut close = false;
    let mut keep = false;
    for header in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(b"connection")) {
        for token in header.value.split(|&byte| byte == b',').map(trim) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (minor_version >= 1 || keep)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        digit.is_ascii_digit().then(|| value * 10 + u64::from(digit - b'0'))
    })
}
