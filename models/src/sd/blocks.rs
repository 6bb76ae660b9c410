//! The building blocks of the Stable Diffusion UNet, shared with the VAE and
//! ControlNet: diffusers' `ResnetBlock2D`, `Transformer2DModel` and the
//! encoder half (time embedding, down levels, middle block), with
//! diffusers' parameter names.
//!
//! Ours rather than candle-transformers': that one drops `norm_num_groups`
//! in its down blocks, uses the tanh GELU where diffusers' GEGLU uses the
//! exact one, and computes full attention matrices (1 GB at 512×512).

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use weft_kernels::attention;
use weft_kernels::layers::{self, Conv2d, GroupNorm, Linear};
use weft_sampling::attention_hook;

use super::config::UNetSpec;

pub(crate) fn conv(i: usize, o: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    layers::conv2d(i, o, k, stride, k / 2, vb)
}

/// Sinusoidal timestep features, diffusers' `Timesteps` (cos first when flipped).
pub(crate) fn timestep_features(
    t: f64,
    dim: usize,
    flip: bool,
    shift: f64,
    batch: usize,
) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let e = (-(10000f64.ln()) * i as f64 / (half as f64 - shift)).exp();
            (t * e) as f32
        })
        .collect();
    let args = Tensor::new(freqs, &candle_core::Device::Cpu)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let emb = if flip {
        Tensor::cat(&[cos, sin], 0)?
    } else {
        Tensor::cat(&[sin, cos], 0)?
    };
    emb.unsqueeze(0)?.repeat((batch, 1))
}

