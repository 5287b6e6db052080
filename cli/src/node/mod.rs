//! `herdcache node`: a long-running cluster member for programs not written in Rust.
//!
//! It runs one herdcache-tokio node (peers on `--listen`), creates the `--keyspace`s with the
//! `--source`s behind them, and serves the HTTP front end ([`front`]) on `--http`. Once both
//! listen it prints one line on stdout:
//!
//! ```text
//! herdcache node ready: id=127.0.0.1:7001 listen=127.0.0.1:7001 http=127.0.0.1:7002
//! ```
//!
//! SIGINT or SIGTERM stops it gracefully: the front end accepts no more connections, the node
//! leaves the ring (tells its peers, finishes what is in progress, up to `--stop-timeout`),
//! the front end's open connections write their answers and close (again up to
//! `--stop-timeout`), then the process exits 0. A second SIGINT or SIGTERM during that exits
//! at once with status 1.
//!
//! With `--tls-cert`, `--tls-key` and `--tls-ca` every peer connection is mutual TLS and each
//! peer is only the id its certificate names (`herdcache_runtime::tls`). SIGHUP re-reads the
//! TLS certificates, keys and CA (`--tls-*`, `--http-tls-*`), as a change of their files does
//! (checked every second): a bad new file keeps the configuration in force, and says why on
//! stderr. Connections already open keep their session.
//!
//! The runtime's `tracing` records go to stderr (`crate::logging`: `--log-level`, else
//! `RUST_LOG`, else warnings of herdcache's crates), beside the node's own lines; stdout holds
//! only the ready line.
//!
//! The node's id is the address peers dial, so an unspecified `--listen` IP (`0.0.0.0`, `::`)
//! needs `--advertise`. The front end's PUT and DELETE need a bearer token only with
//! `--http-token-file`: it binds to loopback unless `--http` says otherwise
//! (docs/ARCHITECTURE.md, "Security").

mod front;
mod source;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use herdcache_proto::{LivenessConfig, MIN_CLUSTER_SECRET_LEN, WireLimits};
use herdcache_runtime::DEFAULT_MAX_INBOUND;
use herdcache_runtime::discovery::{DiscoveryOptions, DiscoverySpec};
use herdcache_runtime::tls::{ServerCert, TlsConfig, TlsError};
use herdcache_tokio::{Builder, KeyspaceConfig, Node, StartError};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::units::{parse_duration, parse_positive_duration, parse_size};
pub(crate) use source::SourceSpec;

/// A keyspace's budget when `--keyspace` names none.
const DEFAULT_KEYSPACE_BYTES: u64 = 64 << 20;

/// The exit status when a second signal cuts the graceful stop short.
const FORCED_EXIT_STATUS: i32 = 1;

const EXAMPLES: &str = "\
Examples:
  # Three members on one host, fronting an HTTP origin; each has a front end on its port + 1:
  herdcache node --listen 127.0.0.1:7001 --peers 127.0.0.1:7001,127.0.0.1:7003,127.0.0.1:7005 \\
      --keyspace items:256MiB:5m --source 'http://127.0.0.1:8080/items/{key}'
  herdcache node --listen 127.0.0.1:7003 --peers 127.0.0.1:7001,127.0.0.1:7003,127.0.0.1:7005 \\
      --keyspace items:256MiB:5m --source 'http://127.0.0.1:8080/items/{key}'
  ...
  curl http://127.0.0.1:7002/v1/items/42              # the value (loaded once in the cluster)
  curl -X PUT --data-binary @v.json 'http://127.0.0.1:7004/v1/items/42?ttl=30s'
  curl -X DELETE http://127.0.0.1:7006/v1/items/42
  curl http://127.0.0.1:7002/v1/stats

  # Members found through etcd (each registers itself under a lease and watches the others),
  # or through DNS SRV records:
  herdcache node --listen 127.0.0.1:7001 --discovery etcd://127.0.0.1:2379/herdcache/prod \
      --keyspace items:256MiB:5m --source 'http://127.0.0.1:8080/items/{key}'
  herdcache node --listen 10.0.0.5:7001 --advertise cache-0.cache.internal:7001 \
      --discovery srv:_herdcache._tcp.cache.internal \
      --keyspace items:256MiB:5m --source 'http://127.0.0.1:8080/items/{key}'
  curl http://127.0.0.1:7002/v1/members               # who is alive, suspect, down

  # Or through a gopherdiscovery survey server (herdcache discovery, or gopherdiscovery's):
  herdcache discovery --survey tcp://127.0.0.1:40007 --publish tcp://127.0.0.1:40008 &
  herdcache node --listen 127.0.0.1:7001 \
      --discovery 'survey://127.0.0.1:40007?publish=127.0.0.1:40008' \
      --keyspace items:256MiB:5m --source 'http://127.0.0.1:8080/items/{key}'

  # Or through NATS (each node announces itself on the subject every second, answers
  # membership queries on SUBJECT.members, and announces its leave on SIGTERM):
  herdcache node --listen 127.0.0.1:7001 --discovery nats://127.0.0.1:4222/herdcache.prod \
      --keyspace items:256MiB:5m --source 'http://127.0.0.1:8080/items/{key}'

  # Mutual TLS between peers: each certificate names its member (SAN URI:herdcache://ID, or
  # IP:/DNS: of its host) and chains to ca.crt; --cluster-secret-file may be given as well.
  # The files are re-read when they change and on SIGHUP (kill -HUP PID):
  herdcache node --listen 10.0.0.5:7001 --peers 10.0.0.5:7001,10.0.0.6:7001 \\
      --tls-cert node.crt --tls-key node.key --tls-ca ca.crt \\
      --keyspace items:256MiB:5m --source 'http://127.0.0.1:8080/items/{key}'
  # A member of a Go groupcache ring over https (Go's HTTPPool given a TLS transport):
  herdcache node --listen 10.0.0.7:8003 --groupcache-compat --tls-cert node.crt \\
      --tls-key node.key --tls-ca ca.crt \\
      --peers https://10.0.0.5:8001,https://10.0.0.6:8002,https://10.0.0.7:8003 \\
      --keyspace items --source 'http://127.0.0.1:8080/items/{key}'

  # Two keyspaces with a source each, and a demo keyspace that echoes:
  herdcache node --listen 0.0.0.0:7001 --advertise 10.0.0.5:7001 --http 127.0.0.1:8001 \\
      --peers 10.0.0.5:7001,10.0.0.6:7001 \\
      --keyspace users:1GiB --source 'users=http://users.internal/v2/users/{key}' \\
      --keyspace pages:64MiB:30s --source 'pages=http://cms.internal/render?path={key}' \\
      --keyspace demo --source demo=echo:hello-

