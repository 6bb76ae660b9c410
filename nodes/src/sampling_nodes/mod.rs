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

use weft_core::{NodeDef, Registry};

/// The sampling node types.
pub fn nodes() -> Vec<NodeDef> {
    vec![
        noise::random_noise(),
        noise::disable_noise(),
        latent::empty_latent(),
        conditioning::class_label(),
        models::exact_gaussian_model(),
        models::model_sampling_discrete(),
        samplers::ksampler_select(),
        guiders::cfg_guider(),
        guiders::basic_guider(),
        guiders::classifier_guidance(),
        run::sampler_custom_advanced(),
        ksampler::ksampler(),
        schedules::basic_scheduler(),
        schedules::karras_scheduler(),
        schedules::flow_match_scheduler(),
        schedules::flux_scheduler(),
        schedules::split_sigmas(),
        schedules::flip_sigmas(),
    ]
}

pub fn register(registry: &mut Registry) -> Result<(), String> {
    registry.register_all(nodes())
}
