//! # herdcache-async-std — herdcache on async-std and smol
//!
//! A herdcache node in an async-std or smol program: a member of a ring of peers that shard
//! keys by consistent hashing, load each missing key once in the whole cluster from your
//! [`DataSource`], and mirror hot keys. Every decision is the sans-IO core's
//! ([`herdcache_proto`]); this crate only moves bytes, reads clocks and calls your source.
//!
//! The API is herdcache-tokio's, name for name (both are the core's
//! [`herdcache_runtime`]): switching runtime is changing the crate in the imports.
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
//! ([`groupcache_compat`](herdcache_runtime::Builder::groupcache_compat)): the protocol
//! and the builder are the core's.
//!
//! ## Executors and threads
//! async-std is discontinued upstream and smol is its successor; both run on the same
//! reactor and timers (`async-io`). This crate is built on those shared pieces only
//! (`async-io`, `async-net`, `async-executor`, `async-channel`, `futures-lite`), so a node
//! works the same under either executor, and under none:
//!
//! - **Callers** ([`Handle`], [`KeyspaceHandle`]) await on whatever executor they run on. A
//!   cache hit is served right there by the core's concurrent front
//!   ([`herdcache_runtime::front::Front`]); anything else is answered by the driver waking the
//!   caller's waker.
//! - **The node** runs on an executor of its own (`async-executor`) on one dedicated thread
//!   (`herdcache-node`), driven by `async_io::block_on`: the driver task, one reader and one
//!   writer task per connection, the accept task, dials and data-source calls. So the node
//!   does not depend on how the user's program schedules its tasks, and a node's IO never
//!   competes with the caller's executor for its threads. Sockets and timers are async-io's,
//!   whose reactor serves every executor.
//! - **Data sources** run on the node's thread: use async-io based IO and timers in them
//!   (async-std's and smol's are), and move blocking work off with `blocking::unblock` or
//!   `async_std::task::spawn_blocking`. A panicking source fails its load; the node serves on.
//!
//! ## The driver's contract
//! The bookkeeping is the core's [`DriverCore`](herdcache_runtime::DriverCore); this
//! crate implements its IO half and runs the loop every herdcache runtime runs (`driver.rs`): drain the front's actions and
//! execute them (`Load` → the keyspace's source, `Transmit` → the connection's writer,
//! `Connect` → dial within `NodeConfig::connect_timeout`, `Close` → flush within a grace
//! period then close, `Event` → a `tracing` record), re-arm the one timer from the front's
//! `poll_timeout`, wait on the front's wake-up, the bounded event channel, the timer or a
//! stop; feed what came; at most 64 events per wake-up. No protocol decision is made here.
//! Each connection's queued bytes are counted against the send buffer
//! ([`Builder::send_buffer`](herdcache_runtime::Builder::send_buffer), the core's
//! [`SendLimits`](herdcache_runtime::SendLimits) policy): a transmit past its hard cap
//! drops the connection, queued bytes without write progress for the write-stall timeout
//! close it, and above a high-water mark (when one is set; off by default) the reader waits.
//! Every channel is bounded except each connection's transmit queue, which the core bounds.
//! The idle timeout (no traffic either way on a connection) is off unless
//! [`Builder::idle_timeout`](herdcache_runtime::Builder::idle_timeout) sets it.
//!
//! ## Stopping
//! [`Handle::stop`] leaves gracefully: the node tells its peers, refuses new requests,
//! finishes what is in progress and emits `Drained` (or the stop timeout passes); then the
//! driver closes the listener and every connection and fails what is left with
//! [`Error::ShuttingDown`]. [`Handle::kill`] (and dropping the last handle) cancels the driver
//! and ends the node's thread, which drops every task and socket at once, as a crash would.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod conn;
mod driver;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_channel::Sender;
use async_executor::{Executor, Task};
use async_net::TcpListener;
use futures_lite::FutureExt;
use herdcache_runtime::front::WakeDriver;
use herdcache_runtime::{CLOSE_GRACE, Control, Runtime, Setup};

pub use bytes::Bytes;
pub use herdcache_proto::{
    ConfigError, Entry, Error, Instant, KeyspaceConfig, KeyspaceStats, NodeConfig, Path, Value,
};
pub use herdcache_runtime::front::Pending;
pub use herdcache_runtime::{
    DataSource, GetFuture, Handle, KeyspaceHandle, SendBuffer, SourceFn, StartError, Starting,
    source_fn,
};

use crate::driver::{Driver, DriverConfig, Signals};

/// The entry point: `Node::builder()` sets up a cluster member.
pub type Node = herdcache_runtime::Node<AsyncStd>;

/// Sets a node up (the builder every herdcache runtime shares); `start().await` starts it on
/// a thread of its own, from any executor.
pub type Builder = herdcache_runtime::Builder<AsyncStd>;

/// The async-std/smol runtime, as the [`Builder`] names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Started = Starting;

    /// Binds the listener, then starts the node's thread and its driver task.
    fn start(self, setup: Setup) -> Starting {
        Box::pin(async move {
            let listener =
                TcpListener::bind(setup.listen_addr()).await.map_err(StartError::Bind)?;
            let local_addr = listener.local_addr().map_err(StartError::Bind)?;
            let (wake_tx, wake) = async_channel::bounded(1);
            let wake_driver: WakeDriver = Arc::new(move || {
                // Full means a wake-up is pending already.
                let _ = wake_tx.try_send(());
            });
            let node = setup.assemble(local_addr, wake_driver)?;
            let (stop_now, stop_now_rx) = async_channel::bounded(1);
            let (quit, quit_rx) = async_channel::bounded::<()>(1);
            let executor = Arc::new(Executor::new());
            let config = DriverConfig {
                connect_timeout: node.connect_timeout,
                idle_timeout: node.idle_timeout,
                send_limits: node.send_limits,
            };
            let driver = Driver::new(Arc::clone(&node.shared), &executor, listener, config);
            let task = executor.spawn(driver.run(Signals { wake, stop_now: stop_now_rx }));
            std::thread::Builder::new()
                .name("herdcache-node".into())
                // The thread owns the executor: when the node's control is dropped the quit
                // channel closes, `run` returns, and dropping the executor drops every task.
                .spawn(move || async_io::block_on(executor.run(quit_rx.recv())))
                .map_err(StartError::Runtime)?;
            tracing::info!(node = node.shared.node_id(), %local_addr, "node started");
            let control = Box::new(NodeThread { driver: task, stop_now, _quit: quit });
            Ok(Handle::new(node.shared, control, node.stop_timeout))
        })
    }
}

/// The node's thread and its driver task, as a [`Handle`] ends them. Dropping it cancels the
/// driver and ends the thread.
struct NodeThread {
    driver: Task<()>,
    stop_now: Sender<()>,
    /// Closed on drop: the thread's executor then returns.
    _quit: Sender<()>,
}

impl Control for NodeThread {
    fn stop(self: Box<Self>, timeout: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut this = *self;
            if !finishes_within(&mut this.driver, timeout).await {
                tracing::warn!("not drained in time: closing");
                let _ = this.stop_now.try_send(());
                // Past this second grace the driver is cancelled with the thread.
                finishes_within(&mut this.driver, CLOSE_GRACE * 2).await;
            }
        })
    }

    fn kill(self: Box<Self>) {
        drop(self);
    }
}

/// Whether `task` finishes within `limit`.
async fn finishes_within(task: &mut Task<()>, limit: Duration) -> bool {
    async {
        task.await;
        true
    }
    .or(driver::elapsed(limit, false))
    .await
}
