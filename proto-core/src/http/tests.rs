use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

use super::*;
use crate::testing::model_config;

fn requests_of(bytes: &[u8], chunk: usize, limits: HttpLimits) -> Result<Vec<Request>, HttpError> {
    let mut decoder = RequestDecoder::new(limits);
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        decoder.push(piece)?;
        while let Some(request) = decoder.next_request()? {
            out.push(request);
        }
    }
    Ok(out)
}

fn responses_of(
    bytes: &[u8],
    chunk: usize,
    limits: HttpLimits,
) -> Result<Vec<Response>, HttpError> {
    let mut decoder = ResponseDecoder::new(limits);
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        decoder.push(piece)?;
        while let Some(response) = decoder.next_response()? {
            out.push(response);
        }
    }
    out.extend(decoder.finish()?);
    Ok(out)
}

/// Method, target, body, keep-alive.
type Summary<'a> = (&'a [u8], &'a [u8], &'a [u8], bool);

#[test]
fn pipelined_requests_split_at_every_byte_decode_the_same() {
    let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        PUT /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: t\r\n\r\n\
        GET /d HTTP/1.0\r\n\r\n";
    for chunk in 1..stream.len() {
        let requests = requests_of(stream, chunk, HttpLimits::default()).unwrap();
        let summary: Vec<Summary<'_>> = requests
            .iter()
            .map(|r| (&r.method[..], &r.target[..], &r.body[..], r.keep_alive))
            .collect();
        assert_eq!(
            summary,
            [
                (&b"GET"[..], &b"/a"[..], &b""[..], true),
                (b"PUT", b"/b", b"hello", true),
                (b"POST", b"/c", b"abcde", true),
                (b"GET", b"/d", b"", false),
            ],
            "chunk size {chunk}"
        );
        assert_eq!(requests[0].header("HOST").map(|v| &v[..]), Some(&b"x"[..]));
    }
}

#[test]
fn keep_alive_follows_version_and_connection_header() {
    let cases: [(&[u8], bool); 4] = [
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\n\r\n", false),
    ];
    for (bytes, keep_alive) in cases {
        let requests = requests_of(bytes, bytes.len(), HttpLimits::default()).unwrap();
        assert_eq!(requests[0].keep_alive, keep_alive, "{:?}", core::str::from_utf8(bytes));
    }
}

#[test]
fn limits_refuse_before_the_body_is_buffered() {
    let limits = HttpLimits { max_head: 64, max_headers: 2, max_body: 10 };
    let long_head = [&b"GET /"[..], &[b'a'; 100], b" HTTP/1.1\r\n\r\n"].concat();
    assert_eq!(requests_of(&long_head, 7, limits), Err(HttpError::HeadTooLarge { limit: 64 }));
    let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
    assert_eq!(requests_of(many, 100, limits), Err(HttpError::TooManyHeaders { limit: 2 }));
    // The declared length alone is refused: no body byte is needed.
    let declared = b"PUT / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
    assert_eq!(requests_of(declared, 100, limits), Err(HttpError::BodyTooLarge { limit: 10 }));
    let chunked = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n";
    assert_eq!(requests_of(chunked, 100, limits), Err(HttpError::BodyTooLarge { limit: 10 }));
    let until_close = b"HTTP/1.1 200 OK\r\n\r\n0123456789A";
    assert_eq!(responses_of(until_close, 100, limits), Err(HttpError::BodyTooLarge { limit: 10 }));
}

