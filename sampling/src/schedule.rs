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

use super::model::{ModelSampling, NoiseLevels};

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

// ---------------------------------------------------------------------------
// Training schedules
// ---------------------------------------------------------------------------

/// The β schedule a discrete-time model was trained with, by diffusers'
/// `beta_schedule` name:
/// * `linear`: β evenly spaced from `beta_start` to `beta_end` (DDPM);
/// * `scaled_linear`: √β evenly spaced, then squared (Stable Diffusion);
/// * `squaredcos_cap_v2`: Nichol & Dhariwal's cosine ᾱ(t) =
///   cos²((t + 0.008)/1.008 · π/2), each β capped at 0.999 so the last steps
///   stay invertible; `beta_start`/`beta_end` are ignored.
pub fn betas(
    kind: &str,
    n_train: usize,
    beta_start: f64,
    beta_end: f64,
) -> Result<Vec<f64>, String> {
    check_steps("betas", n_train)?;
    let check_beta = |name: &str, b: f64| {
        if !(b.is_finite() && b > 0.0 && b < 1.0) {
            return Err(format!("betas: {name} must lie in (0, 1), got {b}"));
        }
        Ok(())
    };
    match kind {
        "linear" => {
            check_beta("beta_start", beta_start)?;
            check_beta("beta_end", beta_end)?;
            Ok(np_linspace(beta_start, beta_end, n_train))
        }
        "scaled_linear" => {
            check_beta("beta_start", beta_start)?;
            check_beta("beta_end", beta_end)?;
            Ok(np_linspace(beta_start.sqrt(), beta_end.sqrt(), n_train)
                .into_iter()
                .map(|r| r * r)
                .collect())
        }
        "squaredcos_cap_v2" => {
            let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
            let n = n_train as f64;
            Ok((0..n_train)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n, (i + 1) as f64 / n);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect())
        }
        other => Err(format!(
            "betas: unknown beta schedule {other:?} (expected linear, scaled_linear or squaredcos_cap_v2)"
        )),
    }
}

/// ᾱ_t = Π_{s≤t} (1 − β_s). Infallible: a product cannot fail, and [`betas`]
/// already rejected anything outside (0, 1).
pub fn alphas_cumprod(betas: &[f64]) -> Vec<f64> {
    betas
        .iter()
        .scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        })
        .collect()
}

/// Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
/// Flawed": shift and scale √ᾱ so the last step has exactly zero signal
/// (ᾱ_T = 0) while the first keeps its value, so a model fine-tuned on it can
/// start from pure noise. diffusers applies this to the betas and recomputes
/// ᾱ; working on ᾱ directly is the same map without the round trip.
///
/// The result ends in ᾱ = 0, i.e. σ = ∞: use [`clamp_terminal_alpha`] before
/// building σ from it, as diffusers' Euler-family schedulers do.
pub fn rescale_zero_terminal_snr(alphas_cumprod: &[f64]) -> Result<Vec<f64>, String> {
    let what = "rescale_zero_terminal_snr";
    if alphas_cumprod.len() < 2 {
        return Err(format!("{what}: needs at least two training steps"));
    }
    if let Some(a) = alphas_cumprod
        .iter()
        .find(|a| !(a.is_finite() && **a > 0.0 && **a <= 1.0))
    {
        return Err(format!("{what}: ᾱ values must lie in (0, 1], got {a}"));
    }
    let first = alphas_cumprod[0].sqrt();
    let last = alphas_cumprod[alphas_cumprod.len() - 1].sqrt();
    if first <= last {
        return Err(format!("{what}: ᾱ must decrease over the schedule"));
    }
    let scale = first / (first - last);
    Ok(alphas_cumprod
        .iter()
        .map(|a| {
            let r = (a.sqrt() - last) * scale;
            r * r
        })
        .collect())
}

/// ᾱ = 2⁻²⁴, the floor diffusers' Euler-family schedulers put on the last ᾱ
/// of a zero-terminal-SNR schedule: σ_max becomes √(2²⁴ − 1) ≈ 4096 instead of ∞.
pub const TERMINAL_ALPHA_FLOOR: f64 = 1.0 / 16_777_216.0;

/// Raises the last ᾱ to at least [`TERMINAL_ALPHA_FLOOR`], so a zero-SNR
/// schedule gets a finite σ_max (diffusers' Euler does this; its DDIM keeps 0
/// because it never divides by ᾱ).
pub fn clamp_terminal_alpha(alphas_cumprod: &[f64]) -> Result<Vec<f64>, String> {
    let mut out = alphas_cumprod.to_vec();
    match out.last_mut() {
        Some(last) if last.is_finite() => *last = last.max(TERMINAL_ALPHA_FLOOR),
        Some(last) => return Err(format!("clamp_terminal_alpha: last ᾱ is {last}")),
        None => return Err("clamp_terminal_alpha: ᾱ is empty".into()),
    }
    Ok(out)
}

/// DDIM's "previous ᾱ": `alphas_cumprod[prev_t]`, or, past the start of the
/// table (`prev_t < 0`, the last step), 1 when `set_alpha_to_one` (the step
/// lands on the clean sample, σ = 0) and ᾱ_0 otherwise (it stops at σ_min).
pub fn previous_alpha_cumprod(
    alphas_cumprod: &[f64],
    prev_timestep: i64,
    set_alpha_to_one: bool,
) -> Result<f64, String> {
    let what = "previous_alpha_cumprod";
    if alphas_cumprod.is_empty() {
        return Err(format!("{what}: ᾱ is empty"));
    }
    if prev_timestep < 0 {
        return Ok(if set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        });
    }
    usize::try_from(prev_timestep)
        .ok()
        .and_then(|t| alphas_cumprod.get(t).copied())
        .ok_or_else(|| {
            format!(
                "{what}: timestep {prev_timestep} is past the {} training steps",
                alphas_cumprod.len()
            )
        })
}

