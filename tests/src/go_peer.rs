//! Real Go groupcache peers, as processes on loopback, for interoperability tests.
//!
//! The peer is the project's own Go program `tests/go/src/gcpeer` (golang/groupcache's
//! `HTTPPool` and one group, loading misses from an HTTP origin such as [`crate::Origin`]).
//! It is built once per test run, in GOPATH mode against Debian's packages (`golang-go`,
//! `golang-github-golang-groupcache-dev`, `golang-github-golang-protobuf-1-5-dev`), into the
//! cargo target directory.
//!
//! ```no_run
//! # use herdcache_tests::{drive, go_peers_available, GoPeer, GoPeerSpec, Origin, origin_value};
//! # fn main() {
//! if !go_peers_available() {
//!     return; // printed why; never taken in CI (CI set, not 0 or false: a failure)
//! }
//! drive(async {
//!     let origin = Origin::start().await.unwrap();
//!     let a = GoPeer::start(&GoPeerSpec::new(origin.template("a"))).await.unwrap();
//!     let b = GoPeer::start(&GoPeerSpec::new(origin.template("b"))).await.unwrap();
//!     let ring = [a.base_url().to_owned(), b.base_url().to_owned()];
//!     a.set_peers(&ring).await.unwrap();
//!     b.set_peers(&ring).await.unwrap();
//!     assert_eq!(a.get("k").await.unwrap(), origin_value(b"k"));
//!     assert_eq!(origin.loads_of("k"), 1);
//!     println!("{:?}", b.stats().await.unwrap());
//! }); // dropping a peer kills its process
//! # }
//! ```
//!
//! The peer's HTTP surface (one port): `/_groupcache/{group}/{key}` (groupcache's protocol),
//! `/get?key=K` (`group.Get`: 200 with the value, 500 with the error text), `/stats`
//! ([`GoStats`]), `PUT /peers` (a comma-separated list of base URLs: `pool.Set`).
//!
//! With [`GoPeerSpec::tls`] the peer protocol is HTTPS with mutual TLS (the base URL is
//! `https://`; `HTTPPool` is given a transport with the peer's certificate and the CA) and the
//! other three move to a plain HTTP listener of their own on loopback.
//!
//! A peer never outlives the test process: its stdin is a pipe from this process, and it exits
//! when that reaches EOF, which this process's death (even by SIGKILL) causes. The Go build is
//! bounded in time ([`GO_BUILD_TIMEOUT`]) and uses `$GOCACHE`, else `target/go-build-cache`,
//! the cache CI's `go vet` uses too.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::harness::{KEYSPACE, KEYSPACE_BYTES};
use crate::http::{self, escape};

/// Where Debian's Go packages put their sources (the first GOPATH entry).
pub const DEBIAN_GOCODE: &str = "/usr/share/gocode";

/// How long a started peer has to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long building the Go peer may take (a cold Go cache on a loaded two-core machine).
pub(crate) const GO_BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// How long `go version` may take.
const GO_VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The GOPATH workspace of the project's Go programs.
const GO_WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/go");

/// How to start a Go peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoPeerSpec {
    /// The origin URL template (`{key}` is replaced by the percent-encoded key), e.g.
    /// [`crate::Origin::template`].
    pub origin: String,
    /// The ring's members by base URL (`http://host:port`), this peer's own included; empty:
    /// this peer alone (replace later with [`GoPeer::set_peers`], e.g. once every peer's
    /// port is known).
    pub peers: Vec<String>,
    /// The group's name (default [`KEYSPACE`]).
    pub group: String,
    /// The group's cache budget (default [`KEYSPACE_BYTES`]).
    pub cache_bytes: u64,
    /// How long one request to another peer may take, body included (default 10 s); then
    /// groupcache counts a peer error and loads locally.
    pub peer_timeout: Duration,
    /// Mutual TLS between peers (default none): the base URL is then `https://`, and the
    /// test's own calls ([`GoPeer::get`], [`GoPeer::stats`], [`GoPeer::set_peers`]) go to a
    /// plain HTTP listener of their own on loopback.
    pub tls: Option<GoPeerTls>,
}

