//! The runtime crates' API end to end — one node or a few over loopback TCP — with **one body
//! per test**, run on every runtime crate (herdcache-mio's nodes too, through their async
//! handle) and under every executor a crate supports ([`api_tests!`](crate::api_tests)).
//!
//! The bodies are executor-neutral: they start nodes with the shared generic
//! [`Builder`]`<R>` (each runtime crate's `Builder` is `Builder<ItsRuntime>`; [`Started`]
//! turns what its `start` returns into the node's [`Handle`]), use only the shared [`Handle`]
//! API, run concurrent callers with [`join_all`] on the calling task, and take their sockets
//! and timers from async-io, whose reactor serves any executor. The data source sleeps on an
//! async-io timer too, so it runs on any runtime's node (herdcache-mio drives it on a worker
//! thread).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_io::Timer;
use async_net::TcpStream;
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, future};
use herdcache_proto::groupcache::{GetReply, parse_get_response};
use herdcache_proto::http::{HttpLimits, ResponseDecoder};
use herdcache_proto::{Entry, Error, Instant, KeyspaceConfig, MemberState, Path};
use herdcache_runtime::discovery::StaticList;
use herdcache_runtime::front::Clock;
use herdcache_runtime::tls::TlsConfig;
use herdcache_runtime::{
    Builder, DataSource, Handle, Members, Start, StartError, Starting, Subscription, blocking,
    source_fn,
};

use crate::certs::{NodeCert, TestPki};
use crate::peer_wire;

/// The keyspace of the API tests.
const KEYSPACE: &str = "ks";

/// What a runtime's `Builder::start` returns, as the API tests await it: an async runtime's
/// future of the node's [`Handle`], or herdcache-mio's blocking handle, whose node's async
/// [`Handle`] the tests use like any other.
pub trait Started {
    /// The node's async handle, to await.
    fn into_handle(self) -> Starting;
}

impl Started for Starting {
    fn into_handle(self) -> Starting {
        self
    }
}

impl Started for Result<blocking::Handle, StartError> {
    fn into_handle(self) -> Starting {
        Box::pin(future::ready(self.map(Handle::from)))
    }
}

/// How much longer a load of a key starting with `slow` takes: long enough for something
/// to happen while it is in flight.
const SLOW_LOAD: Duration = Duration::from_millis(500);

/// A node clock that runs with the real one plus an offset the test raises: time moves on
/// without the test sleeping ([`Builder::clock`]).
#[derive(Clone, Default)]
struct SkewedClock {
    ahead_micros: Arc<AtomicU64>,
}

impl SkewedClock {
    fn clock(&self) -> Clock {
        let ahead = Arc::clone(&self.ahead_micros);
        Arc::new(move || {
            Instant::now().saturating_add(Duration::from_micros(ahead.load(Ordering::SeqCst)))
        })
    }

    fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).expect("a test-sized jump");
        self.ahead_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

/// A data source that counts its calls, sleeps a little, and answers `v:<key>`; keys starting
/// with `missing` are not found, keys starting with `fail` fail, keys starting with `slow`
/// take [`SLOW_LOAD`] more.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
    delay: Duration,
}

impl Counting {
    fn new(delay: Duration) -> Self {
        Counting { calls: Arc::default(), delay }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
enum SourceError {
    Missing,
    Broken(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Missing => f.write_str("missing"),
            SourceError::Broken(why) => write!(f, "broken: {why}"),
        }
    }
}

impl DataSource for Counting {
    type Error = SourceError;

    async fn fetch(&self, key: Bytes) -> Result<Bytes, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Timer::after(self.delay).await;
        if key.starts_with(b"slow") {
            Timer::after(SLOW_LOAD).await;
        }
        if key.starts_with(b"missing") {
            return Err(SourceError::Missing);
        }
        if key.starts_with(b"fail") {
            return Err(SourceError::Broken("database down".into()));
        }
        let mut value = b"v:".to_vec();
        value.extend_from_slice(&key);
        Ok(value.into())
    }

    fn is_not_found(&self, error: &SourceError) -> bool {
        matches!(error, SourceError::Missing)
    }
}

/// Fails the test instead of hanging.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    let limit = Duration::from_secs(20);
    let timed_out = async {
        Timer::after(limit).await;
        panic!("{what}: no answer within {limit:?}")
    };
    future.or(timed_out).await
}

/// Polls every future on the calling task until all are done; the outputs in order.
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut running: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in running.iter_mut().zip(&mut done) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(output) => *slot = Some(output),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    done.into_iter().map(|output| output.expect("every future finished")).collect()
}

/// Starts one node on a free loopback port with the keyspace `ks` backed by `source`.
async fn start_node<R: Start<Started: Started>>(source: Counting) -> Handle {
    Builder::<R>::new()
        .cluster("test")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source)
        // "One load per key" holds while owners answer within the peer timeout: generous,
        // for slow CI machines.
        .config(|config| config.peer_timeout = Duration::from_secs(10))
        .start()
        .into_handle()
        .await
        .expect("node starts")
}

/// Starts `n` nodes sharing `source`, each with every node (itself included) as its peers.
async fn start_cluster<R: Start<Started: Started>>(n: usize, source: &Counting) -> Vec<Handle> {
    start_ring::<R>(vec![source.clone(); n]).await
}

/// Starts a node per source, each loading from its own, in one ring: the sources tell which
/// node loaded what.
async fn start_ring<R: Start<Started: Started>>(sources: Vec<Counting>) -> Vec<Handle> {
    let mut nodes = Vec::new();
    for source in sources {
        nodes.push(start_node::<R>(source).await);
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    nodes
}

async fn stop_all(nodes: Vec<Handle>) {
    for node in nodes {
        within("stop", node.stop()).await;
    }
}

/// A miss loads once; later gets (by name, through a keyspace handle, in place) hit.
pub async fn get_loads_once_then_hits<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::from_millis(5));
    let node = start_node::<R>(source.clone()).await;
    let first = within("first get", node.get_value(KEYSPACE, "a")).await.expect("loaded");
    assert_eq!(first.bytes, Bytes::from_static(b"v:a"));
    assert_eq!(first.path, Path::Load);
    let second = within("second get", node.get_value(KEYSPACE, b"a")).await.expect("hit");
    assert_eq!(second.bytes, first.bytes);
    assert_eq!(second.path, Path::LocalHit);
    assert_eq!(source.calls(), 1);

    let fast = node.keyspace(KEYSPACE).expect("keyspace exists");
    assert_eq!(within("fast get", fast.get("a")).await.expect("hit"), first.bytes);
    assert_eq!(fast.peek_with("a", <[u8]>::len), Some(3));
    assert_eq!(fast.peek_with("never-loaded", <[u8]>::len), None);
    assert_eq!(source.calls(), 1);
    within("stop", node.stop()).await;
}

/// Puts replace values, deletes remove them, a TTL expires.
pub async fn put_and_delete_replace_and_remove_values<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::ZERO);
    let node = start_node::<R>(source.clone()).await;
    within("put", node.put(KEYSPACE, "b", "stored")).await.expect("stored");
    assert_eq!(within("get", node.get(KEYSPACE, "b")).await, Ok(Bytes::from_static(b"stored")));
    assert_eq!(source.calls(), 0, "a stored value is served without a load");

    within("delete", node.delete(KEYSPACE, "b")).await.expect("deleted");
    assert_eq!(within("get", node.get(KEYSPACE, "b")).await, Ok(Bytes::from_static(b"v:b")));
    assert_eq!(source.calls(), 1, "after a delete the value is loaded again");

    within("stop", node.stop()).await;

    // A TTL, on a node clock the test moves on: no sleeping, so no race with a slow machine.
    let clock = SkewedClock::default();
    let node = Builder::<R>::new()
        .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
        .clock(clock.clock())
        .start()
        .into_handle()
        .await
        .expect("node starts");
    let ttl = Duration::from_secs(60);
    within("put ttl", node.put_with_ttl(KEYSPACE, "t", "short", ttl)).await.expect("stored");
    let stored = within("get", node.get_value(KEYSPACE, "t")).await.expect("a value");
    assert_eq!((stored.bytes, stored.path), (Bytes::from_static(b"short"), Path::LocalHit));
    let expires_at = stored.expires_at.expect("the TTL gave the value an expiry");
    assert!(expires_at > node.now() && expires_at <= node.now().saturating_add(ttl));
    clock.advance(ttl - Duration::from_secs(1));
    let before = within("get", node.get_value(KEYSPACE, "t")).await.expect("a value");
    assert_eq!(before.bytes, Bytes::from_static(b"short"), "not expired a second before");
    clock.advance(Duration::from_secs(2));
    let after = within("get", node.get_value(KEYSPACE, "t")).await.expect("a value");
    assert_eq!((after.bytes, after.path), (Bytes::from_static(b"v:t"), Path::Load), "expired");
    assert_eq!(source.calls(), 2, "the expired value was loaded again");
    within("stop", node.stop()).await;
}

