//! Who may talk to a node, and who may change its state: the cluster secret's proof in the
//! hello, the transport identity, and writes, drops, clears and goodbyes only from current
//! members ([`crate::node::auth`]). The attacker is a raw peer speaking the wire by hand.

use super::*;
use crate::node::SecurityStats;
use crate::node::auth::{Role, Transcript};
use crate::sim::KEYSPACE;
use crate::wire::{FrameDecoder, FrameKind, Message, PutEntry, WireLimits};
use crate::{PeerIdentity, PeerName};
use alloc::vec;

const SECRET: &[u8] = b"sixteen byte key!";
/// The node's nonce on the raw peer's connection.
const NODE_NONCE: [u8; 16] = [0xb0; 16];

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

/// Node "b" of cluster "c" with members "a" and "b", and `secret`.
fn member_b(secret: Option<&'static [u8]>) -> Node {
    let mut config =
        NodeConfig::new("b", "c").with_keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20));
    config.cluster_secret = secret.map(Bytes::from_static);
    let mut n = Node::new(config, Instant::ZERO).unwrap();
    n.handle_input(Instant::ZERO, Input::SetPeers(vec![b(b"a"), b(b"b")])).unwrap();
    drain(&mut n);
    n
}

/// Feeds `message` with `request_id` to `n` on `conn`.
fn send(n: &mut Node, conn: ConnId, request_id: u64, message: &Message) -> Vec<Output> {
    let mut data = Vec::new();
    message.encode(request_id, &mut data, &WireLimits::default()).unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn, data: &data }).unwrap();
    drain(n)
}

/// The frames `outputs` send on `conn`.
fn frames_on(outputs: &[Output], conn: ConnId) -> Vec<(u64, Message)> {
    let mut decoder = FrameDecoder::new(WireLimits::default());
    let mut frames = Vec::new();
    for output in outputs {
        if let Output::Transmit { conn: to, data } = output {
            if *to == conn {
                decoder.push(data).unwrap();
                while let Some((header, message)) = decoder.next_frame().unwrap() {
                    frames.push((header.request_id, message));
                }
            }
        }
    }
    frames
}

fn closed(outputs: &[Output], conn: ConnId) -> bool {
    outputs.contains(&Output::Close { conn })
}

fn refused_with(outputs: &[Output], conn: ConnId, code: ErrorCode) -> bool {
    outputs.contains(&Output::Event(Event::ConnectionRefused { conn, reason: code }))
        && closed(outputs, conn)
}

/// A raw dialler's hello, as `id`, with `nonce`.
fn hello(id: &'static [u8], nonce: Option<[u8; 16]>) -> Message {
    Message::Hello { protocol_version: 1, cluster: b(b"c"), node_id: b(id), nonce }
}

/// The dialler's proof for a connection from `id` (nonce `dialler_nonce`) to "b".
fn dialler_proof(
    secret: &[u8],
    id: &[u8],
    dialler_nonce: &[u8; 16],
    node_nonce: &[u8; 16],
) -> Message {
    let transcript = Transcript {
        cluster: b"c",
        dialler: id,
        acceptor: b"b",
        dialler_nonce,
        acceptor_nonce: node_nonce,
    };
    Message::HelloProof { mac: transcript.prove(secret, Role::Dialler) }
}

/// A raw peer dials `n` on `conn` as `id` and completes the handshake, proving `secret` when
/// the node has one. Returns the node's outputs of the handshake.
fn handshake(n: &mut Node, conn: ConnId, id: &'static [u8], secret: Option<&[u8]>) -> Vec<Output> {
    n.handle_input(Instant::ZERO, Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: None })
        .unwrap();
    let nonce = [conn.0 as u8; 16];
    let mut outputs = send(n, conn, 0, &hello(id, secret.map(|_| nonce)));
    if let Some(secret) = secret {
        let answer = frames_on(&outputs, conn);
        let Some((_, Message::Hello { nonce: Some(node_nonce), .. })) = answer.first() else {
            panic!("the node answers with a hello and its nonce: {answer:?}");
        };
        assert_eq!(*node_nonce, NODE_NONCE);
        let Some((_, Message::HelloProof { mac })) = answer.get(1) else {
            panic!("the acceptor proves first: {answer:?}");
        };
        let transcript = Transcript {
            cluster: b"c",
            dialler: id,
            acceptor: b"b",
            dialler_nonce: &nonce,
            acceptor_nonce: node_nonce,
        };
        assert!(transcript.verify(secret, Role::Acceptor, mac), "the node's proof checks out");
        outputs.extend(send(n, conn, 0, &dialler_proof(secret, id, &nonce, node_nonce)));
    }
    outputs
}