Front end (--http):
  GET    /v1/{keyspace}/{key}   200 the value | 404 not found or unknown keyspace | 502 origin
                                failed (its status in the body) | 504 timed out (--origin-
                                timeout) | 503 unavailable | 429 rate limited
  PUT    /v1/{keyspace}/{key}   body = the value, ?ttl=30s for an expiry; 204 | 413 too large
                                (refused before the body is read) | 408 body too slow
  DELETE /v1/{keyspace}/{key}   204
  GET    /v1/ready              200 ready | 503 below --min-members (the reason as text)
  GET    /v1/members            JSON: each member's state (alive | suspect | down), ring
                                share, connection, last heard; quorum; discovery status
  GET    /v1/stats              JSON per keyspace: gets, cache_hits, peer_loads, peer_errors,
                                loads, loads_deduped, local_loads, local_load_errs,
                                server_requests, hot_hits, bytes, items, evictions, ...
  With --http-token-file, PUT and DELETE (and every read but /v1/ready with
  --http-token-for-reads) need 'Authorization: Bearer TOKEN': 401 without it or with another.
  Keyspace and key are percent-decoded path segments, neither empty (400); the key is the
  rest of the path. Over --http-max-connections a connection is answered 503 and closed.
  Without --http-token-file the front end has no authentication: it listens on loopback
  unless --http says otherwise. With --http-tls-cert and --http-tls-key it speaks HTTPS only
  (plain HTTP is answered 400 and closed):
  herdcache node ... --http 0.0.0.0:7002 --http-tls-cert front.crt --http-tls-key front.key \\
      --http-token-file /etc/herdcache/token
  curl --cacert ca.crt -H \"Authorization: Bearer $(cat /etc/herdcache/token)\" \\
      -X PUT --data-binary @v.json https://cache-0.internal:7002/v1/items/42

SIGINT or SIGTERM: graceful leave (peers are told, work in progress finishes, answers in
progress are written), then exit 0. A second SIGINT or SIGTERM: exit at once, status 1.
SIGHUP: re-read the TLS certificate, key and CA files of --tls-* and --http-tls-* (also done
when they change); a bad file keeps the configuration in force (logged).

Logs go to stderr: what the node refuses and why (peer connections, TLS handshakes, the
connection cap), discovery trouble; warnings by default, more with --log-level info or
RUST_LOG (e.g. RUST_LOG=herdcache_runtime=debug). stdout has only the ready line.";

/// The flags of `herdcache node`.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = EXAMPLES)]
pub(crate) struct NodeArgs {
    /// Address to listen on for peers (herdcache's protocol; with --groupcache-compat Go
    /// groupcache's HTTP protocol). Port 0 picks a free port. An unspecified IP (0.0.0.0,
    /// ::) needs --advertise: peers cannot dial it.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: SocketAddr,

    /// The address peers reach this node at, which is its id in the ring; every member must
    /// list it the same way in --peers. With --groupcache-compat it is a base URL
    /// (http:// is added when missing). [default: the bound --listen address, as
    /// http://ADDR with --groupcache-compat]
    #[arg(long, value_name = "ADDR")]
    pub(crate) advertise: Option<String>,

    /// The cluster's members by advertised address, comma-separated or repeated; this node's
    /// own may be among them. With --groupcache-compat: base URLs (http://host:port).
    /// [default: this node alone]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub(crate) peers: Vec<String>,

    /// Where the members come from while the node runs, instead of --peers:
    /// static:A,B | dns:NAME:PORT (the A/AAAA records of NAME, each at PORT) |
    /// srv:_service._proto.NAME (SRV records: target:port) | etcd://HOST:PORT/PREFIX (more
    /// endpoints comma-separated before the /; registers PREFIX/ID under a lease, watches
    /// PREFIX/) | survey://HOST:PORT?publish=HOST:PORT (a gopherdiscovery survey server such
    /// as `herdcache discovery`: answers its surveys with the node's id, follows the list it
    /// publishes) | nats://HOST:PORT/SUBJECT (announces the node on SUBJECT every second,
    /// answers and sends membership queries on SUBJECT.members, announces its leave on a
    /// graceful stop; a member not heard for 3 s is dropped). Every member's --advertise must
    /// be what the others discover it as.
    #[arg(long, value_name = "SPEC", conflicts_with = "peers")]
    pub(crate) discovery: Option<DiscoverySpec>,