#[test]
fn ambiguous_or_unsupported_framing_is_refused() {
    let cases: [(&[u8], HttpError); 5] = [
        (
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::AmbiguousFraming,
        ),
        (
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            HttpError::BadContentLength,
        ),
        (b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", HttpError::BadContentLength),
        (
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HttpError::UnsupportedTransferEncoding,
        ),
        (b"GET / HTTP/2.0\r\n\r\n", HttpError::MalformedHead),
    ];
    for (bytes, error) in cases {
        assert_eq!(requests_of(bytes, bytes.len(), HttpLimits::default()), Err(error));
    }
    // Equal duplicates are one length.
    let same = b"PUT / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx";
    assert_eq!(&requests_of(same, 3, HttpLimits::default()).unwrap()[0].body[..], b"x");
}

#[test]
fn a_failed_decoder_stays_failed() {
    let mut decoder = RequestDecoder::new(HttpLimits::default());
    decoder.push(b"GET / HTTP/1.1\r\nbad header\r\n\r\n").unwrap();
    assert_eq!(decoder.next_request(), Err(HttpError::MalformedHead));
    assert_eq!(decoder.push(b"GET / HTTP/1.1\r\n\r\n"), Err(HttpError::MalformedHead));
    assert_eq!(decoder.next_request(), Err(HttpError::MalformedHead));
}

#[test]
fn a_full_decoder_refuses_pushes_without_failing() {
    let limits = HttpLimits { max_head: 64, max_headers: 8, max_body: 16 };
    let mut decoder = RequestDecoder::new(limits);
    let request = b"GET / HTTP/1.1\r\n\r\n";
    while decoder.buffered() < 80 + 1_024 {
        decoder.push(request).unwrap();
    }
    assert_eq!(decoder.push(request), Err(HttpError::DecoderFull));
    assert!(decoder.next_request().unwrap().is_some());
    while decoder.next_request().unwrap().is_some() {}
    decoder.push(request).unwrap();
}

/// Found by fuzzing: a long chunk-size line arriving in small reads, with limits smaller than
/// the line, was refused as `DecoderFull` although the caller drained after every read.
#[test]
fn a_long_chunk_size_line_in_small_reads_is_not_decoder_full() {
    let limits = HttpLimits { max_head: 64, max_headers: 8, max_body: 16 };
    let mut stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    stream.extend_from_slice(&[b'x'; 900]);
    stream.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
    let requests = requests_of(&stream, 10, limits).unwrap();
    assert_eq!(&requests[0].body[..], b"a");
}

#[test]
fn responses_skip_interim_and_know_bodyless_statuses() {
    let stream = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
        HTTP/1.0 200 OK\r\n\r\nuntil close";
    for chunk in 1..stream.len() {
        let responses = responses_of(stream, chunk, HttpLimits::default()).unwrap();
        let summary: Vec<(u16, &[u8], bool)> =
            responses.iter().map(|r| (r.status, &r.body[..], r.keep_alive)).collect();
        assert_eq!(
            summary,
            [(204, &b""[..], true), (200, b"ok", true), (200, b"until close", false)],
            "chunk size {chunk}"
        );
    }
    let switch = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
    assert_eq!(responses_of(switch, 100, HttpLimits::default()), Err(HttpError::ProtocolSwitch));
}

#[test]
fn a_close_inside_a_framed_body_is_truncation() {
    let mut decoder = ResponseDecoder::new(HttpLimits::default());
    decoder.push(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").unwrap();
    assert_eq!(decoder.next_response(), Ok(None));
    assert_eq!(decoder.finish(), Err(HttpError::Truncated));
    let mut idle = ResponseDecoder::new(HttpLimits::default());
    assert_eq!(idle.finish(), Ok(None));
}

#[test]
fn bad_chunks_are_refused() {
    let cases: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n",
    ];
    assert_eq!(responses_of(cases[0], 100, HttpLimits::default()), Err(HttpError::BadChunk));
    assert_eq!(responses_of(cases[1], 100, HttpLimits::default()), Err(HttpError::BadChunk));
    // Closed before the trailer section ended.
    assert_eq!(responses_of(cases[2], 100, HttpLimits::default()), Err(HttpError::Truncated));
}

#[test]
fn emit_refuses_unwritable_fields_and_writes_nothing() {
    let mut out = Vec::new();
    assert_eq!(emit_request(&mut out, "G T", b"/", &[], b""), Err(HttpError::InvalidField));
    assert_eq!(emit_request(&mut out, "GET", b"/a b", &[], b""), Err(HttpError::InvalidField));
    assert_eq!(
        emit_request(&mut out, "GET", b"/", &[("X", b"a\r\nInjected: 1")], b""),
        Err(HttpError::InvalidField)
    );
    assert_eq!(emit_response(&mut out, 42, &[], b"", true), Err(HttpError::InvalidField));
    assert!(out.is_empty());
}

#[test]
fn emitted_messages_decode_to_what_was_written() {
    let mut out = Vec::new();
    emit_request(&mut out, "PUT", b"/v1/users/ada", &[("Host", b"h:1")], b"body").unwrap();
    emit_response(&mut out, 404, &[("Content-Type", b"text/plain")], b"nope", false).unwrap();
    let request_len = out.iter().position(|&b| b == b'y').unwrap() + 1;
    let request = &requests_of(&out[..request_len], 3, HttpLimits::default()).unwrap()[0];
    assert_eq!((&request.method[..], &request.body[..]), (&b"PUT"[..], &b"body"[..]));
    let response = &responses_of(&out[request_len..], 3, HttpLimits::default()).unwrap()[0];
    assert_eq!(
        (response.status, &response.body[..], response.keep_alive),
        (404, &b"nope"[..], false)
    );
    assert_eq!(&response.reason[..], b"Not Found");
}

fn header_strategy() -> impl Strategy<Value = (String, Vec<u8>)> {
    ("[A-Za-z][A-Za-z0-9-]{0,12}", proptest::collection::vec(0x20u8..0x7f, 0..24))
        .prop_filter("framing headers are the codec's", |(name, _)| {
            !["content-length", "transfer-encoding", "connection"]
                .contains(&name.to_ascii_lowercase().as_str())
        })
        .prop_map(|(name, value)| (name, value.trim_ascii().to_vec()))
}

proptest! {
    #![proptest_config(model_config())]

    #[test]
    fn request_round_trip(
        method in "[A-Z]{1,7}",
        target in "/[!-~]{0,40}",
        headers in proptest::collection::vec(header_strategy(), 0..6),
        body in proptest::collection::vec(any::<u8>(), 0..300),
        chunk in 1usize..64,
    ) {
        let fields: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        let mut out = Vec::new();
        emit_request(&mut out, &method, target.as_bytes(), &fields, &body).unwrap();
        emit_request(&mut out, &method, target.as_bytes(), &fields, &body).unwrap();
        let requests = requests_of(&out, chunk, HttpLimits::default()).unwrap();
        prop_assert_eq!(requests.len(), 2);
        for request in requests {
            prop_assert_eq!(&request.method[..], method.as_bytes());
            prop_assert_eq!(&request.target[..], target.as_bytes());
            prop_assert_eq!(&request.body[..], &body[..]);
            prop_assert!(request.keep_alive);
            for ((name, value), header) in headers.iter().zip(&request.headers) {
                prop_assert_eq!(&header.name[..], name.as_bytes());
                prop_assert_eq!(&header.value[..], &value[..]);
            }
        }
    }

    #[test]
    fn chunked_bodies_reassemble_whatever_the_chunking(
        body in proptest::collection::vec(any::<u8>(), 0..500),
        sizes in proptest::collection::vec(1usize..50, 1..20),
        split in 1usize..40,
    ) {
        let mut stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut rest = &body[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() { break; }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            stream.extend_from_slice(alloc::format!("{:x}\r\n", chunk.len()).as_bytes());
            stream.extend_from_slice(chunk);
            stream.extend_from_slice(b"\r\n");
            rest = tail;
        }
        stream.extend_from_slice(b"0\r\n\r\n");
        let responses = responses_of(&stream, split, HttpLimits::default()).unwrap();
        prop_assert_eq!(responses.len(), 1);
        prop_assert_eq!(&responses[0].body[..], &body[..]);
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        split in 1usize..64,
    ) {
        let limits = HttpLimits { max_head: 256, max_headers: 8, max_body: 256 };
        let _ = requests_of(&bytes, split, limits);
        let _ = responses_of(&bytes, split, limits);
        // Behind a valid head, too.
        let mut framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = responses_of(&framed, split, limits);
        let mut request = b"POST / HTTP/1.1\r\n".to_vec();
        request.extend_from_slice(&bytes);
        let _ = requests_of(&request, split, limits);
    }
}

#[test]
fn header_lookup_is_case_insensitive() {
    let request = Request {
        method: bytes::Bytes::from_static(b"GET"),
        target: bytes::Bytes::from_static(b"/"),
        minor_version: 1,
        headers: vec![Header {
            name: bytes::Bytes::from_static(b"Content-Type"),
            value: bytes::Bytes::from_static(b"text/plain"),
        }],
        body: bytes::Bytes::new(),
        keep_alive: true,
    };
    assert_eq!(request.header("content-type").map(|v| &v[..]), Some(&b"text/plain"[..]));
    assert_eq!(request.header("accept"), None);
}

/// Found by fuzzing: trailers that end exactly at the head limit were refused when the final
/// empty line arrived in two reads, and accepted when it arrived in one.
#[test]
fn trailers_at_the_limit_do_not_depend_on_how_reads_fall() {
    let limits = HttpLimits { max_head: 64, max_headers: 8, max_body: 16 };
    let mut stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    // Trailer lines of exactly 64 bytes with their CRLFs, then the empty line.
    stream.extend_from_slice(&[b'x'; 30]);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(&[b'y'; 30]);
    stream.extend_from_slice(b"\r\n\r\n");
    for chunk in 1..stream.len() {
        let requests = requests_of(&stream, chunk, limits).unwrap();
        assert_eq!(requests.len(), 1, "chunk size {chunk}");
    }
    stream.truncate(stream.len() - 2);
    stream.extend_from_slice(b"z\r\n\r\n");
    for chunk in 1..stream.len() {
        let refused = requests_of(&stream, chunk, limits);
        assert_eq!(refused, Err(HttpError::HeadTooLarge { limit: 64 }), "chunk size {chunk}");
    }
}
