//! Exact denoisers for Gaussian-mixture data, in closed form.
//!
//! For scalar data x0 ~ Σ_k π_k·N(m_k, s_k²) on a path x = α·x0 + σ·ε, the
//! posterior mean is E[x0 | x] = Σ_k w_k(x)·(m_k + α·s_k²/(α²s_k² + σ²)·(x − α·m_k))
//! with w_k ∝ π_k·N(x; α·m_k, α²s_k² + σ²). Applied elementwise it is the
//! ideal denoiser, so samplers, parameterisations and guidance can be checked
//! against exact answers; as a [`Network`] it also stands in for a trained
//! model in end-to-end graphs.

use candle_core::{Result, Tensor};

use super::guidance::NoisyClassifier;
use super::model::{ModelSampling, Network, Path};
use super::samplers::Denoiser;
use crate::Conditioning;

/// One-dimensional Gaussian-mixture data, applied to every tensor element.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    pub weights: Vec<f64>,
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
}

impl GaussianMixture {
    pub fn single(mean: f64, std: f64) -> Self {
        GaussianMixture {
            weights: vec![1.0],
            means: vec![mean],
            stds: vec![std],
        }
    }

    /// Mean and variance of the data (or of one component).
    pub fn moments(&self, component: Option<usize>) -> (f64, f64) {
        match component {
            Some(k) => (self.means[k], self.stds[k].powi(2)),
            None => {
                let total: f64 = self.weights.iter().sum();
                let mean = self
                    .weights
                    .iter()
                    .zip(&self.means)
                    .map(|(w, m)| w * m)
                    .sum::<f64>()
                    / total;
                let second = (0..self.weights.len())
                    .map(|k| self.weights[k] * (self.stds[k].powi(2) + self.means[k].powi(2)))
                    .sum::<f64>()
                    / total;
                (mean, second - mean * mean)
            }
        }
    }

    /// E[x0 | x] for scalar x at noise level σ on `path`, optionally given
    /// the component (the class label).
    pub fn posterior_mean(&self, x: f64, sigma: f64, path: Path, component: Option<usize>) -> f64 {
        let alpha = path.alpha(sigma);
        let ks: Vec<usize> = match component {
            Some(k) => vec![k],
            None => (0..self.weights.len()).collect(),
        };
        let mut log_w = Vec::with_capacity(ks.len());
        let mut means = Vec::with_capacity(ks.len());
        for &k in &ks {
            let (m, s2) = (self.means[k], self.stds[k].powi(2));
            let var = alpha * alpha * s2 + sigma * sigma;
            let r = x - alpha * m;
            log_w.push(self.weights[k].ln() - 0.5 * var.ln() - 0.5 * r * r / var);
            means.push(m + alpha * s2 / var * r);
        }
        let max = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = log_w.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = w.iter().sum();
        w.iter().zip(&means).map(|(w, m)| w * m).sum::<f64>() / total
    }

    /// Applies the posterior mean to every element; item `b` of the batch
    /// uses `labels[b]` (None: the whole mixture).
    pub fn denoise(
        &self,
        x: &Tensor,
        sigma: f64,
        path: Path,
        labels: &[Option<usize>],
    ) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let mut items = Vec::with_capacity(batch);
        for b in 0..batch {
            let label = labels.get(b).copied().flatten();
            let xs: Vec<f32> = x
                .get(b)?
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?;
            let ds: Vec<f32> = xs
                .iter()
                .map(|&v| self.posterior_mean(v as f64, sigma, path, label) as f32)
                .collect();
            items.push(Tensor::from_vec(ds, x.get(b)?.dims(), x.device())?);
        }
        Tensor::stack(&items, 0)?.to_dtype(x.dtype())
    }
}

