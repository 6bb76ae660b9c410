//! ControlNet for Stable Diffusion 1.x/2.x (diffusers' `ControlNetModel`
//! with its parameter names): a trainable copy of the UNet's encoder that
//! reads a control image (edges, depth, pose, …) and gives residuals the
//! UNet adds to its skip connections and middle block.
//!
//! Three file layouts load: a diffusers folder (`config.json` +
//! `diffusion_pytorch_model.safetensors`), a single diffusers-keyed
//! `.safetensors` file, and the original ControlNet 1.0/1.1 layout
//! (`control_model.*` or unprefixed: the LDM UNet encoder plus
//! `input_hint_block`, `zero_convs` and `middle_block_out`). A single file's
//! architecture comes from a `config.json` of a `ControlNetModel` next to it
//! when there is one, else from its tensor shapes plus the family rules of
//! [`super::config`] (SD 1.x: 768-wide context, 8 heads; SD 2.x: 1024,
//! 64 channels per head).
//!
//! A [`ControlHint`] (net, image, strength, percent window) rides in
//! [`weft_sampling::Conditioning::hints`]; the UNet's [`weft_sampling::Network::forward`]
//! runs every hinted group of batch items through its ControlNet and adds
//! the residuals. The ComfyUI nodes `ControlNetLoader`, `ControlNetApply` and
//! `ControlNetApplyAdvanced` build them.
//!
//! This module is the network; `layouts` finds and reads the files,
//! `hints` carries a ControlNet into conditioning and plans the UNet's
//! residuals, and `nodes` are the graph nodes.

mod hints;
mod layouts;

pub(crate) use hints::HintPlan;
pub use hints::{apply_control, ControlHint};
pub use layouts::{ldm_names, open, spec_from_json, spec_from_shapes};

use std::path::{Path, PathBuf};

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModelConfig;
use weft_kernels::layers::Conv2d;

use crate::sd::blocks::{conv, ControlResiduals, Encoder};
use crate::sd::config::UNetSpec;
use crate::weights::TensorMap;

/// Pixels per latent cell: the control image is used at 8× the latent size.
pub const PIXELS_PER_LATENT: usize = 8;

/// A ControlNet's build parameters.
#[derive(Clone, Debug)]
pub struct ControlNetSpec {
    /// The encoder (a UNet config; `out_channels` is unused).
    pub unet: UNetSpec,
    /// Channels of the control image (3, RGB).
    pub conditioning_channels: usize,
    /// Widths of the control-image embedding's levels (`(16, 32, 96, 256)` in SD).
    pub embedding_channels: Vec<usize>,
    /// Shuffle ControlNets: residuals averaged over the image (diffusers'
    /// `global_pool_conditions`; for single files, ComfyUI's rule of a file
    /// name ending in `_shuffle` / `_shuffle_fp16`).
    pub global_pool: bool,
    /// The network was trained on BGR images (`controlnet_conditioning_channel_order`).
    pub bgr: bool,
}

impl ControlNetSpec {
    /// Channels of every encoder skip, in the order the UNet stores them.
    pub fn skip_channels(&self) -> Vec<usize> {
        let c = &self.unet.config;
        let mut out = vec![c.blocks[0].out_channels];
        for (l, b) in c.blocks.iter().enumerate() {
            out.extend(std::iter::repeat_n(b.out_channels, c.layers_per_block));
            if l + 1 < c.blocks.len() {
                out.push(b.out_channels);
            }
        }
        out
    }
}

