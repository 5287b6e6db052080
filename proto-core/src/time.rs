//! Time as the core sees it: a monotonic [`Instant`] in microseconds, passed in by the driver.
//!
//! Contract:
//! - The core never reads a clock. Every state machine takes `now: Instant` as an argument.
//! - An `Instant` counts microseconds since an epoch the driver picks (process start, boot, …).
//!   Only differences between instants of one driver mean anything.
//! - All arithmetic saturates: adding a huge [`Duration`] gives [`Instant::MAX`] (never), and
//!   subtracting a later instant gives [`Duration::ZERO`].
//! - Time going backwards counts as no time passing. Every machine that remembers time keeps a
//!   [`Monotonic`] and feeds `now` through [`Monotonic::observe`], so that a driver clock that
//!   steps back can neither re-open a closed window nor make a deadline fire early twice.
//!
//! With the `std` feature, `Instant::from(std::time::Instant)` measures from a process-wide
//! epoch fixed at the first conversion.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
pub use core::time::Duration;

/// A point in time, in microseconds since an epoch chosen by the driver.
///
/// Ordered, `Copy`, and saturating: `Instant::MAX` stands for "never".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The driver's epoch.
    pub const ZERO: Instant = Instant(0);
    /// The end of time: a deadline that never fires.
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `micros` microseconds after the epoch.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the epoch (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000))
    }

    /// An instant `secs` seconds after the epoch (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Instant(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the epoch.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later (time went backwards).
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `self + duration`, or `None` past [`Instant::MAX`].
    #[must_use]
    pub fn checked_add(self, duration: Duration) -> Option<Instant> {
        let micros = u64::try_from(duration_micros_ceil(duration)).ok()?;
        self.0.checked_add(micros).map(Instant)
    }

    /// `self + duration`, clamped to [`Instant::MAX`].
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Instant {
        self.checked_add(duration).unwrap_or(Instant::MAX)
    }

    /// `self - duration`, clamped to [`Instant::ZERO`].
    #[must_use]
    pub fn saturating_sub(self, duration: Duration) -> Instant {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(micros))
    }
}

/// Whole microseconds in `duration`, rounded up so that a deadline computed from a sub-microsecond
/// duration is never earlier than asked for.
fn duration_micros_ceil(duration: Duration) -> u128 {
    duration.as_nanos().div_ceil(1_000)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: never overflows, clamps at [`Instant::MAX`].
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturating: clamps at [`Instant::ZERO`].
    fn sub(self, rhs: Duration) -> Instant {
        self.saturating_sub(rhs)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: zero when `rhs` is later than `self`.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Instant::MAX {
            f.write_str("Instant::MAX")
        } else {
            write!(f, "Instant({}.{:06}s)", self.0 / 1_000_000, self.0 % 1_000_000)
        }
    }
}

/// A wall-clock time: microseconds since the Unix epoch, as the driver reads it.
///
/// Expiry that crosses the wire is wall-clock, because two nodes share no monotonic epoch. A node
/// converts between its [`Instant`] and `UnixTime` with the pair `(Instant, UnixTime)` its driver
/// passes in with the current time; clock skew between nodes shifts expiries by the skew.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct UnixTime(u64);

impl UnixTime {
    /// The Unix epoch.
    pub const EPOCH: UnixTime = UnixTime(0);

    /// `micros` microseconds after the Unix epoch.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        UnixTime(micros)
    }

    /// Microseconds since the Unix epoch.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The instant on a driver's clock that corresponds to `self`, given that `now_instant` and
    /// `now_unix` are the same moment. Saturates at [`Instant::ZERO`] and [`Instant::MAX`].
    #[must_use]
    pub fn to_instant(self, now_instant: Instant, now_unix: UnixTime) -> Instant {
        if self.0 >= now_unix.0 {
            now_instant.saturating_add(Duration::from_micros(self.0 - now_unix.0))
        } else {
            now_instant.saturating_sub(Duration::from_micros(now_unix.0 - self.0))
        }
    }

    /// The wall-clock time of `instant`, given that `now_instant` and `now_unix` are the same
    /// moment. Saturates at the epoch and at `u64::MAX` microseconds.
    #[must_use]
    pub fn from_instant(instant: Instant, now_instant: Instant, now_unix: UnixTime) -> UnixTime {
        if instant >= now_instant {
            UnixTime(now_unix.0.saturating_add(instant.as_micros() - now_instant.as_micros()))
        } else {
            UnixTime(now_unix.0.saturating_sub(now_instant.as_micros() - instant.as_micros()))
        }
    }
}

