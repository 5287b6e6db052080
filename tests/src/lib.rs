//! # herdcache-tests — the cross-crate suite
//!
//! Real nodes over loopback TCP, driven through a runtime-agnostic harness so that every
//! scenario has **one body**, run on each runtime and on mixed clusters:
//!
//! - [`Runtime`] starts a node of one runtime crate; [`TestNode`] is a running node (get, put,
//!   delete, set_peers, stats, graceful stop, abrupt kill). Their futures run on any executor:
//!   a node runs on its runtime's own threads, the test drives it from its own tokio runtime
//!   ([`drive`]).
//! - [`Source`] is the counting data source each node loads from (per-key counters, a
//!   configurable delay, values [`value_of`]`(key, version)`).
//! - [`Cluster`] starts N nodes from a [`ClusterSpec`] (one runtime per node), knows each key's
//!   owner, and kills, stops and restarts members on their addresses.

mod harness;
mod rt_tokio;
mod source;

pub use harness::{
    BoxFuture, Cluster, ClusterSpec, Down, KEYSPACE, KEYSPACE_BYTES, NodeSpec, Runtime, TestNode,
    default_tune, drive, within,
};
pub use rt_tokio::{TOKIO, Tokio};
pub use source::{Source, value_of};

/// A cluster of `n` tokio nodes.
#[must_use]
pub fn tokio_cluster(n: usize) -> ClusterSpec {
    vec![&TOKIO as &'static dyn Runtime; n]
}
