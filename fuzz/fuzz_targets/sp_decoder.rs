//! Arbitrary bytes as an SP peer's stream (its handshake, then messages): the SP decoder and
//! the survey header and member-list parsers must never panic, the decoder must stay within
//! its memory bound, and the way the stream is cut into reads must not change what is decoded.
#![no_main]

use bytes::Bytes;
use herdcache_proto::sp::{
    Backtrace, SpDecoder, SpError, SpLimits, SpProtocol, SurveyId, encode_handshake,
    parse_member_list,
};
use libfuzzer_sys::fuzz_target;

type Decoded = (Vec<Bytes>, Option<SpError>);

fn decode(ours: SpProtocol, stream: &[u8], mut sizes: impl FnMut() -> usize) -> Decoded {
    let mut decoder = SpDecoder::new(ours, SpLimits { max_message: 64 });
    let bound = decoder.max_buffered();
    let mut messages = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(sizes().clamp(1, rest.len()));
        rest = tail;
        if let Err(error) = decoder.push(piece) {
            assert!(!matches!(error, SpError::DecoderFull { .. }), "drained after every push");
            assert_eq!(decoder.error(), Some(error), "a push error fails the decoder");
            return (messages, Some(error));
        }
        assert!(decoder.buffered() < bound + piece.len(), "bound after a push");
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= 64, "no message over the limit");
                    if ours.has_survey_header() {
                        let _ = Backtrace::split_survey(&message);
                        let _ = SurveyId::split_answer(&message);
                    } else {
                        let _ = parse_member_list(&message, 8, 16);
                    }
                    messages.push(message);
                }
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(decoder.next_message(), Err(error), "the decoder stays failed");
                    return (messages, Some(error));
                }
            }
        }
        assert!(decoder.buffered() < bound, "bound after a drain");
    }
    (messages, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let ours = [SpProtocol::SUB, SpProtocol::SURVEYOR, SpProtocol::RESPONDENT, SpProtocol::PUB]
        [usize::from(selector & 3)];
    // Half the inputs get a valid handshake in front, so the message decoding is reached.
    let mut stream = Vec::with_capacity(rest.len() + 8);
    if selector & 4 != 0 {
        stream.extend_from_slice(&encode_handshake(ours.peer().expect("a known protocol")));
    }
    stream.extend_from_slice(rest);
    let whole = decode(ours, &stream, || usize::MAX);
    let mut seed = u32::from(selector) | 1;
    let pieces = decode(ours, &stream, || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as usize % 24 + 1
    });
    assert_eq!(whole, pieces, "the same messages however the reads fall");
    assert_eq!(whole, decode(ours, &stream, || 1), "byte by byte too");
});
