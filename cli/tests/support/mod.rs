//! What the tests of `herdcache node` processes share: starting the built binary on free
//! loopback ports and waiting for its ready line, its stderr as it arrives, signals, the
//! front end's HTTP calls and stats.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use herdcache_tests::http::{self, Answer, escape};
use hyper::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// What the tests keep of a process's stderr.
pub const MAX_STDERR: u64 = 1 << 20;
/// How many times a ring is started on fresh ports when one was taken in the meantime.
pub const BIND_ATTEMPTS: usize = 5;
/// What a node prints when its peer address cannot be bound.
pub const LOST_PORT: &str = "cannot bind the listen address";
/// The node's largest value (the wire protocol's default).
pub const MAX_VALUE: usize = 8 << 20;

/// A free loopback port (bound, then released for the process to take: another socket may
/// take it in between, so starts retry on [`LOST_PORT`]).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port");
    listener.local_addr().expect("its address")
}

/// A running `herdcache node` process; killed when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub id: String,
    pub http: String,
    pub stderr: Stderr,
}

/// A process's stderr as it arrives, line by line (at most [`MAX_STDERR`] bytes), so that a
/// test can wait for what the node says it did instead of sleeping.
#[derive(Clone, Default)]
pub struct Stderr {
    text: Arc<(Mutex<StderrText>, Condvar)>,
}

#[derive(Default)]
pub struct StderrText {
    text: String,
    /// The pipe closed: nothing more will come.
    closed: bool,
}

impl StderrText {
    /// What arrived so far.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Stderr {
    /// Reads `pipe` on a thread of its own until it closes.
    pub fn capture(pipe: impl Read + Send + 'static) -> Stderr {
        let stderr = Stderr::default();
        let shared = stderr.clone();
        std::thread::spawn(move || {
            let (text, arrived) = &*shared.text;
            for line in BufReader::new(pipe.take(MAX_STDERR)).lines() {
                let Ok(line) = line else { break };
                let mut text = text.lock().unwrap_or_else(PoisonError::into_inner);
                text.text.push_str(&line);
                text.text.push('\n');
                arrived.notify_all();
            }
            text.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
            arrived.notify_all();
        });
        stderr
    }

    /// Waits up to `limit` until stderr contains `needle`; whether it did.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        self.wait_until(limit, |text| text.text.contains(needle))
    }

    /// Waits up to `limit` until `done` holds of what arrived, or nothing more can; whether
    /// `done` holds.
    pub fn wait_until(&self, limit: Duration, done: impl Fn(&StderrText) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let (text, arrived) = &*self.text;
        let mut text = text.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if done(&text) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if text.closed || left.is_zero() {
                return false;
            }
            text = arrived.wait_timeout(text, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.text.0.lock().unwrap_or_else(PoisonError::into_inner).text.clone()
    }

    /// Everything, once the pipe closed (bounded: the process must have exited or been
    /// killed, which closes it).
    pub fn all(&self) -> String {
        self.wait_until(EXIT_TIMEOUT, |text| text.closed);
        self.text()
    }
}

impl NodeProcess {
    /// Starts `herdcache node` listening on `listen`, with `peers`, its front end on a free
    /// loopback port and further flags, and waits for its ready line.
    pub fn start(listen: SocketAddr, peers: &[SocketAddr], flags: &[&str]) -> NodeProcess {
        NodeProcess::try_start(&node_flags(listen, peers, flags)).unwrap_or_else(|stderr| {
            panic!("no ready line within {READY_TIMEOUT:?}; stderr:\n{stderr}")
        })
    }

