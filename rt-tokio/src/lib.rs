//! # herdcache-tokio — herdcache on tokio
//!
//! A herdcache node in a tokio program: a member of a ring of peers that shard keys by
//! consistent hashing, load each missing key once in the whole cluster from your
//! [`DataSource`], and mirror hot keys. Every decision is the sans-IO core's
//! ([`herdcache_proto`]); the driver every async runtime shares ([`herdcache_runtime`]) moves
//! the bytes, reads the clocks and calls your source, and this crate gives it tokio's
//! sockets, timers and tasks.
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
//! [`PeerProtocol::GroupcacheHttp`](herdcache_proto::PeerProtocol::GroupcacheHttp)), and the
//! builder is the shared one: herdcache-async-std has the same mode, and herdcache-mio's
//! builder has `groupcache_compat` too.
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
//! This crate is herdcache's [`Runtime`](herdcache_runtime::Runtime) on tokio ([`Tokio`]):
//! the node runs the one driver every async runtime shares (the crate docs of
//! [`herdcache_runtime`] describe its tasks, its drive loop and its contract) on the tokio
//! runtime whose context `start` is awaited in. Per node: the driver task, one reader and
//! one writer task per connection, the accept task, one task per dial and per data-source
//! call; a cache hit is served in the caller's own task by the concurrent front, with no
//! hop to the driver. Reads go straight into the reader's reused buffer. TCP_NODELAY on
//! every socket.
//!
//! The builder, the handle, the data source and the errors are the shared ones
//! ([`herdcache_runtime`]): switching runtime is changing this crate's name in the imports.
//!
//! ## Stopping
//! [`Handle::stop`] leaves gracefully: the node tells its peers, refuses new requests,
//! finishes what is in progress and emits `Drained` (or the stop timeout passes); then the
//! driver closes the listener and every connection and fails what is left with
//! [`Error::ShuttingDown`]. [`Handle::kill`] (and dropping the last handle) aborts every task
//! and drops every socket at once, as a crash would.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod runtime;

pub use runtime::{Tokio, TokioTask};

/// The entry point: `Node::builder()` sets up a cluster member.
pub type Node = herdcache_runtime::Node<Tokio>;

/// Sets a node up (the builder every herdcache runtime shares); `start().await` starts it on
/// the current tokio runtime.
pub type Builder = herdcache_runtime::Builder<Tokio>;

pub use bytes::Bytes;
pub use herdcache_proto::{
    ConfigError, Entry, Error, Instant, KeyspaceConfig, KeyspaceStats, NodeConfig, Path, Value,
};
pub use herdcache_runtime::front::Pending;
pub use herdcache_runtime::{
    DataSource, GetFuture, Handle, KeyspaceHandle, SendBuffer, SourceFn, StartError, Starting,
    TransportStats, source_fn, tls,
};

/// The README's Rust examples (the core's and this crate's), compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
