//! groupcache compatibility: nodes fed real HTTP bytes (as Go groupcache writes them), and
//! compat clusters in the deterministic simulation.

use super::*;
use crate::groupcache::{GetReply, parse_get_response};
use crate::http::{HttpLimits, ResponseDecoder};
use crate::sim::{Sim, SimConfig};
use crate::time::Duration;
use alloc::format;
use alloc::string::String;

const GO_OK: &[u8] = include_bytes!("../groupcache/testdata/go-ok.http");
const GO_FAIL: &[u8] = include_bytes!("../groupcache/testdata/go-fail.http");
const GO_KEEPALIVE_PAIR: &[u8] = include_bytes!("../groupcache/testdata/go-keepalive-pair.http");
const GO_REQUEST: &[u8] = include_bytes!("../groupcache/testdata/go-request.http");

const ME: &str = "http://10.0.0.1:8000";
const STEPS: u64 = 2_000_000;

fn node(peers: &[&str]) -> Node {
    let config = NodeConfig::groupcache(ME).with_keyspace(KeyspaceConfig::new("users", 1 << 20));
    let mut node = Node::new(config, Instant::ZERO).expect("a valid compat config");
    let members = peers.iter().map(|peer| Bytes::copy_from_slice(peer.as_bytes())).collect();
    node.handle_input(Instant::ZERO, Input::SetPeers(members)).unwrap();
    drain(&mut node);
    node
}

fn drain(node: &mut Node) -> Vec<Output> {
    core::iter::from_fn(|| node.poll_output()).collect()
}

fn get(node: &mut Node, request: u64, key: &'static [u8]) -> Vec<Output> {
    let input = Input::Get {
        request: RequestId(request),
        keyspace: Bytes::from_static(b"users"),
        key: Bytes::from_static(key),
        timeout: None,
    };
    node.handle_input(Instant::ZERO, input).unwrap();
    drain(node)
}

fn transmitted(outputs: &[Output]) -> Vec<u8> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Transmit { data, .. } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn load_of(outputs: &[Output]) -> Option<(LoadId, Bytes)> {
    outputs.iter().find_map(|output| match output {
        Output::Load { load, key, .. } => Some((*load, key.clone())),
        _ => None,
    })
}

fn reply_of(outputs: &[Output], id: u64) -> Option<&Reply> {
    outputs.iter().find_map(|output| match output {
        Output::Reply { request, reply } if request.0 == id => Some(reply),
        _ => None,
    })
}

fn got(reply: Option<&Reply>) -> Option<&[u8]> {
    match reply {
        Some(Reply::Get(Ok(value))) => Some(&value.bytes),
        _ => None,
    }
}

/// A peer URL that owns `key` on a ring with this node.
fn owning_peer(key: &[u8]) -> String {
    (1..1_000)
        .map(|port| format!("http://10.0.0.2:{port}"))
        .find(|peer| {
            let ring = crate::Ring::with_peers(
                crate::RingScheme::GROUPCACHE,
                [Bytes::from_static(ME.as_bytes()), Bytes::from(peer.clone())],
            )
            .unwrap();
            ring.owner(key).is_some_and(|owner| owner.as_ref() != ME.as_bytes())
        })
        .expect("some port owns the key")
}

fn responses(bytes: &[u8]) -> Vec<GetReply> {
    let mut decoder = ResponseDecoder::new(HttpLimits::default());
    decoder.push(bytes).unwrap();
    core::iter::from_fn(|| decoder.next_response().unwrap())
        .map(|response| parse_get_response(&response).unwrap())
        .collect()
}

#[test]
fn a_compat_node_needs_a_base_url_and_the_groupcache_ring() {
    let bad_id = NodeConfig::groupcache("10.0.0.1:8000");
    assert_eq!(Node::new(bad_id, Instant::ZERO).err(), Some(ConfigError::BadNodeId));
    let mut other_ring = NodeConfig::groupcache(ME);
    other_ring.ring = crate::RingScheme::BALANCED;
    assert_eq!(Node::new(other_ring, Instant::ZERO).err(), Some(ConfigError::IncompatibleRing));
}

