//! Transport concerns of the event loop: large values (writes that would block), idle
//! connections, failing and hanging sources, peers named by host name, strangers.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Counting, KEYSPACE, concurrently, start_cluster, start_node, within};
use herdcache_mio::{Bytes, Error, Handle, KeyspaceConfig, Node, Path, source_fn};

/// A 3 MiB value per key, far more than a socket buffer takes at once: every transfer
/// between the nodes goes through writes that would block and resume on WRITABLE.
#[test]
fn large_values_cross_the_wire_intact() {
    const LEN: usize = 3 << 20;
    let source = source_fn(|key: Bytes| {
        let seed = key.last().copied().unwrap_or(0);
        let period: Vec<u8> = (0..251u8).map(|b| b ^ seed).collect();
        let mut value = period.repeat(LEN / period.len() + 1);
        value.truncate(LEN);
        Ok::<_, String>(Bytes::from(value))
    });
    let nodes: Vec<Handle> = (0..2)
        .map(|_| {
            Node::builder()
                .cluster("big")
                .keyspace(KeyspaceConfig::new("blobs", 256 << 20), source.clone())
                // Generous, so that a slow machine still fetches from the owner rather than
                // falling back to a local load.
                .config(|config| {
                    config.peer_timeout = Duration::from_secs(15);
                    config.request_timeout = Duration::from_secs(30);
                })
                .start()
                .expect("starts")
        })
        .collect();
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    let mut gets: Vec<Box<dyn FnOnce() -> _ + Send>> = Vec::new();
    for i in 0..8u8 {
        for node in &nodes {
            let node = node.clone();
            gets.push(Box::new(move || (i, node.get_value("blobs", [b'k', i]))));
        }
    }
    let mut fetched = 0;
    for (i, value) in within("gets", move || concurrently(gets)) {
        let value = value.expect("value");
        assert_eq!(value.bytes.len(), LEN);
        let intact = value.bytes.chunks(251).all(|chunk| {
            chunk.iter().enumerate().all(|(n, b)| *b == u8::try_from(n).expect("< 251") ^ i)
        });
        assert!(intact, "value {i} intact");
        fetched += usize::from(value.path == Path::PeerFetch);
    }
    assert!(fetched > 0, "some values came from the other node");
    within("stop", move || nodes.into_iter().for_each(Handle::stop));
}

#[test]
fn idle_connections_are_closed() {
    let node = Node::builder()
        .idle_timeout(Duration::from_millis(100))
        .config(|config| config.connect_timeout = Duration::from_secs(30))
        .start()
        .expect("starts");
    let mut silent = TcpStream::connect(node.local_addr()).expect("connects");
    silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout set");
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = silent.read(&mut buffer);
    assert!(
        matches!(read, Ok(0))
            || read.as_ref().is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "closed, not {read:?}"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(90), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    node.stop();
}

#[test]
fn a_panicking_source_fails_its_load_and_the_node_serves_on() {
    let source = source_fn(|key: Bytes| {
        assert!(key.as_ref() != b"boom", "the source panics on boom");
        Ok::<_, String>(key)
    });
    let node = Node::builder()
        .keyspace(KeyspaceConfig::new("p", 1 << 20), source)
        .workers(1)
        .start()
        .expect("starts");
    let boom = node.get("p", "boom");
    assert_eq!(boom, Err(Error::DataSource(Bytes::from_static(b"data source panicked"))));
    // The one worker survived the panic.
    assert_eq!(node.get("p", "fine"), Ok(Bytes::from_static(b"fine")));
    node.stop();
}

#[test]
fn loads_wait_in_line_for_a_busy_worker() {
    let source = Counting::new(Duration::from_millis(30));
    let node = Node::builder()
        .keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20), source.clone())
        .workers(1)
        .start()
        .expect("starts");
    let started = Instant::now();
    let gets: Vec<Box<dyn FnOnce() -> _ + Send>> = (0..4)
        .map(|i| {
            let node = node.clone();
            Box::new(move || node.get(KEYSPACE, format!("q-{i}"))) as Box<dyn FnOnce() -> _ + Send>
        })
        .collect();
    for (i, value) in within("gets", move || concurrently(gets)).into_iter().enumerate() {
        assert_eq!(value, Ok(Bytes::from(format!("v:q-{i}"))));
    }
    assert_eq!(source.calls(), 4);
    assert!(
        started.elapsed() >= Duration::from_millis(115),
        "one at a time: {:?}",
        started.elapsed()
    );
    node.stop();
}

#[test]
fn nodes_join_a_ring_at_run_time_even_by_host_name() {
    let source = Counting::new(Duration::from_millis(20));
    let a = start_node(source.clone());
    let b = Node::builder()
        .cluster("test")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
        .config(|config| config.peer_timeout = Duration::from_secs(10))
        .start()
        .expect("starts");
    a.get(KEYSPACE, "solo").expect("value");
    b.get(KEYSPACE, "solo").expect("value");
    assert_eq!(source.calls(), 2);
    // `b` is advertised by host name: peers look it up on a worker before they connect.
    let b_named = format!("localhost:{}", b.local_addr().port());
    let b = {
        let address = b.local_addr();
        b.stop();
        Node::builder()
            .cluster("test")
            .listen(address)
            .advertise(b_named.clone())
            .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
            .config(|config| config.peer_timeout = Duration::from_secs(10))
            .start()
            .expect("restarts")
    };
    let ids = [a.node_id().to_owned(), b_named];
    a.set_peers(ids.clone());
    b.set_peers(ids);
    let gets: Vec<Box<dyn FnOnce() -> _ + Send>> = (0..40)
        .map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            Box::new(move || node.get(KEYSPACE, "shared")) as Box<dyn FnOnce() -> _ + Send>
        })
        .collect();
    for value in within("gets", move || concurrently(gets)) {
        assert_eq!(value, Ok(Bytes::from_static(b"v:shared")));
    }
    assert_eq!(source.calls(), 3, "one load for the shared key once the ring is joined");
    a.stop();
    b.stop();
}

#[test]
fn a_peer_of_another_cluster_is_refused() {
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster(1, &source);
    let stranger = Node::builder()
        .cluster("other")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20), source.clone())
        .start()
        .expect("starts");
    stranger.set_peers([nodes[0].node_id().to_owned(), stranger.node_id().to_owned()]);
    for i in 0..10 {
        let key = format!("s-{i}");
        assert_eq!(stranger.get(KEYSPACE, &key), Ok(Bytes::from(format!("v:{key}"))));
    }
    stranger.stop();
    nodes.into_iter().for_each(Handle::stop);
}

#[test]
fn a_hanging_source_times_out_on_the_node_timer() {
    let source = Counting::new(Duration::from_secs(3));
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.read_timeout = Duration::from_millis(200);
    let node = Node::builder().keyspace(config, source.clone()).start().expect("starts");
    let started = Instant::now();
    assert_eq!(node.get(KEYSPACE, "slow"), Err(Error::TimedOut));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(source.calls(), 1);
    node.stop();
}

#[test]
fn an_unreachable_peer_fails_over_to_a_local_load() {
    let source = Counting::new(Duration::ZERO);
    let node = start_node(source.clone());
    // A port nothing listens on: the connect is refused; the node loads locally.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let nobody = closed.local_addr().expect("address").to_string();
    drop(closed);
    node.set_peers([node.node_id().to_owned(), nobody]);
    for i in 0..20 {
        let key = format!("u-{i}");
        assert_eq!(node.get(KEYSPACE, &key), Ok(Bytes::from(format!("v:{key}"))));
    }
    node.stop();
}