/// σ_t = √((1 − ᾱ_t)/ᾱ_t), the k-diffusion noise level of each training
/// step, ascending. Rejects ᾱ = 0 (σ = ∞), which needs [`clamp_terminal_alpha`].
pub fn sigma_table(alphas_cumprod: &[f64]) -> Result<Vec<f64>, String> {
    if alphas_cumprod.is_empty() {
        return Err("sigma_table: ᾱ is empty".into());
    }
    alphas_cumprod
        .iter()
        .map(|&a| {
            if a.is_finite() && a > 0.0 && a <= 1.0 {
                Ok(((1.0 - a) / a).sqrt())
            } else if a == 0.0 {
                Err("sigma_table: ᾱ = 0 gives σ = ∞; clamp the zero-SNR end with clamp_terminal_alpha".into())
            } else {
                Err(format!("sigma_table: ᾱ must lie in (0, 1], got {a}"))
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// ComfyUI's schedulers
// ---------------------------------------------------------------------------

/// Levels of ComfyUI's flow-model σ grid: σ = i/1000 for i = 1..=1000
/// (`ModelSamplingDiscreteFlow` at shift 1), so table-based schedulers treat
/// flow models the way ComfyUI does and σ_min is 0.001 rather than 0, which
/// log-spaced schedules could not reach.
const FLOW_GRID: usize = 1000;

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
        NoiseLevels::Flow { multiplier } => {
            check_positive(what, "the flow timestep multiplier", *multiplier)?;
            Ok((1..=FLOW_GRID)
                .map(|i| i as f64 / FLOW_GRID as f64)
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

fn append_zero(mut sigmas: Vec<f64>) -> Vec<f64> {
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

fn karras_without_zero(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
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

// ---------------------------------------------------------------------------
// The Beta distribution's quantile function
// ---------------------------------------------------------------------------

/// ln Γ(x) for x > 0: Lanczos' approximation (g = 7, nine terms, about 15
/// digits), with the reflection formula below 1/2 where the series is poor.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let sum = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularised incomplete beta function I_x(a, b), the Beta(a, b) CDF.
/// Its continued fraction converges fast for x below the mean-ish point
/// (a+1)/(a+b+2); above it the symmetry I_x(a,b) = 1 − I_{1−x}(b,a) is used.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    let ln_front = a * x.ln() + b * (1.0 - x).ln() + ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b);
    ln_front.exp() / a * beta_continued_fraction(x, a, b)
}

/// The continued fraction 1/(1 + d₁/(1 + d₂/(1 + …))) of I_x(a, b), with
/// d₂ₘ₊₁ = −(a+m)(a+b+m)x / ((a+2m)(a+2m+1)) and d₂ₘ = m(b−m)x / ((a+2m−1)(a+2m)),
/// evaluated by the modified Lentz method (which avoids forming the huge
/// numerators and denominators of the convergents).
fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    // f = 1/(1 + d₁/(1 + …)) starts from the convergent after d₁.
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
    let mut f = d;
    for m in 1..=500 {
        let m = m as f64;
        for coeff in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 / guard(1.0 + coeff * d);
            c = guard(1.0 + coeff / c);
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    f
}

/// The q-quantile of Beta(a, b), by bisection on the CDF: slower than Newton
/// but cannot diverge at the infinite-density ends that a, b < 1 produce.
fn beta_quantile(q: f64, a: f64, b: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if incomplete_beta(mid, a, b) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

// ---------------------------------------------------------------------------
// diffusers' set_timesteps
// ---------------------------------------------------------------------------

/// diffusers' `timestep_spacing` (Lin et al. 2023, table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// Evenly spaced over [0, N−1], both ends included.
    Linspace,
    /// Multiples of ⌊N/n⌋ from 0, plus `steps_offset`: never reaches t = N−1,
    /// so the first step is not at full noise (SD 1.x's original setting).
    Leading,
    /// Counted down from N in steps of N/n, minus one: starts at t = N−1.
    Trailing,
}

impl TimestepSpacing {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "linspace" => Ok(TimestepSpacing::Linspace),
            "leading" => Ok(TimestepSpacing::Leading),
            "trailing" => Ok(TimestepSpacing::Trailing),
            other => Err(format!(
                "unknown timestep_spacing {other:?} (expected linspace, leading or trailing)"
            )),
        }
    }
}

/// diffusers' `final_sigmas_type`: what the schedule ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigma {
    /// σ = 0: the last step lands on the clean sample.
    Zero,
    /// σ of training step 0: the last step stops at the smallest trained noise.
    SigmaMin,
}

impl FinalSigma {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "zero" => Ok(FinalSigma::Zero),
            "sigma_min" => Ok(FinalSigma::SigmaMin),
            other => Err(format!(
                "unknown final_sigmas_type {other:?} (expected zero or sigma_min)"
            )),
        }
    }
}

/// The `set_timesteps` options shared by diffusers' σ-based schedulers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiffusersConfig {
    pub spacing: TimestepSpacing,
    /// Added to `leading` timesteps only (diffusers ignores it otherwise).
    pub steps_offset: usize,
    /// `use_karras_sigmas`: replace the σ at the timesteps by a Karras
    /// schedule (ρ = 7) over the same range, and map those σ back to timesteps.
    pub karras: bool,
    pub final_sigma: FinalSigma,
}

impl Default for DiffusersConfig {
    /// Euler's defaults (DPM-Solver's too, but for their timestep rule).
    fn default() -> Self {
        DiffusersConfig {
            spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            karras: false,
            final_sigma: FinalSigma::Zero,
        }
    }
}

/// What a diffusers scheduler holds after `set_timesteps`: the timesteps
/// passed to the model and the σ list, which has one more entry (the final σ).
#[derive(Clone, Debug, PartialEq)]
pub struct DiffusersSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
}

