//! Restart sampling (Xu et al. 2023, "Restart Sampling for Improving
//! Generative Processes") as a weft SAMPLER, written against the plugin SDK.
//!
//! The paper's point: an ODE sampler is fast but accumulates discretisation
//! error, an SDE sampler contracts error but needs many steps. Restart walks
//! the deterministic ODE and, in one mid-schedule window, repeatedly adds
//! fresh noise back to a higher σ and re-solves that stretch, so the added
//! noise contracts the error the ODE steps accumulated.
//!
//! This version adapts the method to whatever σ schedule weft hands it: the
//! window is given as fractions of the steps, and the ODE steps are the
//! schedule's own steps between those two indices.

use std::sync::Arc;

use weft_plugin_sdk::{
    export_plugin, Context, Define, Error, Handle, InputSpec, NodeDef, NodeSchema, Path, Result,
    Sampler, Tensor, Value, ValueType,
};

/// The node: validates its widgets once and hands out a configured sampler.
fn sampler_restart() -> NodeDef {
    NodeSchema::new(
        "SamplerRestart",
        "sampling/custom_sampling/samplers",
        "Restart sampling (Xu et al. 2023): Heun ODE steps along the schedule, \
         with a window that is re-noised and re-solved several times to \
         contract the ODE's accumulated error.",
    )
    .input(
        InputSpec::int("restarts")
            .default(2i64)
            .range(0.0, 20.0)
            .doc("how many times (K) the restart window is re-noised and re-solved"),
    )
    .input(
        InputSpec::float("restart_from")
            .default(0.7)
            .range(0.0, 1.0)
            .step(0.01)
            .doc("restart after this fraction of the steps (the window's low-σ end)"),
    )
    .input(
        InputSpec::float("restart_to")
            .default(0.4)
            .range(0.0, 1.0)
            .step(0.01)
            .doc(
                "re-noise back to the σ reached after this fraction of the steps \
                 (the window's high-σ end); must be below restart_from",
            ),
    )
    .input(
        InputSpec::float("s_noise")
            .default(1.0)
            .range(0.0, 2.0)
            .step(0.01)
            .doc("scale of the noise added at each restart (1 = the exact amount)"),
    )
    .output(
        "SAMPLER",
        ValueType::Sampler,
        "the Restart sampler, for SamplerCustom or SamplerCustomAdvanced",
    )
    .run(|cx| {
        let restarts = cx.int("restarts")?;
        let from = cx.float("restart_from")?;
        let to = cx.float("restart_to")?;
        let s_noise = cx.float("s_noise")?;
        // The host checks ranges too; repeating the checks here keeps the
        // sampler's arithmetic safe whatever host loaded it.
        if !(0..=20).contains(&restarts) {
            return Err(Error(format!("restarts must be in 0..=20, got {restarts}")));
        }
        for (name, v) in [("restart_from", from), ("restart_to", to)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error(format!("{name} must be in 0..1, got {v}")));
            }
        }
        if to >= from {
            return Err(Error(format!(
                "restart_to ({to}) must be smaller than restart_from ({from}): \
                 a restart goes back to an earlier, noisier point of the schedule"
            )));
        }
        if !(0.0..=2.0).contains(&s_noise) {
            return Err(Error(format!("s_noise must be in 0..2, got {s_noise}")));
        }
        Ok(Value::Sampler(Arc::new(Restart {
            restarts: restarts as usize,
            from,
            to,
            s_noise,
        })))
    })
}

/// The configured sampler; it holds no run state, so one instance may serve
/// several runs at once.
struct Restart {
    restarts: usize,
    from: f64,
    to: f64,
    s_noise: f64,
}

/// The restart window in schedule indices: x at `sigmas[a]` is sent back up
/// to `sigmas[b]` (b < a) and re-solved `restarts` times.
#[derive(Clone, Copy)]
struct Window {
    a: usize,
    b: usize,
}

