//! The scenarios: one body each, run on whatever cluster a [`ClusterSpec`] describes.
//!
//! Every scenario starts its own cluster on free loopback ports, drives it from its own tokio
//! runtime ([`drive`]) and bounds every wait, so that a hang fails the test instead of
//! blocking it, and scenarios can run in parallel.

use std::time::{Duration, Instant};

use bytes::Bytes;
use herdcache_proto::{
    Error, FRAME_HEADER_LEN, Frame, Message, PROTOCOL_VERSION, Path, Value, WireLimits,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::harness::{CLUSTER, Cluster, ClusterSpec, Down, default_tune, drive, within};
use crate::source::value_of;

/// The longest a single call may take before the test fails: well above the nodes' request
/// timeout (5 s), so that a node's own timeout shows as its error, not as a hang.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// The nodes' request timeout ([`herdcache_proto::NodeConfig::new`]'s default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Gets `key` from member `i`, bounded.
async fn get(cluster: &Cluster, i: usize, key: &str) -> Result<Value, Error> {
    within(CALL_LIMIT, &format!("get {key} from node {i}"), cluster.node(i).get(key)).await
}

/// Gets `key` from every member; each must answer `expected`.
async fn expect_everywhere(cluster: &Cluster, key: &str, expected: &Bytes, when: &str) {
    for i in 0..cluster.len() {
        let value = get(cluster, i, key).await;
        let bytes = value.map(|value| value.bytes);
        assert_eq!(bytes.as_ref(), Ok(expected), "{when}: {key} from node {i}");
    }
}

/// Waits (bounded) until `condition` holds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    within(CALL_LIMIT, what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Waits (bounded) until member `i` counted `issued[i]` gets: they are in progress there.
async fn until_gets_started(cluster: &Cluster, issued: &[usize]) {
    until("every get reaches its node", || {
        issued.iter().enumerate().all(|(i, &issued)| {
            let gets = cluster.node(i).stats().map_or(0, |stats| stats.gets);
            gets >= u64::try_from(issued).unwrap_or(u64::MAX)
        })
    })
    .await;
}

/// Awaits a spawned task, bounded; a panic in it fails the test.
async fn join<T>(what: &str, task: JoinHandle<T>) -> T {
    within(CALL_LIMIT, what, task).await.unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// 1000 concurrent gets of one cold key, spread over every member, while the source takes
/// 50 ms: exactly one data-source call in the whole cluster (at the key's owner), and every
/// get answers that one value.
pub fn one_cold_key_stampede(spec: &ClusterSpec) {
    drive(async {
        let cluster = Cluster::start(spec, Duration::from_millis(50), default_tune).await;
        let key = "cold";
        let gets: Vec<_> =
            (0..1000).map(|i| tokio::spawn(cluster.node(i % cluster.len()).get(key))).collect();
        let expected = value_of(key, 0);
        let mut paths = std::collections::BTreeMap::<String, usize>::new();
        for (i, get) in gets.into_iter().enumerate() {
            let value = join("stampede get", get).await;
            if let Ok(value) = &value {
                *paths.entry(format!("{:?}", value.path)).or_default() += 1;
            }
            let bytes = value.map(|value| value.bytes);
            assert_eq!(bytes.as_ref(), Ok(&expected), "get {i} (node {})", i % cluster.len());
        }
        eprintln!("stampede ({} nodes): paths {paths:?}", cluster.len());
        assert_eq!(cluster.total_loads(), 1, "one data-source call in the cluster");
        let owner = cluster.owner(key);
        assert_eq!(cluster.source(owner).loads_of(key), 1, "the owner (node {owner}) loaded it");
        cluster.shutdown().await;
    });
}

/// The same stampede (the source taking 300 ms), with the key's owner taken down (`how`)
/// while it loads: every get on the other members still answers the value. A killed owner's
/// fetchers each fall back to one load of their own (one per member, not one per caller); an
/// owner that leaves gracefully finishes its load, so the cluster loads once.
pub fn one_cold_key_stampede_owner_down(spec: &ClusterSpec, how: Down) {
    drive(async {
        let cluster = Cluster::start(spec, Duration::from_millis(300), default_tune).await;
        let n = cluster.len();
        let key = "cold";
        let owner = cluster.owner(key);
        let gets: Vec<_> =
            (0..1000).map(|i| (i % n, tokio::spawn(cluster.node(i % n).get(key)))).collect();
        // Every get reached its node, the owner is loading (300 ms), and then it goes down.
        let issued: Vec<usize> = (0..n).map(|i| (0..1000).filter(|j| j % n == i).count()).collect();
        until_gets_started(&cluster, &issued).await;
        until("the owner starts loading", || cluster.source(owner).loads_of(key) > 0).await;
        // And every other member's fetch (one per member: they coalesce) is at the owner.
        let fetchers = u64::try_from(n - 1).unwrap_or(u64::MAX);
        until("every member's fetch reaches the owner", || {
            cluster.node(owner).stats().is_some_and(|stats| stats.server_requests >= fetchers)
        })
        .await;
        cluster.take_down(owner, how).await;
        let expected = value_of(key, 0);
        for (i, get) in gets {
            let result = join("stampede get", get).await;
            if i == owner && how == Down::Kill {
                continue; // Answered (`join` checked), most likely `ShuttingDown`.
            }
            let bytes = result.map(|value| value.bytes);
            assert_eq!(
                bytes.as_ref(),
                Ok(&expected),
                "get from node {i} (owner {owner} down: {how:?})"
            );
        }
        let loads: Vec<usize> = (0..n).map(|i| cluster.source(i).loads_of(key)).collect();
        match how {
            Down::Kill => assert!(
                loads.iter().all(|&loads| loads <= 1),
                "at most one load per member: {loads:?}"
            ),
            Down::Stop => {
                assert_eq!(cluster.total_loads(), 1, "one load in the cluster: {loads:?}")
            }
        }
        cluster.shutdown().await;
    });
}

/// 200 keys spread over their owners: each loaded once, by its owner, so every member loads
/// some; a put through one member is then seen by every member, and a delete through another
/// makes every member see the value reloaded from the source.
pub fn keys_spread_put_and_delete(spec: &ClusterSpec) {
    drive(async {
        let cluster = Cluster::start(spec, Duration::ZERO, default_tune).await;
        let n = cluster.len();
        let keys: Vec<String> = (0..200).map(|k| format!("spread-{k}")).collect();

        // Cold gets, each through some member, all at once.
        let gets: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(k, key)| tokio::spawn(cluster.node(k % n).get(key)))
            .collect();
        for (key, get) in keys.iter().zip(gets) {
            let bytes = join("cold get", get).await.map(|value| value.bytes);
            assert_eq!(bytes, Ok(value_of(key, 0)), "{key}");
        }
        for key in &keys {
            let owner = cluster.owner(key);
            assert_eq!(cluster.loads_of(key), 1, "{key} loaded once in the cluster");
            assert_eq!(cluster.source(owner).loads_of(key), 1, "{key} loaded by its owner {owner}");
        }
        let loading: Vec<usize> = (0..n).map(|i| cluster.source(i).loads()).collect();
        assert!(loading.iter().all(|&loads| loads > 0), "every member owns some keys: {loading:?}");
        for key in &keys {
            expect_everywhere(&cluster, key, &value_of(key, 0), "warm").await;
        }
        assert_eq!(cluster.total_loads(), keys.len(), "warm gets are served from the caches");

        // Put through one member, then every member sees it; keys in parallel.
        let cluster = std::sync::Arc::new(cluster);
        let puts: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(k, key)| {
                let (cluster, key) = (std::sync::Arc::clone(&cluster), key.clone());
                tokio::spawn(async move {
                    let put = Bytes::from(format!("put:{key}"));
                    let through = (k + 1) % cluster.len();
                    let stored =
                        within(CALL_LIMIT, "put", cluster.node(through).put(&key, put.clone()))
                            .await;
                    assert_eq!(stored, Ok(()), "put {key} through node {through}");
                    expect_everywhere(&cluster, &key, &put, "after the put").await;
                })
            })
            .collect();
        for put in puts {
            join("put then get", put).await;
        }
        assert_eq!(cluster.total_loads(), keys.len(), "a put is served without a load");

        // Delete through another member; the source has moved on, so a reload is visible.
        let deletes: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(k, key)| {
                let (cluster, key) = (std::sync::Arc::clone(&cluster), key.clone());
                tokio::spawn(async move {
                    let through = (k + 2) % cluster.len();
                    let deleted =
                        within(CALL_LIMIT, "delete", cluster.node(through).delete(&key)).await;
                    assert_eq!(deleted, Ok(()), "delete {key} through node {through}");
                })
            })
            .collect();
        for delete in deletes {
            join("delete", delete).await;
        }
        let version = cluster.bump_version();
        let reads: Vec<_> = keys
            .iter()
            .map(|key| {
                let (cluster, key) = (std::sync::Arc::clone(&cluster), key.clone());
                tokio::spawn(async move {
                    expect_everywhere(&cluster, &key, &value_of(&key, version), "after the delete")
                        .await;
                })
            })
            .collect();
        for read in reads {
            join("get after delete", read).await;
        }
        for key in &keys {
            assert_eq!(cluster.loads_of(key), 2, "{key}: loaded again once after the delete");
        }
        let Ok(cluster) = std::sync::Arc::try_unwrap(cluster) else { panic!("every task is done") };
        hot_keys_put_and_delete(&cluster).await;
        cluster.shutdown().await;
    });
}

