//! Models behind one abstraction: how a network's output and timestep relate
//! to the noise level σ, for every parameterisation and both path families.
//!
//! Noise levels use k-diffusion's σ. Diffusion (VP or VE) is written as
//! `x = x0 + σ·ε` (a VP sample is this divided by `sqrt(σ²+1)`); flow matching
//! uses the linear path `x = (1−σ)·x0 + σ·ε`, σ ∈ [0, 1]. Either way the
//! probability-flow ODE is `dx/dσ = (x − D(x, σ)) / σ`, with `D` the
//! denoised estimate, so every sampler works on both.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_core::{LatentSpace, Object};

use crate::Conditioning;

/// The Gaussian path a model was trained on: `x_σ = α(σ)·x0 + σ·ε`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// α = 1 (variance-exploding form; VP models are converted into it).
    Diffusion,
    /// α = 1 − σ (rectified flow / flow matching).
    Flow,
}

impl Path {
    pub fn alpha(self, sigma: f64) -> f64 {
        match self {
            Path::Diffusion => 1.0,
            Path::Flow => 1.0 - sigma,
        }
    }

    /// `x_σ = α·latent + σ·noise`: how a clean latent is noised to level σ.
    pub fn noise(self, sigma: f64, noise: &Tensor, latent: &Tensor) -> Result<Tensor> {
        latent.affine(self.alpha(sigma), 0.0)? + noise.affine(sigma, 0.0)?
    }

    /// Half log signal-to-noise ratio λ = ln(α/σ), the time variable of
    /// DPM-Solver; +∞ at σ = 0, −∞ where α = 0.
    pub fn lambda(self, sigma: f64) -> f64 {
        (self.alpha(sigma) / sigma).ln()
    }
}

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// ε, the noise (DDPM, SD 1.x).
    Epsilon,
    /// v = α·ε − σ_vp·x0 (SD 2.x 768-v).
    V,
    /// x0 itself.
    Sample,
    /// Flow velocity ε − x0 (SD3, Flux, weft's MNIST flow model).
    Velocity,
    /// ε, with latent-consistency distillation's boundary condition:
    /// D = c_out·(x − σ·ε) + c_skip·x, so D → x as the timestep → 0
    /// (ComfyUI's `lcm` model sampling, σ_data = 0.5, timestep scale 10).
    Lcm,
}

impl Prediction {
    pub fn parse(name: &str) -> Option<Prediction> {
        Some(match name {
            "epsilon" | "eps" => Prediction::Epsilon,
            "v_prediction" | "v" => Prediction::V,
            "sample" | "x0" => Prediction::Sample,
            "flow" | "velocity" => Prediction::Velocity,
            "lcm" => Prediction::Lcm,
            _ => return None,
        })
    }
}

/// How σ maps to the network's timestep input.
#[derive(Clone, Debug, PartialEq)]
pub enum NoiseLevels {
    /// A discrete-time diffusion model: `sigmas[t] = sqrt((1−ᾱ_t)/ᾱ_t)`, t = 0..N.
    Discrete { sigmas: Vec<f64> },
    /// A flow model: timestep = σ·multiplier (1000 for SD3, 1 for Flux);
    /// `shift` bends the σ grid schedulers pick from.
    Flow { multiplier: f64, shift: FlowShift },
}

/// How a flow model's σ grid is shifted towards high noise (ComfyUI's
/// `ModelSamplingSD3` and `ModelSamplingFlux`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlowShift {
    /// SD3's σ' = s·σ / (1 + (s − 1)·σ); s = 1 is no shift.
    Sd3(f64),
    /// Flux's σ' = e^μ / (e^μ + 1/σ − 1), with μ from the image size.
    Flux(f64),
}

impl FlowShift {
    /// Levels of ComfyUI's σ grid for the model: 1000 for SD3, 10000 for Flux.
    pub fn grid(self) -> usize {
        match self {
            FlowShift::Sd3(_) => 1000,
            FlowShift::Flux(_) => 10000,
        }
    }

    /// The shifted σ of an unshifted σ (time) in [0, 1].
    pub fn apply(self, sigma: f64) -> f64 {
        match self {
            FlowShift::Sd3(s) => s * sigma / (1.0 + (s - 1.0) * sigma),
            FlowShift::Flux(_) if sigma <= 0.0 => 0.0,
            FlowShift::Flux(mu) => mu.exp() / (mu.exp() + (1.0 / sigma - 1.0)),
        }
    }
}