fn put(key: &'static [u8], value: &'static [u8]) -> Message {
    Message::Put {
        keyspace: b(KEYSPACE),
        entry: PutEntry { key: b(key), value: b(value), expires_at: None },
    }
}

/// Sends `message` from the raw peer and answers the node's drops of hot copies, so that a
/// write it honours completes; returns every frame the node sent back.
fn request(n: &mut Node, conn: ConnId, request_id: u64, message: &Message) -> Vec<(u64, Message)> {
    let mut frames = frames_on(&send(n, conn, request_id, message), conn);
    let drops: Vec<u64> = frames
        .iter()
        .filter(|(_, m)| matches!(m, Message::DropHot { .. } | Message::ClearKeyspace { .. }))
        .map(|(id, _)| *id)
        .collect();
    for id in drops {
        frames.extend(frames_on(&send(n, conn, id, &Message::Ack(Ok(()))), conn));
    }
    frames
}

fn items(n: &Node) -> u64 {
    n.keyspace_stats(KEYSPACE).unwrap().cache.main.items
}

fn is_unauthorized(frame: Option<&(u64, Message)>, id: u64) -> bool {
    match frame {
        Some((got, Message::Ack(Err(error)))) => {
            *got == id && error.code == ErrorCode::Unauthorized
        }
        Some((got, Message::AckMany(results))) => {
            *got == id
                && !results.is_empty()
                && results
                    .iter()
                    .all(|r| r.as_ref().is_err_and(|e| e.code == ErrorCode::Unauthorized))
        }
        _ => false,
    }
}

#[test]
fn a_cluster_secret_shorter_than_16_bytes_is_refused() {
    let mut config = NodeConfig::new("a", "c");
    config.cluster_secret = Some(b(b"fifteen bytes!!"));
    assert!(matches!(Node::new(config.clone(), Instant::ZERO), Err(ConfigError::BadClusterSecret)));
    config.cluster_secret = Some(b(SECRET));
    assert!(Node::new(config, Instant::ZERO).is_ok());
}

#[test]
fn two_nodes_with_the_secret_authenticate_each_other() {
    // Two real nodes, wired back to back: "a" dials "b".
    let mut config =
        NodeConfig::new("a", "c").with_keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20));
    config.cluster_secret = Some(b(SECRET));
    let mut a = Node::new(config, Instant::ZERO).unwrap();
    let mut node_b = member_b(Some(SECRET));
    a.handle_input(Instant::ZERO, Input::SetPeers(vec![b(b"a"), b(b"b")])).unwrap();
    let mut from_a = drain(&mut a);
    let (conn_a, conn_b) = (ConnId(1), ConnId(2));
    a.handle_input(
        Instant::ZERO,
        Input::Connected { conn: conn_a, peer: b(b"b"), nonce: [1; 16], peer_identity: None },
    )
    .unwrap();
    node_b
        .handle_input(
            Instant::ZERO,
            Input::Accepted { conn: conn_b, nonce: [2; 16], peer_identity: None },
        )
        .unwrap();
    let mut events = Vec::new();
    from_a.extend(drain(&mut a));
    for _ in 0..8 {
        let mut from_b = Vec::new();
        for output in core::mem::take(&mut from_a) {
            match output {
                Output::Transmit { conn, data } if conn == conn_a => {
                    node_b
                        .handle_input(Instant::ZERO, Input::Received { conn: conn_b, data: &data })
                        .unwrap();
                    from_b.extend(drain(&mut node_b));
                }
                Output::Event(event) => events.push((b'a', event)),
                _ => {}
            }
        }
        for output in from_b {
            match output {
                Output::Transmit { conn, data } if conn == conn_b => {
                    a.handle_input(Instant::ZERO, Input::Received { conn: conn_a, data: &data })
                        .unwrap();
                    from_a.extend(drain(&mut a));
                }
                Output::Event(event) => events.push((b'b', event)),
                _ => {}
            }
        }
    }
    assert!(events.contains(&(b'a', Event::PeerUp { peer: b(b"b") })), "{events:?}");
    assert!(events.contains(&(b'b', Event::PeerUp { peer: b(b"a") })), "{events:?}");
    assert!(
        !events.iter().any(|(_, e)| matches!(e, Event::ConnectionRefused { .. })),
        "{events:?}"
    );
    assert_eq!(node_b.links.get(conn_b).unwrap().identity, Some(b(b"a")));
    assert_eq!(a.links.get(conn_a).unwrap().identity, Some(b(b"b")));
    assert_eq!(a.security_stats(), SecurityStats::default());
}