/// The exact class posterior: with every element of an item drawn from
/// component k, log p(k | x_s) is ln π_k + Σ log N(x_s; (1−s)·m_k, (1−s)²s_k² + s²)
/// up to a constant. Written in tensor ops so autograd gives its gradient.
impl NoisyClassifier for GaussianMixture {
    fn logits(&self, x_s: &Tensor, s: f64) -> Result<Tensor> {
        let batch = x_s.dim(0)?;
        let flat = x_s.reshape((batch, ()))?;
        let n = flat.dim(1)? as f64;
        let alpha = 1.0 - s;
        let mut columns = Vec::with_capacity(self.weights.len());
        for k in 0..self.weights.len() {
            let var = alpha * alpha * self.stds[k].powi(2) + s * s;
            let sq = flat
                .affine(1.0, -alpha * self.means[k])?
                .sqr()?
                .sum_keepdim(1)?;
            columns.push(sq.affine(-0.5 / var, self.weights[k].ln() - 0.5 * n * var.ln())?);
        }
        Tensor::cat(&columns, 1)
    }
}

/// The exact unconditional denoiser as a [`Denoiser`].
#[derive(Clone, Debug)]
pub struct ExactDenoiser {
    pub data: GaussianMixture,
    pub path: Path,
    pub label: Option<usize>,
}

impl Denoiser for ExactDenoiser {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let batch = x.dim(0)?;
        self.data
            .denoise(x, sigma, self.path, &vec![self.label; batch])
    }

    fn path(&self) -> Path {
        self.path
    }
}

/// The exact denoiser dressed as a network with a given parameterisation:
/// it recovers σ from the timestep, computes E[x0|x] and answers in the
/// model's prediction type. Class label k selects mixture component k.
#[derive(Clone, Debug)]
pub struct ExactNetwork {
    pub data: GaussianMixture,
    pub sampling: ModelSampling,
}

impl Network for ExactNetwork {
    fn forward(&self, x_in: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let ts: Vec<f32> = timesteps.to_vec1()?;
        let batch = x_in.dim(0)?;
        let mut out = Vec::with_capacity(batch);
        for (b, t) in ts.iter().enumerate().take(batch) {
            let sigma = self.sampling.sigma_at(*t as f64);
            let item = x_in.narrow(0, b, 1)?;
            let x = item.affine(1.0 / self.sampling.input_scale(sigma), 0.0)?;
            let label = cond
                .labels
                .as_ref()
                .and_then(|l| l.get(b).copied().flatten())
                .map(|l| l as usize);
            let d = self
                .data
                .denoise(&x, sigma, self.sampling.path(), &[label])?;
            out.push(self.sampling.prediction_from_denoised(sigma, &x, &d)?);
        }
        Tensor::cat(&out, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_gaussian_posterior_matches_the_textbook_formula() {
        let data = GaussianMixture::single(2.0, 0.5);
        // Diffusion: E[x0|x] = m + s²/(s²+σ²)(x − m).
        let got = data.posterior_mean(3.0, 1.0, Path::Diffusion, None);
        assert!((got - (2.0 + 0.25 / 1.25 * 1.0)).abs() < 1e-12);
        // At σ → 0 the denoiser is the identity; at large σ it is the mean.
        assert!((data.posterior_mean(3.0, 1e-6, Path::Diffusion, None) - 3.0).abs() < 1e-6);
        assert!((data.posterior_mean(3.0, 1e6, Path::Diffusion, None) - 2.0).abs() < 1e-6);
        // Flow at σ = 1 sees pure noise: the answer is the mean.
        assert!((data.posterior_mean(0.3, 1.0, Path::Flow, None) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn mixture_moments() {
        let data = GaussianMixture {
            weights: vec![1.0, 3.0],
            means: vec![-2.0, 2.0],
            stds: vec![0.5, 0.5],
        };
        let (m, v) = data.moments(None);
        assert!((m - 1.0).abs() < 1e-12);
        assert!((v - (0.25 + 4.0 - 1.0)).abs() < 1e-12);
    }
}
