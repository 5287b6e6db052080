//! # herdcache-tokio — herdcache on tokio
//!
//! A herdcache node in a tokio program: a member of a ring of peers that shard keys by
//! consistent hashing, load each missing key once in the whole cluster from your
//! [`DataSource`], and mirror hot keys. Every decision is the sans-IO core's
//! ([`herdcache_proto`]); this crate only moves bytes, reads clocks and calls your source.
//!
//! ```no_run
//! use herdcache_tokio::{source_fn, Bytes, KeyspaceConfig, Node};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let users = source_fn(|key: Bytes| async move {
//!     // Look the key up in the database…
//!     Ok::<_, std::io::Error>(Bytes::from(format!("user {}", String::from_utf8_lossy(&key))))
//! });
//! let node = Node::builder()
//!     .listen("127.0.0.1:7001".parse()?)
//!     .peers(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
//!     .keyspace(KeyspaceConfig::new("users", 64 << 20), users)
//!     .start()
//!     .await?;
//! let ada = node.get("users", "user:42").await?;
//! node.put("users", "user:43", "Grace").await?;
//! node.stop().await;
//! # let _ = ada;
//! # Ok(())
//! # }
//! ```
//!
//! ## groupcache compatibility
//! [`Builder::groupcache_compat`](herdcache_runtime::Builder::groupcache_compat)
//! makes the node a member of a ring of Go groupcache peers (golang/groupcache's `HTTPPool`):
//! it is named by its base URL (`http://host:port`, by default `http://{bound address}`), its
//! peers are base URLs, keys are placed on groupcache's ring (50 CRC-32 points per peer, keyed
//! by the URL strings), fetches are `GET {peer}/_groupcache/{group}/{key}` over a small
//! keep-alive pool per peer, the listener answers the same requests, and hot keys are mirrored
//! one time in ten, as Go does. Keyspace names are group names. groupcache has no writes on
//! its wire, so puts and deletes apply to this node only. A team with a Go fleet can move to
//! herdcache one node at a time. The protocol and every decision are the core's
//! ([`herdcache_proto::groupcache`],
//! [`PeerProtocol::GroupcacheHttp`](herdcache_proto::PeerProtocol::GroupcacheHttp)), and so is
//! the builder: herdcache-async-std has the same mode, and herdcache-mio's builder has
//! `groupcache_compat` too.
//!
//! ```no_run
//! use herdcache_tokio::{source_fn, Bytes, KeyspaceConfig, Node};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let source = source_fn(|key: Bytes| async move { Ok::<_, std::io::Error>(key) });
//! let node = Node::builder()
//!     .groupcache_compat()
//!     .listen("0.0.0.0:8080".parse()?)
//!     .advertise("http://10.0.0.3:8080")
//!     // The Go peers, named exactly as they name each other, and this node.
//!     .peers(["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"])
//!     .keyspace(KeyspaceConfig::new("thumbnails", 64 << 20), source) // a group name
//!     .start()
//!     .await?;
//! let _ = node.get("thumbnails", "cat.png").await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Tasks and threads
//! - **Callers** ([`Handle`], [`KeyspaceHandle`]) run on their own tasks, on any thread. A
//!   cache hit is served right there by the core's concurrent front
//!   ([`herdcache_runtime::front::Front`]): a sharded store behind short locks, no channel, no
//!   hop to another task. Everything else the front queues as work for the driver and wakes it.
//! - **The driver** is one task per node. It owns the front's driver side and runs the loop
//!   every herdcache runtime runs: drain the front's actions and execute them, re-arm the one
//!   timer from `poll_timeout_in`, then wait on (a) the front's wake-up (a `Notify`), (b) the
//!   bounded channel of IO events, (c) finished jobs, (d) the timer; feed what came, repeat.
//!   It checks expiry against the clock as well as the timer, and handles at most 64 IO
//!   events per wake-up before it looks at the rest again.
//! - **Per connection** a reader task (reads into a reused buffer, sends the bytes to the
//!   driver; EOF, an error or the idle timeout ends it) and a writer task (gathers every
//!   queued chunk into one vectored write; after a close it flushes and shuts the socket
//!   down). One accept task. TCP_NODELAY on every socket.
//! - **Jobs**: one task per data-source call ([`DataSource::fetch`]) and per dial (bounded by
//!   `NodeConfig::connect_timeout`). A panicking source fails its load; it does not take the
//!   node down.
//!
//! The builder, the handle, the data source and the errors are the core's
//! ([`herdcache_runtime`]), shared by every async runtime crate: switching runtime is
//! changing this crate's name in the imports. This crate adds the driver.
//!
//! ## The driver's contract
//! - It makes **no protocol decision**. It executes the front's actions: `Load` → call the
//!   keyspace's source (or answer "no data source" when it has none), feed `Loaded`;
//!   `Transmit` → queue the bytes on that connection's writer, in order; `Connect` → dial the
//!   address the core names (`host:port`), feed `Connected` or `ConnectFailed`; `Close` → flush what
//!   was transmitted before, close, feed `Closed`; `Event` → a `tracing` record
//!   (`Event::Drained` ends a graceful stop). Malformed frames, wire limits, timeouts of
//!   requests, loads and hellos, reconnect backoff: all the core's.
//! - The bookkeeping — the connection table (ids unique for the node's lifetime), executing
//!   the actions, the timer's deadline, the flush on shutdown — is the core's
//!   [`DriverCore`](herdcache_runtime::DriverCore), shared with every runtime crate;
//!   this crate implements its IO half.
//! - The idle timeout (no traffic either way on a connection) is a transport concern and
//!   lives here; it is off unless
//!   [`Builder::idle_timeout`](herdcache_runtime::Builder::idle_timeout) sets it.
//! - Every channel is bounded except each connection's transmit queue (the driver never
//!   waits on one peer's socket), whose bytes are counted against the send buffer
//!   ([`Builder::send_buffer`](herdcache_runtime::Builder::send_buffer), the core's
//!   [`SendLimits`](herdcache_runtime::SendLimits) policy): a transmit past its hard
//!   cap drops the connection, queued bytes without write progress for its write-stall
//!   timeout close it, and above a high-water mark (when one is set; off by default) the
//!   reader waits. Worst case per connection: the hard cap (the largest frame + 1 MiB by
//!   default).
//!
//! ## Stopping
//! [`Handle::stop`] leaves gracefully: the node tells its peers, refuses new requests,
//! finishes what is in progress and emits `Drained` (or the stop timeout passes); then the
//! driver closes the listener and every connection and fails what is left with
//! [`Error::ShuttingDown`]. [`Handle::kill`] (and dropping the last handle) aborts every task
//! and drops every socket at once, as a crash would.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod builder;
mod conn;
mod driver;

pub use builder::{Builder, Node, Tokio};
pub use bytes::Bytes;
pub use herdcache_proto::{
    ConfigError, Entry, Error, Instant, KeyspaceConfig, KeyspaceStats, NodeConfig, Path, Value,
};
pub use herdcache_runtime::front::Pending;
pub use herdcache_runtime::{
    DataSource, GetFuture, Handle, KeyspaceHandle, SendBuffer, SourceFn, StartError, Starting,
    source_fn,
};

/// The README's Rust examples (the core's and this crate's), compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