/// Batches, not-found and failing loads, unknown keyspaces, clearing a keyspace, stats.
pub async fn batches_and_errors<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::ZERO);
    let node = start_node::<R>(source.clone()).await;
    let entries = vec![
        Entry { key: Bytes::from_static(b"x"), value: Bytes::from_static(b"1"), expires_at: None },
        Entry { key: Bytes::from_static(b"y"), value: Bytes::from_static(b"2"), expires_at: None },
    ];
    let stored = within("put_many", node.put_many(KEYSPACE, entries)).await;
    assert_eq!(stored, vec![Ok(()), Ok(())]);
    let got =
        within("get_many", node.get_many(KEYSPACE, ["x", "y", "z", "missing-1", "fail-1"])).await;
    let got: Vec<_> = got.into_iter().map(|r| r.map(|v| v.bytes)).collect();
    assert_eq!(got[0], Ok(Bytes::from_static(b"1")));
    assert_eq!(got[1], Ok(Bytes::from_static(b"2")));
    assert_eq!(got[2], Ok(Bytes::from_static(b"v:z")));
    assert_eq!(got[3], Err(Error::NotFound));
    assert_eq!(got[4], Err(Error::DataSource(Bytes::from_static(b"broken: database down"))));
    let deleted = within("delete_many", node.delete_many(KEYSPACE, ["x", "y"])).await;
    assert_eq!(deleted, vec![Ok(()), Ok(())]);
    assert_eq!(within("get", node.get(KEYSPACE, "x")).await, Ok(Bytes::from_static(b"v:x")));

    assert_eq!(within("unknown", node.get("nope", "k")).await, Err(Error::UnknownKeyspace));
    within("delete_keyspace", node.delete_keyspace(KEYSPACE)).await.expect("cleared");
    let calls = source.calls();
    assert_eq!(within("get", node.get(KEYSPACE, "z")).await, Ok(Bytes::from_static(b"v:z")));
    assert_eq!(source.calls(), calls + 1, "the keyspace was cleared");

    let stats = node.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].0, Bytes::from_static(KEYSPACE.as_bytes()));
    within("stop", node.stop()).await;
}

/// Keyspaces are created (with their source), updated, listed and removed while serving.
pub async fn keyspaces_are_created_updated_and_removed_at_run_time<R: Start<Started: Started>>() {
    let node = start_node::<R>(Counting::new(Duration::ZERO)).await;
    let source = source_fn(|key: Bytes| async move { Ok::<_, String>(key) });
    node.create_keyspace(KeyspaceConfig::new("echo", 1 << 20), source).expect("created");
    assert_eq!(within("get", node.get("echo", "hello")).await, Ok(Bytes::from_static(b"hello")));
    let again = source_fn(|_key: Bytes| async move { Ok::<_, String>(Bytes::new()) });
    assert!(node.create_keyspace(KeyspaceConfig::new("echo", 1 << 20), again).is_err());
    assert_eq!(within("get", node.get("echo", "other")).await, Ok(Bytes::from_static(b"other")));
    let before = within("get", node.get_value("echo", "before")).await.expect("a value");
    assert_eq!(before.expires_at, None, "no default TTL yet");
    let mut updated = KeyspaceConfig::new("echo", 2 << 20);
    updated.default_ttl = Some(Duration::from_secs(3600));
    node.update_keyspace(updated).expect("updated");
    // The update took effect: the listing shows it, and a new load gets the default TTL.
    let listed: Vec<_> = node.keyspaces().into_iter().filter(|c| c.name == "echo").collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].max_bytes, 2 << 20);
    assert_eq!(listed[0].default_ttl, Some(Duration::from_secs(3600)));
    let after = within("get", node.get_value("echo", "after")).await.expect("a value");
    assert_eq!((after.bytes, after.path), (Bytes::from_static(b"after"), Path::Load));
    let expires_at = after.expires_at.expect("the updated default TTL applies to new loads");
    let hour_from_now = node.now().saturating_add(Duration::from_secs(3600));
    assert!(expires_at <= hour_from_now, "{expires_at:?} within the hour from {:?}", node.now());
    assert!(expires_at > node.now().saturating_add(Duration::from_secs(3000)), "{expires_at:?}");
    let mut names: Vec<_> = node.keyspaces().into_iter().map(|config| config.name).collect();
    names.sort();
    assert_eq!(names, vec![Bytes::from_static(b"echo"), Bytes::from_static(b"ks")]);
    node.remove_keyspace("echo").expect("removed");
    assert_eq!(within("get", node.get("echo", "x")).await, Err(Error::UnknownKeyspace));
    within("stop", node.stop()).await;
}

/// Two keyspaces of one name, or a configuration the core refuses, start nothing.
pub async fn start_refuses_duplicate_keyspaces_and_bad_config<R: Start<Started: Started>>() {
    let duplicate = Builder::<R>::new()
        .keyspace(KeyspaceConfig::new("a", 1 << 20), Counting::default())
        .keyspace(KeyspaceConfig::new("a", 1 << 20), Counting::default())
        .start()
        .into_handle()
        .await;
    assert!(matches!(duplicate, Err(StartError::DuplicateKeyspace(name)) if name == "a"));
    let bad = Builder::<R>::new()
        .config(|config| config.request_timeout = Duration::ZERO)
        .start()
        .into_handle()
        .await;
    assert!(matches!(bad, Err(StartError::Config(_))));
}

/// After a kill or a stop, the handle's clones get `ShuttingDown`.
pub async fn stopped_and_killed_nodes_refuse_requests<R: Start<Started: Started>>() {
    let node = start_node::<R>(Counting::new(Duration::ZERO)).await;
    let other = node.clone();
    node.kill();
    assert_eq!(within("get", other.get(KEYSPACE, "k")).await, Err(Error::ShuttingDown));

    let node = start_node::<R>(Counting::new(Duration::ZERO)).await;
    let other = node.clone();
    within("stop", node.stop()).await;
    assert_eq!(within("get", other.get(KEYSPACE, "k")).await, Err(Error::ShuttingDown));
}

/// 200 concurrent gets of one cold key over 3 nodes: one load in the cluster.
pub async fn stampede_of_one_cold_key_loads_once_in_the_cluster<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::from_millis(50));
    let nodes = start_cluster::<R>(3, &source).await;
    let gets = (0..200).map(|i| nodes[i % nodes.len()].get(KEYSPACE, "cold"));
    for value in within("gets", join_all(gets)).await {
        assert_eq!(value, Ok(Bytes::from_static(b"v:cold")));
    }
    assert_eq!(source.calls(), 1, "one load in the whole cluster");
    stop_all(nodes).await;
}

/// Each key is loaded by its owner and fetched by the others; a put is seen everywhere.
pub async fn keys_are_loaded_by_their_owner_and_fetched_by_the_others<
    R: Start<Started: Started>,