/// A model's noise parameterisation: everything a sampler needs besides the network.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSampling {
    pub prediction: Prediction,
    pub levels: NoiseLevels,
    /// Set when the discrete table is a distilled subset (LCM's 50 of 1000
    /// levels): level i is training timestep i·stride + stride − 1, and σ
    /// maps to the nearest level, not between levels, as the distilled
    /// model was only trained there.
    pub distilled_stride: Option<usize>,
    /// The model's own σ table, kept when a patch (`ModelSamplingDiscrete`)
    /// replaced `levels`, so a later patch starts from it as ComfyUI's
    /// starts from the model's config.
    pub training_sigmas: Option<Arc<[f64]>>,
}

impl ModelSampling {
    /// From a training schedule's ᾱ_t.
    pub fn discrete(alphas_cumprod: &[f64], prediction: Prediction) -> Self {
        let sigmas = alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect();
        ModelSampling {
            prediction,
            levels: NoiseLevels::Discrete { sigmas },
            distilled_stride: None,
            training_sigmas: None,
        }
    }

    /// This discrete schedule rescaled to zero terminal SNR, as the
    /// checkpoints marked `ztsnr` (NoobAI-style v-prediction fine-tunes)
    /// were trained (ComfyUI's `zsnr`).
    pub fn zero_terminal_snr(mut self) -> std::result::Result<Self, String> {
        let NoiseLevels::Discrete { sigmas } = &self.levels else {
            return Err("a flow-matching model has no discrete schedule to rescale".into());
        };
        let table = crate::schedule::rescale_zero_terminal_snr_sigmas(sigmas)?;
        self.training_sigmas
            .get_or_insert_with(|| Arc::from(sigmas.as_slice()));
        self.levels = NoiseLevels::Discrete { sigmas: table };
        Ok(self)
    }

    /// A flow model without a shift.
    pub fn flow(multiplier: f64) -> Self {
        Self::flow_shifted(multiplier, FlowShift::Sd3(1.0))
    }

    pub fn flow_shifted(multiplier: f64, shift: FlowShift) -> Self {
        ModelSampling {
            prediction: Prediction::Velocity,
            levels: NoiseLevels::Flow { multiplier, shift },
            distilled_stride: None,
            training_sigmas: None,
        }
    }

    /// `count` levels of a discrete table, every (len/count)-th counted down
    /// from the top: ComfyUI's `ModelSamplingDiscreteDistilled`, which keeps
    /// 50 of SD's 1000 (timesteps 19, 39, …, 999) for LCM. `None` for flow
    /// models and for tables with fewer than `count` levels.
    pub fn distilled(&self, count: usize) -> Option<Self> {
        let NoiseLevels::Discrete { sigmas } = &self.levels else {
            return None;
        };
        let stride = sigmas.len().checked_div(count).filter(|s| *s > 0)?;
        let mut levels: Vec<f64> = (0..count)
            .map(|x| sigmas[sigmas.len() - 1 - x * stride])
            .collect();
        levels.reverse();
        Some(ModelSampling {
            levels: NoiseLevels::Discrete { sigmas: levels },
            distilled_stride: Some(stride),
            ..self.clone()
        })
    }

    pub fn path(&self) -> Path {
        match self.levels {
            NoiseLevels::Discrete { .. } => Path::Diffusion,
            NoiseLevels::Flow { .. } => Path::Flow,
        }
    }

    pub fn sigma_min(&self) -> f64 {
        match &self.levels {
            NoiseLevels::Discrete { sigmas } => sigmas[0],
            NoiseLevels::Flow { .. } => 0.0,
        }
    }

    pub fn sigma_max(&self) -> f64 {
        match &self.levels {
            NoiseLevels::Discrete { sigmas } => *sigmas.last().expect("non-empty schedule"),
            NoiseLevels::Flow { .. } => 1.0,
        }
    }