#[test]
fn a_member_that_proves_the_secret_may_write() {
    let mut n = member_b(Some(SECRET));
    let conn = ConnId(1);
    let outputs = handshake(&mut n, conn, b"a", Some(SECRET));
    assert!(outputs.contains(&Output::Event(Event::PeerUp { peer: b(b"a") })), "{outputs:?}");
    let answer = request(&mut n, conn, 7, &put(b"k", b"v"));
    assert!(answer.contains(&(7, Message::Ack(Ok(())))), "{answer:?}");
    assert_eq!(items(&n), 1);
}

#[test]
fn a_wrong_secret_is_refused_before_any_frame_is_read() {
    let mut n = member_b(Some(SECRET));
    let conn = ConnId(1);
    n.handle_input(Instant::ZERO, Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: None })
        .unwrap();
    let nonce = [9; 16];
    send(&mut n, conn, 0, &hello(b"a", Some(nonce)));
    // The proof with another secret, and a put pipelined behind it.
    let mut data = Vec::new();
    let limits = WireLimits::default();
    dialler_proof(b"another secret!!!", b"a", &nonce, &NODE_NONCE)
        .encode(0, &mut data, &limits)
        .unwrap();
    put(b"k", b"v").encode(5, &mut data, &limits).unwrap();
    n.handle_input(Instant::ZERO, Input::Received { conn, data: &data }).unwrap();
    let outputs = drain(&mut n);
    assert!(refused_with(&outputs, conn, ErrorCode::Unauthenticated), "{outputs:?}");
    assert!(!outputs.iter().any(|o| matches!(o, Output::Event(Event::PeerUp { .. }))));
    assert_eq!(items(&n), 0, "the put behind the bad proof was never read");
    assert_eq!(n.security_stats().refused_unauthenticated, 1);
}

#[test]
fn a_hello_without_a_nonce_or_a_proof_is_refused() {
    let mut n = member_b(Some(SECRET));
    // No nonce: a node without the secret (or an older one).
    let conn = ConnId(1);
    n.handle_input(Instant::ZERO, Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: None })
        .unwrap();
    let outputs = send(&mut n, conn, 0, &hello(b"a", None));
    assert!(refused_with(&outputs, conn, ErrorCode::Unauthenticated), "{outputs:?}");
    // A nonce, then a put where the proof should be.
    let conn = ConnId(2);
    n.handle_input(Instant::ZERO, Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: None })
        .unwrap();
    send(&mut n, conn, 0, &hello(b"a", Some([3; 16])));
    let outputs = send(&mut n, conn, 5, &put(b"k", b"v"));
    assert!(refused_with(&outputs, conn, ErrorCode::Unauthenticated), "{outputs:?}");
    assert_eq!(items(&n), 0);
    assert_eq!(n.security_stats().refused_unauthenticated, 2);
    assert!(n.links.link_mut(b"a").is_none_or(|link| link.conn.is_none()), "no link to \"a\"");
}

