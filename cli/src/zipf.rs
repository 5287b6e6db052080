//! A small random-number generator and a Zipf sampler: the demo's load, with no dependency.

/// xorshift64* (Vigna): fast, 64 bits of state, good enough to pick keys. Not for secrets.
#[derive(Clone, Debug)]
pub(crate) struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator seeded from `seed` (any value; it is mixed first, so seeds 0, 1, 2, … give
    /// unrelated streams).
    pub(crate) fn new(seed: u64) -> Self {
        let state = splitmix64(seed);
        XorShift { state: if state == 0 { 0x9E37_79B9_7F4A_7C15 } else { state } }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform number in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // The top 53 bits, exactly representable.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// splitmix64's finalizer: spreads any seed over all 64 bits.
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Ranks `0..n` drawn with probability proportional to `1 / (rank + 1)^s`: rank 0 is the most
/// popular key. `s = 0` is uniform; `s ≈ 1` is the classic web-cache skew.
///
/// The cumulative distribution is computed once (n floats); a draw is one uniform number and
/// a binary search over it.
#[derive(Clone, Debug)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks (`n ≥ 1`) with exponent `s` (finite, `≥ 0`).
    pub(crate) fn new(n: usize, s: f64) -> Self {
        assert!(n >= 1, "a Zipf distribution needs at least one rank");
        assert!(s.is_finite() && s >= 0.0, "the Zipf exponent must be finite and ≥ 0");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += (rank as f64).powf(-s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        // Rounding must not leave a gap at the top.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf { cdf }
    }

    /// How many ranks.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cdf.len()
    }

    /// The probability of `rank`.
    #[cfg(test)]
    pub(crate) fn probability(&self, rank: usize) -> f64 {
        let below = if rank == 0 { 0.0 } else { self.cdf[rank - 1] };
        self.cdf[rank] - below
    }

    /// A rank drawn with `rng`.
    pub(crate) fn sample(&self, rng: &mut XorShift) -> usize {
        let u = rng.next_f64();
        // The first rank whose cumulative probability exceeds u.
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_uniform_enough() {
        let mut rng = XorShift::new(7);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        for count in buckets {
            assert!((9_000..11_000).contains(&count), "{buckets:?}");
        }
    }

    #[test]
    fn seeds_give_different_streams() {
        let a: Vec<u64> = (0..4).scan(XorShift::new(0), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(XorShift::new(1), |r, _| Some(r.next_u64())).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn zipf_one_matches_its_probabilities() {
        let zipf = Zipf::new(100, 1.0);
        let harmonic: f64 = (1..=100).map(|k| 1.0 / f64::from(k)).sum();
        assert!((zipf.probability(0) - 1.0 / harmonic).abs() < 1e-12);
        assert!((zipf.probability(9) - 0.1 / harmonic).abs() < 1e-12);

        let mut rng = XorShift::new(42);
        let mut counts = vec![0u32; zipf.len()];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        for rank in [0, 1, 9, 99] {
            let expected = zipf.probability(rank) * f64::from(draws);
            let seen = f64::from(counts[rank]);
            assert!((seen - expected).abs() < 5.0 * expected.sqrt() + 5.0, "rank {rank}");
        }
    }

    #[test]
    fn zipf_zero_is_uniform_and_one_rank_is_constant() {
        let uniform = Zipf::new(4, 0.0);
        for rank in 0..4 {
            assert!((uniform.probability(rank) - 0.25).abs() < 1e-12);
        }
        let one = Zipf::new(1, 1.0);
        let mut rng = XorShift::new(3);
        assert!((0..100).all(|_| one.sample(&mut rng) == 0));
    }
}
