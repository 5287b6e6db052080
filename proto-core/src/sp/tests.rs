//! The SP codec and the survey server's machine.

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::time::Instant;

fn handshake_then(ours: SpProtocol, messages: &[&[u8]]) -> Vec<u8> {
    let mut stream = encode_handshake(ours.peer().expect("a known protocol")).to_vec();
    for message in messages {
        encode_message(&[message], &SpLimits::default(), &mut stream).expect("fits");
    }
    stream
}

/// Pushes `stream` in pieces of `size`, draining after each; the messages and the error.
fn decode(
    ours: SpProtocol,
    limits: SpLimits,
    stream: &[u8],
    size: usize,
) -> (Vec<Bytes>, Option<SpError>) {
    let mut decoder = SpDecoder::new(ours, limits);
    let mut messages = Vec::new();
    for piece in stream.chunks(size.max(1)) {
        if let Err(error) = decoder.push(piece) {
            return (messages, Some(error));
        }
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(error) => return (messages, Some(error)),
            }
        }
        assert!(decoder.buffered() < decoder.max_buffered(), "bounded after a drain");
    }
    (messages, None)
}

#[test]
fn handshake_bytes_are_nanomsgs() {
    assert_eq!(encode_handshake(SpProtocol::SURVEYOR), [0, b'S', b'P', 0, 0x00, 0x62, 0, 0]);
    assert_eq!(encode_handshake(SpProtocol::RESPONDENT), [0, b'S', b'P', 0, 0x00, 0x63, 0, 0]);
    assert_eq!(encode_handshake(SpProtocol::PUB), [0, b'S', b'P', 0, 0x00, 0x20, 0, 0]);
    assert_eq!(encode_handshake(SpProtocol::SUB), [0, b'S', b'P', 0, 0x00, 0x21, 0, 0]);
}

#[test]
fn a_bad_handshake_is_refused_at_the_byte_that_shows_it() {
    let ours = SpProtocol::SURVEYOR;
    let cases: [(&[u8], SpError); 5] = [
        (b"\0X", SpError::BadMagic),
        (b"GET / HTTP/1.1\r\n", SpError::BadMagic),
        (&[0, b'S', b'P', 1], SpError::UnsupportedVersion(1)),
        (
            &[0, b'S', b'P', 0, 0, 0x21],
            SpError::IncompatibleProtocol { ours, theirs: SpProtocol::SUB },
        ),
        (&[0, b'S', b'P', 0, 0, 0x63, 0, 1], SpError::ReservedBitsSet),
    ];
    for (bytes, expected) in cases {
        let mut decoder = SpDecoder::new(ours, SpLimits::default());
        assert_eq!(decoder.push(bytes), Err(expected), "{bytes:?}");
        assert_eq!(decoder.next_message(), Err(expected), "stays failed");
    }
    let mut decoder = SpDecoder::new(ours, SpLimits::default());
    decoder.push(&[0, b'S', b'P', 0, 0, 0x63, 0]).expect("fine so far");
    assert_eq!(decoder.next_message(), Ok(None));
    assert_eq!(decoder.peer(), None);
    decoder.push(&[0]).expect("complete");
    assert_eq!(decoder.next_message(), Ok(None));
    assert_eq!(decoder.peer(), Some(SpProtocol::RESPONDENT));
}

