//! Three nodes in one ring over real loopback TCP.

mod common;

use std::time::Duration;

use common::{Counting, KEYSPACE, start_cluster, within};
use herdcache_tokio::{Bytes, Path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_of_one_cold_key_loads_once_in_the_cluster() {
    let source = Counting::new(Duration::from_millis(50));
    let nodes = start_cluster(3, &source).await;
    let mut gets = Vec::new();
    for i in 0..200 {
        let node = nodes[i % nodes.len()].clone();
        gets.push(tokio::spawn(async move { node.get(KEYSPACE, "cold").await }));
    }
    for get in gets {
        let value = within("get", get).await.expect("task ran");
        assert_eq!(value, Ok(Bytes::from_static(b"v:cold")));
    }
    assert_eq!(source.calls(), 1, "one load in the whole cluster");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_loaded_by_their_owner_and_fetched_by_the_others() {
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster(3, &source).await;
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        let mut paths = Vec::new();
        for node in &nodes {
            let value = within("get", node.get_value(KEYSPACE, key)).await.expect("value");
            assert_eq!(value.bytes, Bytes::from(format!("v:{key}")));
            paths.push(value.path);
        }
        // The owner loaded it (or hit it); the two others fetched it from the owner.
        let fetched = paths.iter().filter(|path| **path == Path::PeerFetch).count();
        assert!(fetched >= 1, "{key}: {paths:?}");
    }
    assert_eq!(source.calls(), keys.len(), "each key loaded once");

    // A put at any node is seen at every node.
    within("put", nodes[1].put(KEYSPACE, "key-0", "new")).await.expect("stored");
    for node in &nodes {
        assert_eq!(
            within("get", node.get(KEYSPACE, "key-0")).await,
            Ok(Bytes::from_static(b"new"))
        );
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_peer_port_closes_only_that_connection() {
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster(3, &source).await;
    // Peer connections exist before the garbage arrives.
    for i in 0..10 {
        within("warm", nodes[0].get(KEYSPACE, format!("w-{i}"))).await.expect("value");
    }

    let mut intruder = TcpStream::connect(nodes[1].local_addr()).await.expect("connects");
    intruder.write_all(&[0xff; 64]).await.expect("written");
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 256];
        loop {
            match intruder.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node closes a connection that sent garbage");
    assert!(!received.is_empty(), "an error frame precedes the close");

    // Every node still serves, including through node 1.
    for i in 0..30 {
        let key = format!("after-{i}");
        for node in &nodes {
            let value = within("get", node.get(KEYSPACE, &key)).await;
            assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_while_the_others_keep_answering() {
    let source = Counting::new(Duration::from_millis(2));
    let mut nodes = start_cluster(3, &source).await;
    let keys: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
    for key in &keys {
        within("warm", nodes[2].get(KEYSPACE, key)).await.expect("value");
    }

    let leaving = nodes.remove(2);
    let readers: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|node| {
            let keys = keys.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                for round in 0..10 {
                    for key in &keys {
                        let value = node.get(KEYSPACE, key).await;
                        assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))), "round {round}");
                        answered += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                answered
            })
        })
        .collect();
    within("stop", leaving.stop()).await;
    for reader in readers {
        assert_eq!(within("reader", reader).await.expect("no panic"), 10 * keys.len());
    }
    // After the leave, the two left serve every key.
    for key in &keys {
        for node in &nodes {
            assert_eq!(
                within("get", node.get(KEYSPACE, key)).await,
                Ok(Bytes::from(format!("v:{key}")))
            );
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_is_loaded_around() {
    let source = Counting::new(Duration::ZERO);
    let mut nodes = start_cluster(3, &source).await;
    let dead = nodes.remove(0);
    dead.kill();
    for i in 0..20 {
        let key = format!("d-{i}");
        for node in &nodes {
            assert_eq!(
                within("get", node.get(KEYSPACE, &key)).await,
                Ok(Bytes::from(format!("v:{key}")))
            );
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_many_callers_one_load_each() {
    let source = Counting::new(Duration::from_millis(1));
    let nodes = start_cluster(3, &source).await;
    let mut gets = Vec::new();
    for i in 0..3000usize {
        let node = nodes[i % 3].clone();
        let key = format!("m-{}", (i * 7) % 500);
        gets.push(tokio::spawn(async move {
            let value = node.get(KEYSPACE, &key).await;
            (key, value)
        }));
    }
    for get in gets {
        let (key, value) = within("get", get).await.expect("task ran");
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
    for node in nodes {
        node.stop().await;
    }
}
