//! diffusers' `set_timesteps`, reproduced exactly (timesteps and σ), so the
//! sampler parity tests start from the schedule diffusers used.

use super::*;

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