/// A Go peer's certificate, key and CA (PEM files): it presents the certificate as a server
/// and as a client, requires clients' certificates, and trusts only the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoPeerTls {
    /// The peer's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that other peers' certificates must chain to.
    pub ca: PathBuf,
}

impl From<&crate::certs::CertFiles> for GoPeerTls {
    fn from(files: &crate::certs::CertFiles) -> Self {
        GoPeerTls { cert: files.cert.clone(), key: files.key.clone(), ca: files.ca.clone() }
    }
}

impl GoPeerSpec {
    /// A peer alone in its ring, serving group [`KEYSPACE`] from `origin`.
    #[must_use]
    pub fn new(origin: impl Into<String>) -> Self {
        GoPeerSpec {
            origin: origin.into(),
            peers: Vec::new(),
            group: KEYSPACE.to_owned(),
            cache_bytes: KEYSPACE_BYTES,
            peer_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// One group's counters, under groupcache's names (`group.Stats` and `group.CacheStats`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct GoStats {
    /// The peer's base URL.
    #[serde(rename = "self")]
    pub self_url: String,
    /// The group's name.
    pub group: String,
    /// Every get, from peers too.
    pub gets: u64,
    /// Gets answered by either cache.
    pub cache_hits: u64,
    /// Values fetched from peers.
    pub peer_loads: u64,
    /// Failed peer fetches.
    pub peer_errors: u64,
    /// Gets that missed the caches.
    pub loads: u64,
    /// Loads after singleflight.
    pub loads_deduped: u64,
    /// Successful origin loads.
    pub local_loads: u64,
    /// Failed origin loads.
    pub local_load_errs: u64,
    /// Gets that came from peers.
    pub server_requests: u64,
    /// The main cache (keys this peer owns).
    pub main_cache: GoCacheStats,
    /// The hot cache (mirrored keys).
    pub hot_cache: GoCacheStats,
}

/// One of a group's caches.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct GoCacheStats {
    /// Bytes of keys and values.
    pub bytes: u64,
    /// Entries.
    pub items: u64,
    /// Lookups.
    pub gets: u64,
    /// Hits.
    pub hits: u64,
    /// Evictions.
    pub evictions: u64,
}

/// Whether Go peers can run here: builds the Go program on the first call (once per test run).
///
/// When they cannot (no Go toolchain, a Debian package missing, a build error): in CI (`CI`
/// set to anything but empty, `0` or `false`) this panics — interop tests never skip in CI;
/// otherwise it prints why on stderr and returns `false`, and the test returns early.
///
/// # Panics
/// In CI, when Go peers cannot run.
#[must_use]
pub fn go_peers_available() -> bool {
    match gcpeer_binary() {
        Ok(_) => true,
        Err(why) if ci_is_on() => {
            panic!("Go peers are required in CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping a Go interop test: {why}");
            false
        }
    }
}

/// The first key `key-N` that `owner` owns on Go groupcache's ring over the base URLs
/// `urls` (what a test fetches to reach a chosen peer).
///
/// # Panics
/// When `urls` make no ring, or `owner` is not among them.
#[must_use]
pub fn key_owned_by(urls: &[&str], owner: &str) -> String {
    let ring = herdcache_proto::Ring::with_peers(
        herdcache_proto::RingScheme::GROUPCACHE,
        urls.iter().copied(),
    )
    .expect("a ring");
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| ring.owner(key.as_bytes()) == Some(&owner))
        .expect("every member owns some key")
}

/// Whether the tests run in CI: `CI` is set to anything but empty, `0` or `false` (CI
/// services set `true`, `1`, `yes` or their name).
#[must_use]
pub(crate) fn ci_is_on() -> bool {
    ci_flag_is_on(std::env::var_os("CI").as_deref().map(|value| value.to_string_lossy()).as_deref())
}

/// Whether a value of `CI` means on.
fn ci_flag_is_on(value: Option<&str>) -> bool {
    value.map(str::trim).is_some_and(|value| {
        !(value.is_empty() || value == "0" || value.eq_ignore_ascii_case("false"))
    })
}