/// diffusers' `ResnetBlock2D` with a time embedding.
#[derive(Debug)]
pub(crate) struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResBlock {
    /// A UNet block, with the time embedding of width `temb`.
    pub(crate) fn new(
        spec: &UNetSpec,
        in_c: usize,
        out_c: usize,
        temb: usize,
        vb: VarBuilder,
    ) -> Result<ResBlock> {
        let (g, eps) = (spec.config.norm_num_groups, spec.config.norm_eps);
        ResBlock::with(in_c, out_c, Some(temb), g, eps, vb)
    }

    /// Any block; the VAE's have no time embedding.
    pub(crate) fn with(
        in_c: usize,
        out_c: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<ResBlock> {
        Ok(ResBlock {
            norm1: layers::group_norm(groups, in_c, eps, vb.pp("norm1"))?,
            conv1: conv(in_c, out_c, 3, 1, vb.pp("conv1"))?,
            time_emb_proj: temb
                .map(|t| layers::linear(t, out_c, vb.pp("time_emb_proj")))
                .transpose()?,
            norm2: layers::group_norm(groups, out_c, eps, vb.pp("norm2"))?,
            conv2: conv(out_c, out_c, 3, 1, vb.pp("conv2"))?,
            shortcut: (in_c != out_c)
                .then(|| conv(in_c, out_c, 1, 1, vb.pp("conv_shortcut")))
                .transpose()?,
        })
    }

    /// `temb_act` is SiLU(time embedding), shared by every block (none in
    /// the VAE).
    pub(crate) fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb_act) {
            h = h.broadcast_add(&proj.forward(t)?.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Multi-head attention with diffusers' `to_q/to_k/to_v/to_out.0`.
#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    /// The weight prefix, by which attention hooks pick layers.
    name: String,
}

impl Attention {
    fn new(dim: usize, context: usize, heads: usize, vb: VarBuilder) -> Result<Attention> {
        Ok(Attention {
            name: vb.prefix(),
            q: layers::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            k: layers::linear_no_bias(context, dim, vb.pp("to_k"))?,
            v: layers::linear_no_bias(context, dim, vb.pp("to_v"))?,
            out: layers::linear(dim, dim, vb.pp("to_out.0"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let (q, k, v) = (
            self.q.forward(x)?,
            self.k.forward(ctx)?,
            self.v.forward(ctx)?,
        );
        let attended = match attention_hook::hooked(&self.name, &q, &k, &v, self.heads)? {
            Some(replaced) => replaced,
            None => attention::attention(&q, &k, &v, self.heads)?,
        };
        self.out.forward(&attended)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention and
/// a GEGLU feed-forward, each pre-norm and residual.
#[derive(Debug)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(dim: usize, context: usize, heads: usize, vb: VarBuilder) -> Result<TransformerBlock> {
        let inner = 4 * dim;
        Ok(TransformerBlock {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, dim, heads, vb.pp("attn1"))?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(dim, context, heads, vb.pp("attn2"))?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: layers::linear(dim, 2 * inner, vb.pp("ff.net.0.proj"))?,
            ff_out: layers::linear(inner, dim, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            + x)?;
        let h = self.ff_in.forward(&self.norm3.forward(&x)?)?;
        // GEGLU with the exact (erf) GELU, as diffusers.
        self.ff_out.forward(&layers::geglu(&h)?)? + x
    }
}

/// A 1×1 conv (SD 1.x) or a linear layer (SD 2.x) into or out of the blocks.
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers' `Transformer2DModel`: GroupNorm, project in, transformer
/// blocks over the H·W positions, project out, plus the input.
#[derive(Debug)]
pub(crate) struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

impl SpatialTransformer {
    pub(crate) fn new(
        spec: &UNetSpec,
        channels: usize,
        heads: usize,
        depth: usize,
        vb: VarBuilder,
    ) -> Result<SpatialTransformer> {
        if heads == 0 || channels / heads * heads != channels {
            candle_core::bail!("{channels} channels do not split into {heads} attention heads");
        }
        let c = &spec.config;
        let proj = |vb: VarBuilder| -> Result<Projection> {
            Ok(if c.use_linear_projection {
                Projection::Linear(layers::linear(channels, channels, vb)?)
            } else {
                Projection::Conv(conv(channels, channels, 1, 1, vb)?)
            })
        };
        Ok(SpatialTransformer {
            norm: layers::group_norm(c.norm_num_groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: proj(vb.pp("proj_in"))?,
            blocks: (0..depth)
                .map(|i| {
                    TransformerBlock::new(
                        channels,
                        c.cross_attention_dim,
                        heads,
                        vb.pp(format!("transformer_blocks.{i}")),
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: proj(vb.pp("proj_out"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = |t: Tensor| t.flatten_from(2)?.transpose(1, 2)?.contiguous();
        let image = |t: Tensor| t.transpose(1, 2)?.reshape((b, c, h, w));
        let n = self.norm.forward(x)?;
        let mut t = match &self.proj_in {
            Projection::Conv(p) => tokens(p.forward(&n)?)?,
            Projection::Linear(p) => p.forward(&tokens(n)?)?,
        };
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(p) => p.forward(&image(t)?)?,
            Projection::Linear(p) => image(p.forward(&t)?)?,
        };
        out + x
    }
}

/// A ResNet block and, at attention levels, the transformer after it.
#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) res: ResBlock,
    pub(crate) attn: Option<SpatialTransformer>,
}

impl Stage {
    pub(crate) fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.res.forward(x, Some(temb))?;
        match &self.attn {
            Some(a) => a.forward(&h, context),
            None => Ok(h),
        }
    }
}

/// The encoder half shared by the UNet and ControlNet: time embedding,
/// conv in, the down levels and the middle block.
#[derive(Debug)]
pub(crate) struct Encoder {
    time_1: Linear,
    time_2: Linear,
    /// SDXL's added embedding: the MLP over pooled text + micro-conditioning.
    added: Option<(Linear, Linear)>,
    pub(crate) conv_in: Conv2d,
    /// Per level: its stages, then the downsampler (absent at the last level).
    down: Vec<(Vec<Stage>, Option<Conv2d>)>,
    mid: (ResBlock, SpatialTransformer, ResBlock),
    spec: UNetSpec,
}

/// Heads of level `l` (diffusers stores the head count per level).
pub(crate) fn heads(spec: &UNetSpec, l: usize) -> usize {
    spec.config.blocks[l].attention_head_dim
}

impl Encoder {
    pub(crate) fn new(spec: &UNetSpec, vb: VarBuilder) -> Result<Encoder> {
        let c = &spec.config;
        if c.blocks.is_empty() {
            candle_core::bail!("a UNet needs at least one level");
        }
        let c0 = c.blocks[0].out_channels;
        let temb = 4 * c0;
        let mut down = Vec::with_capacity(c.blocks.len());
        let mut cur = c0;
        for (l, block) in c.blocks.iter().enumerate() {
            let vbl = vb.pp(format!("down_blocks.{l}"));
            let stages = (0..c.layers_per_block)
                .map(|j| {
                    let res = ResBlock::new(
                        spec,
                        if j == 0 { cur } else { block.out_channels },
                        block.out_channels,
                        temb,
                        vbl.pp(format!("resnets.{j}")),
                    )?;
                    let attn = match block.use_cross_attn {
                        Some(depth) => Some(SpatialTransformer::new(
                            spec,
                            block.out_channels,
                            heads(spec, l),
                            depth,
                            vbl.pp(format!("attentions.{j}")),
                        )?),
                        None => None,
                    };
                    Ok(Stage { res, attn })
                })
                .collect::<Result<Vec<_>>>()?;
            cur = block.out_channels;
            let ds = (l + 1 < c.blocks.len())
                .then(|| {
                    let vb = vbl.pp("downsamplers.0.conv");
                    layers::conv2d(cur, cur, 3, 2, c.downsample_padding, vb)
                })
                .transpose()?;
            down.push((stages, ds));
        }
        let last = c.blocks.len() - 1;
        let mvb = vb.pp("mid_block");
        let added = match &spec.added {
            Some(a) => Some((
                layers::linear(a.input_dim, temb, vb.pp("add_embedding.linear_1"))?,
                layers::linear(temb, temb, vb.pp("add_embedding.linear_2"))?,
            )),
            None => None,
        };
        Ok(Encoder {
            time_1: layers::linear(c0, temb, vb.pp("time_embedding.linear_1"))?,
            time_2: layers::linear(temb, temb, vb.pp("time_embedding.linear_2"))?,
            added,
            conv_in: conv(spec.in_channels, c0, 3, 1, vb.pp("conv_in"))?,
            down,
            mid: (
                ResBlock::new(spec, cur, cur, temb, mvb.pp("resnets.0"))?,
                SpatialTransformer::new(
                    spec,
                    cur,
                    heads(spec, last),
                    spec.mid_depth,
                    mvb.pp("attentions.0"),
                )?,
                ResBlock::new(spec, cur, cur, temb, mvb.pp("resnets.1"))?,
            ),
            spec: spec.clone(),
        })
    }

    /// SiLU of the time embedding for timestep `t`, batch `b`, plus SDXL's
    /// added embedding of `added` (`[b, input_dim]`, see [`added_input`]).
    pub(crate) fn time(&self, t: f64, b: usize, added: Option<&Tensor>) -> Result<Tensor> {
        let c = &self.spec.config;
        let f = timestep_features(
            t,
            c.blocks[0].out_channels,
            c.flip_sin_to_cos,
            c.freq_shift,
            b,
        )?;
        let emb = self.time_2.forward(&self.time_1.forward(&f)?.silu()?)?;
        let emb = match (&self.added, added) {
            (Some((l1, l2)), Some(a)) => (emb + l2.forward(&l1.forward(a)?.silu()?)?)?,
            (None, None) => emb,
            (Some(_), None) => candle_core::bail!(
                "this UNet (SDXL) needs a pooled text embedding and size conditioning"
            ),
            (None, Some(_)) => candle_core::bail!("this UNet takes no added embedding"),
        };
        emb.silu()
    }

    /// Runs the down levels on `h` (after conv in): every skip activation,
    /// and the middle block's output.
    pub(crate) fn down_and_mid(
        &self,
        mut h: Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor)> {
        let mut skips = vec![h.clone()];
        for (stages, ds) in &self.down {
            for s in stages {
                h = s.forward(&h, temb, context)?;
                skips.push(h.clone());
            }
            if let Some(ds) = ds {
                h = ds.forward(&h)?;
                skips.push(h.clone());
            }
        }
        let h = self.mid.0.forward(&h, Some(temb))?;
        let h = self.mid.1.forward(&h, context)?;
        let h = self.mid.2.forward(&h, Some(temb))?;
        Ok((skips, h))
    }
}

/// SDXL's added-embedding input: the pooled text embedding `[b, P]`
/// followed by each micro-conditioning number's sinusoidal features
/// (`numbers`: one row per item).
pub(crate) fn added_input(
    spec: &UNetSpec,
    pooled: &Tensor,
    numbers: &[Vec<f64>],
) -> Result<Tensor> {
    let Some(a) = &spec.added else {
        candle_core::bail!("this UNet takes no added embedding");
    };
    let c = &spec.config;
    let rows = numbers
        .iter()
        .map(|row| {
            let feats = row
                .iter()
                .map(|&v| timestep_features(v, a.time_dim, c.flip_sin_to_cos, c.freq_shift, 1))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&feats, 1)
        })
        .collect::<Result<Vec<_>>>()?;
    let input = Tensor::cat(&[pooled.clone(), Tensor::cat(&rows, 0)?], 1)?;
    if input.dim(1)? != a.input_dim {
        candle_core::bail!(
            "the UNet's added embedding takes {} values, got a {}-wide pooled text embedding and {} size numbers ({} wide): a text encoder of another family?",
            a.input_dim,
            pooled.dim(1)?,
            numbers.first().map_or(0, Vec::len),
            input.dim(1)?
        );
    }
    Ok(input)
}

/// Residuals a ControlNet adds to the UNet's skips and middle.
#[derive(Clone, Debug)]
pub struct ControlResiduals {
    pub down: Vec<Tensor>,
    pub mid: Tensor,
}