>() {
    let sources: Vec<Counting> = (0..3).map(|_| Counting::default()).collect();
    let nodes = start_ring::<R>(sources.clone()).await;
    let calls = || sources.iter().map(Counting::calls).collect::<Vec<_>>();
    let keys: Vec<String> = (0..30).map(herdcache_workload::key).collect();
    let mut owners = [0; 3];
    for key in &keys {
        let before = calls();
        let mut paths = Vec::new();
        for node in &nodes {
            let value = within("get", node.get_value(KEYSPACE, key)).await.expect("value");
            assert_eq!(value.bytes, Bytes::from(format!("v:{key}")));
            paths.push(value.path);
        }
        // One node loaded it (the owner: it loaded for itself, or for the first asker and
        // then hit); the two others fetched it from the owner.
        let loaded: Vec<usize> = (0..3).filter(|&i| calls()[i] != before[i]).collect();
        assert_eq!(loaded.len(), 1, "{key}: one node loaded it: {:?} -> {:?}", before, calls());
        let owner = loaded[0];
        assert_eq!(calls()[owner], before[owner] + 1, "{key}: loaded once");
        owners[owner] += 1;
        for (i, path) in paths.iter().enumerate() {
            let expected: &[Path] =
                if i == owner { &[Path::Load, Path::LocalHit] } else { &[Path::PeerFetch] };
            assert!(expected.contains(path), "{key} from node {i} (owner {owner}): {paths:?}");
        }
        // The first asker's get is the load, at the owner or through it.
        let first = if owner == 0 { Path::Load } else { Path::PeerFetch };
        assert_eq!(paths[0], first, "{key} (owner {owner}): {paths:?}");
    }
    assert!(owners.iter().all(|&owned| owned > 0), "every node owns some of 30 keys: {owners:?}");

    let before = calls();
    within("put", nodes[1].put(KEYSPACE, "key-0", "new")).await.expect("stored");
    for node in &nodes {
        let value = within("get", node.get(KEYSPACE, "key-0")).await;
        assert_eq!(value, Ok(Bytes::from_static(b"new")));
    }
    assert_eq!(calls(), before, "a put value is served without a load");
    stop_all(nodes).await;
}

/// Garbage on the peer port: an error frame, that connection closed, every node serves on.
pub async fn garbage_on_the_peer_port_closes_only_that_connection<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster::<R>(3, &source).await;
    // Peer connections exist before the garbage arrives.
    for i in 0..10 {
        within("warm", nodes[0].get(KEYSPACE, format!("w-{i}"))).await.expect("value");
    }

    let mut intruder = TcpStream::connect(nodes[1].local_addr()).await.expect("connects");
    intruder.write_all(&[0xff; 64]).await.expect("written");
    let mut received = Vec::new();
    within("the node closes a connection that sent garbage", async {
        let mut buffer = [0u8; 256];
        loop {
            match intruder.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(!received.is_empty(), "an error frame precedes the close");

    for i in 0..30 {
        let key = format!("after-{i}");
        for node in &nodes {
            let value = within("get", node.get(KEYSPACE, &key)).await;
            assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    stop_all(nodes).await;
}

/// A node leaves gracefully while the others keep answering every read.
pub async fn graceful_stop_while_the_others_keep_answering<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::from_millis(2));
    let mut nodes = start_cluster::<R>(3, &source).await;
    let keys: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
    for key in &keys {
        within("warm", nodes[2].get(KEYSPACE, key)).await.expect("value");
    }
    assert_eq!(source.calls(), keys.len());

    // The leaving node has a get in flight (a slow load, here or at the key's owner): its
    // leave waits for it, so the leave lasts while the others are read.
    let leaving = nodes.remove(2);
    let slow = leaving.get(KEYSPACE, "slow-leave");
    within("the slow load starts", async {
        while source.calls() == keys.len() {
            Timer::after(Duration::from_millis(1)).await;
        }
    })
    .await;
    let (stopping, left) = (AtomicBool::new(false), AtomicBool::new(false));
    let readers = nodes.iter().enumerate().map(|(i, node)| {
        let (stopping, left, keys) = (&stopping, &left, &keys);
        async move {
            let (mut answered, mut during_the_leave) = (0, 0);
            loop {
                for key in keys {
                    let value = node.get(KEYSPACE, key).await;
                    assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))), "{key} from node {i}");
                    answered += 1;
                    // Counted once the answer is in: it came while the leave was under way.
                    if stopping.load(Ordering::SeqCst) && !left.load(Ordering::SeqCst) {
                        during_the_leave += 1;
                    }
                }
                if left.load(Ordering::SeqCst) {
                    return (answered, during_the_leave);
                }
                Timer::after(Duration::from_millis(1)).await;
            }
        }
    });
    let stop = async {
        stopping.store(true, Ordering::SeqCst);
        within("stop", leaving.stop()).await;
        left.store(true, Ordering::SeqCst);
        (0, 0)
    };
    let slow = async {
        let value = within("the leaving node's own get", slow).await;
        assert_eq!(value, Ok(Bytes::from_static(b"v:slow-leave")), "the leave finished it");
        (0, 0)
    };
    let tasks = readers.map(FutureExt::boxed).chain([stop.boxed(), slow.boxed()]);
    let answered = within("readers", join_all(tasks)).await;
    for (i, &(all, during_the_leave)) in answered[..2].iter().enumerate() {
        assert!(all >= keys.len(), "node {i} answered {all}");
        assert!(during_the_leave > 0, "node {i} answered while the other node left: {answered:?}");
    }

    // After the leave, the two left serve every key. The leaver's keys have new owners,
    // which load them (during the leave or now): at most once more each.
    for key in &keys {
        for node in &nodes {
            let value = within("get", node.get(KEYSPACE, key)).await;
            assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    let reloaded = source.calls() - keys.len() - 1;
    assert!(reloaded <= keys.len(), "each key loaded at most once more: {reloaded}");
    for key in &keys {
        for node in &nodes {
            let value = within("get", node.get_value(KEYSPACE, key)).await.expect("value");
            assert_ne!(value.path, Path::Load, "{key} is cached now");
        }
    }
    assert_eq!(source.calls(), keys.len() + 1 + reloaded, "served from the caches now");
    stop_all(nodes).await;
}

/// A killed peer's keys are loaded by the survivors.
pub async fn a_killed_peer_is_loaded_around<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::ZERO);
    let mut nodes = start_cluster::<R>(3, &source).await;
    nodes.remove(0).kill();
    for i in 0..20 {
        let key = format!("d-{i}");
        for node in &nodes {
            let value = within("get", node.get(KEYSPACE, &key)).await;
            assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    stop_all(nodes).await;
}

/// 3000 concurrent gets of 500 keys over 3 nodes: one load per key; batches then hit.
pub async fn many_keys_many_callers_one_load_each<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::from_millis(1));
    let nodes = start_cluster::<R>(3, &source).await;
    let gets = (0..3000usize).map(|i| {
        let key = format!("m-{}", (i * 7) % 500);
        let node = &nodes[i % 3];
        async move {
            let value = node.get(KEYSPACE, &key).await;
            (key, value)
        }
    });
    for (key, value) in within("gets", join_all(gets)).await {
        assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))));
    }
    assert_eq!(source.calls(), 500, "one load per key");

    let keys: Vec<String> = (0..500).map(|i| format!("m-{i}")).collect();
    for node in &nodes {
        let values = within("get_many", node.get_many(KEYSPACE, &keys)).await;
        for (key, value) in keys.iter().zip(values) {
            assert_eq!(value.map(|v| v.bytes), Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    assert_eq!(source.calls(), 500, "batches are served from the caches");
    stop_all(nodes).await;
}

/// 3 MiB values cross the wire intact, many at once.
pub async fn large_values_cross_the_wire_intact<R: Start<Started: Started>>() {
    const LEN: usize = 3 << 20;
    let source = source_fn(|key: Bytes| async move {
        let seed = key.last().copied().unwrap_or(0);
        let period: Vec<u8> = (0..251u8).map(|b| b ^ seed).collect();
        let mut value = period.repeat(LEN / period.len() + 1);
        value.truncate(LEN);
        Ok::<_, String>(Bytes::from(value))
    });
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let node = Builder::<R>::new()
            .cluster("big")
            .keyspace(KeyspaceConfig::new("blobs", 256 << 20), source.clone())
            // Generous, so that a slow machine still fetches from the owner rather than
            // falling back to a local load.
            .config(|config| {
                config.peer_timeout = Duration::from_secs(15);
                config.request_timeout = Duration::from_secs(30);
            })
            .start()
            .into_handle()
            .await
            .expect("starts");
        nodes.push(node);
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    let gets = (0..8u8)
        .flat_map(|i| nodes.iter().map(move |node| (i, node)))
        .map(|(i, node)| async move { (i, node.get_value("blobs", [b'k', i]).await) });
    let mut fetched = 0;
    for (i, value) in within("gets", join_all(gets)).await {
        let value = value.expect("value");
        assert_eq!(value.bytes.len(), LEN);
        let intact = value.bytes.chunks(251).all(|chunk| {
            chunk.iter().enumerate().all(|(n, b)| *b == u8::try_from(n).expect("< 251") ^ i)
        });
        assert!(intact, "value {i} intact");
        fetched += usize::from(value.path == Path::PeerFetch);
    }
    assert!(fetched > 0, "some values came from the other node");
    stop_all(nodes).await;
}

/// A connection silent for the idle timeout is closed.
pub async fn idle_connections_are_closed<R: Start<Started: Started>>() {
    let node = Builder::<R>::new()
        .idle_timeout(Duration::from_millis(100))
        .config(|config| config.connect_timeout = Duration::from_secs(30))
        .start()
        .into_handle()
        .await
        .expect("starts");
    // Timed from before the connect: the node cannot accept earlier, whereas the connect's
    // answer may reach this task well after the node accepted (on a loaded machine).
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(node.local_addr()).await.expect("connects");
    let mut buffer = [0u8; 64];
    let read = within("idle close", silent.read(&mut buffer)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "closed, not {read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(90), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    within("stop", node.stop()).await;
}

/// A source that panics fails its load; the node serves on.
pub async fn a_panicking_source_fails_its_load_and_the_node_serves_on<
    R: Start<Started: Started>,
>() {
    let source = source_fn(|key: Bytes| async move {
        assert!(key.as_ref() != b"boom", "the source panics on boom");
        Ok::<_, String>(key)
    });
    let node = Builder::<R>::new()
        .keyspace(KeyspaceConfig::new("p", 1 << 20), source)
        .start()
        .into_handle()
        .await
        .expect("starts");
    let boom = within("boom", node.get("p", "boom")).await;
    assert_eq!(boom, Err(Error::DataSource(Bytes::from_static(b"data source panicked"))));
    assert_eq!(within("fine", node.get("p", "fine")).await, Ok(Bytes::from_static(b"fine")));
    within("stop", node.stop()).await;
}

/// Two lone nodes join one ring at run time: then one load for a shared key.
pub async fn nodes_join_a_ring_at_run_time<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::from_millis(20));
    let a = start_node::<R>(source.clone()).await;
    let b = start_node::<R>(source.clone()).await;
    // Alone, each node owns every key: two loads.
    within("a", a.get(KEYSPACE, "solo")).await.expect("value");
    within("b", b.get(KEYSPACE, "solo")).await.expect("value");
    assert_eq!(source.calls(), 2);

    let ids = [a.node_id().to_owned(), b.node_id().to_owned()];
    a.set_peers(ids.clone());
    b.set_peers(ids);
    let gets = (0..40).map(|i| if i % 2 == 0 { &a } else { &b }.get(KEYSPACE, "shared"));
    for value in within("gets", join_all(gets)).await {
        assert_eq!(value, Ok(Bytes::from_static(b"v:shared")));
    }
    assert_eq!(source.calls(), 3, "one load for the shared key once the ring is joined");
    stop_all(vec![a, b]).await;
}

/// A node of another cluster is refused; the stranger loads locally instead.
pub async fn a_peer_of_another_cluster_is_refused<R: Start<Started: Started>>() {
    let member_source = Counting::new(Duration::ZERO);
    let nodes = start_cluster::<R>(1, &member_source).await;
    let stranger_source = Counting::new(Duration::ZERO);
    let stranger = Builder::<R>::new()
        .cluster("other")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20), stranger_source.clone())
        .start()
        .into_handle()
        .await
        .expect("starts");
    stranger.set_peers([nodes[0].node_id().to_owned(), stranger.node_id().to_owned()]);
    // 40 keys: the stranger's ring gives the member some of them (all 40 to the stranger has
    // probability 2^-40), which it then tries to fetch from the member.
    let keys = 40;
    for i in 0..keys {
        let key = format!("s-{i}");
        let value = within("get", stranger.get_value(KEYSPACE, &key)).await.expect("a value");
        assert_eq!(value.bytes, Bytes::from(format!("v:{key}")));
        assert_eq!(value.path, Path::Load, "{key}: loaded by the stranger itself");
    }
    assert_eq!(stranger_source.calls(), keys, "the stranger loaded every key");
    assert_eq!(member_source.calls(), 0, "the member loaded nothing for the stranger");
    let member = nodes[0].keyspace_stats(KEYSPACE).expect("the member's keyspace");
    assert_eq!(member.server_requests, 0, "the member answered no request of the stranger");
    let stranger_stats = stranger.keyspace_stats(KEYSPACE).expect("the stranger's keyspace");
    assert!(stranger_stats.peer_errors > 0, "the stranger tried the member: {stranger_stats:?}");
    within("stop", stranger.stop()).await;
    stop_all(nodes).await;
}

