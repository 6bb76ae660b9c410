//! Working with σ lists, as ComfyUI's utility nodes do.

use super::*;

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

/// ComfyUI's KSampler step range (`KSamplerAdvanced`'s start_at_step and
/// end_at_step): when `last_step` ends before the schedule does, keep
/// σ[..=last_step] and, with `force_full_denoise`, set its last σ to 0 so
/// the run ends clean; then drop the first `start_step` steps. `None` when
/// no step is left, where ComfyUI hands back the latent unchanged.
pub fn step_range(
    sigmas: &[f64],
    start_step: usize,
    last_step: usize,
    force_full_denoise: bool,
) -> Option<Vec<f64>> {
    let mut sigmas = sigmas.to_vec();
    if last_step < sigmas.len().saturating_sub(1) {
        sigmas.truncate(last_step + 1);
        if force_full_denoise {
            if let Some(last) = sigmas.last_mut() {
                *last = 0.0;
            }
        }
    }
    (start_step < sigmas.len().saturating_sub(1)).then(|| sigmas.split_off(start_step))
}