/// diffusers' `ControlNetConditioningEmbedding`: control image → the width
/// of `conv_in`'s output, downsampled 8×.
#[derive(Debug)]
struct CondEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl CondEmbedding {
    fn new(spec: &ControlNetSpec, vb: VarBuilder) -> Result<CondEmbedding> {
        let e = &spec.embedding_channels;
        if e.is_empty() {
            candle_core::bail!("the control-image embedding has no levels");
        }
        let mut blocks = Vec::with_capacity(2 * (e.len() - 1));
        for i in 0..e.len() - 1 {
            blocks.push(conv(e[i], e[i], 3, 1, vb.pp(format!("blocks.{}", 2 * i)))?);
            blocks.push(conv(
                e[i],
                e[i + 1],
                3,
                2,
                vb.pp(format!("blocks.{}", 2 * i + 1)),
            )?);
        }
        Ok(CondEmbedding {
            conv_in: conv(spec.conditioning_channels, e[0], 3, 1, vb.pp("conv_in"))?,
            blocks,
            conv_out: conv(
                e[e.len() - 1],
                spec.unet.config.blocks[0].out_channels,
                3,
                1,
                vb.pp("conv_out"),
            )?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?.silu()?;
        for b in &self.blocks {
            h = b.forward(&h)?.silu()?;
        }
        self.conv_out.forward(&h)
    }
}

/// A ControlNet; see the module docs.
pub struct ControlNet {
    encoder: Encoder,
    embedding: CondEmbedding,
    down_outs: Vec<Conv2d>,
    mid_out: Conv2d,
    spec: ControlNetSpec,
    path: PathBuf,
    bytes: usize,
}

impl std::fmt::Debug for ControlNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlNet({})", self.path.display())
    }
}

impl ControlNet {
    /// Opens and builds the ControlNet at `path` (a folder or a file).
    pub fn load(path: &Path) -> std::result::Result<ControlNet, String> {
        let (spec, tensors) = open(path)?;
        ControlNet::build(&spec, &tensors, path)
    }

    /// Builds from mapped tensors; `path` names the model in messages.
    pub fn build(
        spec: &ControlNetSpec,
        tensors: &TensorMap,
        path: &Path,
    ) -> std::result::Result<ControlNet, String> {
        if spec.unet.config.blocks.is_empty() {
            return Err(format!("{}: the ControlNet has no levels", path.display()));
        }
        let (encoder, embedding, down_outs, mid_out) = tensors.build("ControlNet", |vb| {
            let encoder = Encoder::new(&spec.unet, vb.clone())?;
            let embedding = CondEmbedding::new(spec, vb.pp("controlnet_cond_embedding"))?;
            let down_outs = spec
                .skip_channels()
                .into_iter()
                .enumerate()
                .map(|(i, c)| conv(c, c, 1, 1, vb.pp(format!("controlnet_down_blocks.{i}"))))
                .collect::<Result<Vec<_>>>()?;
            let last = spec.unet.config.blocks.last().map_or(0, |b| b.out_channels);
            let mid_out = conv(last, last, 1, 1, vb.pp("controlnet_mid_block"))?;
            Ok((encoder, embedding, down_outs, mid_out))
        })?;
        Ok(ControlNet {
            encoder,
            embedding,
            down_outs,
            mid_out,
            spec: spec.clone(),
            path: path.to_path_buf(),
            bytes: tensors.f32_bytes(),
        })
    }