#[test]
fn serves_a_go_clients_request_with_a_protobuf_the_go_client_reads() {
    let mut node = node(&[ME]);
    node.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(1), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    // The request in three reads.
    for piece in GO_REQUEST.chunks(50) {
        node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: piece }).unwrap();
    }
    let outputs = drain(&mut node);
    // Go's client wrote the space as '+', which a server keeps: the key Go's server would see.
    let (load, key) = load_of(&outputs).expect("a peer's get loads here");
    assert_eq!(&key[..], b"ada+lovelace+/");
    let result = LoadResult::Value { bytes: Bytes::from_static(b"Ada"), expires_at: None };
    node.handle_input(Instant::ZERO, Input::Loaded { load, result }).unwrap();
    let outputs = drain(&mut node);
    let bytes = transmitted(&outputs);
    assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&bytes));
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { .. })), "keep-alive");
    assert!(matches!(
        &responses(&bytes)[..],
        [GetReply::Value { value, .. }] if &value[..] == b"Ada"
    ));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut node = node(&[ME]);
    node.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(1), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    let requests = b"GET /_groupcache/users/slow HTTP/1.1\r\n\r\n\
        GET /_groupcache/nope/k HTTP/1.1\r\n\r\n\
        GET /_groupcache/users HTTP/1.1\r\nConnection: close\r\n\r\n";
    node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data: requests }).unwrap();
    let outputs = drain(&mut node);
    assert!(transmitted(&outputs).is_empty(), "the first answer is not ready: nothing goes out");
    let (load, _) = load_of(&outputs).unwrap();
    let result = LoadResult::Value { bytes: Bytes::from_static(b"v"), expires_at: None };
    node.handle_input(Instant::ZERO, Input::Loaded { load, result }).unwrap();
    let outputs = drain(&mut node);
    let replies = responses(&transmitted(&outputs));
    assert!(
        matches!(&replies[0], GetReply::Value { value, minute_qps: Some(_) } if &value[..] == b"v"),
        "the value, with the key's rate at this owner: {replies:?}"
    );
    let no_group = Bytes::from_static(b"no such group: nope");
    assert_eq!(
        replies[1..],
        [
            GetReply::Failed { status: 404, message: no_group },
            GetReply::Failed { status: 400, message: Bytes::from_static(b"bad request") },
        ]
    );
    assert!(
        outputs.iter().any(|o| matches!(o, Output::Close { conn: ConnId(1) })),
        "closed after the answer to `Connection: close`"
    );
}

#[test]
fn a_malformed_request_is_answered_400_and_closed() {
    let mut node = node(&[ME]);
    node.handle_input(
        Instant::ZERO,
        Input::Accepted { conn: ConnId(1), nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    let data = b"GET /_groupcache/users/k HTTP/1.1\r\nbad header\r\n\r\n";
    node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data }).unwrap();
    let outputs = drain(&mut node);
    assert!(transmitted(&outputs).starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    assert!(outputs.iter().any(|o| matches!(o, Output::Close { conn: ConnId(1) })));
    assert_eq!(
        node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(1), data }),
        Err(InputError::UnknownConnection(ConnId(1)))
    );
}

/// A node that owns nothing of `key`: it asked the owner to connect. Returns the node, the
/// owner's URL, and the request bytes once connected on `ConnId(7)`.
fn fetching(key: &'static [u8]) -> (Node, String, Vec<u8>) {
    let owner = owning_peer(key);
    let mut node = node(&[ME, &owner]);
    let outputs = get(&mut node, 1, key);
    let connect = outputs.iter().find_map(|output| match output {
        Output::Connect { peer, address } => Some((peer.clone(), address.clone())),
        _ => None,
    });
    let address = owner.trim_start_matches("http://");
    assert_eq!(
        connect,
        Some((Bytes::from(owner.clone()), Bytes::copy_from_slice(address.as_bytes())))
    );
    let peer = Bytes::from(owner.clone());
    node.handle_input(
        Instant::ZERO,
        Input::Connected { conn: ConnId(7), peer, nonce: [0; 16], peer_identity: None },
    )
    .unwrap();
    let request = transmitted(&drain(&mut node));
    (node, owner, request)
}

