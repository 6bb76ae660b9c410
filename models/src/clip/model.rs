//! The CLIP text transformer that conditions Stable Diffusion 1.x (OpenAI
//! CLIP ViT-L/14) and 2.x (OpenCLIP ViT-H/14), with Hugging Face's parameter
//! names.
//!
//! Ours rather than candle-transformers': its config cannot be built for
//! anything but the released sizes, it has no pooled or projected output,
//! and its `gelu` is the tanh approximation where OpenCLIP uses the exact one.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use serde::Deserialize;
use weft_kernels::layers::{self, Linear};

/// The activation inside each MLP.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub enum Activation {
    /// x·σ(1.702x): OpenAI CLIP.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact GELU (erf): OpenCLIP.
    #[serde(rename = "gelu")]
    Gelu,
}

/// Hyper-parameters, read from a transformers `CLIPTextConfig` JSON
/// (`text_encoder/config.json`; settings it leaves out take that class's
/// defaults) or inferred from a single-file checkpoint.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ClipConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Width of `text_projection` (SD 2.x and SDXL use the projected pooled output).
    #[serde(default = "default_projection")]
    pub projection_dim: Option<usize>,
}

// transformers' `CLIPTextConfig` defaults (a 512-wide, 12-layer tower).
fn default_vocab() -> usize {
    49408
}
fn default_hidden() -> usize {
    512
}
fn default_intermediate() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    8
}
fn default_positions() -> usize {
    77
}
fn default_act() -> Activation {
    Activation::QuickGelu
}
fn default_eps() -> f64 {
    1e-5
}
fn default_projection() -> Option<usize> {
    Some(512)
}

