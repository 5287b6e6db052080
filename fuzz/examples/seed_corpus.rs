//! Writes the seed corpora under `fuzz/corpus/`: `cargo run --example seed_corpus` in `fuzz/`.
//!
//! - `wire_decode`: one valid frame of every kind, a stream of several frames, a frame cut
//!   short, and acks carrying the newest error code and one no version defines.
//! - `wire_roundtrip`: for every kind, the first of a fixed series of pseudo-random inputs that
//!   `Arbitrary` turns into a message of that kind which encodes within the default limits.

use std::fs;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use herdcache_proto::{
    ErrorCode, FRAME_HEADER_LEN, Found, FrameKind, GetOutcome, KeyRate, Message, PutEntry,
    ReplyError, UnixTime, WireLimits,
};

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

fn samples() -> Vec<(u64, Message)> {
    let found = GetOutcome::Found(Found {
        value: b(b"hello"),
        expires_at: Some(UnixTime::from_micros(1_700_000_000_000_000)),
        key_rate: KeyRate::from_per_second(12.5),
    });
    let entry = PutEntry { key: b(b"user:42"), value: b(b"v"), expires_at: None };
    let error = ReplyError::new(ErrorCode::DataSource, "connection refused");
    vec![
        (
            0,
            Message::Hello {
                protocol_version: 1,
                cluster: b(b"prod"),
                node_id: b(b"node-a"),
                nonce: None,
            },
        ),
        (
            0,
            Message::Hello {
                protocol_version: 1,
                cluster: b(b"prod"),
                node_id: b(b"node-a"),
                nonce: Some([0x5a; 16]),
            },
        ),
        (0, Message::Error(ReplyError::new(ErrorCode::ClusterMismatch, "prod != test"))),
        (1, Message::Get { keyspace: b(b"users"), key: b(b"user:42"), timeout_ms: 250 }),
        (1, Message::GetReply(found.clone())),
        (
            2,
            Message::GetMany { keyspace: b(b"users"), keys: vec![b(b"a"), b(b"b")], timeout_ms: 9 },
        ),
        (2, Message::GetManyReply(vec![found, GetOutcome::Failed(error.clone())])),
        (3, Message::Put { keyspace: b(b"users"), entry: entry.clone() }),
        (4, Message::PutMany { keyspace: b(b"users"), entries: vec![entry.clone(), entry] }),
        (5, Message::Delete { keyspace: b(b"users"), key: b(b"user:42") }),
        (6, Message::DeleteMany { keyspace: b(b"users"), keys: vec![b(b"x")] }),
        (5, Message::Ack(Err(error.clone()))),
        (6, Message::AckMany(vec![Ok(()), Err(error)])),
        (0, Message::DropHot { keyspace: b(b"users"), keys: vec![b(b"user:42")] }),
        (7, Message::Ping),
        (7, Message::Pong),
        (0, Message::Leaving),
        (8, Message::ClearKeyspace { keyspace: b(b"users") }),
        (9, Message::Peek { keyspace: b(b"users"), key: b(b"user:42") }),
        (0, Message::HelloProof { mac: [0xc3; 32] }),
    ]
}

fn name(kind: FrameKind) -> String {
    format!("{kind:?}").to_lowercase()
}

fn main() -> std::io::Result<()> {
    let limits = WireLimits::default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    let decode = root.join("wire_decode");
    fs::create_dir_all(&decode)?;
    let mut stream = Vec::new();
    for (id, message) in samples() {
        let mut frame = Vec::new();
        message.encode(id, &mut frame, &limits).expect("samples are within the limits");
        // The hello comes without and with the nonce a node with a cluster secret sends.
        let nonce =
            if matches!(message, Message::Hello { nonce: Some(_), .. }) { "-nonce" } else { "" };
        fs::write(decode.join(format!("frame-{}{nonce}", name(message.kind()))), &frame)?;
        stream.extend_from_slice(&frame);
    }
    fs::write(decode.join("stream-of-every-kind"), &stream)?;
    fs::write(decode.join("stream-cut-short"), &stream[..stream.len() / 2 + 3])?;
    // Error codes: one added after the first release (`Unavailable`), and one no version
    // defines, which a decoder refuses as malformed (without panicking).
    let mut unavailable = Vec::new();
    Message::Ack(Err(ReplyError::new(ErrorCode::Unavailable, "")))
        .encode(9, &mut unavailable, &limits)
        .expect("an ack is within the limits");
    fs::write(decode.join("frame-ack-unavailable"), &unavailable)?;
    let mut unknown = unavailable;
    unknown[FRAME_HEADER_LEN + 1] = 99; // after the ack's error tag: the code
    fs::write(decode.join("frame-ack-unknown-code"), &unknown)?;

    let roundtrip = root.join("wire_roundtrip");
    fs::create_dir_all(&roundtrip)?;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut missing: Vec<FrameKind> = FrameKind::ALL.to_vec();
    for _ in 0..100_000 {
        if missing.is_empty() {
            break;
        }
        let input: Vec<u8> = (0..96)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let Ok((message, _, _)) = <(Message, u64, u16)>::arbitrary(&mut Unstructured::new(&input))
        else {
            continue;
        };
        let kind = message.kind();
        if missing.contains(&kind) && message.encode(1, &mut Vec::new(), &limits).is_ok() {
            fs::write(roundtrip.join(format!("message-{}", name(kind))), &input)?;
            missing.retain(|&k| k != kind);
        }
    }
    assert!(missing.is_empty(), "no seed found for {missing:?}");
    Ok(())
}
