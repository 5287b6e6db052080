//! Every scenario on all-async-std clusters (nodes on async-io, driven from the test's tokio
//! executor: the node's futures complete on any executor).

herdcache_tests::scenario_tests!(herdcache_tests::async_std_cluster);
