//! One node and its connections: the hello, garbage, bounded parsing, connect and hello
//! timeouts, duplicate ids.

use super::*;
use crate::sim::KEYSPACE;
use crate::time::Duration;
use alloc::format;

#[test]
fn garbage_on_a_connection_closes_only_that_connection() {
    let mut n = node("a", "c");
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(1), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(2), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &[0xff; 64] }).unwrap();
    let outputs = drain(&mut n);
    assert!(outputs.contains(&Output::Close { conn: ConnId(1) }), "{outputs:?}");
    assert!(
        outputs.iter().any(|o| matches!(o, Output::Transmit { conn: ConnId(1), .. })),
        "an error frame first"
    );
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { conn: ConnId(2) })));
    // The node keeps serving its own callers.
    let get = Input::Get {
        request: RequestId(9),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get).unwrap();
    assert!(drain(&mut n).iter().any(|o| matches!(o, Output::Load { .. })));
}

#[test]
fn hello_from_another_cluster_is_refused() {
    let mut client = node("a", "blue");
    let mut server = node("b", "green");
    client
        .handle_input(
            Instant::ZERO,
            Input::Connected {
                conn: ConnId(1),
                peer: Bytes::from_static(b"b"),
                nonce: [0; 16],
                peer_identity: None,
            },
        )
        .unwrap();
    server
        .handle_input(
            Instant::ZERO,
            Input::Accepted { conn: ConnId(7), nonce: [0; 16], peer_identity: None },
        )
        .unwrap();
    let hello = drain(&mut client).into_iter().find_map(|o| match o {
        Output::Transmit { data, .. } => Some(data),
        _ => None,
    });
    server
        .handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data: &hello.unwrap() })
        .unwrap();
    let outputs = drain(&mut server);
    assert!(outputs.contains(&Output::Event(Event::ConnectionRefused {
        conn: ConnId(7),
        reason: ErrorCode::ClusterMismatch
    })));
    assert!(outputs.contains(&Output::Close { conn: ConnId(7) }));
}

#[test]
fn pipelined_gets_of_large_values_are_answered_a_bounded_amount_per_turn() {
    use crate::wire::{Message, WireLimits};
    let mut config =
        NodeConfig::new("a", "c").with_keyspace(KeyspaceConfig::new(KEYSPACE, 64 << 20));
    config.max_in_flight_per_connection = 10_000;
    let mut n = Node::new(config, Instant::ZERO).unwrap();
    let value = Bytes::from(alloc::vec![7u8; 256 << 10]);
    let put = Input::Put {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        entry: Entry { key: Bytes::from_static(b"big"), value, expires_at: None },
        timeout: None,
    };
    n.handle_input(Instant::ZERO, put).unwrap();
    drain(&mut n);
    // One read carrying a hello and 200 gets of the 256 KiB value: 50 MiB of replies.
    let mut data = hello_from("b");
    for id in 1..=200u64 {
        let get = Message::Get {
            keyspace: Bytes::from_static(KEYSPACE),
            key: Bytes::from_static(b"big"),
            timeout_ms: 1_000,
        };
        get.encode(id, &mut data, &WireLimits::default()).unwrap();
    }
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(1), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &data }).unwrap();
    let sent = |outputs: Vec<Output>| -> usize {
        outputs
            .into_iter()
            .map(|o| match o {
                Output::Transmit { conn: ConnId(1), data } => data.len(),
                _ => 0,
            })
            .sum()
    };
    let first = sent(drain(&mut n));
    assert!(
        first < crate::node::frames::OUTPUT_PER_TURN + (300 << 10),
        "one turn queued {first} bytes"
    );
    assert_eq!(n.poll_timeout(), Some(Instant::ZERO), "the rest is due at once");
    // Turn after turn, every get is answered, none is lost.
    let mut total = first;
    let mut turns = 1;
    while n.poll_timeout() == Some(Instant::ZERO) {
        n.handle_timeout(Instant::ZERO);
        let this = sent(drain(&mut n));
        assert!(
            this < crate::node::frames::OUTPUT_PER_TURN + (300 << 10),
            "a turn queued {this} bytes"
        );
        total += this;
        turns += 1;
        assert!(turns < 1_000, "a bounded number of turns");
    }
    assert!(total > 200 * (256 << 10), "every get answered: {total} bytes in {turns} turns");
}

