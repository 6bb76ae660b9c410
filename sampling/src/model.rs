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
    /// A flow model: timestep = σ·multiplier (1000 for SD3, 1 for Flux).
    Flow { multiplier: f64 },
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

    pub fn flow(multiplier: f64) -> Self {
        ModelSampling {
            prediction: Prediction::Velocity,
            levels: NoiseLevels::Flow { multiplier },
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
            (NoiseLevels::Flow { multiplier }, _) => sigma * multiplier,
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
            NoiseLevels::Flow { multiplier } => t / multiplier,
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

/// What a network is conditioned on, batched like the latent.
#[derive(Clone, Debug, Default)]
pub struct Conditioning {
    /// Class labels; `None` is the null class ∅ used for unconditional passes.
    pub labels: Option<Vec<Option<u32>>>,
    /// Token embeddings `[batch, tokens, dim]` (text encoders).
    pub context: Option<Tensor>,
    /// Pooled embeddings `[batch, dim]`.
    pub pooled: Option<Tensor>,
    /// Per-item extras only the network reads (ControlNet hints); empty
    /// when no item has one, else one entry per item (or one for all).
    pub hints: Vec<Option<Hint>>,
    /// SDXL's micro-conditioning, per item like `hints`.
    pub sizes: Vec<Option<SizeCond>>,
}

/// SDXL's micro-conditioning of one item: the inputs of ComfyUI's
/// `CLIPTextEncodeSDXL` and `…Refiner`. Sizes left out are the latent's
/// size in pixels, as ComfyUI does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SizeCond {
    /// (height, width) the training image had.
    pub original: Option<(f64, f64)>,
    /// (top, left) of the crop.
    pub crop: (f64, f64),
    /// (height, width) asked for.
    pub target: Option<(f64, f64)>,
    /// The refiner's aesthetic score; absent: 6, or 2.5 on the negative side.
    pub aesthetic: Option<f64>,
    /// Set on the negative side of guidance (the refiner's default score).
    pub negative: bool,
}

impl SizeCond {
    /// The numbers the model embeds for a latent of `pixels` (height,
    /// width): 6 for SDXL (original, crop, target) or 5 for the refiner
    /// (original, crop, aesthetic score).
    pub fn numbers(&self, pixels: (f64, f64), count: usize) -> Vec<f64> {
        let (oh, ow) = self.original.unwrap_or(pixels);
        let (top, left) = self.crop;
        if count == 5 {
            let score = self
                .aesthetic
                .unwrap_or(if self.negative { 2.5 } else { 6.0 });
            return vec![oh, ow, top, left, score];
        }
        let (th, tw) = self.target.unwrap_or(pixels);
        vec![oh, ow, top, left, th, tw]
    }
}

/// A per-item list (`hints`, `sizes`) for a batch of `n`: empty stays
/// empty, one entry is shared by all.
fn items_for_batch<T: Clone>(v: &[Option<T>], n: usize, what: &str) -> Result<Vec<Option<T>>> {
    match v.len() {
        0 => Ok(Vec::new()),
        1 if n != 1 => Ok(vec![v[0].clone(); n]),
        len if len == n => Ok(v.to_vec()),
        len => Err(candle_core::Error::Msg(format!(
            "the conditioning has {len} {what} for a batch of {n}"
        ))),
    }
}

/// Two per-item lists of batches `na` and `nb` stacked.
fn items_concat<T: Clone>(
    a: &[Option<T>],
    na: usize,
    b: &[Option<T>],
    nb: usize,
) -> Vec<Option<T>> {
    if a.is_empty() && b.is_empty() {
        return Vec::new();
    }
    let items = |v: &[Option<T>], n: usize| match v.len() {
        0 => vec![None; n],
        1 => vec![v[0].clone(); n],
        _ => v.to_vec(),
    };
    let mut out = items(a, na);
    out.extend(items(b, nb));
    out
}

/// An extra input a network understands and samplers pass through as is.
#[derive(Clone)]
pub struct Hint(pub Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hint")
    }
}

impl Conditioning {
    /// Items in the batch, when the conditioning says.
    pub fn batch(&self) -> Result<Option<usize>> {
        if let Some(l) = &self.labels {
            return Ok(Some(l.len()));
        }
        match (&self.context, &self.pooled) {
            (Some(t), _) | (None, Some(t)) => Ok(Some(t.dim(0)?)),
            (None, None) => Ok((!self.hints.is_empty()).then_some(self.hints.len())),
        }
    }

