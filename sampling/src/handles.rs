//! The handle values that flow between sampling nodes: NOISE, GUIDER and
//! SAMPLER, each the engine value wrapping a sampling object.

use std::fmt;
use std::sync::Arc;

use weft_core::Object;

use crate::{Denoiser, Model, Sampler};

/// NOISE: the seed of the initial noise, or none (img2img tricks).
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseHandle {
    pub seed: Option<u64>,
}

impl Object for NoiseHandle {}

impl weft_core::Handle for NoiseHandle {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Noise;
}

/// GUIDER: a denoiser with its guidance rule, ready for any sampler.
#[derive(Clone)]
pub struct GuiderHandle {
    pub name: String,
    pub denoiser: Arc<dyn Denoiser>,
    /// The model underneath, when there is one, for latent checks.
    pub model: Option<Arc<Model>>,
}

impl fmt::Debug for GuiderHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

impl Object for GuiderHandle {}

impl weft_core::Handle for GuiderHandle {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Guider;
}

/// SAMPLER: a sampling algorithm with its options.
#[derive(Clone, Debug)]
pub struct SamplerHandle {
    pub name: String,
    pub sampler: Arc<dyn Sampler>,
}

impl Object for SamplerHandle {}

impl weft_core::Handle for SamplerHandle {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Sampler;
}
