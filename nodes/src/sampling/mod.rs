//! Sampling as nodes, split the way ComfyUI users know: NOISE, GUIDER,
//! SAMPLER and SIGMAS values meet in `SamplerCustomAdvanced`; `KSampler`
//! does the common case in one node. The models made or patched for
//! sampling (`ExactGaussianModel`, `ModelSamplingDiscrete`) are here too.

mod flow;
mod guiders;
mod ksampler;
mod models;
mod noise;
pub mod preview;
mod run;
mod samplers;
mod schedules;

pub use weft_sampling::handles::{GuiderHandle, NoiseHandle, SamplerHandle};

use weft_core::NodeDef;

/// The sampling node types.
pub fn nodes() -> Vec<NodeDef> {
    vec![
        noise::random_noise(),
        noise::disable_noise(),
        models::exact_gaussian_model(),
        models::model_sampling_discrete(),
        flow::model_sampling_sd3(),
        flow::model_sampling_flux(),
        flow::skip_layer_guidance_sd3(),
        samplers::ksampler_select(),
        guiders::cfg_guider(),
        guiders::basic_guider(),
        guiders::classifier_guidance(),
        run::sampler_custom_advanced(),
        ksampler::ksampler(),
        ksampler::ksampler_advanced(),
        schedules::basic_scheduler(),
        schedules::karras_scheduler(),
        schedules::flow_match_scheduler(),
        schedules::flux_scheduler(),
        schedules::sd_turbo_scheduler(),
        schedules::split_sigmas(),
        schedules::flip_sigmas(),
    ]
}
