//! The data-source rate limiter: a token bucket computed as GCRA, exact and O(1).
//!
//! The contract is documented on [`Limiter`], the module's public face (this module is private
//! and re-exported at the crate root).

use core::fmt;

use crate::time::{Duration, Instant, Monotonic};

/// A refill rate: `tokens` every `per`. Valid by construction: see [`Rate::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    tokens: u32,
    per: Duration,
}

impl Rate {
    /// `tokens` tokens every `per`, spread evenly (one every `per / tokens`, exactly).
    ///
    /// # Errors
    /// [`LimiterConfigError::ZeroTokens`] or [`LimiterConfigError::ZeroPeriod`].
    pub const fn new(tokens: u32, per: Duration) -> Result<Self, LimiterConfigError> {
        if tokens == 0 {
            return Err(LimiterConfigError::ZeroTokens);
        }
        if per.is_zero() {
            return Err(LimiterConfigError::ZeroPeriod);
        }
        Ok(Rate { tokens, per })
    }

    /// `tokens` tokens per second.
    ///
    /// # Errors
    /// [`LimiterConfigError::ZeroTokens`].
    pub const fn per_second(tokens: u32) -> Result<Self, LimiterConfigError> {
        Rate::new(tokens, Duration::from_secs(1))
    }

    /// Tokens per period (at least 1).
    #[must_use]
    pub const fn tokens(&self) -> u32 {
        self.tokens
    }

    /// The period (non-zero).
    #[must_use]
    pub const fn per(&self) -> Duration {
        self.per
    }
}

/// A limiter's configuration: refill [`Rate`] and bucket size. Valid by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LimiterConfig {
    rate: Rate,
    burst: u32,
}

impl LimiterConfig {
    /// A bucket of `burst` tokens refilled at `rate`. `burst` is also the largest request that
    /// can ever be granted.
    ///
    /// # Errors
    /// [`LimiterConfigError::ZeroBurst`].
    pub const fn new(rate: Rate, burst: u32) -> Result<Self, LimiterConfigError> {
        if burst == 0 {
            return Err(LimiterConfigError::ZeroBurst);
        }
        Ok(LimiterConfig { rate, burst })
    }

    /// The refill rate.
    #[must_use]
    pub const fn rate(&self) -> Rate {
        self.rate
    }

    /// The bucket size (at least 1).
    #[must_use]
    pub const fn burst(&self) -> u32 {
        self.burst
    }
}

/// Why a [`Rate`] or [`LimiterConfig`] could not be built. Nothing was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimiterConfigError {
    /// The rate's token count was 0.
    ZeroTokens,
    /// The rate's period was zero (an infinite rate: configure no limiter instead).
    ZeroPeriod,
    /// The burst was 0: no request could ever be granted.
    ZeroBurst,
}

impl fmt::Display for LimiterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimiterConfigError::ZeroTokens => "rate limit must allow at least 1 token per period",
            LimiterConfigError::ZeroPeriod => "rate limit period must be non-zero",
            LimiterConfigError::ZeroBurst => "rate limit burst must be at least 1",
        })
    }
}

impl core::error::Error for LimiterConfigError {}

/// A granted request from [`Limiter::acquire`]. The tokens are taken either way.
#[must_use = "a reservation must be waited for"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    /// Go now.
    Now,
    /// The tokens are reserved: wait, then go at this instant (later than `now`, at most
    /// `max_wait` after it).
    At(Instant),
}

/// Why a request was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitError {
    /// Not enough tokens now (or within `max_wait`). Nothing was taken or reserved: the
    /// limiter's state is unchanged. `retry_at` is when the tokens will be free if nobody else
    /// takes any ([`Instant::MAX`] if never within the range of [`Instant`]).
    RateLimited {
        /// When a fail-fast request for the same tokens would succeed.
        retry_at: Instant,
    },
    /// More tokens than the bucket holds: this request can never be granted. Nothing was
    /// taken: the limiter's state is unchanged.
    ExceedsBurst {
        /// Tokens asked for.
        requested: u32,
        /// The bucket size.
        burst: u32,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::RateLimited { retry_at } => {
                write!(f, "rate limited; retry at {retry_at:?}")
            }
            LimitError::ExceedsBurst { requested, burst } => {
                write!(f, "requested {requested} tokens, more than the burst of {burst}")
            }
        }
    }
}