#[test]
fn a_length_over_the_limit_is_refused_at_the_eighth_prefix_byte() {
    let limits = SpLimits { max_message: 100 };
    let mut decoder = SpDecoder::new(SpProtocol::SUB, limits);
    decoder.push(&encode_handshake(SpProtocol::PUB)).expect("handshake");
    assert_eq!(decoder.next_message(), Ok(None));
    decoder.push(&[0, 0, 0, 0, 0, 0, 0]).expect("seven bytes say nothing yet");
    assert_eq!(decoder.push(&[101]), Err(SpError::MessageTooLarge { declared: 101, max: 100 }));
    assert_eq!(decoder.buffered(), 0, "nothing kept");
    let mut decoder = SpDecoder::new(SpProtocol::SUB, limits);
    decoder.push(&encode_handshake(SpProtocol::PUB)).expect("handshake");
    assert_eq!(decoder.next_message(), Ok(None));
    assert_eq!(
        decoder.push(&u64::MAX.to_be_bytes()),
        Err(SpError::MessageTooLarge { declared: u64::MAX, max: 100 })
    );
    // A message exactly at the limit is fine.
    let stream = handshake_then(SpProtocol::SUB, &[&[7u8; 100]]);
    assert_eq!(decode(SpProtocol::SUB, limits, &stream, 3).0, vec![Bytes::from(vec![7u8; 100])]);
}

#[test]
fn an_undrained_decoder_refuses_more_without_failing() {
    let limits = SpLimits { max_message: 10 };
    let mut decoder = SpDecoder::new(SpProtocol::SUB, limits);
    let stream = handshake_then(SpProtocol::SUB, &[b"0123456789", b"0123456789"]);
    decoder.push(&stream).expect("one push of anything fits");
    assert!(matches!(decoder.push(b"x"), Err(SpError::DecoderFull { .. })));
    assert_eq!(decoder.error(), None);
    assert_eq!(decoder.next_message(), Ok(Some(Bytes::from_static(b"0123456789"))));
    assert_eq!(decoder.next_message(), Ok(Some(Bytes::from_static(b"0123456789"))));
    assert_eq!(decoder.next_message(), Ok(None));
}

#[test]
fn a_respondent_echoes_the_whole_backtrace() {
    let survey = [0x00, 0x00, 0x00, 0x05, 0x80, 0x00, 0x00, 0x2a, b'?'];
    let (backtrace, body) = Backtrace::split_survey(&survey).expect("two hops");
    assert_eq!(body, b"?");
    assert_eq!(backtrace.survey_id(), SurveyId::from_counter(42));
    let mut answer = Vec::new();
    backtrace.encode_answer(b"node-a", &SpLimits::default(), &mut answer).expect("fits");
    assert_eq!(&answer[..8], &14u64.to_be_bytes());
    assert_eq!(&answer[8..16], &survey[..8]);
    assert_eq!(&answer[16..], b"node-a");

    assert_eq!(Backtrace::split_survey(&[0, 0, 0, 1]), Err(SpError::MissingSurveyHeader));
    assert_eq!(Backtrace::split_survey(&[0x80, 0]), Err(SpError::MissingSurveyHeader));
    assert_eq!(Backtrace::split_survey(&[0u8; 36]), Err(SpError::TooManyHops));
    assert_eq!(SurveyId::split_answer(&[0, 0, 0, 1, b'x']), Err(SpError::MissingSurveyHeader));
}

#[test]
fn member_lists_are_gopherdiscoverys() {
    assert_eq!(encode_member_list(&["a:1", "b:2"]), b"a:1|b:2");
    assert_eq!(encode_member_list::<&str>(&[]), b"");
    assert_eq!(parse_member_list(b"a:1|b:2", 8, 16), Ok(vec!["a:1".into(), "b:2".into()]));
    assert_eq!(parse_member_list(b"", 8, 16), Ok(vec![]));
    assert_eq!(parse_member_list(b"a|b|c", 2, 16), Err(SpError::BadMemberList));
    assert_eq!(parse_member_list(b"abcdef", 2, 3), Err(SpError::BadMemberList));
    assert_eq!(parse_member_list(&[0xff], 2, 3), Err(SpError::BadMemberList));
    assert!(!is_valid_member_id(b"a|b", 16));
    assert!(!is_valid_member_id(b"", 16));
}