    /// The DNS server the dns: and srv: discovery ask (IP:PORT). [default: the system's
    /// resolver configuration]
    #[arg(long, value_name = "ADDR", requires = "discovery")]
    pub(crate) dns_server: Option<SocketAddr>,

    /// The fewest members up (this node included) for the cluster to take writes and keep
    /// copies (distcache's MinimumPeersQuorum): below it, puts and deletes answer 503,
    /// cached copies are dropped, and GET /v1/ready answers 503. 1 turns the guard off; a
    /// majority of the cluster keeps a partitioned minority from serving stale copies.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) min_members: u32,

    /// How long a silent member stays on the ring before it is taken off (suspect after half
    /// of it). Members are checked every eighth of it; on loopback the default finds a killed
    /// member in about 2 s.
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = parse_positive_duration)]
    pub(crate) down_after: Duration,

    /// Address of the HTTP front end. Without --http-token-file its PUT and DELETE need no
    /// token: keep it on loopback or a trusted network. [default: loopback (127.0.0.1; ::1 for an IPv6
    /// --listen) and --listen's port + 1; port 0 when --listen's port is 0]
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<SocketAddr>,

    /// How long an HTTP client may take to finish a TLS handshake (with --http-tls-cert), to
    /// send a request's headers (or idle between requests), to send a PUT's body (then 408), and to take an answer once its socket is
    /// full; then its connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = parse_positive_duration)]
    pub(crate) http_client_timeout: Duration,

    /// The most front-end connections open at once; one more is answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) http_max_connections: u32,

    /// Be a member of a Go groupcache ring: speak groupcache's HTTP protocol to peers and
    /// use its ring (keyspaces are groups).
    #[arg(long)]
    pub(crate) groupcache_compat: bool,

    /// A keyspace: NAME, NAME:MAX_BYTES or NAME:MAX_BYTES:TTL; repeat for several. MAX_BYTES
    /// is this node's cache budget (64MiB if not given; units B, KB, MB, GB, KiB, MiB, GiB),
    /// TTL the values' expiry (30s, 5m, 1h30m; none if not given). E.g. users:1GiB:10m
    #[arg(long = "keyspace", value_name = "NAME[:MAX_BYTES[:TTL]]", required = true,
          value_parser = KeyspaceSpec::parse)]
    pub(crate) keyspaces: Vec<KeyspaceSpec>,

    /// Where misses load from, [KEYSPACE=]SOURCE; repeat for several. SOURCE is an HTTP
    /// origin URL template, http://host:port/path/{key} ({key} is replaced by the
    /// percent-encoded key; 200 is the value, 404 not found, other statuses an error), or
    /// echo:PREFIX (the value is PREFIX + key). Without KEYSPACE= it serves every keyspace
    /// that has no source of its own.
    #[arg(long = "source", value_name = "[KEYSPACE=]SOURCE", required = true,
          value_parser = SourceArg::parse)]
    pub(crate) sources: Vec<SourceArg>,

    /// The cluster label: peers with another label are refused (herdcache protocol only).
    #[arg(long, value_name = "LABEL", default_value = "herdcache")]
    pub(crate) cluster: String,

    /// A file holding a secret every member shares (at least 16 bytes; one trailing newline
    /// is ignored). A peer must prove it knows it when it connects, or it is refused: a
    /// process without it cannot join, claim a member's id or write. It does not encrypt, and
    /// frames after the hello are not authenticated: on an untrusted network use TLS.
    /// herdcache protocol only.
    #[arg(long, value_name = "PATH")]
    pub(crate) cluster_secret_file: Option<std::path::PathBuf>,

    /// This node's certificate for mutual TLS between peers (PEM, its chain; with --tls-key
    /// and --tls-ca). It must name this node's id: a URI SAN herdcache://ID names that id
    /// exactly, a DNS or IP SAN HOST names every id HOST:PORT (with --groupcache-compat the
    /// id is the base URL's host:port, and peers are https:// URLs). Every peer connection
    /// is then TLS, both sides' certificates must chain to --tls-ca, and a peer is only ever
    /// the id its certificate names. The files are re-read when they change and on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_key: Option<std::path::PathBuf>,

    /// The CA certificates (PEM) that every peer's certificate must chain to.
    #[arg(long, value_name = "PATH")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,

    /// The most peer connections accepted and open at once, those in their TLS handshake
    /// included; one more is closed at once (counted in /v1/stats).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_INBOUND as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) max_peer_connections: u64,

    /// A file holding the front end's bearer token (at least 16 visible ASCII characters; one
    /// trailing newline is ignored): PUT and DELETE then need `Authorization: Bearer TOKEN`
    /// (else 401). Without TLS on the front end the token crosses the network in clear: keep
    /// the front end on loopback or a trusted network.
    #[arg(long, value_name = "PATH")]
    pub(crate) http_token_file: Option<std::path::PathBuf>,

    /// Serve the front end over TLS with the certificate chain in this PEM file (with
    /// --http-tls-key). Plain HTTP to it is answered 400 and closed. The files are re-read
    /// when they change and on SIGHUP; a bad new file keeps the old certificate (logged).
    #[arg(long, value_name = "PATH", requires = "http_tls_key")]
    pub(crate) http_tls_cert: Option<std::path::PathBuf>,

    /// The front end's private key (PEM: PKCS#8, PKCS#1 or SEC1), with --http-tls-cert.
    #[arg(long, value_name = "PATH", requires = "http_tls_cert")]
    pub(crate) http_tls_key: Option<std::path::PathBuf>,

    /// With --http-token-file: reads need the token too (GET of values, /v1/stats,
    /// /v1/members); /v1/ready stays open for health checks.
    #[arg(long, requires = "http_token_file")]
    pub(crate) http_token_for_reads: bool,

    /// How long one data-source call may take (an origin's connect, answer and body); then
    /// its callers get 504.
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = parse_positive_duration)]
    pub(crate) origin_timeout: Duration,

    /// How long each step of a graceful stop may take: the leave (work in progress
    /// finishes), then the front end's open connections (their answers are written); then
    /// what is left is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) stop_timeout: Duration,

    /// What the node logs on stderr (refused peer connections and why, failed TLS handshakes,
    /// the connection cap, discovery trouble, ...): a level for herdcache's crates (error,
    /// warn, info, debug, trace), or a RUST_LOG-style filter (herdcache_runtime=debug,warn).
    /// [default: $RUST_LOG, else warn for herdcache's crates and error for others]
    #[arg(long, value_name = "LEVEL", value_parser = crate::logging::parse_log_level)]
    pub(crate) log_level: Option<String>,
}

