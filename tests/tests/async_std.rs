//! Every scenario on all-async-std clusters (driven from the test's tokio executor: the
//! node's futures complete on any executor), and the API tests on herdcache-async-std nodes
//! under both executors the crate supports: async-std's and smol's.

herdcache_tests::scenario_tests!(herdcache_tests::async_std_cluster);

mod api_on_async_std {
    herdcache_tests::api_tests!(herdcache_async_std::AsyncStd, async_std::task::block_on);
}

mod api_on_smol {
    herdcache_tests::api_tests!(herdcache_async_std::AsyncStd, smol::block_on);
}

mod transport {
    #[test]
    fn a_client_that_never_reads_is_pushed_back_then_closed_2_nodes() {
        herdcache_tests::transport::a_client_that_never_reads_is_pushed_back_then_closed(
            &herdcache_tests::async_std_cluster(2),
        );
    }

    #[test]
    fn a_huge_connect_timeout_still_connects_2_nodes() {
        herdcache_tests::transport::a_huge_connect_timeout_still_connects(
            &herdcache_tests::async_std_cluster(2),
        );
    }
}
