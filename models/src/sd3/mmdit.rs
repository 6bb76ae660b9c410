//! SD3's and SD3.5's MM-DiT (diffusers' `SD3Transformer2DModel`, with its
//! parameter names): image patches and text tokens in two streams with
//! their own weights, joined for attention, each modulated by the timestep
//! and pooled text; SD3.5 adds per-head RMS q/k norms and, in its medium
//! model (MMDiT-X), a second self-attention over the image stream in the
//! first blocks.

use candle_core::{Device, Module, Result, Tensor};
use serde::Deserialize;
use weft_kernels::layers::{self, Conv2d, Linear};

use crate::dit::{self, FeedForward, MlpEmbedder, Modulation, PlainNorm, Qkv};
use crate::loader::Loader;

/// diffusers' `SD3Transformer2DModel` config (its defaults where absent).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct Sd3Config {
    pub sample_size: usize,
    pub patch_size: usize,
    pub in_channels: usize,
    pub num_layers: usize,
    pub attention_head_dim: usize,
    pub num_attention_heads: usize,
    pub joint_attention_dim: usize,
    pub caption_projection_dim: usize,
    pub pooled_projection_dim: usize,
    pub out_channels: usize,
    pub pos_embed_max_size: Option<usize>,
    /// Blocks with MMDiT-X's second image self-attention (SD3.5 medium: 0–12).
    pub dual_attention_layers: Vec<usize>,
    /// `"rms_norm"` (SD3.5) or none (SD3).
    pub qk_norm: Option<String>,
}

/// diffusers' `SD3Transformer2DModel` defaults (SD3 medium's sizes).
impl Default for Sd3Config {
    fn default() -> Self {
        Sd3Config {
            sample_size: 128,
            patch_size: 2,
            in_channels: 16,
            num_layers: 18,
            attention_head_dim: 64,
            num_attention_heads: 18,
            joint_attention_dim: 4096,
            caption_projection_dim: 1152,
            pooled_projection_dim: 2048,
            out_channels: 16,
            pos_embed_max_size: Some(96),
            dual_attention_layers: Vec::new(),
            qk_norm: None,
        }
    }
}

impl Sd3Config {
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
}

/// One `JointTransformerBlock`. The last block is "context pre-only": its
/// text stream feeds attention but is not updated.
#[derive(Debug)]
struct JointBlock {
    /// 6 vectors (9 with the second attention): shift, scale, gate of
    /// attention and of the MLP (and of the second attention).
    norm1: Modulation,
    /// 6 vectors, or `[scale, shift]` in the last block.
    norm1_context: Modulation,
    image: Qkv,
    text: Qkv,
    to_out: Linear,
    to_add_out: Option<Linear>,
    attn2: Option<(Qkv, Linear)>,
    ff: FeedForward,
    ff_context: Option<FeedForward>,
    norm: PlainNorm,
    heads: usize,
}

