//! weft's own denoising networks (a small U-Net and a small DiT), their
//! configuration, and the checkpoint format that ties a trained network to
//! the noise parameterisation it was trained with.
//!
//! The trainer in `train/` and the sampler share this module, so the one
//! place that says what the network's timestep input means is
//! [`ModelConfig::sampling`]: training feeds `sampling().timestep(σ)`, the
//! same number [`weft_sampling::Model::predict`] passes at sampling time.

pub mod checkpoint;
pub mod classifier;
pub mod dit;
pub mod embedded;
pub mod unet;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use weft_sampling::{schedule, ModelSampling, Path, Prediction};

pub use checkpoint::{
    load_classifier, load_classifier_bytes, load_model, load_model_bytes, load_net, load_net_bytes,
    save,
};
pub use classifier::{Classifier, ClassifierConfig};
pub use dit::{DiT, DiTBlock, DiTConfig};
pub use unet::{UNet, UNetConfig};

/// Which architecture a checkpoint holds; tagged so the JSON in a
/// checkpoint's metadata says `"arch": "UNet"` or `"arch": "DiT"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch")]
pub enum NetConfig {
    UNet(UNetConfig),
    DiT(DiTConfig),
    Classifier(ClassifierConfig),
}

impl NetConfig {
    pub fn in_channels(&self) -> usize {
        match self {
            NetConfig::UNet(c) => c.in_channels,
            NetConfig::DiT(c) => c.in_channels,
            NetConfig::Classifier(c) => c.in_channels,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            NetConfig::UNet(c) => c.num_classes,
            NetConfig::DiT(c) => c.num_classes,
            NetConfig::Classifier(c) => c.num_classes,
        }
    }

    pub fn arch(&self) -> &'static str {
        match self {
            NetConfig::UNet(_) => "UNet",
            NetConfig::DiT(_) => "DiT",
            NetConfig::Classifier(_) => "Classifier",
        }
    }
}

/// A built network of either architecture.
#[derive(Debug)]
pub enum Net {
    UNet(Box<UNet>),
    DiT(Box<DiT>),
    Classifier(Box<Classifier>),
}

impl Net {
    /// Builds the network, creating (with a `VarMap`-backed builder) or
    /// reading (with a tensor-backed one) its weights through `vb`.
    pub fn new(cfg: &NetConfig, vb: VarBuilder) -> Result<Net> {
        Ok(match cfg {
            NetConfig::UNet(c) => Net::UNet(Box::new(UNet::new(c, vb)?)),
            NetConfig::DiT(c) => Net::DiT(Box::new(DiT::new(c, vb)?)),
            NetConfig::Classifier(c) => Net::Classifier(Box::new(Classifier::new(c, vb)?)),
        })
    }

    /// `x`: `[B, C, H, W]` f32; `t`: `[B]` f32 timesteps (what
    /// [`ModelSampling::timestep`] gives); `labels`: `[B]` u32 with the null
    /// class ∅ written as `num_classes`. A classifier ignores `labels` and
    /// returns logits `[B, num_classes]`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
            Net::UNet(n) => n.forward(x, t, labels),
            Net::DiT(n) => n.forward(x, t, labels),
            Net::Classifier(n) => n.forward(x, t),
        }
    }

    /// As [`Self::forward`], with dropout active when `train` is set.
    pub fn forward_t(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        match self {
            Net::UNet(n) => n.forward_t(x, t, labels, train),
            Net::DiT(_) | Net::Classifier(_) => self.forward(x, t, labels),
        }
    }
}

/// The noise-level schedule of a discrete-time diffusion objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BetaSchedule {
    /// DDPM's linear β from 1e-4 to 0.02.
    Linear,
    /// Nichol & Dhariwal's cosine ᾱ (`squaredcos_cap_v2` in schedule.rs).
    Cosine,
}

/// What the network was trained to predict, on which path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Objective {
    /// Linear path `x = (1−σ)·x0 + σ·ε`, target velocity `ε − x0`,
    /// timestep input `σ·1000`.
    Flow,
    /// Discrete-time diffusion with `n_train` steps, ε-prediction; the
    /// timestep input is the (integer-valued when training) index t.
    Ddpm {
        beta_schedule: BetaSchedule,
        n_train: usize,
    },
    /// Cross-entropy on the labels; a noise-conditional classifier sees
    /// flow-path inputs x_s with timestep s·1000 (see [`classifier`]).
    Classify,
}