fn config() -> SurveyorConfig {
    SurveyorConfig {
        poll_time: Duration::from_secs(2),
        survey_time: Duration::from_secs(1),
        max_members: 3,
        max_id: 16,
        limits: SpLimits { max_message: 64 },
        first_survey: 7,
    }
}

fn answer(id: SurveyId, body: &[u8]) -> Vec<u8> {
    let mut message = id.get().to_be_bytes().to_vec();
    message.extend_from_slice(body);
    message
}

fn drain(surveyor: &mut Surveyor) -> Vec<SurveyorOutput> {
    core::iter::from_fn(|| surveyor.poll_output()).collect()
}

fn published(list: &[u8]) -> SurveyorOutput {
    let mut message = Vec::new();
    encode_message(&[list], &SpLimits::default(), &mut message).expect("fits");
    SurveyorOutput::Publish(Bytes::from(message))
}

#[test]
fn surveyor_counts_answers_to_the_current_survey_until_its_deadline() {
    let t0 = Instant::from_secs(100);
    let mut surveyor = Surveyor::new(config(), t0);
    surveyor.handle_timeout(t0);
    let first = SurveyId::from_counter(7);
    let mut survey = Vec::new();
    encode_message(&[&first.get().to_be_bytes()], &SpLimits::default(), &mut survey).expect("fits");
    assert_eq!(drain(&mut surveyor), [SurveyorOutput::Survey(Bytes::from(survey))]);
    assert_eq!(surveyor.poll_timeout(), Some(Instant::from_secs(101)));

    assert!(surveyor.handle_answer(t0, &answer(first, b"b:2")));
    assert!(surveyor.handle_answer(t0, &answer(first, b"a:1")));
    assert!(surveyor.handle_answer(t0, &answer(first, b"a:1")), "a repeat is harmless");
    assert!(!surveyor.handle_answer(t0, &answer(SurveyId::from_counter(6), b"old:1")));
    assert!(!surveyor.handle_answer(t0, b"\0\0\0\x07x"), "no high bit");
    assert!(!surveyor.handle_answer(t0, &answer(first, b"x|y")), "not an id");
    assert!(!surveyor.handle_answer(t0, &answer(first, b"")), "empty id");
    assert!(!surveyor.handle_answer(Instant::from_secs(101), &answer(first, b"late:1")));

    surveyor.handle_timeout(Instant::from_secs(101));
    assert_eq!(drain(&mut surveyor), [published(b"a:1|b:2")]);
    let SurveyorOutput::Publish(list) = published(b"a:1|b:2") else { unreachable!() };
    assert_eq!(surveyor.current_list(), Some(list), "what a new subscriber is sent");
    assert!(!surveyor.handle_answer(Instant::from_secs(101), &answer(first, b"c:3")));
    assert_eq!(surveyor.poll_timeout(), Some(Instant::from_secs(102)));

    // The next survey, same answers: nothing published.
    surveyor.handle_timeout(Instant::from_secs(102));
    let second = surveyor.current_survey().expect("started");
    assert_eq!(second, SurveyId::from_counter(8));
    assert_eq!(drain(&mut surveyor).len(), 1);
    assert!(surveyor.handle_answer(Instant::from_secs(102), &answer(second, b"a:1")));
    assert!(surveyor.handle_answer(Instant::from_secs(102), &answer(second, b"b:2")));
    surveyor.handle_timeout(Instant::from_secs(103));
    assert_eq!(drain(&mut surveyor), []);

    // b:2 misses the third: the list drops it.
    surveyor.handle_timeout(Instant::from_secs(104));
    let third = surveyor.current_survey().expect("started");
    drain(&mut surveyor);
    assert!(surveyor.handle_answer(Instant::from_secs(104), &answer(third, b"a:1")));
    surveyor.handle_timeout(Instant::from_secs(105));
    assert_eq!(drain(&mut surveyor), [published(b"a:1")]);
    assert_eq!(surveyor.members().collect::<Vec<_>>(), ["a:1"]);
}

