//! A small class-conditional Diffusion Transformer (Peebles & Xie's DiT).
//!
//! The image is cut into `patch_size`² patches, each linearly embedded and
//! given a fixed 2-D sinusoidal position; `depth` transformer blocks follow,
//! each conditioned on `c = time embedding + class embedding` through
//! AdaLN-Zero: `c` regresses a shift, scale and gate for the attention and
//! the MLP sublayers, with the regression initialised to zero so every fresh
//! block is the identity and training starts from a network that is a
//! residual stack of no-ops. The final layer is zero-initialised too, so a
//! fresh DiT outputs zeros; the class table has a last row for ∅.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{attention, gelu_tanh, layer_norm_plain, silu_linear, timestep_features, zero_linear};

/// Hyper-parameters of [`DiT`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiTConfig {
    pub in_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    /// Real classes; the embedding table has one more row for ∅.
    pub num_classes: usize,
    /// Width of the sinusoidal timestep features fed to the time MLP.
    #[serde(default = "default_freq_dim")]
    pub freq_dim: usize,
}

fn default_freq_dim() -> usize {
    128
}

impl DiTConfig {
    /// The default for 1×28×28 MNIST: patch 4 (7×7 = 49 tokens), width 128,
    /// 6 blocks, 4 heads (≈1.9 M parameters).
    pub fn mnist() -> DiTConfig {
        DiTConfig {
            in_channels: 1,
            image_size: 28,
            patch_size: 4,
            hidden: 128,
            depth: 6,
            heads: 4,
            mlp_ratio: 4,
            num_classes: 10,
            freq_dim: 128,
        }
    }

    // `is_multiple_of` needs Rust 1.87; the workspace's MSRV is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.in_channels == 0 || self.patch_size == 0 || self.hidden == 0 || self.heads == 0 {
            return Err("DiT in_channels, patch_size, hidden and heads must be positive".into());
        }
        if self.image_size == 0 || self.image_size % self.patch_size != 0 {
            return Err(format!(
                "DiT image size {} is not a multiple of patch size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.hidden % self.heads != 0 || self.hidden % 4 != 0 {
            return Err(format!(
                "DiT hidden {} must be divisible by heads {} and by 4 (2-D positions)",
                self.hidden, self.heads
            ));
        }
        if self.freq_dim == 0 || self.freq_dim % 2 != 0 || self.mlp_ratio == 0 {
            return Err("DiT freq_dim must be even and mlp_ratio positive".into());
        }
        Ok(())
    }

    fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// `x·(1 + scale) + shift`, with per-sample `[B, dim]` parameters broadcast over tokens.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?
        .broadcast_add(&shift.unsqueeze(1)?)
}

/// One transformer block with AdaLN-Zero conditioning.
#[derive(Debug)]
pub struct DiTBlock {
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    /// `c → 6·hidden`: shift, scale, gate for attention, then for the MLP.
    ada: Linear,
    heads: usize,
}

impl DiTBlock {
    pub fn new(hidden: usize, heads: usize, mlp_ratio: usize, vb: VarBuilder) -> Result<DiTBlock> {
        Ok(DiTBlock {
            qkv: candle_nn::linear(hidden, 3 * hidden, vb.pp("qkv"))?,
            proj: candle_nn::linear(hidden, hidden, vb.pp("proj"))?,
            fc1: candle_nn::linear(hidden, mlp_ratio * hidden, vb.pp("fc1"))?,
            fc2: candle_nn::linear(mlp_ratio * hidden, hidden, vb.pp("fc2"))?,
            ada: zero_linear(hidden, 6 * hidden, vb.pp("ada"))?,
            heads,
        })
    }

    /// `x` `[B, N, hidden]`, `c` `[B, hidden]`.
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let m = silu_linear(c, &self.ada)?.chunk(6, D::Minus1)?;
        let h = modulate(&layer_norm_plain(x, 1e-6)?, &m[0], &m[1])?;
        let h = self
            .proj
            .forward(&attention(&self.qkv.forward(&h)?, self.heads)?)?;
        let x = (x + h.broadcast_mul(&m[2].unsqueeze(1)?)?)?;
        let h = modulate(&layer_norm_plain(&x, 1e-6)?, &m[3], &m[4])?;
        let h = self.fc2.forward(&gelu_tanh(&self.fc1.forward(&h)?)?)?;
        x + h.broadcast_mul(&m[5].unsqueeze(1)?)?
    }
}

