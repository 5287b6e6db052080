//! Every scenario on clusters mixing runtime crates (node `i` on the `i % len`-th runtime of
//! the list): mio with tokio, tokio with async-std, and all three. The runtimes speak one
//! protocol and agree on one ring.

use herdcache_tests::{ASYNC_STD, ClusterSpec, MIO, TOKIO, mixed};

fn mio_and_tokio(n: usize) -> ClusterSpec {
    mixed(&[&MIO, &TOKIO], n)
}

fn tokio_and_async_std(n: usize) -> ClusterSpec {
    mixed(&[&TOKIO, &ASYNC_STD], n)
}

fn all_three_runtimes(n: usize) -> ClusterSpec {
    mixed(&[&TOKIO, &ASYNC_STD, &MIO], n)
}

mod mio_and_tokio {
    herdcache_tests::scenario_tests!(super::mio_and_tokio);
}

mod tokio_and_async_std {
    herdcache_tests::scenario_tests!(super::tokio_and_async_std);
}

mod all_three_runtimes {
    herdcache_tests::scenario_tests!(super::all_three_runtimes);
}
