//! The hash every key map in the core uses.
//!
//! Keys arrive from users and from peers, so the hasher is seeded (from `Config`, which the
//! driver fills from its own randomness) to keep an attacker from predicting collisions, and
//! fixed for a given seed so that a simulation replays exactly. foldhash was chosen over ahash
//! by measurement: see `benches/hash.rs`.
//!
//! This hash is local to one process. What several nodes must agree on (the ring) uses the
//! stable hashes in [`crate::ring`], never this one.

use core::hash::BuildHasher;

/// Builds the seeded hasher for key maps.
pub type KeyHashBuilder = foldhash::fast::FixedState;

/// A key hasher for `seed`.
pub fn key_hash_builder(seed: u64) -> KeyHashBuilder {
    foldhash::fast::FixedState::with_seed(seed)
}

/// The 64-bit hash of `key` under `builder`.
#[inline]
pub fn hash_key(builder: &KeyHashBuilder, key: &[u8]) -> u64 {
    builder.hash_one(key)
}
