//! Every random draw of training, taken from weft's seeded [`Gaussian`]
//! streams and addressed by *what it is for*, never by how many draws came
//! before it.
//!
//! Each sample of the run (global index `k = step·batch + i`) owns one stream,
//! and each epoch's shuffle owns another. A draw is thus a pure function of
//! (seed, step, item), so resuming needs only the step count: there is no
//! generator position to save, and no way for a resumed run to drift from an
//! uninterrupted one.

use weft_sampling::Gaussian;

/// Stream-number regions, far apart so no two purposes can share a stream.
const SAMPLE_STREAMS: u64 = 0;
const SHUFFLE_STREAMS: u64 = 1 << 62;
const INIT_STREAMS: u64 = 1 << 63;

/// Uniform draws derived from a Gaussian stream.
pub struct Draws(Gaussian);

impl Draws {
    /// The stream of sample `k` (its σ or t, its label dropout, its noise).
    pub fn sample(seed: u64, k: u64) -> Self {
        Draws(Gaussian::new(seed, SAMPLE_STREAMS + k))
    }

    /// The stream that orders epoch `epoch`.
    pub fn shuffle(seed: u64, epoch: u64) -> Self {
        Draws(Gaussian::new(seed, SHUFFLE_STREAMS + epoch))
    }

    /// The stream that initialises the parameter whose name hashes to `key`.
    pub fn init(seed: u64, key: u64) -> Self {
        Draws(Gaussian::new(seed, INIT_STREAMS | (key >> 1)))
    }

    pub fn normal(&mut self) -> f64 {
        self.0.draw()
    }

    /// A uniform draw in [0, 1): the angle of a pair of independent standard
    /// normals is uniform because their joint density is rotation invariant,
    /// so this is exact with no inverse-CDF approximation.
    pub fn uniform(&mut self) -> f64 {
        let (a, b) = (self.0.draw(), self.0.draw());
        let u = b.atan2(a) / std::f64::consts::TAU + 0.5;
        if u >= 1.0 {
            0.0
        } else {
            u
        }
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        self.0.fill(n)
    }
}

/// A permutation of `0..n` for epoch `epoch` (Fisher–Yates).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut d = Draws::shuffle(seed, epoch);
    for i in (1..n).rev() {
        let j = d.below(i + 1);
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_uniform() {
        let mut d = Draws::sample(3, 0);
        let n = 100_000;
        let mut bins = [0usize; 10];
        for _ in 0..n {
            let u = d.uniform();
            assert!((0.0..1.0).contains(&u));
            bins[(u * 10.0) as usize] += 1;
        }
        for b in bins {
            assert!((b as f64 / n as f64 - 0.1).abs() < 0.005, "{bins:?}");
        }
    }

    #[test]
    fn epochs_are_permutations_that_differ() {
        let a = epoch_order(1, 0, 100);
        let b = epoch_order(1, 1, 100);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<u32>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(1, 0, 100));
    }
}