impl Objective {
    /// The name its RON and JSON `kind` tag uses.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Flow => "flow",
            Objective::Ddpm { .. } => "ddpm",
            Objective::Classify => "classify",
        }
    }

    /// DDPM's usual setting: 1000 linear-β steps.
    pub fn ddpm_linear() -> Objective {
        Objective::Ddpm {
            beta_schedule: BetaSchedule::Linear,
            n_train: 1000,
        }
    }
}

/// Everything needed to rebuild a model from its weights; stored as JSON in
/// the checkpoint so a file is self-describing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub net: NetConfig,
    pub objective: Objective,
    pub image_size: usize,
    pub channels: usize,
    pub num_classes: usize,
    /// Data standard deviation σ_d for EDM-style preconditioning (Karras et
    /// al. 2022); see [`Preconditioner`]. Absent: the network's output is the
    /// objective's prediction itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_data: Option<f64>,
}

/// EDM-style preconditioning. The network predicts a residual F around the
/// denoiser that would be optimal for Gaussian data of std σ_d:
/// `D = c_skip·x + c_out·F` with `c_skip = α·σ_d²/(α²σ_d² + σ²)` and
/// `c_out = σ·σ_d/√(α²σ_d² + σ²)` on the path `x = α·x0 + σ·ε` (flow: α = 1−σ;
/// DDPM in its variance-exploding form: α = 1). The objective's prediction
/// (velocity or ε, both `(x − D)/σ`) is computed from D, so the losses and
/// the sampler are unchanged. It spares a small network from copying the
/// input noise through itself pixel by pixel, which left the first MNIST
/// models' samples speckled.
#[derive(Clone, Debug, PartialEq)]
pub struct Preconditioner {
    pub sigma_data: f64,
    pub sampling: ModelSampling,
}

impl Preconditioner {
    /// The objective's prediction from the raw network output `raw`, for
    /// network input `x_in` `[B, ...]` at timesteps `t` `[B]`.
    pub fn apply(&self, x_in: &Tensor, t: &Tensor, raw: &Tensor) -> Result<Tensor> {
        let ts: Vec<f32> = t.to_dtype(DType::F32)?.to_vec1()?;
        let sd2 = self.sigma_data * self.sigma_data;
        let (mut a, mut b) = (Vec::with_capacity(ts.len()), Vec::with_capacity(ts.len()));
        for &t in &ts {
            let sigma = self.sampling.sigma_at(t as f64).max(1e-4);
            // x in path coordinates is x_in times this (the inverse input scale).
            let (alpha, x_scale) = match self.sampling.path() {
                Path::Flow => (1.0 - sigma, 1.0),
                Path::Diffusion => (1.0, (1.0 + sigma * sigma).sqrt()),
            };
            let denom = alpha * alpha * sd2 + sigma * sigma;
            let c_skip = alpha * sd2 / denom;
            let c_out = sigma * self.sigma_data / denom.sqrt();
            a.push(((1.0 - c_skip) * x_scale / sigma) as f32);
            b.push((-c_out / sigma) as f32);
        }
        let mut shape = vec![ts.len()];
        shape.extend(std::iter::repeat_n(1, x_in.rank() - 1));
        let a = Tensor::from_vec(a, shape.as_slice(), x_in.device())?;
        let b = Tensor::from_vec(b, shape.as_slice(), x_in.device())?;
        x_in.broadcast_mul(&a)? + raw.broadcast_mul(&b)?
    }
}

impl ModelConfig {
    /// A config whose image size, channels and classes are those of `net`.
    pub fn new(net: NetConfig, objective: Objective, image_size: usize) -> ModelConfig {
        ModelConfig {
            channels: net.in_channels(),
            num_classes: net.num_classes(),
            net,
            objective,
            image_size,
            sigma_data: None,
        }
    }

    /// The preconditioning this model's network output goes through, if any.
    pub fn preconditioner(&self) -> Option<Preconditioner> {
        self.sigma_data.map(|sigma_data| Preconditioner {
            sigma_data,
            sampling: self.sampling(),
        })
    }

