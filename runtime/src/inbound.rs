//! What a node's transport guards before the core hears of a connection, the same on every
//! runtime: the inbound connection cap (connections in their TLS handshake count), the TLS
//! configuration, and the counters and rate-limited logs of what was turned away.
//!
//! Contract: a driver asks [`TransportGuard::admit`] for every accepted socket before it does
//! anything else with it; `None` means close it at once (counted, and logged at most ten a
//! second: [`crate::log_throttle`]). The [`InboundSlot`] it gets otherwise stays with the connection (its handshake
//! task, then its entry in the driver's table) and frees the place when dropped. A failed TLS
//! handshake is reported to [`TransportGuard::handshake_failed`] (counted, logged at most ten a
//! second with its reason).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::log_throttle::LogThrottle;
use crate::tls::{SessionError, TlsConfig};

/// [`TransportGuard`]'s log throttles.
const CAP_REACHED: usize = 0;
const HANDSHAKE_FAILED: usize = 1;

/// Default [`Builder::max_inbound_connections`](crate::Builder::max_inbound_connections).
pub const DEFAULT_MAX_INBOUND: usize = 4096;

/// Counters of the node's transport since it started (see [`crate::Handle::transport_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Inbound connections open now (in their handshake or handed to the node).
    pub inbound_open: u64,
    /// Inbound connections closed at once because the cap was reached.
    pub inbound_refused: u64,
    /// TLS handshakes that failed (either direction): not TLS, a certificate that does not
    /// verify, a timeout, too many bytes, a close.
    pub tls_handshake_failures: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct TransportGuard {
    tls: Option<TlsConfig>,
    max_inbound: usize,
    inbound: AtomicUsize,
    refused: AtomicU64,
    handshake_failures: AtomicU64,
    /// The log throttles of refusals over the cap and of handshake failures.
    logs: Mutex<[LogThrottle; 2]>,
}

/// One admitted inbound connection's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct InboundSlot(Arc<TransportGuard>);

impl Drop for InboundSlot {
    fn drop(&mut self) {
        self.0.inbound.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TransportGuard {
    /// A guard with `tls` (if any) and at most `max_inbound` inbound connections.
    #[must_use]
    pub fn new(tls: Option<TlsConfig>, max_inbound: usize) -> Self {
        TransportGuard {
            tls,
            max_inbound,
            inbound: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            logs: Mutex::new(Default::default()),
        }
    }

    /// The TLS configuration between peers, if any.
    #[must_use]
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// A place for a connection just accepted; `None` (counted, logged) when the cap is
    /// reached: close the socket at once.
    #[must_use]
    pub fn admit(self: &Arc<Self>) -> Option<InboundSlot> {
        // Only the accepting task or loop adds, so the check and the add cannot race.
        if self.inbound.load(Ordering::Acquire) >= self.max_inbound {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(held_back) = self.may_log(CAP_REACHED) {
                tracing::warn!(
                    max = self.max_inbound,
                    refused,
                    held_back,
                    "inbound connection cap reached: closing new connections"
                );
            }
            return None;
        }
        self.inbound.fetch_add(1, Ordering::AcqRel);
        Some(InboundSlot(Arc::clone(self)))
    }

    /// A TLS handshake with `peer` (an address or a node id) failed with `error`.
    pub fn handshake_failed(&self, peer: &dyn core::fmt::Display, error: &SessionError) {
        let failures = self.handshake_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(held_back) = self.may_log(HANDSHAKE_FAILED) {
            tracing::warn!(
                %peer,
                %error,
                failures,
                held_back,
                "TLS handshake failed: connection closed"
            );
        }
    }

    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            inbound_open: self.inbound.load(Ordering::Relaxed) as u64,
            inbound_refused: self.refused.load(Ordering::Relaxed),
            tls_handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
        }
    }

    /// Whether a record of kind `which` may be logged now, and how many were held back.
    fn may_log(&self, which: usize) -> Option<u64> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.get_mut(which)?.admit(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_slots_and_frees_them_on_drop() {
        let guard = Arc::new(TransportGuard::new(None, 2));
        let first = guard.admit().expect("room");
        let second = guard.admit().expect("room");
        assert!(guard.admit().is_none(), "over the cap");
        assert_eq!(guard.stats().inbound_refused, 1);
        assert_eq!(guard.stats().inbound_open, 2);
        drop(first);
        let third = guard.admit().expect("a place was freed");
        drop((second, third));
        assert_eq!(guard.stats().inbound_open, 0);
    }
}
