//! # herdcache-async-std — herdcache on async-std and smol
//!
//! A herdcache node in an async-std or smol program: a member of a ring of peers that shard
//! keys by consistent hashing, load each missing key once in the whole cluster from your
//! [`DataSource`], and mirror hot keys. Every decision is the sans-IO core's
//! ([`herdcache_proto`]); the driver every async runtime shares ([`herdcache_runtime`]) moves
//! the bytes, reads the clocks and calls your source, and this crate gives it async-io's
//! sockets, timers and an executor.
//!
//! The API is herdcache-tokio's, name for name (both re-export herdcache-runtime's):
//! switching runtime is changing the crate in the imports.
//!
//! ```no_run
//! use herdcache_async_std::{source_fn, Bytes, KeyspaceConfig, Node};
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
//! It joins a ring of Go groupcache peers the same way too
//! ([`groupcache_compat`](herdcache_runtime::Builder::groupcache_compat)): the protocol is
//! the core's and the builder the shared one.
//!
//! ## Executors and threads
//! This crate is herdcache's [`Runtime`](herdcache_runtime::Runtime) on async-io
//! ([`AsyncStd`]): the node runs the one driver every async runtime shares (the crate docs of
//! [`herdcache_runtime`] describe its tasks, its drive loop and its contract). async-std is
//! discontinued upstream and smol is its successor; both run on the same reactor and timers
//! (`async-io`). This crate is built on those shared pieces only (`async-io`, `async-net`,
//! `async-executor`, `async-channel`, `futures-lite`), so a node works the same under either
//! executor, and under none:
//!
//! - **Callers** ([`Handle`], [`KeyspaceHandle`]) await on whatever executor they run on. A
//!   cache hit is served right there by the concurrent front; anything else is answered by
//!   the driver waking the caller's waker.
//! - **The node** runs on an executor of its own (`async-executor`) on one dedicated thread
//!   (`herdcache-node`), driven by `async_io::block_on`: the driver task and the node's IO
//!   tasks, dials and data-source calls. So the node does not depend on how the user's
//!   program schedules its tasks, and a node's IO never competes with the caller's executor
//!   for its threads.
//! - **Data sources** run on the node's thread: use async-io based IO and timers in them
//!   (async-std's and smol's are), and move blocking work off with `blocking::unblock` or
//!   `async_std::task::spawn_blocking`. A panicking source fails its load; the node serves on.
//!
//! ## Stopping
//! [`Handle::stop`] leaves gracefully: the node tells its peers, refuses new requests,
//! finishes what is in progress and emits `Drained` (or the stop timeout passes); then the
//! driver closes the listener and every connection and fails what is left with
//! [`Error::ShuttingDown`]. [`Handle::kill`] (and dropping the last handle) cancels the driver
//! and ends the node's thread, which drops every task and socket at once, as a crash would.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod runtime;

pub use bytes::Bytes;
pub use herdcache_proto::{
    ConfigError, Entry, Error, Instant, KeyspaceConfig, KeyspaceStats, NodeConfig, Path, Value,
};
pub use herdcache_runtime::front::Pending;
pub use herdcache_runtime::{
    DataSource, GetFuture, Handle, KeyspaceHandle, SendBuffer, SourceFn, StartError, Starting,
    TransportStats, source_fn, tls,
};

pub use runtime::{AsyncStd, TcpReader};

/// The entry point: `Node::builder()` sets up a cluster member.
pub type Node = herdcache_runtime::Node<AsyncStd>;

/// Sets a node up (the builder every herdcache runtime shares); `start().await` starts it on
/// a thread of its own, from any executor.
pub type Builder = herdcache_runtime::Builder<AsyncStd>;
