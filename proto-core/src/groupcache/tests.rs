use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::http::{HttpLimits, RequestDecoder, ResponseDecoder};
use crate::testing::model_config;

/// Bytes captured from golang/groupcache (the Debian package) over loopback.
const GO_OK: &[u8] = include_bytes!("testdata/go-ok.http");
const GO_BIG: &[u8] = include_bytes!("testdata/go-big.http");
const GO_EMPTY: &[u8] = include_bytes!("testdata/go-empty.http");
const GO_NO_GROUP: &[u8] = include_bytes!("testdata/go-nogroup.http");
const GO_FAIL: &[u8] = include_bytes!("testdata/go-fail.http");
const GO_BAD_PATH: &[u8] = include_bytes!("testdata/go-badpath.http");
const GO_KEEPALIVE_PAIR: &[u8] = include_bytes!("testdata/go-keepalive-pair.http");
const GO_REQUEST: &[u8] = include_bytes!("testdata/go-request.http");

fn replies(bytes: &[u8], split: usize) -> Vec<GetReply> {
    let mut decoder = ResponseDecoder::new(HttpLimits::default());
    let mut out = Vec::new();
    for piece in bytes.chunks(split) {
        decoder.push(piece).unwrap();
        while let Some(response) = decoder.next_response().unwrap() {
            out.push(parse_get_response(&response).unwrap());
        }
    }
    out
}

fn request_of(bytes: &[u8]) -> Request {
    let mut decoder = RequestDecoder::new(HttpLimits::default());
    decoder.push(bytes).unwrap();
    decoder.next_request().unwrap().expect("a complete request")
}

fn value(bytes: &[u8]) -> GetReply {
    GetReply::Value { value: Bytes::copy_from_slice(bytes), minute_qps: None }
}

#[test]
fn go_replies_parse_whatever_the_reads() {
    for split in [1, 7, 64, 100_000] {
        assert_eq!(replies(GO_OK, split), [value(b"value of ada lovelace+/")]);
        assert_eq!(replies(GO_EMPTY, split), [value(b"value of ")]);
        let big = [value(&[b'x'; 10_000])];
        assert_eq!(replies(GO_BIG, split), big, "a chunked body");
        let pair = replies(GO_KEEPALIVE_PAIR, split);
        assert_eq!(pair, [value(b"value of k1"), value(&[b'x'; 10_000])], "keep-alive");
    }
}

#[test]
fn go_error_replies_carry_status_and_text() {
    let failed = |status, message: &'static [u8]| GetReply::Failed {
        status,
        message: Bytes::from_static(message),
    };
    assert_eq!(replies(GO_NO_GROUP, 9), [failed(404, b"no such group: nope")]);
    assert_eq!(replies(GO_FAIL, 9), [failed(500, b"source failed for fail1")]);
    assert_eq!(replies(GO_BAD_PATH, 9), [failed(400, b"bad request")]);
}

#[test]
fn a_go_clients_request_reads_as_a_go_server_reads_it() {
    let request = request_of(GO_REQUEST);
    // Go's client wrote the space as '+' (QueryEscape); a server keeps '+' literal.
    let (group, key) = parse_get_request(&request).unwrap();
    assert_eq!((&group[..], &key[..]), (&b"users"[..], &b"ada+lovelace+/"[..]));
}

#[test]
fn server_paths_map_to_go_statuses() {
    let status_of = |target: &[u8]| {
        let mut bytes = b"GET ".to_vec();
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        parse_get_request(&request_of(&bytes)).map_err(|error| error.status())
    };
    assert_eq!(status_of(b"/_groupcache/users"), Err(400));
    assert_eq!(status_of(b"/_groupcache/"), Err(400));
    assert_eq!(status_of(b"/other/users/k"), Err(404));
    assert_eq!(status_of(b"/_groupcache/users/a%zz"), Err(400));
    let ok = |group: &'static [u8], key: &'static [u8]| {
        Ok((Bytes::from_static(group), Bytes::from_static(key)))
    };
    assert_eq!(status_of(b"/_groupcache/users/"), ok(b"users", b""));
    assert_eq!(status_of(b"/_groupcache/users/a/b%2Fc?x=1"), ok(b"users", b"a/b/c"));
    assert_eq!(status_of(b"http://h:1/_groupcache/g/k"), ok(b"g", b"k"));
    // Escaped separators are decoded before the split, as Go does.
    assert_eq!(status_of(b"/_groupcache/g%2Fh/k"), ok(b"g", b"h/k"));
    // No cleaning, no redirect: dots are part of the key.
    assert_eq!(status_of(b"/_groupcache/g/../k"), ok(b"g", b"../k"));
}

#[test]
fn escape_writes_only_unreserved_bytes_and_escapes() {
    let mut out = Vec::new();
    escape(b"a b+c/d%e~f_g.h-i\xc3\xa9", &mut out);
    assert_eq!(&out[..], b"a%20b%2Bc%2Fd%25e~f_g.h-i%C3%A9");
    assert_eq!(unescape(b"a+b%2b%2F"), Ok(b"a+b+/".to_vec()));
    assert_eq!(unescape(b"%"), Err(GroupcacheError::BadEscape));
    assert_eq!(unescape(b"%4"), Err(GroupcacheError::BadEscape));
}

