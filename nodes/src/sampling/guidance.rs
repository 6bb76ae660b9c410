//! Guidance rules: how conditional and unconditional predictions combine.
//!
//! Classifier-free guidance is written two ways in the literature; weft
//! accepts both and maps them onto one scale s in `D = D(∅) + s·(D(y) − D(∅))`:
//!
//! | convention | formula | no guidance at | s |
//! |---|---|---|---|
//! | `interpolate` (ComfyUI, diffusers) | (1−w)·u(∅) + w·u(y) | w = 1 | w |
//! | `extrapolate` (Ho & Salimans) | (1+w)·ε(y) − w·ε(∅) | w = 0 | 1 + w |
//!
//! Guidance is linear in the model's output, so combining denoised estimates
//! equals combining ε, v or velocity predictions. Rescaling rules are not
//! linear; they run in the model's own prediction space, as diffusers does.

use std::sync::Arc;

use candle_core::{Result, Tensor, D};

use super::model::{Conditioning, Model, Path};
use super::samplers::Denoiser;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfgConvention {
    Interpolate,
    Extrapolate,
}

impl CfgConvention {
    pub const NAMES: [&'static str; 2] = ["interpolate", "extrapolate"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "interpolate" => Some(CfgConvention::Interpolate),
            "extrapolate" => Some(CfgConvention::Extrapolate),
            _ => None,
        }
    }

    /// The interpolation scale s for a user's `w` in this convention.
    pub fn scale(self, w: f64) -> f64 {
        match self {
            CfgConvention::Interpolate => w,
            CfgConvention::Extrapolate => 1.0 + w,
        }
    }
}

/// Classifier-free guidance with its common refinements.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub model: Arc<Model>,
    pub positive: Conditioning,
    pub negative: Conditioning,
    /// Interpolation scale s (1 = unguided).
    pub scale: f64,
    /// guidance_rescale φ (Lin et al. 2023): blend towards the guided
    /// prediction rescaled to the conditional prediction's standard deviation.
    pub rescale: f64,
    /// Scale the guided prediction to the conditional prediction's norm.
    pub norm_rescale: bool,
    /// Guide only while σ is within `[low, high]`; outside, the conditional
    /// prediction alone is used (and the unconditional pass is skipped).
    pub interval: Option<(f64, f64)>,
}

impl Cfg {
    fn active(&self, sigma: f64) -> bool {
        self.scale != 1.0
            && self
                .interval
                .is_none_or(|(lo, hi)| sigma >= lo && sigma <= hi)
    }
}

/// Per-item reduction over every dimension but the batch.
fn per_item(t: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let batch = t.dim(0)?;
    f(&t.reshape((batch, ()))?)
}

fn std_per_item(t: &Tensor) -> Result<Tensor> {
    per_item(t, |flat| {
        let mean = flat.mean_keepdim(D::Minus1)?;
        flat.broadcast_sub(&mean)?
            .sqr()?
            .mean_keepdim(D::Minus1)?
            .sqrt()
    })
}

fn norm_per_item(t: &Tensor) -> Result<Tensor> {
    per_item(t, |flat| flat.sqr()?.sum_keepdim(D::Minus1)?.sqrt())
}

/// `t` multiplied per batch item by `factor` (shape `[batch, 1]`).
fn scale_items(t: &Tensor, factor: &Tensor) -> Result<Tensor> {
    let batch = t.dim(0)?;
    t.reshape((batch, ()))?
        .broadcast_mul(factor)?
        .reshape(t.dims())
}

impl Denoiser for Cfg {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let sampling = &self.model.sampling;
        let batch = x.dim(0)?;
        if !self.active(sigma) {
            let out = self.model.predict(x, sigma, &self.positive)?;
            return sampling.denoised(sigma, x, &out);
        }
        // One batched forward for the conditional and unconditional passes.
        let both = Tensor::cat(&[x, x], 0)?;
        let cond = self
            .positive
            .for_batch(batch)?
            .concat(&self.negative.for_batch(batch)?)?;
        let out = self.model.predict(&both, sigma, &cond)?;
        let (pos, neg) = (out.narrow(0, 0, batch)?, out.narrow(0, batch, batch)?);
        let mut guided = (&neg + (&pos - &neg)?.affine(self.scale, 0.0)?)?;
        if self.rescale > 0.0 {
            let ratio = std_per_item(&pos)?
                .broadcast_div(&std_per_item(&guided)?.clamp(1e-12, f64::MAX)?)?;
            let rescaled = scale_items(&guided, &ratio)?;
            guided =
                (rescaled.affine(self.rescale, 0.0)? + guided.affine(1.0 - self.rescale, 0.0)?)?;
        }
        if self.norm_rescale {
            let ratio = norm_per_item(&pos)?
                .broadcast_div(&norm_per_item(&guided)?.clamp(1e-12, f64::MAX)?)?;
            guided = scale_items(&guided, &ratio)?;
        }
        sampling.denoised(sigma, x, &guided)
    }

    fn path(&self) -> Path {
        self.model.sampling.path()
    }
}

/// No guidance: the model under one conditioning.
#[derive(Clone, Debug)]
pub struct Unguided {
    pub model: Arc<Model>,
    pub conditioning: Conditioning,
}

