//! What only herdcache-mio has, over real loopback TCP: the blocking facade (and the async
//! handle of the same node), the worker pool that runs data sources, and the event loop's
//! own connects (name lookups on a worker, refused connects). The cache API itself is the
//! shared suite's (`herdcache-tests`' `api` tests run on mio nodes too).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use herdcache_mio::{
    Builder, Bytes, DataSource, Error, Handle, KeyspaceConfig, Mio, Node, Path, StartError,
    source_fn,
};

const KEYSPACE: &str = "ks";

/// Counts its calls and how many run at once, and answers `v:<key>` once `gate` lets it.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    gate: Option<Arc<Gate>>,
}

impl Counting {
    fn gated(gate: &Arc<Gate>) -> Self {
        Counting { gate: Some(Arc::clone(gate)), ..Counting::default() }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl DataSource for Counting {
    type Error = String;

    fn fetch(&self, key: Bytes) -> Result<Bytes, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(running, Ordering::SeqCst);
        let passed = self.gate.as_ref().is_none_or(|gate| gate.pass());
        self.running.fetch_sub(1, Ordering::SeqCst);
        if !passed {
            return Err("the gate never opened".into());
        }
        let mut value = b"v:".to_vec();
        value.extend_from_slice(&key);
        Ok(value.into())
    }
}

/// Where fetches wait: until the test opens it, or until `arrivals` fetches are waiting
/// (a rendezvous); a fetch gives up after a minute, failing its load.
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
    arrivals: usize,
}

impl Gate {
    fn new(arrivals: usize) -> Arc<Gate> {
        Arc::new(Gate { state: Mutex::new((0, false)), changed: Condvar::new(), arrivals })
    }

    fn pass(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
        if state.0 >= self.arrivals {
            state.1 = true;
        }
        self.changed.notify_all();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(60), |state| !state.1)
            .unwrap_or_else(PoisonError::into_inner);
        state.1
    }

    fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn open(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.changed.notify_all();
    }
}

fn builder(source: Counting) -> Builder {
    Node::builder()
        .cluster("test")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source)
        .config(|config| config.peer_timeout = Duration::from_secs(10))
}

/// Starts `builder` on `address`, retrying while the port is still in use (a node that just
/// stopped there may leave it to the kernel for a moment); fails after 10 s.
fn start_on(address: SocketAddr, builder: impl Fn() -> Builder) -> Handle {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match builder().listen(address).start() {
            Ok(node) => return node,
            Err(StartError::Bind(error))
                if error.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("cannot start on {address}: {error}"),
        }
    }
}

/// Runs `call` on a thread of its own; fails the test instead of hanging.
fn within<T: Send + 'static>(what: &str, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(call());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

/// Runs `get` for every key on a thread of its own, all at once; the answers in order.
fn get_concurrently(node: &Handle, keys: Vec<String>) -> Vec<Result<Bytes, Error>> {
    let node = node.clone();
    within("gets", move || {
        let threads: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let node = node.clone();
                thread::spawn(move || node.get(KEYSPACE, key))
            })
            .collect();
        threads.into_iter().map(|thread| thread.join().expect("no panic")).collect()
    })
}

#[test]
fn the_blocking_and_the_async_handle_serve_one_node() {
    let source = Counting::default();
    let node = builder(source.clone()).start().expect("starts");
    assert_eq!(node.get_value(KEYSPACE, "a").expect("loaded").path, Path::Load);
    let fast = node.keyspace(KEYSPACE).expect("keyspace exists");
    assert_eq!(fast.get_value("a").expect("hit").path, Path::LocalHit);
    assert_eq!(fast.peek_with("a", <[u8]>::len), Some(3));

    // The node's async handle, awaited on another executor, sees the same cache.
    let same = node.as_async().clone();
    let hit = futures_lite::future::block_on(same.get_value(KEYSPACE, "a")).expect("hit");
    assert_eq!((hit.bytes, hit.path), (Bytes::from_static(b"v:a"), Path::LocalHit));
    assert_eq!(source.calls(), 1);

    // An async source on a mio node: a worker drives its future.
    let echo = herdcache_runtime::source_fn(|key: Bytes| async move { Ok::<_, String>(key) });
    node.create_keyspace(KeyspaceConfig::new("echo", 1 << 20), echo).expect("created");
    assert_eq!(node.get("echo", "e"), Ok(Bytes::from_static(b"e")));
    within("stop", move || node.stop());
}

#[test]
fn stopped_killed_and_dropped_nodes_refuse_requests() {
    let node = builder(Counting::default()).start().expect("starts");
    let other = node.clone();
    node.kill();
    assert_eq!(other.get(KEYSPACE, "k"), Err(Error::ShuttingDown));

    let node = builder(Counting::default()).start().expect("starts");
    let other = node.clone();
    within("stop", move || node.stop());
    assert_eq!(other.get(KEYSPACE, "k"), Err(Error::ShuttingDown));

    // Dropping every handle kills the node: its port is free again.
    let node = builder(Counting::default()).start().expect("starts");
    let address = node.local_addr();
    drop(node);
    let again = start_on(address, || builder(Counting::default()));
    assert_eq!(again.get(KEYSPACE, "k"), Ok(Bytes::from_static(b"v:k")));
    within("stop", move || again.stop());
}

