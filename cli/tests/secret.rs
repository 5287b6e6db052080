//! `herdcache node --cluster-secret-file` as real processes on loopback: two members with the
//! same secret form a ring; a process without the secret, and one with another, are refused
//! at the hello — their writes through their own front ends change nothing on the members,
//! and they never become members — and a secret file that is missing or too short stops the
//! node at start with the reason.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use herdcache_tests::drive;
use hyper::StatusCode;
use serde_json::Value as Json;

use support::*;

const KEYS: usize = 24;

/// A file under the target directory's temp area holding `contents`.
fn secret_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdcache-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("the secret file is written");
    path
}

fn member_ids(members: &Json) -> Vec<String> {
    members["members"]
        .as_array()
        .map(|list| list.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn start(listen: SocketAddr, peers: &[SocketAddr], secret: Option<&PathBuf>) -> NodeProcess {
    let path = secret.map(|path| path.display().to_string());
    let mut flags = vec!["--keyspace", "ks", "--source", "echo:v-"];
    if let Some(path) = &path {
        flags.extend(["--cluster-secret-file", path.as_str()]);
    }
    NodeProcess::start(listen, peers, &flags)
}

#[test]
fn members_with_the_secret_form_a_ring_and_processes_without_it_cannot_write_or_join() {
    // One trailing newline, as `echo` writes it, is not part of the secret.
    let secret = secret_file("good", b"a secret of the cluster members\n");
    let same = secret_file("same", b"a secret of the cluster members");
    let other = secret_file("other", b"another secret, as long as that");
    let (a, b) = (free_addr(), free_addr());
    let (stranger, forger) = (free_addr(), free_addr());
    let a_node = start(a, &[a, b], Some(&secret));
    let b_node = start(b, &[a, b], Some(&same));
    // Each intruder lists the members and itself: it dials them for its writes and pings.
    let no_secret = start(stranger, &[a, b, stranger], None);
    let wrong_secret = start(forger, &[a, b, forger], Some(&other));
    drive(async {
        // The members connect to each other.
        let started = Instant::now();
        while !(connected(&a_node.members().await, &b_node.id)
            && connected(&b_node.members().await, &a_node.id))
        {
            assert!(started.elapsed() < Duration::from_secs(10), "the members never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The ring works: writes through one member are read through the other.
        let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("key-{i}").into_bytes()).collect();
        for key in &keys {
            let answer = a_node.put("ks", key, b"member").await;
            assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
        }
        for key in &keys {
            assert_eq!(b_node.get("ks", key).await.body, "member");
        }
        // The intruders write every key through their own front ends (answered or not).
        for intruder in [&no_secret, &wrong_secret] {
            for key in &keys {
                let _ = intruder.put("ks", key, b"intruder").await;
                let _ = intruder.delete("ks", b"key-0").await;
            }
        }
        // Nothing changed on the members, and they never counted an intruder in.
        for node in [&a_node, &b_node] {
            for key in &keys {
                let answer = node.get("ks", key).await;
                assert_eq!(answer.body, "member", "{} {}", node.id, String::from_utf8_lossy(key));
            }
            let members = node.members().await;
            let mut ids = member_ids(&members);
            ids.sort();
            let mut expected = vec![a_node.id.clone(), b_node.id.clone()];
            expected.sort();
            assert_eq!(ids, expected, "{members:#}");
        }
        // The intruders' dials were refused at the hello, and counted.
        let refused = |stats: &Json| stats["security"]["refused_unauthenticated"].as_u64();
        let total = refused(&a_node.stats().await).expect("a counter")
            + refused(&b_node.stats().await).expect("a counter");
        assert!(total >= 2, "both intruders were refused: {total}");
        assert_eq!(a_node.stats().await["security"]["refused_unauthorized"], 0);
        // Each intruder in turn sees the members as unreachable, never connected.
        for intruder in [&no_secret, &wrong_secret] {
            let members = intruder.members().await;
            assert!(
                !connected(&members, &a_node.id) && !connected(&members, &b_node.id),
                "{members:#}"
            );
        }
    });
}

#[test]
fn a_secret_file_that_is_missing_or_too_short_stops_the_node_with_the_reason() {
    let short = secret_file("short", b"fifteen bytes!!\n");
    let missing = short.with_file_name("no-such-file");
    for (path, reason) in [(&short, "fewer than 16"), (&missing, "cannot read it")] {
        let path = path.display().to_string();
        let (code, stderr) = start_refused(&["--cluster-secret-file", &path]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(reason) && stderr.contains("--cluster-secret-file"), "{stderr}");
    }
}
