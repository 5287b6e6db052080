//! Every scenario on all-mio clusters.

herdcache_tests::scenario_tests!(herdcache_tests::mio_cluster);