#[test]
fn a_replayed_proof_is_refused_on_a_new_connection() {
    let mut n = member_b(Some(SECRET));
    // A good handshake, recorded by an eavesdropper.
    let nonce = [4; 16];
    let first = ConnId(1);
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: first, nonce: NODE_NONCE, peer_identity: None },
    )
    .unwrap();
    send(&mut n, first, 0, &hello(b"a", Some(nonce)));
    let recorded = dialler_proof(SECRET, b"a", &nonce, &NODE_NONCE);
    let outputs = send(&mut n, first, 0, &recorded);
    assert!(outputs.contains(&Output::Event(Event::PeerUp { peer: b(b"a") })));
    // The same hello and proof on a new connection, whose node nonce is another.
    let second = ConnId(2);
    n.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: second, nonce: [0xb1; 16], peer_identity: None },
    )
    .unwrap();
    send(&mut n, second, 0, &hello(b"a", Some(nonce)));
    let outputs = send(&mut n, second, 0, &recorded);
    assert!(refused_with(&outputs, second, ErrorCode::Unauthenticated), "{outputs:?}");
    assert_eq!(n.security_stats().refused_unauthenticated, 1);
}

#[test]
fn an_impostor_without_the_secret_cannot_claim_a_members_id() {
    let mut n = member_b(Some(SECRET));
    // The right cluster label and a member's id, but only a guess at the proof.
    let conn = ConnId(1);
    n.handle_input(Instant::ZERO, Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: None })
        .unwrap();
    let answer = send(&mut n, conn, 0, &hello(b"a", Some([5; 16])));
    // The node's own proof is no use to it: it is the acceptor's.
    let Some((_, Message::HelloProof { mac })) = frames_on(&answer, conn).get(1).cloned() else {
        panic!("the acceptor proves first");
    };
    let outputs = send(&mut n, conn, 0, &Message::HelloProof { mac });
    assert!(refused_with(&outputs, conn, ErrorCode::Unauthenticated), "{outputs:?}");
    assert!(!outputs.iter().any(|o| matches!(o, Output::Event(Event::PeerUp { .. }))));
    assert!(
        n.links.link_mut(b"a").is_none_or(|link| link.conn.is_none()),
        "calls to \"a\" never go to it"
    );

    // Nor can it answer a dial to that member: "b" dials "a", the impostor answers.
    let get =
        Input::Get { request: RequestId(1), keyspace: b(KEYSPACE), key: b(b"k"), timeout: None };
    let dialled = ConnId(2);
    n.handle_input(
        Instant::ZERO,
        Input::Connected { conn: dialled, peer: b(b"a"), nonce: [6; 16], peer_identity: None },
    )
    .unwrap();
    let outputs = drain(&mut n);
    let sent = frames_on(&outputs, dialled);
    assert!(
        matches!(sent.as_slice(), [(0, Message::Hello { nonce: Some(_), .. })]),
        "only the hello before the proof: {sent:?}"
    );
    n.handle_input(Instant::ZERO, get).unwrap();
    let before_proof = frames_on(&drain(&mut n), dialled);
    assert!(
        before_proof.is_empty(),
        "no call goes out before the peer proved the secret: {before_proof:?}"
    );
    send(&mut n, dialled, 0, &hello(b"a", Some([7; 16])));
    let outputs = send(&mut n, dialled, 0, &Message::HelloProof { mac: [0; 32] });
    assert!(refused_with(&outputs, dialled, ErrorCode::Unauthenticated), "{outputs:?}");
    assert_eq!(n.security_stats().refused_unauthenticated, 2);
}

