//! # herdcache-proto — the sans-IO core of herdcache
//!
//! Every decision herdcache makes lives here, as pure state machines and data structures:
//! the [`Node`] — one cluster member, speaking the native wire protocol ([`Message`],
//! [`FrameDecoder`]) — composed of the consistent-hash [`Ring`], the byte-bounded LRU [`Cache`]
//! with TTL and its hot tier, the singleflight [`FlightTable`], the data-source [`Breaker`] and
//! [`Limiter`], and the [`HotKeys`] tracker. The runtime crates (tokio, async-std/smol, mio)
//! only move bytes and read clocks: they feed [`Input`]s and carry out [`Output`]s.
//!
//! Beside the native protocol, two foreign ones: Go groupcache's HTTP ([`groupcache`],
//! [`http`]) and nanomsg's scalability protocols as gopherdiscovery's survey protocol uses
//! them ([`sp`]: the SP/TCP codec and the survey server's [`sp::Surveyor`]).
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
//! Drivers run the same loop around every machine: feed one input, use what it returns or drain
//! its outputs, re-arm the single timer from `poll_timeout`, and wait for the next socket event,
//! command or timer. For a [`Node`]:
//!
//! ```no_run
//! use bytes::Bytes;
//! use herdcache_proto::{Input, Instant, KeyspaceConfig, LoadResult, Node, NodeConfig, Output, RequestId};
//! # fn clock() -> Instant { Instant::ZERO }
//! let config = NodeConfig::new("10.0.0.1:7000", "prod")
//!     .with_keyspace(KeyspaceConfig::new("users", 256 << 20));
//! let mut node = Node::new(config, clock()).expect("valid config");
//! let get = Input::Get {
//!     request: RequestId(1),
//!     keyspace: Bytes::from_static(b"users"),
//!     key: Bytes::from_static(b"user:42"),
//!     timeout: None,
//! };
//! node.handle_input(clock(), get).expect("a new request id");
//! while let Some(output) = node.poll_output() {
//!     match output {
//!         Output::Load { load, .. } => {
//!             let result = LoadResult::Value { bytes: Bytes::from_static(b"Ada"), expires_at: None };
//!             node.handle_input(clock(), Input::Loaded { load, result }).expect("in progress");
//!         }
//!         Output::Reply { request, reply } => println!("{request:?}: {reply:?}"),
//!         _ => {} // Transmit, Connect, Close, Event: the driver's sockets
//!     }
//! }
//! let _wake_at = node.poll_timeout();
//! ```
//!
//! Here is the same read-through path built from the pieces, the way the `Node` composes them
//! (a sketch: no peers, a synchronous source).
//!
//! ```no_run
//! use bytes::Bytes;
//! use herdcache_proto::*;
//! # fn clock() -> Instant { Instant::ZERO }
//! # fn next_request() -> (u64, Bytes) { (1, Bytes::from_static(b"user:42")) }
//! # fn load(_key: &[u8]) -> Result<Bytes, ()> { Ok(Bytes::from_static(b"value")) }
//! # fn reply(_request: u64, _value: Result<Bytes, &str>) {}
//! let now = clock();
//! let ring = Ring::with_peers(RingScheme::BALANCED, ["node-a", "node-b"]).expect("distinct");
//! let mut cache = Cache::new(CacheConfig::with_max_bytes(64 << 20));
//! let mut flights: FlightTable<u64> = FlightTable::new(7, FlightLimits::default());
//! let mut breaker = Breaker::new(BreakerConfig::default(), now);
//! let mut limiter = Limiter::new(
//!     LimiterConfig::new(Rate::per_second(1_000).expect("> 0"), 100).expect("> 0"),
//!     now,
//! );
//! loop {
//!     let now = clock();
//!     cache.handle_timeout(now); // reclaim what expired, without waiting for a get
//!     let (request, key) = next_request();
//!     if let Some(hit) = cache.get(now, &key) {
//!         reply(request, Ok(hit.value.clone()));
//!         continue;
//!     }
//!     if ring.owner(&key) != Some(&"node-a") {
//!         continue; // another peer owns it: fetch from that peer (the Node does this)
//!     }
//!     let Ok(Begin::Leader(flight)) = flights.begin(&key, request) else {
//!         continue; // joined a load already under way: its completion answers this request
//!     };
//!     let outcome = match (limiter.try_acquire(now, 1), breaker.try_acquire(now)) {
//!         (Err(_), _) => Err("rate limited"),
//!         (_, Err(_)) => Err("circuit open"),
//!         (Ok(()), Ok(permit)) => {
//!             let loaded = load(&key);
//!             let call = if loaded.is_ok() { CallOutcome::Success } else { CallOutcome::Failure };
//!             breaker.record(now, permit, call);
//!             loaded.map_err(|()| "data source failed")
//!         }
//!     };
//!     let done = flights.complete(flight).expect("this flight is live");
//!     if let (Ok(value), true) = (&outcome, done.cacheable) {
//!         let _ = cache.insert(now, Tier::Main, done.key.clone(), value.clone(), None);
//!     }
//!     for waiter in done.waiters {
//!         reply(waiter, outcome.clone());
//!     }
//!     let _next_wake_up = [cache.poll_timeout(), breaker.poll_timeout()].into_iter().flatten().min();
//! }
//! ```
//!
//! ## Features
//! - `std` (default): `From<std::time::Instant>` for [`Instant`] and `Instant::now()`.
//!   Without it the crate is `no_std` + `alloc`.
//! - `arbitrary`: `arbitrary::Arbitrary` for [`Message`] and its parts, for the fuzz targets
//!   in `fuzz/`.
//! - `_sim` (test support, not an API): the deterministic cluster simulation, its proptest
//!   strategies and properties (it brings `proptest`), used by this crate's tests, by
//!   herdcache-runtime's (on the store the runtimes ship) and by the `node_ops` fuzz target.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod breaker;
mod cache;
mod flight;
pub mod groupcache;
mod hash;
mod hotkeys;
pub mod http;
mod identity;
mod limiter;
mod node;
mod ring;
#[cfg(any(test, feature = "_sim"))]
#[doc(hidden)]
pub mod sim;
pub mod sp;
mod time;
mod wire;