    /// The network's timestep for σ (k-diffusion's log-σ interpolation for
    /// discrete models; the nearest level's timestep for distilled ones).
    pub fn timestep(&self, sigma: f64) -> f64 {
        match (&self.levels, self.distilled_stride) {
            (NoiseLevels::Flow { multiplier, .. }, _) => sigma * multiplier,
            (NoiseLevels::Discrete { sigmas }, Some(stride)) => {
                let stride = stride as f64;
                let log_sigma = sigma.max(1e-10).ln();
                // The first level at the least distance, as torch's argmin.
                let mut best = (0, f64::INFINITY);
                for (i, s) in sigmas.iter().enumerate() {
                    let d = (log_sigma - s.ln()).abs();
                    if d < best.1 {
                        best = (i, d);
                    }
                }
                best.0 as f64 * stride + stride - 1.0
            }
            (NoiseLevels::Discrete { sigmas }, None) => {
                let log_sigma = sigma.max(1e-10).ln();
                let n = sigmas.len();
                if n < 2 || log_sigma <= sigmas[0].ln() {
                    return 0.0;
                }
                if log_sigma >= sigmas[n - 1].ln() {
                    return (n - 1) as f64;
                }
                let hi = sigmas.partition_point(|s| s.ln() < log_sigma);
                let (l, h) = (sigmas[hi - 1].ln(), sigmas[hi].ln());
                (hi - 1) as f64 + (log_sigma - l) / (h - l)
            }
        }
    }

    /// σ at a (possibly fractional) timestep; the inverse of [`Self::timestep`].
    pub fn sigma_at(&self, t: f64) -> f64 {
        match &self.levels {
            NoiseLevels::Flow { multiplier, .. } => t / multiplier,
            NoiseLevels::Discrete { sigmas } => {
                let t = match self.distilled_stride {
                    Some(stride) => (t - (stride as f64 - 1.0)) / stride as f64,
                    None => t,
                };
                let t = t.clamp(0.0, (sigmas.len() - 1) as f64);
                let lo = t.floor() as usize;
                let hi = (lo + 1).min(sigmas.len() - 1);
                let w = t - lo as f64;
                ((1.0 - w) * sigmas[lo].ln() + w * sigmas[hi].ln()).exp()
            }
        }
    }

    /// The σ a fraction `p` of the way through sampling starts at
    /// (ComfyUI's `percent_to_sigma`): ∞ at 0, 0 at 1; the timestep
    /// (1 − p)·999 for diffusion models, 1 − p shifted for flow models.
    pub fn percent_to_sigma(&self, p: f64) -> f64 {
        if p <= 0.0 {
            return f64::INFINITY;
        }
        if p >= 1.0 {
            return 0.0;
        }
        match &self.levels {
            NoiseLevels::Flow { shift, .. } => shift.apply(1.0 - p),
            NoiseLevels::Discrete { .. } => self.sigma_at((1.0 - p) * 999.0),
        }
    }

    /// The factor applied to x before the network (1/sqrt(σ²+1) for diffusion).
    pub fn input_scale(&self, sigma: f64) -> f64 {
        match self.path() {
            Path::Diffusion => 1.0 / (sigma * sigma + 1.0).sqrt(),
            Path::Flow => 1.0,
        }
    }

    /// LCM's boundary-condition weights (c_skip, c_out) at σ, from the
    /// timestep the network sees, scaled by 10 (σ_data = 0.5).
    pub fn lcm_scalings(&self, sigma: f64) -> (f64, f64) {
        const SIGMA_DATA: f64 = 0.5;
        let t = self.timestep(sigma) * 10.0;
        let d2 = t * t + SIGMA_DATA * SIGMA_DATA;
        (SIGMA_DATA * SIGMA_DATA / d2, t / d2.sqrt())
    }

    /// D(x, σ): the clean estimate implied by the network's output.
    pub fn denoised(&self, sigma: f64, x: &Tensor, out: &Tensor) -> Result<Tensor> {
        match self.prediction {
            Prediction::Epsilon | Prediction::Velocity => x - out.affine(sigma, 0.0)?,
            Prediction::Sample => Ok(out.clone()),
            Prediction::V => {
                let s2 = sigma * sigma + 1.0;
                x.affine(1.0 / s2, 0.0)? - out.affine(sigma / s2.sqrt(), 0.0)?
            }
            Prediction::Lcm => {
                let (skip, c_out) = self.lcm_scalings(sigma);
                let x0 = (x - out.affine(sigma, 0.0)?)?;
                x0.affine(c_out, 0.0)? + x.affine(skip, 0.0)?
            }
        }
    }

