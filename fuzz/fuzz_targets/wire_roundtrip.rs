//! Arbitrary messages: encode, then decode through the checked view and through the stream
//! decoder, must give back the same message and request id; emit must be all or nothing.
#![no_main]

use bytes::Bytes;
use herdcache_proto::{
    Frame, FrameDecoder, GetOutcome, Message, ReplyError, WireError, WireLimits,
};
use libfuzzer_sys::fuzz_target;

/// Whether every error text fits `max`: longer text is truncated on emit, by design, and
/// would not come back equal.
fn texts_fit(message: &Message, max: u32) -> bool {
    let fits = |error: &ReplyError| error.message.len() as u64 <= u64::from(max);
    let ack_fits = |result: &Result<(), ReplyError>| result.as_ref().err().is_none_or(fits);
    let outcome_fits = |outcome: &GetOutcome| match outcome {
        GetOutcome::Found(_) => true,
        GetOutcome::Failed(error) => fits(error),
    };
    match message {
        Message::Error(error) => fits(error),
        Message::GetReply(outcome) => outcome_fits(outcome),
        Message::GetManyReply(outcomes) => outcomes.iter().all(outcome_fits),
        Message::Ack(result) => ack_fits(result),
        Message::AckMany(results) => results.iter().all(ack_fits),
        _ => true,
    }
}

fuzz_target!(|input: (Message, u64, u16)| {
    let (message, request_id, cut) = input;
    let limits = WireLimits::default();
    let mut out = vec![0xA5];
    let len = match message.encode(request_id, &mut out, &limits) {
        Ok(len) => len,
        Err(
            WireError::FieldTooLarge { .. }
            | WireError::BatchTooLarge { .. }
            | WireError::FrameTooLarge { .. },
        ) => {
            assert_eq!(out, [0xA5], "a refused encode appends nothing");
            return;
        }
        Err(error) => panic!("encode failed with {error:?}"),
    };
    assert_eq!(len, out.len() - 1);
    assert_eq!(len, message.buffer_len(&limits));
    let frame_bytes = Bytes::from(out).slice(1..);

    // emit: the exact buffer works, one byte less is refused untouched.
    let mut exact = vec![0; len];
    assert_eq!(message.emit(request_id, &mut exact, &limits), Ok(len));
    assert_eq!(exact, frame_bytes);
    let mut short = vec![0x5A; len - 1];
    assert_eq!(
        message.emit(request_id, &mut short, &limits),
        Err(WireError::BufferTooSmall { needed: len, available: len - 1 })
    );
    assert!(short.iter().all(|&byte| byte == 0x5A));

    let frame = Frame::new_checked(&frame_bytes, &limits).expect("an emitted frame checks");
    let header = frame.header().expect("a checked frame has a header");
    assert_eq!((header.kind, header.request_id), (message.kind(), request_id));
    let parsed = Message::parse(&frame, &limits).expect("an emitted frame parses");

    let mut decoder = FrameDecoder::new(limits);
    let (front, back) = frame_bytes.split_at(usize::from(cut) % (len + 1));
    let mut decoded = Vec::new();
    for piece in [front, back] {
        decoder.push(piece).expect("a valid stream is accepted");
        while let Some(frame) = decoder.next_frame().expect("a valid stream decodes") {
            decoded.push(frame);
        }
    }
    assert_eq!(decoded, [(header, parsed.clone())]);
    assert_eq!(decoder.buffered(), 0);

    if texts_fit(&message, limits.max_message) {
        assert_eq!(parsed, message);
    }
});