#[test]
fn a_hello_id_other_than_the_transport_identity_is_refused() {
    for secret in [None, Some(SECRET)] {
        let mut n = member_b(secret);
        let conn = ConnId(1);
        let identity = Some(PeerIdentity::for_id(b(b"a")));
        n.handle_input(
            Instant::ZERO,
            Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: identity.clone() },
        )
        .unwrap();
        let outputs = send(&mut n, conn, 0, &hello(b"z", Some([8; 16])));
        assert!(refused_with(&outputs, conn, ErrorCode::Unauthenticated), "{outputs:?}");
        assert_eq!(n.security_stats().refused_unauthenticated, 1);
        // The id the transport named is accepted.
        let conn = ConnId(2);
        n.handle_input(
            Instant::ZERO,
            Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: identity },
        )
        .unwrap();
        let nonce = [9; 16];
        let mut outputs = send(&mut n, conn, 0, &hello(b"a", Some(nonce)));
        if let Some(secret) = secret {
            outputs.extend(send(
                &mut n,
                conn,
                0,
                &dialler_proof(secret, b"a", &nonce, &NODE_NONCE),
            ));
        }
        assert!(outputs.contains(&Output::Event(Event::PeerUp { peer: b(b"a") })), "{outputs:?}");
    }
}

#[test]
fn a_hello_id_that_the_certificates_dns_name_does_not_admit_is_refused() {
    let mut n = member_b(None);
    let identity = PeerIdentity::new(vec![PeerName::Dns(b(b"a"))]);
    let conn = ConnId(1);
    let accepted = Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: Some(identity) };
    n.handle_input(Instant::ZERO, accepted).unwrap();
    // "a" is a member too, but a DNS name admits only its host (and ports on it).
    let outputs = send(&mut n, conn, 0, &hello(b"ab", None));
    assert!(refused_with(&outputs, conn, ErrorCode::Unauthenticated), "{outputs:?}");
    assert_eq!(n.security_stats().refused_unauthenticated, 1);
}

#[test]
fn a_dialled_peer_whose_certificate_names_another_id_is_closed_before_a_byte_is_sent() {
    let mut n = member_b(None);
    let get =
        Input::Get { request: RequestId(1), keyspace: b(KEYSPACE), key: b(b"k"), timeout: None };
    n.handle_input(Instant::ZERO, get).unwrap();
    drain(&mut n);
    // "b" dialled "a"; the transport authenticated a certificate for "z".
    let dialled = ConnId(3);
    let impostor = Some(PeerIdentity::for_id(b(b"z")));
    let connected =
        Input::Connected { conn: dialled, peer: b(b"a"), nonce: [6; 16], peer_identity: impostor };
    n.handle_input(Instant::ZERO, connected).unwrap();
    let outputs = drain(&mut n);
    assert!(frames_on(&outputs, dialled).is_empty(), "no hello, no call: {outputs:?}");
    assert!(outputs.contains(&Output::Close { conn: dialled }), "{outputs:?}");
    assert!(outputs.contains(&Output::Event(Event::ConnectionRefused {
        conn: dialled,
        reason: ErrorCode::Unauthenticated
    })));
    assert_eq!(n.security_stats().refused_unauthenticated, 1);
    assert!(n.links.link_mut(b"a").is_none_or(|link| link.conn.is_none()), "not a link");

    // The certificate of "a" is taken: the hello and the queued call go out.
    let honest = ConnId(4);
    let identity = Some(PeerIdentity::for_id(b(b"a")));
    let connected =
        Input::Connected { conn: honest, peer: b(b"a"), nonce: [7; 16], peer_identity: identity };
    n.handle_input(Instant::ZERO, connected).unwrap();
    let sent = frames_on(&drain(&mut n), honest);
    assert!(matches!(sent.first(), Some((0, Message::Hello { .. }))), "{sent:?}");
    assert_eq!(n.security_stats().refused_unauthenticated, 1);
}