impl Restart {
    /// Places the window on this schedule, or `None` when it is empty or
    /// cannot be re-noised (σ_a = 0, a non-increasing σ, a flow's α = 0).
    fn window(&self, sigmas: &[f64], path: Path) -> Option<Window> {
        let n = sigmas.len().checked_sub(1)?;
        let a = (self.from * n as f64).round() as usize;
        let b = (self.to * n as f64).round() as usize;
        if self.restarts == 0 || !(0 < b && b < a && a <= n) {
            return None;
        }
        let (sa, sb) = (sigmas[a], sigmas[b]);
        let (aa, ab) = (path.alpha(sa), path.alpha(sb));
        let ok = sa > 0.0 && aa > 0.0 && ab > 0.0 && sb / ab > sa / aa;
        ok.then_some(Window { a, b })
    }

    /// Sends x from σ_a back up to σ_b on the model's path: undo α_a to reach
    /// the α = 1 form, add exactly the missing variance there, then apply α_b.
    fn renoise(&self, ctx: &Context, x: Tensor, path: Path, sa: f64, sb: f64) -> Result<Tensor> {
        let (aa, ab) = (path.alpha(sa), path.alpha(sb));
        let extra = ((sb / ab).powi(2) - (sa / aa).powi(2)).max(0.0).sqrt();
        let eps = ctx.step_noise(&x)?.to_dtype(x.dtype())?;
        let x = ((x / aa)? + (eps * (self.s_noise * extra))?)?;
        Ok((x * ab)?)
    }
}

/// The probability-flow ODE's dx/dσ = (x − D(x, σ))/σ, which holds for both
/// of weft's paths (α = 1 and α = 1 − σ).
fn derivative(ctx: &Context, denoiser: &Handle, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let denoised = denoiser.denoise(ctx, x, sigma)?.to_dtype(x.dtype())?;
    Ok(((x - denoised)? / sigma)?)
}

/// One Heun step from σ to σ_next; an Euler step when σ_next = 0, where the
/// corrector's derivative would divide by zero (as k-diffusion does).
fn heun_step(
    ctx: &Context,
    denoiser: &Handle,
    x: Tensor,
    sigma: f64,
    sigma_next: f64,
) -> Result<Tensor> {
    ctx.check_cancelled()?;
    // Already clean, or a repeated σ: nothing to integrate.
    if sigma == 0.0 || sigma_next == sigma {
        return Ok(x);
    }
    let dt = sigma_next - sigma;
    let d = derivative(ctx, denoiser, &x, sigma)?;
    let predicted = (&x + (&d * dt)?)?;
    if sigma_next == 0.0 {
        return Ok(predicted);
    }
    let d_next = derivative(ctx, denoiser, &predicted, sigma_next)?;
    Ok((x + ((d + d_next)? * (dt / 2.0))?)?)
}

impl Sampler for Restart {
    fn sample(
        &self,
        ctx: &Context,
        denoiser: &Handle,
        x: Tensor,
        sigmas: &[f64],
    ) -> Result<Tensor> {
        if sigmas.len() < 2 {
            return Ok(x);
        }
        // A negative or non-finite σ would turn every step into garbage.
        if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error(format!(
                "the schedule holds σ = {s}; Restart needs finite σ ≥ 0"
            )));
        }
        let n = sigmas.len() - 1;
        let path = denoiser.path();
        let window = self.window(sigmas, path);
        if window.is_none() && self.restarts > 0 {
            ctx.warn(&format!(
                "SamplerRestart: the restart window ({} → {} of {n} steps) is empty \
                 on this schedule; sampling without restarts",
                self.from, self.to
            ));
        }
        let total = n + window.map_or(0, |w| self.restarts * (w.a - w.b));
        let mut done = 0;
        let advance = |done: &mut usize| {
            *done += 1;
            ctx.progress(*done as u64, total as u64);
        };
        let mut x = x;
        for i in 0..n {
            x = heun_step(ctx, denoiser, x, sigmas[i], sigmas[i + 1])?;
            advance(&mut done);
            let Some(w) = window.filter(|w| w.a == i + 1) else {
                continue;
            };
            for _ in 0..self.restarts {
                ctx.check_cancelled()?;
                x = self.renoise(ctx, x, path, sigmas[w.a], sigmas[w.b])?;
                for j in w.b..w.a {
                    x = heun_step(ctx, denoiser, x, sigmas[j], sigmas[j + 1])?;
                    advance(&mut done);
                }
            }
        }
        Ok(x)
    }
}

export_plugin! {
    name: "restart",
    version: env!("CARGO_PKG_VERSION"),
    nodes: [sampler_restart()],
}
