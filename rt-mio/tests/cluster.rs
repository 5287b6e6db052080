//! Three nodes in one ring over real loopback TCP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Counting, KEYSPACE, concurrently, start_cluster, within};
use herdcache_mio::{Bytes, Error, Handle, KeyspaceConfig, Node, Path};

fn stop_all(nodes: Vec<Handle>) {
    within("stop", move || nodes.into_iter().for_each(Handle::stop));
}

#[test]
fn stampede_of_one_cold_key_loads_once_in_the_cluster() {
    let source = Counting::new(Duration::from_millis(50));
    let nodes = start_cluster(3, &source);
    let gets: Vec<Box<dyn FnOnce() -> _ + Send>> = (0..200)
        .map(|i| {
            let node = nodes[i % nodes.len()].clone();
            Box::new(move || node.get(KEYSPACE, "cold")) as Box<dyn FnOnce() -> _ + Send>
        })
        .collect();
    let values = within("stampede", move || concurrently(gets));
    for value in values {
        assert_eq!(value, Ok(Bytes::from_static(b"v:cold")));
    }
    assert_eq!(source.calls(), 1, "one load in the whole cluster");
    stop_all(nodes);
}

#[test]
fn keys_are_loaded_by_their_owner_and_fetched_by_the_others() {
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster(3, &source);
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        let mut paths = Vec::new();
        for node in &nodes {
            let value = node.get_value(KEYSPACE, key).expect("value");
            assert_eq!(value.bytes, Bytes::from(format!("v:{key}")));
            paths.push(value.path);
        }
        let fetched = paths.iter().filter(|path| **path == Path::PeerFetch).count();
        assert!(fetched >= 1, "{key}: {paths:?}");
    }
    assert_eq!(source.calls(), keys.len(), "each key loaded once");

    nodes[1].put(KEYSPACE, "key-0", "new").expect("stored");
    for node in &nodes {
        assert_eq!(node.get(KEYSPACE, "key-0"), Ok(Bytes::from_static(b"new")));
    }
    let values = nodes[2].get_many(KEYSPACE, &keys);
    assert_eq!(values.len(), keys.len());
    assert!(values.iter().all(Result::is_ok), "{values:?}");
    stop_all(nodes);
}

#[test]
fn garbage_on_the_peer_port_closes_only_that_connection() {
    let source = Counting::new(Duration::ZERO);
    let nodes = start_cluster(3, &source);
    for i in 0..10 {
        nodes[0].get(KEYSPACE, format!("w-{i}")).expect("value");
    }

    let mut intruder = TcpStream::connect(nodes[1].local_addr()).expect("connects");
    intruder.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout set");
    intruder.write_all(&[0xff; 64]).expect("written");
    let mut received = Vec::new();
    let closed = loop {
        let mut buffer = [0u8; 256];
        match intruder.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "the node closes a connection that sent garbage");
    assert!(!received.is_empty(), "an error frame precedes the close");

    for i in 0..30 {
        let key = format!("after-{i}");
        for node in &nodes {
            assert_eq!(node.get(KEYSPACE, &key), Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    stop_all(nodes);
}

#[test]
fn graceful_stop_while_the_others_keep_answering() {
    let source = Counting::new(Duration::from_millis(2));
    let mut nodes = start_cluster(3, &source);
    let keys: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
    for key in &keys {
        nodes[2].get(KEYSPACE, key).expect("value");
    }
    let leaving = nodes.remove(2);
    let readers: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|node| {
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut answered = 0;
                for round in 0..10 {
                    for key in &keys {
                        let value = node.get(KEYSPACE, key);
                        assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))), "round {round}");
                        answered += 1;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                answered
            })
        })
        .collect();
    within("stop", move || leaving.stop());
    for reader in readers {
        assert_eq!(reader.join().expect("no panic"), 10 * keys.len());
    }
    for key in &keys {
        for node in &nodes {
            assert_eq!(node.get(KEYSPACE, key), Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    stop_all(nodes);
}

#[test]
fn a_killed_peer_is_loaded_around() {
    let source = Counting::new(Duration::ZERO);
    let mut nodes = start_cluster(3, &source);
    let dead = nodes.remove(0);
    dead.kill();
    for i in 0..20 {
        let key = format!("d-{i}");
        for node in &nodes {
            assert_eq!(node.get(KEYSPACE, &key), Ok(Bytes::from(format!("v:{key}"))));
        }
    }
    assert_eq!(dead.get(KEYSPACE, "d-0"), Err(Error::ShuttingDown));
    stop_all(nodes);
}

#[test]
fn groupcache_compat_nodes_load_once_and_answer_a_plain_http_get() {
    let source = Counting::new(Duration::from_millis(20));
    let nodes: Vec<Handle> = (0..3)
        .map(|_| {
            Node::builder()
                .groupcache_compat()
                .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
                .config(|config| config.peer_timeout = Duration::from_secs(10))
                .start()
                .expect("node starts")
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(|node| node.node_id().to_owned()).collect();
    assert!(urls.iter().all(|url| url.starts_with("http://127.0.0.1:")), "{urls:?}");
    for node in &nodes {
        node.set_peers(urls.clone());
    }
    let keys = ["plain", "a b", "x/y", "100%", "ключ", ""];
    for key in keys {
        for node in &nodes {
            let value = node.get(KEYSPACE, key);
            assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))), "{key:?}");
        }
    }
    assert_eq!(source.calls(), keys.len(), "each key loaded once in the ring");
    // A Go peer's request, as Go's client writes it, answered with a protobuf GetResponse.
    let address = urls[0].trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connects");
    let request = format!("GET /_groupcache/{KEYSPACE}/plain HTTP/1.1\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("written");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout set");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(7).any(|w| w == b"v:plain") {
        let read = stream.read(&mut chunk).expect("an answer");
        assert!(read > 0, "closed early: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("application/x-protobuf"), "{text}");
    stop_all(nodes);
}
