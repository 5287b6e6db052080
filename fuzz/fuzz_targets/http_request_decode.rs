//! Arbitrary bytes as a client's stream to an HTTP server: the request decoder and the
//! groupcache path parser must never panic, never need more room while drained after every
//! read, and decode the same requests however the stream is cut into reads.
#![no_main]

use herdcache_proto::groupcache::parse_get_request;
use herdcache_proto::http::{HttpError, HttpLimits, Request, RequestDecoder};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that every limit check is reachable with small inputs.
const TIGHT: HttpLimits = HttpLimits { max_head: 512, max_headers: 8, max_body: 256 };

fn decode(stream: &[u8], mut sizes: impl FnMut() -> usize) -> (Vec<Request>, Option<HttpError>) {
    let mut decoder = RequestDecoder::new(TIGHT);
    let mut requests = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(sizes().clamp(1, rest.len()));
        rest = tail;
        if let Err(error) = decoder.push(piece) {
            assert_ne!(error, HttpError::DecoderFull, "drained after every push");
            return (requests, Some(error));
        }
        loop {
            match decoder.next_request() {
                Ok(Some(request)) => {
                    // The groupcache server's reading of it: a status or a group and key.
                    if let Err(error) = parse_get_request(&request) {
                        assert!(matches!(error.status(), 400 | 404 | 413 | 431 | 501));
                    }
                    requests.push(request);
                }
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
    }
    (requests, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let whole = decode(stream, || usize::MAX);
    let mut seed = u32::from(cut) | 1;
    let pieces = decode(stream, || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as usize % 64 + 1
    });
    assert_eq!(whole.0, pieces.0, "the same requests however the reads fall");
    assert_eq!(whole.1.is_some(), pieces.1.is_some(), "an error either way");
});