    /// Checks the duplicated fields agree, so a hand-edited or foreign
    /// config fails at load rather than with a shape error mid-sampling.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.net.in_channels() != self.channels {
            return Err(format!(
                "config says {} channels but the {} has {} input channels",
                self.channels,
                self.net.arch(),
                self.net.in_channels()
            ));
        }
        if self.net.num_classes() != self.num_classes {
            return Err(format!(
                "config says {} classes but the {} has {}",
                self.num_classes,
                self.net.arch(),
                self.net.num_classes()
            ));
        }
        match &self.net {
            NetConfig::UNet(c) => c.validate(self.image_size),
            NetConfig::DiT(c) => {
                if c.image_size != self.image_size {
                    return Err(format!(
                        "config says image size {} but the DiT was built for {}",
                        self.image_size, c.image_size
                    ));
                }
                c.validate()
            }
            NetConfig::Classifier(c) => {
                if c.image_size != self.image_size {
                    return Err(format!(
                        "config says image size {} but the classifier was built for {}",
                        self.image_size, c.image_size
                    ));
                }
                c.validate()
            }
        }?;
        if let Some(sd) = self.sigma_data {
            if !(sd.is_finite() && sd > 0.0) || self.objective == Objective::Classify {
                return Err(format!(
                    "sigma_data must be a positive number, and only for flow or DDPM, got {sd}"
                ));
            }
        }
        let classifier_net = matches!(self.net, NetConfig::Classifier(_));
        if classifier_net != (self.objective == Objective::Classify) {
            return Err(format!(
                "a {} cannot be trained with the {} objective",
                self.net.arch(),
                self.objective.name()
            ));
        }
        if let Objective::Ddpm { n_train, .. } = self.objective {
            if n_train < 2 {
                return Err(format!("DDPM objective needs n_train ≥ 2, got {n_train}"));
            }
        }
        Ok(())
    }

    /// The sampling-side parameterisation. `timestep(σ)` of the result is
    /// exactly the network's timestep input, in training and in sampling.
    pub fn sampling(&self) -> ModelSampling {
        match &self.objective {
            Objective::Flow | Objective::Classify => ModelSampling::flow(1000.0),
            Objective::Ddpm {
                beta_schedule,
                n_train,
            } => {
                let name = match beta_schedule {
                    BetaSchedule::Linear => "linear",
                    BetaSchedule::Cosine => "squaredcos_cap_v2",
                };
                let betas = schedule::betas(name, *n_train, 1e-4, 0.02)
                    .expect("built-in schedule names and positive step counts are valid");
                ModelSampling::discrete(&schedule::alphas_cumprod(&betas), Prediction::Epsilon)
            }
        }
    }

    /// The label index of the null class ∅.
    pub fn null_label(&self) -> u32 {
        self.num_classes as u32
    }

    /// Builds the network through `vb` (see [`Net::new`]).
    pub fn build(&self, vb: VarBuilder) -> Result<Net> {
        Net::new(&self.net, vb)
    }
}

/// Labels as the networks take them: `[B]` u32, ∅ (`None`) → `num_classes`.
pub fn label_tensor(labels: &[Option<u32>], num_classes: usize, device: &Device) -> Result<Tensor> {
    let ids: Vec<u32> = labels
        .iter()
        .map(|l| match l {
            Some(k) if (*k as usize) < num_classes => Ok(*k),
            Some(k) => Err(candle_core::Error::Msg(format!(
                "class label {k} out of range (the model has {num_classes} classes)"
            ))),
            None => Ok(num_classes as u32),
        })
        .collect::<Result<_>>()?;
    Tensor::new(ids, device)
}

/// Sinusoidal features of a scalar per batch item: `[B] → [B, dim]`, the
/// first half cosines and the second sines, frequencies geometric from 1 down
/// to 1/10000 so both t≈1 and t≈1000 are resolved.
pub(crate) fn timestep_features(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::new(freqs, t.device())?.unsqueeze(0)?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

/// A linear layer whose weights and bias start at zero: AdaLN-Zero
/// modulations and output heads, so a fresh block is the identity.
pub(crate) fn zero_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", Init::Const(0.0))?;
    let b = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// LayerNorm over the last dimension without affine parameters, written
/// from primitive ops so it has a backward pass (candle's fused kernel has none).
pub(crate) fn layer_norm_plain(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)
}

