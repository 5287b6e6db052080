//! # herdcache-tests — the cross-crate suite
//!
//! Real nodes over loopback TCP, driven through a runtime-agnostic harness so that every
//! scenario has **one body**, run on each runtime and on mixed clusters:
//!
//! - [`Runtime`] starts a node of one runtime crate; [`TestNode`] is a running node of any
//!   (get, put, delete, set_peers, stats, graceful stop, abrupt kill) around the handle every
//!   runtime crate shares. Its futures run on any executor: a node runs on its runtime's own
//!   threads, the test drives it from its own tokio runtime ([`drive`]).
//! - [`Source`] is the counting data source each node loads from (per-key counters, a
//!   configurable delay, values [`value_of`]`(key, version)`).
//! - [`Cluster`] starts N nodes from a [`ClusterSpec`] (one runtime per node), knows each key's
//!   owner, and kills, stops and restarts members on their addresses.
//! - [`api`] holds the runtime crates' API tests (one node or a few, the whole `Handle`
//!   API), one executor-neutral body each, run per runtime crate and per executor by
//!   [`api_tests!`].
//! - [`peer_wire`] is a test's own end of the native peer protocol (raw frames, a hello in
//!   any name, the dialler's side of the cluster secret's handshake), for tests that play a
//!   peer the nodes should not trust.
//! - [`hostile`] is the hostile-network suite: attacks (a fault-injecting proxy between
//!   members, slowloris, connection floods, garbage, impostors, forged goodbyes) on a
//!   3-node cluster with a cluster secret while it serves gets, one body each, run per
//!   runtime by [`hostile_tests!`] (`tests/hostile_<runtime>.rs`).
//! - [`scenarios`] are the bodies; [`scenario_tests!`] turns them into `#[test]`s for one
//!   way of building a cluster, as `tests/tokio.rs` does.
//! - [`certs`] is a throwaway certificate authority issuing node certificates for the TLS
//!   tests.
//!
//! Beyond herdcache's own nodes, real processes on loopback:
//!
//! - [`Origin`] is an HTTP origin in the test's process that every process of a cluster loads
//!   from; it counts loads per key (and who loaded) cluster-wide, with a configurable delay
//!   and per-key statuses; values are [`origin_value`]`(key)`.
//! - [`GoPeer`] runs a real Go groupcache peer (the project's `tests/go/src/gcpeer`, built
//!   once per run); [`go_peers_available`] says whether it can run here. It never skips in
//!   CI: with `CI` set to anything but empty, `0` or `false`, a missing Go toolchain fails.
//! - [`Dnsmasq`] runs a real dnsmasq with A/AAAA and SRV records the test changes, for the
//!   DNS discovery tests; [`dnsmasq_available`] follows the same rule as Go peers (never a
//!   skip in CI).
//! - [`http`] is a small bounded HTTP/1.1 client for their front ends.
//! - [`etcd::EtcdServer`] runs a real etcd (Debian's etcd-server) on free loopback ports for
//!   the discovery tests; like the Go peers, it never skips in CI.
//! - [`nanocat::Nanocat`] runs nanomsg's `nanocat` (Debian's nanomsg-utils) as the SP peer of
//!   the survey-protocol interop tests; it never skips in CI either.
//! - [`nats::NatsServer`] runs a real nats-server (Debian's) on a free loopback port for the
//!   NATS discovery tests, stopped and restarted on the same port as an outage; it never
//!   skips in CI either.
//!
//! Adding a runtime crate: implement [`Runtime`] for it in a module beside `rt_tokio` (its
//! data source wraps [`Source`], sleeping on the runtime's own timer; its node is a
//! [`TestNode`] around the shared handle), export a static like [`TOKIO`], and add
//! `tests/<runtime>.rs` with
//! a `fn(usize) -> ClusterSpec` like [`tokio_cluster`] passed to [`scenario_tests!`]. A mixed
//! cluster is [`mixed`] over several runtimes.

pub mod api;
pub mod certs;
mod dnsmasq;
pub mod etcd;
mod go_peer;
mod harness;
pub mod hostile;
pub mod http;
pub mod nanocat;
pub mod nats;
mod origin;
pub mod peer_wire;
mod rt_async_std;
mod rt_mio;
mod rt_tokio;
pub mod scenarios;
mod source;
pub mod transport;

pub use dnsmasq::{DNSMASQ, Dnsmasq, LOCAL_TTL, SrvTarget, dnsmasq_available};
pub use go_peer::{
    DEBIAN_GOCODE, GoCacheStats, GoGetError, GoPeer, GoPeerSpec, GoPeerTls, GoStats, READY_TIMEOUT,
    go_peers_available, key_owned_by,
};
pub use harness::{
    BoxFuture, CLUSTER, Cluster, ClusterSpec, Down, KEYSPACE, KEYSPACE_BYTES, NodeSpec, Runtime,
    TestNode, default_tune, drive, within,
};
pub use origin::{Origin, origin_value};
pub use rt_async_std::{ASYNC_STD, AsyncStd};
pub use rt_mio::{MIO, Mio};
pub use rt_tokio::{TOKIO, Tokio};
pub use source::{Source, value_of};

