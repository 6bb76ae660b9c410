//! The parts SD3's and Flux's multimodal diffusion transformers share, with
//! diffusers' parameter names: timestep and pooled-text embedders, adaptive
//! layer-norm modulation, the GELU feed-forward, per-head RMS q/k norms,
//! and attention over the joined text and image tokens.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::LayerNorm;
use weft_kernels::layers::Linear;
use weft_sampling::{Conditioning, FlowShift, LatentFormat, Model, ModelSampling, Network};

use crate::loader::Loader;

/// diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)`
/// for each of `t`: `[cos, sin]` of t·10000^(−i/half). Computed in f32 step
/// by step as torch does, so the features match to the last bits.
pub fn timestep_features(t: &[f32], dim: usize, dev: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| (log_period * i as f32 / half as f32).exp())
        .collect();
    let mut rows = Vec::with_capacity(t.len() * dim);
    for &t in t {
        rows.extend(freqs.iter().map(|f| (t * f).cos()));
        rows.extend(freqs.iter().map(|f| (t * f).sin()));
    }
    Tensor::from_vec(rows, (t.len(), dim), dev)
}

/// `linear_2(silu(linear_1(x)))`: diffusers' `TimestepEmbedding` and
/// `PixArtAlphaTextProjection` (SiLU) alike.
#[derive(Debug)]
pub struct MlpEmbedder {
    linear_1: Linear,
    linear_2: Linear,
}

impl MlpEmbedder {
    pub fn new(in_dim: usize, dim: usize, l: Loader) -> Result<MlpEmbedder> {
        Ok(MlpEmbedder {
            linear_1: l.pp("linear_1").linear(in_dim, dim)?,
            linear_2: l.pp("linear_2").linear(dim, dim)?,
        })
    }
}

impl Module for MlpEmbedder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}

/// A layer norm without learned scale or shift (eps 1e-6): the
/// modulation supplies both.
#[derive(Debug)]
pub struct PlainNorm(LayerNorm);

impl PlainNorm {
    pub fn new(dim: usize, dev: &Device) -> Result<PlainNorm> {
        Ok(PlainNorm(LayerNorm::new(
            Tensor::ones(dim, DType::F32, dev)?,
            Tensor::zeros(dim, DType::F32, dev)?,
            1e-6,
        )))
    }

    /// norm(x)·(1 + scale) + shift, with `shift`, `scale` `[B, D]`.
    pub fn modulate(&self, x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
        self.0
            .forward(x)?
            .broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
            .broadcast_add(&shift.unsqueeze(1)?)
    }
}

/// `linear(silu(c))` split into `parts` vectors `[B, D]`: the shifts,
/// scales and gates of adaptive layer norm (`AdaLayerNormZero` and kin).
#[derive(Debug)]
pub struct Modulation {
    linear: Linear,
    parts: usize,
}

impl Modulation {
    pub fn new(dim: usize, parts: usize, l: Loader) -> Result<Modulation> {
        Ok(Modulation {
            linear: l.linear(dim, parts * dim)?,
            parts,
        })
    }

    pub fn forward(&self, c: &Tensor) -> Result<Vec<Tensor>> {
        self.linear
            .forward(&c.silu()?)?
            .chunk(self.parts, D::Minus1)
    }
}

/// `proj_out(GELU_tanh(proj_in(x)))`: diffusers' `FeedForward` with
/// `gelu-approximate` (`net.0.proj`, `net.2`).
#[derive(Debug)]
pub struct FeedForward {
    up: Linear,
    down: Linear,
}

impl FeedForward {
    pub fn new(dim: usize, hidden: usize, l: Loader) -> Result<FeedForward> {
        Ok(FeedForward {
            up: l.pp("net.0.proj").linear(dim, hidden)?,
            down: l.pp("net.2").linear(hidden, dim)?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.up.forward(x)?.gelu()?)
    }
}

/// An RMS norm over each head's features, with a learned scale.
#[derive(Debug)]
pub struct HeadNorm {
    weight: Tensor,
    eps: f32,
}

impl HeadNorm {
    pub fn new(head_dim: usize, eps: f32, l: Loader) -> Result<HeadNorm> {
        Ok(HeadNorm {
            weight: l.get(head_dim, "weight")?,
            eps,
        })
    }

    /// Normalises `x` `[B, N, H·Dh]` head by head.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let dh = self.weight.dim(0)?;
        let heads = x.reshape((b, n, c / dh, dh))?;
        candle_nn::ops::rms_norm(&heads.contiguous()?, &self.weight, self.eps)?.reshape((b, n, c))
    }
}

