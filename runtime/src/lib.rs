//! # herdcache-runtime — what every herdcache runtime shares, written once
//!
//! The sans-IO core ([`herdcache_proto`]) decides; this crate holds everything a running node
//! needs that is not tied to one runtime's sockets, timers or tasks, so each runtime crate
//! only adapts its runtime (the shape of quinn's `quinn` crate over `quinn-proto`):
//!
//! - [`front`]: the concurrent front (a sharded store any thread reads hits from, the node
//!   behind one short lock, replies straight to the caller), checked with loom.
//! - [`DataSource`] (the async loader of a keyspace), [`source_fn`], the blocking ones in
//!   [`blocking`], and their type-erased form [`SharedSource`] (either kind, on a node of any
//!   runtime: [`IntoSource`]), which maps the outcome to the core's
//!   [`LoadResult`](herdcache_proto::LoadResult) and turns a panic into a failed load.
//! - [`Node`] and [`Builder`] (generic over how the runtime crate starts a node, [`Start`];
//!   each crate names them `Node` and `Builder`), the [`Setup`] it collects, and
//!   [`Setup::assemble`], which makes the node's configuration, front and source table once
//!   the listener is bound.
//! - [`Handle`] and [`KeyspaceHandle`]: the whole cache API over the front, the same type
//!   whatever the runtime; the runtime plugs in how its driver is stopped or killed
//!   ([`Control`]). Their `get` returns a [`GetFuture`], looked up in the call, so a hit
//!   costs what the front's does. [`blocking::Handle`] and [`blocking::KeyspaceHandle`] are
//!   the same API with calls that block the thread (herdcache-mio hands them out; they
//!   convert to and from the async ones).
//! - **The one async driver and connection loop**, over a small [`Runtime`] trait (spawn,
//!   one timer, connect, accept, a byte stream) that herdcache-tokio implements for tokio and
//!   herdcache-async-std for async-io (async-std and smol). Every `R: Runtime` is a
//!   [`Start`]: `Builder<R>::start` runs this driver on `R`.
//! - Transport pieces: [`WriteQueue`] (partial vectored writes), [`Activity`] (idle timeout),
//!   and the send-buffer policy every driver applies ([`SendBuffer`] as configured,
//!   [`SendLimits`] as applied, [`Outflow`] for a reader and a writer on tasks of their own).
//! - [`tls`]: mutual TLS between peers ([`tls::TlsConfig`], reloaded without a restart; one
//!   sans-IO [`tls::TlsSession`] both drivers feed; [`tls::ServerCert`], the same loader for
//!   an HTTPS front end's certificate), and [`TransportGuard`]: what a node's
//!   transport checks before the core hears of a connection (the inbound connection cap,
//!   which counts connections in their handshake; failed handshakes), with its
//!   [`TransportStats`].
//! - The driver's bookkeeping: [`DriverCore`] keeps the connection table and the timer's
//!   deadline, feeds the front and executes its outputs through a [`DriverIo`] (the async
//!   driver's, or herdcache-mio's event loop).
//!
//! ## Tasks of an async node
//! - **Callers** ([`Handle`], [`KeyspaceHandle`]) run on their own tasks, on any thread and
//!   executor. A cache hit is served right there by the concurrent front
//!   ([`front::Front`]): a sharded store behind short locks, no channel, no hop to another
//!   task. Everything else the front queues as outputs for the driver and wakes it.
//! - **The driver** is one task per node. It owns the front's driver side and runs the loop
//!   every herdcache runtime runs: drain the front's outputs
//!   ([`Front::poll_output`](front::Front::poll_output)) and execute them, re-arm the one
//!   timer from the front's `poll_timeout`, then wait on (a) a stop, (b) the bounded channel
//!   of events from the node's tasks, (c) the front's wake-up, (d) the timer; feed what came,
//!   repeat. It checks expiry against the clock as well as the timer, and handles at most
//!   [`EVENTS_PER_WAKE`] events per wake-up before it looks at the rest again.
//! - **Per connection** a reader task (reads into a reused buffer, sends the bytes to the
//!   driver, at most [`READ_AHEAD`] chunks ahead of what the driver fed to the node; EOF, an
//!   error or the idle timeout ends it) and a writer task (gathers the queued
//!   chunks into vectored writes; after a close it flushes and shuts the socket down). One
//!   accept task, which closes a connection over the inbound cap at once. TCP_NODELAY on
//!   every socket. With TLS, a job per new connection runs its handshake (bounded by the
//!   handshake timeout) before the core is told; then the reader decrypts and the writer
//!   encrypts (see `connection.rs`).
//! - **Jobs**: one task per data-source call ([`DataSource::fetch`]), per dial (bounded by
//!   `NodeConfig::connect_timeout`) and per closing connection's grace period; each reports
//!   on the event channel, and a kill cancels those in progress. A panicking source fails its
//!   load; it does not take the node down.
//!
//! Where those tasks run is the runtime's: on the tokio runtime that starts the node
//! (herdcache-tokio), on an executor thread of the node's own (herdcache-async-std).
//!
//! ## The driver's contract
//! - It makes **no protocol decision**. It executes the front's outputs: `Load` → call the
//!   keyspace's source (or answer "no data source" when it has none), feed `Loaded`;
//!   `Transmit` → queue the bytes on that connection's writer, in order; `Connect` → dial the
//!   address the core names (`host:port`), feed `Connected` or `ConnectFailed`; `Close` →
//!   flush what was transmitted before (within [`CLOSE_GRACE`]), close, feed `Closed`;
//!   `Event` → a `tracing` record (`Event::Drained` ends a graceful stop). Malformed frames,
//!   wire limits, timeouts of requests, loads and hellos, reconnect backoff: all the core's.
//! - The idle timeout (no traffic either way on a connection) is a transport concern and
//!   lives in the connection loop; it is off unless [`Builder::idle_timeout`] sets it.
//! - Every channel is bounded except each connection's transmit queue (the driver never
//!   waits on one peer's socket), whose bytes are counted against the send buffer
//!   ([`Builder::send_buffer`], the [`SendLimits`] policy): a transmit past its hard cap drops
//!   the connection, queued bytes without write progress for its write-stall timeout close
//!   it (decided against the clock before a write is retried), and above a high-water mark
//!   (when one is set; off by default) the reader waits. Worst case per connection: the hard
//!   cap (the largest frame + 1 MiB by default).
//!
//! ## Stopping
//! [`Handle::stop`] leaves gracefully: the node tells its peers, refuses new requests,
//! finishes what is in progress and emits `Drained` (or the stop timeout passes, and the
//! driver is told to close now); then the driver closes the listener and every connection
//! (each writer flushes, bounded by [`CLOSE_GRACE`]) and fails what is left with
//! `Error::ShuttingDown`. [`Handle::kill`] (and dropping the last handle) cancels the driver,
//! which drops every task and socket of the node at once, as a crash would.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod async_driver;
pub mod blocking;
mod connection;
pub mod discovery;
mod driver;
pub mod front;
mod handle;
mod inbound;
mod members;
mod rt;
mod setup;
mod source;
pub mod tls;
mod transport;

pub use driver::{DriverCore, DriverIo, Turn};
pub use handle::{Control, GetFuture, Handle, KeyspaceHandle, Shared};
pub use inbound::{DEFAULT_MAX_INBOUND, InboundSlot, TransportGuard, TransportStats};
pub use members::{Member, Members, Subscription};
pub use rt::Runtime;
pub use setup::{Assembled, Builder, Node, Setup, Start, StartError, Starting, unix_now};
pub use source::{
    AsyncFetch, BlockingFetch, DataSource, IntoSource, Load, LoadSource, PANICKED, SharedSource,
    SourceFn, erase, load_result, source_fn,
};
pub use transport::{
    Activity, CLOSE_GRACE, EVENT_QUEUE, EVENTS_PER_WAKE, MAX_GATHER, Outflow, READ_AHEAD,
    READ_CHUNK, ReadPermit, SendBuffer, SendLimits, WriteQueue,
};