/// A `--keyspace` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyspaceSpec {
    name: String,
    max_bytes: u64,
    ttl: Option<Duration>,
}

impl KeyspaceSpec {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(format!("{text:?}: a keyspace needs a name (NAME[:MAX_BYTES[:TTL]])"));
        }
        let max_bytes = parts.next().map_or(Ok(DEFAULT_KEYSPACE_BYTES), parse_size)?;
        let ttl = parts.next().map(parse_duration).transpose()?;
        if parts.next().is_some() {
            return Err(format!("{text:?}: NAME[:MAX_BYTES[:TTL]] has at most three parts"));
        }
        if max_bytes == 0 {
            return Err(format!("{text:?}: a keyspace's MAX_BYTES must be more than zero"));
        }
        if ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(format!("{text:?}: a TTL must be more than zero (leave it out for none)"));
        }
        Ok(KeyspaceSpec { name, max_bytes, ttl })
    }

    /// The keyspace's configuration; a data-source call may take `load_timeout`.
    fn config(&self, load_timeout: Duration) -> KeyspaceConfig {
        let mut config = KeyspaceConfig::new(self.name.clone(), self.max_bytes);
        config.default_ttl = self.ttl;
        config.read_timeout = load_timeout;
        config
    }
}

/// A `--source` value: a source for one keyspace or for all without their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceArg {
    keyspace: Option<String>,
    source: SourceSpec,
}

impl SourceArg {
    fn parse(text: &str) -> Result<Self, String> {
        // A URL or echo: prefix first: a template may hold '=' in its query.
        let shared = ["http://", "https://", "echo:"].iter().any(|scheme| text.starts_with(scheme));
        if !shared && let Some((keyspace, source)) = text.split_once('=') {
            if keyspace.is_empty() {
                return Err(format!("{text:?}: empty keyspace name before '='"));
            }
            let source = SourceSpec::parse(source)?;
            return Ok(SourceArg { keyspace: Some(keyspace.to_owned()), source });
        }
        Ok(SourceArg { keyspace: None, source: SourceSpec::parse(text)? })
    }
}

/// Why `herdcache node` could not run.
#[derive(Debug)]
pub(crate) enum NodeError {
    /// The flags do not fit together.
    Usage(String),
    /// The node did not start.
    Start(StartError),
    /// The front end's address cannot be bound.
    Http(SocketAddr, io::Error),
    /// A signal handler could not be installed.
    Signal(io::Error),
    /// The front end's certificate or key, or the peers' certificate, key or CA, cannot be
    /// used (the flags, and why).
    Tls(&'static str, TlsError),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Usage(message) => f.write_str(message),
            NodeError::Start(error) => write!(f, "the node did not start: {error}"),
            NodeError::Http(addr, error) => write!(f, "cannot bind the front end {addr}: {error}"),
            NodeError::Signal(error) => write!(f, "cannot install the signal handlers: {error}"),
            NodeError::Tls(flags, error) => write!(f, "{flags}: {error}"),
        }
    }
}

impl std::error::Error for NodeError {}

/// The cluster secret in `path`, without one trailing newline (`\n` or `\r\n`, as an editor
/// or `echo` leaves it).
fn read_cluster_secret(path: &std::path::Path) -> Result<Vec<u8>, NodeError> {
    read_secret_file("--cluster-secret-file", path, MIN_CLUSTER_SECRET_LEN)
}

/// The shortest `--http-token-file` token.
const MIN_HTTP_TOKEN_LEN: usize = 16;

/// The front end's bearer token: at least [`MIN_HTTP_TOKEN_LEN`] visible ASCII characters
/// (RFC 6750's token characters: no spaces).
fn read_http_token(path: &std::path::Path) -> Result<Vec<u8>, NodeError> {
    let token = read_secret_file("--http-token-file", path, MIN_HTTP_TOKEN_LEN)?;
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(NodeError::Usage(format!(
            "--http-token-file {}: a bearer token is visible ASCII without spaces",
            path.display()
        )));
    }
    Ok(token)
}

