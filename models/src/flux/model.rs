//! Flux.1's transformer (diffusers' `FluxTransformer2DModel`, with its
//! parameter names): double-stream blocks that keep text and image weights
//! apart but attend jointly, then single-stream blocks over the joined
//! sequence with attention and MLP in parallel; positions by rotary
//! embedding over three axes (unused, row, column); 2×2 patches of the
//! 16-channel latent; dev's distilled guidance as a second timestep input.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use serde::Deserialize;
use weft_kernels::layers::Linear;

use crate::dit::{self, FeedForward, MlpEmbedder, Modulation, PlainNorm, Qkv};
use crate::loader::Loader;
use crate::sd3::mmdit::pad_to_patches;

/// diffusers' `FluxTransformer2DModel` config (its defaults where absent).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct FluxConfig {
    pub patch_size: usize,
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    pub num_layers: usize,
    pub num_single_layers: usize,
    pub attention_head_dim: usize,
    pub num_attention_heads: usize,
    pub joint_attention_dim: usize,
    pub pooled_projection_dim: usize,
    /// dev: the distilled guidance strength is an input.
    pub guidance_embeds: bool,
    pub axes_dims_rope: Vec<usize>,
}

/// diffusers' `FluxTransformer2DModel` defaults (Flux.1's sizes).
impl Default for FluxConfig {
    fn default() -> Self {
        FluxConfig {
            patch_size: 1,
            in_channels: 64,
            out_channels: None,
            num_layers: 19,
            num_single_layers: 38,
            attention_head_dim: 128,
            num_attention_heads: 24,
            joint_attention_dim: 4096,
            pooled_projection_dim: 768,
            guidance_embeds: false,
            axes_dims_rope: vec![16, 56, 56],
        }
    }
}

impl FluxConfig {
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Latent channels (the output's): 2×2 patches of them are packed.
    pub fn latent_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels) / 4
    }

    /// Channels the transformer takes before packing: the latent's, plus
    /// Fill's image latent and 8×8-folded mask (16 + 16 + 64) or
    /// Canny/Depth's control latent (16 + 16).
    pub fn input_channels(&self) -> usize {
        self.in_channels / 4
    }
}

/// Rotary position tables `(cos, sin)`, each `[N, Dh/2]`, for position ids
/// `[N, 3]`: per axis, angles id·θ^(−2k/d) computed in f64 as diffusers.
pub fn rope_tables(ids: &[[f64; 3]], axes: &[usize], dev: &Device) -> Result<(Tensor, Tensor)> {
    let half: usize = axes.iter().map(|d| d / 2).sum();
    let (mut cos, mut sin) = (Vec::with_capacity(ids.len() * half), Vec::new());
    for id in ids {
        for (axis, &d) in axes.iter().enumerate() {
            for k in 0..d / 2 {
                let freq = 1.0 / 10000f64.powf((2 * k) as f64 / d as f64);
                let angle = id[axis] * freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (ids.len(), half), dev)?,
        Tensor::from_vec(sin, (ids.len(), half), dev)?,
    ))
}

/// Rotates each adjacent feature pair of every head of `x` `[B, N, H·Dh]`.
fn rotate(x: &Tensor, rope: &(Tensor, Tensor)) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    let half = rope.0.dim(1)?;
    let heads = c / (2 * half);
    let x = x.reshape((b, n, heads, half, 2))?;
    let (x0, x1) = (x.narrow(4, 0, 1)?, x.narrow(4, 1, 1)?);
    let table = |t: &Tensor| t.reshape((1, n, 1, half, 1));
    let (cos, sin) = (table(&rope.0)?, table(&rope.1)?);
    let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let r1 = (x1.broadcast_mul(&cos)? + x0.broadcast_mul(&sin)?)?;
    Tensor::cat(&[r0, r1], 4)?.reshape((b, n, c))
}