#[test]
fn fetches_from_a_go_owner_with_escaped_keys_and_reads_its_reply() {
    let (mut node, owner, request) = fetching(b"ada lovelace+/");
    let expected = format!(
        "GET /_groupcache/users/ada%20lovelace%2B%2F HTTP/1.1\r\nHost: {}\r\n\r\n",
        owner.trim_start_matches("http://")
    );
    assert_eq!(String::from_utf8_lossy(&request), expected);
    // Go's reply, in two reads; it says `Connection: close`.
    let (head, tail) = GO_OK.split_at(40);
    for data in [head, tail] {
        node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data }).unwrap();
    }
    let outputs = drain(&mut node);
    assert_eq!(got(reply_of(&outputs, 1)), Some(&b"value of ada lovelace+/"[..]));
    assert!(load_of(&outputs).is_none(), "the owner's value, no load here");
    assert!(outputs.iter().any(|o| matches!(o, Output::Close { conn: ConnId(7) })));
    assert_eq!(node.keyspace_stats(b"users").unwrap().peer_loads, 1);
}

#[test]
fn a_keep_alive_connection_carries_the_next_fetch() {
    let (mut node, _, _) = fetching(b"k1");
    // Go's first answer ends with its value.
    let first_len = GO_KEEPALIVE_PAIR.windows(11).position(|w| w == b"value of k1").unwrap() + 11;
    let data = &GO_KEEPALIVE_PAIR[..first_len];
    node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data }).unwrap();
    let outputs = drain(&mut node);
    assert_eq!(got(reply_of(&outputs, 1)), Some(&b"value of k1"[..]));
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { .. })), "kept alive");
    // The owner of "k1" also gets the next key it owns, on the same connection.
    let owner = node.ring().owner(b"k1").unwrap().clone();
    let other = (0..1_000)
        .map(|i| format!("other-{i}"))
        .find(|key| node.ring().owner(key.as_bytes()) == Some(&owner))
        .unwrap();
    let other: &'static [u8] = alloc::boxed::Box::leak(other.into_bytes().into_boxed_slice());
    let outputs = get(&mut node, 2, other);
    assert!(!outputs.iter().any(|o| matches!(o, Output::Connect { .. })), "no new connection");
    assert!(outputs.iter().any(|o| matches!(o, Output::Transmit { conn: ConnId(7), .. })));
    // Go's second answer (chunked) completes it.
    let data = &GO_KEEPALIVE_PAIR[first_len..];
    node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data }).unwrap();
    let outputs = drain(&mut node);
    assert_eq!(got(reply_of(&outputs, 2)).map(<[u8]>::len), Some(10_000));
}

#[test]
fn a_malformed_reply_fails_the_fetch_and_the_key_loads_here() {
    for garbage in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\x0a\x09v"[..], // not a GetResponse
        b"HTTP/9.9 200 OK\r\n\r\n",
        b"\x00\x01\x02 junk\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let (mut node, _, _) = fetching(b"k");
        node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data: garbage })
            .unwrap();
        let outputs = drain(&mut node);
        assert!(outputs.iter().any(|o| matches!(o, Output::Close { conn: ConnId(7) })));
        let (load, key) = load_of(&outputs).expect("the local fallback");
        assert_eq!(&key[..], b"k");
        let result = LoadResult::Value { bytes: Bytes::from_static(b"local"), expires_at: None };
        node.handle_input(Instant::ZERO, Input::Loaded { load, result }).unwrap();
        assert_eq!(got(reply_of(&drain(&mut node), 1)), Some(&b"local"[..]));
        assert_eq!(node.keyspace_stats(b"users").unwrap().peer_errors, 1);
    }
}

#[test]
fn a_go_owners_load_error_is_final_and_other_statuses_fall_back() {
    let (mut node, _, _) = fetching(b"k");
    node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data: GO_FAIL }).unwrap();
    let outputs = drain(&mut node);
    assert!(load_of(&outputs).is_none(), "the owner's load error is the answer");
    let failed = Error::DataSource(Bytes::from_static(b"source failed for fail1"));
    assert_eq!(reply_of(&outputs, 1), Some(&Reply::Get(Err(failed))));

    let (mut node, _, _) = fetching(b"k");
    let data = b"HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\nno such group: users\n";
    node.handle_input(Instant::ZERO, Input::Received { conn: ConnId(7), data }).unwrap();
    let outputs = drain(&mut node);
    assert!(load_of(&outputs).is_some(), "an owner without the group: load here");
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { .. })), "still a good connection");
}