    pub fn spec(&self) -> &ControlNetSpec {
        &self.spec
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether this ControlNet's residuals fit `unet`'s skips.
    pub fn check_fits(&self, unet: &UNetSpec) -> Result<()> {
        let (a, b) = (&self.spec.unet.config, &unet.config);
        let widths = |c: &UNet2DConditionModelConfig| {
            c.blocks.iter().map(|b| b.out_channels).collect::<Vec<_>>()
        };
        if widths(a) != widths(b)
            || a.layers_per_block != b.layers_per_block
            || a.cross_attention_dim != b.cross_attention_dim
        {
            candle_core::bail!(
                "the ControlNet {} (levels {:?}, {} blocks per level, {}-wide context) does not fit this UNet (levels {:?}, {} blocks per level, {}-wide context): a ControlNet for another model family?",
                self.path.display(),
                widths(a),
                a.layers_per_block,
                a.cross_attention_dim,
                widths(b),
                b.layers_per_block,
                b.cross_attention_dim
            );
        }
        Ok(())
    }

    /// Checks that `image` (`[B, C, H, W]`) can be a control image here.
    pub fn check_image(&self, image: &Tensor) -> std::result::Result<(), String> {
        let dims = image.dims();
        let [b, c, h, w] = dims else {
            return Err(format!(
                "a control image is [batch, channels, height, width], got {dims:?}"
            ));
        };
        if *b == 0 || *h == 0 || *w == 0 {
            return Err(format!("the control image is empty ({dims:?})"));
        }
        let want = self.spec.conditioning_channels;
        if !(*c == want || (want == 3 && (*c == 1 || *c == 4)) || (want == 1 && *c == 3)) {
            return Err(format!(
                "the ControlNet takes {want}-channel control images, got {c} channels"
            ));
        }
        Ok(())
    }

    /// The control image for latents of `h × w`: channels adapted (grey to
    /// RGB, alpha dropped), in the network's channel order, centre-cropped
    /// to the latent's aspect ratio and resized (nearest-exact) to 8× the
    /// latent size when it is not that size already, as ComfyUI does.
    pub fn prepare_image(&self, image: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        self.check_image(image).map_err(candle_core::Error::Msg)?;
        let image = image.to_dtype(DType::F32)?;
        let want = self.spec.conditioning_channels;
        let c = image.dim(1)?;
        let mut image = if c == want {
            image
        } else if want == 3 && c == 1 {
            image.repeat((1, 3, 1, 1))?
        } else if want == 3 && c == 4 {
            image.narrow(1, 0, 3)?
        } else {
            image.mean_keepdim(1)?
        };
        if self.spec.bgr && want == 3 {
            let order = Tensor::new(&[2u32, 1, 0], image.device())?;
            image = image.index_select(&order, 1)?;
        }
        resize_center_crop(&image, h * PIXELS_PER_LATENT, w * PIXELS_PER_LATENT)
    }

    /// The residuals for latents `x` (`[B, C, h, w]`, already input-scaled)
    /// at `timestep` with text `context`, from the control image `hint`
    /// (`[K, C, H, W]` in [0, 1]; prepared with [`Self::prepare_image`], item
    /// `i` uses image `i mod K`), multiplied by `strength`. A latent with
    /// more channels than the ControlNet takes (an inpainting UNet's) gives
    /// it its first channels, the noisy latent.
    pub fn residuals(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
        hint: &Tensor,
        strength: f64,
    ) -> Result<ControlResiduals> {
        let (b, _, h, w) = x.dims4()?;
        let image = self.prepare_image(hint, h, w)?;
        let k = image.dim(0)?;
        let image = if k == b {
            image
        } else {
            let idx: Vec<u32> = (0..b).map(|i| (i % k) as u32).collect();
            image.index_select(&Tensor::new(idx, image.device())?, 0)?
        };
        self.residuals_prepared(x, timestep, context, added, &image, strength)
    }

    /// [`Self::residuals`] with the image already prepared and one per item.
    fn residuals_prepared(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
        image: &Tensor,
        strength: f64,
    ) -> Result<ControlResiduals> {
        let (b, c, _, _) = x.dims4()?;
        let want = self.spec.unet.in_channels;
        let x = match c.cmp(&want) {
            std::cmp::Ordering::Equal => x.clone(),
            std::cmp::Ordering::Greater => x.narrow(1, 0, want)?,
            std::cmp::Ordering::Less => {
                candle_core::bail!("the ControlNet takes {want}-channel latents, got {c} channels")
            }
        };
        let context = match context.dim(0)? {
            n if n == b => context.clone(),
            1 => {
                let mut dims = context.dims().to_vec();
                dims[0] = b;
                context.broadcast_as(dims)?.contiguous()?
            }
            n => candle_core::bail!("{n} text contexts for a batch of {b} latents"),
        };
        let width = context.dim(2)?;
        if width != self.spec.unet.config.cross_attention_dim {
            candle_core::bail!(
                "the ControlNet cross-attends to {}-wide text states, got {width}",
                self.spec.unet.config.cross_attention_dim
            );
        }
        let temb = self.encoder.time(timestep, b, added)?;
        let h = self.encoder.conv_in.forward(&x)?;
        let cond = self.embedding.forward(image)?;
        if cond.dims() != h.dims() {
            candle_core::bail!(
                "the control image embeds to {:?}, the latent to {:?}",
                cond.dims(),
                h.dims()
            );
        }
        let (skips, mid) = self.encoder.down_and_mid((h + cond)?, &temb, &context)?;
        let out = |conv: &Conv2d, t: &Tensor| -> Result<Tensor> {
            let mut r = conv.forward(t)?;
            if self.spec.global_pool {
                r = r
                    .mean_keepdim(2)?
                    .mean_keepdim(3)?
                    .broadcast_as(r.shape())?;
            }
            r.affine(strength, 0.0)
        };
        if skips.len() != self.down_outs.len() {
            candle_core::bail!(
                "the ControlNet encoder gives {} skips for {} output convolutions",
                skips.len(),
                self.down_outs.len()
            );
        }
        Ok(ControlResiduals {
            down: skips
                .iter()
                .zip(&self.down_outs)
                .map(|(s, conv)| out(conv, s))
                .collect::<Result<_>>()?,
            mid: out(&self.mid_out, &mid)?,
        })
    }
}

/// Centre-crops `image` to the aspect ratio of `height × width` and resizes
/// it there by nearest-exact sampling (ComfyUI's `common_upscale` with
/// `nearest-exact` and `center`). An image already that size is returned as is.
pub fn resize_center_crop(image: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (_, _, h, w) = image.dims4()?;
    if (h, w) == (height, width) {
        return Ok(image.clone());
    }
    let (old, new) = (w as f64 / h as f64, width as f64 / height as f64);
    let (mut x0, mut y0) = (0usize, 0usize);
    if old > new {
        x0 = ((w as f64 - w as f64 * (new / old)) / 2.0).round_ties_even() as usize;
    } else if old < new {
        y0 = ((h as f64 - h as f64 * (old / new)) / 2.0).round_ties_even() as usize;
    }
    let (ch, cw) = (
        h.saturating_sub(2 * y0).max(1),
        w.saturating_sub(2 * x0).max(1),
    );
    let nearest = |from: usize, to: usize, offset: usize| -> Result<Tensor> {
        let scale = from as f64 / to as f64;
        let idx: Vec<u32> = (0..to)
            .map(|o| {
                let s = ((o as f64 + 0.5) * scale).floor() as usize;
                (offset + s.min(from - 1)) as u32
            })
            .collect();
        Tensor::new(idx, image.device())
    };
    image
        .index_select(&nearest(ch, height, y0)?, 2)?
        .index_select(&nearest(cw, width, x0)?, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn nearest_exact_center_crop() {
        // 1×1×2×6 → 4×4: crop the centre 2×2 (columns 2, 3), then each
        // source pixel twice.
        let img = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 6))
            .unwrap();
        let out = resize_center_crop(&img, 4, 4).unwrap();
        let v: Vec<Vec<f32>> = out
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(
            v,
            vec![
                vec![2.0, 2.0, 3.0, 3.0],
                vec![2.0, 2.0, 3.0, 3.0],
                vec![8.0, 8.0, 9.0, 9.0],
                vec![8.0, 8.0, 9.0, 9.0],
            ]
        );
        // Downscaling 1×5 → 1×2 keeps the pixels nearest each output centre:
        // floor((o + 0.5)·2.5) = 1, 3 (nearest-exact; plain nearest gives 0, 2).
        let row = Tensor::arange(0f32, 5.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 5))
            .unwrap();
        let out = resize_center_crop(&row.repeat((1, 1, 2, 1)).unwrap(), 1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // 2×5 → 1×2: aspect 2.5 > 2, crop x = round((5 − 5·0.8)/2) = round(0.5) = 0.
        assert_eq!(out, vec![1.0, 3.0]);
    }
}
