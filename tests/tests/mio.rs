//! Every scenario on all-mio clusters, and the API tests on herdcache-mio nodes through their
//! async handle (driven by futures-lite's `block_on`: the node runs on its own threads).

herdcache_tests::scenario_tests!(herdcache_tests::mio_cluster);

mod api {
    herdcache_tests::api_tests!(herdcache_mio::Mio, futures_lite::future::block_on);
}

mod transport {
    #[test]
    fn a_client_that_never_reads_is_pushed_back_then_closed_2_nodes() {
        herdcache_tests::transport::a_client_that_never_reads_is_pushed_back_then_closed(
            &herdcache_tests::mio_cluster(2),
        );
    }

    #[test]
    fn a_huge_connect_timeout_still_connects_2_nodes() {
        herdcache_tests::transport::a_huge_connect_timeout_still_connects(
            &herdcache_tests::mio_cluster(2),
        );
    }
}