/// The latest time a state machine has seen. Feeding every `now` through [`Monotonic::observe`]
/// is how the core treats a clock that steps backwards as "no time passed".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Monotonic {
    latest: Instant,
}

impl Monotonic {
    /// Starts at `now`.
    #[must_use]
    pub const fn new(now: Instant) -> Self {
        Monotonic { latest: now }
    }

    /// Records `now` and returns the effective time: `max(latest seen, now)`.
    pub fn observe(&mut self, now: Instant) -> Instant {
        if now > self.latest {
            self.latest = now;
        }
        self.latest
    }

    /// The latest time seen.
    #[must_use]
    pub const fn latest(&self) -> Instant {
        self.latest
    }
}

#[cfg(feature = "std")]
mod std_conversions {
    extern crate std;
    use super::Instant;
    use std::sync::OnceLock;

    /// The process-wide epoch for conversions from `std::time::Instant`: the first conversion.
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

    impl From<std::time::Instant> for Instant {
        /// Microseconds since the process-wide epoch; instants before it map to the epoch.
        fn from(instant: std::time::Instant) -> Self {
            let epoch = *EPOCH.get_or_init(|| instant);
            let micros = instant.saturating_duration_since(epoch).as_micros();
            Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
        }
    }

    impl Instant {
        /// The current time of the process's monotonic clock, on the same epoch as `From`.
        #[must_use]
        pub fn now() -> Self {
            Instant::from(std::time::Instant::now())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn arithmetic_saturates_at_both_ends() {
        assert_eq!(Instant::from_micros(5) - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::MAX + Duration::from_micros(1), Instant::MAX);
        assert_eq!(Instant::from_secs(1) + Duration::MAX, Instant::MAX);
        assert_eq!(Instant::from_secs(1) - Instant::from_secs(2), Duration::ZERO);
        assert_eq!(Instant::from_secs(3) - Instant::from_secs(1), Duration::from_secs(2));
        assert_eq!(Instant::from_secs(u64::MAX), Instant::MAX);
    }

    #[test]
    fn sub_microsecond_durations_round_deadlines_up() {
        assert_eq!(Instant::ZERO + Duration::from_nanos(1), Instant::from_micros(1));
        assert_eq!(Instant::ZERO + Duration::from_nanos(1_000), Instant::from_micros(1));
    }

    #[test]
    fn unix_time_converts_through_a_shared_moment() {
        let (now, unix) = (Instant::from_secs(10), UnixTime::from_micros(1_700_000_000_000_000));
        let later = UnixTime::from_micros(unix.as_micros() + 5_000_000);
        assert_eq!(later.to_instant(now, unix), Instant::from_secs(15));
        assert_eq!(UnixTime::from_instant(Instant::from_secs(15), now, unix), later);
        assert_eq!(UnixTime::EPOCH.to_instant(now, unix), Instant::ZERO, "saturates");
        assert_eq!(UnixTime::from_instant(Instant::MAX, now, unix).as_micros(), u64::MAX);
    }

    #[test]
    fn time_going_backwards_counts_as_no_time_passing() {
        let mut clock = Monotonic::new(Instant::from_secs(10));
        assert_eq!(clock.observe(Instant::from_secs(5)), Instant::from_secs(10));
        assert_eq!(clock.observe(Instant::from_secs(11)), Instant::from_secs(11));
        assert_eq!(clock.latest(), Instant::from_secs(11));
    }

    #[cfg(feature = "std")]
    #[test]
    fn std_instants_convert_on_one_epoch() {
        let a = std::time::Instant::now();
        let b = a + std::time::Duration::from_millis(3);
        let (ia, ib) = (Instant::from(a), Instant::from(b));
        assert_eq!(ib - ia, Duration::from_millis(3));
        assert!(Instant::now() >= ia);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(256), ..ProptestConfig::default() })]
        #[test]
        fn monotonic_clock_never_goes_back(steps in proptest::collection::vec(any::<u64>(), 1..64)) {
            let mut clock = Monotonic::default();
            let mut last = Instant::ZERO;
            for micros in steps {
                let now = clock.observe(Instant::from_micros(micros));
                prop_assert!(now >= last);
                prop_assert!(now >= Instant::from_micros(micros));
                last = now;
            }
        }

        #[test]
        fn add_then_sub_round_trips_below_max(base in 0u64..(1 << 50), micros in 0u64..(1 << 50)) {
            let start = Instant::from_micros(base);
            let later = start + Duration::from_micros(micros);
            prop_assert_eq!(later - start, Duration::from_micros(micros));
            prop_assert_eq!(later - Duration::from_micros(micros), start);
        }
    }
}
