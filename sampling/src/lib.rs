//! Sampling: noise, models' noise parameterisations, denoisers and samplers.
//! Diffusion and flow matching are handled as one family of Gaussian paths.

pub mod exact;
pub mod guidance;
pub mod handles;
pub mod model;
pub mod noise;
pub mod samplers;
pub mod schedule;

pub use model::{
    Conditioning, Hint, LatentFormat, Model, ModelSampling, Network, NoiseLevels, Path, Prediction,
    SizeCond,
};
pub use noise::{seeded_noise, Gaussian, NoiseSource, SeededSteps};
pub use samplers::{
    sampler_by_name, sampler_names, AncestralStep, Denoiser, SampleContext, Sampler, SamplerOptions,
};