/// A secret from a file, one trailing newline (or CRLF) ignored, of at least `min` bytes.
fn read_secret_file(flag: &str, path: &std::path::Path, min: usize) -> Result<Vec<u8>, NodeError> {
    let shown = path.display();
    let mut secret = std::fs::read(path)
        .map_err(|error| NodeError::Usage(format!("{flag} {shown}: cannot read it: {error}")))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.len() < min {
        return Err(NodeError::Usage(format!(
            "{flag} {shown}: the secret has {} bytes, fewer than {min}",
            secret.len()
        )));
    }
    Ok(secret)
}

/// Each keyspace with its source: its own, else the shared one. Every keyspace needs one,
/// and every keyspace-specific source must name a keyspace.
fn pair_sources(args: &NodeArgs) -> Result<Vec<(KeyspaceSpec, SourceSpec)>, NodeError> {
    let mut shared = None;
    for arg in args.sources.iter().filter(|arg| arg.keyspace.is_none()) {
        if shared.replace(&arg.source).is_some() {
            return Err(NodeError::Usage("more than one --source without KEYSPACE=".to_owned()));
        }
    }
    for arg in &args.sources {
        if let Some(name) = &arg.keyspace
            && !args.keyspaces.iter().any(|keyspace| &keyspace.name == name)
        {
            return Err(NodeError::Usage(format!("--source {name}=…: no --keyspace {name}")));
        }
    }
    args.keyspaces
        .iter()
        .map(|keyspace| {
            let mut own = args
                .sources
                .iter()
                .filter(|arg| arg.keyspace.as_deref() == Some(keyspace.name.as_str()));
            let source = match (own.next(), own.next()) {
                (Some(_), Some(_)) => {
                    return Err(NodeError::Usage(format!(
                        "keyspace {}: more than one --source",
                        keyspace.name
                    )));
                }
                (Some(arg), None) => &arg.source,
                (None, _) => shared.ok_or_else(|| {
                    NodeError::Usage(format!(
                        "keyspace {} has no --source (give {}=SOURCE or a SOURCE for all)",
                        keyspace.name, keyspace.name
                    ))
                })?,
            };
            Ok((keyspace.clone(), source.clone()))
        })
        .collect()
}

/// The front end's address: `--http`, else loopback (of `--listen`'s IP family) and
/// `--listen`'s port + 1 (0 stays 0). Never `--listen`'s IP: the front end has no
/// authentication, so it is not exposed unless asked for.
fn http_addr(args: &NodeArgs) -> Result<SocketAddr, NodeError> {
    if let Some(http) = args.http {
        return Ok(http);
    }
    let port = match args.listen.port() {
        0 => 0,
        port => port.checked_add(1).ok_or_else(|| {
            NodeError::Usage(format!("--listen port {port} has no port + 1: give --http"))
        })?,
    };
    let loopback = match args.listen.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    Ok(SocketAddr::new(loopback, port))
}

/// The node's id is the address peers dial: `--advertise`, else the bound `--listen` address,
/// which must then be one a peer can dial.
fn check_dialable(args: &NodeArgs) -> Result<(), NodeError> {
    if args.listen.ip().is_unspecified() && args.advertise.is_none() {
        return Err(NodeError::Usage(format!(
            "--listen {}: an unspecified address cannot be this node's id (peers cannot dial \
             it): give --advertise HOST:PORT, the address peers reach this node at",
            args.listen
        )));
    }
    Ok(())
}

/// The flags of the front end's certificate, as errors name them.
const FRONT_TLS: &str = "--http-tls-cert/--http-tls-key";

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What a SIGHUP or a change of its files reloads: the front end's certificate and the
/// peers' TLS configuration (both loaded and watched by `herdcache_runtime::tls`).
#[derive(Clone, Debug)]
struct Reloads {
    front_cert: Option<ServerCert>,
    peer_tls: Option<TlsConfig>,
}

impl Reloads {
    /// Reloads everything, logging what happened and why (`cause`).
    fn reload(&self, cause: &str) {
        if let Some(cert) = &self.front_cert {
            report_front_cert(cert, cause, cert.reload(), true);
        }
        if let Some(peer_tls) = &self.peer_tls {
            report_peer_tls(cause, peer_tls.reload(), true);
        }
    }

    /// Looks at the files every [`WATCH_INTERVAL`] and reloads what changed; for ever. (Both
    /// also look at their files when a connection starts: this reloads them when no
    /// connection does, and says so.)
    async fn watch_files(self) {
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cause = "a file changed";
        loop {
            ticks.tick().await;
            if let Some(cert) = &self.front_cert {
                report_front_cert(cert, cause, cert.reload_if_changed(), false);
            }
            if let Some(peer_tls) = &self.peer_tls {
                report_peer_tls(cause, peer_tls.reload_if_changed(), false);
            }
        }
    }
}

/// Says what a reload of the peers' TLS files did; when nothing changed only if
/// `say_unchanged` (a file watch may find them already reloaded by a connection that started).
fn report_peer_tls(cause: &str, reloaded: Result<bool, TlsError>, say_unchanged: bool) {
    match reloaded {
        Ok(true) => {
            eprintln!("herdcache node: {cause}: reloaded the peers' TLS certificate, key and CA")
        }
        Ok(false) if say_unchanged => {
            eprintln!("herdcache node: {cause}: the peers' TLS files are unchanged (in force)");
        }
        Ok(false) => {}
        Err(error) => eprintln!(
            "herdcache node: {cause}: the peers' TLS files were not reloaded, the current ones \
             stay: {error}"
        ),
    }
}