    /// Starts `herdcache node` with `args` and waits for its ready line; else kills it and
    /// returns its stderr.
    pub fn try_start(args: &[String]) -> Result<NodeProcess, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herdcache"))
            .arg("node")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("herdcache node starts");
        let stdout = child.stdout.take().expect("a stdout pipe");
        let stderr = Stderr::capture(child.stderr.take().expect("a stderr pipe"));
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = ready_tx.send(line);
            }
            // Keep draining, so that the pipe never fills.
            for _ in lines {}
        });
        let mut node = NodeProcess { child, id: String::new(), http: String::new(), stderr };
        // An exit before the ready line closes stdout: no need to wait the whole timeout.
        let Ok(line) = ready_rx.recv_timeout(READY_TIMEOUT) else {
            let _ = node.child.kill();
            let _ = node.child.wait();
            return Err(node.stderr_text());
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
        Ok(node)
    }

    /// The front end's `host:port`.
    pub fn http_addr(&self) -> &str {
        self.http.strip_prefix("http://").expect("an http:// URL")
    }

    pub fn url(&self, keyspace: &str, key: &[u8]) -> String {
        format!("{}/v1/{}/{}", self.http, escape(keyspace.as_bytes()), escape(key))
    }

    pub async fn get(&self, keyspace: &str, key: &[u8]) -> Answer {
        http::get(&self.url(keyspace, key)).await.expect("the front end answers")
    }

    pub async fn put(&self, keyspace: &str, key: &[u8], value: &'static [u8]) -> Answer {
        http::request(Method::PUT, &self.url(keyspace, key), value).await.expect("an answer")
    }

    pub async fn delete(&self, keyspace: &str, key: &[u8]) -> Answer {
        http::request(Method::DELETE, &self.url(keyspace, key), "").await.expect("an answer")
    }

    pub async fn stats(&self) -> serde_json::Value {
        let answer = http::get(&format!("{}/v1/stats", self.http)).await.expect("stats");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        serde_json::from_slice(&answer.body).expect("stats are JSON")
    }

    /// The front end's `/v1/members` document.
    pub async fn members(&self) -> serde_json::Value {
        let answer = http::get(&format!("{}/v1/members", self.http)).await.expect("members");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        serde_json::from_slice(&answer.body).expect("members are JSON")
    }

    /// A raw connection to the front end.
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.http_addr()).await.expect("the front end accepts")
    }

    /// Every thread's stack of the running process, by gdb, for the message of a test that
    /// found it hanging (gdb's own complaint when it cannot attach).
    pub fn stacks(&self) -> String {
        let pid = self.child.id().to_string();
        let output = Command::new("gdb")
            .args(["-p", &pid, "-batch", "-nx", "-ex", "thread apply all bt"])
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => format!("(no stacks: gdb did not run: {error})"),
        }
    }

    /// Sends `signal` (TERM, INT) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(sent.is_ok_and(|status| status.success()), "kill -{signal} {pid}");
    }

    /// Waits up to `limit` for the exit; returns it and stderr.
    pub fn wait_exit(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, self.stderr_text());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("no exit within {limit:?}; stderr:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (TERM, INT) and waits (bounded) for the exit; returns it and stderr.
    pub fn signal_and_wait(self, signal: &str) -> (ExitStatus, String) {
        self.signal(signal);
        self.wait_exit(EXIT_TIMEOUT)
    }

    /// Everything the process wrote on stderr (it must have exited or been killed).
    pub fn stderr_text(&mut self) -> String {
        self.stderr.all()
    }

    /// Waits (bounded) until the process wrote `line` on stderr: it got that far.
    pub fn wait_for_stderr(&self, line: &str) {
        let limit = EXIT_TIMEOUT;
        let said = self.stderr.wait_for(line, limit);
        assert!(said, "no {line:?} on stderr within {limit:?}:\n{}", self.stderr.text());
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The arguments after `node` for a member on `listen` with `peers`, its front end on a free
/// loopback port, and `flags`.
pub fn node_flags(listen: SocketAddr, peers: &[SocketAddr], flags: &[&str]) -> Vec<String> {
    let mut args = vec!["--listen".to_owned(), listen.to_string()];
    args.extend(["--http".to_owned(), "127.0.0.1:0".to_owned()]);
    if !peers.is_empty() {
        let peers = peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        args.extend(["--peers".to_owned(), peers]);
    }
    args.extend(flags.iter().map(|flag| (*flag).to_owned()));
    args
}

/// `n` nodes in one native ring, each with `flags`. The ports are picked free, then bound by
/// the processes: when another socket took one in between, the ring starts again on fresh
/// ports (a few times).
pub fn ring(n: usize, flags: &[&str]) -> Vec<NodeProcess> {
    let mut attempt = 1;
    'attempts: loop {
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
        let mut nodes = Vec::with_capacity(n);
        for &addr in &addrs {
            match NodeProcess::try_start(&node_flags(addr, &addrs, flags)) {
                Ok(node) => nodes.push(node),
                Err(stderr) if stderr.contains(LOST_PORT) && attempt < BIND_ATTEMPTS => {
                    eprintln!("port {addr} was taken before the node bound it: new ports");
                    attempt += 1;
                    continue 'attempts;
                }
                Err(stderr) => panic!("no ready line within {READY_TIMEOUT:?}; stderr:\n{stderr}"),
            }
        }
        return nodes;
    }
}

/// Runs `herdcache` with `args` to its exit, which must come within [`EXIT_TIMEOUT`].
pub fn run_to_exit(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_herdcache"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herdcache runs");
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || done_tx.send(child.wait_with_output()));
    match done_rx.recv_timeout(EXIT_TIMEOUT) {
        Ok(output) => output.expect("herdcache ran"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("herdcache {args:?} did not exit within {EXIT_TIMEOUT:?}");
        }
    }
}

