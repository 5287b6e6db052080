//! Arbitrary bytes as a server's stream to an HTTP client: the response decoder (with the end
//! of the connection) and the groupcache reply parser must never panic, never need more room
//! while drained after every read, and decode the same responses however the stream is cut
//! into reads.
#![no_main]

use herdcache_proto::groupcache::parse_get_response;
use herdcache_proto::http::{HttpError, HttpLimits, Response, ResponseDecoder};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that every limit check is reachable with small inputs.
const TIGHT: HttpLimits = HttpLimits { max_head: 512, max_headers: 8, max_body: 256 };

fn decode(stream: &[u8], mut sizes: impl FnMut() -> usize) -> (Vec<Response>, Option<HttpError>) {
    let mut decoder = ResponseDecoder::new(TIGHT);
    let mut responses = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(sizes().clamp(1, rest.len()));
        rest = tail;
        if let Err(error) = decoder.push(piece) {
            assert_ne!(error, HttpError::DecoderFull, "drained after every push");
            return (responses, Some(error));
        }
        loop {
            match decoder.next_response() {
                Ok(Some(response)) => {
                    let _ = parse_get_response(&response);
                    responses.push(response);
                }
                Ok(None) => break,
                Err(error) => return (responses, Some(error)),
            }
        }
    }
    match decoder.finish() {
        Ok(last) => responses.extend(last),
        Err(error) => return (responses, Some(error)),
    }
    (responses, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let whole = decode(stream, || usize::MAX);
    let mut seed = u32::from(cut) | 1;
    let pieces = decode(stream, || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as usize % 64 + 1
    });
    assert_eq!(whole.0, pieces.0, "the same responses however the reads fall");
    assert_eq!(whole.1.is_some(), pieces.1.is_some(), "an error either way");
});
