//! A real DNS server for the DNS discovery tests: Debian's dnsmasq (package `dnsmasq-base`,
//! `/usr/sbin/dnsmasq`) on a free loopback port, its configuration and records in a temp
//! folder of its own.
//!
//! ```no_run
//! # use herdcache_tests::{dnsmasq_available, Dnsmasq, SrvTarget};
//! # fn main() {
//! if !dnsmasq_available() {
//!     return; // printed why; never taken in CI (CI set, not 0 or false: a failure)
//! }
//! let mut dns = Dnsmasq::start("herdcache.test").unwrap();
//! dns.set_hosts(&[("127.0.0.1".parse().unwrap(), "cache.herdcache.test")]).unwrap();
//! dns.set_srv("_herdcache._tcp.herdcache.test", &[SrvTarget::new("localhost", 7001)]).unwrap();
//! println!("ask {}", dns.addr());
//! # }
//! ```
//!
//! What dnsmasq really does, and so how records change:
//!
//! - **A/AAAA** come from a hosts file (`--addn-hosts`). [`Dnsmasq::set_hosts`] rewrites it,
//!   sends SIGHUP (dnsmasq clears its cache and rereads the hosts files, in place, without a
//!   moment's outage) and returns once dnsmasq has logged the reread: until then it may
//!   still answer from the old file.
//! - **SRV** records (`srv-host=`) live in the configuration file, which SIGHUP does *not*
//!   reread (dnsmasq(8), "SIGHUP does NOT re-read the configuration file"). So
//!   [`Dnsmasq::set_srv`] rewrites the configuration and restarts dnsmasq on the same port: a
//!   short outage (tens of milliseconds) that a resolver rides through by retrying.
//! - Names under the zone ([`Dnsmasq::start`]'s `zone`, `--local=/ZONE/`) that have no record
//!   get an authoritative NXDOMAIN, not a forwarding failure (there is no upstream:
//!   `--no-resolv`, and `--no-hosts` keeps `/etc/hosts` out).
//! - Every answer carries TTL [`LOCAL_TTL`] (`--local-ttl`), short so that tests see changes
//!   within seconds.
//!
//! dnsmasq runs in the foreground (`--keep-in-foreground`), logs to a file in its folder
//! (quoted when it fails to start), keeps root when started as root (`--user=root`: no
//! privilege drop that would lose access to the folder), writes no pid file, and binds only
//! 127.0.0.1 (`--bind-interfaces`). It never outlives the test process: it runs under a
//! small `sh` that kills it when its stdin, a pipe from this process, reaches EOF, which this
//! process's death (even by SIGKILL) causes; dropping a [`Dnsmasq`] does the same at once.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::go_peer::ci_is_on;

/// Where Debian puts dnsmasq (`$DNSMASQ` overrides it).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// The TTL of every record dnsmasq serves in these tests, in seconds.
pub const LOCAL_TTL: u32 = 1;

/// How long dnsmasq may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh ports a start tries when one was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// Runs dnsmasq with the given arguments, prints its pid, and kills it when stdin closes.
const WRAPPER: &str = r#"
"$0" "$@" &
pid=$!
echo "$pid"
read -r _
kill "$pid" 2>/dev/null
wait "$pid"
"#;

/// Whether dnsmasq can run here.
///
/// When it cannot: in CI (`CI` set to anything but empty, `0` or `false`) this panics — the
/// DNS tests never skip in CI; otherwise it prints why on stderr and returns `false`, and the
/// test returns early.
///
/// # Panics
/// In CI, when dnsmasq is missing.
#[must_use]
pub fn dnsmasq_available() -> bool {
    let program = dnsmasq_program();
    if program.is_file() {
        return true;
    }
    let why = format!(
        "{} is missing (Debian: apt-get install dnsmasq-base; or set DNSMASQ)",
        program.display()
    );
    if ci_is_on() {
        panic!("dnsmasq is required in CI: {why}");
    }
    eprintln!("skipping a DNS discovery test: {why}");
    false
}

fn dnsmasq_program() -> PathBuf {
    std::env::var_os("DNSMASQ").map_or_else(|| PathBuf::from(DNSMASQ), PathBuf::from)
}

/// One SRV record's target: host name and port (priority 0, weight 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    /// The target host name.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl SrvTarget {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> SrvTarget {
        SrvTarget { host: host.into(), port }
    }
}

/// A running dnsmasq; stopped, and its folder removed, when dropped.
pub struct Dnsmasq {
    folder: PathBuf,
    zone: String,
    port: u16,
    srv: Vec<(String, SrvTarget)>,
    process: Option<Process>,
}

