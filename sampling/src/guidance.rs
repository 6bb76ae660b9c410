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

use super::model::{Model, Path};
use super::samplers::Denoiser;
use crate::Conditioning;

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
    /// `guided` moved away from the skipped network's conditional
    /// prediction by the model's skip-layer guidance, where it applies.
    fn skip_layer_guidance(
        &self,
        x: &Tensor,
        sigma: f64,
        pos: &Tensor,
        guided: Tensor,
    ) -> Result<Tensor> {
        let Some(slg) = &self.model.skip_layer_guidance else {
            return Ok(guided);
        };
        let (low, high) = slg.sigmas;
        if slg.scale == 0.0 || sigma < low || sigma > high {
            return Ok(guided);
        }
        let skipped = Model {
            network: slg.skipped.clone(),
            skip_layer_guidance: None,
            ..(*self.model).clone()
        };
        let slg_pred = skipped.predict(x, sigma, &self.positive)?;
        guided + (pos - slg_pred)?.affine(slg.scale, 0.0)?
    }

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
            let out = self.skip_layer_guidance(x, sigma, &out, out.clone())?;
            return sampling.denoised(sigma, x, &out);
        }
        let negative = self.negative.clone().as_negative()?;
        let (pos, neg) = if self.positive.is_plain() && negative.is_plain() {
            // One batched forward for the conditional and unconditional passes.
            let both = Tensor::cat(&[x, x], 0)?;
            let cond = self
                .positive
                .for_batch(batch)?
                .concat(&negative.for_batch(batch)?)?;
            let out = self.model.predict(&both, sigma, &cond)?;
            (out.narrow(0, 0, batch)?, out.narrow(0, batch, batch)?)
        } else {
            // Entries with areas, masks or timestep ranges: each side composed.
            (
                self.model.predict(x, sigma, &self.positive)?,
                self.model.predict(x, sigma, &negative)?,
            )
        };
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
        let guided = self.skip_layer_guidance(x, sigma, &pos, guided)?;
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

/// A classifier of noisy images for classifier guidance. Inputs are in
/// flow-path coordinates x_s = (1−s)·x0 + s·ε (see `models::classifier`), and
/// the logits must be differentiable in `x_s` with candle's autograd.
pub trait NoisyClassifier: Send + Sync + std::fmt::Debug {
    /// Logits `[B, classes]` for `x_s` at flow level `s`.
    fn logits(&self, x_s: &Tensor, s: f64) -> Result<Tensor>;
}

/// Below this signal coefficient α the guidance factor σ²/α is capped: on a
/// flow path α → 0 at σ = 1, where the factor would be infinite.
const MIN_ALPHA: f64 = 0.05;

/// Classifier guidance (Dhariwal & Nichol): the score gains
/// `scale·∇ₓ log p(y | x_σ)`. With `x_σ = α·x0 + σ·ε` the score is
/// `(α·D − x)/σ²`, so the denoised estimate moves by `scale·σ²/α·∇`. With the
/// exact classifier of the data and the unconditional model this equals
/// classifier-free guidance at the same scale, which the tests check.
#[derive(Clone, Debug)]
pub struct ClassifierGuided {
    pub model: Arc<Model>,
    /// The model's own conditioning (∅ for the textbook unconditional model).
    pub conditioning: Conditioning,
    pub classifier: Arc<dyn NoisyClassifier>,
    /// The class each batch item is steered towards (one broadcasts).
    pub labels: Vec<u32>,
    pub scale: f64,
}

impl ClassifierGuided {
    /// ∇ₓ Σ_b log p(y_b | x_b) at noise level σ on the model's path.
    pub fn log_prob_grad(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let labels = match self.labels.len() {
            1 => vec![self.labels[0]; batch],
            n if n == batch => self.labels.clone(),
            n => candle_core::bail!("classifier guidance has {n} labels for a batch of {batch}"),
        };
        // A diffusion state x0 + σε is (1+σ)·x_s at the flow level with the same SNR.
        let (s, shrink) = match self.model.sampling.path() {
            Path::Flow => (sigma, 1.0),
            Path::Diffusion => (sigma / (1.0 + sigma), 1.0 / (1.0 + sigma)),
        };
        let var = candle_core::Var::from_tensor(&x.detach().to_dtype(candle_core::DType::F32)?)?;
        let logits = self
            .classifier
            .logits(&var.as_tensor().affine(shrink, 0.0)?, s)?;
        // log softmax, shifted by the row maximum so exp cannot overflow.
        let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?;
        let log_p = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
        let y = Tensor::new(labels, x.device())?.unsqueeze(1)?;
        let grads = log_p.gather(&y, 1)?.sum_all()?.backward()?;
        match grads.get(var.as_tensor()) {
            Some(g) => g.to_dtype(x.dtype()),
            None => Tensor::zeros_like(x),
        }
    }
}

