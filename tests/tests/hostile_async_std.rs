//! The hostile-network suite on herdcache-async-std nodes (see `herdcache_tests::hostile`; the
//! table: `cargo test -p herdcache-tests --test hostile_async_std -- --nocapture`).

herdcache_tests::hostile_tests!(&herdcache_tests::ASYNC_STD);
