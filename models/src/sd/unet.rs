//! The Stable Diffusion 1.x/2.x UNet (diffusers' `UNet2DConditionModel`
//! with its parameter names). ControlNet residuals come in as a plain
//! argument, so the UNet knows nothing of ControlNet; [`super::network`]
//! makes it a sampling [`weft_sampling::Network`].

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use weft_kernels::layers::{self, Conv2d, GroupNorm};

pub use super::blocks::ControlResiduals;
use super::blocks::{conv, heads, Encoder, ResBlock, SpatialTransformer, Stage};
use super::config::UNetSpec;
use crate::weights::{build_from, TensorMap, Weights};
use std::sync::Arc;

/// The UNet; see the module docs.
pub struct SdUNet {
    encoder: Encoder,
    /// Per level from the bottom: its stages, then the upsampler conv.
    up: Vec<(Vec<Stage>, Option<Conv2d>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    pub(crate) spec: UNetSpec,
    pub(crate) bytes: usize,
    /// The tensors it was built from, shared with patched copies.
    weights: Arc<Weights>,
}

impl std::fmt::Debug for SdUNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SdUNet({:?})", self.spec.config.blocks)
    }
}

impl SdUNet {
    /// Builds the UNet from a checkpoint's tensors.
    pub fn build(spec: &UNetSpec, tensors: &TensorMap) -> std::result::Result<SdUNet, String> {
        let (mut unet, weights) = tensors.build_keeping("UNet", |vb| SdUNet::new(spec, vb))?;
        unet.bytes = tensors.f32_bytes();
        unet.weights = Arc::new(weights);
        Ok(unet)
    }

    /// Builds the UNet from named tensors (random ones for benchmarks),
    /// keeping them as [`Self::build`] does.
    pub fn from_weights(spec: &UNetSpec, weights: Weights) -> std::result::Result<SdUNet, String> {
        let mut unet =
            build_from(&weights, |vb| SdUNet::new(spec, vb)).map_err(|e| format!("UNet: {e}"))?;
        unet.bytes = weights.values().map(|t| t.elem_count() * 4).sum();
        unet.weights = Arc::new(weights);
        Ok(unet)
    }

    /// The tensors by diffusers name (what LoRA patches target).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// A copy with the `changed` tensors replaced; every other tensor is
    /// shared with this UNet, so only the patched layers take memory.
    pub fn with_weights(&self, changed: &Weights) -> std::result::Result<SdUNet, String> {
        let mut weights = (*self.weights).clone();
        for (name, t) in changed {
            match weights.get(name) {
                Some(old) if old.shape() == t.shape() => {
                    weights.insert(name.clone(), t.clone());
                }
                Some(old) => {
                    return Err(format!(
                        "`{name}`: a patch of shape {:?} for a weight of shape {:?}",
                        t.dims(),
                        old.dims()
                    ))
                }
                None => return Err(format!("the UNet has no weight `{name}`")),
            }
        }
        let mut unet = build_from(&weights, |vb| SdUNet::new(&self.spec, vb))
            .map_err(|e| format!("patched UNet: {e}"))?;
        unet.bytes = self.bytes;
        unet.weights = Arc::new(weights);
        Ok(unet)
    }

