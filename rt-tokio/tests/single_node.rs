//! One node over real loopback TCP: the cache API end to end.

mod common;

use std::time::Duration;

use common::{Counting, KEYSPACE, start_node, within};
use herdcache_tokio::{Bytes, Entry, Error, KeyspaceConfig, Node, Path, StartError, source_fn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_loads_once_then_hits() {
    let source = Counting::new(Duration::from_millis(5));
    let node = start_node(source.clone()).await;
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
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_replace_and_remove_values() {
    let source = Counting::new(Duration::ZERO);
    let node = start_node(source.clone()).await;
    within("put", node.put(KEYSPACE, "b", "stored")).await.expect("stored");
    assert_eq!(within("get", node.get(KEYSPACE, "b")).await, Ok(Bytes::from_static(b"stored")));
    assert_eq!(source.calls(), 0, "a stored value is served without a load");

    within("delete", node.delete(KEYSPACE, "b")).await.expect("deleted");
    assert_eq!(within("get", node.get(KEYSPACE, "b")).await, Ok(Bytes::from_static(b"v:b")));
    assert_eq!(source.calls(), 1, "after a delete the value is loaded again");

    within("put ttl", node.put_with_ttl(KEYSPACE, "t", "short", Duration::from_millis(50)))
        .await
        .expect("stored");
    assert_eq!(within("get", node.get(KEYSPACE, "t")).await, Ok(Bytes::from_static(b"short")));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(within("get", node.get(KEYSPACE, "t")).await, Ok(Bytes::from_static(b"v:t")));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_errors() {
    let source = Counting::new(Duration::ZERO);
    let node = start_node(source.clone()).await;
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
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspaces_are_created_updated_and_removed_at_run_time() {
    let node = start_node(Counting::new(Duration::ZERO)).await;
    let source = source_fn(|key: Bytes| async move { Ok::<_, String>(key) });
    node.create_keyspace(KeyspaceConfig::new("echo", 1 << 20), source).expect("created");
    assert_eq!(within("get", node.get("echo", "hello")).await, Ok(Bytes::from_static(b"hello")));
    let again = source_fn(|_key: Bytes| async move { Ok::<_, String>(Bytes::new()) });
    assert!(node.create_keyspace(KeyspaceConfig::new("echo", 1 << 20), again).is_err());
    assert_eq!(within("get", node.get("echo", "other")).await, Ok(Bytes::from_static(b"other")));
    node.update_keyspace(KeyspaceConfig::new("echo", 2 << 20)).expect("updated");
    let mut names: Vec<_> = node.keyspaces().into_iter().map(|config| config.name).collect();
    names.sort();
    assert_eq!(names, vec![Bytes::from_static(b"echo"), Bytes::from_static(b"ks")]);
    node.remove_keyspace("echo").expect("removed");
    assert_eq!(within("get", node.get("echo", "x")).await, Err(Error::UnknownKeyspace));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_duplicate_keyspaces_and_bad_config() {
    let duplicate = Node::builder()
        .keyspace(KeyspaceConfig::new("a", 1 << 20), Counting::default())
        .keyspace(KeyspaceConfig::new("a", 1 << 20), Counting::default())
        .start()
        .await;
    assert!(matches!(duplicate, Err(StartError::DuplicateKeyspace(name)) if name == "a"));
    let bad =
        Node::builder().config(|config| config.request_timeout = Duration::ZERO).start().await;
    assert!(matches!(bad, Err(StartError::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_killed_nodes_refuse_requests() {
    let node = start_node(Counting::new(Duration::ZERO)).await;
    let other = node.clone();
    node.kill();
    assert_eq!(within("get", other.get(KEYSPACE, "k")).await, Err(Error::ShuttingDown));

    let node = start_node(Counting::new(Duration::ZERO)).await;
    let other = node.clone();
    within("stop", node.stop()).await;
    assert_eq!(within("get", other.get(KEYSPACE, "k")).await, Err(Error::ShuttingDown));
}
