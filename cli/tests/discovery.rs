//! `herdcache discovery` (the survey server) and `herdcache node --discovery survey://…`
//! processes: 3 nodes find each other through the server, serve each other's keys, and a
//! node killed with SIGKILL drops from the published list once a survey misses it.
//!
//! The test prints a log of what happened and when (`--nocapture` shows it).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herdcache_tests::etcd::Timeline;
use hyper::StatusCode;
use serde_json::Value as Json;

use support::*;

const CONVERGE: Duration = Duration::from_secs(15);

/// A running `herdcache discovery`; killed when dropped.
struct DiscoveryProcess {
    child: Child,
    stderr: Stderr,
    survey: String,
    publish: String,
}

impl DiscoveryProcess {
    fn start() -> DiscoveryProcess {
        for _ in 0..BIND_ATTEMPTS {
            let (survey, publish) = (free_addr().to_string(), free_addr().to_string());
            let mut child = Command::new(env!("CARGO_BIN_EXE_herdcache"))
                .args(["discovery", "--survey", &format!("tcp://{survey}")])
                .args(["--publish", &format!("tcp://{publish}")])
                .args(["--poll-time", "500ms", "--survey-time", "300ms"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("herdcache discovery starts");
            let stderr = Stderr::capture(child.stderr.take().expect("a stderr pipe"));
            let mut process = DiscoveryProcess { child, stderr, survey, publish };
            if process.stderr.wait_for("herdcache discovery: surveying on", READY_TIMEOUT) {
                return process;
            }
            let _ = process.child.kill();
            let text = process.stderr.all();
            assert!(text.contains("cannot listen"), "no ready line; stderr:\n{text}");
        }
        panic!("no free ports in {BIND_ATTEMPTS} attempts");
    }

    fn spec(&self) -> String {
        format!("survey://{}?publish={}", self.survey, self.publish)
    }
}

impl Drop for DiscoveryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(spec: &str) -> NodeProcess {
    let flags = ["--discovery", spec, "--keyspace", "ks:8MiB", "--source", "echo:v-"];
    for _ in 0..BIND_ATTEMPTS {
        match NodeProcess::try_start(&node_flags(free_addr(), &[], &flags)) {
            Ok(node) => return node,
            Err(stderr) if stderr.contains(LOST_PORT) => continue,
            Err(stderr) => panic!("no ready line within {READY_TIMEOUT:?}; stderr:\n{stderr}"),
        }
    }
    panic!("no free port in {BIND_ATTEMPTS} attempts");
}

/// The ids `members` lists, sorted, and whether all are alive and connected.
fn listed(members: &Json) -> (Vec<String>, bool) {
    let list = members["members"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<String> =
        list.iter().map(|m| m["id"].as_str().unwrap_or_default().to_owned()).collect();
    ids.sort();
    let all_up =
        list.iter().all(|m| m["self"] == true || (m["state"] == "alive" && m["connected"] == true));
    (ids, all_up)
}

#[test]
fn nodes_find_each_other_through_herdcache_discovery_and_a_killed_node_drops() {
    let log = Timeline::new("survey processes");
    let server = DiscoveryProcess::start();
    log.note(format!("herdcache discovery on {}", server.spec()));
    let mut nodes: Vec<NodeProcess> = (0..3).map(|_| start_node(&server.spec())).collect();
    let mut ids: Vec<String> = nodes.iter().map(|node| node.id.clone()).collect();
    ids.sort();
    herdcache_tests::drive(async {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let took = until_all(&all, CONVERGE, "3 nodes list each other", |_, members| {
            listed(members) == (ids.clone(), true)
        })
        .await;
        log.note(format!("each node lists all 3, alive and connected ({took:?})"));
        let published = format!("herdcache discovery: members [{}]", ids.join(", "));
        assert!(server.stderr.wait_for(&published, CONVERGE), "{}", server.stderr.text());
        log.note(format!("the server said: {published}"));
        for node in &all {
            assert_eq!(node.members().await["discovery"]["kind"], "survey");
            for i in 0..10 {
                let key = format!("k{i}");
                let answer = node.get("ks", key.as_bytes()).await;
                assert_eq!(answer.status, StatusCode::OK, "get {key} via {}", node.id);
                assert_eq!(answer.body, format!("v-{key}").into_bytes());
            }
        }
        log.note("10 keys through each node");
    });
    let killed = nodes.pop().expect("3 nodes");
    let killed_id = killed.id.clone();
    drop(killed); // SIGKILL
    let rest: Vec<String> = ids.iter().filter(|id| **id != killed_id).cloned().collect();
    let published = format!("herdcache discovery: members [{}]", rest.join(", "));
    assert!(server.stderr.wait_for(&published, CONVERGE), "{}", server.stderr.text());
    log.note(format!("killed {killed_id}; the server said: {published}"));
    herdcache_tests::drive(async {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let took = until_all(&all, CONVERGE, "the others drop the killed node", |_, members| {
            listed(members) == (rest.clone(), true)
        })
        .await;
        log.note(format!("the 2 others list each other only ({took:?})"));
    });
}