/// A cluster of `n` tokio nodes.
#[must_use]
pub fn tokio_cluster(n: usize) -> ClusterSpec {
    vec![&TOKIO as &'static dyn Runtime; n]
}

/// A cluster of `n` async-std (async-io) nodes.
#[must_use]
pub fn async_std_cluster(n: usize) -> ClusterSpec {
    vec![&ASYNC_STD as &'static dyn Runtime; n]
}

/// A cluster of `n` mio nodes.
#[must_use]
pub fn mio_cluster(n: usize) -> ClusterSpec {
    vec![&MIO as &'static dyn Runtime; n]
}

/// A cluster of `n` nodes taking `runtimes` in turn (node `i` runs on `runtimes[i % len]`).
#[must_use]
pub fn mixed(runtimes: &[&'static dyn Runtime], n: usize) -> ClusterSpec {
    assert!(!runtimes.is_empty(), "a mixed cluster needs at least one runtime");
    (0..n).map(|i| runtimes[i % runtimes.len()]).collect()
}

/// Every scenario as a `#[test]`, on clusters built by `$cluster: fn(usize) -> ClusterSpec`
/// (3 and 5 nodes each).
#[macro_export]
macro_rules! scenario_tests {
    ($cluster:path) => {
        #[test]
        fn one_cold_key_stampede_loads_once_3_nodes() {
            $crate::scenarios::one_cold_key_stampede(&$cluster(3));
        }

        #[test]
        fn one_cold_key_stampede_loads_once_5_nodes() {
            $crate::scenarios::one_cold_key_stampede(&$cluster(5));
        }

        #[test]
        fn one_cold_key_stampede_owner_killed_3_nodes() {
            $crate::scenarios::one_cold_key_stampede_owner_down(&$cluster(3), $crate::Down::Kill);
        }

        #[test]
        fn one_cold_key_stampede_owner_killed_5_nodes() {
            $crate::scenarios::one_cold_key_stampede_owner_down(&$cluster(5), $crate::Down::Kill);
        }

        #[test]
        fn one_cold_key_stampede_owner_stopped_3_nodes() {
            $crate::scenarios::one_cold_key_stampede_owner_down(&$cluster(3), $crate::Down::Stop);
        }

        #[test]
        fn one_cold_key_stampede_owner_stopped_5_nodes() {
            $crate::scenarios::one_cold_key_stampede_owner_down(&$cluster(5), $crate::Down::Stop);
        }

        #[test]
        fn keys_spread_put_and_delete_seen_everywhere_3_nodes() {
            $crate::scenarios::keys_spread_put_and_delete(&$cluster(3));
        }

        #[test]
        fn keys_spread_put_and_delete_seen_everywhere_5_nodes() {
            $crate::scenarios::keys_spread_put_and_delete(&$cluster(5));
        }

        #[test]
        fn node_killed_mid_load_survivors_answer_3_nodes() {
            $crate::scenarios::node_down_mid_load(&$cluster(3), $crate::Down::Kill);
        }

        #[test]
        fn node_killed_mid_load_survivors_answer_5_nodes() {
            $crate::scenarios::node_down_mid_load(&$cluster(5), $crate::Down::Kill);
        }

        #[test]
        fn node_stopped_mid_load_survivors_answer_3_nodes() {
            $crate::scenarios::node_down_mid_load(&$cluster(3), $crate::Down::Stop);
        }

        #[test]
        fn node_stopped_mid_load_survivors_answer_5_nodes() {
            $crate::scenarios::node_down_mid_load(&$cluster(5), $crate::Down::Stop);
        }

        #[test]
        fn garbage_on_the_peer_port_closes_only_that_connection_3_nodes() {
            $crate::scenarios::garbage_on_the_peer_port(&$cluster(3));
        }

        #[test]
        fn garbage_on_the_peer_port_closes_only_that_connection_5_nodes() {
            $crate::scenarios::garbage_on_the_peer_port(&$cluster(5));
        }

        #[test]
        fn killed_node_restarts_and_rejoins_3_nodes() {
            $crate::scenarios::restarted_node_rejoins(&$cluster(3), $crate::Down::Kill);
        }

        #[test]
        fn killed_node_restarts_and_rejoins_5_nodes() {
            $crate::scenarios::restarted_node_rejoins(&$cluster(5), $crate::Down::Kill);
        }

        #[test]
        fn stopped_node_restarts_and_rejoins_3_nodes() {
            $crate::scenarios::restarted_node_rejoins(&$cluster(3), $crate::Down::Stop);
        }

        #[test]
        fn stopped_node_restarts_and_rejoins_5_nodes() {
            $crate::scenarios::restarted_node_rejoins(&$cluster(5), $crate::Down::Stop);
        }

        #[test]
        fn killed_member_is_found_down_under_load_3_nodes() {
            $crate::scenarios::killed_member_is_found_down_under_load(&$cluster(3));
        }

        /// Detection time over 20 kills (median and max), printed; about a minute, so run on
        /// request: `cargo test -p herdcache-tests --test tokio detection_time -- --ignored
        /// --nocapture`.
        #[test]
        #[ignore = "a measurement of about a minute"]
        fn detection_time_over_20_kills_3_nodes() {
            let mut times = $crate::scenarios::detection_times(&$cluster(3), 20);
            times.sort();
            let median = (times[9] + times[10]) / 2;
            let max = times[19];
            eprintln!("detection over 20 kills: median {median:?}, max {max:?}; all {times:?}");
            assert!(max <= $crate::scenarios::DETECTION_BOUND, "max {max:?}");
        }
    };
}