/// The built `gcpeer` program, or why it cannot be built.
fn gcpeer_binary() -> Result<&'static Path, &'static str> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(|| build_gcpeer(&go_command())).as_deref().map_err(String::as_str)
}

/// The Go command: `$GO`, else `go` on the PATH, else Debian's.
fn go_command() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return PathBuf::from(go);
    }
    let debian = Path::new("/usr/lib/go/bin/go");
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("go").is_file()));
    if on_path || !debian.is_file() { PathBuf::from("go") } else { debian.to_path_buf() }
}

/// Builds `gcpeer` with `go` into the target directory (`target/<profile>/gcpeer`).
fn build_gcpeer(go: &Path) -> Result<PathBuf, String> {
    let version = output_within(std::process::Command::new(go).arg("version"), GO_VERSION_TIMEOUT);
    if !version.is_ok_and(|output| output.status.success()) {
        return Err(format!(
            "no Go toolchain ({} version failed): install Debian's golang-go",
            go.display()
        ));
    }
    for (package, source) in [
        ("golang-github-golang-groupcache-dev", "github.com/golang/groupcache"),
        ("golang-github-golang-protobuf-1-5-dev", "github.com/golang/protobuf/proto"),
    ] {
        if !Path::new(DEBIAN_GOCODE).join("src").join(source).is_dir() {
            return Err(format!("{DEBIAN_GOCODE}/src/{source} is missing: install {package}"));
        }
    }
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().map_err(|error| format!("current_exe: {error}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    let binary = profile_dir.join("gcpeer");
    // Test binaries may build at the same time: each writes its own file, then renames it.
    let partial = profile_dir.join(format!("gcpeer.{}.partial", std::process::id()));
    // The cache `.ci/run`'s `go vet` uses too (target/go-build-cache), so CI compiles once.
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let gocache = std::env::var_os("GOCACHE")
        .map_or_else(|| target_dir.join("go-build-cache"), PathBuf::from);
    let mut build = std::process::Command::new(go);
    build
        .args(["build", "-o"])
        .arg(&partial)
        .arg("gcpeer")
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{DEBIAN_GOCODE}:{GO_WORKSPACE}"))
        .env("GOCACHE", gocache)
        .env("GOFLAGS", "");
    let output = output_within(&mut build, GO_BUILD_TIMEOUT)
        .map_err(|error| format!("{} build: {error}", go.display()))?;
    if !output.status.success() {
        return Err(format!(
            "go build gcpeer failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&partial, &binary).map_err(|error| {
        format!("rename {} to {}: {error}", partial.display(), binary.display())
    })?;
    Ok(binary)
}

/// Runs `command` to its exit and returns its output, killing it after `limit`.
fn output_within(command: &mut std::process::Command, limit: Duration) -> io::Result<Output> {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Read both pipes while it runs, so that neither fills and blocks it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no exit within {limit:?}: killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let collected = |reader: std::thread::JoinHandle<Vec<u8>>| reader.join().unwrap_or_default();
    Ok(Output { status, stdout: collected(stdout), stderr: collected(stderr) })
}

/// Why a [`GoPeer::get`] failed.
#[derive(Debug)]
pub enum GoGetError {
    /// The peer answered a status other than 200 (500: `group.Get` failed; the message is
    /// its error text, e.g. the origin's status).
    Status {
        /// The status.
        status: StatusCode,
        /// The body.
        message: String,
    },
    /// No answer (connection, timeout).
    Io(io::Error),
}

impl std::fmt::Display for GoGetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GoGetError::Status { status, message } => write!(f, "{status}: {}", message.trim()),
            GoGetError::Io(error) => write!(f, "no answer: {error}"),
        }
    }
}

impl std::error::Error for GoGetError {}

/// A running Go groupcache peer process. Dropping it kills the process; so does this
/// process's death (the peer exits when its stdin closes).
#[derive(Debug)]
pub struct GoPeer {
    base_url: String,
    /// Where the test's own calls go: the base URL, or with TLS a plain listener of its own.
    control_url: String,
    child: Child,
    /// The write end of the peer's stdin, held and never written: closed by this process's
    /// exit or death, which ends the peer.
    _parent_alive: Option<ChildStdin>,
}