impl JointBlock {
    fn new(cfg: &Sd3Config, pre_only: bool, l: Loader, dev: &Device) -> Result<JointBlock> {
        let dim = cfg.inner_dim();
        let hd = cfg.attention_head_dim;
        let attn = l.pp("attn");
        let dual = l.contains("attn2.to_q.weight");
        let qk = dit::has_norm(&attn, "norm_q");
        let image = Qkv::new(
            dim,
            hd,
            ["to_q", "to_k", "to_v"],
            qk.then_some(["norm_q", "norm_k"]),
            &attn,
        )?;
        let text = Qkv::new(
            dim,
            hd,
            ["add_q_proj", "add_k_proj", "add_v_proj"],
            qk.then_some(["norm_added_q", "norm_added_k"]),
            &attn,
        )?;
        let attn2 = if dual {
            let a2 = l.pp("attn2");
            let qkv = Qkv::new(
                dim,
                hd,
                ["to_q", "to_k", "to_v"],
                qk.then_some(["norm_q", "norm_k"]),
                &a2,
            )?;
            Some((qkv, a2.pp("to_out.0").linear(dim, dim)?))
        } else {
            None
        };
        Ok(JointBlock {
            norm1: Modulation::new(dim, if dual { 9 } else { 6 }, l.pp("norm1.linear"))?,
            norm1_context: Modulation::new(
                dim,
                if pre_only { 2 } else { 6 },
                l.pp("norm1_context.linear"),
            )?,
            image,
            text,
            to_out: attn.pp("to_out.0").linear(dim, dim)?,
            to_add_out: (!pre_only)
                .then(|| attn.pp("to_add_out").linear(dim, dim))
                .transpose()?,
            attn2,
            ff: FeedForward::new(dim, 4 * dim, l.pp("ff"))?,
            ff_context: (!pre_only)
                .then(|| FeedForward::new(dim, 4 * dim, l.pp("ff_context")))
                .transpose()?,
            norm: PlainNorm::new(dim, dev)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// Image tokens `x`, text tokens `ctx`, conditioning `c` `[B, D]`.
    fn forward(&self, x: &Tensor, ctx: &Tensor, c: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let input = x;
        let m = self.norm1.forward(c)?;
        let xn = self.norm.modulate(x, &m[0], &m[1])?;
        let mc = self.norm1_context.forward(c)?;
        let cn = if self.ff_context.is_some() {
            self.norm.modulate(ctx, &mc[0], &mc[1])?
        } else {
            // AdaLayerNormContinuous: scale first, then shift.
            self.norm.modulate(ctx, &mc[1], &mc[0])?
        };
        let [qi, ki, vi] = self.image.forward(&xn)?;
        let [qt, kt, vt] = self.text.forward(&cn)?;
        let n = x.dim(1)?;
        // Image tokens first, then text, as diffusers joins them.
        let joined = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], 1);
        let out = dit::attention(
            &joined(&qi, &qt)?,
            &joined(&ki, &kt)?,
            &joined(&vi, &vt)?,
            self.heads,
        )?;
        let gate = |g: &Tensor, t: Tensor| t.broadcast_mul(&g.unsqueeze(1)?);
        let mut x = (x + gate(&m[2], self.to_out.forward(&out.narrow(1, 0, n)?)?)?)?;
        if let Some((qkv, out2)) = &self.attn2 {
            // MMDiT-X: a second self-attention of the block's input, modulated apart.
            let [q, k, v] = qkv.forward(&self.norm.modulate(input, &m[6], &m[7])?)?;
            let a2 = dit::attention(&q, &k, &v, self.heads)?;
            x = (x + gate(&m[8], out2.forward(&a2)?)?)?;
        }
        let h = self.norm.modulate(&x, &m[3], &m[4])?;
        let x = (&x + gate(&m[5], self.ff.forward(&h)?)?)?;
        let ctx = match (&self.to_add_out, &self.ff_context) {
            (Some(add_out), Some(ff)) => {
                let t = out.narrow(1, n, out.dim(1)? - n)?;
                let ctx = (ctx + gate(&mc[2], add_out.forward(&t)?)?)?;
                let h = self.norm.modulate(&ctx, &mc[3], &mc[4])?;
                Some((&ctx + gate(&mc[5], ff.forward(&h)?)?)?)
            }
            _ => None,
        };
        Ok((x, ctx))
    }
}

/// The whole transformer: patch embedding with its cropped position table,
/// the blocks, and the final modulated projection back to latent patches.
#[derive(Debug)]
pub struct Sd3Transformer {
    patch: Conv2d,
    /// `[max, max, D]`: the sin-cos position table, cropped per input size.
    positions: Tensor,
    time: MlpEmbedder,
    pooled: MlpEmbedder,
    context: Linear,
    blocks: Vec<JointBlock>,
    norm_out: Modulation,
    norm: PlainNorm,
    proj_out: Linear,
    cfg: Sd3Config,
}

impl Sd3Transformer {
    pub fn new(cfg: &Sd3Config, l: Loader) -> Result<Sd3Transformer> {
        let dim = cfg.inner_dim();
        let dev = l.vb().device().clone();
        let p = cfg.patch_size;
        let max = cfg.pos_embed_max_size.ok_or_else(|| {
            candle_core::Error::Msg("an SD3 transformer without pos_embed_max_size".into())
        })?;
        let positions = l
            .get((1, max * max, dim), "pos_embed.pos_embed")?
            .reshape((max, max, dim))?;
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                JointBlock::new(
                    cfg,
                    i + 1 == cfg.num_layers,
                    l.pp(format!("transformer_blocks.{i}")),
                    &dev,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Sd3Transformer {
            patch: layers::conv2d(cfg.in_channels, dim, p, p, 0, l.vb().pp("pos_embed.proj"))?,
            positions,
            time: MlpEmbedder::new(256, dim, l.pp("time_text_embed.timestep_embedder"))?,
            pooled: MlpEmbedder::new(
                cfg.pooled_projection_dim,
                dim,
                l.pp("time_text_embed.text_embedder"),
            )?,
            context: l
                .pp("context_embedder")
                .linear(cfg.joint_attention_dim, cfg.caption_projection_dim)?,
            blocks,
            norm_out: Modulation::new(dim, 2, l.pp("norm_out.linear"))?,
            norm: PlainNorm::new(dim, &dev)?,
            proj_out: l.pp("proj_out").linear(dim, p * p * cfg.out_channels)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Sd3Config {
        &self.cfg
    }

    /// The velocity for latents `x` `[B, C, H, W]` at timesteps `t` (σ·1000),
    /// text states `context` `[B, L, joint]` and `pooled` `[B, P]`. Blocks
    /// in `skip` are left out (skip-layer guidance).
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        context: &Tensor,
        pooled: &Tensor,
        skip: &[usize],
    ) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        let padded = pad_to_patches(x, p)?;
        let (hp, wp) = (padded.dim(2)? / p, padded.dim(3)? / p);
        let tokens = self
            .patch
            .forward(&padded)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let mut x = tokens.broadcast_add(&self.cropped_positions(hp, wp)?)?;
        let t: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let c = (self
            .time
            .forward(&dit::timestep_features(&t, 256, x.device())?)?
            + self.pooled.forward(pooled)?)?;
        let mut ctx = self.context.forward(context)?;
        for (i, block) in self.blocks.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            let (nx, nctx) = block.forward(&x, &ctx, &c)?;
            x = nx;
            if let Some(nctx) = nctx {
                ctx = nctx;
            }
        }
        let m = self.norm_out.forward(&c)?;
        let x = self
            .proj_out
            .forward(&self.norm.modulate(&x, &m[1], &m[0])?)?;
        let c_out = self.cfg.out_channels;
        x.reshape((b, hp, wp, p, p, c_out))?
            .permute((0, 5, 1, 3, 2, 4))?
            .reshape((b, c_out, hp * p, wp * p))?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)
    }

