//! At most [`LOG_BURST`] log records of a kind per [`LOG_INTERVAL`], the next one after a
//! pause saying how many were held back, so that what a flood of refusals (a slowloris,
//! garbage on the peer port, a scan, a cap reached) writes to an operator's logs is bounded,
//! while a handful of offenders are each logged and every refusal is still counted in the
//! stats.

use std::time::{Duration, Instant};

/// The window of [`LOG_BURST`].
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(1);
/// The most records of one kind written per window.
pub(crate) const LOG_BURST: u32 = 10;

/// One kind of record's throttle (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    /// When the current window began.
    window: Option<Instant>,
    written: u32,
    held_back: u64,
}

impl LogThrottle {
    /// Whether a record may be written at `now`: `Some(n)`, where `n` records were held back
    /// since the last one written; else `None`, and this one is held back.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        let current =
            self.window.is_some_and(|at| now.saturating_duration_since(at) < LOG_INTERVAL);
        if !current {
            self.window = Some(now);
            self.written = 0;
        }
        if self.written >= LOG_BURST {
            self.held_back += 1;
            return None;
        }
        self.written += 1;
        Some(core::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_and_the_next_record_says_how_many_were_held_back() {
        let mut throttle = LogThrottle::default();
        let start = Instant::now();
        for _ in 0..LOG_BURST {
            assert_eq!(throttle.admit(start), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(throttle.admit(start + LOG_INTERVAL / 2), None);
        }
        assert_eq!(throttle.admit(start + LOG_INTERVAL), Some(5), "a new window");
        assert_eq!(throttle.admit(start + LOG_INTERVAL), Some(0));
    }
}
