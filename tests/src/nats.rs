//! A real NATS server for the discovery tests: Debian's `nats-server` started on a free
//! loopback port with its files (log, pid) in a fresh temporary folder, killed on drop; it can
//! be stopped and started again on the same port, as an outage.
//!
//! [`NatsServer::start`] returns `None` where nats-server is not installed (the test then
//! returns early, after a message on stderr), except in CI (`CI` on), where a missing
//! nats-server fails the test.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::go_peer::ci_is_on;

/// How long nats-server may take to greet a client after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times a start picks a fresh port when one was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// A running (or stopped) nats-server on loopback.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

/// The program: `$NATS_SERVER`, else `nats-server` on the PATH, else Debian's
/// `/usr/sbin/nats-server`.
fn program() -> PathBuf {
    if let Some(program) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(program);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join("nats-server")).find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// A free loopback port (bound, then released for nats-server to take; a start retries on a
/// fresh one when another socket took it in between).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port");
    listener.local_addr().expect("its address")
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("herdcache-nats-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory for nats-server");
    dir
}

impl NatsServer {
    /// Starts nats-server on a free loopback port and waits until it greets a client; `None`
    /// (after a message) when it is not installed outside CI.
    ///
    /// # Panics
    /// In CI when nats-server is missing; anywhere when it is installed but does not come up.
    #[must_use]
    pub fn start() -> Option<NatsServer> {
        let program = program();
        let version = Command::new(&program).arg("--version").output();
        if !version.is_ok_and(|output| output.status.success()) {
            let why =
                format!("{} --version failed: install Debian's nats-server", program.display());
            assert!(!ci_is_on(), "nats-server is required in CI: {why}");
            eprintln!("skipping a NATS test: {why}");
            return None;
        }
        let dir = fresh_dir();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut server = NatsServer { child: None, addr: free_addr(), dir: dir.clone() };
            match server.launch() {
                Ok(()) => return Some(server),
                Err(log) => {
                    last_log = log;
                    server.kill();
                }
            }
        }
        panic!("nats-server did not come up in {START_ATTEMPTS} attempts; its log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// nats-server's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) -> Result<(), String> {
        let child = Command::new(program())
            .args(["-a", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .arg("-l")
            .arg(self.log_path())
            .arg("-P")
            .arg(self.dir.join("nats-server.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("spawn nats-server: {error}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if greets(self.addr) {
                return Ok(());
            }
            let running =
                self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|e| e.is_none()));
            if !running || Instant::now() >= deadline {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills nats-server (an outage); its port stays for [`NatsServer::restart`].
    pub fn stop(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts nats-server again on the same port and waits until it greets a client.
    ///
    /// # Panics
    /// When it does not come up (another process took the port meanwhile, say).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("nats-server did not come up again on {}; its log:\n{log}", self.addr);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a NATS server at `addr` sends its `INFO` greeting within a second.
fn greets(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut greeting = [0_u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}