/// Keys read often enough that the other members mirror them in their hot caches: a put and
/// a delete must still be seen by every member (the owner drops every hot copy before it
/// acknowledges the write).
async fn hot_keys_put_and_delete(cluster: &Cluster) {
    let n = cluster.len();
    let keys: Vec<String> =
        (0..n).flat_map(|owner| cluster.keys_owned_by(owner, "hot", 1)).collect();
    let mut hot_hits = 0;
    for round in 0..3 {
        let version = cluster.version();
        for _ in 0..40 {
            for key in &keys {
                for i in 0..n {
                    let value = get(cluster, i, key).await.expect("a value");
                    assert_eq!(value.bytes, value_of(key, version), "{key} from node {i}");
                    hot_hits += usize::from(value.path == Path::HotHit);
                }
            }
        }
        for (k, key) in keys.iter().enumerate() {
            let owner = cluster.owner(key);
            let through = (owner + 1 + k) % n;
            let put = Bytes::from(format!("put:{key}:{round}"));
            let stored =
                within(CALL_LIMIT, "put", cluster.node(through).put(key, put.clone())).await;
            assert_eq!(stored, Ok(()), "put {key} through node {through}");
            expect_everywhere(cluster, key, &put, "after a put of a hot key").await;
        }
        let version = cluster.bump_version();
        for (k, key) in keys.iter().enumerate() {
            let through = (cluster.owner(key) + 2 + k) % n;
            let deleted = within(CALL_LIMIT, "delete", cluster.node(through).delete(key)).await;
            assert_eq!(deleted, Ok(()), "delete {key} through node {through}");
            expect_everywhere(cluster, key, &value_of(key, version), "after a delete of a hot key")
                .await;
        }
    }
    eprintln!("hot keys ({n} nodes): {hot_hits} hot hits");
    assert!(hot_hits > 0, "the members mirror hot keys");
}

