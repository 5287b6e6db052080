//! The answers a load gets when its source cannot give one, and recording the core's events.
//!
//! The builder's settings, assembling the node (configuration, front, sources by keyspace),
//! the start error and the wall clock are the core's ([`herdcache_runtime`]: `Setup`,
//! `Shared`, `StartError`), shared with the async runtime crates.

use bytes::Bytes;
use herdcache_proto::{Event, LoadResult};
use herdcache_runtime::PANICKED;

/// What a load answers when its source panicked.
pub(crate) fn panicked() -> LoadResult {
    LoadResult::Failed(Bytes::from_static(PANICKED))
}

/// What a load answers when its keyspace has no source (removed meanwhile).
pub(crate) fn no_source() -> LoadResult {
    LoadResult::Failed(Bytes::from_static(b"no data source"))
}

/// Records a core event for observers (`tracing`); whether it is [`Event::Drained`], which
/// ends a graceful stop.
pub(crate) fn log_event(node: &str, event: Event) -> bool {
    match event {
        Event::Drained => {
            tracing::info!(node, "drained");
            return true;
        }
        Event::ConnectionRefused { conn, reason } => {
            tracing::warn!(node, conn = conn.0, ?reason, "connection refused");
        }
        Event::PeerUp { peer } => {
            tracing::debug!(node, peer = %String::from_utf8_lossy(&peer), "peer up");
        }
        other => tracing::debug!(node, event = ?other, "event"),
    }
    false
}