impl core::error::Error for LimitError {}

/// A rate limiter in front of one data source: a token bucket computed as GCRA, exact and O(1).
///
/// Contract:
/// - **A token bucket.** It holds at most `burst` tokens and refills at `rate` (`tokens` per
///   `per`); it starts full. A request for `n` tokens takes them all at once or not at all.
/// - **Fail fast or wait.** [`Limiter::try_acquire`] takes the tokens now or says when they will
///   be free. [`Limiter::acquire`] may instead *reserve* them: the tokens are taken at once and
///   the caller is told to go at a later instant ([`Grant::At`]), at most `max_wait` away.
///   Reservations are first come, first served: once one is pending, every later request
///   waits behind it. A reservation cannot be handed back.
/// - **Errors change nothing.** A request that is denied ([`LimitError::RateLimited`]) or can
///   never be granted ([`LimitError::ExceedsBurst`]: more than `burst` tokens) leaves the
///   tokens as they were. A request for 0 tokens is always granted at once and takes nothing.
/// - **Exact.** The state is one theoretical arrival time (GCRA) kept in integer ticks of
///   `1 / tokens` nanoseconds, in which one token's emission interval (`per / tokens`) is a
///   whole number: no floats, no drift, and no overflow for any configuration (every
///   intermediate stays below 2^128; the arithmetic saturates anyway).
/// - **Whole microseconds.** [`Instant`] counts microseconds, so a reservation whose tokens
///   are free at a fractional microsecond is granted at the next whole one and served from the
///   bucket *at that instant*, its refill in between capped at `burst` like any other. Hence in
///   every window `[a, b]` of grant instants the tokens granted are at most
///   `rate × (b − a) + burst`, with no rounding slack. The price: the part of that
///   sub-microsecond refill that does not fit in the bucket is lost, so a queue of
///   reservations with less than a microsecond of refill as headroom (`burst - n` tokens) is
///   served slightly below `rate` (burst 1: under 1 µs lost per grant).
/// - **Time is an argument** and goes through a [`Monotonic`]: a clock that steps backwards
///   counts as no time passing (no refill, and no refill counted twice).
#[derive(Clone, Debug)]
pub struct Limiter {
    config: LimiterConfig,
    clock: Monotonic,
    /// Theoretical arrival time, in ticks: the instant at which the bucket would be full again
    /// if nothing more were taken. Below 2^106 + 2^126 (see [`Limiter::plan`]).
    tat: u128,
}

/// What granting a request would do.
enum Plan {
    /// Go now; the new arrival time.
    Now(u128),
    /// Go at this instant; the new arrival time.
    At(Instant, u128),
    /// Not within the range of [`Instant`].
    Never,
}