    /// The inverse of [`Self::denoised`]: the network output that would give `d`.
    /// Guidance rules that work in the model's own prediction space use it.
    pub fn prediction_from_denoised(&self, sigma: f64, x: &Tensor, d: &Tensor) -> Result<Tensor> {
        match self.prediction {
            Prediction::Epsilon | Prediction::Velocity => (x - d)?.affine(1.0 / sigma, 0.0),
            Prediction::Sample => Ok(d.clone()),
            Prediction::V => {
                let s2 = sigma * sigma + 1.0;
                (x.affine(1.0 / s2, 0.0)? - d)?.affine(s2.sqrt() / sigma, 0.0)
            }
            Prediction::Lcm => {
                let (skip, c_out) = self.lcm_scalings(sigma);
                (x.affine(c_out + skip, 0.0)? - d)?.affine(1.0 / (c_out * sigma), 0.0)
            }
        }
    }
}

/// A denoising network: the part of a model that differs between checkpoints.
/// (`Any`, so nodes that patch a family's weights can reach its network.)
pub trait Network: std::any::Any + Send + Sync + std::fmt::Debug {
    /// One batched forward: `x` already multiplied by the input scale,
    /// `timesteps` one per batch item.
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor>;

    /// Bytes of weights, for the cache budget.
    fn size_bytes(&self) -> usize {
        0
    }

    /// The same network with `blocks` left out (skip-layer guidance), for
    /// networks made of numbered blocks; `None` otherwise.
    fn without_blocks(&self, _blocks: &[usize]) -> Option<Arc<dyn Network>> {
        None
    }

    /// Drops the resident pages of memory-mapped weights once a sampler is
    /// done with them: they stay in the page cache and fault back on the
    /// next use, and the VAE that decodes next gets the memory (Flux-dev on
    /// 24 GB). Networks holding their weights in RAM do nothing.
    fn release_pages(&self) {}

    /// The same network with `deltas` (weight name → a tensor shaped like
    /// the weight) added at `strength`: plugins' weight patches. `None` for
    /// networks that take none.
    fn with_deltas(
        &self,
        _deltas: &[(String, Tensor)],
        _strength: f64,
    ) -> Option<std::result::Result<Arc<dyn Network>, String>> {
        None
    }
}

/// How a model's network sees latents: `(latent − shift) · scale`.
/// Latents between nodes are the VAE's own (ComfyUI's convention); models
/// trained on rescaled latents (SD 1.x 0.18215, SDXL 0.13025) rescale them
/// only for sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentFormat {
    pub scale: f64,
    pub shift: f64,
    /// How a denoised estimate (in the network's scale) is shown cheaply.
    pub preview: LatentPreview,
}

impl Default for LatentFormat {
    /// Latents as they are (pixel-space models).
    fn default() -> Self {
        LatentFormat {
            scale: 1.0,
            shift: 0.0,
            preview: LatentPreview::Pixels,
        }
    }
}

/// How a family's latents are previewed while sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LatentPreview {
    /// No cheap picture is known.
    None,
    /// The latent is the image, in [-1, 1] (1 channel grey, 3 RGB).
    Pixels,
    /// A learned latent space: a linear projection to RGB, and the name of
    /// the family's tiny decoder (TAESD) when there is one.
    Latent {
        rgb: LatentRgb,
        /// The decoder's file-name stem in `vae_approx/` (ComfyUI's
        /// `taesd_decoder_name`: `taesd_decoder`, `taesdxl_decoder`).
        taesd: Option<&'static str>,
    },
}

/// A linear map from latent channels to RGB in [-1, 1] (ComfyUI's
/// `latent_rgb_factors` and `latent_rgb_factors_bias`): for a latent `z`
/// with channels c, `rgb[k] = Σ_c factors[c][k]·z[c] + bias[k]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentRgb {
    /// One row per latent channel: its weights for R, G and B.
    pub factors: &'static [[f32; 3]],
    pub bias: [f32; 3],
}