impl GoPeer {
    /// Starts a peer on a free loopback port and waits (up to [`READY_TIMEOUT`]) until it
    /// listens. Call [`go_peers_available`] first.
    ///
    /// # Errors
    /// When the program is not built, does not start, or prints no ready line in time (the
    /// process is killed then).
    pub async fn start(spec: &GoPeerSpec) -> io::Result<GoPeer> {
        let binary = gcpeer_binary().map_err(|why| io::Error::new(io::ErrorKind::NotFound, why))?;
        let mut command = Command::new(binary);
        command
            .args(["-listen", "127.0.0.1:0", "-origin", &spec.origin, "-group", &spec.group])
            .args(["-cache-bytes", &spec.cache_bytes.to_string(), "-peers", &spec.peers.join(",")])
            .args(["-peer-timeout", &format!("{}ms", spec.peer_timeout.as_millis().max(1))]);
        if let Some(tls) = &spec.tls {
            command
                .arg("-tls-cert")
                .arg(&tls.cert)
                .arg("-tls-key")
                .arg(&tls.key)
                .arg("-tls-ca")
                .arg(&tls.ca);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let parent_alive = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let (base_url, control_url) =
            match tokio::time::timeout(READY_TIMEOUT, ready_line(stdout)).await {
                Ok(Ok(urls)) => urls,
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("gcpeer printed no ready line within {READY_TIMEOUT:?}"),
                    ));
                }
            };
        Ok(GoPeer { base_url, control_url, child, _parent_alive: parent_alive })
    }

    /// Its base URL, `http://127.0.0.1:PORT` (`https://` with TLS): its name in a groupcache
    /// ring.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The value of `key` through the peer's `group.Get`.
    ///
    /// # Errors
    /// [`GoGetError::Status`] when the peer answers anything but 200, [`GoGetError::Io`] when
    /// it does not answer.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Bytes, GoGetError> {
        let url = format!("{}/get?key={}", self.control_url, escape(key.as_ref()));
        let answer = http::get(&url).await.map_err(GoGetError::Io)?;
        if answer.status == StatusCode::OK {
            Ok(answer.body)
        } else {
            Err(GoGetError::Status { status: answer.status, message: answer.text() })
        }
    }

    /// The group's counters now.
    ///
    /// # Errors
    /// No answer, or an answer that is not the stats JSON.
    pub async fn stats(&self) -> io::Result<GoStats> {
        let answer = http::get(&format!("{}/stats", self.control_url)).await?;
        if answer.status != StatusCode::OK {
            return Err(io::Error::other(format!("/stats: {}: {}", answer.status, answer.text())));
        }
        serde_json::from_slice(&answer.body).map_err(io::Error::other)
    }

    /// Replaces the ring (`pool.Set`): base URLs, this peer's own included.
    ///
    /// # Errors
    /// No answer, or a refusal.
    pub async fn set_peers(&self, peers: &[impl AsRef<str>]) -> io::Result<()> {
        let list = peers.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",");
        let answer =
            http::request(Method::PUT, &format!("{}/peers", self.control_url), list).await?;
        if answer.status == StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(io::Error::other(format!("/peers: {}: {}", answer.status, answer.text())))
        }
    }

    /// The process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process (SIGKILL, as a crash) and waits until it is gone.
    ///
    /// # Errors
    /// When it cannot be signalled or waited for.
    pub async fn kill(&mut self) -> io::Result<ExitStatus> {
        self.child.start_kill()?;
        self.child.wait().await
    }
}

