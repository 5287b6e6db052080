//! Every scenario on all-mio clusters.

herdcache_tests::scenario_tests!(herdcache_tests::mio_cluster);

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

mod workers {
    use std::thread;
    use std::time::{Duration, Instant};

    use herdcache_mio::{Bytes, KeyspaceConfig, Node, source_fn};

    /// Four workers and a source that takes 300 ms: a get_many of four cold keys loads them
    /// in parallel, in about one load time (a pool that grew only when no worker was idle
    /// ran them one after another: 1.2 s).
    #[test]
    fn a_burst_of_loads_runs_on_as_many_workers() {
        let load_time = Duration::from_millis(300);
        let source = source_fn(move |key: Bytes| {
            thread::sleep(load_time);
            Ok::<_, std::convert::Infallible>(key)
        });
        let node = Node::builder()
            .keyspace(KeyspaceConfig::new("ks", 1 << 20), source)
            .workers(4)
            .start()
            .expect("starts");
        let started = Instant::now();
        let values = node.get_many("ks", ["a", "b", "c", "d"]);
        let took = started.elapsed();
        assert!(values.iter().all(Result::is_ok), "{values:?}");
        assert!(took < load_time * 2, "four loads on four workers took {took:?}");
        node.stop();
    }
}
