//! Every scenario on clusters mixing mio and tokio nodes (node `i` on mio when `i` is even).

use herdcache_tests::{ClusterSpec, MIO, TOKIO, mixed};

fn mio_and_tokio(n: usize) -> ClusterSpec {
    mixed(&[&MIO, &TOKIO], n)
}

herdcache_tests::scenario_tests!(mio_and_tokio);
