use super::message::truncate_message;
use super::*;
use crate::time::UnixTime;
use alloc::vec;
use alloc::vec::Vec;
use bytes::Bytes;
use proptest::prelude::*;

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

fn found(value: &'static [u8], expires_at: Option<u64>, rate: u32) -> GetOutcome {
    GetOutcome::Found(Found {
        value: b(value),
        expires_at: expires_at.map(UnixTime::from_micros),
        key_rate: KeyRate::from_milli_per_second(rate),
    })
}

fn failed(code: ErrorCode, message: &'static str) -> ReplyError {
    ReplyError::new(code, message)
}

/// At least one message of every kind, with optional fields both present and absent.
fn samples() -> Vec<Message> {
    let entry = |key, value, expires_at: Option<u64>| PutEntry {
        key: b(key),
        value: b(value),
        expires_at: expires_at.map(UnixTime::from_micros),
    };
    vec![
        Message::Hello {
            protocol_version: 1,
            cluster: b(b"prod"),
            node_id: b(b"node-a:7070"),
            nonce: None,
        },
        Message::Hello {
            protocol_version: 1,
            cluster: b(b"prod"),
            node_id: b(b"node-a:7070"),
            nonce: Some([0xa5; 16]),
        },
        Message::Error(failed(ErrorCode::ClusterMismatch, "cluster \"prod\", not \"test\"")),
        Message::Get { keyspace: b(b"users"), key: b(b"user:42"), timeout_ms: 250 },
        Message::GetReply(found(b"hello", Some(1_700_000_000_000_000), 12_500)),
        Message::GetReply(GetOutcome::Failed(failed(ErrorCode::NotFound, ""))),
        Message::GetMany {
            keyspace: b(b"users"),
            keys: vec![b(b"a"), b(b""), b(b"user:42")],
            timeout_ms: u32::MAX,
        },
        Message::GetManyReply(vec![
            found(b"", None, 0),
            GetOutcome::Failed(failed(ErrorCode::DataSource, "connection refused")),
            found(b"v", Some(u64::MAX), u32::MAX),
        ]),
        Message::GetManyReply(Vec::new()),
        Message::Put { keyspace: b(b"users"), entry: entry(b"k", b"v", Some(5)) },
        Message::PutMany {
            keyspace: b(b""),
            entries: vec![entry(b"k1", b"v1", None), entry(b"k2", b"", Some(0))],
        },
        Message::Delete { keyspace: b(b"users"), key: b(b"user:42") },
        Message::DeleteMany { keyspace: b(b"users"), keys: vec![b(b"x"), b(b"y")] },
        Message::Ack(Ok(())),
        Message::Ack(Err(failed(ErrorCode::TooLarge, "value of 9 MiB"))),
        Message::AckMany(vec![Ok(()), Err(failed(ErrorCode::ShuttingDown, "bye")), Ok(())]),
        Message::DropHot { keyspace: b(b"users"), keys: vec![b(b"user:42")] },
        Message::Ping,
        Message::Pong,
        Message::Leaving,
        Message::ClearKeyspace { keyspace: b(b"users") },
        Message::Peek { keyspace: b(b"users"), key: b(b"user:42") },
        Message::HelloProof { mac: [0x3c; 32] },
    ]
}

fn encode(message: &Message, request_id: u64) -> Bytes {
    let mut out = Vec::new();
    message.encode(request_id, &mut out, &WireLimits::default()).unwrap();
    Bytes::from(out)
}

/// A frame with a hand-written payload.
fn raw_frame(kind: u8, request_id: u64, payload: &[u8]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&(10 + payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&[PROTOCOL_VERSION, kind]);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn parse(bytes: &Bytes, limits: &WireLimits) -> Result<Message, WireError> {
    let frame = Frame::new_checked(bytes, limits)?;
    Message::parse(&frame, limits)
}

/// Decodes `stream` pushed in the given pieces, draining after each push.
fn decode_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    limits: WireLimits,
) -> Result<Vec<(FrameHeader, Message)>, WireError> {
    let mut decoder = FrameDecoder::new(limits);
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece)?;
        assert!(decoder.buffered() < limits.max_frame_len() + piece.len());
        while let Some(frame) = decoder.next_frame()? {
            out.push(frame);
        }
        assert!(decoder.buffered() < limits.max_frame_len());
    }
    Ok(out)
}

