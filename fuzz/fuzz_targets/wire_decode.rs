//! Arbitrary bytes as a peer's stream: the frame decoder and the frame parser must never panic,
//! the decoder must stay within its documented memory bound, and the way the stream is cut into
//! reads must not change what is decoded.
#![no_main]

use bytes::Bytes;
use herdcache_proto::{Frame, FrameDecoder, FrameHeader, Message, WireError, WireLimits};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that every limit check is reachable with small inputs.
const TIGHT: WireLimits = WireLimits {
    max_key: 16,
    max_value: 64,
    max_frame: 256,
    max_batch: 4,
    max_label: 8,
    max_message: 16,
};

/// What a decoder made of a stream: the frames, then the error that stopped it, if any.
type Decoded = (Vec<(FrameHeader, Message)>, Option<WireError>);

/// Pushes `stream` in pieces of the given sizes (the last piece takes the rest), draining after
/// every push, and checks the decoder's memory bound throughout.
fn decode(stream: &[u8], mut sizes: impl FnMut() -> usize, limits: WireLimits) -> Decoded {
    let bound = limits.max_frame_len();
    let mut decoder = FrameDecoder::new(limits);
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(sizes().clamp(1, rest.len()));
        rest = tail;
        if let Err(error) = decoder.push(piece) {
            assert!(!matches!(error, WireError::DecoderFull { .. }), "drained after every push");
            assert_eq!(decoder.error(), Some(error), "a push error fails the decoder");
            return (frames, Some(error));
        }
        assert!(decoder.buffered() < bound + piece.len(), "bound after a push");
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(decoder.next_frame(), Err(error), "the decoder stays failed");
                    return (frames, Some(error));
                }
            }
        }
        assert!(decoder.buffered() < bound, "bound after a drain");
    }
    (frames, None)
}

/// A small deterministic generator for piece sizes, seeded from the input itself.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // Mostly short reads, sometimes long ones.
        if self.0.is_multiple_of(8) {
            (self.0 >> 8) as usize % 4096
        } else {
            (self.0 >> 8) as usize % 24
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let seed = data
        .iter()
        .fold(0x9E37_79B9_7F4A_7C15u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
        | 1;
    for limits in [WireLimits::default(), TIGHT] {
        let whole = decode(data, || usize::MAX, limits);
        let mut sizes = Sizes(seed);
        let pieces = decode(data, || sizes.next(), limits);
        assert_eq!(whole, pieces, "cutting the stream differently decodes the same frames");
        let bytes = decode(data, || 1, limits);
        assert_eq!(whole, bytes, "byte by byte decodes the same frames");

        // The checked view and the parser on the same bytes agree with the decoder's first frame.
        let owned = Bytes::copy_from_slice(data);
        let parsed = Frame::new_checked(&owned, &limits)
            .and_then(|frame| Ok((frame.header()?, Message::parse(&frame, &limits)?)));
        match (&parsed, whole.0.first()) {
            (Ok(frame), Some(first)) => assert_eq!(frame, first),
            (Ok(_), None) => panic!("the parser accepted a frame the decoder refused"),
            (Err(error), None) => assert!(
                *error == WireError::Truncated || whole.1 == Some(*error),
                "the parser and the decoder refuse for the same reason"
            ),
            (Err(_), Some(_)) => panic!("the decoder accepted a frame the parser refused"),
        }
        let _ = Message::parse(&Frame::new_unchecked(&owned), &limits);
    }
});