/// Attention over q, k, v with rotary positions on q and k.
fn rope_attention(qkv: [Tensor; 3], rope: &(Tensor, Tensor), heads: usize) -> Result<Tensor> {
    let [q, k, v] = qkv;
    dit::attention(&rotate(&q, rope)?, &rotate(&k, rope)?, &v, heads)
}

/// A double-stream block (`FluxTransformerBlock`).
#[derive(Debug)]
struct DoubleBlock {
    norm1: Modulation,
    norm1_context: Modulation,
    image: Qkv,
    text: Qkv,
    to_out: Linear,
    to_add_out: Linear,
    ff: FeedForward,
    ff_context: FeedForward,
    norm: PlainNorm,
    heads: usize,
}

impl DoubleBlock {
    fn new(cfg: &FluxConfig, l: Loader, dev: &Device) -> Result<DoubleBlock> {
        let (dim, hd) = (cfg.inner_dim(), cfg.attention_head_dim);
        let attn = l.pp("attn");
        Ok(DoubleBlock {
            norm1: Modulation::new(dim, 6, l.pp("norm1.linear"))?,
            norm1_context: Modulation::new(dim, 6, l.pp("norm1_context.linear"))?,
            image: Qkv::new(
                dim,
                hd,
                ["to_q", "to_k", "to_v"],
                Some(["norm_q", "norm_k"]),
                &attn,
            )?,
            text: Qkv::new(
                dim,
                hd,
                ["add_q_proj", "add_k_proj", "add_v_proj"],
                Some(["norm_added_q", "norm_added_k"]),
                &attn,
            )?,
            to_out: attn.pp("to_out.0").linear(dim, dim)?,
            to_add_out: attn.pp("to_add_out").linear(dim, dim)?,
            ff: FeedForward::new(dim, 4 * dim, l.pp("ff"))?,
            ff_context: FeedForward::new(dim, 4 * dim, l.pp("ff_context"))?,
            norm: PlainNorm::new(dim, dev)?,
            heads: cfg.num_attention_heads,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        ctx: &Tensor,
        c: &Tensor,
        rope: &(Tensor, Tensor),
    ) -> Result<(Tensor, Tensor)> {
        let m = self.norm1.forward(c)?;
        let mc = self.norm1_context.forward(c)?;
        let [qi, ki, vi] = self.image.forward(&self.norm.modulate(x, &m[0], &m[1])?)?;
        let [qt, kt, vt] = self
            .text
            .forward(&self.norm.modulate(ctx, &mc[0], &mc[1])?)?;
        // Text tokens first, then image, as Flux joins them.
        let joined = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, b], 1);
        let out = rope_attention(
            [joined(&qt, &qi)?, joined(&kt, &ki)?, joined(&vt, &vi)?],
            rope,
            self.heads,
        )?;
        let l = ctx.dim(1)?;
        let gate = |g: &Tensor, t: Tensor| t.broadcast_mul(&g.unsqueeze(1)?);
        let image_out = out.narrow(1, l, out.dim(1)? - l)?;
        let x = (x + gate(&m[2], self.to_out.forward(&image_out)?)?)?;
        let h = self.norm.modulate(&x, &m[3], &m[4])?;
        let x = (&x + gate(&m[5], self.ff.forward(&h)?)?)?;
        let ctx = (ctx + gate(&mc[2], self.to_add_out.forward(&out.narrow(1, 0, l)?)?)?)?;
        let h = self.norm.modulate(&ctx, &mc[3], &mc[4])?;
        let ctx = (&ctx + gate(&mc[5], self.ff_context.forward(&h)?)?)?;
        Ok((x, ctx))
    }
}

/// A single-stream block (`FluxSingleTransformerBlock`): attention and an
/// MLP side by side over the joined sequence, one output projection.
#[derive(Debug)]
struct SingleBlock {
    modulation: Modulation,
    qkv: Qkv,
    proj_mlp: Linear,
    proj_out: Linear,
    norm: PlainNorm,
    heads: usize,
}