/// Multi-head self-attention on `[B, N, dim]`, given the fused qkv
/// projection's output `[B, N, 3·dim]`; softmax is candle's composed one
/// (differentiable), not the fused last-dim kernel.
pub(crate) fn attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, three_dim) = qkv.dims3()?;
    let dim = three_dim / 3;
    let hd = dim / heads;
    let qkv = qkv
        .reshape((b, n, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?; // [3, B, heads, N, hd]
    let q = qkv.get(0)?.contiguous()?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, dim))
}

/// GELU, tanh approximation (candle's `gelu`), computed as
/// `x·sigmoid(2·√(2/π)·(x + 0.044715·x³))`, the same function since
/// ½(1 + tanh y) = sigmoid(2y). candle evaluates `tanhf` per element on one
/// thread, which took a third of the default graph's time; the sigmoid form
/// costs a few vectorised passes instead, and keeps a backward pass.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    const TWO_SQRT_TWO_OVER_PI: f64 = 1.595_769_121_605_730_7;
    let inner = (x.sqr()?.affine(0.044715, 1.0)? * x)?.affine(TWO_SQRT_TWO_OVER_PI, 0.0)?;
    x * candle_nn::ops::sigmoid(&inner)?
}

/// `silu` then `linear`: how a conditioning vector becomes per-block
/// modulation parameters.
pub(crate) fn silu_linear(c: &Tensor, layer: &Linear) -> Result<Tensor> {
    layer.forward(&c.silu()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With F = 0 the preconditioned model is the exact denoiser of
    /// N(0, σ_d²) data, on the flow path and on a DDPM schedule.
    #[test]
    fn preconditioning_with_zero_residual_is_the_gaussian_optimal_denoiser() {
        use weft_sampling::exact::GaussianMixture;
        let sd = 0.6;
        let data = GaussianMixture::single(0.0, sd);
        for objective in [Objective::Flow, Objective::ddpm_linear()] {
            let cfg = ModelConfig {
                sigma_data: Some(sd),
                ..ModelConfig::new(NetConfig::DiT(DiTConfig::mnist()), objective, 28)
            };
            let p = cfg.preconditioner().unwrap();
            let sampling = cfg.sampling();
            let sigmas = match sampling.path() {
                Path::Flow => vec![0.05, 0.5, 0.95],
                Path::Diffusion => vec![0.1, 1.0, 20.0],
            };
            for sigma in sigmas {
                let xs = [-1.5f32, 0.2, 2.0];
                let x = Tensor::new(&xs, &Device::Cpu)
                    .unwrap()
                    .reshape((3, 1))
                    .unwrap();
                let x_in = x.affine(sampling.input_scale(sigma), 0.0).unwrap();
                let t = Tensor::full(sampling.timestep(sigma) as f32, 3, &Device::Cpu).unwrap();
                let out = p.apply(&x_in, &t, &x_in.zeros_like().unwrap()).unwrap();
                let d: Vec<f32> = sampling
                    .denoised(sigma, &x, &out)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                for (xv, dv) in xs.iter().zip(d) {
                    let want = data.posterior_mean(*xv as f64, sigma, sampling.path(), None);
                    assert!(
                        (dv as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{:?} σ={sigma} x={xv}: {dv} vs {want}",
                        sampling.path()
                    );
                }
            }
        }
    }

    /// Same values as the tanh form in f64, and the same gradient as candle's `gelu`.
    #[test]
    fn gelu_tanh_matches_the_tanh_formula_and_its_gradient() {
        let xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).collect();
        let x = candle_core::Var::new(xs.as_slice(), &Device::Cpu).unwrap();
        let ours = gelu_tanh(x.as_tensor()).unwrap();
        let c = (2.0 / std::f64::consts::PI).sqrt();
        for (v, got) in xs.iter().zip(ours.to_vec1::<f32>().unwrap()) {
            let v = *v as f64;
            let want = 0.5 * v * (1.0 + (c * (v + 0.044715 * v.powi(3))).tanh());
            assert!(
                (got as f64 - want).abs() < 2e-6,
                "gelu({v}) = {got}, want {want}"
            );
        }
        let g_ours = ours.sum_all().unwrap().backward().unwrap();
        let theirs = x.as_tensor().gelu().unwrap();
        let g_theirs = theirs.sum_all().unwrap().backward().unwrap();
        let a: Vec<f32> = g_ours.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        let b: Vec<f32> = g_theirs.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        for ((v, a), b) in xs.iter().zip(a).zip(b) {
            assert!((a - b).abs() < 1e-5, "gelu'({v}): {a} vs {b}");
        }
    }
}