/// Found in review: a hello naming another node than the one dialled took over the link's
/// identity, and the dialled peer's link pointed at a dead connection forever.
#[test]
fn a_dialled_peer_that_answers_as_another_node_is_refused() {
    let mut n = node("a", "c");
    n.handle_input(
        Instant::ZERO,
        Input::SetPeers(alloc::vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]),
    )
    .unwrap();
    let owned_by_b: Vec<Bytes> = (0..100u32)
        .map(|i| Bytes::from(format!("k{i}")))
        .filter(|k| n.ring().owner(k).is_some_and(|o| o == "b"))
        .take(2)
        .collect();
    let get = |request, key: &Bytes| Input::Get {
        request: RequestId(request),
        keyspace: Bytes::from_static(KEYSPACE),
        key: key.clone(),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get(1, &owned_by_b[0])).unwrap();
    assert!(drain(&mut n).contains(&Output::Connect {
        peer: Bytes::from_static(b"b"),
        address: Bytes::from_static(b"b")
    }));
    n.handle_input(
        Instant::ZERO,
        Input::Connected {
            conn: ConnId(5),
            peer: Bytes::from_static(b"b"),
            nonce: [0; 16],
            peer_identity: None,
        },
    )
    .unwrap();
    drain(&mut n);
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(5), data: &hello_from("z") })
        .unwrap();
    let outputs = drain(&mut n);
    assert!(outputs.contains(&Output::Event(Event::ConnectionRefused {
        conn: ConnId(5),
        reason: ErrorCode::ClusterMismatch
    })));
    assert!(
        outputs.iter().any(|o| matches!(o, Output::Load { .. })),
        "the get fell back to a local load"
    );
    // After the backoff, a fetch from "b" dials it again instead of using a dead connection.
    n.handle_input(Instant::from_secs(1), get(2, &owned_by_b[1])).unwrap();
    assert!(drain(&mut n).contains(&Output::Connect {
        peer: Bytes::from_static(b"b"),
        address: Bytes::from_static(b"b")
    }));
}

#[test]
fn a_connect_the_driver_never_reports_on_times_out() {
    let mut n = node("a", "c");
    n.handle_input(
        Instant::ZERO,
        Input::SetPeers(alloc::vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]),
    )
    .unwrap();
    let key = (0..100u32)
        .map(|i| format!("k{i}"))
        .find(|k| n.ring().owner(k.as_bytes()).is_some_and(|o| o == "b"))
        .unwrap();
    let input = Input::Get {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from(key),
        timeout: Some(Duration::from_secs(10)),
    };
    n.handle_input(Instant::ZERO, input).unwrap();
    assert!(drain(&mut n).contains(&Output::Connect {
        peer: Bytes::from_static(b"b"),
        address: Bytes::from_static(b"b")
    }));
    // The call's own deadline (300 ms) comes first and falls back to a local load; the connect
    // attempt itself is abandoned at 2 s, so the link is free to dial again.
    n.handle_timeout(Instant::from_secs(2));
    let outputs = drain(&mut n);
    assert!(outputs.iter().any(|o| matches!(o, Output::Load { .. })));
}

#[test]
fn an_accepted_connection_that_never_says_hello_is_closed() {
    let mut n = node("a", "c");
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(3), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    n.handle_timeout(Instant::from_secs(2));
    assert!(drain(&mut n).contains(&Output::Close { conn: ConnId(3) }));
    assert_eq!(
        n.handle_input(Instant::from_secs(2), Input::Received { conn: ConnId(3), data: b"x" }),
        Err(InputError::UnknownConnection(ConnId(3)))
    );
}

#[test]
fn duplicate_request_ids_are_refused_without_changing_state() {
    let mut n = node("a", "c");
    let get = |request| Input::Get {
        request,
        keyspace: Bytes::from_static(KEYSPACE),
        key: Bytes::from_static(b"k"),
        timeout: None,
    };
    n.handle_input(Instant::ZERO, get(RequestId(1))).unwrap();
    assert_eq!(
        n.handle_input(Instant::ZERO, get(RequestId(1))),
        Err(InputError::DuplicateRequest(RequestId(1)))
    );
    assert_eq!(drain(&mut n).iter().filter(|o| matches!(o, Output::Load { .. })).count(), 1);
}