/// The wrapper shell and the dnsmasq it runs.
struct Process {
    shell: Child,
    /// Closing it stops dnsmasq.
    stdin: Option<ChildStdin>,
    pid: u32,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free loopback port, authoritative for `zone` (no record yet).
    ///
    /// # Errors
    /// When dnsmasq cannot be started or does not listen within 10 s (its log is in the error).
    pub fn start(zone: &str) -> io::Result<Dnsmasq> {
        let folder = temp_folder()?;
        let mut dns =
            Dnsmasq { folder, zone: zone.to_owned(), port: 0, srv: Vec::new(), process: None };
        dns.write_hosts(&[])?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            dns.port = free_port()?;
            match dns.launch() {
                Ok(()) => return Ok(dns),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("dnsmasq did not start")))
    }

    /// The address to ask (UDP and TCP).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Replaces every A/AAAA record (a hosts file: address, name) and tells dnsmasq (SIGHUP);
    /// no outage. When stopped, they apply at the next start.
    ///
    /// # Errors
    /// When the file cannot be written or the signal not sent.
    pub fn set_hosts(&mut self, records: &[(IpAddr, &str)]) -> io::Result<()> {
        self.write_hosts(records)?;
        let Some(process) = &self.process else { return Ok(()) };
        // dnsmasq handles the signal in its event loop: until it logs the reread, it may
        // still answer from the old file. Returning only then keeps tests free of that race.
        let reads_before = self.hosts_reads();
        let status = Command::new("kill").args(["-HUP", &process.pid.to_string()]).status()?;
        if !status.success() {
            return Err(io::Error::other("kill -HUP dnsmasq failed"));
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.hosts_reads() <= reads_before {
            if Instant::now() >= deadline {
                return Err(io::Error::other("dnsmasq did not reread its hosts file"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// How many times dnsmasq has logged reading the hosts file.
    fn hosts_reads(&self) -> usize {
        let needle = format!("read {} - ", self.hosts_path().display());
        std::fs::read_to_string(self.log_path()).map_or(0, |log| log.matches(&needle).count())
    }

    /// Replaces the SRV records of `name` with `targets` and restarts dnsmasq on the same port
    /// (SIGHUP does not reread them); when stopped, they apply at the next start.
    ///
    /// # Errors
    /// When dnsmasq does not start again.
    pub fn set_srv(&mut self, name: &str, targets: &[SrvTarget]) -> io::Result<()> {
        self.srv.retain(|(other, _)| other != name);
        self.srv.extend(targets.iter().map(|target| (name.to_owned(), target.clone())));
        if self.process.is_some() {
            self.stop();
            self.start_again()?;
        }
        Ok(())
    }

    /// Stops dnsmasq (the port is then closed: queries are refused).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            drop(process.stdin.take());
            let _ = process.shell.wait();
        }
    }

    /// Starts dnsmasq again on the same port with the current records.
    ///
    /// # Errors
    /// When it does not listen within 10 s (a few tries, in case the port is briefly taken).
    pub fn start_again(&mut self) -> io::Result<()> {
        let mut attempt = 0;
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(error) if attempt + 1 >= START_ATTEMPTS => return Err(error),
                Err(_) => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn hosts_path(&self) -> PathBuf {
        self.folder.join("hosts")
    }

    fn log_path(&self) -> PathBuf {
        self.folder.join("dnsmasq.log")
    }

    fn write_hosts(&self, records: &[(IpAddr, &str)]) -> io::Result<()> {
        let mut text = String::new();
        for (address, name) in records {
            let _ = writeln!(text, "{address} {name}");
        }
        // Written aside and renamed, so that dnsmasq never reads half a file.
        let partial = self.folder.join("hosts.partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(partial, self.hosts_path())
    }

    fn write_config(&self) -> io::Result<PathBuf> {
        let mut config = String::new();
        let _ = writeln!(config, "port={}", self.port);
        config.push_str("listen-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n");
        let _ = writeln!(config, "local=/{}/", self.zone);
        let _ = writeln!(config, "addn-hosts={}", self.hosts_path().display());
        let _ = writeln!(config, "local-ttl={LOCAL_TTL}");
        for (name, target) in &self.srv {
            let _ = writeln!(config, "srv-host={name},{},{},0,0", target.host, target.port);
        }
        config.push_str("pid-file=\nuser=root\nlog-queries\n");
        let _ = writeln!(config, "log-facility={}", self.log_path().display());
        let path = self.folder.join("dnsmasq.conf");
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// Starts dnsmasq on `self.port` and waits until it listens.
    fn launch(&mut self) -> io::Result<()> {
        let config = self.write_config()?;
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(dnsmasq_program())
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", config.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = shell.stdin.take();
        let mut pid_line = String::new();
        if let Some(stdout) = shell.stdout.take() {
            BufReader::new(stdout).read_line(&mut pid_line)?;
        }
        let pid: u32 = pid_line
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("the wrapper printed {pid_line:?}")))?;
        let process = Process { shell, stdin, pid };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                self.process = Some(process);
                return Ok(());
            }
            let exited = !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid);
            if exited || Instant::now() >= deadline {
                let mut process = process;
                drop(process.stdin.take());
                let _ = process.shell.wait();
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "dnsmasq did not listen on {}: {}",
                    self.addr(),
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Whether process `pid` has exited and waits to be reaped by its parent.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A port free for both TCP and UDP on 127.0.0.1 (released for dnsmasq to take: another
/// socket may take it in between, so starts retry).
fn free_port() -> io::Result<u16> {
    for _ in 0..20 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no port free for both TCP and UDP"))
}

/// A fresh folder under the system's temp folder.
fn temp_folder() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let folder = std::env::temp_dir().join(format!(
        "herdcache-dnsmasq-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&folder)?;
    Ok(folder)
}
