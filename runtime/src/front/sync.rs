//! The synchronization primitives of the front: std's, or loom's when the crate is built with
//! `--cfg herdcache_loom` for the model checks (a prefixed cfg, so that dependencies which
//! know `cfg(loom)` are not switched too).

#[cfg(herdcache_loom)]
pub(crate) use loom::sync::{
    Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
#[cfg(not(herdcache_loom))]
pub(crate) use std::sync::{
    Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use std::sync::{LockResult, PoisonError};

/// The guard, whether or not another thread panicked while holding the lock: every structure
/// behind a front lock is left consistent at each await-free step, so poisoning carries no
/// information here, and a panic must not turn every later call into a second panic.
pub(crate) fn unpoison<G>(result: LockResult<G>) -> G {
    result.unwrap_or_else(PoisonError::into_inner)
}
