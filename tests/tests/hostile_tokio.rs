//! The hostile-network suite on herdcache-tokio nodes (see `herdcache_tests::hostile`; the
//! table: `cargo test -p herdcache-tests --test hostile_tokio -- --nocapture`).

herdcache_tests::hostile_tests!(&herdcache_tests::TOKIO);