/// Says what a reload of the front end's certificate did, as [`report_peer_tls`].
fn report_front_cert(
    cert: &ServerCert,
    cause: &str,
    reloaded: Result<bool, TlsError>,
    say_unchanged: bool,
) {
    let (cert_file, key_file) = cert.files();
    let files = format!("{}, {}", cert_file.display(), key_file.display());
    match reloaded {
        Ok(true) => {
            eprintln!("herdcache node: {cause}: reloaded the front end's certificate ({files})")
        }
        Ok(false) if say_unchanged => eprintln!(
            "herdcache node: {cause}: the front end's certificate is unchanged (in force: {files})"
        ),
        Ok(false) => {}
        Err(error) => eprintln!(
            "herdcache node: {cause}: the front end's certificate was not reloaded, the \
             current one stays: {error}"
        ),
    }
}

/// The next SIGTERM or SIGINT, by name.
async fn next_signal(terminate: &mut Signal, interrupt: &mut Signal) -> &'static str {
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// Switches the builder to Go groupcache's protocol and ring. Peers are `http://` base URLs,
/// or `https://` ones with TLS (`--tls-*`): one scheme for the whole ring.
fn groupcache_compat(builder: Builder, args: &NodeArgs) -> Result<Builder, NodeError> {
    let tls = args.tls_cert.is_some();
    let scheme = if tls { "https://" } else { "http://" };
    if let Some(peer) = args.peers.iter().find(|peer| !peer.starts_with(scheme)) {
        let why = if tls {
            "with --tls-cert every peer is https://host:port"
        } else if peer.starts_with("https://") {
            "https:// peers need --tls-cert, --tls-key and --tls-ca"
        } else {
            "peers are base URLs (http://host:port)"
        };
        return Err(NodeError::Usage(format!("--groupcache-compat: {why}, not {peer:?}")));
    }
    Ok(builder.groupcache_compat())
}

/// The flags of the peers' TLS, as errors name them.
const PEER_TLS: &str = "--tls-cert/--tls-key/--tls-ca";

/// The peers' TLS configuration from `--tls-cert`, `--tls-key` and `--tls-ca`: all three or
/// none.
fn peer_tls(args: &NodeArgs) -> Result<Option<TlsConfig>, NodeError> {
    let given =
        [("--tls-cert", &args.tls_cert), ("--tls-key", &args.tls_key), ("--tls-ca", &args.tls_ca)];
    match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => TlsConfig::from_files(cert, key, ca)
            .map(Some)
            .map_err(|error| NodeError::Tls(PEER_TLS, error)),
        (None, None, None) => Ok(None),
        _ => {
            let missing: Vec<&str> =
                given.iter().filter(|(_, path)| path.is_none()).map(|(flag, _)| *flag).collect();
            Err(NodeError::Usage(format!(
                "--tls-cert, --tls-key and --tls-ca go together: {} missing",
                missing.join(" and ")
            )))
        }
    }
}

/// The liveness settings of `--down-after` and `--min-members`: suspect after half of
/// `--down-after`, checked every eighth of it (the defaults' proportions).
fn liveness(args: &NodeArgs) -> Result<LivenessConfig, NodeError> {
    let down_after = args.down_after;
    let liveness = LivenessConfig {
        heartbeat_interval: down_after / 8,
        suspect_after: down_after / 2,
        down_after,
        min_members: usize::try_from(args.min_members).unwrap_or(usize::MAX),
    };
    if !liveness.is_valid() {
        return Err(NodeError::Usage(format!(
            "--down-after {down_after:?} is too short: at least {:?}",
            LivenessConfig::MIN_INTERVAL * 8
        )));
    }
    Ok(liveness)
}

/// Adds the `--discovery` provider. DNS yields `ip:port` ids, which a groupcache ring (base
/// URLs) cannot use.
fn with_discovery(
    builder: Builder,
    args: &NodeArgs,
    spec: &DiscoverySpec,
) -> Result<Builder, NodeError> {
    let dns = matches!(spec, DiscoverySpec::Dns { .. } | DiscoverySpec::Srv { .. });
    if dns && args.groupcache_compat {
        return Err(NodeError::Usage(
            "--groupcache-compat names peers by base URL: use --discovery static: or etcd://"
                .to_owned(),
        ));
    }
    if args.dns_server.is_some() && !dns {
        return Err(NodeError::Usage("--dns-server is for --discovery dns: or srv:".to_owned()));
    }
    let options = DiscoveryOptions { dns_server: args.dns_server };
    let provider =
        spec.provider_with(&options).map_err(|error| NodeError::Usage(error.to_string()))?;
    Ok(builder.discovery(provider))
}