/// A raw TCP peer that says the cluster's label under an id no member has: its put, clear and
/// goodbye are answered `Unauthorized` and change nothing; counted on the node.
pub async fn a_non_member_on_the_peer_port_cannot_write_clear_or_say_goodbye<
    R: Start<Started: Started>,
>() {
    use herdcache_proto::{ErrorCode, Message, PutEntry};
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster::<R>(2, &source).await;
    let kept = within("get", nodes[0].get(KEYSPACE, "kept")).await.expect("a value");
    let hello = peer_wire::hello("test", "127.0.0.1:9", None);
    let put = Message::Put {
        keyspace: Bytes::from_static(KEYSPACE.as_bytes()),
        entry: PutEntry {
            key: Bytes::from_static(b"kept"),
            value: Bytes::from_static(b"forged"),
            expires_at: None,
        },
    };
    let clear = Message::ClearKeyspace { keyspace: Bytes::from_static(KEYSPACE.as_bytes()) };
    let frames = [(0, hello), (1, put), (2, clear), (3, Message::Leaving)];
    let (answers, _) =
        within("the impostor's answers", peer_wire::raw_exchange(nodes[0].local_addr(), &frames))
            .await;
    for id in 1..=3 {
        let refused = answers.iter().any(|(got, message)| {
            *got == id
                && matches!(message, Message::Ack(Err(error)) if error.code == ErrorCode::Unauthorized)
        });
        assert!(refused, "request {id} refused: {answers:?}");
    }
    assert_eq!(nodes[0].security_stats().refused_unauthorized, 3);
    for node in &nodes {
        assert_eq!(within("get", node.get(KEYSPACE, "kept")).await, Ok(kept.clone()));
        let members = node.members();
        assert_eq!(members.members.len(), 2, "{:?}", members.members);
        assert!(members.members.iter().all(|m| m.ring_share > 0.0), "nobody left the ring");
    }
    stop_all(nodes).await;
}

/// With a cluster secret, a raw TCP peer that claims a member's id and cannot prove the
/// secret is refused at the hello: the put and goodbye it pipelines behind its guess are never
/// read, the member it claimed to be stays on the ring, and the refusal is counted.
pub async fn an_impostor_without_the_cluster_secret_is_refused_at_the_hello<
    R: Start<Started: Started>,
