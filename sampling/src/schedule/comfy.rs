//! ComfyUI's named schedulers, computed from a model's σ range or table.

use super::beta_dist::beta_quantile;
use super::*;

/// Levels of ComfyUI's SD3 σ grid (`ModelSamplingDiscreteFlow`): σ =
/// shift(i/1000) for i = 1..=1000 (Flux's has 10000), so table-based
/// schedulers treat flow models the way ComfyUI does and σ_min is positive,
/// which log-spaced schedules need.
pub(super) const FLOW_GRID: usize = 1000;

/// The ascending σ table a scheduler picks from: a discrete model's own
/// levels, or ComfyUI's flow grid.
fn levels(what: &str, ms: &ModelSampling) -> Result<Vec<f64>, String> {
    match &ms.levels {
        NoiseLevels::Discrete { sigmas } => {
            if sigmas.len() < 2 {
                return Err(format!(
                    "{what}: the model has {} noise levels; need at least 2",
                    sigmas.len()
                ));
            }
            if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(format!(
                    "{what}: the model's σ table holds {s}; σ must be positive and finite"
                ));
            }
            if sigmas.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{what}: the model's σ table must increase with t"));
            }
            Ok(sigmas.clone())
        }
        NoiseLevels::Flow { multiplier, shift } => {
            check_positive(what, "the flow timestep multiplier", *multiplier)?;
            if let crate::FlowShift::Sd3(s) = shift {
                check_positive(what, "the flow shift", *s)?;
            }
            let grid = shift.grid();
            Ok((1..=grid)
                .map(|i| shift.apply(i as f64 / grid as f64))
                .collect())
        }
    }
}

/// (σ_min, σ_max) of a model, as ComfyUI's schedulers see it: the ends of
/// its σ table (for flow models, ComfyUI's grid: 0.001 and 1).
pub fn sigma_range(ms: &ModelSampling) -> Result<(f64, f64), String> {
    let table = levels("sigma_range", ms)?;
    Ok((table[0], table[table.len() - 1]))
}

pub(super) fn append_zero(mut sigmas: Vec<f64>) -> Vec<f64> {
    sigmas.push(0.0);
    sigmas
}

/// Karras et al. 2022 (EDM), eq. 5: σ evenly spaced in σ^(1/ρ) from σ_max to
/// σ_min, then 0. ρ = 7 (the paper's choice) spends more steps at low noise,
/// where detail is decided.
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Result<Vec<f64>, String> {
    check_steps("karras", n)?;
    check_range("karras", sigma_min, sigma_max)?;
    check_positive("karras", "rho", rho)?;
    Ok(append_zero(karras_without_zero(
        n, sigma_min, sigma_max, rho,
    )))
}

pub(super) fn karras_without_zero(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (hi + r * (lo - hi)).powf(rho))
        .collect()
}

/// σ evenly spaced in log σ from σ_max to σ_min (constant DPM-Solver step h
/// for diffusion models), then 0.
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Result<Vec<f64>, String> {
    check_steps("exponential", n)?;
    check_range("exponential", sigma_min, sigma_max)?;
    Ok(append_zero(
        np_linspace(sigma_max.ln(), sigma_min.ln(), n)
            .into_iter()
            .map(f64::exp)
            .collect(),
    ))
}

/// k-diffusion's polyexponential: log σ follows `rᵖ` for a ramp r from 1 to 0,
/// so ρ = 1 is [`exponential`] and larger ρ lingers at low noise.
pub fn polyexponential(
    n: usize,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
) -> Result<Vec<f64>, String> {
    check_steps("polyexponential", n)?;
    check_range("polyexponential", sigma_min, sigma_max)?;
    check_positive("polyexponential", "rho", rho)?;
    let (lo, hi) = (sigma_min.ln(), sigma_max.ln());
    Ok(append_zero(
        np_linspace(1.0, 0.0, n)
            .into_iter()
            .map(|r| (r.powf(rho) * (hi - lo) + lo).exp())
            .collect(),
    ))
}

/// ComfyUI's `simple`: every (table length / n)-th level counted down from
/// the top of the table, then 0.
pub fn simple(ms: &ModelSampling, n: usize) -> Result<Vec<f64>, String> {
    check_steps("simple", n)?;
    let table = levels("simple", ms)?;
    if n > table.len() {
        // ComfyUI would repeat levels, giving zero-length steps that
        // multistep samplers divide by.
        return Err(format!(
            "simple: {n} steps is more than the model's {} noise levels",
            table.len()
        ));
    }
    let stride = table.len() as f64 / n as f64;
    Ok(append_zero(
        (0..n)
            .map(|i| table[table.len() - 1 - (i as f64 * stride) as usize])
            .collect(),
    ))
}