impl Denoiser for ClassifierGuided {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let sampling = &self.model.sampling;
        let out = self.model.predict(x, sigma, &self.conditioning)?;
        let denoised = sampling.denoised(sigma, x, &out)?;
        if self.scale == 0.0 || sigma <= 0.0 {
            return Ok(denoised);
        }
        let alpha = sampling.path().alpha(sigma).max(MIN_ALPHA);
        let grad = self.log_prob_grad(x, sigma)?;
        denoised + grad.affine(self.scale * sigma * sigma / alpha, 0.0)?
    }

    fn path(&self) -> Path {
        self.model.sampling.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::{ExactNetwork, GaussianMixture};
    use crate::model::ModelSampling;
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
            latent_format: Default::default(),
            differential_diffusion: false,
            skip_layer_guidance: None,
            wrappers: Default::default(),
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
        let betas = crate::schedule::betas("scaled_linear", 1000, 0.00085, 0.012).unwrap();
        let ac = crate::schedule::alphas_cumprod(&betas);
        let x = Tensor::new(&[[0.3f32, -1.0, 2.5]], &Device::Cpu).unwrap();
        for sampling in [
            ModelSampling::discrete(&ac, crate::Prediction::Epsilon),
            ModelSampling::discrete(&ac, crate::Prediction::V),
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

    /// With the exact classifier and the unconditional model, classifier
    /// guidance at scale γ is classifier-free guidance at scale γ, on both
    /// paths (the gradient comes from candle's autograd, the CFG side from
    /// closed-form posterior means).
    #[test]
    fn exact_classifier_guidance_equals_cfg() {
        let betas = crate::schedule::betas("scaled_linear", 1000, 0.00085, 0.012).unwrap();
        let ac = crate::schedule::alphas_cumprod(&betas);
        let data = GaussianMixture {
            weights: vec![1.0, 3.0],
            means: vec![-2.0, 2.0],
            stds: vec![0.5, 0.8],
        };
        let xs = [0.3f32, -1.0, 2.5];
        let x = Tensor::new(&[[xs[0]], [xs[1]], [xs[2]]], &Device::Cpu).unwrap();
        for (sampling, sigma) in [
            (
                ModelSampling::discrete(&ac, crate::Prediction::Epsilon),
                1.3,
            ),
            (ModelSampling::flow(1000.0), 0.6),
        ] {
            let path = sampling.path();
            let m = Arc::new(Model {
                network: Arc::new(ExactNetwork {
                    data: data.clone(),
                    sampling: sampling.clone(),
                }),
                sampling,
                latent_space: LatentSpace::pixels(),
                latent_format: Default::default(),
                differential_diffusion: false,
                skip_layer_guidance: None,
                wrappers: Default::default(),
                latent_channels: None,
            });
            let guided = ClassifierGuided {
                model: m,
                conditioning: Conditioning::labels(vec![None]),
                classifier: Arc::new(data.clone()),
                labels: vec![0, 1, 0],
                scale: 4.0,
            };
            let d = vals(&guided.denoise(&x, sigma).unwrap());
            for (i, (xv, y)) in xs.iter().zip([0, 1, 0]).enumerate() {
                let dy = data.posterior_mean(*xv as f64, sigma, path, Some(y));
                let du = data.posterior_mean(*xv as f64, sigma, path, None);
                let want = du + 4.0 * (dy - du);
                assert!(
                    (d[i] as f64 - want).abs() < 2e-3,
                    "{path:?} item {i}: {} vs {want}",
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
