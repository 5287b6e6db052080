//! Three nodes in groupcache-compatibility mode over real loopback TCP: the ring, fetches
//! and serving all speak groupcache's HTTP protocol.

mod common;

use std::time::Duration;

use common::{Counting, KEYSPACE, within};
use herdcache_proto::groupcache::{GetReply, parse_get_response};
use herdcache_proto::http::{HttpLimits, ResponseDecoder};
use herdcache_tokio::{Bytes, Handle, KeyspaceConfig, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn compat_cluster(n: usize, source: &Counting) -> Vec<Handle> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let node = Node::builder()
            .groupcache_compat()
            .keyspace(KeyspaceConfig::new(KEYSPACE, 16 << 20), source.clone())
            .config(|config| config.peer_timeout = Duration::from_secs(10))
            .start()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_cluster_loads_each_key_once_with_escaped_keys() {
    let source = Counting::new(Duration::from_millis(20));
    let nodes = compat_cluster(3, &source).await;
    let mut keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    keys.extend(["with space", "a+b", "a/b", "%2F", "ключ 🔑", ""].map(String::from));
    for key in &keys {
        let mut gets = Vec::new();
        for node in &nodes {
            let (node, key) = (node.clone(), key.clone());
            gets.push(tokio::spawn(async move { node.get(KEYSPACE, key).await }));
        }
        for get in gets {
            let value = within("get", get).await.expect("task ran");
            assert_eq!(value, Ok(Bytes::from(format!("v:{key}"))), "{key:?}");
        }
    }
    assert_eq!(source.calls(), keys.len(), "one load per key in the cluster");

    // A stampede of one cold key from every node.
    let mut gets = Vec::new();
    for i in 0..90 {
        let node = nodes[i % 3].clone();
        gets.push(tokio::spawn(async move { node.get(KEYSPACE, "cold").await }));
    }
    for get in gets {
        assert_eq!(within("get", get).await.expect("ran"), Ok(Bytes::from_static(b"v:cold")));
    }
    assert_eq!(source.calls(), keys.len() + 1, "the stampede loaded once");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_client_gets_a_protobuf_answer() {
    let source = Counting::new(Duration::ZERO);
    let nodes = compat_cluster(3, &source).await;
    let address = nodes[0].node_id().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.expect("connects");
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
    // A peer's request loads at the node asked, never forwarded: one load.
    assert_eq!(source.calls(), 1);
    for node in nodes {
        node.stop().await;
    }
}
