//! The data-source circuit breaker: a pure state machine with explicit time.
//!
//! The contract is documented on [`Breaker`], the module's public face (this module is private
//! and re-exported at the crate root).

use core::fmt;

use crate::time::{Duration, Instant, Monotonic};

/// How a breaker trips and recovers. Valid by construction: see [`BreakerConfig::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    failure_threshold: u32,
    reset_timeout: Duration,
}

impl BreakerConfig {
    /// A breaker that opens after `failure_threshold` consecutive failures and stays open for
    /// `reset_timeout` before admitting a probe.
    ///
    /// A zero `reset_timeout` is allowed (the next call after opening is the probe); a huge one
    /// saturates to "open forever".
    ///
    /// # Errors
    /// [`BreakerConfigError::ZeroFailureThreshold`] when `failure_threshold` is 0.
    pub const fn new(
        failure_threshold: u32,
        reset_timeout: Duration,
    ) -> Result<Self, BreakerConfigError> {
        if failure_threshold == 0 {
            return Err(BreakerConfigError::ZeroFailureThreshold);
        }
        Ok(BreakerConfig { failure_threshold, reset_timeout })
    }

    /// Consecutive failures that open the breaker (at least 1).
    #[must_use]
    pub const fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    /// How long the breaker stays open before it admits a probe.
    #[must_use]
    pub const fn reset_timeout(&self) -> Duration {
        self.reset_timeout
    }
}

impl Default for BreakerConfig {
    /// 5 consecutive failures open the breaker for 30 seconds.
    fn default() -> Self {
        BreakerConfig { failure_threshold: 5, reset_timeout: Duration::from_secs(30) }
    }
}

/// Why a [`BreakerConfig`] could not be built. Nothing was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerConfigError {
    /// `failure_threshold` was 0: a breaker that opens before any failure admits nothing.
    ZeroFailureThreshold,
}

impl fmt::Display for BreakerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerConfigError::ZeroFailureThreshold => {
                f.write_str("breaker failure threshold must be at least 1")
            }
        }
    }
}

impl core::error::Error for BreakerConfigError {}

/// The right to make one call to the data source, from [`Breaker::try_acquire`].
///
/// Hand it back with the call's outcome to [`Breaker::record`], exactly once. It is `Copy` so
/// that it can live in plain data (a flight record); recording a closed-state permit twice
/// counts its outcome twice, while recording a probe twice is harmless (the first record ends
/// the epoch, so the second is stale).
#[must_use = "record the call's outcome with Breaker::record"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permit {
    epoch: u64,
    probe: bool,
}

impl Permit {
    /// Whether this is the single probe of a half-open breaker, whose outcome closes or
    /// re-opens it.
    #[must_use]
    pub const fn is_probe(&self) -> bool {
        self.probe
    }
}

/// The breaker denied a call. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerOpen {
    /// When a call may be admitted again. While open: the end of the open period (the call at
    /// that instant becomes the probe). While half-open with the probe out: `now +
    /// reset_timeout`, the earliest instant the next probe could be admitted if the outstanding
    /// probe failed right now; if the probe succeeds the breaker closes sooner.
    /// [`Instant::MAX`] means never (a `reset_timeout` too large for [`Instant`]).
    pub retry_at: Instant,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker open; retry at {:?}", self.retry_at)
    }
}

impl core::error::Error for BreakerOpen {}

/// How an admitted call ended, for [`Breaker::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The data source answered (a not-found is an answer, not a failure).
    Success,
    /// The data source failed.
    Failure,
    /// The call was abandoned before it ended: it timed out, or its callers went away.
    /// Counts as a failure, in every state.
    Cancelled,
}

impl CallOutcome {
    const fn is_success(self) -> bool {
        matches!(self, CallOutcome::Success)
    }
}

