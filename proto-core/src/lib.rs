//! # herdcache-proto — the sans-IO core of herdcache
//!
//! Every decision herdcache makes lives here, as pure state machines and data structures:
//! the consistent-hash [`Ring`], the byte-bounded LRU [`Cache`] with TTL and its hot tier, the
//! singleflight [`FlightTable`], the data-source [`Breaker`] and [`Limiter`], and the
//! [`HotKeys`] tracker. The runtime crates (tokio, async-std/smol, mio) only move bytes and
//! read clocks.
//!
//! ## Contract
//! - **No IO, no clock, no threads, no randomness of its own.** Time is an argument
//!   ([`Instant`], microseconds since an epoch the driver picks); seeds come from the caller.
//! - **Time going backwards counts as no time passing**: every machine that remembers time
//!   clamps `now` through [`Monotonic`].
//! - **One verb pair per state machine**: `handle_*` takes input and returns no work,
//!   `poll_*` yields output and takes no input; after every `handle_*` the caller drains the
//!   matching `poll_*` until it returns `None`. Small data structures (the cache, the ring)
//!   use plain methods with explicit `now` instead.
//! - **Nothing panics on input.** Bad input is a typed error that says whether state changed;
//!   a panic is a bug in this crate.
//!
//! ## The drive loop
//! Drivers run the same loop around every machine: feed one input, drain the outputs, re-arm
//! the single timer from `poll_timeout`, wait for the next socket event, command or timer.
//!
//! ```no_run
//! use herdcache_proto::{Cache, CacheConfig, Instant, Tier};
//! # fn clock() -> Instant { Instant::ZERO }
//! let mut cache = Cache::new(CacheConfig::with_max_bytes(64 << 20));
//! loop {
//!     let now = clock();
//!     cache.handle_timeout(now, |_evicted| {});       // reclaim what expired
//!     let _next_wake_up = cache.poll_timeout();         // arm the one timer
//!     # break;
//! }
//! ```
//!
//! ## Features
//! - `std` (default): `From<std::time::Instant>` for [`Instant`] and `Instant::now()`.
//!   Without it the crate is `no_std` + `alloc`.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod breaker;
mod cache;
mod flight;
mod hash;
mod hotkeys;
mod limiter;
mod ring;
mod time;

// re-exports: breaker
pub use cache::{Cache, CacheConfig, CacheStats, ENTRY_OVERHEAD, Hit, InsertError, Tier, TierStats};
// re-exports: flight
// re-exports: hotkeys
// re-exports: limiter
pub use ring::{Ring, RingError, RingPosition, RingScheme};
pub use time::{Duration, Instant, Monotonic};

#[cfg(test)]
pub(crate) mod testing {
    //! Shared settings for the model tests.
    use proptest::test_runner::Config;

    /// Model tests run at least 256 cases; `PROPTEST_CASES` can raise it.
    pub(crate) fn model_config() -> Config {
        let default = Config::default();
        Config { cases: default.cases.max(256), ..default }
    }
}
