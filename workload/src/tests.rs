use super::*;

/// The number of [`Rng::next_f64`] values (multiples of 2^-53 in `[0, 1)`).
const GRID: u64 = 1 << 53;

/// How many of the 2^53 equally likely uniforms map to a rank `< rank`: the first grid
/// point whose rank is `≥ rank` (`rank_at` is monotone, so a binary search finds it).
fn grid_points_below(zipf: &Zipf, rank: usize) -> u64 {
    let (mut low, mut high) = (0u64, GRID);
    while low < high {
        let mid = low + (high - low) / 2;
        if zipf.rank_at(mid as f64 * UNIT) >= rank {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// How many of the 2^53 uniforms draw each rank: the sampler's exact distribution.
fn grid_counts(zipf: &Zipf) -> Vec<u64> {
    let firsts: Vec<u64> = (0..=zipf.len()).map(|rank| grid_points_below(zipf, rank)).collect();
    firsts.windows(2).map(|pair| pair[1] - pair[0]).collect()
}

/// The exact Zipf probabilities, summed smallest first (a different order from the
/// sampler's, so that a shared rounding mistake cannot hide).
fn exact(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|rank| (rank as f64).powf(-s)).collect();
    let total: f64 = weights.iter().rev().sum();
    weights.iter().map(|weight| weight / total).collect()
}

#[test]
fn splitmix64_matches_its_reference_stream() {
    // SplitMix64 from state 0 (Vigna's reference implementation).
    let mut rng = Rng::new(0);
    assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    let replay: Vec<u64> = (0..8).scan(Rng::new(42), |r, _| Some(r.next_u64())).collect();
    let again: Vec<u64> = (0..8).scan(Rng::new(42), |r, _| Some(r.next_u64())).collect();
    let other: Vec<u64> = (0..8).scan(Rng::new(43), |r, _| Some(r.next_u64())).collect();
    assert_eq!(replay, again, "a seed replays");
    assert_ne!(replay, other, "neighbouring seeds give different streams");
}

#[test]
fn uniforms_are_on_the_grid_and_spread_evenly() {
    let mut rng = Rng::new(7);
    let mut buckets = [0u32; 10];
    for _ in 0..100_000 {
        let u = rng.next_f64();
        assert!((0.0..1.0).contains(&u));
        assert_eq!((u / UNIT).fract(), 0.0, "{u} is a multiple of 2^-53");
        buckets[(u * 10.0) as usize] += 1;
    }
    for count in buckets {
        assert!((9_000..11_000).contains(&count), "{buckets:?}");
    }
}

#[test]
fn below_is_unbiased_and_in_range() {
    let mut rng = Rng::new(11);
    assert!((0..100).all(|_| rng.below(1) == 0));
    let mut counts = [0u32; 3];
    for _ in 0..90_000 {
        counts[rng.below(3) as usize] += 1;
    }
    for count in counts {
        assert!((29_000..31_000).contains(&count), "{counts:?}");
    }
    // A bound just over half the range: modulo would pick the low half twice as often.
    let bound = (1u64 << 63) + 1;
    let low = (0..10_000).filter(|_| rng.below(bound) < bound / 2).count();
    assert!((4_700..5_300).contains(&low), "{low} of 10000 in the low half");
}

#[test]
fn shuffle_is_a_permutation() {
    let mut rng = Rng::new(5);
    let mut items: Vec<u32> = (0..100).collect();
    rng.shuffle(&mut items);
    assert_ne!(items, (0..100).collect::<Vec<_>>());
    items.sort_unstable();
    assert_eq!(items, (0..100).collect::<Vec<_>>());
}

/// Uniform over 4 ranks: every bound (1/4, 1/2, 3/4) is exact in binary, so the sampler must
/// give each rank exactly 2^51 of the 2^53 uniforms, and a uniform equal to a bound belongs
/// to the rank above it.
#[test]
fn uniform_edges_are_exact() {
    let zipf = Zipf::new(4, 0.0);
    assert_eq!(grid_counts(&zipf), vec![GRID / 4; 4]);
    for (rank, bound) in [(1, 0.25), (2, 0.5), (3, 0.75)] {
        assert_eq!(zipf.rank_at(bound), rank, "the bound {bound} opens rank {rank}");
        assert_eq!(zipf.rank_at(bound - UNIT), rank - 1, "just below {bound}");
    }
    assert_eq!(zipf.rank_at(0.0), 0, "the smallest uniform");
    assert_eq!(zipf.rank_at(1.0 - UNIT), 3, "the largest uniform");
}

/// For skewed distributions the sampler's exact distribution over its 2^53 inputs matches
/// the exact Zipf probabilities to within float rounding, at both ends: the smallest uniform
/// draws rank 0, the largest the last rank, and no rank is skipped or doubled.
#[test]
fn every_rank_gets_its_exact_probability() {
    for (n, s) in [(1, 1.0), (2, 1.0), (3, 1.0), (10, 0.5), (100, 0.99), (1_000, 1.2), (37, 2.0)] {
        let zipf = Zipf::new(n, s);
        let counts = grid_counts(&zipf);
        assert_eq!(counts.iter().sum::<u64>(), GRID, "n {n}, s {s}: the ranks tile [0, 1)");
        assert_eq!(zipf.rank_at(0.0), 0);
        assert_eq!(zipf.rank_at(1.0 - UNIT), n - 1, "n {n}, s {s}: the top uniform");
        for (rank, (&count, p)) in counts.iter().zip(exact(n, s)).enumerate() {
            let measured = count as f64 / GRID as f64;
            assert!(
                (measured - p).abs() <= 1e-12 * p.max(1e-3),
                "n {n}, s {s}, rank {rank}: {measured} drawn, {p} exact"
            );
            assert!((zipf.probability(rank) - p).abs() <= 1e-12, "rank {rank}");
        }
        // Zipf(3, 1): 6/11, 3/11, 2/11.
        if (n, s) == (3, 1.0) {
            for (rank, p) in [6.0 / 11.0, 3.0 / 11.0, 2.0 / 11.0].into_iter().enumerate() {
                assert!((counts[rank] as f64 / GRID as f64 - p).abs() < 1e-15, "rank {rank}");
            }
        }
    }
}

#[test]
fn samples_follow_the_distribution() {
    let zipf = Zipf::new(100, 1.0);
    let mut rng = Rng::new(42);
    let draws = 200_000u32;
    let mut counts = vec![0u32; zipf.len()];
    for _ in 0..draws {
        counts[zipf.sample(&mut rng)] += 1;
    }
    for rank in [0, 1, 9, 99] {
        let expected = zipf.probability(rank) * f64::from(draws);
        let seen = f64::from(counts[rank]);
        assert!((seen - expected).abs() < 5.0 * expected.sqrt() + 5.0, "rank {rank}: {seen}");
    }
    assert_eq!(zipf.probability(100), 0.0);
    assert_eq!(zipf.cumulative(99), 1.0);
}

#[test]
fn a_stream_is_skewed_shuffled_and_replayable() {
    let n = 1_000;
    let stream = zipf_stream(n, 1.0, 100_000, 7);
    assert_eq!(stream, zipf_stream(n, 1.0, 100_000, 7), "a seed replays");
    assert!(stream.iter().all(|&index| (index as usize) < n));
    let mut counts = vec![0u32; n];
    for &index in &stream {
        counts[index as usize] += 1;
    }
    let hottest = (0..n).max_by_key(|&index| counts[index]).expect("keys");
    let mut sorted = counts.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    // Rank 0 of Zipf(1) over 1000 keys has probability 1 / H(1000) ≈ 0.134, rank 1 half that.
    let top = f64::from(sorted[0]) / stream.len() as f64;
    assert!((0.12..0.15).contains(&top), "top share {top}");
    let ratio = f64::from(sorted[0]) / f64::from(sorted[1]);
    assert!((1.7..2.3).contains(&ratio), "rank 0 / rank 1 = {ratio}");
    assert_ne!(hottest, 0, "the hottest key is not the first allocated (seed 7)");
}

#[test]
fn keys_are_named_by_index() {
    assert_eq!(key(0), "key-0");
    assert_eq!(key(42), "key-42");
}