/// A member taken down (`how`: killed, or stopped gracefully) while loads of its keys (and
/// others') are in flight, the source taking 300 ms: every get on every surviving member is
/// answered within the request timeout, with the right value (fetches from a dead owner fall
/// back to a local load; a leaving owner finishes what it started).
pub fn node_down_mid_load(spec: &ClusterSpec, how: Down) {
    drive(async {
        let cluster = Cluster::start(spec, Duration::from_millis(300), default_tune).await;
        let n = cluster.len();
        let victim = 1;
        let keys: Vec<String> = (0..n)
            .flat_map(|owner| cluster.keys_owned_by(owner, &format!("inflight-{owner}"), 6))
            .collect();

        let started = Instant::now();
        let mut gets = Vec::new();
        for i in 0..n {
            for key in &keys {
                let get = cluster.node(i).get(key);
                gets.push((
                    i,
                    key.clone(),
                    tokio::spawn(async move { (get.await, started.elapsed()) }),
                ));
            }
        }
        // Every get reached its node and loads are under way (they take 300 ms); then the
        // victim goes down.
        until_gets_started(&cluster, &vec![keys.len(); n]).await;
        until("the victim starts loading", || cluster.source(victim).loads() > 0).await;
        cluster.take_down(victim, how).await;

        let (mut answered, mut values, mut errors) = (0, 0, Vec::new());
        for (i, key, get) in gets {
            let (result, elapsed) = join("get around a killed node", get).await;
            if i == victim {
                // Its callers get an answer too (`join` checked): after a kill most likely
                // `ShuttingDown`; a graceful stop finishes the gets it had started.
                if how == Down::Stop {
                    let bytes = result.map(|value| value.bytes);
                    assert_eq!(bytes, Ok(value_of(&key, 0)), "{key} from the stopping node {i}");
                }
                continue;
            }
            answered += 1;
            assert!(
                elapsed <= REQUEST_TIMEOUT + Duration::from_secs(1),
                "{key} from node {i}: {elapsed:?}"
            );
            match result {
                Ok(value) => {
                    assert_eq!(value.bytes, value_of(&key, 0), "{key} from node {i}");
                    values += 1;
                }
                Err(error) => errors.push(format!(
                    "{key} (owner {}) from node {i}: {error:?}",
                    cluster.owner(&key)
                )),
            }
        }
        eprintln!(
            "{how:?} mid-load ({n} nodes): {answered} gets on survivors answered, {values} with values, {} errors",
            errors.len()
        );
        assert!(errors.is_empty(), "survivors answer every get with a value: {errors:#?}");
        let fallbacks: usize = (0..n)
            .filter(|&i| i != victim)
            .map(|i| {
                keys.iter()
                    .filter(|key| cluster.owner(key) == victim)
                    .map(|key| cluster.source(i).loads_of(key))
                    .sum::<usize>()
            })
            .sum();
        if how == Down::Kill {
            assert!(fallbacks > 0, "the survivors loaded the dead owner's keys themselves");
        }

        // The survivors keep serving every key (some load again: after a leave the victim's
        // keys have new owners).
        cluster.set_delay(Duration::ZERO);
        for i in (0..n).filter(|&i| i != victim) {
            for key in &keys {
                let bytes = get(&cluster, i, key).await.map(|value| value.bytes);
                assert_eq!(bytes, Ok(value_of(key, 0)), "{key} from node {i} after the kill");
            }
        }
        cluster.shutdown().await;
    });
}

