//! Seeded Gaussian noise, generated on the CPU so a seed gives the same
//! image on any device and any thread count.
//!
//! Each batch item draws from its own ChaCha8 stream (`seed`, stream = item
//! index), so item 0 of a batch of 4 equals a batch of 1 with the same seed.
//! Normals come from the Box–Muller transform written out here, so the values
//! cannot change with a dependency's sampling algorithm.

use candle_core::{Device, Result, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// A stream of standard normal draws.
pub struct Gaussian {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Gaussian {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Gaussian { rng, spare: None }
    }

    /// A uniform draw in the open interval (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn draw(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * sin);
        r * cos
    }

    pub fn fill(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.draw() as f32).collect()
    }
}

/// Standard normal noise of `shape` (batch first), item `i` seeded by `(seed, i)`.
pub fn seeded_noise(seed: u64, shape: &[usize]) -> Result<Tensor> {
    let batch = shape.first().copied().unwrap_or(1);
    let per_item: usize = shape.iter().skip(1).product();
    let mut data = Vec::with_capacity(batch * per_item);
    for item in 0..batch {
        data.extend(Gaussian::new(seed, item as u64).fill(per_item));
    }
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Where a stochastic sampler's fresh noise comes from, one draw per call.
pub trait NoiseSource: Send {
    fn sample(&mut self, like: &Tensor) -> Result<Tensor>;
}

/// Step noise for stochastic samplers: seeded per batch item, deterministic.
pub struct SeededSteps {
    seed: u64,
    streams: Vec<Gaussian>,
}

/// Step-noise streams start here, far from the initial noise's streams.
const STEP_STREAMS: u64 = 1 << 32;

impl SeededSteps {
    /// Streams distinct from the initial noise's, so step noise is independent of it.
    pub fn new(seed: u64) -> Self {
        SeededSteps {
            seed,
            streams: Vec::new(),
        }
    }
}

impl NoiseSource for SeededSteps {
    fn sample(&mut self, like: &Tensor) -> Result<Tensor> {
        let dims = like.dims();
        let batch = dims.first().copied().unwrap_or(1);
        let per_item: usize = dims.iter().skip(1).product();
        while self.streams.len() < batch {
            let item = self.streams.len() as u64;
            self.streams
                .push(Gaussian::new(self.seed, STEP_STREAMS + item));
        }
        let mut data = Vec::with_capacity(batch * per_item);
        for stream in &mut self.streams[..batch] {
            data.extend(stream.fill(per_item));
        }
        Tensor::from_vec(data, dims, like.device())?.to_dtype(like.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_normal_moments() {
        let mut g = Gaussian::new(7, 0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| g.draw()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / var.powi(2);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    }

    #[test]
    fn batch_items_are_independent_of_batch_size() {
        let one = seeded_noise(42, &[1, 2, 3]).unwrap();
        let four = seeded_noise(42, &[4, 2, 3]).unwrap();
        let first: Vec<f32> = four
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(one.flatten_all().unwrap().to_vec1::<f32>().unwrap(), first);
        let second: Vec<f32> = four
            .get(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(first, second);
        let again = seeded_noise(42, &[4, 2, 3]).unwrap();
        assert_eq!(
            four.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            again.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
