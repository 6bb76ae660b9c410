//! Sampling: noise, models' noise parameterisations, denoisers and samplers.
//! Diffusion and flow matching are handled as one family of Gaussian paths.

pub mod attention_hook;
mod compose;
pub mod conditioning;
pub mod exact;
pub mod guidance;
pub mod handles;
pub mod inpaint;
pub mod model;
pub mod noise;
pub mod samplers;
pub mod schedule;
pub mod wrapper;

pub use conditioning::{Area, Conditioning, Hint, SizeCond};
pub use model::{
    FlowShift, LatentFormat, LatentPreview, LatentRgb, Model, ModelSampling, Network, NoiseLevels,
    Path, Prediction, SkipLayerGuidance,
};
pub use noise::{seeded_noise, Gaussian, NoiseSource, SeededSteps};
pub use samplers::{
    sampler_by_name, sampler_names, AncestralStep, Denoiser, SampleContext, Sampler, SamplerOptions,
};
