//! Every scenario on clusters mixing herdcache-tokio and herdcache-async-std nodes (node `i`
//! on tokio when `i` is even): the runtimes speak one protocol and agree on one ring.

use herdcache_tests::{ASYNC_STD, ClusterSpec, TOKIO, mixed};

fn tokio_and_async_std(n: usize) -> ClusterSpec {
    mixed(&[&TOKIO, &ASYNC_STD], n)
}

herdcache_tests::scenario_tests!(tokio_and_async_std);