/// Runs the node until SIGINT or SIGTERM, then leaves gracefully.
pub(crate) async fn run(args: NodeArgs) -> Result<(), NodeError> {
    let keyspaces = pair_sources(&args)?;
    check_dialable(&args)?;
    let http = http_addr(&args)?;
    let max_value = usize::try_from(WireLimits::DEFAULT_MAX_VALUE).unwrap_or(usize::MAX);
    let liveness = liveness(&args)?;
    let token = match &args.http_token_file {
        Some(path) => {
            Some(front::BearerToken::new(read_http_token(path)?, args.http_token_for_reads))
        }
        None => None,
    };
    let mut builder = Node::builder()
        .listen(args.listen)
        .cluster(args.cluster.clone())
        .peers(args.peers.clone())
        .stop_timeout(args.stop_timeout)
        .config(move |config| config.liveness = liveness);
    if let Some(path) = &args.cluster_secret_file {
        if args.groupcache_compat {
            return Err(NodeError::Usage(
                "--cluster-secret-file is for the herdcache protocol, not --groupcache-compat"
                    .to_owned(),
            ));
        }
        builder = builder.cluster_secret(read_cluster_secret(path)?);
    }
    for (keyspace, source) in &keyspaces {
        let config = keyspace.config(args.origin_timeout);
        builder = source.add_to(builder, config, args.origin_timeout, max_value);
    }
    let peer_tls = peer_tls(&args)?;
    if let Some(tls) = &peer_tls {
        builder = builder.tls(tls.clone());
    }
    builder = builder
        .max_inbound_connections(usize::try_from(args.max_peer_connections).unwrap_or(usize::MAX));
    // A groupcache peer is named by its base URL: https:// with TLS (also the default id).
    let scheme = if peer_tls.is_some() { "https://" } else { "http://" };
    if let Some(advertise) = &args.advertise {
        let compat_url = args.groupcache_compat && !advertise.contains("://");
        let advertise = if compat_url { format!("{scheme}{advertise}") } else { advertise.clone() };
        builder = builder.advertise(advertise);
    }
    if args.groupcache_compat {
        builder = groupcache_compat(builder, &args)?;
    }
    if let Some(spec) = &args.discovery {
        builder = with_discovery(builder, &args, spec)?;
    }

    let front_cert = match (&args.http_tls_cert, &args.http_tls_key) {
        (Some(cert), Some(key)) => Some(
            ServerCert::from_files(cert, key).map_err(|error| NodeError::Tls(FRONT_TLS, error))?,
        ),
        _ => None,
    };
    let acceptor = front_cert.as_ref().map(|cert| TlsAcceptor::from(cert.server_config()));

    // Signals first, so that a stop that comes during start-up is not lost (and a SIGHUP
    // does not kill the process, its default).
    let mut terminate = signal(SignalKind::terminate()).map_err(NodeError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(NodeError::Signal)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(NodeError::Signal)?;

    let listener = TcpListener::bind(http).await.map_err(|error| NodeError::Http(http, error))?;
    let http = listener.local_addr().map_err(|error| NodeError::Http(http, error))?;
    let node = builder.start().await.map_err(NodeError::Start)?;
    let (stop_front, stopped) = watch::channel(false);
    let connections = front::Connections::new(args.http_max_connections);
    let front = front::Front {
        node: node.clone(),
        max_value,
        client_timeout: args.http_client_timeout,
        token,
    };
    let front_end =
        tokio::spawn(front::serve(listener, front, acceptor, connections.clone(), stopped));
    let reloads = Reloads { front_cert, peer_tls };
    let watcher = tokio::spawn(reloads.clone().watch_files());
    println!(
        "herdcache node ready: id={} listen={} http={http}",
        node.node_id(),
        node.local_addr()
    );
    for (keyspace, source) in &keyspaces {
        eprintln!(
            "herdcache node: keyspace {} ({} bytes, ttl {}) from {source}",
            keyspace.name,
            keyspace.max_bytes,
            keyspace.ttl.map_or_else(|| "none".to_owned(), |ttl| format!("{ttl:?}")),
        );
    }

    let signal = loop {
        tokio::select! {
            signal = next_signal(&mut terminate, &mut interrupt) => break signal,
            _ = hangup.recv() => reloads.reload("SIGHUP"),
        }
    };
    watcher.abort();
    eprintln!("herdcache node: {signal}: leaving the cluster (again to exit at once)");
    let stop_timeout = args.stop_timeout;
    let leave = async move {
        let _ = stop_front.send(true);
        let _ = front_end.await;
        let started = tokio::time::Instant::now();
        node.stop().await;
        eprintln!("herdcache node: left the cluster in {:.2?}", started.elapsed());
        // The answers the leave just finished are still to be written.
        if tokio::time::timeout(stop_timeout, connections.all_closed()).await.is_err() {
            eprintln!(
                "herdcache node: front-end connections still open after {stop_timeout:?}: \
                 closing them"
            );
        }
    };
    tokio::select! {
        () = leave => Ok(()),
        signal = next_signal(&mut terminate, &mut interrupt) => {
            eprintln!("herdcache node: second {signal}: exiting without finishing the leave");
            // At once: returning would wait for the runtime's blocking threads (DNS lookups).
            std::process::exit(FORCED_EXIT_STATUS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn args(flags: &[&str]) -> Result<NodeArgs, String> {
        let argv = std::iter::once("node").chain(flags.iter().copied());
        Wrapper::try_parse_from(argv).map(|wrapper| wrapper.node).map_err(|error| error.to_string())
    }

    #[test]
    fn keyspaces_parse_with_defaults() {
        let spec = KeyspaceSpec::parse("users").expect("a name alone");
        assert_eq!((spec.name.as_str(), spec.max_bytes, spec.ttl), ("users", 64 << 20, None));
        let spec = KeyspaceSpec::parse("pages:1GiB:30s").expect("all three");
        assert_eq!(spec.max_bytes, 1 << 30);
        assert_eq!(spec.ttl, Some(Duration::from_secs(30)));
        for bad in ["", ":1MiB", "a:lots", "a:1MiB:soon", "a:1MiB:0s", "a:1:2s:3", "a:0", "a:0MiB"]
        {
            assert!(KeyspaceSpec::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sources_pair_with_keyspaces() {
        let parsed = args(&[
            "--listen=127.0.0.1:7001",
            "--keyspace=a",
            "--keyspace=b:1MiB",
            "--source=http://127.0.0.1:1/x?k={key}&v=1",
            "--source=b=echo:B-",
        ])
        .expect("valid flags");
        let pairs = pair_sources(&parsed).expect("paired");
        assert_eq!(pairs[0].1, SourceSpec::Http("http://127.0.0.1:1/x?k={key}&v=1".into()));
        assert_eq!(pairs[1].1, SourceSpec::Echo("B-".into()));
    }

    #[test]
    fn sources_that_do_not_fit_are_refused() {
        let refused = |flags: &[&str]| {
            let parsed = args(flags).expect("parsable");
            assert!(pair_sources(&parsed).is_err(), "{flags:?} accepted");
        };
        refused(&["--listen=127.0.0.1:1", "--keyspace=a", "--source=b=echo:"]);
        refused(&["--listen=127.0.0.1:1", "--keyspace=a", "--keyspace=b", "--source=a=echo:"]);
        refused(&["--listen=127.0.0.1:1", "--keyspace=a", "--source=echo:", "--source=echo:x"]);
        refused(&["--listen=127.0.0.1:1", "--keyspace=a", "--source=a=echo:", "--source=a=echo:"]);
        assert!(args(&["--listen=127.0.0.1:1", "--keyspace=a", "--source=ftp://x"]).is_err());
        assert!(args(&["--listen=127.0.0.1:1", "--keyspace=a"]).is_err(), "a source is required");
    }

    #[test]
    fn the_front_end_defaults_to_the_next_port_on_loopback() {
        let flags = ["--keyspace=a", "--source=echo:"];
        let with = |listen: &str, extra: &[&str]| {
            let mut all = vec![listen];
            all.extend_from_slice(&flags);
            all.extend_from_slice(extra);
            http_addr(&args(&all).expect("valid"))
        };
        assert_eq!(with("--listen=127.0.0.1:7001", &[]).ok(), "127.0.0.1:7002".parse().ok());
        assert_eq!(with("--listen=127.0.0.1:0", &[]).ok(), "127.0.0.1:0".parse().ok());
        // Loopback whatever the peers' address: the front end needs no token by default.
        assert_eq!(with("--listen=10.0.0.5:7001", &[]).ok(), "127.0.0.1:7002".parse().ok());
        assert_eq!(with("--listen=0.0.0.0:7001", &[]).ok(), "127.0.0.1:7002".parse().ok());
        assert_eq!(with("--listen=[::]:7001", &[]).ok(), "[::1]:7002".parse().ok());
        assert_eq!(
            with("--listen=127.0.0.1:7001", &["--http=0.0.0.0:9000"]).ok(),
            "0.0.0.0:9000".parse().ok()
        );
        assert!(with("--listen=127.0.0.1:65535", &[]).is_err());
    }

    #[test]
    fn discovery_takes_the_place_of_peers() {
        let base = ["--listen=127.0.0.1:0", "--keyspace=a", "--source=echo:"];
        let with = |extra: &[&str]| args(&[&base[..], extra].concat());
        let parsed = with(&["--discovery=etcd://127.0.0.1:2379/herdcache"]).expect("valid");
        assert!(matches!(parsed.discovery, Some(DiscoverySpec::Etcd { .. })));
        let parsed = with(&["--discovery=nats://127.0.0.1:4222/herdcache.prod"]).expect("valid");
        assert!(matches!(parsed.discovery, Some(DiscoverySpec::Nats { .. })));
        assert!(with(&["--discovery=static:a:1", "--peers=a:1"]).is_err(), "both lists");
        assert!(with(&["--dns-server=127.0.0.1:53"]).is_err(), "a server without discovery");
        let bad = with(&["--discovery=dns:cache"]).expect_err("no port");
        assert!(bad.contains("dns:NAME:PORT"), "{bad}");
        let builder = |extra: &[&str]| {
            let parsed = with(extra).expect("parsable");
            let spec = parsed.discovery.clone().expect("given");
            with_discovery(Node::builder(), &parsed, &spec).map(|_| ())
        };
        assert!(builder(&["--discovery=static:127.0.0.1:1", "--dns-server=127.0.0.1:53"]).is_err());
        assert!(
            builder(&["--discovery=srv:_h._tcp.example", "--groupcache-compat"]).is_err(),
            "DNS ids are not base URLs"
        );
        assert!(builder(&["--discovery=static:127.0.0.1:1"]).is_ok());
    }

    #[test]
    fn an_unspecified_listen_address_needs_an_advertised_one() {
        let check = |flags: &[&str]| {
            check_dialable(
                &args(&[flags, &["--keyspace=a", "--source=echo:"]].concat()).expect("valid flags"),
            )
        };
        for listen in ["--listen=0.0.0.0:0", "--listen=0.0.0.0:7001", "--listen=[::]:7001"] {
            let refused = check(&[listen]).expect_err("no id peers can dial");
            assert!(refused.to_string().contains("--advertise"), "{refused}");
        }
        assert!(check(&["--listen=0.0.0.0:7001", "--advertise=10.0.0.5:7001"]).is_ok());
        assert!(check(&["--listen=127.0.0.1:0"]).is_ok());
    }
}