/// The breaker's state, for stats and decisions. See [`Breaker`] for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls are admitted.
    Closed {
        /// Failures since the last success (or since closing); below the threshold.
        consecutive_failures: u32,
    },
    /// Calls are denied until `until`.
    Open {
        /// When the breaker becomes half-open.
        until: Instant,
    },
    /// One probe call is admitted; the rest are denied.
    HalfOpen {
        /// Whether the probe has been admitted and not yet recorded.
        probe_in_flight: bool,
    },
}

/// A circuit breaker in front of one data source: a pure state machine with explicit time.
///
/// Contract:
/// - **Closed** admits every call. `failure_threshold` *consecutive* failures open it; a success
///   resets the count.
/// - **Open** denies every call for `reset_timeout`, measured from the failure that opened it.
/// - **Half-open** (once `reset_timeout` has passed) admits *exactly one* probe call. A probe
///   success closes the breaker with a zero failure count; a probe failure re-opens it for
///   another `reset_timeout`. A probe that is cancelled or times out counts as a failure.
/// - **Every permit must be recorded exactly once** with [`Breaker::record`], including calls
///   that were abandoned ([`CallOutcome::Cancelled`]). A probe permit that is never recorded
///   keeps the breaker half-open and denying.
/// - **Stale results are ignored.** Every state change (closed → open, half-open → open,
///   half-open → closed) starts a new *epoch*; a [`Permit`] remembers the epoch it was issued
///   in, and the result of a permit from an earlier epoch changes nothing. So a slow call
///   admitted while closed that fails after the breaker opened cannot extend the open period,
///   and a late success of such a call arriving while half-open cannot close the breaker: only
///   the probe decides.
/// - **Time is an argument** and goes through a [`Monotonic`]: a clock that steps backwards
///   counts as no time passing, so it can neither shorten nor lengthen the open period.
/// - The open → half-open step needs no input: [`Breaker::poll_timeout`] says when it happens
///   and [`Breaker::handle_timeout`] applies it (every other method applies it too, lazily).
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    clock: Monotonic,
    /// Bumped on every state change; permits from earlier epochs are stale.
    epoch: u64,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker with no failures, its clock starting at `now`.
    #[must_use]
    pub const fn new(config: BreakerConfig, now: Instant) -> Self {
        Breaker {
            config,
            clock: Monotonic::new(now),
            epoch: 0,
            state: BreakerState::Closed { consecutive_failures: 0 },
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> BreakerConfig {
        self.config
    }

    /// Takes a new configuration and keeps the state: an open breaker stays open until the
    /// end of its current open period, a probe in flight stays the probe, and the failures
    /// counted so far are compared with the new threshold at the next failure. Permits issued
    /// before stay valid.
    pub fn reconfigure(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    /// Asks to make one call at `now`.
    ///
    /// Closed: always a permit. Open: denied until the open period ends. Half-open: the first
    /// caller gets the probe permit ([`Permit::is_probe`]), everyone else is denied until it is
    /// recorded.
    ///
    /// # Errors
    /// [`BreakerOpen`] when the call is denied; the breaker's state did not change (apart from
    /// noticing that the open period has ended).
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, BreakerOpen> {
        let now = self.advance(now);
        match &mut self.state {
            BreakerState::Closed { .. } => Ok(Permit { epoch: self.epoch, probe: false }),
            BreakerState::Open { until } => Err(BreakerOpen { retry_at: *until }),
            BreakerState::HalfOpen { probe_in_flight: true } => {
                Err(BreakerOpen { retry_at: now.saturating_add(self.config.reset_timeout) })
            }
            BreakerState::HalfOpen { probe_in_flight } => {
                *probe_in_flight = true;
                Ok(Permit { epoch: self.epoch, probe: true })
            }
        }
    }

    /// Records how the call admitted by `permit` ended, at `now`.
    ///
    /// A permit from an earlier epoch (issued before the last state change) is ignored: only
    /// results of calls admitted in the current state count. A permit from another breaker is a
    /// caller bug; it may be counted or ignored, but never panics.
    pub fn record(&mut self, now: Instant, permit: Permit, outcome: CallOutcome) {
        let now = self.advance(now);
        if permit.epoch != self.epoch {
            return;
        }
        match (self.state, permit.probe) {
            (BreakerState::Closed { consecutive_failures }, false) => {
                if outcome.is_success() {
                    self.state = BreakerState::Closed { consecutive_failures: 0 };
                } else {
                    let failures = consecutive_failures.saturating_add(1);
                    if failures >= self.config.failure_threshold {
                        self.open(now);
                    } else {
                        self.state = BreakerState::Closed { consecutive_failures: failures };
                    }
                }
            }
            (BreakerState::HalfOpen { probe_in_flight: true }, true) => {
                if outcome.is_success() {
                    self.transition(BreakerState::Closed { consecutive_failures: 0 });
                } else {
                    self.open(now);
                }
            }
            // Only reachable with a permit from another breaker: ignore it.
            _ => {}
        }
    }

    /// Applies the open → half-open step if its time has come. Early or repeated calls are
    /// no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// When the breaker next changes state on its own: while open, the instant it becomes
    /// half-open; otherwise (or if that is never, [`Instant::MAX`]) `None`. A query: it stays
    /// the same until [`Breaker::handle_timeout`] (or any other call) at or after that instant.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open { until } => Some(until).filter(|&until| until != Instant::MAX),
            _ => None,
        }
    }

    /// The state at `now` (clamped to the latest time seen), without changing anything.
    #[must_use]
    pub fn state(&self, now: Instant) -> BreakerState {
        let now = now.max(self.clock.latest());
        match self.state {
            BreakerState::Open { until } if Self::is_over(until, now) => {
                BreakerState::HalfOpen { probe_in_flight: false }
            }
            state => state,
        }
    }

    /// Whether an open period ending at `until` is over at `now`; [`Instant::MAX`] is never.
    fn is_over(until: Instant, now: Instant) -> bool {
        now >= until && until != Instant::MAX
    }

    /// Feeds `now` through the clock and applies the open → half-open step when due; returns
    /// the effective time.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.clock.observe(now);
        if let BreakerState::Open { until } = self.state {
            if Self::is_over(until, now) {
                // No permits exist for an open breaker's epoch, so this step needs no new one.
                self.state = BreakerState::HalfOpen { probe_in_flight: false };
            }
        }
        now
    }

    fn open(&mut self, now: Instant) {
        let until = now.saturating_add(self.config.reset_timeout);
        self.transition(BreakerState::Open { until });
        // A zero reset timeout goes straight on to half-open.
        self.advance(now);
    }

    fn transition(&mut self, state: BreakerState) {
        self.state = state;
        self.epoch = self.epoch.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn breaker(threshold: u32, reset_secs: u64) -> Breaker {
        let config = BreakerConfig::new(threshold, Duration::from_secs(reset_secs))
            .expect("threshold is at least 1");
        Breaker::new(config, secs(0))
    }

    /// Opens `b` at `now` with `threshold` failures.
    fn trip(b: &mut Breaker, now: Instant) {
        for _ in 0..b.config().failure_threshold() {
            let permit = b.try_acquire(now).expect("closed breaker admits");
            b.record(now, permit, CallOutcome::Failure);
        }
    }

    #[test]
    fn config_rejects_zero_threshold() {
        assert_eq!(
            BreakerConfig::new(0, Duration::from_secs(1)),
            Err(BreakerConfigError::ZeroFailureThreshold)
        );
        let default = BreakerConfig::default();
        assert_eq!(default.failure_threshold(), 5);
        assert_eq!(default.reset_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn breaker_opens_after_consecutive_failures() {
        let mut b = breaker(3, 10);
        for failures in 1..3 {
            let p = b.try_acquire(secs(1)).expect("closed");
            b.record(secs(1), p, CallOutcome::Failure);
            assert_eq!(b.state(secs(1)), BreakerState::Closed { consecutive_failures: failures });
        }
        let p = b.try_acquire(secs(1)).expect("closed");
        b.record(secs(1), p, CallOutcome::Failure);
        assert_eq!(b.state(secs(1)), BreakerState::Open { until: secs(11) });
        assert_eq!(b.try_acquire(secs(5)), Err(BreakerOpen { retry_at: secs(11) }));
        assert_eq!(b.poll_timeout(), Some(secs(11)));
    }

    #[test]
    fn success_while_closed_resets_failure_count() {
        let mut b = breaker(2, 10);
        let p = b.try_acquire(secs(1)).expect("closed");
        b.record(secs(1), p, CallOutcome::Failure);
        let p = b.try_acquire(secs(1)).expect("closed");
        b.record(secs(1), p, CallOutcome::Success);
        let p = b.try_acquire(secs(1)).expect("closed");
        b.record(secs(1), p, CallOutcome::Failure);
        assert_eq!(b.state(secs(1)), BreakerState::Closed { consecutive_failures: 1 });
    }

    #[test]
    fn breaker_admits_one_probe_after_reset_timeout() {
        let mut b = breaker(1, 10);
        trip(&mut b, secs(0));
        assert!(b.try_acquire(secs(9)).is_err());
        let probe = b.try_acquire(secs(10)).expect("half-open admits a probe");
        assert!(probe.is_probe());
        assert_eq!(b.state(secs(10)), BreakerState::HalfOpen { probe_in_flight: true });
        assert_eq!(b.try_acquire(secs(10)), Err(BreakerOpen { retry_at: secs(20) }));
        assert_eq!(b.try_acquire(secs(15)), Err(BreakerOpen { retry_at: secs(25) }));
        b.record(secs(16), probe, CallOutcome::Success);
        assert_eq!(b.state(secs(16)), BreakerState::Closed { consecutive_failures: 0 });
        let p = b.try_acquire(secs(16)).expect("closed");
        assert!(!p.is_probe());
    }

    #[test]
    fn probe_failure_reopens() {
        let mut b = breaker(2, 10);
        trip(&mut b, secs(0));
        let probe = b.try_acquire(secs(12)).expect("probe");
        b.record(secs(13), probe, CallOutcome::Failure);
        assert_eq!(b.state(secs(13)), BreakerState::Open { until: secs(23) });
        assert_eq!(b.try_acquire(secs(22)), Err(BreakerOpen { retry_at: secs(23) }));
        assert!(b.try_acquire(secs(23)).expect("next probe").is_probe());
    }

    #[test]
    fn cancelled_probe_counts_as_failure() {
        let mut b = breaker(1, 10);
        trip(&mut b, secs(0));
        let probe = b.try_acquire(secs(10)).expect("probe");
        b.record(secs(11), probe, CallOutcome::Cancelled);
        assert_eq!(b.state(secs(11)), BreakerState::Open { until: secs(21) });
    }

    #[test]
    fn cancelled_call_counts_as_failure_while_closed() {
        let mut b = breaker(2, 10);
        let p = b.try_acquire(secs(0)).expect("closed");
        b.record(secs(0), p, CallOutcome::Cancelled);
        assert_eq!(b.state(secs(0)), BreakerState::Closed { consecutive_failures: 1 });
    }

    #[test]
    fn stale_permit_does_not_close_breaker() {
        let mut b = breaker(1, 10);
        let slow = b.try_acquire(secs(0)).expect("closed");
        trip(&mut b, secs(1));
        let probe = b.try_acquire(secs(11)).expect("probe");
        // The slow call admitted while closed succeeds while half-open: ignored.
        b.record(secs(12), slow, CallOutcome::Success);
        assert_eq!(b.state(secs(12)), BreakerState::HalfOpen { probe_in_flight: true });
        b.record(secs(12), probe, CallOutcome::Failure);
        assert_eq!(b.state(secs(12)), BreakerState::Open { until: secs(22) });
    }

    #[test]
    fn stale_failure_does_not_extend_open_period() {
        let mut b = breaker(2, 10);
        let slow = b.try_acquire(secs(0)).expect("closed");
        trip(&mut b, secs(1));
        b.record(secs(5), slow, CallOutcome::Failure);
        assert_eq!(b.state(secs(5)), BreakerState::Open { until: secs(11) });
    }

    #[test]
    fn stale_failure_does_not_count_after_closing() {
        let mut b = breaker(2, 10);
        trip(&mut b, secs(0));
        let slow_probe = b.try_acquire(secs(10)).expect("probe");
        b.record(secs(10), slow_probe, CallOutcome::Success);
        // The probe permit reported again (it is Copy) cannot count twice.
        b.record(secs(10), slow_probe, CallOutcome::Failure);
        assert_eq!(b.state(secs(10)), BreakerState::Closed { consecutive_failures: 0 });
    }

    #[test]
    fn time_going_backwards_does_not_reopen_early() {
        let mut b = breaker(1, 10);
        trip(&mut b, secs(100));
        // The driver's clock steps back 50 s: the open period still ends at 110 s.
        assert_eq!(b.try_acquire(secs(50)), Err(BreakerOpen { retry_at: secs(110) }));
        assert_eq!(b.state(secs(50)), BreakerState::Open { until: secs(110) });
        assert!(b.try_acquire(secs(109)).is_err());
        let probe = b.try_acquire(secs(110)).expect("probe");
        // A probe failure reported with a stale clock opens from the latest time seen.
        b.record(secs(0), probe, CallOutcome::Failure);
        assert_eq!(b.state(secs(0)), BreakerState::Open { until: secs(120) });
    }

    #[test]
    fn time_going_backwards_does_not_lengthen_open_period() {
        let mut b = breaker(1, 10);
        trip(&mut b, secs(100));
        assert!(b.try_acquire(secs(108)).is_err());
        // The clock steps back 88 s and then runs forward again: the open period still ends at
        // 110 s (no backwards step is added to the time left).
        assert_eq!(b.try_acquire(secs(20)), Err(BreakerOpen { retry_at: secs(110) }));
        b.handle_timeout(secs(25));
        assert!(b.try_acquire(secs(110)).expect("probe").is_probe());
        // Once half-open, a backwards clock cannot make it open again.
        assert_eq!(b.state(secs(3)), BreakerState::HalfOpen { probe_in_flight: true });
    }

    #[test]
    fn handle_timeout_moves_open_to_half_open() {
        let mut b = breaker(1, 10);
        trip(&mut b, secs(0));
        b.handle_timeout(secs(5));
        assert_eq!(b.poll_timeout(), Some(secs(10)));
        b.handle_timeout(secs(10));
        assert_eq!(b.poll_timeout(), None);
        assert_eq!(b.state(secs(10)), BreakerState::HalfOpen { probe_in_flight: false });
        b.handle_timeout(secs(10));
        assert!(b.try_acquire(secs(10)).expect("probe").is_probe());
    }

    #[test]
    fn zero_reset_timeout_admits_probe_at_once() {
        let mut b = breaker(1, 0);
        trip(&mut b, secs(1));
        assert_eq!(b.state(secs(1)), BreakerState::HalfOpen { probe_in_flight: false });
        assert_eq!(b.poll_timeout(), None);
        assert!(b.try_acquire(secs(1)).expect("probe").is_probe());
    }

    #[test]
    fn huge_reset_timeout_saturates_to_never() {
        let config = BreakerConfig::new(1, Duration::MAX).expect("valid");
        let mut b = Breaker::new(config, secs(1));
        trip(&mut b, secs(1));
        let never = Err(BreakerOpen { retry_at: Instant::MAX });
        assert_eq!(b.try_acquire(secs(1 << 40)), never);
        assert_eq!(b.poll_timeout(), None);
        // Instant::MAX is "never", even for a clock that reaches it.
        assert_eq!(b.try_acquire(Instant::MAX), never);
        assert_eq!(b.state(Instant::MAX), BreakerState::Open { until: Instant::MAX });
    }

    #[test]
    fn permit_from_another_breaker_does_not_panic() {
        let mut a = breaker(1, 10);
        let mut b = breaker(1, 10);
        trip(&mut b, secs(0));
        let probe = b.try_acquire(secs(10)).expect("probe");
        a.record(secs(10), probe, CallOutcome::Failure);
        let closed = a.try_acquire(secs(10)).expect("closed");
        b.record(secs(10), closed, CallOutcome::Success);
        assert_eq!(b.state(secs(10)), BreakerState::HalfOpen { probe_in_flight: true });
    }

    // ---- Model test -------------------------------------------------------------------------

    /// The reference: counters, a fake clock in microseconds, and the set of permits whose
    /// results still count (emptied on every state change), instead of epochs.
    struct Model {
        threshold: u32,
        reset: u64,
        clock: u64,
        failures: u32,
        /// When the breaker last opened; `None` while closed.
        opened_at: Option<u64>,
        probe_out: bool,
        counting: Vec<usize>,
    }

    impl Model {
        fn tick(&mut self, t: u64) -> u64 {
            self.clock = self.clock.max(t);
            self.clock
        }

        fn open_until(&self) -> Option<u64> {
            self.opened_at.map(|at| at.saturating_add(self.reset))
        }

        fn state(&self) -> BreakerState {
            match self.open_until() {
                None => BreakerState::Closed { consecutive_failures: self.failures },
                Some(until) if self.clock < until => {
                    BreakerState::Open { until: Instant::from_micros(until) }
                }
                Some(_) => BreakerState::HalfOpen { probe_in_flight: self.probe_out },
            }
        }

        /// `Ok(is_probe)` or `Err(retry_at)`.
        fn acquire(&mut self, t: u64, id: usize) -> Result<bool, u64> {
            let now = self.tick(t);
            match self.open_until() {
                None => {
                    self.counting.push(id);
                    Ok(false)
                }
                Some(until) if now < until => Err(until),
                Some(_) if self.probe_out => Err(now.saturating_add(self.reset)),
                Some(_) => {
                    self.probe_out = true;
                    self.counting.push(id);
                    Ok(true)
                }
            }
        }

        fn record(&mut self, t: u64, id: usize, success: bool) {
            let now = self.tick(t);
            let Some(index) = self.counting.iter().position(|&c| c == id) else {
                return;
            };
            self.counting.remove(index);
            let was_open = self.opened_at.is_some();
            if success {
                self.failures = 0;
                if was_open {
                    self.opened_at = None;
                    self.probe_out = false;
                    self.counting.clear();
                }
            } else {
                self.failures += 1;
                if was_open || self.failures >= self.threshold {
                    self.opened_at = Some(now);
                    self.failures = 0;
                    self.probe_out = false;
                    self.counting.clear();
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Move the driver's clock by this many microseconds (may be negative).
        Advance(i64),
        Acquire,
        /// Record the outstanding permit at this index (modulo their number).
        Record(usize, CallOutcome),
        HandleTimeout,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (-3_000i64..12_000).prop_map(Op::Advance),
            4 => Just(Op::Acquire),
            4 => (any::<usize>(), prop_oneof![
                Just(CallOutcome::Success),
                Just(CallOutcome::Failure),
                Just(CallOutcome::Cancelled),
            ]).prop_map(|(i, o)| Op::Record(i, o)),
            1 => Just(Op::HandleTimeout),
        ]
    }

    proptest! {
        #![proptest_config(crate::testing::model_config())]

        /// Any configuration, any instants (backwards included), any permit: no panic.
        #[test]
        fn breaker_never_panics_on_any_input(
            threshold in 1u32..=u32::MAX,
            reset in (any::<u64>(), 0u32..1_000_000_000),
            ops in proptest::collection::vec((any::<u64>(), any::<u8>(), any::<usize>()), 1..100),
        ) {
            let config = BreakerConfig::new(threshold, Duration::new(reset.0, reset.1))
                .expect("threshold is at least 1");
            let mut breaker = Breaker::new(config, Instant::ZERO);
            let mut permits = Vec::new();
            for (now, kind, index) in ops {
                let now = Instant::from_micros(now);
                match kind % 4 {
                    0 | 1 => permits.extend(breaker.try_acquire(now).ok()),
                    2 if !permits.is_empty() => {
                        let permit = permits[index % permits.len()];
                        let outcome = [CallOutcome::Success, CallOutcome::Failure, CallOutcome::Cancelled][index % 3];
                        breaker.record(now, permit, outcome);
                    }
                    _ => breaker.handle_timeout(now),
                }
                let _ = (breaker.state(now), breaker.poll_timeout());
            }
        }

        #[test]
        fn breaker_matches_reference_model(
            threshold in 1u32..5,
            reset in 0u64..10_000,
            start in 0u64..5_000,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let config = BreakerConfig::new(threshold, Duration::from_micros(reset))
                .expect("threshold is at least 1");
            let mut breaker = Breaker::new(config, Instant::from_micros(start));
            let mut model = Model {
                threshold, reset, clock: start, failures: 0, opened_at: None,
                probe_out: false, counting: Vec::new(),
            };
            let mut driver_clock = start;
            // Outstanding permits: (id, permit).
            let mut outstanding: Vec<(usize, Permit)> = Vec::new();
            // The id of the probe admitted and not yet recorded, as the harness saw it.
            let mut probe_out: Option<usize> = None;
            // Set when a record opens the breaker: no admission before this instant.
            let mut deny_until: Option<u64> = None;
            for (id, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Advance(delta) => {
                        driver_clock = driver_clock.saturating_add_signed(delta);
                    }
                    Op::Acquire => {
                        let now = Instant::from_micros(driver_clock);
                        let got = breaker.try_acquire(now);
                        let want = model.acquire(driver_clock, id);
                        match (got, want) {
                            (Ok(permit), Ok(is_probe)) => {
                                prop_assert_eq!(permit.is_probe(), is_probe);
                                if let Some(until) = deny_until.take() {
                                    prop_assert!(model.clock >= until, "admitted while open");
                                }
                                if permit.is_probe() {
                                    prop_assert!(probe_out.is_none(), "two probes out");
                                    probe_out = Some(id);
                                }
                                outstanding.push((id, permit));
                            }
                            (Err(open), Err(retry_at)) => {
                                prop_assert_eq!(open.retry_at, Instant::from_micros(retry_at));
                            }
                            (got, want) => {
                                prop_assert!(false, "breaker {:?} but model {:?}", got, want);
                            }
                        }
                    }
                    Op::Record(index, outcome) => {
                        if outstanding.is_empty() {
                            continue;
                        }
                        let (permit_id, permit) = outstanding.remove(index % outstanding.len());
                        if probe_out == Some(permit_id) {
                            probe_out = None;
                        }
                        let before = breaker.state(Instant::ZERO);
                        let now = Instant::from_micros(driver_clock);
                        breaker.record(now, permit, outcome);
                        model.record(driver_clock, permit_id, outcome == CallOutcome::Success);
                        let after = breaker.state(Instant::ZERO);
                        if let BreakerState::Open { until } = after {
                            if !matches!(before, BreakerState::Open { .. }) {
                                prop_assert_eq!(until, Instant::from_micros(model.clock + reset));
                                deny_until = Some(until.as_micros());
                            }
                        }
                    }
                    Op::HandleTimeout => {
                        breaker.handle_timeout(Instant::from_micros(driver_clock));
                        model.tick(driver_clock);
                        let want = model
                            .open_until()
                            .filter(|&until| model.clock < until)
                            .map(Instant::from_micros);
                        prop_assert_eq!(breaker.poll_timeout(), want);
                    }
                }
                prop_assert_eq!(breaker.state(Instant::ZERO), model.state());
                if let BreakerState::Open { until } = model.state() {
                    prop_assert_eq!(breaker.poll_timeout(), Some(until));
                }
                // A probe is only ever issued when none is out.
                let probes = outstanding.iter().filter(|(_, p)| p.is_probe()).count();
                prop_assert!(probes <= 1, "{} probes out", probes);
            }
        }
    }
}
