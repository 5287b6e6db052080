//! # herdcache-workload — the load the demo, the benchmarks and the tests share
//!
//! One copy of what makes a synthetic cache workload, so that `herdcache demo`, the
//! benchmarks and the test suites draw keys the same way and a number measured in one means
//! the same in the others:
//!
//! - [`Rng`]: one seeded random-number generator (SplitMix64). A seed replays a run exactly;
//!   [`mix`] is its finalizer, for deriving a seed from anything hashed to 64 bits.
//! - [`Zipf`]: ranks drawn with probability `∝ 1 / (rank + 1)^s`, by inverting the
//!   cumulative distribution; [`Zipf::rank_at`] is that inverse, so the edges of the
//!   distribution are tested exactly, not by sampling.
//! - [`zipf_stream`]: a precomputed stream of key indices, ranks shuffled over the keys.
//! - [`key`]: the name of key `i` (`key-{i}`), the one naming every workload uses.
//!
//! Not for secrets: nothing here is cryptographic. No dependencies, no `unsafe`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The golden-ratio increment of SplitMix64 (Steele, Lea, Flood 2014).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer: spreads any 64-bit value over all 64 bits (a bijection). Use it to
/// turn a hash or a counter into an unrelated-looking seed.
#[must_use]
pub fn mix(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The workloads' random-number generator: SplitMix64, 64 bits of state, any seed valid
/// (seeds 0, 1, 2, … give unrelated streams), the same stream for the same seed on every
/// platform. Fast enough to draw keys inside a timed loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A uniform number in `[0, 1)`: one of the 2^53 multiples of 2^-53 below 1, each with
    /// probability 2^-53 (every such multiple is exactly representable).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * UNIT
    }

    /// A uniform number in `0..bound`, without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// If `bound` is zero.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range has no member to draw");
        // The low product lands below `threshold` for exactly `2^64 mod bound` values: those
        // would make some results more likely than others.
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Shuffles `items` uniformly (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// 2^-53: the spacing of [`Rng::next_f64`]'s values.
const UNIT: f64 = 1.0 / (1u64 << 53) as f64;

/// Ranks `0..n` drawn with probability proportional to `1 / (rank + 1)^s`: rank 0 is the most
/// popular. `s = 0` is uniform; `s ≈ 1` is the classic web-cache skew (`0.99` in the
/// literature's hit-ratio tables).
///
/// The cumulative distribution is computed once (`n` floats); a draw is one uniform number
/// `u` in `[0, 1)` and a binary search: rank `r` is drawn when `cdf(r - 1) ≤ u < cdf(r)`, so
/// each rank owns a half-open slice of `[0, 1)` as wide as its probability, and the slices
/// tile `[0, 1)` with no gap at the top (the last bound is exactly 1).
#[derive(Clone, Debug)]
pub struct Zipf {
    /// `cdf[r]`: the probability of a rank `≤ r`; `cdf[n - 1] == 1.0`.
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks with exponent `s`.
    ///
    /// # Panics
    /// If `n` is zero or `s` is negative or not finite.
    #[must_use]
    pub fn new(n: usize, s: f64) -> Zipf {
        assert!(n >= 1, "a Zipf distribution needs at least one rank");
        assert!(s.is_finite() && s >= 0.0, "the Zipf exponent must be finite and ≥ 0");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += (rank as f64).powf(-s);
            cdf.push(total);
        }
        for bound in &mut cdf {
            *bound /= total;
        }
        // Rounding may leave the last bound a hair below 1: a draw above it would have no
        // rank.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf { cdf }
    }

    /// How many ranks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always `false`: a distribution has at least one rank.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The probability of `rank` (0 past the last rank).
    #[must_use]
    pub fn probability(&self, rank: usize) -> f64 {
        let Some(&upper) = self.cdf.get(rank) else { return 0.0 };
        let lower = if rank == 0 { 0.0 } else { self.cdf[rank - 1] };
        upper - lower
    }

    /// The probability of a rank `≤ rank`.
    #[must_use]
    pub fn cumulative(&self, rank: usize) -> f64 {
        self.cdf.get(rank).copied().unwrap_or(1.0)
    }

    /// The inverse of the cumulative distribution: the rank whose slice holds `u`, for `u` in
    /// `[0, 1)` (the first rank whose cumulative probability exceeds `u`; a bound belongs to
    /// the rank above it). `u` outside `[0, 1)` is clamped to the first or last rank.
    #[must_use]
    pub fn rank_at(&self, u: f64) -> usize {
        self.cdf.partition_point(|&bound| bound <= u).min(self.cdf.len() - 1)
    }

    /// A rank drawn with `rng`.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        self.rank_at(rng.next_f64())
    }
}

/// `len` key indices in `0..n`, drawn from [`Zipf`]`(n, s)` with ranks mapped to indices by a
/// random permutation (so that the popular keys are not the first ones allocated), all from
/// one [`Rng`] seeded with `seed`: the same stream for the same arguments. Precompute it
/// before timing, so that sampling is never measured.
///
/// # Panics
/// If `n` is zero or does not fit a `u32`, or `s` is not a valid exponent ([`Zipf::new`]).
#[must_use]
pub fn zipf_stream(n: usize, s: f64, len: usize, seed: u64) -> Vec<u32> {
    let count = u32::try_from(n).ok().filter(|&n| n > 0);
    let count = count.expect("the number of keys must be in 1..=u32::MAX");
    let zipf = Zipf::new(n, s);
    let mut rng = Rng::new(seed);
    let mut index_of_rank: Vec<u32> = (0..count).collect();
    rng.shuffle(&mut index_of_rank);
    (0..len).map(|_| index_of_rank[zipf.sample(&mut rng)]).collect()
}

/// The name of key `i` in every workload: `key-{i}`.
#[must_use]
pub fn key(i: usize) -> String {
    format!("key-{i}")
}

#[cfg(test)]
mod tests;
