//! Sampling as nodes, split the way ComfyUI users know: NOISE, GUIDER,
//! SAMPLER and SIGMAS values meet in `SamplerCustomAdvanced`; `KSampler`
//! does the common case in one node.

mod conditioning;
mod guiders;
pub(crate) mod handles;
mod ksampler;
mod latent;
mod models;
mod noise;
pub(crate) mod run;
mod samplers;
mod schedules;

pub use handles::{GuiderHandle, NoiseHandle, SamplerHandle};

use weft_core::Registry;

pub fn register(registry: &mut Registry) -> Result<(), String> {
    registry.register(noise::RandomNoise::new())?;
    registry.register(noise::DisableNoise::new())?;
    registry.register(latent::EmptyLatent::new())?;
    registry.register(conditioning::ClassLabel::new())?;
    registry.register(models::ExactGaussianModel::new())?;
    registry.register(models::ModelSamplingDiscrete::new())?;
    registry.register(samplers::KSamplerSelect::new())?;
    registry.register(guiders::CfgGuider::new())?;
    registry.register(guiders::BasicGuider::new())?;
    registry.register(guiders::ClassifierGuidance::new())?;
    registry.register(run::SamplerCustomAdvanced::new())?;
    registry.register(ksampler::KSampler::new())?;
    registry.register(schedules::BasicScheduler::new())?;
    registry.register(schedules::KarrasScheduler::new())?;
    registry.register(schedules::FlowMatchScheduler::new())?;
    registry.register(schedules::FluxScheduler::new())?;
    registry.register(schedules::SplitSigmas::new())?;
    registry.register(schedules::FlipSigmas::new())?;
    Ok(())
}