#[test]
fn peer_urls_parse_as_go_builds_its_requests() {
    let url = PeerUrl::parse(&Bytes::from_static(b"http://10.0.0.1:8080")).unwrap();
    assert_eq!(
        (&url.address()[..], &url.authority()[..]),
        (&b"10.0.0.1:8080"[..], &b"10.0.0.1:8080"[..])
    );
    let mut out = Vec::new();
    url.encode_get(b"users", b"ada lovelace+/", &mut out);
    assert_eq!(
        &out[..],
        b"GET /_groupcache/users/ada%20lovelace%2B%2F HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n"
    );
    let default_port = PeerUrl::parse(&Bytes::from_static(b"HTTP://cache")).unwrap();
    assert_eq!(&default_port.address()[..], b"cache:80");
    let prefixed = PeerUrl::parse(&Bytes::from_static(b"http://[::1]:9/app")).unwrap();
    assert_eq!(&prefixed.address()[..], b"[::1]:9");
    out.clear();
    prefixed.encode_get(b"g", b"", &mut out);
    assert!(out.starts_with(b"GET /app/_groupcache/g/ HTTP/1.1\r\n"));
    let https = PeerUrl::parse(&Bytes::from_static(b"https://cache")).unwrap();
    assert_eq!(&https.address()[..], b"cache:443", "https: TLS below, port 443 by default");
    let https = PeerUrl::parse(&Bytes::from_static(b"HTTPS://10.0.0.1:8443")).unwrap();
    assert_eq!(&https.address()[..], b"10.0.0.1:8443");
    for bad in [
        &b"ftp://a:1"[..],
        b"https://",
        b"http://",
        b"http://:80",
        b"http://u@h:1",
        b"http://h:x",
        b"http://h:1?q",
        b"a b",
    ] {
        assert_eq!(
            PeerUrl::parse(&Bytes::copy_from_slice(bad)),
            Err(GroupcacheError::BadPeerUrl),
            "{bad:?}"
        );
    }
}

#[test]
fn a_200_that_is_not_protobuf_is_a_typed_error() {
    let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\x0a\x09v";
    let mut decoder = ResponseDecoder::new(HttpLimits::default());
    decoder.push(bytes).unwrap();
    let response = decoder.next_response().unwrap().unwrap();
    assert_eq!(parse_get_response(&response), Err(GroupcacheError::BadProtobuf));
}

#[test]
fn our_replies_read_as_go_would_write_them() {
    let mut out = Vec::new();
    encode_value_response(&Bytes::from_static(b"value of ada lovelace+/"), None, false, &mut out);
    // Go's answer less its Date header and with our header order.
    let go_body = &GO_OK[GO_OK.len() - 25..];
    assert!(out.ends_with(go_body), "the same protobuf bytes as Go's");
    assert!(out.starts_with(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\n"
    ));
    out.clear();
    encode_error_response(404, b"no such group: nope", true, &mut out);
    assert!(out.ends_with(b"Content-Length: 20\r\n\r\nno such group: nope\n"));
}

proptest! {
    #![proptest_config(model_config())]

    #[test]
    fn escaping_round_trips_any_key(key in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut escaped = Vec::new();
        escape(&key, &mut escaped);
        prop_assert!(escaped.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b)));
        prop_assert_eq!(unescape(&escaped), Ok(key));
    }

    #[test]
    fn a_get_reaches_the_server_as_the_same_group_and_key(
        group in "[a-z][a-z0-9_]{0,10}",
        key in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..48),
            "(?s).{0,16}".prop_map(String::into_bytes),
            proptest::sample::select(alloc::vec![
                b"".to_vec(), b" ".to_vec(), b"+".to_vec(), b"/".to_vec(), b"%2F".to_vec(),
                b"a b+c/d%e".to_vec(), "ключ 鍵 🔑".as_bytes().to_vec(),
            ]),
        ],
    ) {
        let url = PeerUrl::parse(&Bytes::from_static(b"http://127.0.0.1:1")).unwrap();
        let mut bytes = Vec::new();
        url.encode_get(group.as_bytes(), &key, &mut bytes);
        let (parsed_group, parsed_key) = parse_get_request(&request_of(&bytes)).unwrap();
        prop_assert_eq!(&parsed_group[..], group.as_bytes());
        prop_assert_eq!(&parsed_key[..], &key[..]);
    }

    #[test]
    fn value_replies_round_trip(
        value in proptest::collection::vec(any::<u8>(), 0..300),
        qps in proptest::option::of(0.0f64..1e9),
    ) {
        let mut bytes = Vec::new();
        encode_value_response(&Bytes::from(value.clone()), qps, true, &mut bytes);
        let parsed = replies(&bytes, 5);
        prop_assert_eq!(parsed, alloc::vec![GetReply::Value { value: Bytes::from(value), minute_qps: qps }]);
    }

    #[test]
    fn random_paths_and_bodies_never_panic(
        target in proptest::collection::vec(0x21u8..0x7f, 1..80),
        body in proptest::collection::vec(any::<u8>(), 0..80),
        status in 100u16..600,
    ) {
        let mut bytes = b"GET ".to_vec();
        bytes.extend_from_slice(&target);
        bytes.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let mut decoder = RequestDecoder::new(HttpLimits::default());
        decoder.push(&bytes).unwrap();
        if let Ok(Some(request)) = decoder.next_request() {
            let _ = parse_get_request(&request);
        }
        let response = Response {
            status,
            reason: Bytes::new(),
            minor_version: 1,
            headers: Vec::new(),
            body: Bytes::from(body),
            keep_alive: true,
        };
        let _ = parse_get_response(&response);
    }
}