impl LatentRgb {
    /// The projection of a `[channels, h, w]` latent given as a flat slice,
    /// as `[3, h, w]` (unclamped, nominally in [-1, 1]).
    pub fn project(
        &self,
        latent: &[f32],
        channels: usize,
    ) -> std::result::Result<Vec<f32>, String> {
        if channels != self.factors.len() {
            return Err(format!(
                "the preview projection takes {}-channel latents, got {channels} channels",
                self.factors.len()
            ));
        }
        let plane = latent.len() / channels.max(1);
        let mut rgb = Vec::with_capacity(3 * plane);
        for k in 0..3 {
            let mut out = vec![self.bias[k]; plane];
            for (c, row) in self.factors.iter().enumerate() {
                let w = row[k];
                for (o, z) in out.iter_mut().zip(&latent[c * plane..(c + 1) * plane]) {
                    *o += w * z;
                }
            }
            rgb.extend(out);
        }
        Ok(rgb)
    }
}

impl LatentFormat {
    /// A latent in the network's scale.
    pub fn process_in(&self, latent: &Tensor) -> Result<Tensor> {
        latent.affine(self.scale, -self.shift * self.scale)
    }

    /// A network-scale latent back in the VAE's scale.
    pub fn process_out(&self, latent: &Tensor) -> Result<Tensor> {
        latent.affine(1.0 / self.scale, self.shift)
    }
}

/// A MODEL value: a network plus its noise parameterisation.
#[derive(Clone, Debug)]
pub struct Model {
    pub network: Arc<dyn Network>,
    pub sampling: ModelSampling,
    pub latent_space: LatentSpace,
    pub latent_format: LatentFormat,
    /// Differential diffusion (ComfyUI's `DifferentialDiffusion`): a soft
    /// noise mask is thresholded per step, so greyer cells change later.
    pub differential_diffusion: bool,
    /// Channels the network expects, when fixed; samplers check latents against it.
    pub latent_channels: Option<usize>,
    /// Skip-layer guidance (`SkipLayerGuidanceSD3`), applied by CFG.
    pub skip_layer_guidance: Option<SkipLayerGuidance>,
    /// Code around D(x, σ) (plugins' model patches); none by default, and
    /// then the prediction is the network's, untouched.
    pub wrappers: crate::wrapper::Wrappers,
}

/// Skip-layer guidance (SD3.5's, ComfyUI's `SkipLayerGuidanceDiT`): while σ
/// is within `sigmas` (low, high), the guided prediction moves away from
/// the conditional prediction of the network with some blocks left out by
/// `scale`: guided + scale·(cond − cond_skipped).
#[derive(Clone, Debug)]
pub struct SkipLayerGuidance {
    pub skipped: Arc<dyn Network>,
    pub scale: f64,
    pub sigmas: (f64, f64),
}

impl Object for Model {
    fn size_bytes(&self) -> usize {
        self.network.size_bytes()
    }
}

impl weft_core::Handle for Model {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Model;
}

impl Model {
    /// The raw network output at noise level σ for conditioning `cond`:
    /// one forward for a plain conditioning, else each active entry on its
    /// area, blended as ComfyUI does ([`crate::compose`]).
    pub fn predict(&self, x: &Tensor, sigma: f64, cond: &Conditioning) -> Result<Tensor> {
        if self.wrappers.is_empty() {
            return self.predict_unwrapped(x, sigma, cond);
        }
        // Wrappers work on D(x, σ); the network's own prediction space is
        // recovered from their result.
        let base = |x: &Tensor, s: f64, c: &Conditioning| {
            let out = self.predict_unwrapped(x, s, c)?;
            self.sampling.denoised(s, x, &out)
        };
        let d = self.wrappers.denoise(&base, x, sigma, cond)?;
        self.sampling.prediction_from_denoised(sigma, x, &d)
    }

    fn predict_unwrapped(&self, x: &Tensor, sigma: f64, cond: &Conditioning) -> Result<Tensor> {
        if cond.is_plain() {
            self.forward(x, sigma, cond)
        } else {
            crate::compose::predict(self, x, sigma, cond)
        }
    }

