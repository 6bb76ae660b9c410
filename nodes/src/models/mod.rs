//! weft's own denoising networks (a small U-Net and a small DiT), their
//! configuration, and the checkpoint format that ties a trained network to
//! the noise parameterisation it was trained with.
//!
//! The trainer in `train/` and the sampler share this module, so the one
//! place that says what the network's timestep input means is
//! [`ModelConfig::sampling`]: training feeds `sampling().timestep(σ)`, the
//! same number [`crate::sampling::Model::predict`] passes at sampling time.

pub mod checkpoint;
pub mod classifier;
pub mod dit;
pub mod loader;
pub mod unet;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use weft_core::Registry;

use crate::sampling::{schedule, ModelSampling, Prediction};

pub use checkpoint::{load_classifier, load_model, load_net, save};
pub use classifier::{Classifier, ClassifierConfig};
pub use dit::{DiT, DiTBlock, DiTConfig};
pub use unet::{UNet, UNetConfig};

/// Registers the model nodes.
pub fn register(registry: &mut Registry) -> std::result::Result<(), String> {
    registry.register(loader::CheckpointLoader::new())?;
    registry.register(loader::ClassifierLoader::new())?;
    Ok(())
}

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
        }
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

/// `silu` then `linear`: how a conditioning vector becomes per-block
/// modulation parameters.
pub(crate) fn silu_linear(c: &Tensor, layer: &Linear) -> Result<Tensor> {
    layer.forward(&c.silu()?)
}
