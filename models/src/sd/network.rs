//! The UNet as a sampling [`Network`]: checks the conditioning, plans the
//! ControlNet hints and runs the UNet once per group of items that share a
//! timestep and a ControlNet.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_sampling::{schedule, Conditioning, Model, ModelSampling, Network};

use super::checkpoint::Checkpoint;
use super::unet::SdUNet;
use crate::controlnet::HintPlan;
use crate::inpaint::{fit_to, mask_planes};

impl SdUNet {
    /// SDXL's added-embedding input for a batch: the pooled text and each
    /// item's micro-conditioning, sizes defaulting to the latent's × 8 as
    /// ComfyUI does. `None` for UNets without an added embedding.
    fn added_for(&self, x: &Tensor, cond: &Conditioning) -> Result<Option<Tensor>> {
        let Some(added) = &self.spec.added else {
            return Ok(None);
        };
        let pooled = cond.pooled.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "the SDXL UNet needs a pooled text embedding (from an SDXL text encoder)".into(),
            )
        })?;
        let (b, _, h, w) = x.dims4()?;
        let count = added.time_ids().ok_or_else(|| {
            candle_core::Error::Msg("the UNet's added embedding has an unknown layout".into())
        })?;
        let pixels = ((h * 8) as f64, (w * 8) as f64);
        let numbers = (0..b)
            .map(|i| {
                let size = match cond.sizes.len() {
                    0 => None,
                    1 => cond.sizes[0],
                    _ => cond.sizes.get(i).copied().flatten(),
                };
                size.unwrap_or_default().numbers(pixels, count)
            })
            .collect::<Vec<_>>();
        self.added_input(pooled, &numbers).map(Some)
    }
}

/// An inpainting UNet's input: the latent, the mask (resized to the latent
/// and rounded) and the masked image's latent, as ComfyUI and diffusers
/// concatenate them. Without `InpaintModelConditioning` the whole image is
/// to be painted: a mask of ones and a zero latent.
fn inpaint_input(x: &Tensor, cond: &Conditioning) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let mask = match &cond.concat_mask {
        Some(m) => fit_to(mask_planes(m, x.dtype())?, b, h, w)?.round()?,
        None => Tensor::ones((b, 1, h, w), x.dtype(), x.device())?,
    };
    let image = match &cond.concat_latent {
        Some(l) => fit_to(l.to_dtype(x.dtype())?, b, h, w)?,
        None => Tensor::zeros((b, c, h, w), x.dtype(), x.device())?,
    };
    Tensor::cat(&[x, &mask, &image], 1)
}

impl Network for SdUNet {
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let context = cond.context.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "the Stable Diffusion UNet needs text conditioning (from CLIPTextEncode)".into(),
            )
        })?;
        let (_, c, _, _) = x.dims4()?;
        let inpainted;
        let x = if c == self.spec.in_channels {
            x
        } else if c + 5 == self.spec.in_channels {
            inpainted = inpaint_input(x, cond)?;
            &inpainted
        } else {
            candle_core::bail!(
                "the UNet takes {}-channel latents, got {c} channels",
                self.spec.in_channels
            );
        };
        let width = context.dim(2)?;
        if width != self.spec.config.cross_attention_dim {
            candle_core::bail!(
                "the UNet cross-attends to {}-wide text states, got {width} (a text encoder of another family?)",
                self.spec.config.cross_attention_dim
            );
        }
        let added = self.added_for(x, cond)?;
        let ts = timesteps
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        // ControlNet hints: items sharing one run through its ControlNet together.
        let plan = HintPlan::new(&cond.hints, x.dim(0)?)?;
        // The samplers give every item the same timestep; run per item only if not.
        if ts.windows(2).all(|w| w[0] == w[1]) {
            let t = ts.first().copied().unwrap_or(0.0);
            let control = if plan.is_empty() {
                None
            } else {
                plan.residuals(&self.spec, x, t, context, added.as_ref(), 0..ts.len())?
            };
            return self.forward_controlled(x, t, context, added.as_ref(), control.as_ref());
        }
        let outs = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let (x, context) = (x.narrow(0, i, 1)?, context.narrow(0, i, 1)?);
                let added = added.as_ref().map(|a| a.narrow(0, i, 1)).transpose()?;
                let control = if plan.is_empty() {
                    None
                } else {
                    plan.residuals(&self.spec, &x, t, &context, added.as_ref(), i..i + 1)?
                };
                self.forward_controlled(&x, t, &context, added.as_ref(), control.as_ref())
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, 0)
    }

    fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Deltas by the UNet's diffusers names (`….weight`); only the patched
    /// tensors are new, every other one is shared.
    fn with_deltas(
        &self,
        deltas: &[(String, Tensor)],
        strength: f64,
    ) -> Option<std::result::Result<Arc<dyn Network>, String>> {
        Some(
            self.add_deltas(deltas, strength)
                .map(|u| Arc::new(u) as Arc<dyn Network>),
        )
    }
}

impl SdUNet {
    fn add_deltas(
        &self,
        deltas: &[(String, Tensor)],
        strength: f64,
    ) -> std::result::Result<SdUNet, String> {
        let base = self.weights();
        let mut changed = crate::weights::Weights::new();
        for (name, delta) in deltas {
            let weight = base.get(name).ok_or_else(|| {
                let hint =
                    weft_core::diagnostic::did_you_mean(name, base.keys().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                format!("`{name}` is not a weight of this UNet{hint}")
            })?;
            if weight.dims() != delta.dims() {
                return Err(format!(
                    "`{name}`: a delta of shape {:?} for a weight of shape {:?}",
                    delta.dims(),
                    weight.dims()
                ));
            }
            let current = changed.get(name).unwrap_or(weight).clone();
            let patched = delta
                .to_dtype(current.dtype())
                .and_then(|d| d.affine(strength, 0.0))
                .and_then(|d| current + d)
                .map_err(|e| format!("`{name}`: {e}"))?;
            changed.insert(name.clone(), patched);
        }
        self.with_weights(&changed)
    }
}

/// The MODEL of a checkpoint: its UNet with the discrete schedule it was
/// trained on and what it predicts.
pub fn sampling_model(ck: &Checkpoint, unet: SdUNet) -> std::result::Result<Model, String> {
    let s = &ck.schedule;
    let betas = schedule::betas(
        &s.beta_schedule,
        s.num_train_timesteps,
        s.beta_start,
        s.beta_end,
    )?;
    let mut sampling = ModelSampling::discrete(&schedule::alphas_cumprod(&betas), s.prediction);
    if s.zero_terminal_snr {
        sampling = sampling.zero_terminal_snr()?;
    }
    let out_channels = unet.spec().out_channels;
    let scale = ck
        .vae
        .as_ref()
        .map_or(ck.family.latent_scale(), |(v, _)| v.scaling_factor);
    Ok(Model {
        network: Arc::new(unet),
        sampling,
        latent_space: crate::vae::sd_latent_space(),
        latent_format: weft_sampling::LatentFormat {
            scale,
            shift: 0.0,
            preview: super::preview::latent_preview(ck.family),
        },
        differential_diffusion: false,
        skip_layer_guidance: None,
        wrappers: Default::default(),
        latent_channels: Some(out_channels),
    })
}
