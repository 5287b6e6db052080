//! Every scenario on all-tokio clusters, and the API tests on herdcache-tokio nodes (driven
//! from a tokio runtime: a tokio node starts its driver on the current runtime).

herdcache_tests::scenario_tests!(herdcache_tests::tokio_cluster);

mod api {
    herdcache_tests::api_tests!(herdcache_tokio::Tokio, herdcache_tests::drive);
}

mod transport {
    #[test]
    fn a_client_that_never_reads_is_pushed_back_then_closed_2_nodes() {
        herdcache_tests::transport::a_client_that_never_reads_is_pushed_back_then_closed(
            &herdcache_tests::tokio_cluster(2),
        );
    }

    #[test]
    fn a_huge_connect_timeout_still_connects_2_nodes() {
        herdcache_tests::transport::a_huge_connect_timeout_still_connects(
            &herdcache_tests::tokio_cluster(2),
        );
    }
}