    /// One forward of the network for one entry (its options ignored);
    /// an inpainting entry's masked-image latent is scaled for the network.
    pub(crate) fn forward(&self, x: &Tensor, sigma: f64, cond: &Conditioning) -> Result<Tensor> {
        let scaled;
        let cond = match &cond.concat_latent {
            Some(latent) => {
                scaled = Conditioning {
                    concat_latent: Some(self.latent_format.process_in(latent)?),
                    ..cond.clone()
                };
                &scaled
            }
            None => cond,
        };
        let batch = x.dim(0)?;
        let t = self.sampling.timestep(sigma);
        let timesteps = Tensor::full(t as f32, batch, x.device())?;
        let x_in = x.affine(self.sampling.input_scale(sigma), 0.0)?;
        self.network
            .forward(&x_in, &timesteps, &cond.for_batch(batch)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        t.to_vec1().unwrap()
    }

    /// For each parameterisation, build the exact network output from known
    /// (x0, ε) on its own path and check D recovers x0, and the inverse.
    #[test]
    fn every_parameterisation_recovers_x0_in_closed_form() {
        let x0 = [0.3f32, -1.2, 0.7];
        let eps = [1.1f32, 0.4, -0.9];
        for sigma in [0.05f64, 0.7, 3.0, 14.6] {
            let vp_alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
            let vp_sigma = sigma * vp_alpha;
            let cases = [
                (Prediction::Epsilon, eps.to_vec()),
                (Prediction::Sample, x0.to_vec()),
                // v = α·ε − σ·x0 in VP coordinates.
                (
                    Prediction::V,
                    x0.iter()
                        .zip(&eps)
                        .map(|(x, e)| (vp_alpha * *e as f64 - vp_sigma * *x as f64) as f32)
                        .collect(),
                ),
            ];
            let x: Vec<f32> = x0
                .iter()
                .zip(&eps)
                .map(|(x, e)| (*x as f64 + sigma * *e as f64) as f32)
                .collect();
            for (prediction, out) in cases {
                let ms = ModelSampling::discrete(&[0.99, 0.5, 0.01], prediction);
                let d = ms.denoised(sigma, &t(&x), &t(&out)).unwrap();
                for (got, want) in vals(&d).iter().zip(&x0) {
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{prediction:?} σ={sigma}: {got} vs {want}"
                    );
                }
                let back = ms.prediction_from_denoised(sigma, &t(&x), &d).unwrap();
                for (got, want) in vals(&back).iter().zip(&out) {
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{prediction:?} inverse σ={sigma}"
                    );
                }
            }
        }
        // Flow: x = (1−σ)·x0 + σ·ε, velocity ε − x0.
        let ms = ModelSampling::flow(1000.0);
        for sigma in [0.1f64, 0.5, 0.95] {
            let x: Vec<f32> = x0
                .iter()
                .zip(&eps)
                .map(|(x, e)| ((1.0 - sigma) * *x as f64 + sigma * *e as f64) as f32)
                .collect();
            let v: Vec<f32> = x0.iter().zip(&eps).map(|(x, e)| e - x).collect();
            let d = ms.denoised(sigma, &t(&x), &t(&v)).unwrap();
            for (got, want) in vals(&d).iter().zip(&x0) {
                assert!((got - want).abs() < 1e-5, "flow σ={sigma}");
            }
            assert_eq!(ms.timestep(sigma), sigma * 1000.0);
        }
    }

    #[test]
    fn discrete_timesteps_invert_sigmas() {
        let ac: Vec<f64> = (0..1000).map(|i| 1.0 - (i as f64 + 1.0) / 1001.0).collect();
        let ms = ModelSampling::discrete(&ac, Prediction::Epsilon);
        for t in [0.0, 1.0, 10.5, 500.25, 998.0, 999.0] {
            let s = ms.sigma_at(t);
            assert!((ms.timestep(s) - t).abs() < 1e-9, "t={t}");
        }
        assert_eq!(ms.timestep(1e-6), 0.0);
        assert_eq!(ms.timestep(1e6), 999.0);
    }

    /// ComfyUI's `lcm`: 50 of 1000 levels at timesteps 19, 39, …, 999; σ
    /// maps to the nearest level's timestep, never between levels.
    #[test]
    fn distilled_levels_sit_at_every_twentieth_timestep() {
        let ac: Vec<f64> = (0..1000).map(|i| 1.0 - (i as f64 + 1.0) / 1001.0).collect();
        let full = ModelSampling::discrete(&ac, Prediction::Lcm);
        let ms = full.distilled(50).unwrap();
        let NoiseLevels::Discrete { sigmas } = &ms.levels else {
            panic!("not discrete")
        };
        assert_eq!(sigmas.len(), 50);
        assert_eq!(ms.distilled_stride, Some(20));
        for (i, level) in sigmas.iter().enumerate() {
            let t = 20.0 * i as f64 + 19.0;
            assert!((level / full.sigma_at(t) - 1.0).abs() < 1e-12, "level {i}");
            assert_eq!(ms.timestep(*level), t);
            assert!((ms.sigma_at(t) / level - 1.0).abs() < 1e-12);
        }
        // Between two levels: the nearer in log σ wins.
        let (a, b) = (sigmas[3], sigmas[4]);
        assert_eq!(ms.timestep(a * (b / a).powf(0.4)), 79.0);
        assert_eq!(ms.timestep(a * (b / a).powf(0.6)), 99.0);
        assert_eq!(ms.timestep(1e-6), 19.0);
        assert_eq!(ms.timestep(1e6), 999.0);
        // Half-way timesteps interpolate log σ between levels.
        assert!((ms.sigma_at(89.0) - (a * b).sqrt()).abs() < 1e-12);
        assert!((ms.sigma_at(0.0) / sigmas[0] - 1.0).abs() < 1e-12);
        assert!(full.distilled(1001).is_none());
        assert!(full.distilled(0).is_none());
        assert!(ModelSampling::flow(1000.0).distilled(50).is_none());
    }

    #[test]
    fn lcm_applies_the_consistency_boundary_condition() {
        // 50 of 100 levels (stride 2, timesteps 1, 3, …) keeps c_skip large
        // enough to see in f32; 50 of 1000 is the real case.
        for n in [100usize, 1000] {
            let ac: Vec<f64> = (0..n)
                .map(|i| 1.0 - (i as f64 + 1.0) / (n as f64 + 1.0))
                .collect();
            let ms = ModelSampling::discrete(&ac, Prediction::Lcm)
                .distilled(50)
                .unwrap();
            let stride = (n / 50) as f64;
            let (x, out) = ([0.3f32, -1.2, 2.0], [0.5f32, 0.1, -0.7]);
            for level in [0.0, 1.0, 26.0] {
                let t = level * stride + stride - 1.0;
                let sigma = ms.sigma_at(t);
                // c_skip = σ_d²/((10t)² + σ_d²), c_out = 10t/√((10t)² + σ_d²), σ_d = 0.5.
                let st = 10.0 * t;
                let skip = 0.25 / (st * st + 0.25);
                let c_out = st / (st * st + 0.25f64).sqrt();
                let d = ms.denoised(sigma, &t_(&x), &t_(&out)).unwrap();
                for ((got, x), e) in vals(&d).iter().zip(x).zip(out) {
                    let want = c_out * (x as f64 - sigma * e as f64) + skip * x as f64;
                    assert!((*got as f64 - want).abs() < 1e-6, "t={t}: {got} vs {want}");
                }
                let back = ms.prediction_from_denoised(sigma, &t_(&x), &d).unwrap();
                for (got, want) in vals(&back).iter().zip(out) {
                    assert!((got - want).abs() < 1e-3, "inverse t={t}: {got} vs {want}");
                }
                if n == 100 && level == 0.0 {
                    // At t = 1 the skip term is 0.25 %: not plain ε.
                    let eps = ModelSampling::discrete(&ac, Prediction::Epsilon);
                    let plain = vals(&eps.denoised(sigma, &t_(&x), &t_(&out)).unwrap());
                    for (a, b) in vals(&d).iter().zip(&plain) {
                        assert!((a - b).abs() > 1e-4, "{a} vs {b}");
                    }
                }
            }
        }
        assert_eq!(Prediction::parse("lcm"), Some(Prediction::Lcm));
    }

    fn t_(v: &[f32]) -> Tensor {
        t(v)
    }

    #[test]
    fn paths_and_lambda() {
        assert_eq!(Path::Flow.alpha(0.25), 0.75);
        assert_eq!(Path::Diffusion.alpha(5.0), 1.0);
        assert!((Path::Flow.lambda(0.5) - 0.0).abs() < 1e-12);
        assert_eq!(Path::Flow.lambda(1.0), f64::NEG_INFINITY);
        assert_eq!(Path::Diffusion.lambda(0.0), f64::INFINITY);
    }
}