>() {
    use herdcache_proto::{ErrorCode, Message, PutEntry};
    let source = Counting::new(Duration::ZERO);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let node = Builder::<R>::new()
            .cluster("test")
            .cluster_secret(&b"the members' shared secret"[..])
            .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
            .start()
            .into_handle()
            .await
            .expect("node starts");
        nodes.push(node);
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    // The members talk to each other: a key's value crosses from its owner.
    for i in 0..10 {
        let key = format!("w-{i}");
        assert_eq!(
            within("get", nodes[1].get(KEYSPACE, &key)).await,
            Ok(Bytes::from(format!("v:{key}")))
        );
    }
    let hello = peer_wire::hello("test", &ids[1], Some([7; 16]));
    let put = Message::Put {
        keyspace: Bytes::from_static(KEYSPACE.as_bytes()),
        entry: PutEntry {
            key: Bytes::from_static(b"w-1"),
            value: Bytes::from_static(b"forged"),
            expires_at: None,
        },
    };
    let frames =
        [(0, hello), (0, Message::HelloProof { mac: [0; 32] }), (1, put), (2, Message::Leaving)];
    let (answers, closed) =
        within("the impostor's answers", peer_wire::raw_exchange(nodes[0].local_addr(), &frames))
            .await;
    assert!(closed, "the node closed the connection: {answers:?}");
    let refused = answers.iter().any(|(_, message)| {
        matches!(message, Message::Error(error) if error.code == ErrorCode::Unauthenticated)
    });
    assert!(refused, "{answers:?}");
    assert!(!answers.iter().any(|(id, _)| *id != 0), "no request was answered: {answers:?}");
    assert_eq!(nodes[0].security_stats().refused_unauthenticated, 1);
    assert_eq!(
        within("get", nodes[0].get(KEYSPACE, "w-1")).await,
        Ok(Bytes::from_static(b"v:w-1"))
    );
    let member = nodes[0].members();
    let claimed = member.get(&ids[1]).expect("the claimed member is still a member");
    assert!(claimed.ring_share > 0.0, "it did not leave the ring: {member:?}");
    stop_all(nodes).await;
}

/// A source that hangs is timed out by the node's own timer.
pub async fn a_hanging_source_times_out_on_the_node_timer<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::from_secs(30));
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.read_timeout = Duration::from_millis(200);
    let node = Builder::<R>::new()
        .keyspace(config, source.clone())
        .start()
        .into_handle()
        .await
        .expect("starts");
    let started = std::time::Instant::now();
    assert_eq!(within("get", node.get(KEYSPACE, "slow")).await, Err(Error::TimedOut));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(source.calls(), 1);
    within("stop", node.stop()).await;
}

/// Starts `n` nodes in groupcache-compatibility mode, named by their base URLs, in one ring.
async fn compat_cluster<R: Start<Started: Started>>(n: usize, source: &Counting) -> Vec<Handle> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let node = Builder::<R>::new()
            .groupcache_compat()
            .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
            .config(|config| config.peer_timeout = Duration::from_secs(10))
            .start()
            .into_handle()
            .await
            .expect("node starts");
        nodes.push(node);
    }
    let urls: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        assert!(node.node_id().starts_with("http://127.0.0.1:"), "{}", node.node_id());
        node.set_peers(urls.clone());
    }
    nodes
}

/// Three nodes speaking groupcache's HTTP protocol: one load per key (awkward keys escaped
/// on the wire), and a stampede of one cold key loads once.
pub async fn compat_cluster_loads_each_key_once_with_escaped_keys<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::from_millis(20));
    let nodes = compat_cluster::<R>(3, &source).await;
    let mut keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    keys.extend(["with space", "a+b", "a/b", "%2F", "ключ 🔑", ""].map(String::from));
    for key in &keys {
        let gets = nodes.iter().map(|node| node.get(KEYSPACE, key));
        for value in within("gets", join_all(gets)).await {
            assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))), "{key:?}");
        }
    }
    assert_eq!(source.calls(), keys.len(), "one load per key in the cluster");

    let gets = (0..90).map(|i| nodes[i % 3].get(KEYSPACE, "cold"));
    for value in within("stampede", join_all(gets)).await {
        assert_eq!(value, Ok(Bytes::from_static(b"v:cold")));
    }
    assert_eq!(source.calls(), keys.len() + 1, "the stampede loaded once");
    stop_all(nodes).await;
}

/// A plain HTTP client (two pipelined requests) gets groupcache's protobuf answers, and a
/// peer's request is loaded where it was asked, never forwarded.
pub async fn a_plain_http_client_gets_a_protobuf_answer<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::ZERO);
    let nodes = compat_cluster::<R>(3, &source).await;
    let address = nodes[0].node_id().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(address.as_str()).await.expect("connects");
    let request = format!(
        "GET /_groupcache/{KEYSPACE}/a%20b%2Bc%2Fd HTTP/1.1\r\nHost: {address}\r\n\r\n\
         GET /_groupcache/nope/k HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut bytes = Vec::new();
    within("answers", stream.read_to_end(&mut bytes)).await.expect("reads to the close");
    let mut decoder = ResponseDecoder::new(HttpLimits::default());
    decoder.push(&bytes).expect("within limits");
    let first = decoder.next_response().expect("valid HTTP").expect("a first answer");
    assert_eq!(first.header("content-type").map(|v| &v[..]), Some(&b"application/x-protobuf"[..]));
    match parse_get_response(&first).expect("a GetResponse") {
        GetReply::Value { value, .. } => assert_eq!(&value[..], b"v:a b+c/d"),
        other => panic!("{other:?}"),
    }
    let second = decoder.next_response().expect("valid HTTP").expect("a second answer");
    assert_eq!(
        parse_get_response(&second).expect("an error answer"),
        GetReply::Failed { status: 404, message: Bytes::from_static(b"no such group: nope") }
    );
    assert_eq!(source.calls(), 1);
    stop_all(nodes).await;
}

/// Takes snapshots from `subscription` until one satisfies `done`; checks on the way that
/// versions only grow and that each snapshot accounts for the changes it skipped.
async fn next_until(
    subscription: &mut Subscription,
    what: &str,
    mut done: impl FnMut(&Members) -> bool,
) -> Members {
    let mut last: Option<u64> = None;
    within(what, async {
        loop {
            let members = subscription.next().await.expect("the node runs");
            if let Some(last) = last {
                assert_eq!(members.version, last + 1 + members.skipped, "no change lost: {what}");
            }
            last = Some(members.version);
            if done(&members) {
                return members;
            }
        }
    })
    .await
}

/// `members()` and `subscribe()` follow a member from connected to down after a kill: the
/// subscription's first snapshot is the current view, each change is a new version, the dead
/// member's share goes to the survivors, and the stream ends when the node stops.
pub async fn members_and_subscription_follow_a_kill<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::ZERO);
    let mut nodes = start_cluster::<R>(3, &source).await;
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    let mut subscription = nodes[0].subscribe();
    let first = subscription.next().await.expect("the current view first");
    assert_eq!(first.skipped, 0);
    assert_eq!(first.members.len(), 3);
    assert!(first.members[0].is_self && first.members[0].id == ids[0]);
    assert!(first.quorate);
    let connected = next_until(&mut subscription, "all connected", |members| {
        members.members.iter().all(|member| member.connected && member.state == MemberState::Alive)
    })
    .await;
    let shares: f64 = connected.members.iter().map(|member| member.ring_share).sum();
    assert!((shares - 1.0).abs() < 1e-6, "the shares cover the ring: {shares}");
    for member in &connected.members {
        assert!(member.ring_share > 0.1, "{member:?} owns a part of the ring");
        assert_eq!(member.address, member.id, "herdcache ids are addresses");
    }

    let killed = nodes.remove(2);
    killed.kill();
    let down = next_until(&mut subscription, "the killed member down", |members| {
        members.get(&ids[2]).is_some_and(|member| member.state == MemberState::Down)
    })
    .await;
    let dead = down.get(&ids[2]).expect("listed");
    assert_eq!(dead.ring_share, 0.0);
    assert!(!dead.connected);
    let shares: f64 = down.members.iter().map(|member| member.ring_share).sum();
    assert!((shares - 1.0).abs() < 1e-6, "the survivors own the ring: {shares}");
    let now = nodes[0].members();
    assert_eq!(now.version, down.version, "members() is the latest snapshot");
    assert_eq!(now.get(&ids[2]).map(|member| member.state), Some(MemberState::Down));
    assert!(now.get(&ids[2]).is_some_and(|member| member.last_heard >= Duration::from_secs(1)));
    // Once the other survivor sees it down too, writes no longer wait on it.
    next_until(&mut nodes[1].subscribe(), "the killed member down on the other", |members| {
        members.get(&ids[2]).is_some_and(|member| member.state == MemberState::Down)
    })
    .await;
    within("put", nodes[1].put(KEYSPACE, "after", Bytes::from_static(b"x"))).await.expect("put");

    stop_all(nodes).await;
    let end = within("end", async {
        loop {
            if subscription.next().await.is_none() {
                break;
            }
        }
    });
    end.await;
}

