//! # herdcache-runtime — what every herdcache runtime shares, written once
//!
//! The sans-IO core ([`herdcache_proto`]) decides; this crate holds everything a running node
//! needs that is not tied to one runtime's sockets, timers or tasks, so each runtime crate
//! (herdcache-tokio, herdcache-async-std, herdcache-mio) only adapts its runtime:
//!
//! - [`front`]: the concurrent front (a sharded store any thread reads hits from, the node
//!   behind one short lock, replies straight to the caller), checked with loom.
//! - [`DataSource`] (the async loader of a keyspace), [`source_fn`], the blocking ones in
//!   [`blocking`], and their type-erased form [`SharedSource`] (either kind, on a node of any
//!   runtime: [`IntoSource`]), which maps the outcome to the core's
//!   [`LoadResult`](herdcache_proto::LoadResult) and turns a panic into a failed load.
//! - [`Node`] and [`Builder`] (generic over the runtime crate's [`Runtime`]; each crate names
//!   them `Node` and `Builder`), the [`Setup`] it collects, and [`Setup::assemble`], which
//!   makes the node's configuration, front and source table once the listener is bound.
//! - [`Handle`] and [`KeyspaceHandle`]: the whole cache API over the front, the same type
//!   whatever the runtime; the runtime plugs in how its driver is stopped or killed
//!   ([`Control`]). Their `get` returns a [`GetFuture`], looked up in the call, so a hit
//!   costs what the front's does. [`blocking::Handle`] and [`blocking::KeyspaceHandle`] are
//!   the same API with calls that block the thread (herdcache-mio hands them out; they
//!   convert to and from the async ones).
//! - Transport pieces: [`WriteQueue`] (partial vectored writes), [`Activity`] (idle timeout),
//!   and the send-buffer policy every driver applies ([`SendBuffer`] as configured,
//!   [`SendLimits`] as applied, [`Outflow`] for a reader and a writer on tasks of their own).
//! - The driver's bookkeeping: [`DriverCore`] keeps the connection table and the timer's
//!   deadline, feeds the front and executes its outputs through the runtime's [`DriverIo`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod blocking;
mod driver;
pub mod front;
mod handle;
mod setup;
mod source;
mod transport;

pub use driver::{DriverCore, DriverIo, Turn};
pub use handle::{Control, GetFuture, Handle, KeyspaceHandle, Shared};
pub use setup::{Assembled, Builder, Node, Runtime, Setup, StartError, Starting, unix_now};
pub use source::{
    AsyncFetch, BlockingFetch, DataSource, IntoSource, Load, LoadSource, PANICKED, SharedSource,
    SourceFn, erase, load_result, source_fn,
};
pub use transport::{
    Activity, CLOSE_GRACE, EVENT_QUEUE, EVENTS_PER_WAKE, MAX_GATHER, Outflow, READ_CHUNK,
    SendBuffer, SendLimits, WriteQueue,
};
