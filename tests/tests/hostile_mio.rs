//! The hostile-network suite on herdcache-mio nodes (see `herdcache_tests::hostile`; the
//! table: `cargo test -p herdcache-tests --test hostile_mio -- --nocapture`).

herdcache_tests::hostile_tests!(&herdcache_tests::MIO);
