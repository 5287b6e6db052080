//! One node over real loopback TCP: the blocking cache API end to end.

mod common;

use std::thread;
use std::time::Duration;

use common::{Counting, KEYSPACE, start_node, within};
use herdcache_mio::{Bytes, Entry, Error, KeyspaceConfig, Node, Path, StartError, source_fn};

#[test]
fn get_loads_once_then_hits() {
    let source = Counting::new(Duration::from_millis(5));
    let node = start_node(source.clone());
    let first = node.get_value(KEYSPACE, "a").expect("loaded");
    assert_eq!(first.bytes, Bytes::from_static(b"v:a"));
    assert_eq!(first.path, Path::Load);
    let second = node.get_value(KEYSPACE, b"a").expect("hit");
    assert_eq!(second.bytes, first.bytes);
    assert_eq!(second.path, Path::LocalHit);
    assert_eq!(source.calls(), 1);

    let fast = node.keyspace(KEYSPACE).expect("keyspace exists");
    assert_eq!(fast.get("a").expect("hit"), first.bytes);
    assert_eq!(fast.get_value("a").expect("hit").path, Path::LocalHit);
    assert_eq!(fast.peek_with("a", <[u8]>::len), Some(3));
    assert_eq!(fast.peek_with("never-loaded", <[u8]>::len), None);
    assert_eq!(source.calls(), 1);
    within("stop", move || node.stop());
}

#[test]
fn put_and_delete_replace_and_remove_values() {
    let source = Counting::new(Duration::ZERO);
    let node = start_node(source.clone());
    node.put(KEYSPACE, "b", "stored").expect("stored");
    assert_eq!(node.get(KEYSPACE, "b"), Ok(Bytes::from_static(b"stored")));
    assert_eq!(source.calls(), 0, "a stored value is served without a load");

    node.delete(KEYSPACE, "b").expect("deleted");
    assert_eq!(node.get(KEYSPACE, "b"), Ok(Bytes::from_static(b"v:b")));
    assert_eq!(source.calls(), 1, "after a delete the value is loaded again");

    node.put_with_ttl(KEYSPACE, "t", "short", Duration::from_millis(50)).expect("stored");
    assert_eq!(node.get(KEYSPACE, "t"), Ok(Bytes::from_static(b"short")));
    thread::sleep(Duration::from_millis(120));
    assert_eq!(node.get(KEYSPACE, "t"), Ok(Bytes::from_static(b"v:t")));
    node.stop();
}

#[test]
fn batches_and_errors() {
    let source = Counting::new(Duration::ZERO);
    let node = start_node(source.clone());
    let entries = vec![
        Entry { key: Bytes::from_static(b"x"), value: Bytes::from_static(b"1"), expires_at: None },
        Entry { key: Bytes::from_static(b"y"), value: Bytes::from_static(b"2"), expires_at: None },
    ];
    assert_eq!(node.put_many(KEYSPACE, entries), vec![Ok(()), Ok(())]);
    let got = node.get_many(KEYSPACE, ["x", "y", "z", "missing-1", "fail-1"]);
    let got: Vec<_> = got.into_iter().map(|r| r.map(|v| v.bytes)).collect();
    assert_eq!(got[0], Ok(Bytes::from_static(b"1")));
    assert_eq!(got[1], Ok(Bytes::from_static(b"2")));
    assert_eq!(got[2], Ok(Bytes::from_static(b"v:z")));
    assert_eq!(got[3], Err(Error::NotFound));
    assert_eq!(got[4], Err(Error::DataSource(Bytes::from_static(b"broken: database down"))));
    assert_eq!(node.delete_many(KEYSPACE, ["x", "y"]), vec![Ok(()), Ok(())]);
    assert_eq!(node.get(KEYSPACE, "x"), Ok(Bytes::from_static(b"v:x")));

    assert_eq!(node.get("nope", "k"), Err(Error::UnknownKeyspace));
    node.delete_keyspace(KEYSPACE).expect("cleared");
    let calls = source.calls();
    assert_eq!(node.get(KEYSPACE, "z"), Ok(Bytes::from_static(b"v:z")));
    assert_eq!(source.calls(), calls + 1, "the keyspace was cleared");

    let stats = node.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].0, Bytes::from_static(KEYSPACE.as_bytes()));
    assert_eq!(node.keyspace_stats(KEYSPACE), Some(stats[0].1));
    node.stop();
}

#[test]
fn keyspaces_are_created_updated_and_removed_at_run_time() {
    let node = start_node(Counting::new(Duration::ZERO));
    let source = source_fn(|key: Bytes| Ok::<_, String>(key));
    node.create_keyspace(KeyspaceConfig::new("echo", 1 << 20), source).expect("created");
    assert_eq!(node.get("echo", "hello"), Ok(Bytes::from_static(b"hello")));
    let again = source_fn(|_key: Bytes| Ok::<_, String>(Bytes::new()));
    assert!(node.create_keyspace(KeyspaceConfig::new("echo", 1 << 20), again).is_err());
    assert_eq!(node.get("echo", "other"), Ok(Bytes::from_static(b"other")));
    node.update_keyspace(KeyspaceConfig::new("echo", 2 << 20)).expect("updated");
    let mut names: Vec<_> = node.keyspaces().into_iter().map(|config| config.name).collect();
    names.sort();
    assert_eq!(names, vec![Bytes::from_static(b"echo"), Bytes::from_static(b"ks")]);
    node.remove_keyspace("echo").expect("removed");
    assert_eq!(node.get("echo", "x"), Err(Error::UnknownKeyspace));
    node.stop();
}

#[test]
fn start_refuses_duplicate_keyspaces_and_bad_config() {
    let duplicate = Node::builder()
        .keyspace(KeyspaceConfig::new("a", 1 << 20), Counting::default())
        .keyspace(KeyspaceConfig::new("a", 1 << 20), Counting::default())
        .start();
    assert!(matches!(duplicate, Err(StartError::DuplicateKeyspace(name)) if name == "a"));
    let bad = Node::builder().config(|config| config.request_timeout = Duration::ZERO).start();
    assert!(matches!(bad, Err(StartError::Config(_))));
    let taken = Node::builder().start().expect("starts");
    let clash = Node::builder().listen(taken.local_addr()).start();
    assert!(matches!(clash, Err(StartError::Bind(_))));
}

#[test]
fn stopped_killed_and_dropped_nodes_refuse_requests() {
    let node = start_node(Counting::new(Duration::ZERO));
    let other = node.clone();
    node.kill();
    assert_eq!(other.get(KEYSPACE, "k"), Err(Error::ShuttingDown));

    let node = start_node(Counting::new(Duration::ZERO));
    let other = node.clone();
    within("stop", move || node.stop());
    assert_eq!(other.get(KEYSPACE, "k"), Err(Error::ShuttingDown));

    // Dropping every handle kills the node: its port is free again.
    let node = start_node(Counting::new(Duration::ZERO));
    let address = node.local_addr();
    drop(node);
    let again = Node::builder().listen(address).start().expect("the port was released");
    again.stop();
}

#[test]
fn a_caller_blocked_on_a_load_is_answered_when_the_node_is_killed() {
    let source = Counting::new(Duration::from_secs(3));
    let node = start_node(source.clone());
    let caller = node.clone();
    let waiting = thread::spawn(move || caller.get(KEYSPACE, "slow"));
    while source.calls() == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    let started = std::time::Instant::now();
    node.kill();
    assert_eq!(waiting.join().expect("no panic"), Err(Error::ShuttingDown));
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once");
}
