//! Every scenario on all-tokio clusters.

herdcache_tests::scenario_tests!(herdcache_tests::tokio_cluster);