    pub fn labels(labels: Vec<Option<u32>>) -> Self {
        Conditioning {
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// This conditioning for a batch of `n` (a batch of 1 is broadcast);
    /// any other size mismatch is an error, never a silent misalignment.
    pub fn for_batch(&self, n: usize) -> Result<Conditioning> {
        let mismatch = |what: &str, got: usize| {
            candle_core::Error::Msg(format!(
                "the conditioning has {got} {what} for a batch of {n}"
            ))
        };
        if let Some(l) = &self.labels {
            if l.len() != 1 && l.len() != n {
                return Err(mismatch("labels", l.len()));
            }
        }
        let repeat_tensor = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            match t {
                Some(t) if t.dim(0)? != 1 && t.dim(0)? != n => Err(mismatch("items", t.dim(0)?)),
                Some(t) if t.dim(0)? == 1 && n != 1 => {
                    let mut dims = vec![n];
                    dims.extend(&t.dims()[1..]);
                    Ok(Some(t.broadcast_as(dims)?.contiguous()?))
                }
                other => Ok(other.clone()),
            }
        };
        let labels = self.labels.as_ref().map(|l| {
            if l.len() == 1 && n != 1 {
                vec![l[0]; n]
            } else {
                l.clone()
            }
        });
        Ok(Conditioning {
            labels,
            context: repeat_tensor(&self.context)?,
            pooled: repeat_tensor(&self.pooled)?,
            hints: items_for_batch(&self.hints, n, "hints")?,
            sizes: items_for_batch(&self.sizes, n, "size conditionings")?,
        })
    }

    /// Stacks two conditionings of the same kind along the batch, so a
    /// conditional and an unconditional pass run as one forward.
    pub fn concat(&self, other: &Conditioning) -> Result<Conditioning> {
        let cat = |a: &Option<Tensor>, b: &Option<Tensor>| -> Result<Option<Tensor>> {
            match (a, b) {
                (Some(a), Some(b)) => Ok(Some(Tensor::cat(&[a, b], 0)?)),
                (None, None) => Ok(None),
                _ => Err(candle_core::Error::Msg(
                    "cannot batch conditionings of different kinds".into(),
                )),
            }
        };
        let labels = match (&self.labels, &other.labels) {
            (Some(a), Some(b)) => Some(a.iter().chain(b).copied().collect()),
            (None, None) => None,
            _ => {
                return Err(candle_core::Error::Msg(
                    "cannot batch labelled with unlabelled conditioning".into(),
                ))
            }
        };
        let (a, b) = match (&self.context, &other.context) {
            (Some(a), Some(b)) => {
                let (a, b) = common_length(a, b)?;
                (Some(a), Some(b))
            }
            _ => (self.context.clone(), other.context.clone()),
        };
        let (na, nb) = (self.batch()?.unwrap_or(1), other.batch()?.unwrap_or(1));
        Ok(Conditioning {
            labels,
            context: cat(&a, &b)?,
            pooled: cat(&self.pooled, &other.pooled)?,
            hints: items_concat(&self.hints, na, &other.hints, nb),
            sizes: items_concat(&self.sizes, na, &other.sizes, nb),
        })
    }

    /// This conditioning as the negative side of guidance: SDXL refiner
    /// items without an aesthetic score get the negative default (2.5).
    pub fn as_negative(mut self) -> Result<Conditioning> {
        let n = self.batch()?.unwrap_or(1);
        let mut sizes = items_for_batch(&self.sizes, n, "size conditionings")?;
        if sizes.is_empty() {
            sizes = vec![None; n];
        }
        self.sizes = sizes
            .into_iter()
            .map(|s| {
                Some(SizeCond {
                    negative: true,
                    ..s.unwrap_or_default()
                })
            })
            .collect();
        Ok(self)
    }
}

/// Text contexts of different lengths (long prompts are encoded in
/// 77-token chunks), each repeated along the tokens to a common length:
/// attention over repeated keys is unchanged, as in ComfyUI.
fn common_length(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    if a.rank() != 3 || b.rank() != 3 {
        return Ok((a.clone(), b.clone()));
    }
    let (na, nb) = (a.dim(1)?, b.dim(1)?);
    if na == nb {
        return Ok((a.clone(), b.clone()));
    }
    if na == 0 || nb == 0 {
        candle_core::bail!("cannot batch text contexts of {na} and {nb} tokens");
    }
    let lcm = na / gcd(na, nb) * nb;
    Ok((a.repeat((1, lcm / na, 1))?, b.repeat((1, lcm / nb, 1))?))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Object for Conditioning {
    fn size_bytes(&self) -> usize {
        let t = |t: &Option<Tensor>| {
            t.as_ref()
                .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes())
        };
        t(&self.context) + t(&self.pooled) + self.labels.as_ref().map_or(0, |l| l.len() * 8)
    }
}

impl weft_core::Handle for Conditioning {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Conditioning;
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
}

/// How a model's network sees latents: `(latent − shift) · scale`.
/// Latents between nodes are the VAE's own (ComfyUI's convention); models
/// trained on rescaled latents (SD 1.x 0.18215, SDXL 0.13025) rescale them
/// only for sampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentFormat {
    pub scale: f64,
    pub shift: f64,
}

impl Default for LatentFormat {
    /// Latents as they are (pixel-space models).
    fn default() -> Self {
        LatentFormat {
            scale: 1.0,
            shift: 0.0,
        }
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
    /// Channels the network expects, when fixed; samplers check latents against it.
    pub latent_channels: Option<usize>,
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
    /// The raw network output at noise level σ for conditioning `cond`.
    pub fn predict(&self, x: &Tensor, sigma: f64, cond: &Conditioning) -> Result<Tensor> {
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
