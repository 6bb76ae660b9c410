//! A small class-conditional U-Net for MNIST-sized images (28×28 or 32×32).
//!
//! Shape of the network: a 3×3 stem, then one level per entry of
//! `channel_mults` with `num_res_blocks` residual blocks each and a stride-2
//! downsample between levels (so `[1, 2, 2]` goes 28→14→7), a middle of
//! ResBlock–attention–ResBlock at the lowest resolution, and the mirror-image
//! decoder that concatenates the encoder's activations (skip connections).
//! Time enters every ResBlock as a FiLM scale/shift computed from a
//! sinusoidal embedding passed through an MLP; the class embedding (with a
//! final row for the null class ∅) is added to that embedding, which is what
//! classifier-free guidance needs.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Embedding, GroupNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{attention, silu_linear, timestep_features};

/// Hyper-parameters of [`UNet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    /// Channels at full resolution; level `i` has `base_channels·channel_mults[i]`.
    pub base_channels: usize,
    /// One entry per resolution level; `len − 1` downsamples.
    pub channel_mults: Vec<usize>,
    pub num_res_blocks: usize,
    /// Downsampling factors (1 = full resolution) whose levels get
    /// self-attention after each ResBlock; the middle always has one.
    pub attention_resolutions: Vec<usize>,
    /// Real classes; the embedding table has one more row for ∅.
    pub num_classes: usize,
    /// Dropout inside ResBlocks, only in `forward_t(.., train = true)`.
    #[serde(default)]
    pub dropout: f32,
    /// GroupNorm groups; must divide every level's channel count.
    pub groups: usize,
    /// Channels per attention head.
    #[serde(default = "default_head_channels")]
    pub head_channels: usize,
}

fn default_head_channels() -> usize {
    32
}

impl UNetConfig {
    /// The default for 1×28×28 class-conditional MNIST: 32/64/64 channels,
    /// two downsamples, attention at 7×7 (≈1.3 M parameters).
    pub fn mnist() -> UNetConfig {
        UNetConfig {
            in_channels: 1,
            base_channels: 32,
            channel_mults: vec![1, 2, 2],
            num_res_blocks: 2,
            attention_resolutions: vec![4],
            num_classes: 10,
            dropout: 0.0,
            groups: 8,
            head_channels: 32,
        }
    }

    /// Checks the config can be built and that `image_size` survives the downsamples.
    // `is_multiple_of` needs Rust 1.87; the workspace's MSRV is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn validate(&self, image_size: usize) -> std::result::Result<(), String> {
        self.validate_structure()?;
        let factor = 1usize << (self.channel_mults.len() - 1);
        if image_size == 0 || image_size % factor != 0 {
            return Err(format!(
                "UNet with {} levels needs an image size divisible by {factor}, got {image_size}",
                self.channel_mults.len()
            ));
        }
        Ok(())
    }

    /// The checks that do not depend on the image size.
    // `is_multiple_of` needs Rust 1.87; the workspace's MSRV is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn validate_structure(&self) -> std::result::Result<(), String> {
        if self.channel_mults.is_empty()
            || self.channel_mults.len() > 8
            || self.base_channels == 0
            || self.in_channels == 0
        {
            return Err("UNet needs in_channels, base_channels and channel_mults".into());
        }
        if self.groups == 0 || self.head_channels == 0 {
            return Err("UNet groups and head_channels must be positive".into());
        }
        // The stem's output (base channels) is normalised after concatenation,
        // and the time features split evenly into cosines and sines.
        if self.base_channels % self.groups != 0 || self.base_channels % 2 != 0 {
            return Err(format!(
                "UNet base_channels {} must be even and divisible by groups {}",
                self.base_channels, self.groups
            ));
        }
        for &m in &self.channel_mults {
            let c = self.base_channels * m;
            if m == 0 || c % self.groups != 0 {
                return Err(format!(
                    "UNet level with {c} channels is not divisible into {} groups",
                    self.groups
                ));
            }
        }
        Ok(())
    }

    fn time_dim(&self) -> usize {
        self.base_channels * 4
    }
}

/// A 3×3 convolution with padding 1 (so stride 1 keeps the size and stride 2 halves it).
fn conv3(i: usize, o: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d(i, o, 3, cfg, vb)
}