#[test]
fn surveyor_caps_members_and_tolerates_time_going_backwards() {
    let t0 = Instant::from_secs(10);
    let mut surveyor = Surveyor::new(config(), t0);
    surveyor.handle_timeout(t0);
    drain(&mut surveyor);
    let id = surveyor.current_survey().expect("started");
    for member in [&b"m1"[..], b"m2", b"m3"] {
        assert!(surveyor.handle_answer(t0, &answer(id, member)));
    }
    assert!(!surveyor.handle_answer(t0, &answer(id, b"m4")), "over the cap");
    assert_eq!(surveyor.dropped_answers(), 1);
    // Time going backwards is no time passing: the survey is still open.
    surveyor.handle_timeout(Instant::from_secs(1));
    assert_eq!(surveyor.current_survey(), Some(id));
    surveyor.handle_timeout(Instant::from_secs(11));
    assert_eq!(drain(&mut surveyor), [published(b"m1|m2|m3")]);
}

#[test]
fn an_empty_first_survey_still_publishes_an_empty_list() {
    let mut surveyor = Surveyor::new(config(), Instant::ZERO);
    surveyor.handle_timeout(Instant::ZERO);
    drain(&mut surveyor);
    surveyor.handle_timeout(Instant::from_secs(1));
    assert_eq!(drain(&mut surveyor), [published(b"")]);
}

proptest! {
    #[test]
    fn messages_round_trip_through_any_split(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8),
        size in 1usize..40,
    ) {
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let stream = handshake_then(SpProtocol::RESPONDENT, &refs);
        let limits = SpLimits { max_message: 80 };
        let (whole, error) = decode(SpProtocol::RESPONDENT, limits, &stream, stream.len());
        prop_assert_eq!(error, None);
        let expected: Vec<Bytes> = messages.iter().map(|m| Bytes::from(m.clone())).collect();
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(decode(SpProtocol::RESPONDENT, limits, &stream, size), (expected, None));
    }

    #[test]
    fn garbage_never_panics_and_decodes_the_same_however_split(
        stream in proptest::collection::vec(any::<u8>(), 0..200),
        size in 1usize..20,
        valid_handshake in any::<bool>(),
    ) {
        let mut bytes = if valid_handshake {
            encode_handshake(SpProtocol::PUB).to_vec()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(&stream);
        let limits = SpLimits { max_message: 32 };
        let whole = decode(SpProtocol::SUB, limits, &bytes, bytes.len());
        prop_assert_eq!(decode(SpProtocol::SUB, limits, &bytes, size), whole.clone());
        prop_assert_eq!(decode(SpProtocol::SUB, limits, &bytes, 1), whole);
        let _ = Backtrace::split_survey(&stream);
        let _ = SurveyId::split_answer(&stream);
        let _ = parse_member_list(&stream, 4, 8);
    }

    #[test]
    fn member_lists_round_trip(ids in proptest::collection::btree_set("[a-z0-9:.]{1,12}", 0..10)) {
        let ids: Vec<_> = ids.into_iter().collect();
        prop_assert_eq!(parse_member_list(&encode_member_list(&ids), 16, 16), Ok(ids));
    }

    #[test]
    fn a_backtrace_round_trips(hops in proptest::collection::vec(0u32..0x8000_0000, 0..7), id: u32, body in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut survey = Vec::new();
        for hop in &hops {
            survey.extend_from_slice(&hop.to_be_bytes());
        }
        survey.extend_from_slice(&SurveyId::from_counter(id).get().to_be_bytes());
        survey.extend_from_slice(&body);
        let (backtrace, rest) = Backtrace::split_survey(&survey).expect("valid");
        prop_assert_eq!(rest, &body[..]);
        prop_assert_eq!(backtrace.as_bytes(), &survey[..(hops.len() + 1) * 4]);
        prop_assert_eq!(backtrace.survey_id(), SurveyId::from_counter(id));
    }
}