/// Bytes from a fixed seed: garbage, the same every run.
fn garbage(len: usize) -> Vec<u8> {
    let mut rng = herdcache_workload::Rng::new(0x6a7b_a6e0);
    (0..len).map(|_| rng.next_u64().to_le_bytes()[0]).collect()
}

/// Connects to `addr`, writes `bytes` (a write the node cuts short counts as closed), and
/// returns how long the node took to close the connection, and what it sent before.
async fn intrude(addr: std::net::SocketAddr, bytes: &[u8]) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut stream = within(CALL_LIMIT, "intruder connects", TcpStream::connect(addr))
        .await
        .expect("the peer port accepts");
    let mut received = Vec::new();
    if stream.write_all(bytes).await.is_err() {
        return (started.elapsed(), received);
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the node closes a connection that sent {} bytes of garbage",
        bytes.len()
    );
    (started.elapsed(), received)
}

/// The messages in `bytes`, as far as they parse.
fn messages(bytes: &[u8]) -> Vec<Message> {
    let limits = WireLimits::default();
    let mut bytes = Bytes::copy_from_slice(bytes);
    let mut messages = Vec::new();
    while let Ok(frame) = Frame::new_checked(bytes.clone(), &limits) {
        let len = frame.frame_len();
        match Message::parse(&frame, &limits) {
            Ok(message) => messages.push(message),
            Err(_) => break,
        }
        bytes = bytes.slice(len..);
    }
    messages
}