#[test]
fn a_fetch_that_times_out_closes_its_connection_and_loads_here() {
    let (mut node, _, _) = fetching(b"k");
    let later = Instant::ZERO + Duration::from_secs(2);
    node.handle_timeout(later);
    let outputs = drain(&mut node);
    assert!(outputs.iter().any(|o| matches!(o, Output::Close { conn: ConnId(7) })));
    assert!(load_of(&outputs).is_some());
}

#[test]
fn a_refused_connection_loads_here() {
    let owner = owning_peer(b"k");
    let mut node = node(&[ME, &owner]);
    get(&mut node, 1, b"k");
    let peer = Bytes::from(owner);
    node.handle_input(Instant::ZERO, Input::ConnectFailed { peer }).unwrap();
    assert!(load_of(&drain(&mut node)).is_some());
}

#[test]
fn writes_apply_to_this_node_only() {
    let owner = owning_peer(b"k");
    let mut node = node(&[ME, &owner]);
    let put = Input::Put {
        request: RequestId(1),
        keyspace: Bytes::from_static(b"users"),
        entry: Entry {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"mine"),
            expires_at: None,
        },
        timeout: None,
    };
    node.handle_input(Instant::ZERO, put).unwrap();
    let outputs = drain(&mut node);
    assert_eq!(reply_of(&outputs, 1), Some(&Reply::Write(Ok(()))));
    assert!(!outputs.iter().any(|o| matches!(o, Output::Connect { .. } | Output::Transmit { .. })));
    assert_eq!(got(reply_of(&get(&mut node, 2, b"k"), 2)), Some(&b"mine"[..]));
}

fn compat_sim(nodes: usize) -> Sim {
    Sim::new(SimConfig { nodes, groupcache: true, ..SimConfig::default() })
}

#[test]
fn groupcache_stampede_loads_once() {
    let mut sim = compat_sim(3);
    let requests: Vec<RequestId> = (0..300).map(|i| sim.get(i % 3, "cold key/+%")).collect();
    sim.run_until_idle(STEPS).unwrap();
    assert_eq!(sim.loads("cold key/+%"), 1);
    let values: Vec<Option<Bytes>> =
        requests.iter().map(|r| got(sim.reply(*r)).map(Bytes::copy_from_slice)).collect();
    assert!(values[0].is_some());
    assert!(values.iter().all(|value| *value == values[0]), "one value for every caller");
}

#[test]
fn groupcache_cluster_loads_each_key_once() {
    let mut sim = compat_sim(3);
    let keys: Vec<String> = (0..200).map(|i| format!("key {i}")).collect();
    let requests: Vec<RequestId> =
        keys.iter().enumerate().map(|(i, key)| sim.get(i % 3, key)).collect();
    sim.run_until_idle(STEPS).unwrap();
    for (key, request) in keys.iter().zip(&requests) {
        assert_eq!(sim.loads(key), 1, "{key}");
        assert!(got(sim.reply(*request)).is_some(), "{key}: {:?}", sim.reply(*request));
    }
}

#[test]
fn groupcache_owner_crash_answers_every_get() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        groupcache: true,
        source_delay: (Duration::from_millis(50), Duration::from_millis(60)),
        ..SimConfig::default()
    });
    let key = "crash key";
    let owner = sim.owner(key).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&n| n != owner).collect();
    let requests: Vec<RequestId> = (0..30).map(|i| sim.get(survivors[i % 2], key)).collect();
    sim.advance(Duration::from_millis(20));
    sim.crash(owner);
    sim.run_until_idle(STEPS).unwrap();
    for request in &requests {
        assert!(got(sim.reply(*request)).is_some(), "{:?}", sim.reply(*request));
    }
    let survivor_loads: u64 = survivors.iter().map(|&n| sim.loads_by(n)).sum();
    assert!(survivor_loads <= 2, "{survivor_loads} loads by the survivors");
}
