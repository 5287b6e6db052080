//! A Zipf key-index stream, precomputed before timing so sampling is never measured.

/// `len` key indices in `0..n` drawn from a Zipf distribution of exponent `s` (rank `r`, from
/// 1, has weight `1 / r^s`), ranks mapped to indices by a seeded random permutation so the hot
/// keys are not the first ones allocated. Deterministic for a given `seed`.
///
/// # Panics
///
/// If `n` is zero or does not fit a `u32`.
#[must_use]
pub fn stream(n: usize, s: f64, len: usize, seed: u64) -> Vec<u32> {
    assert!(n > 0 && u32::try_from(n).is_ok(), "n must be in 1..=u32::MAX");
    let mut cdf = Vec::with_capacity(n);
    let mut sum = 0.0;
    for rank in 1..=n {
        sum += 1.0 / (rank as f64).powf(s);
        cdf.push(sum);
    }
    for c in &mut cdf {
        *c /= sum;
    }
    let mut rng = SplitMix64(seed);
    // Fisher–Yates: rank -> key index.
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    (0..len)
        .map(|_| {
            let u = rng.unit();
            let rank = cdf.partition_point(|&c| c < u).min(n - 1);
            perm[rank]
        })
        .collect()
}

/// SplitMix64: small, fast, good enough for a benchmark's key stream.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::stream;

    #[test]
    fn in_range_and_skewed() {
        let n = 1_000;
        let xs = stream(n, 1.0, 100_000, 7);
        assert!(xs.iter().all(|&x| (x as usize) < n));
        let mut counts = vec![0u32; n];
        for &x in &xs {
            counts[x as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // Rank 1 of Zipf(1.0) over 1000 keys has probability 1 / H(1000) ≈ 0.134.
        let top = f64::from(counts[0]) / xs.len() as f64;
        assert!((0.12..0.15).contains(&top), "top share {top}");
        // Rank 2 has half the weight of rank 1.
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((1.7..2.3).contains(&ratio), "rank 1 / rank 2 = {ratio}");
    }
}
