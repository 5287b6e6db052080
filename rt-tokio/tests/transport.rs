//! Transport concerns of the driver: large frames, idle connections, failing sources,
//! membership changes at run time.

mod common;

use std::time::Duration;

use common::{Counting, KEYSPACE, start_cluster, start_node, within};
use herdcache_tokio::{Bytes, Error, KeyspaceConfig, Node, Path, source_fn};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_cross_the_wire_intact() {
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
        let node = Node::builder()
            .cluster("big")
            .keyspace(KeyspaceConfig::new("blobs", 256 << 20), source.clone())
            // Generous, so that a slow machine still fetches from the owner rather than
            // falling back to a local load.
            .config(|config| {
                config.peer_timeout = Duration::from_secs(15);
                config.request_timeout = Duration::from_secs(30);
            })
            .start()
            .await
            .expect("starts");
        nodes.push(node);
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    for node in &nodes {
        node.set_peers(ids.clone());
    }
    let mut gets = Vec::new();
    for i in 0..8u8 {
        for node in &nodes {
            let node = node.clone();
            gets.push(tokio::spawn(async move { (i, node.get_value("blobs", [b'k', i]).await) }));
        }
    }
    let mut fetched = 0;
    for get in gets {
        let (i, value) = within("get", get).await.expect("task ran");
        let value = value.expect("value");
        assert_eq!(value.bytes.len(), LEN);
        let intact = value.bytes.chunks(251).all(|chunk| {
            chunk.iter().enumerate().all(|(n, b)| *b == u8::try_from(n).expect("< 251") ^ i)
        });
        assert!(intact, "value {i} intact");
        fetched += usize::from(value.path == Path::PeerFetch);
    }
    assert!(fetched > 0, "some values came from the other node");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let node = Node::builder()
        .idle_timeout(Duration::from_millis(100))
        .config(|config| config.connect_timeout = Duration::from_secs(30))
        .start()
        .await
        .expect("starts");
    let mut silent = TcpStream::connect(node.local_addr()).await.expect("connects");
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 64];
    let read = within("idle close", silent.read(&mut buffer)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "closed, not {read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(90), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_source_fails_its_load_and_the_node_serves_on() {
    let source = source_fn(|key: Bytes| async move {
        assert!(key.as_ref() != b"boom", "the source panics on boom");
        Ok::<_, String>(key)
    });
    let node = Node::builder()
        .keyspace(KeyspaceConfig::new("p", 1 << 20), source)
        .start()
        .await
        .expect("starts");
    let boom = within("boom", node.get("p", "boom")).await;
    assert_eq!(boom, Err(Error::DataSource(Bytes::from_static(b"data source panicked"))));
    assert_eq!(within("fine", node.get("p", "fine")).await, Ok(Bytes::from_static(b"fine")));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_a_ring_at_run_time() {
    let source = Counting::new(Duration::from_millis(20));
    let a = start_node(source.clone()).await;
    let b = start_node(source.clone()).await;
    // Alone, each node owns every key: two loads.
    within("a", a.get(KEYSPACE, "solo")).await.expect("value");
    within("b", b.get(KEYSPACE, "solo")).await.expect("value");
    assert_eq!(source.calls(), 2);

    let ids = [a.node_id().to_owned(), b.node_id().to_owned()];
    a.set_peers(ids.clone());
    b.set_peers(ids);
    let mut gets = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        gets.push(tokio::spawn(async move { node.get(KEYSPACE, "shared").await }));
    }
    for get in gets {
        assert_eq!(within("get", get).await.expect("ran"), Ok(Bytes::from_static(b"v:shared")));
    }
    assert_eq!(source.calls(), 3, "one load for the shared key once the ring is joined");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_cluster_is_refused() {
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster(1, &source).await;
    let stranger = Node::builder()
        .cluster("other")
        .keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20), source.clone())
        .start()
        .await
        .expect("starts");
    let ids = [nodes[0].node_id().to_owned(), stranger.node_id().to_owned()];
    stranger.set_peers(ids);
    // The stranger cannot fetch from the refusing node; it loads locally instead.
    for i in 0..10 {
        let key = format!("s-{i}");
        assert_eq!(
            within("get", stranger.get(KEYSPACE, &key)).await,
            Ok(Bytes::from(format!("v:{key}")))
        );
    }
    stranger.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_source_times_out_on_the_node_timer() {
    let source = Counting::new(Duration::from_secs(30));
    let mut config = KeyspaceConfig::new(KEYSPACE, 1 << 20);
    config.read_timeout = Duration::from_millis(200);
    let node = Node::builder().keyspace(config, source.clone()).start().await.expect("starts");
    let started = std::time::Instant::now();
    assert_eq!(within("get", node.get(KEYSPACE, "slow")).await, Err(Error::TimedOut));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(source.calls(), 1);
    node.stop().await;
}