/// GroupNorm → SiLU → conv, FiLM from the embedding, GroupNorm → SiLU →
/// dropout → conv, plus a (1×1-projected when channels change) skip.
#[derive(Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    film: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    dropout: f32,
}

impl ResBlock {
    fn new(cfg: &UNetConfig, in_c: usize, out_c: usize, vb: VarBuilder) -> Result<ResBlock> {
        let skip = if in_c != out_c {
            Some(candle_nn::conv2d(
                in_c,
                out_c,
                1,
                Default::default(),
                vb.pp("skip"),
            )?)
        } else {
            None
        };
        Ok(ResBlock {
            norm1: candle_nn::group_norm(cfg.groups, in_c, 1e-5, vb.pp("norm1"))?,
            conv1: conv3(in_c, out_c, 1, vb.pp("conv1"))?,
            film: candle_nn::linear(cfg.time_dim(), 2 * out_c, vb.pp("film"))?,
            norm2: candle_nn::group_norm(cfg.groups, out_c, 1e-5, vb.pp("norm2"))?,
            conv2: conv3(out_c, out_c, 1, vb.pp("conv2"))?,
            skip,
            dropout: cfg.dropout,
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        // FiLM: (1 + scale) so a zero projection leaves the block unmodulated.
        let ss = silu_linear(emb, &self.film)?.unsqueeze(2)?.unsqueeze(3)?;
        let c = h.dim(1)?;
        let scale = ss.narrow(1, 0, c)?;
        let shift = ss.narrow(1, c, c)?;
        let h = self
            .norm2
            .forward(&h)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?
            .silu()?;
        let h = if train && self.dropout > 0.0 {
            candle_nn::ops::dropout(&h, self.dropout)?
        } else {
            h
        };
        let h = self.conv2.forward(&h)?;
        match &self.skip {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Spatial self-attention over all H·W positions, pre-norm and residual.
#[derive(Debug)]
struct AttnBlock {
    norm: GroupNorm,
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl AttnBlock {
    // `is_multiple_of` needs Rust 1.87; the workspace's MSRV is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    fn new(cfg: &UNetConfig, c: usize, vb: VarBuilder) -> Result<AttnBlock> {
        Ok(AttnBlock {
            norm: candle_nn::group_norm(cfg.groups, c, 1e-5, vb.pp("norm"))?,
            qkv: candle_nn::linear(c, 3 * c, vb.pp("qkv"))?,
            proj: candle_nn::linear(c, c, vb.pp("proj"))?,
            // Whole heads only; a width that does not split evenly gets one head.
            heads: if c % cfg.head_channels == 0 {
                c / cfg.head_channels
            } else {
                1
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?; // [B, HW, C]
        let y = attention(&self.qkv.forward(&tokens)?, self.heads)?;
        let y = self
            .proj
            .forward(&y)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        x + y
    }
}

/// One encoder or decoder stage: a ResBlock and maybe attention after it.
#[derive(Debug)]
struct Stage {
    res: ResBlock,
    attn: Option<AttnBlock>,
}

impl Stage {
    fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.res.forward(x, emb, train)?;
        match &self.attn {
            Some(a) => a.forward(&h),
            None => Ok(h),
        }
    }
}

/// The class-conditional U-Net; see the module docs for its shape.
#[derive(Debug)]
pub struct UNet {
    time_in: Linear,
    time_out: Linear,
    class_emb: Embedding,
    stem: Conv2d,
    /// Per level: its stages, then the downsample (absent at the last level).
    down: Vec<(Vec<Stage>, Option<Conv2d>)>,
    mid1: ResBlock,
    mid_attn: AttnBlock,
    mid2: ResBlock,
    /// Per level from the bottom: its stages, then the upsample conv (absent at the top).
    up: Vec<(Vec<Stage>, Option<Conv2d>)>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    base: usize,
}

impl UNet {
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<UNet> {
        cfg.validate_structure().map_err(candle_core::Error::Msg)?;
        let td = cfg.time_dim();
        let levels = cfg.channel_mults.len();
        let ch = |l: usize| cfg.base_channels * cfg.channel_mults[l];
        let stage = |in_c: usize, out_c: usize, ds: usize, vb: VarBuilder| -> Result<Stage> {
            Ok(Stage {
                res: ResBlock::new(cfg, in_c, out_c, vb.pp("res"))?,
                attn: if cfg.attention_resolutions.contains(&ds) {
                    Some(AttnBlock::new(cfg, out_c, vb.pp("attn"))?)
                } else {
                    None
                },
            })
        };

        // Encoder; `skips` records each saved activation's channels.
        let mut skips = vec![cfg.base_channels];
        let mut cur = cfg.base_channels;
        let mut down = Vec::with_capacity(levels);
        for l in 0..levels {
            let vbl = vb.pp(format!("down.{l}"));
            let mut stages = Vec::new();
            for i in 0..cfg.num_res_blocks {
                stages.push(stage(cur, ch(l), 1 << l, vbl.pp(i))?);
                cur = ch(l);
                skips.push(cur);
            }
            let ds = if l + 1 < levels {
                skips.push(cur);
                Some(conv3(cur, cur, 2, vbl.pp("downsample"))?)
            } else {
                None
            };
            down.push((stages, ds));
        }

        let mid1 = ResBlock::new(cfg, cur, cur, vb.pp("mid.res1"))?;
        let mid_attn = AttnBlock::new(cfg, cur, vb.pp("mid.attn"))?;
        let mid2 = ResBlock::new(cfg, cur, cur, vb.pp("mid.res2"))?;

        // Decoder: each stage eats one skip, so a level has one stage more
        // than the encoder's (the extra one takes the downsample's input).
        let mut up = Vec::with_capacity(levels);
        for l in (0..levels).rev() {
            let vbl = vb.pp(format!("up.{l}"));
            let mut stages = Vec::new();
            for i in 0..=cfg.num_res_blocks {
                let skip_c = skips.pop().expect("one skip per decoder stage");
                stages.push(stage(cur + skip_c, ch(l), 1 << l, vbl.pp(i))?);
                cur = ch(l);
            }
            let us = if l > 0 {
                Some(conv3(cur, cur, 1, vbl.pp("upsample"))?)
            } else {
                None
            };
            up.push((stages, us));
        }

        Ok(UNet {
            time_in: candle_nn::linear(cfg.base_channels, td, vb.pp("time.0"))?,
            time_out: candle_nn::linear(td, td, vb.pp("time.1"))?,
            class_emb: candle_nn::embedding(cfg.num_classes + 1, td, vb.pp("class_emb"))?,
            stem: conv3(cfg.in_channels, cfg.base_channels, 1, vb.pp("stem"))?,
            down,
            mid1,
            mid_attn,
            mid2,
            up,
            out_norm: candle_nn::group_norm(cfg.groups, cur, 1e-5, vb.pp("out_norm"))?,
            out_conv: conv3(cur, cfg.in_channels, 1, vb.pp("out_conv"))?,
            base: cfg.base_channels,
        })
    }

    /// Evaluation forward: `x` `[B, C, H, W]`, `t` `[B]` f32, `labels` `[B]` u32.
    pub fn forward(&self, x: &Tensor, t: &Tensor, labels: &Tensor) -> Result<Tensor> {
        self.forward_t(x, t, labels, false)
    }

    /// Forward with dropout active when `train` is set.
    pub fn forward_t(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let temb = timestep_features(t, self.base)?;
        let temb = self
            .time_out
            .forward(&self.time_in.forward(&temb)?.silu()?)?;
        let emb = (temb + self.class_emb.forward(labels)?)?;

        let mut h = self.stem.forward(x)?;
        let mut saved = vec![h.clone()];
        for (stages, ds) in &self.down {
            for s in stages {
                h = s.forward(&h, &emb, train)?;
                saved.push(h.clone());
            }
            if let Some(ds) = ds {
                h = ds.forward(&h)?;
                saved.push(h.clone());
            }
        }
        h = self.mid1.forward(&h, &emb, train)?;
        h = self.mid_attn.forward(&h)?;
        h = self.mid2.forward(&h, &emb, train)?;
        for (stages, us) in &self.up {
            for s in stages {
                let skip = saved.pop().expect("one saved activation per decoder stage");
                h = s.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb, train)?;
            }
            if let Some(us) = us {
                let (_, _, hh, ww) = h.dims4()?;
                h = us.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?;
            }
        }
        self.out_conv.forward(&self.out_norm.forward(&h)?.silu()?)
    }
}
