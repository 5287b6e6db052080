//! Runs the built `herdcache node` binary as real processes on loopback: a native ring with
//! `echo:` sources, a ring in front of the in-test HTTP origin, graceful stops on SIGTERM and
//! SIGINT, flag errors and `--help`.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herdcache_tests::http::{self, Answer, escape};
use herdcache_tests::{Origin, drive, origin_value};
use hyper::{Method, StatusCode};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// What the tests keep of a process's stderr.
const MAX_STDERR: u64 = 1 << 20;

/// A free loopback port (bound, then released for the process to take).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port");
    listener.local_addr().expect("its address")
}

/// A running `herdcache node` process; killed when dropped.
struct NodeProcess {
    child: Child,
    id: String,
    http: String,
    stderr: Option<JoinHandle<String>>,
}

impl NodeProcess {
    /// Starts `herdcache node` listening on `listen`, with `peers` and further flags, and waits
    /// for its ready line.
    fn start(listen: SocketAddr, peers: &[SocketAddr], flags: &[&str]) -> NodeProcess {
        let peers = peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let mut command = Command::new(env!("CARGO_BIN_EXE_herdcache"));
        command.args(["node", "--listen", &listen.to_string(), "--http", "127.0.0.1:0"]);
        if !peers.is_empty() {
            command.args(["--peers", &peers]);
        }
        let mut child = command
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("herdcache node starts");
        let stdout = child.stdout.take().expect("a stdout pipe");
        let stderr = child.stderr.take().expect("a stderr pipe");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.take(MAX_STDERR).read_to_string(&mut text);
            text
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = ready_tx.send(line);
            }
            // Keep draining, so that the pipe never fills.
            for _ in lines {}
        });
        let mut node =
            NodeProcess { child, id: String::new(), http: String::new(), stderr: Some(stderr) };
        let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = node.child.kill();
                let _ = node.child.wait();
                panic!("no ready line within {READY_TIMEOUT:?}; stderr:\n{}", node.stderr_text());
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in the ready line {line:?}"))
                .to_owned()
        };
        assert!(line.starts_with("herdcache node ready:"), "{line}");
        node.id = field("id=");
        node.http = format!("http://{}", field("http="));
        node
    }

    fn url(&self, keyspace: &str, key: &[u8]) -> String {
        format!("{}/v1/{}/{}", self.http, escape(keyspace.as_bytes()), escape(key))
    }

    async fn get(&self, keyspace: &str, key: &[u8]) -> Answer {
        http::get(&self.url(keyspace, key)).await.expect("the front end answers")
    }

    async fn put(&self, keyspace: &str, key: &[u8], value: &'static [u8]) -> Answer {
        http::request(Method::PUT, &self.url(keyspace, key), value).await.expect("an answer")
    }

    async fn delete(&self, keyspace: &str, key: &[u8]) -> Answer {
        http::request(Method::DELETE, &self.url(keyspace, key), "").await.expect("an answer")
    }

    async fn stats(&self) -> serde_json::Value {
        let answer = http::get(&format!("{}/v1/stats", self.http)).await.expect("stats");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        serde_json::from_slice(&answer.body).expect("stats are JSON")
    }

    /// Sends `signal` (TERM, INT) and waits (bounded) for the exit; returns it and stderr.
    fn signal_and_wait(mut self, signal: &str) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(sent.is_ok_and(|status| status.success()), "kill -{signal} {pid}");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, self.stderr_text());
            }
            assert!(Instant::now() < deadline, "no exit within {EXIT_TIMEOUT:?} of SIG{signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote on stderr (it must have exited or been killed).
    fn stderr_text(&mut self) -> String {
        self.stderr.take().and_then(|reader| reader.join().ok()).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` nodes in one native ring, each with `flags`.
fn ring(n: usize, flags: &[&str]) -> Vec<NodeProcess> {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    addrs.iter().map(|&addr| NodeProcess::start(addr, &addrs, flags)).collect()
}

fn counter(stats: &serde_json::Value, keyspace: &str, name: &str) -> u64 {
    stats["keyspaces"][keyspace][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} for {keyspace} in {stats:#}"))
}

/// `name` of keyspace `ks`, summed over `nodes`.
async fn stats_sum(nodes: &[NodeProcess], name: &str) -> u64 {
    let mut sum = 0;
    for node in nodes {
        sum += counter(&node.stats().await, "ks", name);
    }
    sum
}

#[test]
fn echo_ring_serves_get_put_delete_from_every_node_and_leaves_on_sigterm() {
    let nodes = ring(3, &["--keyspace", "ks:8MiB", "--keyspace", "other", "--source", "echo:v-"]);
    drive(async {
        let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("key-{i}").into_bytes()).collect();
        for key in &keys {
            for node in &nodes {
                let answer = node.get("ks", key).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                assert_eq!(answer.body, [b"v-".as_slice(), key].concat());
            }
        }
        let awkward = "a b+c/d%e ü".as_bytes();
        for node in &nodes {
            assert_eq!(node.get("ks", awkward).await.body, [b"v-".as_slice(), awkward].concat());
        }

        // One load per key in the whole cluster; every node saw its gets.
        let mut local_loads = 0;
        for node in &nodes {
            let stats = node.stats().await;
            assert_eq!(stats["node"], node.id.as_str());
            for name in [
                "gets",
                "cache_hits",
                "peer_loads",
                "peer_errors",
                "loads",
                "loads_deduped",
                "local_loads",
                "local_load_errs",
                "server_requests",
                "hot_hits",
                "bytes",
                "items",
                "evictions",
                "max_bytes",
            ] {
                counter(&stats, "ks", name);
            }
            assert_eq!(counter(&stats, "ks", "gets"), 31);
            assert_eq!(counter(&stats, "ks", "max_bytes"), 8 << 20);
            assert_eq!(counter(&stats, "other", "gets"), 0);
            assert_eq!(stats["keyspaces"]["ks"]["breaker"]["state"], "closed");
            assert!(counter(&stats, "ks", "items") > 0);
            local_loads += counter(&stats, "ks", "local_loads");
        }
        assert_eq!(local_loads, 31, "each key loaded once in the cluster");

        // A put through one node is seen through every node; a delete through another too.
        let answer = nodes[0].put("ks", b"key-7", b"written").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
        for node in &nodes {
            assert_eq!(node.get("ks", b"key-7").await.body, "written");
        }
        let answer = nodes[2].delete("ks", b"key-7").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text());
        for node in &nodes {
            assert_eq!(node.get("ks", b"key-7").await.body, "v-key-7", "reloaded after the delete");
        }

        // Errors are typed.
        assert_eq!(nodes[1].get("nope", b"k").await.status, StatusCode::NOT_FOUND);
        let bad = http::get(&format!("{}/v1/ks", nodes[1].http)).await.expect("an answer");
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let post = http::request(Method::POST, &nodes[1].url("ks", b"k"), "x").await.expect("x");
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
        let ttl =
            http::request(Method::PUT, &format!("{}?ttl=never", nodes[1].url("ks", b"k")), "x")
                .await
                .expect("an answer");
        assert_eq!(ttl.status, StatusCode::BAD_REQUEST);
    });

    // SIGTERM: a graceful leave, exit 0; the others keep answering.
    let mut nodes = nodes.into_iter();
    let first = nodes.next().expect("three nodes");
    let (status, stderr) = first.signal_and_wait("TERM");
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("SIGTERM: leaving the cluster"), "{stderr}");
    assert!(stderr.contains("left the cluster in"), "{stderr}");
    let rest: Vec<NodeProcess> = nodes.collect();
    drive(async {
        // The leave was announced: the survivors own every key now and never try the node
        // that left (no peer errors, and every fresh key is loaded once).
        let loads_before: u64 = stats_sum(&rest, "local_loads").await;
        for i in 0..30 {
            let key = format!("after-{i}");
            for node in &rest {
                assert_eq!(node.get("ks", key.as_bytes()).await.body, format!("v-{key}"));
            }
        }
        assert_eq!(stats_sum(&rest, "peer_errors").await, 0, "nobody fetched from the leaver");
        assert_eq!(stats_sum(&rest, "local_loads").await - loads_before, 30);
    });
    for node in rest {
        let (status, stderr) = node.signal_and_wait("INT");
        assert!(status.success(), "{status}\n{stderr}");
    }
}

#[test]
fn http_origin_ring_loads_once_and_maps_origin_statuses() {
    drive(async {
        let origin = Origin::start().await.expect("an origin");
        origin.respond_with("gone", StatusCode::NOT_FOUND);
        origin.respond_with("broken", StatusCode::INTERNAL_SERVER_ERROR);
        let template = origin.template("herdcache");
        let nodes = tokio::task::spawn_blocking(move || {
            let flags = ["--keyspace", "items:16MiB:1m", "--origin-timeout", "500ms"];
            ring(2, &[&flags[..], &["--source", &template]].concat())
        })
        .await
        .expect("started");

        let keys: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("item {i}+x/y").into_bytes())
            .chain([b"100%".to_vec(), "ключ".as_bytes().to_vec()])
            .collect();
        for key in &keys {
            for node in &nodes {
                let answer = node.get("items", key).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
                assert_eq!(answer.body, origin_value(key));
            }
            assert_eq!(origin.loads_of(key), 1, "{:?}: one load in the ring, key intact", key);
        }

        let gone = nodes[0].get("items", b"gone").await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.text());
        let broken = nodes[1].get("items", b"broken").await;
        assert_eq!(broken.status, StatusCode::BAD_GATEWAY, "{}", broken.text());
        assert!(broken.text().contains("500"), "{}", broken.text());

        origin.set_delay(Duration::from_secs(2));
        let slow = nodes[0].get("items", b"slow").await;
        assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT, "{}", slow.text());

        let stats = nodes[0].stats().await;
        assert!(counter(&stats, "items", "local_load_errs") >= 1, "{stats:#}");
    });
}

#[test]
fn a_lone_node_on_port_zero_stops_on_sigint() {
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let node = NodeProcess::start(any_port, &[], &["--keyspace", "ks", "--source", "echo:"]);
    drive(async {
        assert_eq!(node.get("ks", b"hello").await.body, "hello");
    });
    let (status, stderr) = node.signal_and_wait("INT");
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("SIGINT: leaving the cluster"), "{stderr}");
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_herdcache"))
        .args(["node", "--help"])
        .output()
        .expect("herdcache runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--advertise",
        "--peers",
        "--http",
        "--groupcache-compat",
        "--keyspace",
        "--source",
        "--cluster",
        "--origin-timeout",
        "--stop-timeout",
        "echo:PREFIX",
        "{key}",
        "Examples:",
        "GET    /v1/stats",
        "SIGTERM",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn flags_that_do_not_fit_are_refused() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_herdcache")).args(args).output().expect("herdcache runs")
    };
    // clap's usage errors: exit 2.
    let missing_source = run(&["node", "--listen", "127.0.0.1:0", "--keyspace", "ks"]);
    assert_eq!(missing_source.status.code(), Some(2));
    let bad_size =
        run(&["node", "--listen", "127.0.0.1:0", "--keyspace", "ks:lots", "--source", "echo:"]);
    assert_eq!(bad_size.status.code(), Some(2));
    // Flags that parse but do not fit together: exit 1 with the reason.
    let unpaired =
        run(&["node", "--listen", "127.0.0.1:0", "--keyspace", "ks", "--source", "other=echo:"]);
    assert_eq!(unpaired.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unpaired.stderr).contains("no --keyspace other"));
    // A groupcache ring names its members by base URL.
    let compat = run(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--groupcache-compat",
        "--peers",
        "127.0.0.1:7001",
        "--keyspace",
        "ks",
        "--source",
        "echo:",
    ]);
    assert_eq!(compat.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&compat.stderr).contains("base URLs"));
}
