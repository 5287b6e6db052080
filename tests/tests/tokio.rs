//! Every scenario on all-tokio clusters, and the API tests on herdcache-tokio nodes (driven
//! from a tokio runtime: a tokio node starts its driver on the current runtime).

herdcache_tests::scenario_tests!(herdcache_tests::tokio_cluster);

mod api {
    herdcache_tests::api_tests!(herdcache_tokio::Tokio, herdcache_tests::drive);
}
