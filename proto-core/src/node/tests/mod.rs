//! The Node's tests, by topic: whole clusters in the deterministic simulation ([`cluster`]),
//! connections and frames ([`connections`]), loads, limits and keyspace settings
//! ([`loading`]), the graceful leave ([`leave`]) and members failing and coming back
//! ([`liveness`]). Random operations and faults, and their
//! properties, are the simulation's (`sim/strategies.rs`), run on every store that ships.

use super::*;
use crate::sim::KEYSPACE;
use crate::wire::ErrorCode;
use alloc::string::String;

mod auth;
mod cluster;
mod connections;
mod handoff;
mod leave;
mod liveness;
mod loading;

/// Steps a simulation may take to go idle before it counts as a livelock.
const STEPS: u64 = 2_000_000;

/// The value of a single get's reply, if it has one.
fn value_of(reply: Option<&Reply>) -> Option<Bytes> {
    match reply {
        Some(Reply::Get(Ok(value))) => Some(value.bytes.clone()),
        _ => None,
    }
}

/// A node `id` of `cluster` with the simulation's keyspace, at time zero.
fn node(id: &str, cluster: &str) -> Node {
    let config = NodeConfig::new(
        Bytes::copy_from_slice(id.as_bytes()),
        Bytes::copy_from_slice(cluster.as_bytes()),
    )
    .with_keyspace(KeyspaceConfig::new(KEYSPACE, 1 << 20));
    Node::new(config, Instant::ZERO).unwrap()
}

/// Every output the node has.
fn drain(node: &mut Node) -> Vec<Output> {
    core::iter::from_fn(|| node.poll_output()).collect()
}

/// A hello from `node_id` of cluster "c", as a peer would send it.
fn hello_from(node_id: &'static str) -> Vec<u8> {
    use crate::wire::{Message, WireLimits};
    let hello = Message::Hello {
        protocol_version: 1,
        cluster: Bytes::from_static(b"c"),
        node_id: Bytes::from_static(node_id.as_bytes()),
        nonce: None,
    };
    let mut out = Vec::new();
    hello.encode(0, &mut out, &WireLimits::default()).unwrap();
    out
}