impl Limiter {
    /// A full bucket, its clock starting at `now`.
    #[must_use]
    pub fn new(config: LimiterConfig, now: Instant) -> Self {
        let mut limiter = Limiter { config, clock: Monotonic::new(now), tat: 0 };
        limiter.tat = limiter.ticks(now);
        limiter
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> LimiterConfig {
        self.config
    }

    /// Takes `n` tokens at `now`, or fails without waiting.
    ///
    /// # Errors
    /// [`LimitError::RateLimited`] (state unchanged) when fewer than `n` tokens are free;
    /// [`LimitError::ExceedsBurst`] (state unchanged) when `n` exceeds the burst.
    pub fn try_acquire(&mut self, now: Instant, n: u32) -> Result<(), LimitError> {
        match self.acquire(now, n, Duration::ZERO)? {
            Grant::Now => Ok(()),
            // Unreachable: a zero wait admits only `Grant::Now`. Refuse rather than panic.
            Grant::At(retry_at) => Err(LimitError::RateLimited { retry_at }),
        }
    }

    /// Takes `n` tokens at `now` if they are free, or reserves them if they will be free
    /// within `max_wait`: the caller then waits until the [`Grant::At`] instant.
    ///
    /// # Errors
    /// [`LimitError::RateLimited`] (state unchanged) when the tokens would be free only more
    /// than `max_wait` after `now`; [`LimitError::ExceedsBurst`] (state unchanged) when `n`
    /// exceeds the burst.
    pub fn acquire(
        &mut self,
        now: Instant,
        n: u32,
        max_wait: Duration,
    ) -> Result<Grant, LimitError> {
        let now = self.clock.observe(now);
        match self.plan(now, n)? {
            Plan::Now(tat) => {
                self.tat = tat;
                Ok(Grant::Now)
            }
            Plan::At(at, tat) if at.saturating_duration_since(now) <= max_wait => {
                self.tat = tat;
                Ok(Grant::At(at))
            }
            Plan::At(at, _) => Err(LimitError::RateLimited { retry_at: at }),
            Plan::Never => Err(LimitError::RateLimited { retry_at: Instant::MAX }),
        }
    }

    /// When `n` tokens will be free, seen from `now` (clamped to the latest time seen): `now`
    /// itself if they are free already, [`Instant::MAX`] if never within the range of
    /// [`Instant`]. Changes nothing.
    ///
    /// # Errors
    /// Only [`LimitError::ExceedsBurst`], when `n` exceeds the burst.
    pub fn next_free(&self, now: Instant, n: u32) -> Result<Instant, LimitError> {
        let now = now.max(self.clock.latest());
        Ok(match self.plan(now, n)? {
            Plan::Now(_) => now,
            Plan::At(at, _) => at,
            Plan::Never => Instant::MAX,
        })
    }

    /// Ticks per microsecond: `1000 × tokens` (below 2^42).
    fn ticks_per_micro(&self) -> u128 {
        1_000 * u128::from(self.config.rate.tokens)
    }

    /// Ticks per token, the emission interval: `per` in nanoseconds (below 2^94).
    fn interval(&self) -> u128 {
        self.config.rate.per.as_nanos()
    }

    /// `t` in ticks (below 2^106).
    fn ticks(&self, t: Instant) -> u128 {
        u128::from(t.as_micros()) * self.ticks_per_micro()
    }

    /// What granting `n` tokens at `now` (already clamped) would do.
    ///
    /// Bounds: `interval × burst < 2^126` and `tat < 2^106 + 2^126` (a grant leaves
    /// `tat <= ticks(go instant) + interval × burst`), so `tat + n × interval < 2^128`.
    fn plan(&self, now: Instant, n: u32) -> Result<Plan, LimitError> {
        let burst = self.config.burst;
        if n > burst {
            return Err(LimitError::ExceedsBurst { requested: n, burst });
        }
        if n == 0 {
            return Ok(Plan::Now(self.tat));
        }
        let interval = self.interval();
        let capacity = interval.saturating_mul(u128::from(burst));
        let cost = interval.saturating_mul(u128::from(n));
        let now_ticks = self.ticks(now);
        let tat = self.tat.max(now_ticks).saturating_add(cost);
        // The earliest tick at which the bucket holds `n` tokens.
        let free_at = tat.saturating_sub(capacity);
        if free_at <= now_ticks {
            return Ok(Plan::Now(tat));
        }
        let micros = free_at.div_ceil(self.ticks_per_micro());
        match u64::try_from(micros) {
            Ok(micros) if micros < u64::MAX => {
                let at = Instant::from_micros(micros);
                // Served at the whole microsecond `at`: the refill between `free_at` and `at`
                // is capped like any other, so at most `burst - n` tokens are left afterwards.
                let served = self.ticks(at).saturating_add(cost);
                Ok(Plan::At(at, tat.max(served)))
            }
            _ => Ok(Plan::Never),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn ms(m: u64) -> Instant {
        Instant::from_millis(m)
    }

    fn limiter(tokens: u32, per: Duration, burst: u32) -> Limiter {
        let rate = Rate::new(tokens, per).expect("valid rate");
        Limiter::new(LimiterConfig::new(rate, burst).expect("valid burst"), Instant::ZERO)
    }

    #[test]
    fn config_rejects_zeros() {
        assert_eq!(Rate::new(0, Duration::from_secs(1)), Err(LimiterConfigError::ZeroTokens));
        assert_eq!(Rate::new(1, Duration::ZERO), Err(LimiterConfigError::ZeroPeriod));
        let rate = Rate::per_second(10).expect("valid");
        assert_eq!(LimiterConfig::new(rate, 0), Err(LimiterConfigError::ZeroBurst));
        assert_eq!(rate.tokens(), 10);
        assert_eq!(rate.per(), Duration::from_secs(1));
    }

    #[test]
    fn burst_then_steady_rate() {
        let mut l = limiter(10, Duration::from_secs(1), 5);
        for _ in 0..5 {
            assert_eq!(l.try_acquire(ms(0), 1), Ok(()));
        }
        assert_eq!(l.try_acquire(ms(0), 1), Err(LimitError::RateLimited { retry_at: ms(100) }));
        assert_eq!(l.try_acquire(ms(99), 1), Err(LimitError::RateLimited { retry_at: ms(100) }));
        for step in 1..=20 {
            assert_eq!(l.try_acquire(ms(100 * step), 1), Ok(()));
            assert!(l.try_acquire(ms(100 * step), 1).is_err());
        }
        // Idle for a long time: the bucket refills to the burst, not beyond.
        for _ in 0..5 {
            assert_eq!(l.try_acquire(ms(60_000), 1), Ok(()));
        }
        assert!(l.try_acquire(ms(60_000), 1).is_err());
    }

    #[test]
    fn reservations_are_served_in_order() {
        let mut l = limiter(1, Duration::from_secs(1), 1);
        let wait = Duration::from_secs(10);
        assert_eq!(l.acquire(ms(0), 1, wait), Ok(Grant::Now));
        assert_eq!(l.acquire(ms(0), 1, wait), Ok(Grant::At(ms(1_000))));
        assert_eq!(l.acquire(ms(500), 1, wait), Ok(Grant::At(ms(2_000))));
        // A fail-fast request cannot jump the queue.
        assert_eq!(
            l.try_acquire(ms(1_500), 1),
            Err(LimitError::RateLimited { retry_at: ms(3_000) })
        );
        assert_eq!(l.next_free(ms(1_500), 1), Ok(ms(3_000)));
        assert_eq!(l.try_acquire(ms(3_000), 1), Ok(()));
    }

    #[test]
    fn fractional_intervals_are_exact() {
        // 3 tokens a second is one every 333 333.3… µs: 30 tokens take exactly 10 s, no drift.
        let mut l = limiter(3, Duration::from_secs(1), 30);
        assert_eq!(l.try_acquire(ms(0), 30), Ok(()));
        assert_eq!(l.next_free(ms(0), 1), Ok(Instant::from_micros(333_334)));
        assert_eq!(l.next_free(ms(0), 3), Ok(ms(1_000)));
        assert_eq!(
            l.try_acquire(Instant::from_micros(9_999_999), 30),
            Err(LimitError::RateLimited { retry_at: ms(10_000) })
        );
        assert_eq!(l.try_acquire(ms(10_000), 30), Ok(()));
    }

    #[test]
    fn exceeds_burst_is_distinct_and_changes_nothing() {
        let mut l = limiter(10, Duration::from_secs(1), 4);
        assert_eq!(l.try_acquire(ms(0), 3), Ok(()));
        let before = l.tat;
        let exceeds = Err(LimitError::ExceedsBurst { requested: 5, burst: 4 });
        assert_eq!(l.acquire(ms(0), 5, Duration::MAX), exceeds.map(|()| Grant::Now));
        assert_eq!(l.try_acquire(ms(0), 5), exceeds);
        assert_eq!(l.next_free(ms(0), 5), exceeds.map(|()| Instant::ZERO));
        assert_eq!(l.tat, before);
        assert_eq!(l.try_acquire(ms(0), 1), Ok(()));
    }

    #[test]
    fn wait_beyond_max_wait_leaves_state_unchanged() {
        let mut l = limiter(10, Duration::from_secs(1), 2);
        assert_eq!(l.try_acquire(ms(0), 2), Ok(()));
        let before = l.tat;
        assert_eq!(
            l.acquire(ms(0), 2, Duration::from_millis(199)),
            Err(LimitError::RateLimited { retry_at: ms(200) })
        );
        assert_eq!(l.tat, before);
        assert_eq!(l.acquire(ms(0), 2, Duration::from_millis(200)), Ok(Grant::At(ms(200))));
    }

    #[test]
    fn zero_tokens_are_always_granted() {
        let mut l = limiter(1, Duration::from_secs(1), 1);
        assert_eq!(l.try_acquire(ms(0), 1), Ok(()));
        let before = l.tat;
        assert_eq!(l.try_acquire(ms(0), 0), Ok(()));
        assert_eq!(l.acquire(ms(0), 0, Duration::ZERO), Ok(Grant::Now));
        assert_eq!(l.next_free(ms(0), 0), Ok(ms(0)));
        assert_eq!(l.tat, before);
    }

    #[test]
    fn time_going_backwards_counts_as_no_time_passing() {
        let mut l = limiter(1, Duration::from_secs(1), 1);
        assert_eq!(l.try_acquire(ms(10_000), 1), Ok(()));
        // The clock steps back 5 s: still 10 s as far as the limiter is concerned.
        assert_eq!(
            l.try_acquire(ms(5_000), 1),
            Err(LimitError::RateLimited { retry_at: ms(11_000) })
        );
        assert_eq!(l.next_free(ms(5_000), 1), Ok(ms(11_000)));
        assert_eq!(l.acquire(ms(5_000), 1, Duration::from_secs(1)), Ok(Grant::At(ms(11_000))));
        // Forward again to 11.5 s: the back-step earned no refill.
        assert!(l.try_acquire(ms(11_500), 1).is_err());
        assert_eq!(l.try_acquire(ms(12_000), 1), Ok(()));
    }

    #[test]
    fn extreme_configs_do_not_overflow() {
        let nanos = |n| Duration::from_nanos(n);
        let configs = [
            (u32::MAX, nanos(1), u32::MAX),
            (u32::MAX, nanos(1), 1),
            (1, Duration::MAX, u32::MAX),
            (1, Duration::MAX, 1),
            (u32::MAX, Duration::MAX, u32::MAX),
            (7, nanos(3), 2),
        ];
        for (tokens, per, burst) in configs {
            for start in [Instant::ZERO, Instant::from_secs(1), Instant::MAX] {
                let rate = Rate::new(tokens, per).expect("valid");
                let config = LimiterConfig::new(rate, burst).expect("valid");
                let mut l = Limiter::new(config, start);
                for now in [start, Instant::ZERO, Instant::MAX] {
                    for n in [0, 1, burst / 2, burst, burst.saturating_add(1), u32::MAX] {
                        for wait in [Duration::ZERO, Duration::from_micros(1), Duration::MAX] {
                            let _ = l.acquire(now, n, wait);
                            let _ = l.try_acquire(now, n);
                            let _ = l.next_free(now, n);
                        }
                    }
                }
            }
        }
        // A huge rate refills the whole bucket within a microsecond.
        let mut l = limiter(u32::MAX, nanos(1), u32::MAX);
        assert_eq!(l.try_acquire(Instant::from_micros(1), u32::MAX), Ok(()));
        assert_eq!(l.try_acquire(Instant::from_micros(2), u32::MAX), Ok(()));
        // A rate of one token per 584 billion years: the second token is never.
        let mut l = limiter(1, Duration::MAX, 1);
        assert_eq!(l.try_acquire(Instant::ZERO, 1), Ok(()));
        assert_eq!(
            l.acquire(Instant::ZERO, 1, Duration::MAX),
            Err(LimitError::RateLimited { retry_at: Instant::MAX })
        );
        assert_eq!(l.next_free(Instant::ZERO, 1), Ok(Instant::MAX));
    }

    // ---- Property and model tests -----------------------------------------------------------

    /// One request: a clock step in µs (may be negative), a token count selector, a max wait.
    #[derive(Clone, Debug)]
    struct Request {
        step: i64,
        n: u32,
        max_wait_nanos: u64,
    }

    fn request(burst: u32, max_step: i64) -> impl Strategy<Value = Request> {
        let n = prop_oneof![
            1 => Just(0u32),
            6 => 1..=burst.min(4),
            2 => 1..=burst,
            1 => Just(burst),
            1 => burst.saturating_add(1)..=u32::MAX,
        ];
        let step = prop_oneof![8 => 0..=max_step, 1 => -max_step..0];
        let max_wait = prop_oneof![
            3 => Just(0u64),
            3 => 0..=(max_step as u64).saturating_mul(1_000),
            1 => 0..=u64::MAX,
        ];
        (step, n, max_wait).prop_map(|(step, n, max_wait_nanos)| Request {
            step,
            n,
            max_wait_nanos,
        })
    }

    /// A configuration: (tokens, per in nanoseconds, burst), with requests fitting its scale.
    fn config_and_requests() -> impl Strategy<Value = ((u32, u64, u32), Vec<Request>)> {
        let tokens = prop_oneof![1..=10u32, 1..=u32::MAX];
        let per = prop_oneof![1..=1_000u64, 1..=10_000_000u64, 1..=1_000_000_000_000u64];
        let burst = prop_oneof![1..=10u32, 1..=1_000u32, 1..=u32::MAX];
        (tokens, per, burst).prop_flat_map(|(tokens, per, burst)| {
            // Steps around one emission interval, in µs.
            let interval_micros = (per / u64::from(tokens) / 1_000).clamp(1, 1 << 40);
            let max_step = i64::try_from(interval_micros.saturating_mul(3)).unwrap_or(i64::MAX);
            (
                Just((tokens, per, burst)),
                proptest::collection::vec(request(burst, max_step), 1..200),
            )
        })
    }

    /// A straightforward token bucket in integers: one token is `per_us` units, the refill is
    /// `tokens` units per microsecond, the bucket holds `burst × per_us`. `level` is the content
    /// at `at` (which is in the future while a reservation is pending, the content then being
    /// what is left after serving it).
    struct Bucket {
        tokens: i128,
        per: i128,
        burst: u32,
        level: i128,
        at: u64,
        clock: u64,
    }

    impl Bucket {
        fn level_at(&self, t: u64) -> i128 {
            if t >= self.at {
                let refill = i128::from(t - self.at) * self.tokens;
                (self.level + refill).min(i128::from(self.burst) * self.per)
            } else {
                self.level - i128::from(self.at - t) * self.tokens
            }
        }

        /// `Ok(None)` go now, `Ok(Some(t))` go at `t`, `Err(Some(retry_at))` rate limited,
        /// `Err(None)` exceeds the burst.
        fn acquire(
            &mut self,
            t: u64,
            n: u32,
            max_wait_us: u64,
        ) -> Result<Option<u64>, Option<u64>> {
            self.clock = self.clock.max(t);
            let now = self.clock;
            if n > self.burst {
                return Err(None);
            }
            if n == 0 {
                return Ok(None);
            }
            let need = i128::from(n) * self.per;
            let level = self.level_at(now);
            if level >= need {
                self.level = level - need;
                self.at = now;
                return Ok(None);
            }
            let wait =
                u64::try_from((need - level + self.tokens - 1) / self.tokens).expect("small");
            if wait > max_wait_us {
                return Err(Some(now + wait));
            }
            // Served at `now + wait` from a bucket that refilled (up to its size) until then.
            let cap = i128::from(self.burst) * self.per;
            self.level = (level + i128::from(wait) * self.tokens).min(cap) - need;
            self.at = now + wait;
            Ok(Some(now + wait))
        }
    }

    proptest! {
        #![proptest_config(crate::testing::model_config())]

        /// In every window [a, b] of grant instants, the tokens granted are at most
        /// `rate × (b − a) + burst`, exactly; errors leave the state unchanged; grants are in
        /// request order and within `max_wait`.
        #[test]
        fn granted_tokens_never_exceed_rate_times_window_plus_burst(
            ((tokens, per, burst), requests) in config_and_requests(),
            start in 0u64..(1 << 40),
        ) {
            let rate = Rate::new(tokens, Duration::from_nanos(per)).expect("valid");
            let config = LimiterConfig::new(rate, burst).expect("valid");
            let mut limiter = Limiter::new(config, Instant::from_micros(start));
            let (mut driver, mut latest) = (start, start);
            // (grant instant in µs, tokens)
            let mut grants: Vec<(u64, u32)> = Vec::new();
            for r in requests {
                driver = driver.saturating_add_signed(r.step);
                latest = latest.max(driver);
                let now = Instant::from_micros(driver);
                let max_wait = Duration::from_nanos(r.max_wait_nanos);
                let before = limiter.tat;
                let free = limiter.next_free(now, r.n);
                match limiter.acquire(now, r.n, max_wait) {
                    Ok(grant) => {
                        let at = match grant {
                            Grant::Now => latest,
                            Grant::At(at) => {
                                prop_assert!(at.as_micros() > latest);
                                prop_assert!(at - Instant::from_micros(latest) <= max_wait);
                                at.as_micros()
                            }
                        };
                        prop_assert_eq!(free, Ok(Instant::from_micros(at)));
                        // Zero-token requests take nothing, so they need not queue.
                        if r.n > 0 {
                            if let Some(&(last, _)) = grants.last() {
                                prop_assert!(last <= at, "grants out of order");
                            }
                            grants.push((at, r.n));
                        }
                    }
                    Err(error) => {
                        prop_assert_eq!(limiter.tat, before, "an error changed the state");
                        match error {
                            LimitError::RateLimited { retry_at } => {
                                prop_assert_eq!(free, Ok(retry_at));
                                prop_assert!(retry_at - Instant::from_micros(latest) > max_wait);
                            }
                            LimitError::ExceedsBurst { requested, burst: b } => {
                                prop_assert_eq!((requested, b), (r.n, burst));
                                prop_assert!(r.n > burst);
                            }
                        }
                    }
                }
            }
            // Windows from each grant to each later one, ties included (grants are sorted).
            let mut prefix = Vec::with_capacity(grants.len() + 1);
            prefix.push(0u128);
            for &(_, n) in &grants {
                prefix.push(prefix[prefix.len() - 1] + u128::from(n));
            }
            for i in 0..grants.len() {
                let first = grants.partition_point(|&(at, _)| at < grants[i].0);
                for j in i..grants.len() {
                    let last = grants.partition_point(|&(at, _)| at <= grants[j].0);
                    let admitted = prefix[last] - prefix[first];
                    // admitted ≤ tokens × window / per + burst, in integers:
                    let window_nanos = u128::from(grants[j].0 - grants[i].0) * 1_000;
                    let lhs = admitted.saturating_sub(u128::from(burst)) * u128::from(per);
                    prop_assert!(
                        lhs <= u128::from(tokens) * window_nanos,
                        "{} tokens in [{}, {}] µs", admitted, grants[i].0, grants[j].0
                    );
                }
            }
        }

        /// Any configuration, any instants, any request: no panic, no overflow.
        #[test]
        fn limiter_never_panics_on_any_input(
            tokens in 1u32..=u32::MAX,
            per in (any::<u64>(), 0u32..1_000_000_000),
            burst in 1u32..=u32::MAX,
            start in any::<u64>(),
            requests in proptest::collection::vec(
                (any::<u64>(), any::<u32>(), any::<u64>(), 0u32..1_000_000_000), 1..50),
        ) {
            let per = Duration::new(per.0, per.1);
            let Ok(rate) = Rate::new(tokens, per) else { return Ok(()) };
            let config = LimiterConfig::new(rate, burst).expect("valid");
            let mut limiter = Limiter::new(config, Instant::from_micros(start));
            for (now, n, wait_secs, wait_nanos) in requests {
                let now = Instant::from_micros(now);
                let max_wait = Duration::new(wait_secs, wait_nanos);
                let free = limiter.next_free(now, n);
                match limiter.acquire(now, n, max_wait) {
                    Ok(Grant::Now) => prop_assert_eq!(free, Ok(limiter.clock.latest())),
                    Ok(Grant::At(at)) | Err(LimitError::RateLimited { retry_at: at }) => {
                        prop_assert_eq!(free, Ok(at));
                    }
                    Err(e) => prop_assert_eq!(free, Err(e)),
                }
                let _ = limiter.try_acquire(now, n);
            }
        }

        /// Decisions, grant instants and retry instants equal those of a plain integer token
        /// bucket, for configurations whose period is a whole number of microseconds.
        #[test]
        fn limiter_matches_reference_token_bucket(
            tokens in 1u32..=20,
            per_us in 1u64..=2_000_000,
            burst in 1u32..=20,
            start in 0u64..1_000_000,
            requests in proptest::collection::vec(
                (prop_oneof![8 => 0i64..=400_000, 1 => -400_000i64..0],
                 0u32..=22,
                 // u64::MAX stands for "exactly the wait the limiter would ask for".
                 prop_oneof![4 => Just(0u64), 2 => 0u64..=3_000_000_000, 1 => Just(u64::MAX)]),
                1..200),
        ) {
            let rate = Rate::new(tokens, Duration::from_micros(per_us)).expect("valid");
            let config = LimiterConfig::new(rate, burst).expect("valid");
            let mut limiter = Limiter::new(config, Instant::from_micros(start));
            let per = i128::from(per_us);
            let mut bucket = Bucket {
                tokens: i128::from(tokens), per, burst,
                level: i128::from(burst) * per, at: start, clock: start,
            };
            let mut driver = start;
            for (step, n, max_wait_nanos) in requests {
                driver = driver.saturating_add_signed(step);
                let now = Instant::from_micros(driver);
                let free = limiter.next_free(now, n);
                let max_wait_nanos = match free {
                    Ok(at) if max_wait_nanos == u64::MAX => {
                        let wait = at - Instant::from_micros(bucket.clock.max(driver));
                        u64::try_from(wait.as_nanos()).expect("small")
                    }
                    _ => max_wait_nanos,
                };
                let max_wait = Duration::from_nanos(max_wait_nanos);
                let got = limiter.acquire(now, n, max_wait);
                let want = bucket.acquire(driver, n, max_wait_nanos / 1_000);
                let want = match want {
                    Ok(None) => Ok(Grant::Now),
                    Ok(Some(at)) => Ok(Grant::At(Instant::from_micros(at))),
                    Err(Some(retry_at)) => {
                        Err(LimitError::RateLimited { retry_at: Instant::from_micros(retry_at) })
                    }
                    Err(None) => Err(LimitError::ExceedsBurst { requested: n, burst }),
                };
                prop_assert_eq!(got, want);
                let want_free = match want {
                    Ok(Grant::Now) => Ok(Instant::from_micros(bucket.clock)),
                    Ok(Grant::At(at)) | Err(LimitError::RateLimited { retry_at: at }) => Ok(at),
                    Err(e) => Err(e),
                };
                prop_assert_eq!(free, want_free);
            }
        }
    }
}
