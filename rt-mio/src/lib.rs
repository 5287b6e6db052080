//! # herdcache-mio — herdcache on a mio event loop, with a blocking API
//!
//! A herdcache node for programs with no async runtime, and for small hosts: a member of a
//! ring of peers that shard keys by consistent hashing, load each missing key once in the
//! whole cluster from your [`DataSource`], and mirror hot keys. Every decision is the sans-IO
//! core's ([`herdcache_proto`]); this crate only moves bytes, reads clocks and calls your
//! source.
//!
//! The builder, the handles and the data sources are the ones every runtime crate shares
//! ([`herdcache_runtime`]): [`Builder`] is `herdcache_runtime::Builder<Mio>` (every builder
//! method of herdcache-tokio's, plus [`Mio`]'s worker settings through
//! [`runtime`](herdcache_runtime::Builder::runtime)); `start` returns a [`Handle`], the
//! blocking facade over the shared [`herdcache_runtime::Handle`]. This crate adds the event
//! loop and the worker pool.
//!
//! ```no_run
//! use herdcache_mio::{source_fn, Bytes, KeyspaceConfig, Mio, Node};
//!
//! # fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let users = source_fn(|key: Bytes| {
//!     // Look the key up in the database (blocking is fine: this runs on a worker thread).
//!     Ok::<_, std::io::Error>(Bytes::from(format!("user {}", String::from_utf8_lossy(&key))))
//! });
//! let node = Node::builder()
//!     .listen("127.0.0.1:7001".parse()?)
//!     .peers(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
//!     .keyspace(KeyspaceConfig::new("users", 64 << 20), users)
//!     .runtime(Mio::default().workers(4))
//!     .start()?;
//! let ada = node.get("users", "user:42")?;
//! node.put("users", "user:43", "Grace")?;
//! node.stop();
//! # let _ = ada;
//! # Ok(())
//! # }
//! ```
//!
//! ## The blocking API, and the async one
//! Every call of [`Handle`] and [`KeyspaceHandle`] blocks the calling thread until the node
//! answers: at once on a cache hit, else within the request's timeout
//! (`NodeConfig::request_timeout`), or with [`Error::ShuttingDown`] when the node stops.
//! [`Handle::as_async`] (and `From`) gives the node's async [`herdcache_runtime::Handle`],
//! whose futures complete on any executor: async code and blocking threads can share a node.
//! A keyspace's source may be blocking ([`DataSource`], run on a worker) or async
//! ([`herdcache_runtime::DataSource`], its future driven to completion on a worker: it must
//! not need a runtime's context, as tokio's timers do; async-io's work).
//!
//! [`Builder::groupcache_compat`](herdcache_runtime::Builder::groupcache_compat) makes the
//! node a member of a ring of Go groupcache peers, as on every runtime: base URLs,
//! groupcache's HTTP protocol and ring, keyspaces as groups, puts and deletes local only.
//!
//! ## Threads
//! - **Callers** block on their own threads. A cache hit is served right there by the
//!   concurrent front ([`herdcache_runtime::front::Front`]): a sharded store behind short
//!   locks, no channel, no hop to another thread, no wait. A miss or a write queues work for
//!   the event loop, wakes it, and parks the caller until the node answers.
//! - **One event-loop thread** per node owns every socket and runs the loop every herdcache
//!   runtime runs, over the shared [`DriverCore`](herdcache_runtime::DriverCore) (the
//!   connection table, executing the front's outputs, the one timer's deadline): let the
//!   core act, then sleep in `mio::Poll::poll` until the earliest of the core's next
//!   deadline and the transport's (connect timeouts, closing grace, idle and write-stall
//!   timeouts), a socket's readiness, or a wake-up (a `mio::Waker`: from the front, a worker,
//!   or a handle). Readiness is handled as mio requires: accept and read until `WouldBlock`
//!   (bounded per wake-up so that one peer cannot starve the others), writes vectored, bytes
//!   a write could not take kept with WRITABLE interest registered only while some are
//!   pending.
//! - **Worker threads**, at most [`Mio::workers`] (default [`DEFAULT_WORKERS`]), started on
//!   demand: they call data sources (which may block) and look up peers whose node id is a
//!   host name. While all are busy, loads wait in line (the core bounds how many it asks
//!   for). A panicking source fails its load; the worker and the node go on.
//! - A graceful stop through the async handle waits on a short-lived thread of its own (the
//!   blocking [`Handle::stop`] waits on the caller's).
//!
//! ## What it costs
//! - **Threads**: 1 event loop + up to N workers (0 until the first load; a burst of loads
//!   starts one per queued load, up to N). The loop thread has Rust's default stack for a
//!   spawned thread (2 MiB of address space reserved, a few pages touched); a worker
//!   [`DEFAULT_WORKER_STACK`] (the same 2 MiB; [`Mio::worker_stack_size`]), of which only
//!   the pages your source's calls touch take memory. An idle node takes no CPU: the loop
//!   sleeps until a deadline or an event.
//! - **Per node**, beyond the cache's own byte budget and the core's state: one 64 KiB read
//!   buffer shared by every connection, a readiness list of 256 events (~3 KiB), the poller
//!   and its waker (two file descriptors on Linux).
//! - **Per connection**: one socket (file descriptor) and about 200 bytes of state (its entry
//!   in the connection table included), plus the bytes the node transmitted that the socket
//!   has not taken yet (nothing while the peer keeps up), bounded by the send buffer
//!   ([`Builder::send_buffer`](herdcache_runtime::Builder::send_buffer), the
//!   [`SendLimits`](herdcache_runtime::SendLimits) policy every runtime applies): a transmit
//!   past its hard cap (the largest frame + 1 MiB, 65 MiB by default) drops the connection;
//!   bytes that see no write progress for the write-stall timeout (30 s) close it; above a
//!   high-water mark, when one is set (off by default), the loop stops reading the
//!   connection until its low-water mark. Plus the partial frame the core is reassembling and
//!   the kernel's socket buffers. No per-connection thread, task or read buffer.
//!
//! ## The loop's contract
//! - It makes **no protocol decision**. It executes the front's outputs through
//!   [`DriverIo`](herdcache_runtime::DriverIo): a load → queue the call on a worker
//!   (`DriverCore` answers "no data source" when the keyspace has none), feed its result;
//!   a transmit → append to that connection's pending bytes, written once per turn; a
//!   connect → a non-blocking connect to the peer's address (its node id; a host name is
//!   looked up on a worker first), checked with `take_error`/`peer_addr` when writable,
//!   bounded by `NodeConfig::connect_timeout`; a close → write what was transmitted before
//!   (within 2 s), close; an event → a `tracing` record (`Event::Drained` ends a graceful
//!   stop). Malformed frames, wire limits, timeouts of requests, loads and hellos, reconnect
//!   backoff: all the core's.
//! - Connection ids are `DriverCore`'s, never reused in the node's lifetime; a connection's
//!   poll token is derived from its id (connects in progress have tokens of their own).
//! - The idle timeout (no traffic either way) is a transport concern and lives here; it is
//!   off unless [`Builder::idle_timeout`](herdcache_runtime::Builder::idle_timeout) sets it.
//!
//! ## Stopping
//! [`Handle::stop`] leaves gracefully: the node tells its peers, refuses new requests,
//! finishes what is in progress and emits `Drained` (or the stop timeout passes); then the
//! loop closes the listener and every connection and fails what is left with
//! [`Error::ShuttingDown`]. [`Handle::kill`] (and dropping the last handle of either kind)
//! ends the loop at its next turn and drops every socket, as a crash would. Neither waits
//! for a data source that is still running: its worker finishes the call and exits.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod conn;
mod event_loop;
mod node;
mod workers;

pub use bytes::Bytes;
pub use herdcache_proto::{
    ConfigError, Entry, Error, Instant, KeyspaceConfig, KeyspaceStats, NodeConfig, Path, Value,
};
pub use herdcache_runtime::blocking::{DataSource, Handle, KeyspaceHandle, SourceFn, source_fn};
pub use herdcache_runtime::{SendBuffer, StartError, TransportStats, tls};
pub use node::{Builder, DEFAULT_WORKERS, Mio, Node};
pub use workers::DEFAULT_WORKER_STACK;
