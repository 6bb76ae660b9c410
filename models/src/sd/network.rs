//! The UNet as a sampling [`Network`]: checks the conditioning, plans the
//! ControlNet hints and runs the UNet once per group of items that share a
//! timestep and a ControlNet.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_sampling::{schedule, Conditioning, Model, ModelSampling, Network};

use super::checkpoint::Checkpoint;
use super::unet::SdUNet;
use crate::controlnet::HintPlan;

impl Network for SdUNet {
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let context = cond.context.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "the Stable Diffusion UNet needs text conditioning (from CLIPTextEncode)".into(),
            )
        })?;
        let (_, c, _, _) = x.dims4()?;
        if c != self.spec.in_channels {
            candle_core::bail!(
                "the UNet takes {}-channel latents, got {c} channels",
                self.spec.in_channels
            );
        }
        let width = context.dim(2)?;
        if width != self.spec.config.cross_attention_dim {
            candle_core::bail!(
                "the UNet cross-attends to {}-wide text states, got {width} (a text encoder of another family?)",
                self.spec.config.cross_attention_dim
            );
        }
        let ts = timesteps
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        // ControlNet hints: items sharing one run through its ControlNet together.
        let plan = HintPlan::new(&cond.hints, x.dim(0)?)?;
        // The samplers give every item the same timestep; run per item only if not.
        if ts.windows(2).all(|w| w[0] == w[1]) {
            let t = ts.first().copied().unwrap_or(0.0);
            if plan.is_empty() {
                return self.forward_at(x, t, context);
            }
            let control = plan.residuals(&self.spec, x, t, context, 0..ts.len())?;
            return self.forward_controlled(x, t, context, control.as_ref());
        }
        let outs = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let (x, context) = (x.narrow(0, i, 1)?, context.narrow(0, i, 1)?);
                let control = if plan.is_empty() {
                    None
                } else {
                    plan.residuals(&self.spec, &x, t, &context, i..i + 1)?
                };
                self.forward_controlled(&x, t, &context, control.as_ref())
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, 0)
    }

    fn size_bytes(&self) -> usize {
        self.bytes
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
    let out_channels = unet.spec().out_channels;
    Ok(Model {
        network: Arc::new(unet),
        sampling: ModelSampling::discrete(&schedule::alphas_cumprod(&betas), s.prediction),
        latent_space: crate::vae::sd_latent_space(),
        latent_channels: Some(out_channels),
    })
}