/// The q, k and v projections of one token stream, with optional per-head
/// q/k norms (SD3.5, Flux).
#[derive(Debug)]
pub struct Qkv {
    q: Linear,
    k: Linear,
    v: Linear,
    norm_q: Option<HeadNorm>,
    norm_k: Option<HeadNorm>,
}

impl Qkv {
    /// From `l`: the projections `names` (`to_q`… or `add_q_proj`…) and,
    /// when `norms` names them, their norms (eps 1e-6).
    pub fn new(
        dim: usize,
        head_dim: usize,
        names: [&str; 3],
        norms: Option<[&str; 2]>,
        l: &Loader,
    ) -> Result<Qkv> {
        let norm = |name: &str| HeadNorm::new(head_dim, 1e-6, l.pp(name));
        Ok(Qkv {
            q: l.pp(names[0]).linear(dim, dim)?,
            k: l.pp(names[1]).linear(dim, dim)?,
            v: l.pp(names[2]).linear(dim, dim)?,
            norm_q: norms.map(|n| norm(n[0])).transpose()?,
            norm_k: norms.map(|n| norm(n[1])).transpose()?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        let norm = |n: &Option<HeadNorm>, t: Tensor| match n {
            Some(n) => n.forward(&t),
            None => Ok(t),
        };
        Ok([
            norm(&self.norm_q, self.q.forward(x)?)?,
            norm(&self.norm_k, self.k.forward(x)?)?,
            self.v.forward(x)?,
        ])
    }
}

/// Softmax attention over `[B, N, H·Dh]` q, k, v (weft's fused kernel).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    weft_kernels::attention(q, k, v, heads)
}

/// Whether `l` holds the weights of a q/k norm called `name`.
pub fn has_norm(l: &Loader, name: &str) -> bool {
    l.contains(&format!("{name}.weight"))
}

/// The text states and pooled embedding `family`'s transformer reads from
/// `cond`, checked against its widths so a text encoder of another family
/// is named as such.
pub fn text_inputs<'a>(
    cond: &'a Conditioning,
    family: &str,
    context_dim: usize,
    pooled_dim: usize,
) -> Result<(&'a Tensor, &'a Tensor)> {
    let missing = |what: &str| {
        candle_core::Error::Msg(format!(
            "the {family} transformer needs {what} (from CLIPTextEncode with {family}'s text encoders)"
        ))
    };
    let context = cond
        .context
        .as_ref()
        .ok_or_else(|| missing("text states"))?;
    let pooled = cond
        .pooled
        .as_ref()
        .ok_or_else(|| missing("a pooled text embedding"))?;
    if context.dim(2)? != context_dim || pooled.dim(1)? != pooled_dim {
        candle_core::bail!(
            "the {family} transformer takes {context_dim}-wide text states and a {pooled_dim}-wide pooled embedding, got {} and {} (a text encoder of another family?)",
            context.dim(2)?,
            pooled.dim(1)?
        );
    }
    Ok((context, pooled))
}

/// A flow-matching MODEL: velocity prediction, timesteps σ·1000, the grid
/// shifted by `shift`, latents seen as (latent − `latent_shift`)·`scale`.
pub fn flow_model(
    network: Arc<dyn Network>,
    shift: FlowShift,
    scale: f64,
    latent_shift: f64,
    channels: usize,
) -> Model {
    Model {
        network,
        sampling: ModelSampling::flow_shifted(1000.0, shift),
        latent_space: crate::vae::sd_latent_space(),
        latent_format: LatentFormat {
            scale,
            shift: latent_shift,
            preview: weft_sampling::LatentPreview::Pixels,
        },
        differential_diffusion: false,
        skip_layer_guidance: None,
        wrappers: Default::default(),
        latent_channels: Some(channels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// t = 0 gives cos 0 = 1 then sin 0 = 0; t = 1 gives cos/sin of the
    /// frequencies 10000^(−i/half).
    #[test]
    fn timestep_features_are_cos_then_sin() {
        let f = timestep_features(&[0.0, 1.0], 4, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(f[0], vec![1.0, 1.0, 0.0, 0.0]);
        let w = 10000f32.powf(-0.5);
        for (got, want) in f[1].iter().zip([1f32.cos(), w.cos(), 1f32.sin(), w.sin()]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
