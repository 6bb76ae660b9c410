//! Flow-matching schedules: shifted σ for SD3- and Flux-style models.

use super::*;

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
