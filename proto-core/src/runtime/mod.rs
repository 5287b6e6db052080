//! What the async runtime crates share (feature `std`): everything of a node that is not
//! tied to one runtime's sockets, timers or tasks.
//!
//! - [`DataSource`] (the async loader of a keyspace), [`source_fn`], and its type-erased form
//!   [`SharedSource`], whose [`Load`] maps the outcome to the core's
//!   [`LoadResult`](crate::LoadResult) and turns a panic into a failed load.
//! - [`Node`] and [`Builder`] (generic over the runtime crate's [`Runtime`]; each crate names
//!   them `Node` and `Builder`), the [`Setup`] it collects, and [`Setup::assemble`], which makes the node's
//!   configuration, front and source table once the listener is bound. [`StartError`].
//! - [`Handle`] and [`KeyspaceHandle`]: the whole cache API over the front, the same type
//!   whatever the runtime; the runtime plugs in how its driver is stopped or killed
//!   ([`Control`]). Their `get` returns a [`GetFuture`] (their `get_value` the front's
//!   [`Pending`](crate::front::Pending)), looked up in the call, so a hit costs what the
//!   front's does. [`Shared`] is what the handles and the driver share.
//! - Transport pieces: [`WriteQueue`] (partial vectored writes), [`Activity`] (idle timeout),
//!   the read size and close grace every driver uses, and the send-buffer policy every
//!   driver applies ([`SendBuffer`] as configured, [`SendLimits`] as applied, [`Outflow`] for
//!   a reader and a writer on tasks of their own): stop reading a connection above a
//!   high-water mark of queued bytes, close it above a hard cap or after a write stall.
//!
//! - The driver's bookkeeping: [`DriverCore`] keeps the connection table and the timer's
//!   deadline, feeds the front and executes its actions through the runtime's [`DriverIo`].
//!
//! A runtime crate adds only its driver's IO: the loop that waits on its sockets, timers and
//! tasks and reports to the [`DriverCore`] (see the front's module docs for the contract). [`Setup`],
//! [`Shared`], [`StartError`], [`unix_now`], [`load_result`], [`WriteQueue`] and [`Activity`]
//! are generic enough for a runtime with a blocking API and synchronous sources.

mod driver;
mod handle;
mod setup;
mod source;
mod transport;

pub use driver::{DriverCore, DriverIo, Turn};
pub use handle::{Control, GetFuture, Handle, KeyspaceHandle, Shared};
pub use setup::{Assembled, Builder, Node, Runtime, Setup, StartError, Starting, unix_now};
pub use source::{
    DataSource, Load, LoadSource, PANICKED, SharedSource, SourceFn, erase, load_result, source_fn,
};
pub use transport::{
    Activity, CLOSE_GRACE, EVENT_QUEUE, EVENTS_PER_WAKE, MAX_GATHER, Outflow, READ_CHUNK,
    SendBuffer, SendLimits, WriteQueue,
};
