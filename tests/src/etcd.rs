//! A real etcd server for the discovery tests: Debian's `etcd` (etcd-server) started on free
//! loopback ports with its data directory in a fresh temporary folder, stopped (killed) on
//! drop; it can be stopped and started again on the same ports and data, as an outage.
//!
//! [`EtcdServer::start`] returns `None` where etcd is not installed (the test then returns
//! early, after a message on stderr), except in CI (`CI` on, as for the Go interop tests),
//! where a missing etcd fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, GetOptions};

use crate::go_peer::ci_is_on;

/// How long etcd may take to answer its health check after a start.
pub const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped etcd may take to exit after SIGTERM before it is killed.
const ETCD_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a start picks fresh ports when one was taken in the meantime.
const START_ATTEMPTS: usize = 5;
/// The bound on one call of the tests' own etcd client.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A running (or stopped) etcd server on loopback.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    dir: PathBuf,
}

/// The etcd program: `$ETCD`, else `etcd` on the PATH, else Debian's `/usr/bin/etcd`.
fn etcd_program() -> PathBuf {
    if let Some(etcd) = std::env::var_os("ETCD") {
        return PathBuf::from(etcd);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// A free loopback port (bound, then released for etcd to take: another socket may take it in
/// between, so a start retries on fresh ports).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port");
    listener.local_addr().expect("its address")
}

/// A fresh, empty temporary directory.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("herdcache-etcd-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory for etcd");
    dir
}

impl EtcdServer {
    /// Starts etcd on free loopback ports and waits until it answers; `None` (after a message)
    /// when etcd is not installed outside CI.
    ///
    /// # Panics
    /// In CI when etcd is missing; anywhere when it is installed but does not come up.
    #[must_use]
    pub fn start() -> Option<EtcdServer> {
        let program = etcd_program();
        let version = Command::new(&program).arg("--version").output();
        if !version.is_ok_and(|output| output.status.success()) {
            let why =
                format!("{} --version failed: install Debian's etcd-server", program.display());
            assert!(!ci_is_on(), "etcd is required in CI: {why}");
            eprintln!("skipping an etcd test: {why}");
            return None;
        }
        let dir = fresh_dir();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut server = EtcdServer {
                child: None,
                client_addr: free_addr(),
                peer_addr: free_addr(),
                dir: dir.clone(),
            };
            match server.launch() {
                Ok(()) => return Some(server),
                Err(log) => {
                    last_log = log;
                    server.kill();
                    let _ = std::fs::remove_dir_all(server.data_dir());
                }
            }
        }
        panic!("etcd did not come up in {START_ATTEMPTS} attempts; its log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`, the client endpoint.
    #[must_use]
    pub fn endpoint(&self) -> String {
        self.client_addr.to_string()
    }

    /// Whether the server process runs (it is neither stopped nor exited).
    #[must_use]
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().is_ok_and(|exit| exit.is_none()))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Spawns etcd on this server's ports and data directory and waits for its health check;
    /// on failure, etcd's log.
    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|error| format!("etcd's log file: {error}"))?;
        let client_url = format!("http://{}", self.client_addr);
        let peer_url = format!("http://{}", self.peer_addr);
        let child = Command::new(etcd_program())
            .args(["--name", "herdcache-test"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("herdcache-test={peer_url}")])
            .args(["--initial-cluster-state", "new", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|error| error.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|error| format!("spawn etcd: {error}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + ETCD_READY_TIMEOUT;
        loop {
            if healthy(self.client_addr) {
                return Ok(());
            }
            if !self.is_running() || Instant::now() >= deadline {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// etcd's log so far (its stdout and stderr).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops etcd gracefully (SIGTERM; killed when it has not exited within 10 s). Its ports
    /// and data stay for [`EtcdServer::restart`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + ETCD_EXIT_TIMEOUT;
        while child.try_wait().is_ok_and(|exit| exit.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory and waits until it answers.
    ///
    /// # Panics
    /// When it does not come up (another process took a port meanwhile, say).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("etcd did not come up again on {}; its log:\n{log}", self.client_addr);
        }
    }

    /// A client of this server (for the tests' own checks).
    ///
    /// # Panics
    /// When it cannot connect within 5 s.
    pub async fn client(&self) -> Client {
        let connect = Client::connect([self.endpoint()], None);
        tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .expect("an etcd client connects within 5 s")
            .expect("an etcd client connects")
    }

    /// The values under `prefix/`, sorted: the members registered there.
    ///
    /// # Panics
    /// When etcd does not answer within 5 s.
    pub async fn values_under(&self, prefix: &str) -> Vec<String> {
        let mut client = self.client().await;
        let range = format!("{}/", prefix.trim_end_matches('/'));
        let listed = tokio::time::timeout(
            CALL_TIMEOUT,
            client.get(range, Some(GetOptions::new().with_prefix())),
        )
        .await
        .expect("etcd answers a list within 5 s")
        .expect("etcd lists");
        let mut values: Vec<String> = listed
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect();
        values.sort();
        values
    }

    /// etcd's current revision.
    ///
    /// # Panics
    /// When etcd does not answer within 5 s.
    pub async fn revision(&self) -> i64 {
        let mut client = self.client().await;
        let status = tokio::time::timeout(CALL_TIMEOUT, client.get("/", None))
            .await
            .expect("etcd answers within 5 s")
            .expect("etcd answers");
        status.header().expect("a header").revision()
    }

    /// Puts `key` = `value` (no lease).
    ///
    /// # Panics
    /// When etcd does not answer within 5 s.
    pub async fn put(&self, key: &str, value: &str) {
        let mut client = self.client().await;
        tokio::time::timeout(CALL_TIMEOUT, client.put(key, value, None))
            .await
            .expect("etcd answers within 5 s")
            .expect("etcd puts");
    }

    /// Compacts etcd's history up to its current revision, physically (the compacted
    /// revisions are gone when this returns); returns that revision.
    ///
    /// # Panics
    /// When etcd does not answer within 5 s.
    pub async fn compact_all(&self) -> i64 {
        let revision = self.revision().await;
        let mut client = self.client().await;
        tokio::time::timeout(
            CALL_TIMEOUT,
            client.compact(revision, Some(CompactionOptions::new().with_physical())),
        )
        .await
        .expect("etcd compacts within 5 s")
        .expect("etcd compacts");
        revision
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether etcd at `addr` answers `GET /health` with `"health":"true"` within a second.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.take(64 << 10).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer.starts_with("HTTP/1.") && answer.contains("\"health\":\"true\"")
}

/// A test's log of what happened and when, printed as it goes (`--nocapture` shows it).
#[derive(Debug)]
pub struct Timeline {
    name: &'static str,
    start: Instant,
}

impl Timeline {
    /// Starts the clock of the test `name`.
    #[must_use]
    pub fn new(name: &'static str) -> Timeline {
        eprintln!("[{name}] t=0");
        Timeline { name, start: Instant::now() }
    }

    /// Prints `what` with the time since the start.
    pub fn note(&self, what: impl std::fmt::Display) {
        eprintln!("[{}] {:>6.2} s  {what}", self.name, self.start.elapsed().as_secs_f64());
    }
}

/// Polls `done` every 20 ms until it holds; returns how long that took.
///
/// # Panics
/// When it does not hold within `limit`; the message names `what`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