impl SingleBlock {
    fn new(cfg: &FluxConfig, l: Loader, dev: &Device) -> Result<SingleBlock> {
        let (dim, hd) = (cfg.inner_dim(), cfg.attention_head_dim);
        Ok(SingleBlock {
            modulation: Modulation::new(dim, 3, l.pp("norm.linear"))?,
            qkv: Qkv::new(
                dim,
                hd,
                ["to_q", "to_k", "to_v"],
                Some(["norm_q", "norm_k"]),
                &l.pp("attn"),
            )?,
            proj_mlp: l.pp("proj_mlp").linear(dim, 4 * dim)?,
            proj_out: l.pp("proj_out").linear(5 * dim, dim)?,
            norm: PlainNorm::new(dim, dev)?,
            heads: cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, c: &Tensor, rope: &(Tensor, Tensor)) -> Result<Tensor> {
        let m = self.modulation.forward(c)?;
        let h = self.norm.modulate(x, &m[0], &m[1])?;
        let mlp = self.proj_mlp.forward(&h)?.gelu()?;
        let attn = rope_attention(self.qkv.forward(&h)?, rope, self.heads)?;
        let out = self
            .proj_out
            .forward(&Tensor::cat(&[attn, mlp], D::Minus1)?)?;
        x + out.broadcast_mul(&m[2].unsqueeze(1)?)?
    }
}

/// The Flux transformer.
#[derive(Debug)]
pub struct FluxTransformer {
    x_embedder: Linear,
    context_embedder: Linear,
    time: MlpEmbedder,
    guidance: Option<MlpEmbedder>,
    pooled: MlpEmbedder,
    double: Vec<DoubleBlock>,
    single: Vec<SingleBlock>,
    norm_out: Modulation,
    norm: PlainNorm,
    proj_out: Linear,
    cfg: FluxConfig,
}

impl FluxTransformer {
    pub fn new(cfg: &FluxConfig, l: Loader) -> Result<FluxTransformer> {
        let dim = cfg.inner_dim();
        let dev = l.vb().device().clone();
        if cfg.axes_dims_rope.iter().sum::<usize>() != cfg.attention_head_dim {
            candle_core::bail!(
                "Flux rotary axes {:?} do not add up to the head width {}",
                cfg.axes_dims_rope,
                cfg.attention_head_dim
            );
        }
        let tte = l.pp("time_text_embed");
        let out = cfg.out_channels.unwrap_or(cfg.in_channels);
        Ok(FluxTransformer {
            x_embedder: l.pp("x_embedder").linear(cfg.in_channels, dim)?,
            context_embedder: l
                .pp("context_embedder")
                .linear(cfg.joint_attention_dim, dim)?,
            time: MlpEmbedder::new(256, dim, tte.pp("timestep_embedder"))?,
            guidance: cfg
                .guidance_embeds
                .then(|| MlpEmbedder::new(256, dim, tte.pp("guidance_embedder")))
                .transpose()?,
            pooled: MlpEmbedder::new(cfg.pooled_projection_dim, dim, tte.pp("text_embedder"))?,
            double: (0..cfg.num_layers)
                .map(|i| DoubleBlock::new(cfg, l.pp(format!("transformer_blocks.{i}")), &dev))
                .collect::<Result<_>>()?,
            single: (0..cfg.num_single_layers)
                .map(|i| {
                    SingleBlock::new(cfg, l.pp(format!("single_transformer_blocks.{i}")), &dev)
                })
                .collect::<Result<_>>()?,
            norm_out: Modulation::new(dim, 2, l.pp("norm_out.linear"))?,
            norm: PlainNorm::new(dim, &dev)?,
            proj_out: l.pp("proj_out").linear(dim, cfg.patch_size.pow(2) * out)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &FluxConfig {
        &self.cfg
    }

    /// The velocity `[B, latent channels, H, W]` for inputs `x`
    /// `[B, in_channels / 4, H, W]` (the latent and any image inputs) at
    /// timesteps `t` (σ·1000), text states `context` `[B, L, joint]`,
    /// `pooled` `[B, P]` and, for dev, `guidance` (the strength, ×1000 as
    /// diffusers feeds it).
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        context: &Tensor,
        pooled: &Tensor,
        guidance: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let padded = pad_to_patches(x, 2)?;
        let (hp, wp) = (padded.dim(2)? / 2, padded.dim(3)? / 2);
        let tokens = pack(&padded)?;
        let dev = x.device();
        let features = |v: &Tensor| -> Result<Tensor> {
            dit::timestep_features(&v.to_dtype(DType::F32)?.to_vec1::<f32>()?, 256, dev)
        };
        let mut cond = (self.time.forward(&features(t)?)? + self.pooled.forward(pooled)?)?;
        if let Some(embedder) = &self.guidance {
            let g = guidance.ok_or_else(|| {
                candle_core::Error::Msg(
                    "this Flux model (dev) needs a guidance strength (FluxGuidance)".into(),
                )
            })?;
            cond = (cond + embedder.forward(&features(g)?)?)?;
        }
        let l = context.dim(1)?;
        let mut ids = vec![[0.0; 3]; l];
        for r in 0..hp {
            for col in 0..wp {
                ids.push([0.0, r as f64, col as f64]);
            }
        }
        let rope = rope_tables(&ids, &self.cfg.axes_dims_rope, dev)?;
        let mut x = self.x_embedder.forward(&tokens)?;
        let mut ctx = self.context_embedder.forward(context)?;
        for block in &self.double {
            (x, ctx) = block.forward(&x, &ctx, &cond, &rope)?;
        }
        let mut joined = Tensor::cat(&[&ctx, &x], 1)?;
        for block in &self.single {
            joined = block.forward(&joined, &cond, &rope)?;
        }
        let x = joined.narrow(1, l, hp * wp)?;
        let m = self.norm_out.forward(&cond)?;
        let x = self
            .proj_out
            .forward(&self.norm.modulate(&x, &m[1], &m[0])?)?;
        unpack(&x, b, self.cfg.latent_channels(), hp, wp)?
            .narrow(2, 0, h)?
            .narrow(3, 0, w)
    }
}

/// `[B, C, 2h, 2w]` → `[B, h·w, 4C]`: each 2×2 patch's features in
/// (channel, row, column) order, as diffusers' `_pack_latents`.
pub fn pack(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, (h / 2) * (w / 2), c * 4))
}

/// The inverse of [`pack`].
pub fn unpack(x: &Tensor, b: usize, c: usize, hp: usize, wp: usize) -> Result<Tensor> {
    x.reshape((b, hp, wp, c, 2, 2))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, c, hp * 2, wp * 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_are_inverse_and_group_patches() {
        let x = Tensor::arange(0f32, 32.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 4, 4))
            .unwrap();
        let p = pack(&x).unwrap();
        assert_eq!(p.dims(), [1, 4, 8]);
        // The first patch: channel 0's top-left 2×2, then channel 1's.
        let first = p.get(0).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(first, vec![0.0, 1.0, 4.0, 5.0, 16.0, 17.0, 20.0, 21.0]);
        let back = unpack(&p, 1, 2, 2, 2).unwrap();
        let same = back
            .eq(&x)
            .unwrap()
            .min_all()
            .unwrap()
            .to_scalar::<u8>()
            .unwrap();
        assert_eq!(same, 1);
    }

    /// A rotation by the angle of position 1 on axis 0 of a one-pair head.
    #[test]
    fn rotary_embedding_rotates_pairs() {
        let dev = Device::Cpu;
        let rope = rope_tables(&[[1.0, 0.0, 0.0]], &[2, 0, 0], &dev).unwrap();
        let x = Tensor::new(&[[[1f32, 0.0]]], &dev).unwrap();
        let r = rotate(&x, &rope)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((r[0] - 1f32.cos()).abs() < 1e-6 && (r[1] - 1f32.sin()).abs() < 1e-6);
    }
}