impl Denoiser for Unguided {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let out = self.model.predict(x, sigma, &self.conditioning)?;
        self.model.sampling.denoised(sigma, x, &out)
    }

    fn path(&self) -> Path {
        self.model.sampling.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::exact::{ExactNetwork, GaussianMixture};
    use crate::sampling::model::ModelSampling;
    use candle_core::Device;
    use weft_core::LatentSpace;

    fn model(sampling: ModelSampling) -> Arc<Model> {
        let data = GaussianMixture {
            weights: vec![1.0, 1.0],
            means: vec![-2.0, 2.0],
            stds: vec![0.5, 0.5],
        };
        Arc::new(Model {
            network: Arc::new(ExactNetwork {
                data,
                sampling: sampling.clone(),
            }),
            sampling,
            latent_space: LatentSpace::pixels(),
            latent_channels: None,
        })
    }

    fn cfg(model: Arc<Model>, scale: f64) -> Cfg {
        Cfg {
            model,
            positive: Conditioning::labels(vec![Some(1)]),
            negative: Conditioning::labels(vec![None]),
            scale,
            rescale: 0.0,
            norm_rescale: false,
            interval: None,
        }
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn conventions_map_onto_one_scale() {
        assert_eq!(CfgConvention::Interpolate.scale(1.0), 1.0);
        assert_eq!(CfgConvention::Extrapolate.scale(0.0), 1.0);
        assert_eq!(
            CfgConvention::Extrapolate.scale(6.5),
            CfgConvention::Interpolate.scale(7.5)
        );
    }

    /// Guidance extrapolates the exact conditional and unconditional
    /// denoisers, for every parameterisation: D = D∅ + s·(Dy − D∅).
    #[test]
    fn guided_estimate_is_the_closed_form_combination() {
        let betas =
            crate::sampling::schedule::betas("scaled_linear", 1000, 0.00085, 0.012).unwrap();
        let ac = crate::sampling::schedule::alphas_cumprod(&betas);
        let x = Tensor::new(&[[0.3f32, -1.0, 2.5]], &Device::Cpu).unwrap();
        for sampling in [
            ModelSampling::discrete(&ac, crate::sampling::Prediction::Epsilon),
            ModelSampling::discrete(&ac, crate::sampling::Prediction::V),
            ModelSampling::flow(1000.0),
        ] {
            let sigma = if sampling.path() == Path::Flow {
                0.6
            } else {
                1.3
            };
            let m = model(sampling);
            let data = GaussianMixture {
                weights: vec![1.0, 1.0],
                means: vec![-2.0, 2.0],
                stds: vec![0.5, 0.5],
            };
            let path = m.sampling.path();
            let d = vals(&cfg(m, 4.0).denoise(&x, sigma).unwrap());
            for (i, xv) in [0.3f64, -1.0, 2.5].iter().enumerate() {
                let dy = data.posterior_mean(*xv, sigma, path, Some(1));
                let du = data.posterior_mean(*xv, sigma, path, None);
                let want = du + 4.0 * (dy - du);
                assert!(
                    (d[i] as f64 - want).abs() < 2e-3,
                    "{path:?}: {} vs {want}",
                    d[i]
                );
            }
        }
    }

    #[test]
    fn rescale_and_interval() {
        let m = model(ModelSampling::flow(1000.0));
        let x = Tensor::new(&[[0.3f32, -1.0, 2.5, 0.1]], &Device::Cpu).unwrap();
        let plain = cfg(m.clone(), 5.0);
        let cond_only = Unguided {
            model: m.clone(),
            conditioning: Conditioning::labels(vec![Some(1)]),
        };
        // Outside the interval the result is exactly the conditional one.
        let outside = Cfg {
            interval: Some((0.0, 0.5)),
            ..plain.clone()
        };
        assert_eq!(
            vals(&outside.denoise(&x, 0.8).unwrap()),
            vals(&cond_only.denoise(&x, 0.8).unwrap())
        );
        assert_ne!(
            vals(&outside.denoise(&x, 0.4).unwrap()),
            vals(&cond_only.denoise(&x, 0.4).unwrap())
        );
        // Full rescale gives a prediction with the conditional's std.
        let sigma = 0.7;
        let rescaled = Cfg {
            rescale: 1.0,
            ..plain.clone()
        }
        .denoise(&x, sigma)
        .unwrap();
        let pred = |d: &Tensor| m.sampling.prediction_from_denoised(sigma, &x, d).unwrap();
        let std = |t: &Tensor| vals(&std_per_item(t).unwrap())[0];
        let cond_pred = pred(&cond_only.denoise(&x, sigma).unwrap());
        assert!((std(&pred(&rescaled)) - std(&cond_pred)).abs() < 1e-4);
        assert!((std(&pred(&plain.denoise(&x, sigma).unwrap())) - std(&cond_pred)).abs() > 1e-2);
        // Norm rescale matches the conditional prediction's norm.
        let normed = Cfg {
            norm_rescale: true,
            ..plain
        }
        .denoise(&x, sigma)
        .unwrap();
        let norm = |t: &Tensor| vals(&norm_per_item(t).unwrap())[0];
        assert!((norm(&pred(&normed)) - norm(&cond_pred)).abs() < 1e-4);
    }
}