#[test]
fn every_kind_round_trips() {
    let limits = WireLimits::default();
    let messages = samples();
    let mut kinds: Vec<FrameKind> = messages.iter().map(Message::kind).collect();
    kinds.dedup();
    assert_eq!(kinds, FrameKind::ALL, "the samples cover every kind, in order");
    for (id, message) in messages.iter().enumerate() {
        let request_id = 0x0102_0304_0506_0700 + id as u64;
        let mut buf = vec![0u8; 1024];
        let written = message.emit(request_id, &mut buf, &limits).unwrap();
        assert_eq!(written, message.buffer_len(&limits), "{message:?}");
        let bytes = Bytes::copy_from_slice(&buf[..written]);
        let frame = Frame::new_checked(&bytes, &limits).unwrap();
        let header = frame.header().unwrap();
        assert_eq!(header, FrameHeader { version: 1, kind: message.kind(), request_id });
        assert_eq!(frame.frame_len(), written);
        assert_eq!(frame.payload().len(), written - FRAME_HEADER_LEN);
        assert_eq!(&Message::parse(&frame, &limits).unwrap(), message);
        assert_eq!(encode(message, request_id), bytes, "encode writes what emit writes");
    }
}

#[test]
fn header_fields_are_big_endian_at_their_offsets() {
    let bytes = encode(&Message::Get { keyspace: b(b"s"), key: b(b"k"), timeout_ms: 9 }, 0xABCD);
    assert_eq!(&bytes[..4], &(bytes.len() as u32 - 4).to_be_bytes());
    assert_eq!(&bytes[4..6], &[PROTOCOL_VERSION, FrameKind::Get.as_u8()]);
    assert_eq!(&bytes[6..14], &0xABCDu64.to_be_bytes());
    assert_eq!(&bytes[14..], &[0, 0, 0, 1, b's', 0, 0, 0, 1, b'k', 0, 0, 0, 9]);
}

#[test]
fn parsed_fields_are_slices_of_the_frame() {
    let limits = WireLimits::default();
    let bytes = encode(&Message::GetReply(found(b"a value", None, 1)), 1);
    let Message::GetReply(GetOutcome::Found(got)) = parse(&bytes, &limits).unwrap() else {
        panic!("a found reply");
    };
    let frame_range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    assert!(frame_range.contains(&(got.value.as_ptr() as usize)), "no copy was made");
}

#[test]
fn frame_split_at_every_byte_boundary_decodes() {
    let limits = WireLimits::default();
    let messages = samples();
    let stream: Vec<u8> = messages.iter().flat_map(|m| encode(m, 7).to_vec()).collect();
    for cut in 0..=stream.len() {
        let (front, back) = stream.split_at(cut);
        let got = decode_pieces([front, back], limits).unwrap();
        let got: Vec<Message> = got.into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, messages, "split at {cut}");
    }
    let byte_by_byte = decode_pieces(stream.chunks(1), limits).unwrap();
    assert_eq!(byte_by_byte.len(), messages.len());
}

#[test]
fn several_frames_in_one_push_decode_in_order() {
    let stream: Vec<u8> =
        [(1, Message::Ping), (2, Message::Pong), (0, Message::Leaving), (3, Message::Ping)]
            .iter()
            .flat_map(|(id, m)| encode(m, *id).to_vec())
            .collect();
    let mut decoder = FrameDecoder::new(WireLimits::default());
    decoder.push(&stream).unwrap();
    let mut ids = Vec::new();
    while let Some((header, _)) = decoder.next_frame().unwrap() {
        ids.push((header.request_id, header.kind));
    }
    assert_eq!(
        ids,
        [(1, FrameKind::Ping), (2, FrameKind::Pong), (0, FrameKind::Leaving), (3, FrameKind::Ping)]
    );
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn oversized_declared_length_is_refused_from_the_prefix_alone() {
    let limits = WireLimits { max_frame: 1_000, ..WireLimits::default() };
    let prefix = 1_001u32.to_be_bytes();
    let expected = WireError::FrameTooLarge { declared: 1_001, max: 1_000 };
    let mut decoder = FrameDecoder::new(limits);
    assert_eq!(decoder.push(&prefix[..3]), Ok(()), "three bytes say nothing yet");
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.push(&prefix[3..]), Err(expected));
    assert_eq!(decoder.buffered(), 0, "nothing of the frame is kept");
    assert_eq!(Frame::new_checked(&prefix[..], &limits), Err(expected));
    assert_eq!(
        Frame::new_checked(&u32::MAX.to_be_bytes()[..], &limits).unwrap_err().error_code(),
        ErrorCode::FrameTooLarge
    );
    // The largest allowed length passes the prefix check and waits for its body.
    let mut decoder = FrameDecoder::new(limits);
    decoder.push(&1_000u32.to_be_bytes()).unwrap();
    decoder.push(&[PROTOCOL_VERSION, FrameKind::Ping.as_u8()]).unwrap();
    assert_eq!(decoder.next_frame(), Ok(None));
}