#[test]
fn a_caller_blocked_on_a_load_is_answered_when_the_node_is_killed() {
    let gate = Gate::new(usize::MAX);
    let node = builder(Counting::gated(&gate)).start().expect("starts");
    let caller = node.clone();
    let waiting = thread::spawn(move || caller.get(KEYSPACE, "slow"));
    while gate.waiting() == 0 {
        thread::yield_now();
    }
    node.kill();
    // Answered while its load is still held at the gate.
    assert_eq!(
        within("answer", move || waiting.join().expect("no panic")),
        Err(Error::ShuttingDown)
    );
    gate.open();
}

#[test]
fn loads_wait_in_line_for_a_busy_worker() {
    let source = Counting::default();
    let node = builder(source.clone()).runtime(Mio::default().workers(1)).start().expect("starts");
    let keys: Vec<String> = (0..4).map(|i| format!("q-{i}")).collect();
    for (key, value) in keys.clone().into_iter().zip(get_concurrently(&node, keys)) {
        assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))));
    }
    assert_eq!(source.calls(), 4);
    assert_eq!(source.most_at_once.load(Ordering::SeqCst), 1, "one worker, one load at a time");
    within("stop", move || node.stop());
}

/// Four workers and four cold keys in one `get_many`: each load waits until all four are
/// loading, so they all succeed only when they run at once (a pool that grew only when no
/// worker was idle ran them one after another, and each gave up waiting).
#[test]
fn a_burst_of_loads_runs_on_as_many_workers() {
    let source = Counting::gated(&Gate::new(4));
    let node = builder(source.clone()).runtime(Mio::default().workers(4)).start().expect("starts");
    let values = {
        let node = node.clone();
        within("get_many", move || node.get_many(KEYSPACE, ["a", "b", "c", "d"]))
    };
    assert!(values.iter().all(Result::is_ok), "{values:?}");
    assert_eq!(source.most_at_once.load(Ordering::SeqCst), 4);
    within("stop", move || node.stop());
}

#[test]
fn a_panicking_source_fails_its_load_and_the_worker_serves_on() {
    let source = source_fn(|key: Bytes| {
        assert!(key.as_ref() != b"boom", "the source panics on boom");
        Ok::<_, String>(key)
    });
    let node = Node::builder()
        .keyspace(KeyspaceConfig::new("p", 1 << 20), source)
        .runtime(Mio::default().workers(1))
        .start()
        .expect("starts");
    let boom = node.get("p", "boom");
    assert_eq!(boom, Err(Error::DataSource(Bytes::from_static(b"data source panicked"))));
    // The one worker survived the panic.
    assert_eq!(node.get("p", "fine"), Ok(Bytes::from_static(b"fine")));
    within("stop", move || node.stop());
}

#[test]
fn nodes_join_a_ring_at_run_time_even_by_host_name() {
    let source = Counting::default();
    let a = builder(source.clone()).start().expect("starts");
    let b = builder(source.clone()).start().expect("starts");
    a.get(KEYSPACE, "solo").expect("value");
    b.get(KEYSPACE, "solo").expect("value");
    assert_eq!(source.calls(), 2);
    // `b` is advertised by host name: peers look it up on a worker before they connect.
    let address = b.local_addr();
    let b_named = format!("localhost:{}", address.port());
    within("stop", move || b.stop());
    let b = start_on(address, || builder(source.clone()).advertise(b_named.clone()));
    let ids = [a.node_id().to_owned(), b_named];
    a.set_peers(ids.clone());
    b.set_peers(ids);
    let keys = vec!["shared".to_owned(); 20];
    for value in get_concurrently(&a, keys.clone()).into_iter().chain(get_concurrently(&b, keys)) {
        assert_eq!(value, Ok(Bytes::from_static(b"v:shared")));
    }
    assert_eq!(source.calls(), 3, "one load for the shared key once the ring is joined");
    let paths: Vec<Path> = [&a, &b]
        .iter()
        .map(|node| node.get_value(KEYSPACE, "shared").expect("cached").path)
        .collect();
    assert!(paths.contains(&Path::LocalHit), "the owner caches it: {paths:?}");
    within("stop a", move || a.stop());
    within("stop b", move || b.stop());
}

#[test]
fn an_unreachable_peer_fails_over_to_a_local_load() {
    let source = Counting::default();
    let node = builder(source.clone()).start().expect("starts");
    // A port nothing listens on: the connect is refused; the node loads locally.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let nobody = closed.local_addr().expect("address").to_string();
    drop(closed);
    node.set_peers([node.node_id().to_owned(), nobody]);
    for i in 0..20 {
        let key = format!("u-{i}");
        assert_eq!(node.get(KEYSPACE, &key), Ok(Bytes::from(format!("v:{key}"))));
    }
    assert_eq!(source.calls(), 20, "every key loaded here, once");
    within("stop", move || node.stop());
}