/// Garbage on a member's peer port (random bytes, an HTTP request, a stalled half header, a
/// valid hello followed by garbage):
/// the node closes that connection within a few seconds, and every member keeps serving,
/// including the fetches that go through the attacked member.
pub fn garbage_on_the_peer_port(spec: &ClusterSpec) {
    drive(async {
        let cluster = Cluster::start(spec, Duration::ZERO, default_tune).await;
        let n = cluster.len();
        let target = 1;
        // The peer connections exist before the garbage arrives.
        let warm: Vec<String> =
            (0..n).flat_map(|owner| cluster.keys_owned_by(owner, "warm", 2)).collect();
        for key in &warm {
            expect_everywhere(&cluster, key, &value_of(key, 0), "warm").await;
        }

        let addr = cluster.node(target).addr();
        let http = b"GET /_groupcache/ks/key HTTP/1.1\r\nHost: herdcache\r\nConnection: keep-alive\r\n\r\n";
        // A stranger that speaks the protocol's hello (in this cluster, under an id no member
        // knows) before it turns to garbage.
        let mut hello_then_garbage = Vec::new();
        let hello = Message::Hello {
            protocol_version: u16::from(PROTOCOL_VERSION),
            cluster: Bytes::from_static(CLUSTER.as_bytes()),
            node_id: Bytes::from_static(b"127.0.0.1:9"),
            nonce: None,
        };
        hello.encode(0, &mut hello_then_garbage, &WireLimits::default()).expect("a hello encodes");
        let mut hello_then_bad_frames = hello_then_garbage.clone();
        hello_then_garbage.extend_from_slice(&garbage(4096));
        // …or to frames that are framed right but do not parse: a get whose payload is junk.
        let get = Message::Get {
            keyspace: Bytes::from_static(b"ks"),
            key: Bytes::from_static(b"some-key"),
            timeout_ms: 1000,
        };
        let start = hello_then_bad_frames.len();
        get.encode(7, &mut hello_then_bad_frames, &WireLimits::default()).expect("a get encodes");
        for byte in &mut hello_then_bad_frames[start + FRAME_HEADER_LEN..] {
            *byte = 0xff;
        }
        let intruders = [
            ("random bytes", tokio::spawn(async move { intrude(addr, &garbage(64 << 10)).await })),
            ("an HTTP request", tokio::spawn(async move { intrude(addr, http).await })),
            ("half a header", tokio::spawn(async move { intrude(addr, &[0, 0]).await })),
            (
                "a hello, then garbage",
                tokio::spawn(async move { intrude(addr, &hello_then_garbage).await }),
            ),
            (
                "a hello, then a junk get",
                tokio::spawn(async move { intrude(addr, &hello_then_bad_frames).await }),
            ),
        ];
        // Meanwhile the cluster serves, through the target too.
        let during: Vec<String> =
            (0..n).flat_map(|owner| cluster.keys_owned_by(owner, "during", 3)).collect();
        for key in &during {
            expect_everywhere(&cluster, key, &value_of(key, 0), "while under garbage").await;
        }
        for (what, intruder) in intruders {
            let (took, received) = join(what, intruder).await;
            let answers = messages(&received);
            eprintln!("garbage ({n} nodes): {what} closed after {took:?}, answered {answers:?}");
            if what.starts_with("a hello") {
                assert!(
                    matches!(answers.first(), Some(Message::Hello { .. })),
                    "the node accepted the hello: {answers:?}"
                );
            }
        }

        // And afterwards: keys of every owner, from every member (the target fetches from the
        // others, the others fetch the target's keys from it).
        let after: Vec<String> =
            (0..n).flat_map(|owner| cluster.keys_owned_by(owner, "after", 5)).collect();
        for key in &after {
            expect_everywhere(&cluster, key, &value_of(key, 0), "after the garbage").await;
        }
        for key in after.iter().chain(&during) {
            assert_eq!(
                cluster.loads_of(key),
                1,
                "{key}: one load, at its owner (the peers are connected)"
            );
        }
        assert!(cluster.source(target).loads() > 0, "the target still loads its keys");
        cluster.shutdown().await;
    });
}