#[test]
fn writes_drops_and_clears_from_a_non_member_are_refused_and_counted() {
    for secret in [None, Some(SECRET)] {
        let mut n = member_b(secret);
        // A value "b" holds, that a clear or a drop would remove.
        let member = ConnId(1);
        handshake(&mut n, member, b"a", secret);
        request(&mut n, member, 1, &put(b"kept", b"v"));
        assert_eq!(items(&n), 1);
        // "z" knows the secret (a node being added, or an old one taken off the list) but is
        // not on the member list.
        let stranger = ConnId(2);
        let outputs = handshake(&mut n, stranger, b"z", secret);
        assert!(outputs.contains(&Output::Event(Event::PeerUp { peer: b(b"z") })));
        let keys = || vec![b(b"kept")];
        let attempts = [
            (10, put(b"k", b"v"), FrameKind::Put),
            (
                11,
                Message::PutMany {
                    keyspace: b(KEYSPACE),
                    entries: vec![PutEntry { key: b(b"k"), value: b(b"v"), expires_at: None }],
                },
                FrameKind::PutMany,
            ),
            (12, Message::Delete { keyspace: b(KEYSPACE), key: b(b"kept") }, FrameKind::Delete),
            (
                13,
                Message::DeleteMany { keyspace: b(KEYSPACE), keys: keys() },
                FrameKind::DeleteMany,
            ),
            (14, Message::DropHot { keyspace: b(KEYSPACE), keys: keys() }, FrameKind::DropHot),
            (15, Message::ClearKeyspace { keyspace: b(KEYSPACE) }, FrameKind::ClearKeyspace),
        ];
        for (count, (id, message, kind)) in attempts.into_iter().enumerate() {
            let outputs = send(&mut n, stranger, id, &message);
            let answer = frames_on(&outputs, stranger);
            assert!(is_unauthorized(answer.first(), id), "{message:?}: {answer:?}");
            let event = Event::RequestRefused {
                conn: stranger,
                peer: b(b"z"),
                frame: kind,
                reason: ErrorCode::Unauthorized,
            };
            assert!(outputs.contains(&Output::Event(event)), "{outputs:?}");
            assert!(!closed(&outputs, stranger), "the connection stays open");
            assert_eq!(n.security_stats().refused_unauthorized, count as u64 + 1);
        }
        assert_eq!(items(&n), 1, "nothing changed: the value is still there, no other stored");
        let get = Input::Get {
            request: RequestId(1),
            keyspace: b(KEYSPACE),
            key: b(b"kept"),
            timeout: None,
        };
        n.handle_input(Instant::ZERO, get).unwrap();
        let outputs = drain(&mut n);
        assert!(
            outputs.iter().any(|o| matches!(o, Output::Reply { reply: Reply::Get(Ok(value)), .. } if value.bytes == "v")),
            "{outputs:?}"
        );
        // The stranger's gets are still served.
        let get = Message::Get { keyspace: b(KEYSPACE), key: b(b"kept"), timeout_ms: 1_000 };
        let answer = frames_on(&send(&mut n, stranger, 20, &get), stranger);
        assert!(
            matches!(
                answer.first(),
                Some((20, Message::GetReply(crate::wire::GetOutcome::Found(_))))
            ),
            "{answer:?}"
        );
    }
}

#[test]
fn a_goodbye_from_a_non_member_is_ignored_and_counted_and_one_from_a_member_is_its_own() {
    let mut n = member_b(None);
    n.handle_input(Instant::ZERO, Input::SetPeers(vec![b(b"a"), b(b"b"), b(b"d")])).unwrap();
    drain(&mut n);
    assert_eq!(n.ring().len(), 3);
    // A stranger says goodbye, one way and as a request: nothing leaves.
    let stranger = ConnId(1);
    handshake(&mut n, stranger, b"z", None);
    let outputs = send(&mut n, stranger, 0, &Message::Leaving);
    assert!(frames_on(&outputs, stranger).is_empty(), "a one-way goodbye has no answer");
    let answer = frames_on(&send(&mut n, stranger, 9, &Message::Leaving), stranger);
    assert!(is_unauthorized(answer.first(), 9), "{answer:?}");
    assert_eq!(n.security_stats().refused_unauthorized, 2);
    assert_eq!(n.ring().len(), 3, "no member left");
    // A member's goodbye takes only itself off the ring.
    let member = ConnId(2);
    handshake(&mut n, member, b"a", None);
    let answer = frames_on(&send(&mut n, member, 10, &Message::Leaving), member);
    assert!(answer.contains(&(10, Message::Ack(Ok(())))), "{answer:?}");
    assert!(!n.ring().contains(b"a") && n.ring().contains(b"d") && n.ring().contains(b"b"));
    assert_eq!(n.security_stats().refused_unauthorized, 2);
}

