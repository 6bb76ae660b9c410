//! The handle values that flow between sampling nodes.

use std::fmt;
use std::sync::Arc;

use weft_core::{NodeError, Object, Value, ValueType};

use crate::sampling::{Denoiser, Model, Sampler};

/// NOISE: the seed of the initial noise, or none (img2img tricks).
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseHandle {
    pub seed: Option<u64>,
}

impl Object for NoiseHandle {}

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

/// SAMPLER: a sampling algorithm with its options.
#[derive(Clone, Debug)]
pub struct SamplerHandle {
    pub name: String,
    pub sampler: Arc<dyn Sampler>,
}

impl Object for SamplerHandle {}

/// Reads a handle of type `T` from input `name`.
pub fn handle<'a, T: Object>(
    inputs: &'a weft_core::Inputs,
    name: &str,
    ty: ValueType,
) -> Result<&'a T, NodeError> {
    inputs
        .value(name)?
        .downcast::<T>()
        .ok_or_else(|| NodeError::input(name, format!("expected a {ty} value")))
}

/// Wraps a handle as a value of type `ty`.
pub fn value<T: Object>(ty: ValueType, object: T) -> Value {
    Value::Object(ty, Arc::new(object))
}