    /// Builds the UNet from any variables (random ones for benchmarks).
    pub fn new(spec: &UNetSpec, vb: VarBuilder) -> Result<SdUNet> {
        let (encoder, up, norm_out, conv_out) = {
            let c = &spec.config;
            let encoder = Encoder::new(spec, vb.clone())?;
            let n = c.blocks.len();
            let temb = 4 * c.blocks[0].out_channels;
            let rev: Vec<usize> = c.blocks.iter().rev().map(|b| b.out_channels).collect();
            let mut up = Vec::with_capacity(n);
            let mut prev = rev[0];
            for (i, &out_c) in rev.iter().enumerate() {
                let level = n - 1 - i;
                let block = &c.blocks[level];
                let input_c = rev[(i + 1).min(n - 1)];
                let vbl = vb.pp(format!("up_blocks.{i}"));
                let stages = (0..=c.layers_per_block)
                    .map(|j| {
                        let skip_c = if j == c.layers_per_block {
                            input_c
                        } else {
                            out_c
                        };
                        let in_c = if j == 0 { prev } else { out_c };
                        let res = ResBlock::new(
                            spec,
                            in_c + skip_c,
                            out_c,
                            temb,
                            vbl.pp(format!("resnets.{j}")),
                        )?;
                        let attn = match block.use_cross_attn {
                            Some(depth) => Some(SpatialTransformer::new(
                                spec,
                                out_c,
                                heads(spec, level),
                                depth,
                                vbl.pp(format!("attentions.{j}")),
                            )?),
                            None => None,
                        };
                        Ok(Stage { res, attn })
                    })
                    .collect::<Result<Vec<_>>>()?;
                prev = out_c;
                let us = (i + 1 < n)
                    .then(|| conv(out_c, out_c, 3, 1, vbl.pp("upsamplers.0.conv")))
                    .transpose()?;
                up.push((stages, us));
            }
            let c0 = c.blocks[0].out_channels;
            (
                encoder,
                up,
                layers::group_norm(c.norm_num_groups, c0, c.norm_eps, vb.pp("conv_norm_out"))?,
                conv(c0, spec.out_channels, 3, 1, vb.pp("conv_out"))?,
            )
        };
        Ok(SdUNet {
            encoder,
            up,
            norm_out,
            conv_out,
            spec: spec.clone(),
            bytes: 0,
            weights: Arc::default(),
        })
    }

    pub fn spec(&self) -> &UNetSpec {
        &self.spec
    }

    /// One forward at a single timestep for the whole batch (SD 1.x/2.x:
    /// no added embedding).
    pub fn forward_at(&self, x: &Tensor, timestep: f64, context: &Tensor) -> Result<Tensor> {
        self.forward_controlled(x, timestep, context, None, None)
    }

    /// SDXL's added-embedding input for `pooled` text `[b, P]` and each
    /// item's micro-conditioning numbers (see [`weft_sampling::SizeCond`]).
    pub fn added_input(&self, pooled: &Tensor, numbers: &[Vec<f64>]) -> Result<Tensor> {
        super::blocks::added_input(&self.spec, pooled, numbers)
    }

    /// A forward with SDXL's added-embedding input (from
    /// [`Self::added_input`]) and ControlNet residuals added to the skips
    /// and middle.
    pub fn forward_controlled(
        &self,
        x: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
        control: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        let b = x.dim(0)?;
        let temb = self.encoder.time(timestep, b, added)?;
        let h = self.encoder.conv_in.forward(x)?;
        let (mut skips, mut h) = self.encoder.down_and_mid(h, &temb, context)?;
        if let Some(ctrl) = control {
            if ctrl.down.len() != skips.len() {
                candle_core::bail!(
                    "the ControlNet gives {} residuals, the UNet has {} skips",
                    ctrl.down.len(),
                    skips.len()
                );
            }
            for (s, r) in skips.iter_mut().zip(&ctrl.down) {
                *s = (&*s + r)?;
            }
            h = (h + &ctrl.mid)?;
        }
        for (stages, us) in &self.up {
            for s in stages {
                let skip = skips.pop().expect("one skip per up stage");
                h = s.forward(&Tensor::cat(&[&h, &skip], 1)?, &temb, context)?;
            }
            if let Some(us) = us {
                // Upsample to the next skip's size, so odd sizes work too.
                let (hh, ww) = match skips.last() {
                    Some(s) => (s.dim(2)?, s.dim(3)?),
                    None => (h.dim(2)? * 2, h.dim(3)? * 2),
                };
                h = us.forward(&h.upsample_nearest2d(hh, ww)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}