/// ComfyUI's `ddim_uniform`: every ⌊len/n⌋-th level from t = 1 upwards,
/// reversed, then 0 (the DDIM paper's uniform skip). When n does not divide
/// the table length this gives more than n steps, as ComfyUI does (e.g. 7
/// steps on 1000 levels walk 8). If level 1 is already σ ≈ 0 it serves as the
/// final value and one more step is taken instead.
pub fn ddim_uniform(ms: &ModelSampling, n: usize) -> Result<Vec<f64>, String> {
    check_steps("ddim_uniform", n)?;
    let table = levels("ddim_uniform", ms)?;
    let ends_at_zero = table[1].abs() <= 1e-5;
    let n = if ends_at_zero { n + 1 } else { n };
    let stride = (table.len() / n).max(1);
    let mut sigmas: Vec<f64> = table
        .iter()
        .skip(1)
        .step_by(stride)
        .rev()
        .copied()
        .collect();
    if !ends_at_zero {
        sigmas.push(0.0);
    }
    Ok(sigmas)
}

/// Timesteps evenly spaced between the model's σ_max and σ_min, mapped back
/// to σ (log-σ interpolation for discrete models): ComfyUI's `normal`, or
/// with `sgm` its `sgm_uniform`, which splits the range into n + 1 points and
/// drops the last, as Stable Diffusion XL's reference sampler does.
fn timestep_uniform(
    what: &str,
    ms: &ModelSampling,
    n: usize,
    sgm: bool,
) -> Result<Vec<f64>, String> {
    check_steps(what, n)?;
    let table = levels(what, ms)?;
    let (sigma_min, sigma_max) = (table[0], table[table.len() - 1]);
    let (start, end) = (ms.timestep(sigma_max), ms.timestep(sigma_min));
    let timesteps = if sgm {
        let mut t = np_linspace(start, end, n + 1);
        t.pop();
        t
    } else if ms.sigma_at(end).abs() <= 1e-5 {
        // The last point is already σ = 0: make it the final value.
        return Ok(np_linspace(start, end, n + 1)
            .into_iter()
            .map(|t| ms.sigma_at(t))
            .collect());
    } else {
        np_linspace(start, end, n)
    };
    Ok(append_zero(
        timesteps.into_iter().map(|t| ms.sigma_at(t)).collect(),
    ))
}

/// ComfyUI's `normal`: timesteps evenly spaced from the model's σ_max to σ_min.
pub fn normal(ms: &ModelSampling, n: usize) -> Result<Vec<f64>, String> {
    timestep_uniform("normal", ms, n, false)
}

/// ComfyUI's `sgm_uniform`: n timesteps evenly spaced over [σ_min, σ_max]
/// without the σ_min end, then 0.
pub fn sgm_uniform(ms: &ModelSampling, n: usize) -> Result<Vec<f64>, String> {
    timestep_uniform("sgm_uniform", ms, n, true)
}

/// Lee et al. 2024, "Beta Sampling is All You Need": timesteps at the
/// quantiles of a Beta(α, β) distribution, which with α = β = 0.6 packs steps
/// at both ends of the schedule. Timesteps are rounded to the model's levels,
/// and a level that comes up twice is used once (ComfyUI's rule), so small
/// tables can give fewer than n steps.
pub fn beta(ms: &ModelSampling, n: usize, alpha: f64, beta: f64) -> Result<Vec<f64>, String> {
    check_steps("beta", n)?;
    check_positive("beta", "alpha", alpha)?;
    check_positive("beta", "beta", beta)?;
    let table = levels("beta", ms)?;
    let top = (table.len() - 1) as f64;
    let mut sigmas = Vec::with_capacity(n + 1);
    let mut last = None;
    for i in 0..n {
        let q = 1.0 - i as f64 / n as f64;
        let t = (beta_quantile(q, alpha, beta) * top).round_ties_even() as usize;
        if last != Some(t) {
            sigmas.push(table[t]);
            last = Some(t);
        }
    }
    Ok(append_zero(sigmas))
}