/// How a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The node closed it.
    Closed,
    /// The node reset it.
    Reset,
    /// Still open when the test stopped waiting.
    Open,
}

/// Reads from `stream` until the node closes it or `limit` passes; returns what came.
pub async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Ended) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut received = Vec::new();
    let mut buf = [0_u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return (received, Ended::Closed),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (received, Ended::Reset),
            Err(_) => return (received, Ended::Open),
        }
    }
}

/// The status line of a raw answer.
pub fn status_line(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    text.lines().next().unwrap_or_default().to_owned()
}

pub fn counter(stats: &serde_json::Value, keyspace: &str, name: &str) -> u64 {
    stats["keyspaces"][keyspace][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} for {keyspace} in {stats:#}"))
}

/// `name` of keyspace `ks`, summed over `nodes`.
pub async fn stats_sum(nodes: &[NodeProcess], name: &str) -> u64 {
    let mut sum = 0;
    for node in nodes {
        sum += counter(&node.stats().await, "ks", name);
    }
    sum
}

/// Polls each node's `/v1/members` every 20 ms until `done` holds for every node, at most
/// `limit` (else fails with what the first node that disagreed sees); the time it took.
pub async fn until_all(
    nodes: &[&NodeProcess],
    limit: Duration,
    what: &str,
    done: impl Fn(&NodeProcess, &serde_json::Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut disagreeing = None;
        for node in nodes {
            let members = node.members().await;
            if !done(node, &members) {
                disagreeing = Some(members);
                break;
            }
        }
        let Some(members) = disagreeing else { return started.elapsed() };
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; one node sees {members:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `members` (a `/v1/members` document) shows `id` connected.
pub fn connected(members: &serde_json::Value, id: &str) -> bool {
    members["members"]
        .as_array()
        .is_some_and(|list| list.iter().any(|m| m["id"] == id && m["connected"] == true))
}

/// Waits (at most 20 s) until `a` and `b` each show the other connected.
pub async fn until_connected(a: &NodeProcess, b: &NodeProcess) {
    until_all(&[a, b], Duration::from_secs(20), "a and b connected", |node, members| {
        let other = if node.id == a.id { &b.id } else { &a.id };
        connected(members, other)
    })
    .await;
}

/// Gets every key of keyspace `ks` through every node of `nodes`, whose source is `echo:v-`:
/// each answers 200 with `v-KEY`.
pub async fn assert_echo_gets<'a>(
    nodes: impl IntoIterator<Item = &'a NodeProcess> + Clone,
    keys: &[Vec<u8>],
) {
    for key in keys {
        for node in nodes.clone() {
            let answer = node.get("ks", key).await;
            assert_eq!(answer.status, StatusCode::OK, "{} {}", node.id, answer.text());
            assert_eq!(answer.body, [b"v-".as_slice(), key].concat());
        }
    }
}

/// Runs `herdcache node` on free loopback ports with keyspace `ks` from `echo:` and `extra`
/// flags, expecting it to stop at start: its exit code and stderr.
pub fn start_refused(extra: &[&str]) -> (Option<i32>, String) {
    let base =
        ["node", "--listen=127.0.0.1:0", "--http=127.0.0.1:0", "--keyspace=ks", "--source=echo:"];
    let output = run_to_exit(&[&base[..], extra].concat());
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}