/// The class-conditional DiT; see the module docs.
#[derive(Debug)]
pub struct DiT {
    patch_embed: Linear,
    /// Fixed `[1, N, hidden]` 2-D sin-cos positions (not a parameter).
    pos: Tensor,
    time_in: Linear,
    time_out: Linear,
    class_emb: Embedding,
    blocks: Vec<DiTBlock>,
    final_ada: Linear,
    final_proj: Linear,
    cfg: DiTConfig,
}

/// 2-D sin-cos positions: half the width encodes the row, half the column.
fn positions(grid: usize, dim: usize, device: &candle_core::Device) -> Result<Tensor> {
    let quarter = dim / 4;
    let mut data = Vec::with_capacity(grid * grid * dim);
    for r in 0..grid {
        for c in 0..grid {
            for coord in [r, c] {
                let angles: Vec<f64> = (0..quarter)
                    .map(|i| coord as f64 / 10000f64.powf(i as f64 / quarter as f64))
                    .collect();
                data.extend(angles.iter().map(|a| a.sin() as f32));
                data.extend(angles.iter().map(|a| a.cos() as f32));
            }
        }
    }
    Tensor::from_vec(data, (1, grid * grid, dim), device)
}

impl DiT {
    pub fn new(cfg: &DiTConfig, vb: VarBuilder) -> Result<DiT> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let p = cfg.patch_size;
        let d = cfg.hidden;
        let blocks = (0..cfg.depth)
            .map(|i| DiTBlock::new(d, cfg.heads, cfg.mlp_ratio, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(DiT {
            patch_embed: candle_nn::linear(cfg.in_channels * p * p, d, vb.pp("patch_embed"))?,
            pos: positions(cfg.grid(), d, vb.device())?,
            time_in: candle_nn::linear(cfg.freq_dim, d, vb.pp("time.0"))?,
            time_out: candle_nn::linear(d, d, vb.pp("time.1"))?,
            class_emb: candle_nn::embedding(cfg.num_classes + 1, d, vb.pp("class_emb"))?,
            blocks,
            final_ada: zero_linear(d, 2 * d, vb.pp("final.ada"))?,
            final_proj: zero_linear(d, p * p * cfg.in_channels, vb.pp("final.proj"))?,
            cfg: cfg.clone(),
        })
    }

    /// `[B, C, H, W] → [B, N, C·p·p]`, patches in row-major order.
    fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let (p, g) = (self.cfg.patch_size, self.cfg.grid());
        x.reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, g * g, c * p * p))
    }

    /// The inverse of [`Self::patchify`].
    fn unpatchify(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let (p, g, c) = (self.cfg.patch_size, self.cfg.grid(), self.cfg.in_channels);
        x.reshape((b, g, g, c, p, p))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, c, g * p, g * p))
    }

    /// `x` `[B, C, H, W]`, `t` `[B]` f32, `labels` `[B]` u32 (∅ = num_classes).
    pub fn forward(&self, x: &Tensor, t: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let s = self.cfg.image_size;
        if c != self.cfg.in_channels || h != s || w != s {
            candle_core::bail!(
                "DiT built for {}×{s}×{s} inputs, got {c}×{h}×{w}",
                self.cfg.in_channels
            );
        }
        let temb = timestep_features(t, self.cfg.freq_dim)?;
        let temb = self
            .time_out
            .forward(&self.time_in.forward(&temb)?.silu()?)?;
        let cond = (temb + self.class_emb.forward(labels)?)?;
        let mut tokens = self
            .patch_embed
            .forward(&self.patchify(x)?)?
            .broadcast_add(&self.pos)?;
        for block in &self.blocks {
            tokens = block.forward(&tokens, &cond)?;
        }
        let m = silu_linear(&cond, &self.final_ada)?.chunk(2, D::Minus1)?;
        let out = modulate(&layer_norm_plain(&tokens, 1e-6)?, &m[0], &m[1])?;
        self.unpatchify(&self.final_proj.forward(&out)?)
    }
}