    /// The centre `hp`×`wp` of the position table, `[1, hp·wp, D]`.
    fn cropped_positions(&self, hp: usize, wp: usize) -> Result<Tensor> {
        let (max, _, dim) = self.positions.dims3()?;
        if hp > max || wp > max {
            candle_core::bail!(
                "a latent of {hp}×{wp} patches exceeds this SD3 model's position table of {max}×{max}"
            );
        }
        let (top, left) = ((max - hp) / 2, (max - wp) / 2);
        self.positions
            .narrow(0, top, hp)?
            .narrow(1, left, wp)?
            .reshape((1, hp * wp, dim))
    }
}

/// `x` padded on the bottom and right to a multiple of `p` by wrapping
/// around, as ComfyUI pads latents for its DiTs.
pub fn pad_to_patches(x: &Tensor, p: usize) -> Result<Tensor> {
    let mut x = x.clone();
    for dim in [2, 3] {
        let n = x.dim(dim)?;
        let extra = (p - n % p) % p;
        if extra > 0 {
            x = Tensor::cat(&[&x, &x.narrow(dim, 0, extra)?], dim)?;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_wraps_around_to_whole_patches() {
        let x = Tensor::arange(0f32, 15.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3, 5))
            .unwrap();
        let p = pad_to_patches(&x, 2).unwrap();
        assert_eq!(p.dims(), [1, 1, 4, 6]);
        let rows = p
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(rows[0], vec![0.0, 1.0, 2.0, 3.0, 4.0, 0.0]);
        assert_eq!(rows[3], rows[0]);
    }

    #[test]
    fn the_default_config_is_sd3_medium() {
        let cfg: Sd3Config = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.inner_dim(), 1152);
        assert_eq!(cfg.pos_embed_max_size, Some(96));
    }
}