/// Movie Gen's linear-quadratic schedule (ComfyUI's `linear_quadratic`):
/// 1 − σ/σ_max rises linearly from 0 to `threshold_noise` over the first
/// `linear_steps` (default n/2), then along the parabola that continues that
/// slope and reaches 1 at step n. Mochi was trained for it.
pub fn linear_quadratic(
    n: usize,
    sigma_max: f64,
    threshold_noise: f64,
    linear_steps: Option<usize>,
) -> Result<Vec<f64>, String> {
    let what = "linear_quadratic";
    check_steps(what, n)?;
    check_positive(what, "sigma_max", sigma_max)?;
    if !(threshold_noise > 0.0 && threshold_noise < 1.0) {
        return Err(format!(
            "{what}: threshold_noise must lie in (0, 1), got {threshold_noise}"
        ));
    }
    if n == 1 {
        return Ok(vec![sigma_max, 0.0]);
    }
    let linear = linear_steps.unwrap_or(n / 2);
    if linear == 0 || linear >= n {
        return Err(format!(
            "{what}: linear_steps must lie in 1..{n}, got {linear}"
        ));
    }
    let (l, q, tau) = (linear as f64, (n - linear) as f64, threshold_noise);
    let slope = tau / l;
    // Curvature that makes tau + slope·q + curve·q² = 1 at the last step.
    let curve = (1.0 - tau - slope * q) / (q * q);
    let done = |i: usize| {
        let i = i as f64;
        if i < l {
            slope * i
        } else {
            tau + slope * (i - l) + curve * (i - l) * (i - l)
        }
    };
    let mut sigmas: Vec<f64> = (0..n).map(|i| sigma_max * (1.0 - done(i))).collect();
    sigmas.push(0.0);
    if sigmas.windows(2).any(|w| w[0] <= w[1]) {
        return Err(format!(
            "{what}: threshold_noise {tau} with {linear} linear steps of {n} does not give a decreasing schedule"
        ));
    }
    Ok(sigmas)
}

/// Sabour et al. 2024, "Align Your Steps", KL-optimal schedule: σ evenly
/// spaced in arctan σ from σ_max to σ_min, then 0.
pub fn kl_optimal(n: usize, sigma_min: f64, sigma_max: f64) -> Result<Vec<f64>, String> {
    check_steps("kl_optimal", n)?;
    check_range("kl_optimal", sigma_min, sigma_max)?;
    let (lo, hi) = (sigma_min.atan(), sigma_max.atan());
    Ok(append_zero(
        np_linspace(0.0, 1.0, n)
            .into_iter()
            .map(|s| (s * lo + (1.0 - s) * hi).tan())
            .collect(),
    ))
}

/// ComfyUI's `SDTurboScheduler`: SD-Turbo was distilled at ten timesteps,
/// 999, 899, …, 99. Take `steps` of them after skipping the first
/// 10 − ⌊10·denoise⌋, map each to σ through the model, then append 0 (only
/// `[0]` when denoise skips all ten).
pub fn sd_turbo(ms: &ModelSampling, steps: usize, denoise: f64) -> Result<Vec<f64>, String> {
    let what = "sd_turbo";
    if !(1..=10).contains(&steps) {
        return Err(format!("{what}: steps must lie in 1..=10, got {steps}"));
    }
    if !(0.0..=1.0).contains(&denoise) {
        return Err(format!("{what}: denoise must lie in [0, 1], got {denoise}"));
    }
    levels(what, ms)?;
    let start = 10 - (10.0 * denoise) as usize;
    Ok(append_zero(
        (1..=10)
            .rev()
            .map(|k| (k * 100 - 1) as f64)
            .skip(start)
            .take(steps)
            .map(|t| ms.sigma_at(t))
            .collect(),
    ))
}

const SCHEDULER_NAMES: [&str; 9] = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];

/// ComfyUI's scheduler names, in ComfyUI's order.
pub fn scheduler_names() -> &'static [&'static str] {
    &SCHEDULER_NAMES
}

/// The named ComfyUI scheduler for a model, with ComfyUI's defaults
/// (Karras ρ = 7, Beta(0.6, 0.6), linear-quadratic threshold 0.025).
pub fn sigmas_by_name(name: &str, ms: &ModelSampling, steps: usize) -> Result<Vec<f64>, String> {
    let range = || sigma_range(ms);
    match name {
        "simple" => simple(ms, steps),
        "sgm_uniform" => sgm_uniform(ms, steps),
        "karras" => range().and_then(|(lo, hi)| karras(steps, lo, hi, 7.0)),
        "exponential" => range().and_then(|(lo, hi)| exponential(steps, lo, hi)),
        "ddim_uniform" => ddim_uniform(ms, steps),
        "beta" => beta(ms, steps, 0.6, 0.6),
        "normal" => normal(ms, steps),
        "linear_quadratic" => range().and_then(|(_, hi)| linear_quadratic(steps, hi, 0.025, None)),
        "kl_optimal" => range().and_then(|(lo, hi)| kl_optimal(steps, lo, hi)),
        other => Err(format!(
            "unknown scheduler {other:?}; known: {}",
            SCHEDULER_NAMES.join(", ")
        )),
    }
}