fn check_train_steps(what: &str, n_train: usize, steps: usize) -> Result<(), String> {
    check_steps(what, steps)?;
    check_steps(what, n_train)?;
    if steps > n_train {
        return Err(format!(
            "{what}: {steps} inference steps is more than the {n_train} training steps"
        ));
    }
    Ok(())
}

/// Timesteps of diffusers' single-step schedulers (Euler, Euler ancestral,
/// Heun, LMS) and of DDIM/DDPM, highest first.
///
/// `Linspace` values are fractional in general; they are rounded to f32
/// because that is the value these schedulers store and feed the model
/// (DDIM and DDPM round them to integers instead).
pub fn diffusers_timesteps(
    spacing: TimestepSpacing,
    n_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>, String> {
    let what = "diffusers_timesteps";
    check_train_steps(what, n_train, steps)?;
    let timesteps = match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (n_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t as f32 as f64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = n_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(n_train, steps),
    };
    check_timesteps(what, n_train, steps, timesteps)
}

/// Timesteps of diffusers' multistep solvers (DPM-Solver++, UniPC): the grid
/// has n + 1 points and drops the one nearest t = 0, and all are integers.
pub fn diffusers_multistep_timesteps(
    spacing: TimestepSpacing,
    n_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>, String> {
    let what = "diffusers_multistep_timesteps";
    check_train_steps(what, n_train, steps)?;
    let timesteps = match spacing {
        TimestepSpacing::Linspace => {
            let mut t: Vec<f64> = np_linspace(0.0, (n_train - 1) as f64, steps + 1)
                .into_iter()
                .rev()
                .map(f64::round_ties_even)
                .collect();
            t.pop();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = n_train / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(n_train, steps),
    };
    check_timesteps(what, n_train, steps, timesteps)
}

/// For some n (61, for one) numpy's float `arange` overshoots by one element
/// and diffusers ends on timestep −1; weft keeps the first n, which are
/// diffusers' own.
fn trailing(n_train: usize, steps: usize) -> Vec<f64> {
    let ratio = n_train as f64 / steps as f64;
    np_arange_down(n_train as f64, 0.0, -ratio)
        .into_iter()
        .take(steps)
        .map(|t| t.round_ties_even() - 1.0)
        .collect()
}

/// diffusers' spacing rules are float arithmetic; refuse the rare step
/// counts where they would not give n timesteps inside the training range.
fn check_timesteps(
    what: &str,
    n_train: usize,
    steps: usize,
    t: Vec<f64>,
) -> Result<Vec<f64>, String> {
    if t.len() != steps {
        return Err(format!(
            "{what}: the spacing gave {} timesteps for {steps} steps",
            t.len()
        ));
    }
    if let Some(bad) = t
        .iter()
        .find(|t| !(**t >= 0.0 && **t <= (n_train - 1) as f64))
    {
        return Err(format!(
            "{what}: timestep {bad} is outside the {n_train} training steps (check steps_offset)"
        ));
    }
    Ok(t)
}

/// σ at (possibly fractional) timesteps, interpolated linearly in σ between
/// the integer training steps, as diffusers' discrete schedulers do (unlike
/// k-diffusion's log-σ interpolation in [`ModelSampling::sigma_at`]).
pub fn interp_sigmas(sigma_table: &[f64], timesteps: &[f64]) -> Result<Vec<f64>, String> {
    check_sigmas("interp_sigmas", sigma_table)?;
    let top = sigma_table.len() - 1;
    timesteps
        .iter()
        .map(|&t| {
            if t.is_nan() {
                return Err("interp_sigmas: timestep is NaN".to_string());
            }
            if t <= 0.0 {
                return Ok(sigma_table[0]);
            }
            if t >= top as f64 {
                return Ok(sigma_table[top]);
            }
            let i = t.floor() as usize;
            let w = t - i as f64;
            Ok(if w == 0.0 {
                sigma_table[i]
            } else {
                (sigma_table[i + 1] - sigma_table[i]) * w + sigma_table[i]
            })
        })
        .collect()
}

/// The fractional timestep of σ: diffusers' `_sigma_to_t`, linear in log σ
/// between the two training levels around it, clamped to the table.
pub fn sigma_to_timestep(sigma_table: &[f64], sigma: f64) -> Result<f64, String> {
    let what = "sigma_to_timestep";
    if sigma_table.len() < 2 {
        return Err(format!("{what}: the σ table needs at least 2 levels"));
    }
    check_sigmas(what, sigma_table)?;
    if sigma.is_nan() {
        return Err(format!("{what}: σ is NaN"));
    }
    let logs: Vec<f64> = sigma_table.iter().map(|s| s.ln()).collect();
    Ok(timestep_from_logs(&logs, sigma))
}

/// [`sigma_to_timestep`] on a precomputed, ascending log σ table (≥ 2 levels).
fn timestep_from_logs(log_table: &[f64], sigma: f64) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let below = log_table.partition_point(|l| *l <= log_sigma);
    let low = below.saturating_sub(1).min(log_table.len() - 2);
    let (l, h) = (log_table[low], log_table[low + 1]);
    let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// The σ table and its logs as diffusers holds them: computed in float32
/// from float32 ᾱ. Fractional (Karras) timesteps depend on these to the last
/// bit, so the parity functions use them rather than [`sigma_table`].
fn diffusers_tables(alphas_cumprod: &[f64]) -> Result<(Vec<f64>, Vec<f64>), String> {
    let table = sigma_table(alphas_cumprod)?;
    if table.len() < 2 {
        return Err("diffusers schedules need at least 2 training steps".into());
    }
    let f32_table: Vec<f32> = alphas_cumprod
        .iter()
        .map(|&a| {
            let a = a as f32;
            ((1.0 - a) / a).sqrt()
        })
        .collect();
    if f32_table.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(
            "diffusers schedules: σ overflows float32; clamp ᾱ with clamp_terminal_alpha".into(),
        );
    }
    Ok((
        f32_table.iter().map(|s| f64::from(*s)).collect(),
        f32_table.iter().map(|s| f64::from(s.ln())).collect(),
    ))
}

fn final_sigma(kind: FinalSigma, sigma_table: &[f64]) -> f64 {
    match kind {
        FinalSigma::Zero => 0.0,
        FinalSigma::SigmaMin => sigma_table[0],
    }
}

/// `EulerDiscreteScheduler.set_timesteps` (also Euler ancestral, LMS, and
/// Heun before [`heun_interleave`]). With Karras σ the range is that of the
/// σ at the spaced timesteps, and the timesteps are the (fractional, f32)
/// inverse of the Karras σ.
pub fn diffusers_euler(
    alphas_cumprod: &[f64],
    steps: usize,
    config: &DiffusersConfig,
) -> Result<DiffusersSchedule, String> {
    let (table, logs) = diffusers_tables(alphas_cumprod)?;
    let mut timesteps =
        diffusers_timesteps(config.spacing, table.len(), steps, config.steps_offset)?;
    let mut sigmas = interp_sigmas(&table, &timesteps)?;
    if config.karras {
        sigmas = karras_between(sigmas[sigmas.len() - 1], sigmas[0], steps)?;
        timesteps = sigmas
            .iter()
            .map(|&s| timestep_from_logs(&logs, s) as f32 as f64)
            .collect();
    }
    sigmas.push(final_sigma(config.final_sigma, &table));
    Ok(DiffusersSchedule { timesteps, sigmas })
}

/// `DPMSolverMultistepScheduler.set_timesteps` (UniPC's is the same). With
/// Karras σ the range is the whole training table, and the timesteps are the
/// inverse of the Karras σ rounded to integers.
pub fn diffusers_multistep(
    alphas_cumprod: &[f64],
    steps: usize,
    config: &DiffusersConfig,
) -> Result<DiffusersSchedule, String> {
    let (table, logs) = diffusers_tables(alphas_cumprod)?;
    let mut timesteps =
        diffusers_multistep_timesteps(config.spacing, table.len(), steps, config.steps_offset)?;
    let mut sigmas;
    if config.karras {
        sigmas = karras_between(table[0], table[table.len() - 1], steps)?;
        timesteps = sigmas
            .iter()
            .map(|&s| timestep_from_logs(&logs, s).round_ties_even())
            .collect();
    } else {
        sigmas = interp_sigmas(&table, &timesteps)?;
    }
    sigmas.push(final_sigma(config.final_sigma, &table));
    Ok(DiffusersSchedule { timesteps, sigmas })
}

fn karras_between(sigma_min: f64, sigma_max: f64, steps: usize) -> Result<Vec<f64>, String> {
    check_range("use_karras_sigmas", sigma_min, sigma_max)?;
    Ok(karras_without_zero(steps, sigma_min, sigma_max, 7.0))
}

/// Heun's layout: a second-order step evaluates the model at both ends, so
/// diffusers lists every interior σ (and its timestep) twice, giving 2n − 1
/// model calls over `[σ₀, σ₁, σ₁, …, σₙ₋₁, σₙ₋₁, σ_final]`.
pub fn heun_interleave(schedule: &DiffusersSchedule) -> Result<DiffusersSchedule, String> {
    let DiffusersSchedule { timesteps, sigmas } = schedule;
    if timesteps.is_empty() || sigmas.len() != timesteps.len() + 1 {
        return Err(format!(
            "heun_interleave: expected n timesteps and n + 1 σ, got {} and {}",
            timesteps.len(),
            sigmas.len()
        ));
    }
    let doubled = |v: &[f64]| -> Vec<f64> { v.iter().flat_map(|x| [*x, *x]).collect() };
    let mut t = vec![timesteps[0]];
    t.extend(doubled(&timesteps[1..]));
    let mut s = vec![sigmas[0]];
    s.extend(doubled(&sigmas[1..sigmas.len() - 1]));
    s.push(sigmas[sigmas.len() - 1]);
    Ok(DiffusersSchedule {
        timesteps: t,
        sigmas: s,
    })
}

fn check_strength(what: &str, strength: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(format!(
            "{what}: strength must lie in [0, 1], got {strength}"
        ));
    }
    Ok(())
}

/// The first step Stable Diffusion's img2img pipeline runs: it keeps the last
/// ⌊n·strength⌋ of n steps, so `t_start = n − ⌊n·strength⌋` (times the
/// scheduler's order for Heun) indexes the full schedule.
pub fn diffusers_img2img_start(steps: usize, strength: f64) -> Result<usize, String> {
    check_steps("diffusers_img2img_start", steps)?;
    check_strength("diffusers_img2img_start", strength)?;
    let kept = ((steps as f64 * strength) as usize).min(steps);
    Ok(steps - kept)
}

/// SD3's img2img (flow matching) variant: `t_start = ⌊n − n·strength⌋`, which
/// keeps one step more than [`diffusers_img2img_start`] when n·strength is
/// fractional (n = 50, strength 0.29: 35 rather than 36).
pub fn sd3_img2img_start(steps: usize, strength: f64) -> Result<usize, String> {
    check_steps("sd3_img2img_start", steps)?;
    check_strength("sd3_img2img_start", strength)?;
    Ok((steps as f64 - (steps as f64 * strength).min(steps as f64)).max(0.0) as usize)
}

// ---------------------------------------------------------------------------
// Flow matching
// ---------------------------------------------------------------------------

/// SD3's timestep shift σ' = s·σ / (1 + (s − 1)·σ): the same flow seen at a
/// resolution with s² times the pixels keeps its signal-to-noise ratio
/// (Esser et al. 2024, §5.3.2); s > 1 spends more steps at high noise.
pub fn flow_shift(sigma: f64, shift: f64) -> Result<f64, String> {
    check_positive("flow_shift", "shift", shift)?;
    if !(0.0..=1.0).contains(&sigma) {
        return Err(format!(
            "flow_shift: flow σ must lie in [0, 1], got {sigma}"
        ));
    }
    Ok(shift * sigma / (1.0 + (shift - 1.0) * sigma))
}

/// `FlowMatchEulerDiscreteScheduler.set_timesteps(n)` with 1000 training
/// steps: n timesteps evenly spaced from 1000·σ_max to 1000·σ_min, where
/// σ_min is the *shifted* σ of training step 1, then shifted again (diffusers
/// shifts the lower end twice), then 0. Timesteps are σ·1000.
pub fn flow_sigmas(n: usize, shift: f64) -> Result<Vec<f64>, String> {
    check_steps("flow_sigmas", n)?;
    let top = flow_shift(1.0, shift)?;
    let bottom = flow_shift(1.0 / FLOW_GRID as f64, shift)?;
    let sigmas = np_linspace(top, bottom, n)
        .into_iter()
        .map(|s| flow_shift(s, shift))
        .collect::<Result<_, _>>()?;
    Ok(append_zero(sigmas))
}

/// Flux's resolution-dependent shift μ: linear in the number of image tokens
/// (latent patches), 0.5 at 256 and 1.15 at 4096, extrapolated beyond.
pub fn flux_mu(image_seq_len: usize) -> Result<f64, String> {
    if image_seq_len == 0 {
        return Err("flux_mu: image_seq_len must be at least 1".into());
    }
    let slope = (1.15 - 0.5) / (4096.0 - 256.0);
    Ok(0.5 + slope * (image_seq_len as f64 - 256.0))
}

/// Flux's exponential time shift σ' = e^μ / (e^μ + (1/σ − 1)): the SD3 shift
/// with s = e^μ, written so μ can come from [`flux_mu`].
pub fn flux_time_shift(mu: f64, sigma: f64) -> Result<f64, String> {
    if !mu.is_finite() {
        return Err(format!("flux_time_shift: μ must be finite, got {mu}"));
    }
    if !(0.0..=1.0).contains(&sigma) {
        return Err(format!(
            "flux_time_shift: flow σ must lie in [0, 1], got {sigma}"
        ));
    }
    if sigma == 0.0 {
        return Ok(0.0);
    }
    let e = mu.exp();
    Ok(e / (e + (1.0 / sigma - 1.0)))
}

/// The Flux pipeline's schedule: σ evenly spaced from 1 to 1/n, time-shifted
/// by μ, then 0.
pub fn flux_sigmas(n: usize, mu: f64) -> Result<Vec<f64>, String> {
    check_steps("flux_sigmas", n)?;
    let sigmas = np_linspace(1.0, 1.0 / n as f64, n)
        .into_iter()
        .map(|s| flux_time_shift(mu, s))
        .collect::<Result<_, _>>()?;
    Ok(append_zero(sigmas))
}

// ---------------------------------------------------------------------------
// Working with σ lists (ComfyUI's utility nodes)
// ---------------------------------------------------------------------------

/// ComfyUI's SplitSigmas: the first `step` steps and the rest, for handing a
/// schedule to two samplers. The σ at the split ends the first list and
/// starts the second; a split past the end leaves the second list empty.
pub fn split_sigmas(sigmas: &[f64], step: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    check_sigmas("split_sigmas", sigmas)?;
    let step = step.min(sigmas.len());
    let high = sigmas[..(step + 1).min(sigmas.len())].to_vec();
    Ok((high, sigmas[step..].to_vec()))
}

/// ComfyUI's FlipSigmas: the schedule reversed, for inverting a sample back to
/// noise. A leading σ = 0 becomes 1e-4, since samplers divide by the σ they start from.
pub fn flip_sigmas(sigmas: &[f64]) -> Result<Vec<f64>, String> {
    check_sigmas("flip_sigmas", sigmas)?;
    let mut flipped: Vec<f64> = sigmas.iter().rev().copied().collect();
    if flipped[0] == 0.0 {
        flipped[0] = 1e-4;
    }
    Ok(flipped)
}

/// img2img by ComfyUI's rule: build the schedule for ⌊steps/denoise⌋ steps
/// and keep its last `steps + 1` values, so a partial denoise starts part-way
/// down the full-strength schedule. A denoise above 0.9999 counts as 1.
pub fn with_denoise<F>(schedule: F, steps: usize, denoise: f64) -> Result<Vec<f64>, String>
where
    F: Fn(usize) -> Result<Vec<f64>, String>,
{
    check_steps("with_denoise", steps)?;
    if !(denoise > 0.0 && denoise <= 1.0) {
        return Err(format!(
            "with_denoise: denoise must lie in (0, 1], got {denoise}"
        ));
    }
    if denoise > 0.9999 {
        return schedule(steps);
    }
    let total = steps as f64 / denoise;
    if total > MAX_STEPS as f64 {
        return Err(format!(
            "with_denoise: {steps} steps at denoise {denoise} needs {total:.0} steps, more than {MAX_STEPS}"
        ));
    }
    let full = schedule(total as usize)?;
    Ok(full[full.len().saturating_sub(steps + 1)..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Prediction;

    fn sd() -> ModelSampling {
        let betas = betas("scaled_linear", 1000, 0.00085, 0.012).unwrap();
        ModelSampling::discrete(&alphas_cumprod(&betas), Prediction::Epsilon)
    }

    fn assert_descending_to_zero(what: &str, s: &[f64]) {
        assert_eq!(s.last(), Some(&0.0), "{what}: {s:?}");
        assert!(
            s.windows(2).all(|w| w[0] > w[1]),
            "{what} not strictly decreasing: {s:?}"
        );
        assert!(s.iter().all(|v| v.is_finite()), "{what}: {s:?}");
    }

    #[test]
    fn karras_hits_both_ends_evenly_in_sigma_to_the_one_over_rho() {
        let s = karras(10, 0.03, 14.6, 7.0).unwrap();
        assert_eq!(s.len(), 11);
        assert!((s[0] - 14.6).abs() < 1e-12 && (s[9] - 0.03).abs() < 1e-12);
        let r: Vec<f64> = s[..10].iter().map(|x| x.powf(1.0 / 7.0)).collect();
        let d = r[1] - r[0];
        assert!(r.windows(2).all(|w| ((w[1] - w[0]) - d).abs() < 1e-12));
        let one = karras(1, 0.03, 14.6, 7.0).unwrap();
        assert!(one.len() == 2 && (one[0] - 14.6).abs() < 1e-12 && one[1] == 0.0);
    }

    #[test]
    fn exponential_is_log_linear_and_polyexponential_generalises_it() {
        let s = exponential(8, 0.1, 10.0).unwrap();
        let d = s[1].ln() - s[0].ln();
        assert!(s[..8]
            .windows(2)
            .all(|w| ((w[1].ln() - w[0].ln()) - d).abs() < 1e-12));
        assert!((s[0] - 10.0).abs() < 1e-12 && (s[7] - 0.1).abs() < 1e-12);
        let p = polyexponential(8, 0.1, 10.0, 1.0).unwrap();
        assert!(s.iter().zip(&p).all(|(a, b)| (a - b).abs() < 1e-12));
        // ρ > 1 keeps log σ below the log-linear line in the middle.
        let p2 = polyexponential(8, 0.1, 10.0, 2.0).unwrap();
        assert!(p2[4] < s[4]);
    }

    #[test]
    fn every_named_scheduler_descends_to_zero_for_diffusion_and_flow() {
        for (label, ms) in [("sd", sd()), ("flow", ModelSampling::flow(1000.0))] {
            let (lo, hi) = sigma_range(&ms).unwrap();
            for &name in scheduler_names() {
                for steps in [1, 2, 3, 10, 25, 50] {
                    let s = sigmas_by_name(name, &ms, steps).unwrap();
                    let what = format!("{label} {name} {steps}");
                    assert_descending_to_zero(&what, &s);
                    assert!(s[0] <= hi * (1.0 + 1e-12), "{what}: starts above σ_max");
                    // Which counts ComfyUI itself departs from: ddim_uniform's
                    // uneven stride adds steps, beta merges repeated levels.
                    match name {
                        "ddim_uniform" => assert!(s.len() > steps, "{what}"),
                        "beta" => assert!(s.len() <= steps + 1, "{what}"),
                        _ => assert_eq!(s.len(), steps + 1, "{what}"),
                    }
                    if name != "linear_quadratic" {
                        assert!(s[s.len() - 2] >= lo * (1.0 - 1e-12), "{what}: below σ_min");
                    }
                }
            }
        }
    }

    #[test]
    fn comfyui_table_schedulers_pick_the_expected_levels() {
        let ms = sd();
        let NoiseLevels::Discrete { sigmas: table } = &ms.levels else {
            unreachable!()
        };
        // simple, 10 steps on 1000 levels: t = 999, 899, …, 99.
        let s = simple(&ms, 10).unwrap();
        assert!((0..10).all(|i| s[i] == table[999 - 100 * i]));
        // ddim_uniform: t = 901, 801, …, 1.
        let s = ddim_uniform(&ms, 10).unwrap();
        assert!((0..10).all(|i| s[i] == table[901 - 100 * i]));
        assert_eq!(
            ddim_uniform(&ms, 7).unwrap().len(),
            9,
            "ComfyUI's stride 142 walks 8 levels"
        );
        // normal: σ_max and σ_min are its ends.
        let s = normal(&ms, 10).unwrap();
        assert!((s[0] / table[999] - 1.0).abs() < 1e-12 && (s[9] / table[0] - 1.0).abs() < 1e-12);
        // beta: the symmetric Beta(0.6, 0.6) puts the middle step at t = 500.
        let s = beta(&ms, 10, 0.6, 0.6).unwrap();
        assert_eq!(s[0], table[999]);
        assert_eq!(s[5], table[500]);
        // flow: simple is plain linear.
        let s = simple(&ModelSampling::flow(1.0), 4).unwrap();
        assert!(s
            .iter()
            .zip([1.0, 0.75, 0.5, 0.25, 0.0])
            .all(|(a, b)| (a - b).abs() < 1e-12));
    }

    #[test]
    fn linear_quadratic_is_linear_then_a_matching_parabola() {
        let s = linear_quadratic(10, 1.0, 0.025, None).unwrap();
        let done: Vec<f64> = s.iter().map(|x| 1.0 - x).collect();
        for (i, d) in done.iter().take(5).enumerate() {
            assert!((d - 0.005 * i as f64).abs() < 1e-12);
        }
        // The parabola starts at the threshold with the same slope.
        assert!((done[5] - 0.025).abs() < 1e-12);
        let second = done[7] - 2.0 * done[6] + done[5];
        assert!(((done[6] - done[5]) - (0.005 + second / 2.0)).abs() < 1e-12);
        assert_eq!(s[10], 0.0);
        assert!(linear_quadratic(10, 1.0, 0.025, Some(10)).is_err());
    }

    #[test]
    fn kl_optimal_is_linear_in_arctan() {
        let s = kl_optimal(6, 0.03, 14.6).unwrap();
        let a: Vec<f64> = s[..6].iter().map(|x| x.atan()).collect();
        let d = a[1] - a[0];
        assert!(a.windows(2).all(|w| ((w[1] - w[0]) - d).abs() < 1e-12));
        assert!((s[5] - 0.03).abs() < 1e-12);
    }

    #[test]
    fn incomplete_beta_and_its_inverse_in_closed_forms() {
        for x in [1e-6f64, 0.01, 0.3, 0.5, 0.77, 0.999] {
            // Beta(½, ½) is the arcsine law; Beta(a, 1) has CDF xᵃ.
            let arcsine = 2.0 / std::f64::consts::PI * x.sqrt().asin();
            assert!(
                (incomplete_beta(x, 0.5, 0.5) - arcsine).abs() < 1e-13,
                "x={x}"
            );
            assert!(
                (incomplete_beta(x, 2.5, 1.0) - x.powf(2.5)).abs() < 1e-13,
                "x={x}"
            );
            assert!((incomplete_beta(x, 1.0, 3.0) - (1.0 - (1.0 - x).powi(3))).abs() < 1e-13);
            assert!(
                (incomplete_beta(x, 0.6, 0.6) + incomplete_beta(1.0 - x, 0.6, 0.6) - 1.0).abs()
                    < 1e-13
            );
            for (a, b) in [(0.6, 0.6), (0.5, 0.5), (2.0, 5.0)] {
                let q = incomplete_beta(x, a, b);
                if q > 1.0 - 1e-9 {
                    continue; // the quantile cannot resolve x from a q this close to 1
                }
                assert!(
                    (beta_quantile(q, a, b) - x).abs() < 1e-10,
                    "a={a} b={b} x={x}"
                );
            }
        }
        assert!((beta_quantile(0.5, 0.6, 0.6) - 0.5).abs() < 1e-14);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn split_keeps_the_boundary_in_both_halves_and_flip_avoids_zero() {
        let s = karras(4, 0.1, 10.0, 7.0).unwrap();
        let (high, low) = split_sigmas(&s, 2).unwrap();
        assert_eq!(high, s[..3].to_vec());
        assert_eq!(low, s[2..].to_vec());
        let (all, none) = split_sigmas(&s, 9).unwrap();
        assert_eq!((all, none), (s.clone(), vec![]));
        let f = flip_sigmas(&s).unwrap();
        assert_eq!(f[0], 1e-4);
        assert_eq!(
            f[1..],
            s.iter().rev().skip(1).copied().collect::<Vec<_>>()[..]
        );
        assert!(split_sigmas(&[], 1).is_err() && flip_sigmas(&[1.0, f64::NAN]).is_err());
    }

    #[test]
    fn denoise_keeps_the_tail_of_a_longer_schedule() {
        let k = |n| karras(n, 0.03, 14.6, 7.0);
        let part = with_denoise(k, 10, 0.5).unwrap();
        let full = k(20).unwrap();
        assert_eq!(part, full[10..].to_vec());
        assert_eq!(with_denoise(k, 10, 1.0).unwrap(), k(10).unwrap());
        // ⌊7 / 0.3⌋ = 23 steps, last 8 values.
        assert_eq!(
            with_denoise(k, 7, 0.3).unwrap(),
            k(23).unwrap()[16..].to_vec()
        );
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(with_denoise(k, 10, bad).is_err(), "denoise {bad}");
        }
        assert!(with_denoise(k, 10, 1e-9).is_err(), "too many steps");
    }

    #[test]
    fn flow_and_flux_shifts() {
        let s = flow_sigmas(4, 1.0).unwrap();
        assert!(s
            .iter()
            .zip([1.0, 0.667, 0.334, 0.001, 0.0])
            .all(|(a, b)| (a - b).abs() < 1e-12));
        assert_eq!(flux_mu(256).unwrap(), 0.5);
        assert!((flux_mu(4096).unwrap() - 1.15).abs() < 1e-12);
        // The exponential shift at μ is the SD3 shift with s = e^μ.
        for sigma in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let a = flux_time_shift(3f64.ln(), sigma).unwrap();
            assert!((a - flow_shift(sigma, 3.0).unwrap()).abs() < 1e-12);
        }
        let f = flux_sigmas(4, 1.0).unwrap();
        assert_descending_to_zero("flux", &f);
        assert_eq!(f[0], 1.0);
        assert!(flow_sigmas(4, 0.0).is_err() && flux_time_shift(f64::NAN, 0.5).is_err());
    }

    #[test]
    fn training_schedules() {
        let b = betas("linear", 1000, 1e-4, 0.02).unwrap();
        assert_eq!((b[0], b[999]), (1e-4, 0.02));
        let b = betas("scaled_linear", 1000, 0.00085, 0.012).unwrap();
        assert!((b[0] - 0.00085).abs() < 1e-15 && (b[999] - 0.012).abs() < 1e-15);
        let b = betas("squaredcos_cap_v2", 1000, 0.0, 0.0).unwrap();
        assert_eq!(b[999], 0.999);
        let ac = alphas_cumprod(&betas("scaled_linear", 1000, 0.00085, 0.012).unwrap());
        let z = rescale_zero_terminal_snr(&ac).unwrap();
        assert!((z[0] - ac[0]).abs() < 1e-15);
        assert_eq!(z[999], 0.0);
        assert!(sigma_table(&z).is_err());
        let c = clamp_terminal_alpha(&z).unwrap();
        assert_eq!(c[999], TERMINAL_ALPHA_FLOOR);
        assert!(sigma_table(&c).unwrap()[999] < 4096.0);
        assert_eq!(previous_alpha_cumprod(&ac, -99, true).unwrap(), 1.0);
        assert_eq!(previous_alpha_cumprod(&ac, -99, false).unwrap(), ac[0]);
        assert_eq!(previous_alpha_cumprod(&ac, 5, false).unwrap(), ac[5]);
        assert!(previous_alpha_cumprod(&ac, 1000, false).is_err());
        assert!(betas("cosine", 1000, 0.1, 0.2).is_err());
        assert!(betas("linear", 1000, f64::NAN, 0.2).is_err());
        assert!(betas("linear", 0, 0.1, 0.2).is_err());
    }

    #[test]
    fn diffusers_spacings_give_n_timesteps_for_every_n() {
        for n in 1..=1000 {
            for spacing in [
                TimestepSpacing::Linspace,
                TimestepSpacing::Leading,
                TimestepSpacing::Trailing,
            ] {
                let t = diffusers_timesteps(spacing, 1000, n, 0).unwrap();
                assert_eq!(t.len(), n, "{spacing:?} n={n}");
                assert!(
                    t.windows(2).all(|w| w[0] > w[1]),
                    "{spacing:?} n={n} repeats"
                );
                // The multistep grid rounds n + 1 points, so near n = N it
                // repeats timesteps (diffusers does too); it never rises.
                let t = diffusers_multistep_timesteps(spacing, 1000, n, 0).unwrap();
                assert_eq!(t.len(), n, "{spacing:?} n={n}");
                assert!(
                    t.windows(2).all(|w| w[0] >= w[1]),
                    "{spacing:?} n={n} rises"
                );
            }
        }
        assert_eq!(
            diffusers_timesteps(TimestepSpacing::Trailing, 1000, 61, 0).unwrap()[60],
            15.0
        );
        assert!(diffusers_timesteps(TimestepSpacing::Leading, 1000, 10, 200).is_err());
        assert!(diffusers_timesteps(TimestepSpacing::Linspace, 1000, 1001, 0).is_err());
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let ms = sd();
        for &name in scheduler_names() {
            assert!(sigmas_by_name(name, &ms, 0).is_err(), "{name} 0 steps");
            assert!(
                sigmas_by_name(name, &ms, MAX_STEPS + 1).is_err(),
                "{name} huge"
            );
        }
        assert!(sigmas_by_name("karras2", &ms, 10).is_err());
        assert!(simple(&ms, 1001).is_err());
        let empty = ModelSampling::discrete(&[], Prediction::Epsilon);
        let one = ModelSampling::discrete(&[0.5], Prediction::Epsilon);
        let rising = ModelSampling::discrete(&[0.1, 0.9], Prediction::Epsilon);
        let bad_flow = ModelSampling::flow(f64::NAN);
        for ms in [&empty, &one, &rising, &bad_flow] {
            for &name in scheduler_names() {
                assert!(sigmas_by_name(name, ms, 10).is_err(), "{name} on {ms:?}");
            }
        }
        assert!(karras(10, 1.0, 1.0, 7.0).is_err());
        assert!(karras(10, 2.0, 1.0, 7.0).is_err());
        assert!(karras(10, -1.0, 1.0, 7.0).is_err());
        assert!(karras(10, 0.1, f64::INFINITY, 7.0).is_err());
        assert!(karras(10, 0.1, 1.0, f64::NAN).is_err());
        assert!(exponential(10, 0.0, 1.0).is_err());
        assert!(kl_optimal(10, f64::NAN, 1.0).is_err());
        assert!(beta(&ms, 10, 0.0, 0.6).is_err());
        assert!(linear_quadratic(10, 1.0, 1.5, None).is_err());
        assert!(diffusers_img2img_start(10, 1.5).is_err() && sd3_img2img_start(0, 0.5).is_err());
        assert!(flux_mu(0).is_err() && flow_shift(1.5, 3.0).is_err());
        assert!(interp_sigmas(&[], &[1.0]).is_err() && sigma_to_timestep(&[1.0], 1.0).is_err());
        assert!(rescale_zero_terminal_snr(&[0.5, 0.9]).is_err());
        assert!(heun_interleave(&DiffusersSchedule {
            timesteps: vec![1.0],
            sigmas: vec![1.0]
        })
        .is_err());
    }
}
