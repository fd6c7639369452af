//! The runtime's random numbers: SplitMix64 streams keyed by a seed.
//!
//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014; the generator Java's `SplittableRandom` and the
//! xoshiro authors use for seeding) passes BigCrush, is three lines long and
//! has no state beyond one `u64`, which makes it cheap to start many
//! independent streams. Every random decision of the runtime (initial weights,
//! dropout masks, the data order, augmentation) draws from a stream whose key
//! is derived from the user's seed and the position of the decision
//! (parameter index, layer index, image index, epoch and batch), never from
//! which thread runs it.
//!
//! It is written out here rather than taken from a crate so that a seed gives
//! the same weights, shuffle and augmentation on every platform and every
//! version of this program: a resumed training run depends on it.
//!
//! Invariant: the numbers a stream yields depend only on its key, so results
//! are identical for any rayon thread count.

/// The SplitMix64 finaliser: a bijective mix of 64 bits.
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Derives the key of a sub-stream from a parent key and an index.
///
/// Two different `(key, index)` pairs give unrelated keys, so per-layer and
/// per-image streams do not overlap in practice.
pub const fn derive_key(key: u64, index: u64) -> u64 {
    mix64(key ^ mix64(index.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// One SplitMix64 stream.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Golden-ratio increment of SplitMix64.
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    pub const fn new(key: u64) -> Self {
        Self { state: key }
    }

    /// A generator for one stream of a seed, e.g. `(seed, epoch, batch)`
    /// (the data loader's keys; the backends key theirs with [`derive_key`]).
    pub fn derive(seed: u64, stream: &[u64]) -> Self {
        let mut state = Self::new(seed).next_u64();
        for &part in stream {
            state = Self::new(state ^ part.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
        }
        Self::new(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 24 random bits (every value is exact in `f32`).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..bound` (Lemire's multiply; the bias is below 2^-32 for
    /// the bounds used here). `bound` must be positive.
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// A standard normal deviate (Box-Muller; one of the pair is discarded so
    /// that the stream position does not depend on earlier calls' parity).
    pub fn next_normal(&mut self) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Fisher-Yates shuffle of `items`.
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // First outputs of SplitMix64 seeded with 1234567 (from the
        // reference C implementation by Vigna).
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = SplitMix64::new(7);
        let n = 200_000;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for _ in 0..n {
            let x = rng.next_normal();
            sum += x;
            sum_sq += x * x;
        }
        let mean = sum / n as f64;
        let var = sum_sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(7);
        for bound in 1..50 {
            assert!(rng.below(bound) < bound);
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut items: Vec<usize> = (0..100).collect();
        shuffle(&mut items, &mut SplitMix64::new(3));
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