pub use breaker::{
    Breaker, BreakerConfig, BreakerConfigError, BreakerOpen, BreakerState, CallOutcome, Permit,
};
pub use cache::{
    Cache, CacheConfig, CacheStats, ENTRY_OVERHEAD, Hit, InsertError, LruStores, Store,
    StoreFactory, Stored, Tier, TierStats,
};
pub use flight::{
    Begin, Completed, FlightError, FlightId, FlightLimits, FlightTable, Waiters, WaitersIntoIter,
};
pub use hash::{KeyHashBuilder, hash_key, key_hash_builder};
pub use hotkeys::{HotKeys, HotKeysConfig, HotKeysConfigError};
pub use identity::{ID_URI_SCHEME, PeerIdentity, PeerName, authority};
pub use limiter::{Grant, LimitError, Limiter, LimiterConfig, LimiterConfigError, Rate};
pub use node::{
    ConfigError, ConnId, Entry, Error, Event, GroupcacheConfig, Input, InputError, KeyspaceConfig,
    KeyspaceStats, LivenessConfig, LoadId, LoadResult, MIN_CLUSTER_SECRET_LEN, MemberInfo,
    MemberState, Node, NodeConfig, Output, Path, PeerProtocol, Reply, RequestId, SecurityStats,
    Value,
};
pub use ring::{Ring, RingError, RingPosition, RingScheme};
pub use time::{Duration, Instant, Monotonic, UnixTime};
pub use wire::{
    ErrorCode, FRAME_HEADER_LEN, Found, Frame, FrameDecoder, FrameHeader, FrameKind, GetOutcome,
    KeyRate, Message, PROTOCOL_VERSION, PutEntry, ReplyError, WireError, WireLimits,
};

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