#[test]
fn declared_length_under_the_header_is_malformed() {
    let mut decoder = FrameDecoder::new(WireLimits::default());
    assert!(matches!(decoder.push(&9u32.to_be_bytes()), Err(WireError::Malformed(_))));
    let bytes = [0, 0, 0, 0];
    assert!(matches!(
        Frame::new_checked(&bytes[..], &WireLimits::default()),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn unsupported_version_is_refused_when_its_byte_arrives() {
    let mut decoder = FrameDecoder::new(WireLimits::default());
    decoder.push(&10u32.to_be_bytes()).unwrap();
    assert_eq!(decoder.push(&[2]), Err(WireError::UnsupportedVersion(2)));
    assert_eq!(WireError::UnsupportedVersion(2).error_code(), ErrorCode::ProtocolVersion);
    let mut frame = encode(&Message::Ping, 1).to_vec();
    frame[4] = 0;
    assert_eq!(
        parse(&Bytes::from(frame), &WireLimits::default()),
        Err(WireError::UnsupportedVersion(0))
    );
}

#[test]
fn unknown_kind_is_refused_when_its_byte_arrives() {
    let mut decoder = FrameDecoder::new(WireLimits::default());
    decoder.push(&[0, 0, 0, 10, PROTOCOL_VERSION]).unwrap();
    assert_eq!(decoder.push(&[20, 0, 0]), Err(WireError::UnknownKind(20)));
    for kind in [0u8, 20, 255] {
        let frame = raw_frame(kind, 1, &[]);
        assert_eq!(parse(&frame, &WireLimits::default()), Err(WireError::UnknownKind(kind)));
    }
}

#[test]
fn truncated_payloads_are_refused() {
    let limits = WireLimits::default();
    for message in samples() {
        let full = encode(&message, 3);
        for cut in 1..=full.len() - FRAME_HEADER_LEN {
            // A consistent frame whose payload lacks its last `cut` bytes.
            let mut short = full[..full.len() - cut].to_vec();
            let declared = (short.len() - 4) as u32;
            short[..4].copy_from_slice(&declared.to_be_bytes());
            if let Message::Hello { protocol_version, cluster, node_id, nonce: Some(_) } = &message
            {
                if cut == 16 {
                    // The nonce is the hello's optional last field: without it, the hello of
                    // a node without a cluster secret (which a node with one refuses).
                    let expected = Message::Hello {
                        protocol_version: *protocol_version,
                        cluster: cluster.clone(),
                        node_id: node_id.clone(),
                        nonce: None,
                    };
                    assert_eq!(parse(&Bytes::from(short), &limits), Ok(expected));
                    continue;
                }
            }
            assert_eq!(
                parse(&Bytes::from(short), &limits),
                Err(WireError::Truncated),
                "{message:?}"
            );
        }
        // A buffer shorter than its length field.
        let cut = full.slice(..full.len() - 1);
        assert_eq!(Frame::new_checked(&cut, &limits), Err(WireError::Truncated));
    }
    assert_eq!(Frame::new_checked(&[0u8, 0, 0][..], &limits), Err(WireError::Truncated));
}

#[test]
fn trailing_bytes_after_the_payload_are_malformed() {
    let limits = WireLimits::default();
    for message in samples() {
        let mut long = encode(&message, 3).to_vec();
        long.push(0);
        let declared = (long.len() - 4) as u32;
        long[..4].copy_from_slice(&declared.to_be_bytes());
        // After a hello without a nonce, a byte is the start of a nonce cut short.
        let expected = if matches!(message, Message::Hello { nonce: None, .. }) {
            WireError::Truncated
        } else {
            WireError::Malformed("bytes left after the payload")
        };
        assert_eq!(parse(&Bytes::from(long), &limits), Err(expected), "{message:?}");
    }
}

#[test]
fn a_buffer_longer_than_the_frame_views_only_the_frame() {
    let limits = WireLimits::default();
    let mut two = encode(&Message::Ping, 1).to_vec();
    two.extend_from_slice(&encode(&Message::Pong, 2));
    let two = Bytes::from(two);
    let frame = Frame::new_checked(&two, &limits).unwrap();
    assert_eq!(frame.frame_len(), FRAME_HEADER_LEN);
    assert_eq!(Message::parse(&frame, &limits), Ok(Message::Ping));
}

#[test]
fn bad_presence_flag_or_tag_is_malformed() {
    let limits = WireLimits::default();
    // Put: keyspace "s", key "k", value "v", then an expiry flag of 2.
    let put = [0, 0, 0, 1, b's', 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v', 2];
    let error = parse(&raw_frame(FrameKind::Put.as_u8(), 1, &put), &limits).unwrap_err();
    assert_eq!(error, WireError::Malformed("expiry presence flag is neither 0 nor 1"));
    assert_eq!(error.error_code(), ErrorCode::Malformed);
    let reply = parse(&raw_frame(FrameKind::GetReply.as_u8(), 1, &[7]), &limits);
    assert!(matches!(reply, Err(WireError::Malformed(_))));
    let ack = parse(&raw_frame(FrameKind::Ack.as_u8(), 1, &[255]), &limits);
    assert!(matches!(ack, Err(WireError::Malformed(_))));
}

#[test]
fn unknown_error_code_is_refused() {
    let limits = WireLimits::default();
    for code in [0u8, 13, 127, 134, 255] {
        let frame = raw_frame(FrameKind::Error.as_u8(), 0, &[code, 0, 0, 0, 0]);
        assert_eq!(parse(&frame, &limits), Err(WireError::UnknownErrorCode(code)));
    }
}

#[test]
fn batch_count_over_max_is_refused_before_allocation() {
    let limits = WireLimits::default();
    let huge = u32::MAX.to_be_bytes();
    let frame = raw_frame(FrameKind::GetManyReply.as_u8(), 1, &huge);
    assert_eq!(
        parse(&frame, &limits),
        Err(WireError::BatchTooLarge { count: u64::from(u32::MAX), max: 1_024 })
    );
    // Even with no batch limit, a count the payload cannot hold allocates nothing.
    let unlimited = WireLimits { max_batch: u32::MAX, ..limits };
    assert_eq!(parse(&frame, &unlimited), Err(WireError::Truncated));
    let mut keys = vec![0, 0, 0, 0];
    keys.extend_from_slice(&huge);
    let frame = raw_frame(FrameKind::DeleteMany.as_u8(), 1, &keys);
    assert_eq!(parse(&frame, &unlimited), Err(WireError::Truncated));
    // One more than the limit is refused, the limit itself is not.
    let small = WireLimits { max_batch: 2, ..limits };
    let three = Message::AckMany(vec![Ok(()); 3]);
    assert_eq!(
        parse(&encode(&three, 1), &small),
        Err(WireError::BatchTooLarge { count: 3, max: 2 })
    );
    assert!(parse(&encode(&Message::AckMany(vec![Ok(()); 2]), 1), &small).is_ok());
}

#[test]
fn peek_is_kind_18_with_keyspace_then_key_and_its_limits_are_checked() {
    let peek = encode(&Message::Peek { keyspace: b(b"ks"), key: b(b"k1") }, 7);
    assert_eq!(peek[5], 18, "the kind byte");
    assert_eq!(&peek[FRAME_HEADER_LEN..], &[0, 0, 0, 2, b'k', b's', 0, 0, 0, 2, b'k', b'1'][..]);
    let limits = WireLimits { max_key: 1, ..WireLimits::default() };
    assert_eq!(
        parse(&peek, &limits),
        Err(WireError::FieldTooLarge { field: "key", len: 2, max: 1 })
    );
    let limits = WireLimits { max_label: 1, ..WireLimits::default() };
    assert_eq!(
        parse(&peek, &limits),
        Err(WireError::FieldTooLarge { field: "keyspace", len: 2, max: 1 })
    );
    let mut out = Vec::new();
    let refused = Message::Peek { keyspace: b(b"ks"), key: b(b"k1") }.encode(1, &mut out, &limits);
    assert!(matches!(refused, Err(WireError::FieldTooLarge { field: "keyspace", .. })));
    assert!(out.is_empty(), "nothing written");
}

#[test]
fn declared_fields_over_their_limits_are_refused() {
    let limits = WireLimits { max_key: 3, max_value: 4, max_label: 2, ..WireLimits::default() };
    let get = encode(&Message::Get { keyspace: b(b"ab"), key: b(b"abcd"), timeout_ms: 1 }, 1);
    assert_eq!(
        parse(&get, &limits),
        Err(WireError::FieldTooLarge { field: "key", len: 4, max: 3 })
    );
    let hello = encode(
        &Message::Hello { protocol_version: 1, cluster: b(b"abc"), node_id: b(b""), nonce: None },
        0,
    );
    assert_eq!(
        parse(&hello, &limits),
        Err(WireError::FieldTooLarge { field: "cluster", len: 3, max: 2 })
    );
    let reply = encode(&Message::GetReply(found(b"12345", None, 0)), 1);
    assert_eq!(
        parse(&reply, &limits),
        Err(WireError::FieldTooLarge { field: "value", len: 5, max: 4 })
    );
    // A declared length of u32::MAX is refused by the limit, not by reading past the end.
    let frame = raw_frame(FrameKind::Delete.as_u8(), 1, &[0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(matches!(
        parse(&frame, &limits),
        Err(WireError::FieldTooLarge { field: "keyspace", .. })
    ));
    let unlimited = WireLimits { max_label: u32::MAX, ..limits };
    assert_eq!(parse(&frame, &unlimited), Err(WireError::Truncated));
}

#[test]
fn received_error_text_over_max_message_is_refused() {
    let limits = WireLimits { max_message: 4, ..WireLimits::default() };
    let frame =
        raw_frame(FrameKind::Error.as_u8(), 0, &[130, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    assert_eq!(
        parse(&frame, &limits),
        Err(WireError::FieldTooLarge { field: "message", len: 5, max: 4 })
    );
}

#[test]
fn emit_into_a_too_small_buffer_is_an_error_and_writes_nothing() {
    let limits = WireLimits::default();
    let message = Message::Get { keyspace: b(b"users"), key: b(b"user:42"), timeout_ms: 1 };
    let needed = message.buffer_len(&limits);
    let mut buf = vec![0xAA; needed - 1];
    assert_eq!(
        message.emit(1, &mut buf, &limits),
        Err(WireError::BufferTooSmall { needed, available: needed - 1 })
    );
    assert!(buf.iter().all(|&byte| byte == 0xAA), "nothing was written");
    let mut exact = vec![0; needed];
    assert_eq!(message.emit(1, &mut exact, &limits), Ok(needed));
}

#[test]
fn emit_refuses_what_the_peer_would_refuse() {
    let limits = WireLimits {
        max_key: 3,
        max_value: 4,
        max_batch: 2,
        max_label: 5,
        max_frame: 50,
        ..WireLimits::default()
    };
    let cases = [
        (
            Message::Delete { keyspace: b(b"s"), key: b(b"abcd") },
            WireError::FieldTooLarge { field: "key", len: 4, max: 3 },
        ),
        (
            Message::GetReply(found(b"12345", None, 0)),
            WireError::FieldTooLarge { field: "value", len: 5, max: 4 },
        ),
        (
            Message::Put {
                keyspace: b(b"s"),
                entry: PutEntry { key: b(b"k"), value: b(b"12345"), expires_at: None },
            },
            WireError::FieldTooLarge { field: "value", len: 5, max: 4 },
        ),
        (
            Message::DropHot { keyspace: b(b"s"), keys: vec![b(b"a"); 3] },
            WireError::BatchTooLarge { count: 3, max: 2 },
        ),
        (
            Message::Hello {
                protocol_version: 1,
                cluster: b(b"abcdef"),
                node_id: b(b""),
                nonce: None,
            },
            WireError::FieldTooLarge { field: "cluster", len: 6, max: 5 },
        ),
        (
            Message::GetManyReply(vec![found(b"1234", Some(1), 0); 2]),
            WireError::FrameTooLarge { declared: 10 + 4 + 2 * (18 + 4), max: 50 },
        ),
    ];
    for (message, expected) in cases {
        let mut out = vec![1, 2, 3];
        assert_eq!(message.encode(1, &mut out, &limits), Err(expected), "{message:?}");
        assert_eq!(out, [1, 2, 3], "encode leaves the output unchanged");
        assert_eq!(message.emit(1, &mut [0; 256], &limits), Err(expected));
        assert_eq!(
            expected.error_code(),
            if matches!(expected, WireError::FrameTooLarge { .. }) {
                ErrorCode::FrameTooLarge
            } else {
                ErrorCode::TooLarge
            }
        );
    }
}

#[test]
fn error_text_over_max_message_is_truncated_on_a_char_boundary() {
    let limits = WireLimits { max_message: 8, ..WireLimits::default() };
    // "aé" is three bytes: a cut at 8 falls between the two bytes of the third "é".
    let text = "aéaéaéaé";
    let message = Message::Error(ReplyError::new(ErrorCode::Malformed, text));
    let bytes = encode(&message, 0);
    assert_eq!(bytes.len(), message.buffer_len(&WireLimits::default()));
    let truncated = {
        let mut out = Vec::new();
        let len = message.encode(0, &mut out, &limits).unwrap();
        assert_eq!(len, message.buffer_len(&limits), "buffer_len counts the truncated text");
        parse(&Bytes::from(out), &limits).unwrap()
    };
    let Message::Error(error) = truncated else { panic!("an error frame") };
    assert_eq!(&error.message[..], "aéaéa".as_bytes(), "cut before the split character");
    assert!(core::str::from_utf8(&error.message).is_ok());
    // Four-byte characters, and bytes that are not UTF-8 at all.
    assert_eq!(truncate_message("🦀🦀".as_bytes(), 7), "🦀".as_bytes());
    assert_eq!(truncate_message("🦀".as_bytes(), 3), b"");
    assert_eq!(truncate_message(&[0x80; 10], 5), &[0x80; 5], "a plain cut when not UTF-8");
    assert_eq!(truncate_message(b"short", 5), b"short");
}

#[test]
fn decoder_stays_failed_after_an_error() {
    let mut decoder = FrameDecoder::new(WireLimits::default());
    let mut bad = encode(&Message::Ack(Ok(())), 1).to_vec();
    bad[FRAME_HEADER_LEN] = 9; // the ack flag
    decoder.push(&bad).unwrap();
    let error = decoder.next_frame().unwrap_err();
    assert!(matches!(error, WireError::Malformed(_)));
    assert_eq!(decoder.error(), Some(error));
    assert_eq!(decoder.push(&encode(&Message::Ping, 1)), Err(error));
    assert_eq!(decoder.next_frame(), Err(error));
    assert_eq!(decoder.buffered(), 0, "a failed decoder holds nothing");
}

#[test]
fn decoder_refuses_to_grow_when_not_drained() {
    let limits = WireLimits { max_frame: 32, ..WireLimits::default() };
    let ping = encode(&Message::Ping, 1);
    let mut decoder = FrameDecoder::new(limits);
    let mut pushed = 0;
    while decoder.push(&ping).is_ok() {
        pushed += 1;
        assert!(pushed < 10, "push must refuse at some point");
    }
    assert_eq!(pushed, 3, "36 bytes (F) buffered after three 14-byte frames");
    assert_eq!(decoder.push(&ping), Err(WireError::DecoderFull { buffered: 42 }));
    assert_eq!(decoder.error(), None, "a full decoder has not failed");
    let mut frames = 0;
    while decoder.next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 3);
    decoder.push(&ping).unwrap();
    assert_eq!(decoder.next_frame().unwrap().map(|(_, m)| m), Some(Message::Ping));
}

#[test]
fn an_unchecked_view_of_short_bytes_never_panics() {
    for len in 0..FRAME_HEADER_LEN {
        let bytes = vec![0xFF; len];
        let frame = Frame::new_unchecked(&bytes[..]);
        let _ = (frame.len_field(), frame.version(), frame.kind_byte(), frame.request_id());
        assert!(frame.payload().is_empty());
        assert!(frame.header().is_err());
        assert!(frame.check(&WireLimits::default()).is_err());
    }
}

#[test]
fn key_rate_is_fixed_point_and_saturates() {
    assert_eq!(KeyRate::from_per_second(12.5).as_milli_per_second(), 12_500);
    assert_eq!(KeyRate::from_per_second(0.0004), KeyRate::ZERO);
    assert_eq!(KeyRate::from_per_second(0.0005).as_milli_per_second(), 1, "rounds to nearest");
    assert_eq!(KeyRate::from_per_second(f64::NAN), KeyRate::ZERO);
    assert_eq!(KeyRate::from_per_second(-3.0), KeyRate::ZERO);
    assert_eq!(KeyRate::from_per_second(f64::INFINITY), KeyRate::MAX);
    assert_eq!(KeyRate::from_per_second(1e12), KeyRate::MAX);
    assert!((KeyRate::from_milli_per_second(1_500).as_per_second() - 1.5).abs() < f64::EPSILON);
}

#[test]
fn error_codes_round_trip_and_split_by_level() {
    let codes: Vec<ErrorCode> = (0..=255).filter_map(ErrorCode::from_u8).collect();
    assert_eq!(codes.len(), 18);
    for code in codes {
        assert_eq!(ErrorCode::from_u8(code.as_u8()), Some(code));
        let connection = matches!(
            code,
            ErrorCode::ProtocolVersion
                | ErrorCode::ClusterMismatch
                | ErrorCode::Malformed
                | ErrorCode::FrameTooLarge
                | ErrorCode::TooManyInFlight
                | ErrorCode::Unauthenticated
        );
        assert_eq!(code.is_connection_level(), connection, "{code}");
    }
    for kind in FrameKind::ALL {
        assert_eq!(FrameKind::from_u8(kind.as_u8()), Some(kind));
    }
    assert_eq!(FrameKind::from_u8(0), None);
}

#[test]
fn wire_errors_map_to_connection_codes() {
    let cases = [
        (WireError::Truncated, ErrorCode::Malformed),
        (WireError::FrameTooLarge { declared: 1, max: 0 }, ErrorCode::FrameTooLarge),
        (WireError::UnsupportedVersion(2), ErrorCode::ProtocolVersion),
        (WireError::UnknownKind(0), ErrorCode::Malformed),
        (WireError::UnknownErrorCode(0), ErrorCode::Malformed),
        (WireError::Malformed("x"), ErrorCode::Malformed),
        (WireError::FieldTooLarge { field: "key", len: 2, max: 1 }, ErrorCode::TooLarge),
        (WireError::BatchTooLarge { count: 2, max: 1 }, ErrorCode::TooLarge),
        (WireError::BufferTooSmall { needed: 2, available: 1 }, ErrorCode::Overloaded),
        (WireError::DecoderFull { buffered: 1 }, ErrorCode::Overloaded),
    ];
    for (error, code) in cases {
        assert_eq!(error.error_code(), code, "{error}");
    }
}

#[test]
fn reply_error_displays_lossy_text() {
    let error = ReplyError::new(ErrorCode::DataSource, Bytes::from_static(b"disk \xFF full"));
    assert_eq!(alloc::format!("{error}"), "data source error: disk \u{FFFD} full");
    assert_eq!(alloc::format!("{}", ReplyError::new(ErrorCode::NotFound, "")), "not found");
}

#[test]
fn default_limits_hold_a_max_value_reply_and_a_full_batch_of_64k_values() {
    let limits = WireLimits::default();
    let max_value = Bytes::from(vec![0; limits.max_value as usize]);
    let one = Message::GetReply(GetOutcome::Found(Found {
        value: max_value,
        expires_at: Some(UnixTime::EPOCH),
        key_rate: KeyRate::MAX,
    }));
    assert!(one.checked_len(&limits).is_ok());
    let batch_of = |len: usize| {
        let value = Bytes::from(vec![0; len]);
        let outcome = GetOutcome::Found(Found {
            value,
            expires_at: Some(UnixTime::EPOCH),
            key_rate: KeyRate::ZERO,
        });
        Message::GetManyReply(vec![outcome; limits.max_batch as usize])
    };
    assert!(batch_of(65_517).checked_len(&limits).is_ok(), "the documented largest value");
    assert!(matches!(batch_of(65_518).checked_len(&limits), Err(WireError::FrameTooLarge { .. })));
}

// ---- property tests ----

fn bytes_upto(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    let codes: Vec<ErrorCode> = (0..=255).filter_map(ErrorCode::from_u8).collect();
    proptest::sample::select(codes)
}

fn reply_error() -> impl Strategy<Value = ReplyError> {
    (error_code(), bytes_upto(24)).prop_map(|(code, message)| ReplyError { code, message })
}

fn expiry() -> impl Strategy<Value = Option<UnixTime>> {
    proptest::option::of(any::<u64>().prop_map(UnixTime::from_micros))
}

fn outcome() -> impl Strategy<Value = GetOutcome> {
    prop_oneof![
        (bytes_upto(40), expiry(), any::<u32>()).prop_map(|(value, expires_at, rate)| {
            GetOutcome::Found(Found {
                value,
                expires_at,
                key_rate: KeyRate::from_milli_per_second(rate),
            })
        }),
        reply_error().prop_map(GetOutcome::Failed),
    ]
}

fn entry() -> impl Strategy<Value = PutEntry> {
    (bytes_upto(16), bytes_upto(40), expiry()).prop_map(|(key, value, expires_at)| PutEntry {
        key,
        value,
        expires_at,
    })
}

fn ack() -> impl Strategy<Value = Result<(), ReplyError>> {
    proptest::option::of(reply_error()).prop_map(|error| error.map_or(Ok(()), Err))
}

fn message() -> impl Strategy<Value = Message> {
    use proptest::collection::vec as list;
    let keys = || list(bytes_upto(16), 0..6);
    prop_oneof![
        (any::<u16>(), bytes_upto(12), bytes_upto(12), any::<Option<[u8; 16]>>()).prop_map(
            |(protocol_version, cluster, node_id, nonce)| Message::Hello {
                protocol_version,
                cluster,
                node_id,
                nonce
            }
        ),
        any::<[u8; 32]>().prop_map(|mac| Message::HelloProof { mac }),
        reply_error().prop_map(Message::Error),
        (bytes_upto(12), bytes_upto(16), any::<u32>())
            .prop_map(|(keyspace, key, timeout_ms)| Message::Get { keyspace, key, timeout_ms }),
        outcome().prop_map(Message::GetReply),
        (bytes_upto(12), keys(), any::<u32>()).prop_map(|(keyspace, keys, timeout_ms)| {
            Message::GetMany { keyspace, keys, timeout_ms }
        }),
        list(outcome(), 0..6).prop_map(Message::GetManyReply),
        (bytes_upto(12), entry()).prop_map(|(keyspace, entry)| Message::Put { keyspace, entry }),
        (bytes_upto(12), list(entry(), 0..6))
            .prop_map(|(keyspace, entries)| Message::PutMany { keyspace, entries }),
        (bytes_upto(12), bytes_upto(16))
            .prop_map(|(keyspace, key)| Message::Delete { keyspace, key }),
        (bytes_upto(12), keys())
            .prop_map(|(keyspace, keys)| Message::DeleteMany { keyspace, keys }),
        ack().prop_map(Message::Ack),
        list(ack(), 0..6).prop_map(Message::AckMany),
        (bytes_upto(12), keys()).prop_map(|(keyspace, keys)| Message::DropHot { keyspace, keys }),
        Just(Message::Ping),
        Just(Message::Pong),
        Just(Message::Leaving),
        bytes_upto(12).prop_map(|keyspace| Message::ClearKeyspace { keyspace }),
        (bytes_upto(12), bytes_upto(16))
            .prop_map(|(keyspace, key)| Message::Peek { keyspace, key }),
    ]
}

/// A valid frame with some bytes overwritten: reaches deep into the parser, unlike random bytes.
fn corrupted_frame() -> impl Strategy<Value = Vec<u8>> {
    (message(), proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4))
        .prop_map(|(message, edits)| {
            let mut bytes = encode(&message, 1).to_vec();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes
        })
}

/// Feeds `bytes` to the decoder in `chunk`-sized pushes and to the frame parser; returns
/// nothing, panics only through a bug.
fn never_panics(bytes: &[u8], chunk: usize, limits: WireLimits) {
    let mut decoder = FrameDecoder::new(limits);
    for piece in bytes.chunks(chunk.max(1)) {
        if decoder.push(piece).is_err() {
            break;
        }
        assert!(decoder.buffered() < limits.max_frame_len() + piece.len());
        while let Ok(Some(_)) = decoder.next_frame() {}
        assert!(decoder.buffered() < limits.max_frame_len());
    }
    let owned = Bytes::copy_from_slice(bytes);
    if let Ok(frame) = Frame::new_checked(&owned, &limits) {
        let _ = Message::parse(&frame, &limits);
    }
    let _ = Message::parse(&Frame::new_unchecked(&owned), &limits);
}

proptest! {
    #![proptest_config(crate::testing::model_config())]

    #[test]
    fn arbitrary_message_round_trips(message in message(), request_id in any::<u64>()) {
        let limits = WireLimits::default();
        let len = message.buffer_len(&limits);
        let mut buf = vec![0u8; len + 3];
        prop_assert_eq!(message.emit(request_id, &mut buf, &limits), Ok(len));
        let bytes = Bytes::copy_from_slice(&buf[..len]);
        let frame = Frame::new_checked(&bytes, &limits).unwrap();
        prop_assert_eq!(frame.header().unwrap().request_id, request_id);
        prop_assert_eq!(frame.header().unwrap().kind, message.kind());
        prop_assert_eq!(Message::parse(&frame, &limits), Ok(message.clone()));
        let decoded = decode_pieces([&buf[..len]], limits).unwrap();
        prop_assert_eq!(decoded, vec![(frame.header().unwrap(), message)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_the_parser(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        chunk in 1usize..40,
        max_frame in prop_oneof![Just(WireLimits::DEFAULT_MAX_FRAME), 0u32..64],
    ) {
        let limits = WireLimits { max_frame, ..WireLimits::default() };
        never_panics(&bytes, chunk, limits);
        // Give random bytes a plausible header so that payload parsing is reached too.
        let mut framed = raw_frame(1 + bytes.first().copied().unwrap_or(0) % 16, 9, &bytes).to_vec();
        never_panics(&framed, chunk, WireLimits::default());
        framed.truncate(framed.len() / 2);
        never_panics(&framed, chunk, WireLimits::default());
    }

    #[test]
    fn corrupted_frames_never_panic(bytes in corrupted_frame(), chunk in 1usize..40) {
        never_panics(&bytes, chunk, WireLimits::default());
        let tight = WireLimits { max_key: 4, max_value: 4, max_batch: 2, max_label: 4, max_message: 4, max_frame: 48 };
        never_panics(&bytes, chunk, tight);
    }

    #[test]
    fn a_stream_split_at_random_points_decodes_the_same_messages(
        messages in proptest::collection::vec(message(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let limits = WireLimits::default();
        let mut stream = Vec::new();
        for (id, message) in messages.iter().enumerate() {
            message.encode(id as u64, &mut stream, &limits).unwrap();
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([stream.len()]) {
            pieces.push(&stream[start..cut]);
            start = cut;
        }
        let decoded = decode_pieces(pieces, limits).unwrap();
        let expected: Vec<(u64, Message)> = messages.into_iter().enumerate().map(|(id, m)| (id as u64, m)).collect();
        let got: Vec<(u64, Message)> = decoded.into_iter().map(|(h, m)| (h.request_id, m)).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn the_handshake_limit_admits_the_largest_hello_proof_and_error_and_nothing_larger() {
    let limits = WireLimits::default();
    let handshake = limits.for_handshake();
    let label = Bytes::from(vec![b'x'; limits.max_label as usize]);
    let largest = [
        Message::Hello {
            protocol_version: 1,
            cluster: label.clone(),
            node_id: label,
            nonce: Some([7; 16]),
        },
        Message::HelloProof { mac: [9; 32] },
        Message::Error(ReplyError {
            code: ErrorCode::ClusterMismatch,
            message: Bytes::from(vec![b'm'; limits.max_message as usize]),
        }),
    ];
    let mut longest = 0;
    for message in &largest {
        let mut encoded = Vec::new();
        message.encode(0, &mut encoded, &limits).unwrap();
        longest = longest.max(encoded.len());
        let mut decoder = FrameDecoder::new(handshake);
        decoder.push(&encoded).unwrap();
        assert_eq!(decoder.next_frame().unwrap().map(|(_, got)| got).as_ref(), Some(message));
    }
    assert_eq!(handshake.max_frame_len(), longest, "the bound is the largest, not more");
    assert!(handshake.max_frame < limits.max_frame);

    // One byte over is refused by its length prefix alone, before any body is buffered.
    let mut decoder = FrameDecoder::new(handshake);
    let over = handshake.max_frame + 1;
    assert!(matches!(decoder.push(&over.to_be_bytes()), Err(WireError::FrameTooLarge { .. })));
    // Raised limits apply to what follows.
    let mut decoder = FrameDecoder::new(handshake);
    decoder.set_limits(limits);
    decoder.push(&over.to_be_bytes()).unwrap();
}