#[test]
fn every_error_crosses_the_wire_with_its_own_code() {
    use crate::wire::{FrameDecoder, Message, WireLimits};
    let errors = [
        Error::NotFound,
        Error::DataSource(Bytes::from_static(b"disk full")),
        Error::TimedOut,
        Error::RateLimited,
        Error::CircuitOpen,
        Error::TooLarge,
        Error::UnknownKeyspace,
        Error::ShuttingDown,
        Error::Overloaded,
        Error::Unavailable,
        Error::BadRequest,
    ];
    let codes: Vec<ErrorCode> = errors.iter().map(|error| error.to_reply_error().code).collect();
    for (index, code) in codes.iter().enumerate() {
        assert!(!codes[..index].contains(code), "{code:?} is used twice");
        assert!(!code.is_connection_level());
    }
    for error in errors {
        let limits = WireLimits::default();
        let mut frame = Vec::new();
        Message::Ack(Err(error.to_reply_error())).encode(7, &mut frame, &limits).unwrap();
        let mut decoder = FrameDecoder::new(limits);
        decoder.push(&frame).unwrap();
        let Some((_, Message::Ack(Err(decoded)))) = decoder.next_frame().unwrap() else {
            panic!("an ack back")
        };
        assert_eq!(Error::from_reply_error(&decoded), error);
    }
}

#[test]
fn an_unknown_error_code_from_a_peer_closes_only_that_connection() {
    // What a node does with a code it does not know (one a later version added): the frame
    // is malformed to it, so it refuses that connection; its calls fail over as on any lost
    // connection (a forwarded write reports the owner unavailable) and nothing panics.
    let mut n = node("a", "c");
    n.handle_input(Instant::ZERO, Input::SetPeers(alloc::vec![Bytes::from_static(b"b")])).unwrap();
    let key = (0..100)
        .map(|i| format!("key-{i}"))
        .find(|k| n.ring().owner(k.as_bytes()).is_some_and(|o| o == "b"))
        .unwrap();
    let put = Input::Put {
        request: RequestId(1),
        keyspace: Bytes::from_static(KEYSPACE),
        entry: Entry { key: Bytes::from(key), value: Bytes::from_static(b"v"), expires_at: None },
        timeout: None,
    };
    n.handle_input(Instant::ZERO, put).unwrap();
    drain(&mut n);
    let connected = Input::Connected {
        conn: ConnId(1),
        peer: Bytes::from_static(b"b"),
        nonce: [0; 16],
        peer_identity: None,
    };
    n.handle_input(Instant::ZERO, connected).unwrap();
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(2), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    let sent = drain(&mut n);
    let request_id = sent
        .iter()
        .find_map(|o| match o {
            Output::Transmit { conn: ConnId(1), data } => {
                let mut decoder = crate::wire::FrameDecoder::new(Default::default());
                decoder.push(data).unwrap();
                core::iter::from_fn(|| decoder.next_frame().unwrap())
                    .find(|(_, message)| matches!(message, crate::wire::Message::Put { .. }))
                    .map(|(header, _)| header.request_id)
            }
            _ => None,
        })
        .expect("the put went to its owner");
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &hello_from("b") })
        .unwrap();
    // An ack whose error code (99) no version of the protocol defines yet.
    let mut ack = Vec::new();
    crate::wire::Message::Ack(Ok(())).encode(request_id, &mut ack, &Default::default()).unwrap();
    let payload = ack.len() - 1;
    ack[payload] = 1; // the "error" tag…
    ack.extend_from_slice(&[99, 0, 0, 0, 0]); // …code 99, empty text
    let declared = u32::try_from(ack.len() - 4).unwrap();
    ack[..4].copy_from_slice(&declared.to_be_bytes());
    n.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: &ack }).unwrap();
    let outputs = drain(&mut n);
    assert!(outputs.contains(&Output::Event(Event::ConnectionRefused {
        conn: ConnId(1),
        reason: ErrorCode::Malformed
    })));
    assert!(outputs.contains(&Output::Close { conn: ConnId(1) }));
    assert!(!outputs.contains(&Output::Close { conn: ConnId(2) }));
    assert!(
        outputs.contains(&Output::Reply {
            request: RequestId(1),
            reply: Reply::Write(Err(Error::Unavailable))
        }),
        "{outputs:?}"
    );
}