impl Drop for GoPeer {
    /// Kills the process and reaps it (it dies at once on SIGKILL), so that no zombie stays
    /// behind while the test binary runs on.
    fn drop(&mut self) {
        if self.child.start_kill().is_err() {
            return; // already reaped by `kill`
        }
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Reads `ready <base URL>` (with TLS `ready <base URL> control <control URL>`) from the
/// peer's stdout, then keeps draining it on a task so that the pipe never fills; returns both
/// URLs (the same without TLS).
async fn ready_line(stdout: ChildStdout) -> io::Result<(String, String)> {
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next_line().await?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::UnexpectedEof, "gcpeer exited before it was ready")
    })?;
    let urls = line
        .strip_prefix("ready ")
        .ok_or_else(|| io::Error::other(format!("gcpeer: unexpected first line {line:?}")))?
        .trim();
    let (base_url, control_url) = match urls.split_once(" control ") {
        Some((base, control)) => (base.to_owned(), control.to_owned()),
        None => (urls.to_owned(), urls.to_owned()),
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((base_url, control_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_on_for_any_value_but_empty_0_or_false() {
        for on in ["true", "1", "yes", "TRUE", "github-actions", "woodpecker"] {
            assert!(ci_flag_is_on(Some(on)), "{on:?}");
        }
        for off in ["", " ", "0", "false", "False", "FALSE"] {
            assert!(!ci_flag_is_on(Some(off)), "{off:?}");
        }
        assert!(!ci_flag_is_on(None));
    }

    #[test]
    fn a_build_that_takes_too_long_is_killed() {
        let started = Instant::now();
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg("30");
        let error = output_within(&mut sleep, Duration::from_millis(200)).expect_err("too slow");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10), "killed at the limit");
        let echo = output_within(std::process::Command::new("echo").arg("hi"), GO_BUILD_TIMEOUT);
        assert_eq!(echo.expect("echo runs").stdout, b"hi\n");
    }

    /// Waits up to `limit` for `peer`'s process to exit.
    async fn exits_within(peer: &mut GoPeer, limit: Duration) -> bool {
        tokio::time::timeout(limit, peer.child.wait()).await.is_ok()
    }

    #[test]
    fn a_peer_exits_when_its_parent_closes_its_stdin() {
        if !go_peers_available() {
            return;
        }
        crate::drive(async {
            let origin = crate::Origin::start().await.expect("an origin");
            let mut peer =
                GoPeer::start(&GoPeerSpec::new(origin.template("go0"))).await.expect("up");
            assert!(!exits_within(&mut peer, Duration::from_millis(300)).await, "runs at first");
            // What the kernel does when this process dies, SIGKILL included.
            drop(peer._parent_alive.take());
            assert!(exits_within(&mut peer, Duration::from_secs(10)).await, "still running");
        });
    }

    #[test]
    fn a_peer_that_never_answers_costs_a_go_fetch_the_peer_timeout_then_a_local_load() {
        if !go_peers_available() {
            return;
        }
        crate::drive(async {
            let origin = crate::Origin::start().await.expect("an origin");
            // Connections complete in the kernel's backlog and are never answered.
            let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            let blackhole_url = format!("http://{}", blackhole.local_addr().expect("its address"));
            let mut spec = GoPeerSpec::new(origin.template("go0"));
            spec.peer_timeout = Duration::from_millis(500);
            let peer = GoPeer::start(&spec).await.expect("a Go peer");
            let ring = [peer.base_url().to_owned(), blackhole_url.clone()];
            peer.set_peers(&ring).await.expect("the ring");
            let groupcache_ring = herdcache_proto::Ring::with_peers(
                herdcache_proto::RingScheme::GROUPCACHE,
                ring.iter().map(String::as_str),
            )
            .expect("a ring");
            let key = (0..)
                .map(|i| format!("key-{i}"))
                .find(|key| groupcache_ring.owner(key.as_bytes()) == Some(&blackhole_url.as_str()))
                .expect("the blackhole owns some key");

            let started = Instant::now();
            let value = tokio::time::timeout(Duration::from_secs(10), peer.get(&key))
                .await
                .expect("the fetch from the blackhole gave up")
                .expect("loaded locally after the peer error");
            assert_eq!(value, crate::origin_value(key.as_bytes()));
            assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
            let stats = peer.stats().await.expect("stats");
            assert_eq!((stats.peer_errors, stats.local_loads), (1, 1), "{stats:?}");
        });
    }

    #[test]
    fn a_missing_toolchain_says_which_package_to_install() {
        let why = build_gcpeer(Path::new("/nonexistent/bin/go")).expect_err("no such go");
        assert!(why.contains("golang-go"), "{why}");
    }
}
