//! Training β schedules: β, ᾱ and zero terminal SNR, which define a discrete
//! model's σ table.

use super::*;

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

/// ᾱ that ComfyUI puts at the end of a zero-terminal-SNR schedule in place
/// of 0, so σ_max ≈ 4519 stays finite (its `rescale_zero_terminal_snr_sigmas`).
pub const COMFY_TERMINAL_ALPHA: f64 = 4.897_345_189_085_343_5e-8;

/// ComfyUI's `rescale_zero_terminal_snr_sigmas`: a σ table rescaled to zero
/// terminal SNR ([`rescale_zero_terminal_snr`] on ᾱ = 1/(σ² + 1)), with the
/// last ᾱ set to [`COMFY_TERMINAL_ALPHA`] and converted back to σ.
pub fn rescale_zero_terminal_snr_sigmas(sigmas: &[f64]) -> Result<Vec<f64>, String> {
    if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(format!(
            "rescale_zero_terminal_snr_sigmas: σ must be finite and non-negative, got {s}"
        ));
    }
    let alphas: Vec<f64> = sigmas.iter().map(|s| 1.0 / (s * s + 1.0)).collect();
    let mut alphas = rescale_zero_terminal_snr(&alphas)?;
    if let Some(last) = alphas.last_mut() {
        *last = COMFY_TERMINAL_ALPHA;
    }
    let out: Vec<f64> = alphas.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
    if out.iter().any(|s| !s.is_finite()) {
        return Err(
            "rescale_zero_terminal_snr_sigmas: a level before the last reaches zero SNR (σ must increase)".into(),
        );
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