/// Waits until member `from` fetches a fresh key owned by `owner` from it (the connection
/// was re-established); returns how long that took. Each try uses a new key, since a failed
/// fetch makes `from` load and cache the key itself.
async fn until_fetched_from(cluster: &Cluster, from: usize, owner: usize, tag: &str) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    for key in (0..)
        .map(|attempt| format!("{tag}-{from}-{attempt}"))
        .filter(|key| cluster.owner(key) == owner)
    {
        let value = get(cluster, from, &key).await.expect("a value");
        assert_eq!(value.bytes, value_of(&key, 0), "{key}");
        if value.path == Path::PeerFetch && cluster.source(owner).loads_of(&key) == 1 {
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "node {from} never fetched from node {owner} again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!("the key sequence is endless")
}

/// A member taken down (`how`) and restarted on the same address with the same peers: while
/// it is down the others answer its keys (and agree on writes made meanwhile); once back it serves its own keys and the others',
/// the others fetch its keys from it again (after their reconnect backoff), and writes reach
/// every member.
pub fn restarted_node_rejoins(spec: &ClusterSpec, how: Down) {
    drive(async {
        let mut cluster = Cluster::start(spec, Duration::ZERO, default_tune).await;
        let n = cluster.len();
        let victim = 0;
        let before: Vec<String> =
            (0..n).flat_map(|owner| cluster.keys_owned_by(owner, "before", 3)).collect();
        for key in &before {
            expect_everywhere(&cluster, key, &value_of(key, 0), "before").await;
        }

        cluster.take_down(victim, how).await;
        // Down: the others answer every key, the victim's included (a failed fetch loads locally).
        let down = cluster.keys_owned_by(victim, "down", 5);
        for i in 1..n {
            for key in down.iter().chain(&before) {
                let bytes = get(&cluster, i, key).await.map(|value| value.bytes);
                assert_eq!(
                    bytes,
                    Ok(value_of(key, 0)),
                    "{key} from node {i} while node {victim} is down"
                );
            }
        }

        // A write while a member is down. After a stop the member is off every ring and the
        // write succeeds; after a kill it is still on the rings, the owner cannot make it drop
        // its copy, and the write may fail (`Unavailable`), applied or not: the survivors
        // agree on the value either way.
        for owner in 1..n {
            for key in cluster.keys_owned_by(owner, "write-down", 1) {
                let written = Bytes::from(format!("put:{key}"));
                let put = cluster.node(1).put(&key, written.clone());
                let result = within(CALL_LIMIT, "put while down", put).await;
                match (how, &result) {
                    (Down::Stop, Ok(())) | (Down::Kill, Ok(()) | Err(Error::Unavailable)) => {}
                    _ => panic!("put {key} while node {victim} is down ({how:?}): {result:?}"),
                }
                let mut seen = Vec::new();
                for i in 1..n {
                    seen.push(get(&cluster, i, &key).await.map(|value| value.bytes));
                }
                assert!(
                    seen.iter().all(|value| *value == seen[0]),
                    "{key}: the survivors disagree: {seen:?}"
                );
                if result.is_ok() {
                    assert_eq!(seen[0], Ok(written), "{key}: a write that succeeded is seen");
                }
            }
        }
        // Keep asking for its keys for a while, so that the others' reconnect backoff grows.
        let backoff = cluster.keys_owned_by(victim, "backoff", 20);
        let until = Instant::now() + Duration::from_secs(1);
        for key in backoff.iter().cycle() {
            if Instant::now() >= until {
                break;
            }
            for i in 1..n {
                let bytes = get(&cluster, i, key).await.map(|value| value.bytes);
                assert_eq!(
                    bytes,
                    Ok(value_of(key, 0)),
                    "{key} from node {i} while node {victim} is down"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        cluster.restart(victim, how).await;
        // The others route the victim's keys to it again: they dial it (after their reconnect
        // backoff) before it has any reason to dial them.
        for i in 1..n {
            let took = until_fetched_from(&cluster, i, victim, "rejoin").await;
            eprintln!(
                "restart after {how:?} ({n} nodes): node {i} fetches from the restarted node after {took:?}"
            );
        }
        // Through the restarted node: its own keys (it loads them) and the others' (fetched).
        for key in cluster.keys_owned_by(victim, "own", 5) {
            let value = get(&cluster, victim, &key).await.expect("a value");
            assert_eq!((value.bytes, value.path), (value_of(&key, 0), Path::Load), "{key}");
        }
        for owner in 1..n {
            for key in cluster.keys_owned_by(owner, "theirs", 3) {
                let value = get(&cluster, victim, &key).await.expect("a value");
                assert_eq!(
                    (value.bytes, value.path),
                    (value_of(&key, 0), Path::PeerFetch),
                    "{key}"
                );
                assert_eq!(cluster.source(owner).loads_of(&key), 1, "{key}: loaded by its owner");
            }
        }
        // Writes reach every member: a put of a key the others loaded while the victim was
        // down is seen everywhere, as is a delete.
        for (k, key) in down.iter().enumerate() {
            let put = Bytes::from(format!("put:{key}"));
            let through = 1 + k % (n - 1);
            let stored =
                within(CALL_LIMIT, "put", cluster.node(through).put(key, put.clone())).await;
            assert_eq!(stored, Ok(()), "put {key} through node {through}");
            expect_everywhere(&cluster, key, &put, "after the put").await;
        }
        let version = cluster.bump_version();
        for (k, key) in before.iter().enumerate() {
            let through = k % n;
            let deleted = within(CALL_LIMIT, "delete", cluster.node(through).delete(key)).await;
            assert_eq!(deleted, Ok(()), "delete {key} through node {through}");
            expect_everywhere(&cluster, key, &value_of(key, version), "after the delete").await;
        }
        cluster.shutdown().await;
    });
}

/// How long a killed member may take to be found down by every survivor with the default
/// liveness settings, counted until a write through a survivor succeeds again: the core's
/// bound is `down_after + heartbeat_interval` = 2.25 s; the rest is a loaded 2-core machine's
/// slack.
pub const DETECTION_BOUND: Duration = Duration::from_secs(3);

/// Puts a fresh key through each member of `up` until the put succeeds; how long that took
/// from `since`. Fails past `limit`. Each put's key is one its writer owns on a ring of `up`:
/// while the writer still has a member outside `up` on its ring, such a put either goes to
/// that member as the key's owner or waits for it to drop its copy, and fails — so a success
/// means the writer's ring is `up`.
async fn until_writes_succeed(
    cluster: &Cluster,
    up: &[usize],
    since: Instant,
    limit: Duration,
    tag: &str,
) -> Duration {
    for &i in up {
        let keys = (0..).map(|n| format!("{tag}-{i}-{n}"));
        for key in keys.filter(|key| cluster.owner_among(key, up) == i) {
            let put = cluster.node(i).put(&key, Bytes::from_static(b"probe"));
            match within(CALL_LIMIT, "probe put", put).await {
                Ok(()) => break,
                Err(Error::Unavailable | Error::TimedOut) => {}
                Err(error) => panic!("put {key} through node {i}: {error:?}"),
            }
            assert!(since.elapsed() <= limit, "writes through node {i} still fail after {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    since.elapsed()
}

/// One member killed (a crash: sockets dropped, no goodbye) while the others serve gets and
/// puts: within [`DETECTION_BOUND`] writes through every survivor succeed again, every get
/// was answered with the right value throughout, and each key the dead member owned (and had
/// loaded) is loaded exactly once more, by its new owner among the survivors.
pub fn killed_member_is_found_down_under_load(spec: &ClusterSpec) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    drive(async {
        let cluster = Arc::new(Cluster::start(spec, Duration::ZERO, default_tune).await);
        let n = cluster.len();
        let victim = n - 1;
        let survivors: Vec<usize> = (0..victim).collect();
        let owned = cluster.keys_owned_by(victim, "owned", 20);
        for key in &owned {
            let bytes = get(&cluster, victim, key).await.map(|value| value.bytes);
            assert_eq!(bytes, Ok(value_of(key, 0)), "{key}");
            assert_eq!(cluster.source(victim).loads_of(key), 1, "{key} loaded by its owner");
        }
        // Load on every survivor: gets of keys all over the ring, and puts.
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = survivors
            .iter()
            .map(|&i| {
                let (cluster, stop) = (Arc::clone(&cluster), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut answered = 0usize;
                    let mut k = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let key = format!("load-{}", k % 60);
                        let bytes = get(&cluster, i, &key).await.map(|value| value.bytes);
                        assert_eq!(bytes, Ok(value_of(&key, 0)), "{key} from node {i}");
                        answered += 1;
                        if k % 4 == 0 {
                            let key = format!("written-{i}-{k}");
                            let put = cluster.node(i).put(&key, Bytes::from_static(b"w"));
                            let result = within(CALL_LIMIT, "put under load", put).await;
                            assert!(
                                matches!(
                                    result,
                                    Ok(()) | Err(Error::Unavailable | Error::TimedOut)
                                ),
                                "put {key} through node {i}: {result:?}"
                            );
                        }
                        k += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    answered
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let killed = Instant::now();
        cluster.take_down(victim, Down::Kill).await;
        let took =
            until_writes_succeed(&cluster, &survivors, killed, DETECTION_BOUND, "after-kill").await;
        eprintln!("killed member of {n}: writes succeed again after {took:?}");
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            let answered = join("load worker", worker).await;
            assert!(answered > 0, "the worker's gets were answered");
        }
        // The dead member's keys: loaded once more, by the new owner; fetched by the others.
        for key in &owned {
            let heir = cluster.owner_among(key, &survivors);
            for &i in &survivors {
                let bytes = get(&cluster, i, key).await.map(|value| value.bytes);
                assert_eq!(bytes, Ok(value_of(key, 0)), "{key} from node {i} after the kill");
            }
            for &i in &survivors {
                let expected = usize::from(i == heir);
                let loads = cluster.source(i).loads_of(key);
                assert_eq!(loads, expected, "{key}: loads at node {i} (its new owner: {heir})");
            }
        }
        Arc::into_inner(cluster).expect("the workers are done").shutdown().await;
    });
}

/// Kills a member of a cluster `kills` times (each member in turn, restarted and fetched from
/// again before the next kill) and returns, per kill, how long until writes through every
/// survivor succeeded again.
pub fn detection_times(spec: &ClusterSpec, kills: usize) -> Vec<Duration> {
    drive(async {
        let mut cluster = Cluster::start(spec, Duration::ZERO, default_tune).await;
        let n = cluster.len();
        let mut times = Vec::new();
        for round in 0..kills {
            let victim = round % n;
            let survivors: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
            let killed = Instant::now();
            cluster.take_down(victim, Down::Kill).await;
            let tag = format!("kill-{round}");
            let limit = Duration::from_secs(10);
            times.push(until_writes_succeed(&cluster, &survivors, killed, limit, &tag).await);
            cluster.restart(victim, Down::Kill).await;
            for &i in &survivors {
                until_fetched_from(&cluster, i, victim, &format!("back-{round}")).await;
            }
            // Every member has every other up again before the next kill.
            let all: Vec<usize> = (0..n).collect();
            until_writes_succeed(&cluster, &all, Instant::now(), limit, &format!("up-{round}"))
                .await;
        }
        cluster.shutdown().await;
        times
    })
}