/// A subscriber that polls after several changes gets the latest snapshot and how many it
/// skipped, never a silent drop.
pub async fn a_slow_subscriber_gets_the_latest_snapshot<R: Start<Started: Started>>() {
    let node = start_node::<R>(Counting::new(Duration::ZERO)).await;
    let mut subscription = node.subscribe();
    let first = subscription.try_next().expect("the current view, at once");
    assert_eq!(first.members.len(), 1);
    assert!(subscription.try_next().is_none(), "nothing new");
    // Three member lists: three versions (the unreachable members are listed, alive until
    // their silence says otherwise).
    let me = node.node_id().to_owned();
    node.set_peers([me.clone(), "127.0.0.1:9".to_owned()]);
    node.set_peers([me.clone(), "127.0.0.1:9".to_owned(), "127.0.0.1:10".to_owned()]);
    node.set_peers([me, "127.0.0.1:10".to_owned()]);
    let latest = subscription.try_next().expect("a change");
    assert_eq!(latest.skipped, 2, "two snapshots were not seen one by one");
    assert_eq!(latest.version, first.version + 3);
    let ids: Vec<&str> = latest.members.iter().map(|member| member.id.as_str()).collect();
    assert_eq!(ids, [node.node_id(), "127.0.0.1:10"]);
    within("stop", node.stop()).await;
    assert!(subscription.try_next().is_none(), "the stream ended");
}

/// A static discovery list reaches the node, and its updater replaces it while it runs.
pub async fn static_discovery_sets_and_replaces_the_members<R: Start<Started: Started>>() {
    let source = Counting::new(Duration::ZERO);
    let b = start_node::<R>(source.clone()).await;
    let (list, updater) = StaticList::with_updates([b.node_id().to_owned()]);
    let a = Builder::<R>::new()
        .cluster("test")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20), source.clone())
        .discovery(list)
        .start()
        .into_handle()
        .await
        .expect("starts");
    b.set_peers([a.node_id(), b.node_id()]);
    let mut subscription = a.subscribe();
    next_until(&mut subscription, "b connected", |members| {
        members.get(b.node_id()).is_some_and(|member| member.connected)
    })
    .await;
    let status = a.discovery().expect("a provider");
    assert_eq!((status.kind, status.updates, status.healthy), ("static", 1, true));
    assert_eq!(status.members, [b.node_id().to_owned()]);

    updater.replace([a.node_id().to_owned()]);
    let alone = next_until(&mut subscription, "b gone", |members| members.members.len() == 1).await;
    assert_eq!(alone.members[0].ring_share, 1.0);
    assert_eq!(a.discovery().map(|status| status.updates), Some(2));
    // Alone on its ring, a loads what b owned itself.
    let calls = source.calls();
    within("get", a.get(KEYSPACE, "mine-now")).await.expect("value");
    assert_eq!(source.calls(), calls + 1);
    stop_all(vec![a, b]).await;
}

/// Every API test as a `#[test]`: `$runtime` is the runtime crate's [`Start`] type (the
/// `R` of its `Builder`), `$block_on` runs a future to completion on the executor under test
/// (nodes of a runtime that needs its context, tokio's, start from within it).
#[macro_export]
macro_rules! api_tests {
    ($runtime:ty, $block_on:expr) => {
        $crate::api_tests!(@each $runtime, $block_on;
            get_loads_once_then_hits,
            put_and_delete_replace_and_remove_values,
            batches_and_errors,
            keyspaces_are_created_updated_and_removed_at_run_time,
            start_refuses_duplicate_keyspaces_and_bad_config,
            stopped_and_killed_nodes_refuse_requests,
            stampede_of_one_cold_key_loads_once_in_the_cluster,
            keys_are_loaded_by_their_owner_and_fetched_by_the_others,
            garbage_on_the_peer_port_closes_only_that_connection,
            graceful_stop_while_the_others_keep_answering,
            a_killed_peer_is_loaded_around,
            many_keys_many_callers_one_load_each,
            large_values_cross_the_wire_intact,
            idle_connections_are_closed,
            a_panicking_source_fails_its_load_and_the_node_serves_on,
            nodes_join_a_ring_at_run_time,
            a_peer_of_another_cluster_is_refused,
            a_non_member_on_the_peer_port_cannot_write_clear_or_say_goodbye,
            an_impostor_without_the_cluster_secret_is_refused_at_the_hello,
            a_hanging_source_times_out_on_the_node_timer,
            compat_cluster_loads_each_key_once_with_escaped_keys,
            a_plain_http_client_gets_a_protobuf_answer,
            members_and_subscription_follow_a_kill,
            a_slow_subscriber_gets_the_latest_snapshot,
            static_discovery_sets_and_replaces_the_members,
            a_tls_cluster_serves_remote_gets,
            a_node_with_a_certificate_from_another_ca_cannot_join,
            a_certificate_for_another_id_cannot_claim_it,
            a_plaintext_client_on_a_tls_port_is_closed_fast,
            a_silent_client_is_closed_at_the_handshake_timeout,
            connections_over_the_inbound_cap_are_closed_at_once,
            a_rotated_certificate_is_used_by_new_connections,
            a_tls_groupcache_ring_serves_and_binds_the_dialled_url,
        );
    };
    (@each $runtime:ty, $block_on:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                ($block_on)($crate::api::$name::<$runtime>());
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// Mutual TLS between peers (herdcache_runtime::tls): the same bodies on every runtime.

/// A TLS configuration from `pki` for `cert`.
fn tls_config(pki: &TestPki, cert: &NodeCert) -> TlsConfig {
    TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), pki.ca_pem().as_bytes())
        .expect("a valid TLS configuration")
}

/// A loopback address with a port free a moment ago, for a node whose id must be known
/// before it starts (its certificate names it).
fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound")
}

/// A node with TLS `tls`, on `listen` (port 0 when `None`), advertising `advertise` if set.
async fn start_tls_node<R: Start<Started: Started>>(
    source: Counting,
    tls: TlsConfig,
    listen: Option<std::net::SocketAddr>,
    advertise: Option<String>,
    tune: impl FnOnce(Builder<R>) -> Builder<R>,
) -> Handle {
    let mut builder = Builder::<R>::new()
        .cluster("test")
        .tls(tls)
        .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source)
        .config(|config| config.peer_timeout = Duration::from_secs(10));
    if let Some(listen) = listen {
        builder = builder.listen(listen);
    }
    if let Some(advertise) = advertise {
        builder = builder.advertise(advertise);
    }
    tune(builder).start().into_handle().await.expect("node starts")
}

/// Gets `keys` from `node` and returns their paths (asserting the values).
async fn paths_of(node: &Handle, keys: &[String]) -> Vec<Path> {
    let mut paths = Vec::new();
    for key in keys {
        let value = within("get", node.get_value(KEYSPACE, key)).await.expect("a value");
        assert_eq!(value.bytes, Bytes::from(format!("v:{key}")));
        paths.push(value.path);
    }
    paths
}