impl Activation {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

#[derive(Debug)]
struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Layer {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Layer> {
        let d = cfg.hidden_size;
        let ln = |vb| candle_nn::layer_norm(d, cfg.layer_norm_eps, vb);
        let attn = vb.pp("self_attn");
        Ok(Layer {
            norm1: ln(vb.pp("layer_norm1"))?,
            q: layers::linear(d, d, attn.pp("q_proj"))?,
            k: layers::linear(d, d, attn.pp("k_proj"))?,
            v: layers::linear(d, d, attn.pp("v_proj"))?,
            out: layers::linear(d, d, attn.pp("out_proj"))?,
            norm2: ln(vb.pp("layer_norm2"))?,
            fc1: layers::linear(d, cfg.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: layers::linear(cfg.intermediate_size, d, vb.pp("mlp.fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor, cfg: &ClipConfig) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let heads = cfg.num_attention_heads;
        let hd = d / heads;
        let h = self.norm1.forward(x)?;
        let split = |t: Tensor| t.reshape((b, n, heads, hd))?.transpose(1, 2)?.contiguous();
        let q = split((self.q.forward(&h)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(&h)?)?;
        let v = split(self.v.forward(&h)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let attn = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let attn = attn.transpose(1, 2)?.reshape((b, n, d))?;
        let x = (x + self.out.forward(&attn)?)?;
        let h = cfg
            .hidden_act
            .apply(&self.fc1.forward(&self.norm2.forward(&x)?)?)?;
        x + self.fc2.forward(&h)?
    }
}

/// The text encoder; `text_projection` is present when the checkpoint has one.
#[derive(Debug)]
pub struct ClipText {
    token: Embedding,
    position: Embedding,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    projection: Option<Linear>,
    cfg: ClipConfig,
}

/// What one encoding returns.
#[derive(Debug)]
pub struct Encoded {
    /// `[B, N, D]`: the chosen layer's states (after the final layer norm
    /// if asked).
    pub hidden: Tensor,
    /// `[B, D]`: the last layer's state at each sequence's end-of-text token.
    pub pooled: Tensor,
    /// `[B, P]`: `pooled` projected, when the model has a projection.
    pub projected: Option<Tensor>,
}

impl ClipText {
    pub fn new(cfg: &ClipConfig, with_projection: bool, vb: VarBuilder) -> Result<ClipText> {
        if cfg.num_attention_heads == 0
            || cfg.hidden_size / cfg.num_attention_heads * cfg.num_attention_heads
                != cfg.hidden_size
        {
            candle_core::bail!(
                "CLIP hidden size {} is not divisible into {} heads",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, tm.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<_>>()?;
        let projection = if with_projection {
            let p = cfg.projection_dim.unwrap_or(cfg.hidden_size);
            Some(weft_kernels::layers::linear_no_bias(
                cfg.hidden_size,
                p,
                vb.pp("text_projection"),
            )?)
        } else {
            None
        };
        Ok(ClipText {
            token: candle_nn::embedding(
                cfg.vocab_size,
                cfg.hidden_size,
                emb.pp("token_embedding"),
            )?,
            position: candle_nn::embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                emb.pp("position_embedding"),
            )?,
            layers,
            final_norm: candle_nn::layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                tm.pp("final_layer_norm"),
            )?,
            projection,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// Encodes token ids `[B, N]` (u32). `layer` counts layers from 1; the
    /// hidden states after that layer are returned, through the final norm
    /// when `final_norm` (SD 1.x/2.x; SDXL takes them raw), so
    /// `num_hidden_layers − 1` is "clip skip 2". The pooled output always
    /// comes from the last layer, at the first `eos` token.
    pub fn encode(
        &self,
        ids: &Tensor,
        layer: usize,
        eos: u32,
        final_norm: bool,
    ) -> Result<Encoded> {
        self.encode_with_vectors(ids, &[], layer, eos, final_norm)
    }

    /// [`Self::encode`] with the input embeddings at some positions of a
    /// single sequence replaced by `vectors` (textual inversion).
    pub fn encode_with_vectors(
        &self,
        ids: &Tensor,
        vectors: &[(usize, Tensor)],
        layer: usize,
        eos: u32,
        final_norm: bool,
    ) -> Result<Encoded> {
        let (b, n) = ids.dims2()?;
        if n > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "{n} tokens exceed the text encoder's {} positions",
                self.cfg.max_position_embeddings
            );
        }
        if layer == 0 || layer > self.layers.len() {
            candle_core::bail!("CLIP layer {layer} is not in 1..={}", self.layers.len());
        }
        let positions = Tensor::arange(0u32, n as u32, ids.device())?;
        let mut tokens = self.token.forward(ids)?;
        if !vectors.is_empty() {
            if b != 1 {
                candle_core::bail!("embedding vectors are placed in one sequence at a time");
            }
            let rows = (0..n)
                .map(|i| match vectors.iter().find(|(p, _)| *p == i) {
                    Some((_, v)) if v.dims() == [self.cfg.hidden_size] => Ok(v.clone()),
                    Some((_, v)) => candle_core::bail!(
                        "an embedding vector of shape {:?} for a {}-wide text encoder",
                        v.dims(),
                        self.cfg.hidden_size
                    ),
                    None => tokens.get(0)?.get(i),
                })
                .collect::<Result<Vec<_>>>()?;
            tokens = Tensor::stack(&rows, 0)?.unsqueeze(0)?;
        }
        let mut x = tokens.broadcast_add(&self.position.forward(&positions)?)?;
        let mask = causal_mask(n, ids.device())?;
        let mut chosen = None;
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x, &mask, &self.cfg)?;
            if i + 1 == layer {
                chosen = Some(x.clone());
            }
        }
        let last = self.final_norm.forward(&x)?;
        let hidden = match chosen {
            Some(h) if !final_norm => h,
            Some(h) if layer < self.layers.len() => self.final_norm.forward(&h)?,
            _ => last.clone(),
        };
        let ends = end_positions(ids, eos)?;
        let pooled = Tensor::cat(
            &ends
                .iter()
                .enumerate()
                .map(|(i, &e)| last.get(i)?.get(e)?.unsqueeze(0))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let projected = match &self.projection {
            Some(p) => Some(p.forward(&pooled)?),
            None => None,
        };
        debug_assert_eq!(pooled.dim(0)?, b);
        Ok(Encoded {
            hidden,
            pooled,
            projected,
        })
    }
}

/// Where each row's first `eos` is (the last position if it has none).
fn end_positions(ids: &Tensor, eos: u32) -> Result<Vec<usize>> {
    Ok(ids
        .to_dtype(DType::U32)?
        .to_vec2::<u32>()?
        .iter()
        .map(|row| row.iter().position(|&t| t == eos).unwrap_or(row.len() - 1))
        .collect())
}

fn causal_mask(n: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (1, 1, n, n), device)
}

impl ClipConfig {
    /// The hidden size of the states a UNet cross-attends to.
    pub fn context_dim(&self) -> usize {
        self.hidden_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal() {
        let m = causal_mask(3, &candle_core::Device::Cpu)
            .unwrap()
            .reshape((3, 3))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0][0], 0.0);
        assert!(m[0][1].is_infinite() && m[1][2].is_infinite());
        assert_eq!(m[2], vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn pooled_position_is_the_first_end_token() {
        let ids = Tensor::new(
            &[[49406u32, 320, 49407, 49407], [49406, 49407, 0, 0]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(end_positions(&ids, 49407).unwrap(), vec![2, 1]);
    }
}
