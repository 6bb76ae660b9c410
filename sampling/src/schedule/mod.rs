//! Noise schedules: training β schedules and the σ schedules samplers walk.
//!
//! σ is k-diffusion's noise level (see [`super::model`]): diffusion samples
//! are `x0 + σ·ε`, flow samples `(1−σ)·x0 + σ·ε`. Every σ schedule here is a
//! descending list that ends with the final σ (usually 0), so `n` steps give
//! `n + 1` values, the way ComfyUI's SIGMAS are passed between nodes.
//!
//! Three families live here:
//! * training schedules (β, ᾱ, zero terminal SNR), which define a discrete
//!   model's σ table;
//! * ComfyUI's named schedulers, computed from a [`ModelSampling`];
//! * diffusers' `set_timesteps`, reproduced exactly (timesteps and σ), so the
//!   sampler parity tests can start from the same schedule diffusers used.
//!
//! Every public function validates its inputs and returns `Err` with a
//! readable message instead of panicking or producing NaN.

use crate::model::{ModelSampling, NoiseLevels};

mod beta_dist;
mod comfy;
mod diffusers;
mod flow;
mod sigmas;
#[cfg(test)]
mod tests;
mod training;

pub use comfy::*;
pub use diffusers::*;
pub use flow::*;
pub use sigmas::*;
pub use training::*;

/// The most steps any function here accepts. Far beyond any useful sampler
/// run, it keeps a typo (or a tiny img2img denoise) from allocating without bound.
pub const MAX_STEPS: usize = 100_000;

fn check_steps(what: &str, steps: usize) -> Result<(), String> {
    if steps == 0 {
        return Err(format!("{what}: steps must be at least 1"));
    }
    if steps > MAX_STEPS {
        return Err(format!(
            "{what}: {steps} steps is more than the limit of {MAX_STEPS}"
        ));
    }
    Ok(())
}

fn check_positive(what: &str, name: &str, v: f64) -> Result<(), String> {
    if !(v.is_finite() && v > 0.0) {
        return Err(format!(
            "{what}: {name} must be a positive finite number, got {v}"
        ));
    }
    Ok(())
}

fn check_range(what: &str, sigma_min: f64, sigma_max: f64) -> Result<(), String> {
    check_positive(what, "sigma_min", sigma_min)?;
    check_positive(what, "sigma_max", sigma_max)?;
    if sigma_min >= sigma_max {
        return Err(format!(
            "{what}: sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})"
        ));
    }
    Ok(())
}

/// A schedule handed in by a caller: it must be something a sampler could walk.
fn check_sigmas(what: &str, sigmas: &[f64]) -> Result<(), String> {
    if sigmas.is_empty() {
        return Err(format!("{what}: the σ schedule is empty"));
    }
    if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(format!(
            "{what}: σ values must be finite and non-negative, got {s}"
        ));
    }
    Ok(())
}

/// numpy's `linspace(start, stop, num)`: `start + i·step`, with the last point
/// set to `stop` exactly. diffusers rounds these values to integer timesteps,
/// so reproducing numpy's exact arithmetic decides ties like 499.5.
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// numpy's float `arange(start, stop, step)` for a negative step: its length is
/// `ceil((stop − start)/step)` and element `i` is `start + i·δ`, where δ is the
/// rounded difference of the first two elements rather than `step` itself.
fn np_arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}