/// Waits until `condition` holds (a counter the other side of a connection updates).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Reads `stream` until the node closes it; how long that took.
async fn time_to_close(stream: &mut TcpStream) -> Duration {
    let started = std::time::Instant::now();
    within("the node closes the connection", async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    started.elapsed()
}

/// Three nodes with mutual TLS (certificates naming 127.0.0.1, so every id on it) serve
/// each other's keys: one load per key at its owner, peer fetches elsewhere.
pub async fn a_tls_cluster_serves_remote_gets<R: Start<Started: Started>>() {
    let pki = TestPki::new();
    let sources: Vec<Counting> = (0..3).map(|_| Counting::default()).collect();
    let mut nodes = Vec::new();
    for source in &sources {
        let tls = tls_config(&pki, &pki.node_with_names(&["127.0.0.1"]));
        nodes.push(start_tls_node::<R>(source.clone(), tls, None, None, |b| b).await);
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
        assert!(node.tls().is_some(), "the handle hands out its TLS configuration");
    }
    let calls = || sources.iter().map(Counting::calls).collect::<Vec<_>>();
    let keys: Vec<String> = (0..30).map(herdcache_workload::key).collect();
    let mut fetched = 0;
    for key in &keys {
        let before = calls();
        let mut paths = Vec::new();
        for node in &nodes {
            paths.extend(paths_of(node, std::slice::from_ref(key)).await);
        }
        let loaded: Vec<usize> = (0..3).filter(|&i| calls()[i] != before[i]).collect();
        assert_eq!(loaded.len(), 1, "{key}: one node loaded it once: {paths:?}");
        let owner = loaded[0];
        for (i, path) in paths.iter().enumerate() {
            let expected: &[Path] =
                if i == owner { &[Path::Load, Path::LocalHit] } else { &[Path::PeerFetch] };
            assert!(expected.contains(path), "{key} from node {i} (owner {owner}): {paths:?}");
        }
        fetched += paths.iter().filter(|path| **path == Path::PeerFetch).count();
    }
    assert_eq!(fetched, 2 * keys.len(), "every non-owner fetched over TLS");
    for node in &nodes {
        assert_eq!(node.transport_stats().tls_handshake_failures, 0);
        assert_eq!(node.security_stats().refused_unauthenticated, 0);
    }
    stop_all(nodes).await;
}

/// A node whose certificate comes from another CA cannot join: every handshake between it
/// and the members fails (counted), it loads every key itself, and the members never serve
/// it nor fetch from it.
pub async fn a_node_with_a_certificate_from_another_ca_cannot_join<R: Start<Started: Started>>() {
    let (pki, rogue_pki) = (TestPki::new(), TestPki::new());
    let member_source = Counting::default();
    let mut members = Vec::new();
    for _ in 0..2 {
        let tls = tls_config(&pki, &pki.node_with_names(&["127.0.0.1"]));
        members.push(start_tls_node::<R>(member_source.clone(), tls, None, None, |b| b).await);
    }
    let rogue_source = Counting::default();
    let rogue_tls = tls_config(&rogue_pki, &rogue_pki.node_with_names(&["127.0.0.1"]));
    let rogue = start_tls_node::<R>(rogue_source.clone(), rogue_tls, None, None, |b| b).await;
    let mut ids: Vec<String> = members.iter().map(|node| node.node_id().to_owned()).collect();
    ids.push(rogue.node_id().to_owned());
    for node in members.iter().chain([&rogue]) {
        node.set_peers(ids.clone());
    }
    let keys: Vec<String> = (0..40).map(|i| format!("rogue-{i}")).collect();
    let paths = paths_of(&rogue, &keys).await;
    assert!(paths.iter().all(|path| *path == Path::Load), "the rogue fetched nothing: {paths:?}");
    assert_eq!(rogue_source.calls(), keys.len());
    let member_paths = paths_of(&members[0], &keys).await;
    assert!(!member_paths.is_empty());
    let served: u64 =
        members.iter().map(|m| m.keyspace_stats(KEYSPACE).expect("ks").server_requests).sum();
    assert_eq!(rogue_source.calls(), keys.len(), "the members fetched nothing from the rogue");
    eventually("the members count the rogue's failed handshakes", || {
        members.iter().map(|m| m.transport_stats().tls_handshake_failures).sum::<u64>() > 0
    })
    .await;
    let rogue_peer_errors = rogue.keyspace_stats(KEYSPACE).expect("ks").peer_errors;
    assert!(rogue_peer_errors > 0, "the rogue tried the members");
    // What the members served, they served each other (the rogue's gets never reached them).
    let member_fetches = member_paths.iter().filter(|p| **p == Path::PeerFetch).count() as u64;
    assert!(served <= member_fetches, "served {served}, fetched among members {member_fetches}");
    within("stop", rogue.stop()).await;
    stop_all(members).await;
}

/// A node with a valid certificate for one id cannot speak for another: as a dialler that
/// claims a member's id in its hello it is refused, and a node it is dialled as (at an
/// address its certificate does not name) is closed before a byte is sent.
pub async fn a_certificate_for_another_id_cannot_claim_it<R: Start<Started: Started>>() {
    let pki = TestPki::new();
    let (a_addr, b_addr, m_addr) = (free_addr(), free_addr(), free_addr());
    let (a_id, b_id, m_id) = (a_addr.to_string(), b_addr.to_string(), m_addr.to_string());
    let b_source = Counting::default();
    let b_tls = tls_config(&pki, &pki.node_for_id(&b_id));
    let b = start_tls_node::<R>(b_source.clone(), b_tls, Some(b_addr), None, |b| b).await;
    // The impostor listens at its own address with a valid certificate for that id, and
    // claims to be "a" (a member that is not running).
    let impostor_source = Counting::default();
    let impostor_tls = tls_config(&pki, &pki.node_for_id(&m_id));
    let impostor = start_tls_node::<R>(
        impostor_source.clone(),
        impostor_tls,
        Some(m_addr),
        Some(a_id.clone()),
        |b| b,
    )
    .await;
    b.set_peers([a_id.clone(), b_id.clone()]);
    impostor.set_peers([a_id.clone(), b_id.clone()]);
    let keys: Vec<String> = (0..40).map(|i| format!("claim-{i}")).collect();
    let paths = paths_of(&impostor, &keys).await;
    assert!(paths.iter().all(|p| *p == Path::Load), "b never answered the impostor: {paths:?}");
    let refused = b.security_stats().refused_unauthenticated;
    assert!(refused > 0, "b refused the hello claiming {a_id} under a certificate for {m_id}");
    assert_eq!(b.keyspace_stats(KEYSPACE).expect("ks").server_requests, 0);

    // b dials the impostor's address as if it were a member "m": the certificate names m_id,
    // and that is fine; dialled as "a" (at m's address) it is not.
    let before = b.security_stats().refused_unauthenticated;
    let b_source_before = b_source.calls();
    b.set_peers([b_id.clone(), format!("localhost:{}", m_addr.port())]);
    let keys: Vec<String> = (0..40).map(|i| format!("dial-{i}")).collect();
    let paths = paths_of(&b, &keys).await;
    assert!(paths.iter().all(|p| *p == Path::Load), "b fetched nothing from m: {paths:?}");
    assert_eq!(b_source.calls() - b_source_before, keys.len());
    assert!(
        b.security_stats().refused_unauthenticated > before,
        "b closed its connection to a server whose certificate does not name localhost:PORT"
    );
    within("stop", impostor.stop()).await;
    within("stop", b.stop()).await;
}

/// A plaintext client on a TLS peer port (a native hello) is closed at its first bytes, not
/// after the handshake timeout; counted.
pub async fn a_plaintext_client_on_a_tls_port_is_closed_fast<R: Start<Started: Started>>() {
    let pki = TestPki::new();
    let tls = tls_config(&pki, &pki.node_with_names(&["127.0.0.1"]))
        .handshake_timeout(Duration::from_secs(30));
    let node = start_tls_node::<R>(Counting::default(), tls, None, None, |b| b).await;
    let hello = herdcache_proto::Message::Hello {
        protocol_version: u16::from(herdcache_proto::PROTOCOL_VERSION),
        cluster: Bytes::from_static(b"test"),
        node_id: Bytes::from_static(b"127.0.0.1:1"),
        nonce: None,
    };
    let mut bytes = Vec::new();
    hello.encode(0, &mut bytes, &herdcache_proto::WireLimits::default()).expect("a frame");
    let mut client = TcpStream::connect(node.local_addr()).await.expect("connects");
    client.write_all(&bytes).await.expect("written");
    let took = time_to_close(&mut client).await;
    assert!(took < Duration::from_secs(5), "closed at the first bytes, not by a timer: {took:?}");
    let stats = node.transport_stats();
    assert_eq!(stats.tls_handshake_failures, 1, "{stats:?}");
    let value = within("get", node.get_value(KEYSPACE, "k")).await.expect("serves on");
    assert_eq!(value.bytes, Bytes::from_static(b"v:k"));
    within("stop", node.stop()).await;
}

/// A client that connects and says nothing is closed at the handshake timeout.
pub async fn a_silent_client_is_closed_at_the_handshake_timeout<R: Start<Started: Started>>() {
    let pki = TestPki::new();
    let timeout = Duration::from_millis(300);
    let tls = tls_config(&pki, &pki.node_with_names(&["127.0.0.1"])).handshake_timeout(timeout);
    let node = start_tls_node::<R>(Counting::default(), tls, None, None, |b| b).await;
    let mut client = TcpStream::connect(node.local_addr()).await.expect("connects");
    let took = time_to_close(&mut client).await;
    assert!(took >= timeout.mul_f32(0.8), "not before the timeout: {took:?}");
    assert!(took < Duration::from_secs(10), "closed by the handshake timeout: {took:?}");
    assert_eq!(node.transport_stats().tls_handshake_failures, 1);
    within("stop", node.stop()).await;
}

/// Over the inbound cap (connections in their handshake count) a new connection is closed
/// at once and counted; the node serves on, and a place freed is taken again.
pub async fn connections_over_the_inbound_cap_are_closed_at_once<R: Start<Started: Started>>() {
    let pki = TestPki::new();
    let tls = tls_config(&pki, &pki.node_with_names(&["127.0.0.1"]))
        .handshake_timeout(Duration::from_secs(60));
    let cap = 4;
    let node = start_tls_node::<R>(Counting::default(), tls, None, None, |b| {
        b.max_inbound_connections(cap)
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..cap {
        silent.push(TcpStream::connect(node.local_addr()).await.expect("connects"));
    }
    // The node has taken them all once it refuses the next.
    let mut refused = 0;
    for _ in 0..3 {
        let mut extra = TcpStream::connect(node.local_addr()).await.expect("connects");
        let took = time_to_close(&mut extra).await;
        assert!(took < Duration::from_secs(5), "closed at once: {took:?}");
        refused += 1;
    }
    let stats = node.transport_stats();
    assert_eq!(stats.inbound_refused, refused, "{stats:?}");
    assert_eq!(stats.inbound_open, cap as u64, "{stats:?}");
    assert_eq!(stats.tls_handshake_failures, 0, "the silent ones are still in their handshake");
    let value = within("get", node.get_value(KEYSPACE, "k")).await.expect("serves on");
    assert_eq!(value.bytes, Bytes::from_static(b"v:k"));
    // One leaves: its place is taken by a new connection (which then waits in its handshake).
    drop(silent.pop());
    within("the place is freed", async {
        while node.transport_stats().inbound_open >= cap as u64 {
            Timer::after(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut fresh = TcpStream::connect(node.local_addr()).await.expect("connects");
    let quiet = async {
        Timer::after(Duration::from_millis(300)).await;
        true
    };
    let closed = async {
        let mut buffer = [0u8; 16];
        let _ = fresh.read(&mut buffer).await;
        false
    };
    assert!(quiet.or(closed).await, "admitted: not closed at once");
    assert_eq!(node.transport_stats().inbound_refused, refused);
    within("stop", node.stop()).await;
}

/// Rotation without a restart: the node's files are rewritten with a certificate from a new
/// CA; new connections use them (peers of the old CA are refused, peers of the new one are
/// served) while the node keeps running, found by the check on change (no reload call).
pub async fn a_rotated_certificate_is_used_by_new_connections<R: Start<Started: Started>>() {
    let (old_pki, new_pki) = (TestPki::new(), TestPki::new());
    let dir = std::env::temp_dir().join(format!(
        "herdcache-rotation-{}-{}",
        std::process::id(),
        std::any::type_name::<R>().len() ^ (free_addr().port() as usize)
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let files =
        old_pki.node_with_names(&["127.0.0.1"]).write_to(&old_pki, &dir, "a").expect("written");
    let tls = TlsConfig::from_files(&files.cert, &files.key, &files.ca).expect("loads");
    let a_source = Counting::default();
    let a = start_tls_node::<R>(a_source.clone(), tls, None, None, |b| b).await;
    let old_tls = tls_config(&old_pki, &old_pki.node_with_names(&["127.0.0.1"]));
    let old_peer = start_tls_node::<R>(Counting::default(), old_tls, None, None, |b| b).await;
    let pair = [a.node_id().to_owned(), old_peer.node_id().to_owned()];
    a.set_peers(pair.clone());
    old_peer.set_peers(pair);
    let keys: Vec<String> = (0..40).map(|i| format!("before-{i}")).collect();
    let paths = paths_of(&old_peer, &keys).await;
    assert!(paths.contains(&Path::PeerFetch), "the old CA works before: {paths:?}");

    new_pki.node_with_names(&["127.0.0.1"]).write_to(&new_pki, &dir, "a").expect("rewritten");
    Timer::after(herdcache_runtime::tls::FILE_CHECK_INTERVAL + Duration::from_millis(200)).await;
    let new_tls = tls_config(&new_pki, &new_pki.node_with_names(&["127.0.0.1"]));
    let new_peer = start_tls_node::<R>(Counting::default(), new_tls, None, None, |b| b).await;
    let pair = [a.node_id().to_owned(), new_peer.node_id().to_owned()];
    a.set_peers(pair.clone());
    new_peer.set_peers(pair);
    let keys: Vec<String> = (0..40).map(|i| format!("after-{i}")).collect();
    let paths = paths_of(&new_peer, &keys).await;
    assert!(paths.contains(&Path::PeerFetch), "the new CA is in force: {paths:?}");
    let failures_before = a.transport_stats().tls_handshake_failures;
    // A fresh node of the old CA is refused now.
    let stale_tls = tls_config(&old_pki, &old_pki.node_with_names(&["127.0.0.1"]));
    let stale = start_tls_node::<R>(Counting::default(), stale_tls, None, None, |b| b).await;
    stale.set_peers([a.node_id().to_owned(), stale.node_id().to_owned()]);
    let keys: Vec<String> = (0..40).map(|i| format!("stale-{i}")).collect();
    let paths = paths_of(&stale, &keys).await;
    assert!(paths.iter().all(|p| *p == Path::Load), "the old CA is refused: {paths:?}");
    // The refusing side counts when it read the alert: maybe after the stale node moved on.
    eventually("a counts the refused handshakes", || {
        a.transport_stats().tls_handshake_failures > failures_before
    })
    .await;
    assert_eq!(a.tls().expect("tls").reload().ok(), Some(false), "already in force");
    for node in [stale, new_peer, old_peer, a] {
        within("stop", node.stop()).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// groupcache compatibility under TLS: nodes named by `https://` base URLs serve each other
/// (one load per key), and a node dialled at a URL its certificate does not name is closed
/// before a request is sent (counted), its keys loaded locally.
pub async fn a_tls_groupcache_ring_serves_and_binds_the_dialled_url<R: Start<Started: Started>>() {
    let pki = TestPki::new();
    let source = Counting::default();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let tls = tls_config(&pki, &pki.node_with_names(&["127.0.0.1"]));
        let node = Builder::<R>::new()
            .groupcache_compat()
            .tls(tls)
            .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
            .config(|config| config.peer_timeout = Duration::from_secs(10))
            .start()
            .into_handle()
            .await
            .expect("node starts");
        assert!(node.node_id().starts_with("https://127.0.0.1:"), "{}", node.node_id());
        nodes.push(node);
    }
    let urls: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(urls.clone());
    }
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        let before = source.calls();
        let mut paths = Vec::new();
        for node in &nodes {
            let value = within("get", node.get_value(KEYSPACE, key)).await.expect("v");
            paths.push(value.path);
        }
        assert_eq!(source.calls() - before, 1, "{key}: one load in the ring: {paths:?}");
        let fetched = paths.iter().filter(|path| **path == Path::PeerFetch).count();
        assert_eq!(fetched, 2, "{key}: the two others fetched it over TLS: {paths:?}");
    }

    // Named as `localhost`, which the certificates (127.0.0.1 only) do not name.
    let renamed: Vec<String> =
        urls.iter().map(|url| url.replace("127.0.0.1", "localhost")).collect();
    let lonely = &nodes[0];
    lonely.set_peers([urls[0].clone(), renamed[1].clone(), renamed[2].clone()]);
    let before = source.calls();
    let keys: Vec<String> = (0..30).map(|i| format!("renamed-{i}")).collect();
    for key in &keys {
        let value = within("get", lonely.get_value(KEYSPACE, key)).await.expect("a value");
        assert_eq!(value.path, Path::Load, "{key}: loaded locally");
    }
    // (The ring change also prefetches the hot keys node 0 now owns: loads beyond these.)
    assert!(source.calls() - before >= keys.len());
    assert!(lonely.security_stats().refused_unauthenticated > 0, "dialled URLs not admitted");
    stop_all(nodes).await;
}
