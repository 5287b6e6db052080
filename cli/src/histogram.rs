//! A log-bucketed latency histogram: 64 buckets per power of two, so any recorded value is
//! known within 1/64 (≈ 1.6 %); reported values are bucket midpoints (≈ 0.8 % off at most).
//! Fixed size, no allocation per record, mergeable.

use std::time::Duration;

/// Bits of sub-bucket resolution per power of two.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` are exact; each of the remaining exponents has `SUB` buckets.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Latencies in nanoseconds (displayed in microseconds).
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), count: 0, max: 0 }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("count", &self.count).field("max", &self.max).finish()
    }
}

fn index_of(value: u64) -> usize {
    if value < SUB as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // ≥ SUB_BITS
    let shift = exponent - SUB_BITS;
    let mantissa = (value >> shift) as usize; // in [SUB, 2 SUB)
    (shift as usize + 1) * SUB + (mantissa - SUB)
}

/// The midpoint of bucket `index`.
fn value_of(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let group = index / SUB; // ≥ 1
    let shift = (group - 1) as u32;
    let lower = ((index % SUB + SUB) as u64) << shift;
    let width = 1u64 << shift;
    lower + width / 2
}

impl Histogram {
    /// Records one value, in nanoseconds.
    pub(crate) fn record(&mut self, nanos: u64) {
        self.counts[index_of(nanos)] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
    }

    /// Records one duration.
    pub(crate) fn record_duration(&mut self, elapsed: Duration) {
        self.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// How many values.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The largest value, exact; 0 when empty.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` (in `[0, 1]`) of the values lie; 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return value_of(index).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        let mut previous = 0;
        for value in (0..100_000u64).chain([1 << 40, u64::MAX / 3, u64::MAX]) {
            let index = index_of(value);
            assert!(index < BUCKETS);
            assert!(index >= previous || value > 100_000);
            previous = index;
            let approx = value_of(index);
            let error = approx.abs_diff(value) as f64 / value.max(1) as f64;
            assert!(error <= 1.0 / 64.0, "{value} → {approx}");
        }
        // Every bucket below the exact range is reachable, none skipped.
        for value in 1..10_000u64 {
            assert!(index_of(value) - index_of(value - 1) <= 1);
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut histogram = Histogram::default();
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000);
        }
        let p50 = histogram.quantile(0.5) as f64;
        let p99 = histogram.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(histogram.max(), 1_000_000);
        assert_eq!(histogram.quantile(1.0), 1_000_000);

        let mut merged = Histogram::default();
        merged.merge(&histogram);
        merged.merge(&histogram);
        assert_eq!(merged.count(), 2000);
        assert_eq!(merged.quantile(0.5), histogram.quantile(0.5));
    }

    #[test]
    fn empty_is_zero() {
        let histogram = Histogram::default();
        assert_eq!((histogram.count(), histogram.max(), histogram.quantile(0.99)), (0, 0, 0));
    }
}