#[test]
fn a_member_taken_off_the_list_loses_its_write_rights_on_its_open_connection() {
    for secret in [None, Some(SECRET)] {
        let mut n = member_b(secret);
        let conn = ConnId(1);
        handshake(&mut n, conn, b"a", secret);
        let answer = request(&mut n, conn, 1, &put(b"k1", b"v"));
        assert!(answer.contains(&(1, Message::Ack(Ok(())))), "{answer:?}");
        n.handle_input(Instant::ZERO, Input::SetPeers(vec![b(b"b")])).unwrap();
        drain(&mut n);
        let answer = request(&mut n, conn, 2, &put(b"k2", b"v"));
        assert!(is_unauthorized(answer.first(), 2), "{answer:?}");
        assert_eq!(items(&n), 1, "only the first put was stored");
        assert_eq!(n.security_stats().refused_unauthorized, 1);
        // Back on the list, it may write again.
        n.handle_input(Instant::ZERO, Input::SetPeers(vec![b(b"a"), b(b"b")])).unwrap();
        drain(&mut n);
        let answer = request(&mut n, conn, 3, &put(b"k3", b"v"));
        assert!(answer.contains(&(3, Message::Ack(Ok(())))), "{answer:?}");
    }
}

#[test]
fn before_its_handshake_a_peer_cannot_make_the_node_buffer_a_frame_larger_than_a_hello() {
    let over = WireLimits::default().for_handshake().max_frame + 1;
    for secret in [None, Some(SECRET)] {
        let mut n = member_b(secret);
        let conn = ConnId(1);
        let accepted = Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: None };
        n.handle_input(Instant::ZERO, accepted).unwrap();
        drain(&mut n);
        // The length prefix alone of a frame one byte over a handshake's is refused.
        let data = over.to_be_bytes();
        n.handle_input(Instant::ZERO, Input::Received { conn, data: &data }).unwrap();
        assert!(closed(&drain(&mut n), conn), "secret {secret:?}: closed at the prefix");
    }
    // Once the handshake completed, the node's own limits apply: a put far larger is taken.
    for secret in [None, Some(SECRET)] {
        let mut n = member_b(secret);
        let conn = ConnId(2);
        handshake(&mut n, conn, b"a", secret);
        let value = Bytes::from(vec![7; over as usize * 64]);
        let entry = PutEntry { key: b(b"k"), value, expires_at: None };
        let frames = request(&mut n, conn, 5, &Message::Put { keyspace: b(KEYSPACE), entry });
        assert!(
            frames.contains(&(5, Message::Ack(Ok(())))),
            "secret {secret:?}: the put is taken: {frames:?}"
        );
    }
}

#[test]
fn a_peer_that_does_not_finish_its_hello_in_time_is_refused_counted_and_reported() {
    for secret in [None, Some(SECRET)] {
        let mut n = member_b(secret);
        let (silent, half) = (ConnId(1), ConnId(2));
        for conn in [silent, half] {
            let accepted = Input::Accepted { conn, nonce: NODE_NONCE, peer_identity: None };
            n.handle_input(Instant::ZERO, accepted).unwrap();
        }
        // One says nothing; the other sends half a hello.
        let mut data = Vec::new();
        hello(b"a", secret.map(|_| [1; 16])).encode(0, &mut data, &WireLimits::default()).unwrap();
        let half_hello = &data[..data.len() / 2];
        n.handle_input(Instant::ZERO, Input::Received { conn: half, data: half_hello }).unwrap();
        drain(&mut n);
        let hello_by = Instant::ZERO + NodeConfig::new("b", "c").connect_timeout;
        n.handle_timeout(hello_by + core::time::Duration::from_millis(1));
        let outputs = drain(&mut n);
        for conn in [silent, half] {
            assert!(refused_with(&outputs, conn, ErrorCode::TimedOut), "{conn:?}: {outputs:?}");
        }
        assert_eq!(n.security_stats().hello_timeouts, 2, "secret {secret:?}");
    }
}
