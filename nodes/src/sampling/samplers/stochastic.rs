//! Stochastic samplers (ancestral and SDE steps).

use super::{Sampler, SamplerOptions};

/// Names served by [`by_name`].
pub const NAMES: &[&str] = &[];

pub fn by_name(_name: &str, _opts: SamplerOptions) -> Option<Box<dyn Sampler>> {
    None
}
