//! Stochastic samplers (ancestral and SDE steps).
//!
//! Every step is written for a general Gaussian path `x = α(σ)·x0 + σ·ε`
//! through α and the half log-SNR λ = ln(α/σ), so one implementation serves
//! diffusion (α = 1) and flow models (α = 1 − σ). Where a formula is clearest
//! in the path's VE-equivalent coordinates (x/α, σ/α) it is derived there and
//! mapped back, which keeps every coefficient finite at σ = 1 on the flow
//! path, where α = 0 and λ = −∞.
//!
//! Fresh noise is drawn only when it contributes, so replaying another
//! implementation's draws stays aligned as long as both draw in the same
//! steps (a trailing draw that the other multiplies by zero is harmless).

use candle_core::{Result, Tensor};

use super::{
    lerp, walk, AncestralStep, Denoiser, EulerAncestral, SampleContext, Sampler, SamplerOptions,
};
use crate::model::Path;
use crate::noise::NoiseSource;

/// Names served by [`by_name`].
pub const NAMES: &[&str] = &[
    "dpm_2_ancestral",
    "dpmpp_2s_ancestral",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_heun",
    "dpmpp_3m_sde",
    "ddpm",
    "lcm",
];

pub fn by_name(name: &str, opts: SamplerOptions) -> Option<Box<dyn Sampler>> {
    let SamplerOptions { eta, s_noise } = opts;
    Some(match name {
        "dpm_2_ancestral" => Box::new(Dpm2Ancestral { eta, s_noise }),
        "dpmpp_2s_ancestral" => Box::new(Dpmpp2sAncestral { eta, s_noise }),
        "dpmpp_2m_sde" => Box::new(Dpmpp2mSde {
            eta,
            s_noise,
            solver: SolverType::Midpoint,
        }),
        "dpmpp_2m_sde_heun" => Box::new(Dpmpp2mSde {
            eta,
            s_noise,
            solver: SolverType::Heun,
        }),
        "dpmpp_3m_sde" => Box::new(Dpmpp3mSde { eta, s_noise }),
        // The ancestral step at η = 1 is exactly DDPM's posterior q(x_{t−1} | x_t, x0)
        // with the "fixed_small" variance, for any subsequence of timesteps, so
        // DDPM needs no code of its own; ComfyUI's `ddpm` likewise ignores η.
        "ddpm" => Box::new(EulerAncestral { eta: 1.0, s_noise }),
        "lcm" => Box::new(Lcm { s_noise }),
        _ => return None,
    })
}

/// σ/α, the noise level in the path's VE-equivalent coordinates; ∞ where α = 0.
fn ve_sigma(path: Path, sigma: f64) -> f64 {
    let alpha = path.alpha(sigma);
    if alpha <= 0.0 {
        f64::INFINITY
    } else {
        sigma / alpha
    }
}

/// The σ on `path` whose VE-equivalent noise level is `ve`: the inverse of [`ve_sigma`].
fn sigma_from_ve(path: Path, ve: f64) -> f64 {
    match path {
        Path::Diffusion => ve,
        Path::Flow => ve / (1.0 + ve),
    }
}

/// `exp(−rate·h)`, taking `rate = 0` to mean exactly 1 even when h = ∞
/// (the first step out of σ = 1 on the flow path).
fn exp_neg(rate: f64, h: f64) -> f64 {
    if rate == 0.0 {
        1.0
    } else {
        (-rate * h).exp()
    }
}

/// `1 − exp(−h)` without cancellation for small steps.
fn one_minus_exp_neg(h: f64) -> f64 {
    -(-h).exp_m1()
}

/// The second-order ancestral steps need a midpoint strictly between σ and
/// the ancestral target; where the target is 0 or σ is pure noise (α = 0, so
/// the midpoint in λ would be −∞ too and the denoiser's answer cannot change)
/// they fall back to the first-order ancestral step.
fn first_order_only(path: Path, sigma: f64, step: &AncestralStep) -> bool {
    step.sigma_down <= 0.0 || path.alpha(sigma) <= 0.0
}

/// DPM-Solver-2 (a midpoint step in log σ) to the ancestral target, then
/// ancestral noise (`eta`, `s_noise`).
#[derive(Debug)]
struct Dpm2Ancestral {
    eta: f64,
    s_noise: f64,
}

impl Sampler for Dpm2Ancestral {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let path = denoiser.path();
        walk(
            x,
            sigmas,
            ctx,
            self.s_noise,
            |_, mut x, sigma, next, noise| {
                let denoised = denoiser.denoise(&x, sigma)?;
                let step = AncestralStep::new(path, sigma, next, self.eta);
                x = if first_order_only(path, sigma, &step) {
                    step.apply(path, &x, &denoised, sigma, next, &mut *noise)?
                } else {
                    // In VE-equivalent coordinates y = x/α the ODE is dy/ds = (y − D)/s = ε̂.
                    let (alpha, s) = (path.alpha(sigma), ve_sigma(path, sigma));
                    let s_mid = (s * step.sigma_down).sqrt();
                    let sigma_mid = sigma_from_ve(path, s_mid);
                    let eps = lerp(&x, 1.0 / sigma, &denoised, -alpha / sigma)?;
                    let y_mid = (&denoised + eps.affine(s_mid, 0.0)?)?;
                    let x_mid = y_mid.affine(path.alpha(sigma_mid), 0.0)?;
                    let denoised_mid = denoiser.denoise(&x_mid, sigma_mid)?;
                    let eps_mid = lerp(&y_mid, 1.0 / s_mid, &denoised_mid, -1.0 / s_mid)?;
                    let y = lerp(&x, 1.0 / alpha, &eps_mid, step.sigma_down - s)?;
                    add_ancestral_noise(path, y, next, &step, &mut *noise)?
                };
                Ok(x)
            },
        )
    }
}

/// `α(σ')·(y + sigma_up·z)`: the ancestral re-noising in VE-equivalent
/// coordinates, mapped back onto the path.
fn add_ancestral_noise(
    path: Path,
    mut y: Tensor,
    next: f64,
    step: &AncestralStep,
    noise: &mut dyn NoiseSource,
) -> Result<Tensor> {
    if step.sigma_up > 0.0 {
        y = (&y + noise.sample(&y)?.affine(step.sigma_up, 0.0)?)?;
    }
    y.affine(path.alpha(next), 0.0)
}

/// DPM-Solver++(2S): a two-stage data-prediction exponential integrator to
/// the ancestral target, then ancestral noise (`eta`, `s_noise`).
#[derive(Debug)]
struct Dpmpp2sAncestral {
    eta: f64,
    s_noise: f64,
}

impl Sampler for Dpmpp2sAncestral {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let path = denoiser.path();
        walk(
            x,
            sigmas,
            ctx,
            self.s_noise,
            |_, mut x, sigma, next, noise| {
                let denoised = denoiser.denoise(&x, sigma)?;
                let step = AncestralStep::new(path, sigma, next, self.eta);
                x = if first_order_only(path, sigma, &step) {
                    step.apply(path, &x, &denoised, sigma, next, &mut *noise)?
                } else {
                    // Exact for a constant D in y = x/α: y(s') = (s'/s)·y + (1 − s'/s)·D,
                    // taken to the λ-midpoint, then the full step with the midpoint's D.
                    let (alpha, s) = (path.alpha(sigma), ve_sigma(path, sigma));
                    let s_mid = (s * step.sigma_down).sqrt();
                    let sigma_mid = sigma_from_ve(path, s_mid);
                    let (r_mid, r_down) = (s_mid / s, step.sigma_down / s);
                    let y_mid = lerp(&x, r_mid / alpha, &denoised, 1.0 - r_mid)?;
                    let x_mid = y_mid.affine(path.alpha(sigma_mid), 0.0)?;
                    let denoised_mid = denoiser.denoise(&x_mid, sigma_mid)?;
                    let y = lerp(&x, r_down / alpha, &denoised_mid, 1.0 - r_down)?;
                    add_ancestral_noise(path, y, next, &step, &mut *noise)?
                };
                Ok(x)
            },
        )
    }
}

/// How DPM-Solver++(2M) SDE extrapolates from the previous denoised estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// The exponential-integrator SDE step from σ to σ' shared by the multistep
/// SDE solvers: `h = λ' − λ`, and with η the data term decays as e^{−(1+η)h}
/// while fresh noise of variance σ'²(1 − e^{−2ηh}) keeps the marginal right.
struct SdeStep {
    h: f64,
    /// (1 + η)·h, the effective step of the data term.
    h_eta: f64,
    /// Coefficient of x: (σ'/σ)·e^{−ηh}, finite even where α(σ) = 0.
    x_coef: f64,
    alpha_next: f64,
    /// Standard deviation of the fresh noise: σ'·sqrt(1 − e^{−2ηh}).
    noise_std: f64,
}

impl SdeStep {
    fn new(path: Path, sigma: f64, next: f64, eta: f64) -> Self {
        let h = path.lambda(next) - path.lambda(sigma);
        SdeStep {
            h,
            h_eta: (1.0 + eta) * h,
            x_coef: next / sigma * exp_neg(eta, h),
            alpha_next: path.alpha(next),
            noise_std: if eta > 0.0 {
                next * one_minus_exp_neg(2.0 * eta * h).sqrt()
            } else {
                0.0
            },
        }
    }

    /// The first-order part: `(σ'/σ)e^{−ηh}·x + α'(1 − e^{−(1+η)h})·D`.
    fn first_order(&self, x: &Tensor, denoised: &Tensor) -> Result<Tensor> {
        lerp(
            x,
            self.x_coef,
            denoised,
            self.alpha_next * one_minus_exp_neg(self.h_eta),
        )
    }

    fn add_noise(&self, x: Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        if self.noise_std > 0.0 {
            let z = noise.sample(&x)?;
            x + z.affine(self.noise_std, 0.0)?
        } else {
            Ok(x)
        }
    }
}

/// A previous step's denoised estimate and step size h, for multistep solvers.
/// A step out of α = 0 has h = ∞ and contributes no usable slope, so it is not kept.
fn history(denoised: Tensor, h: f64) -> Option<(Tensor, f64)> {
    h.is_finite().then_some((denoised, h))
}

/// DPM-Solver++(2M) SDE: second-order multistep in λ with SDE noise
/// (`eta`, `s_noise`). With η = 1 it is diffusers' `sde-dpmsolver++`.
#[derive(Debug)]
struct Dpmpp2mSde {
    eta: f64,
    s_noise: f64,
    solver: SolverType,
}

impl Sampler for Dpmpp2mSde {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let mut previous: Option<(Tensor, f64)> = None;
        multistep(
            denoiser,
            x,
            sigmas,
            ctx,
            (self.eta, self.s_noise),
            |x, denoised, step, noise| {
                let mut x = step.first_order(&x, &denoised)?;
                if let Some((old, h_old)) = &previous {
                    // Slope of D in λ from the last two estimates, scaled to this step.
                    let slope_coef = step.alpha_next
                        * match self.solver {
                            SolverType::Midpoint => 0.5 * one_minus_exp_neg(step.h_eta),
                            SolverType::Heun => 1.0 - one_minus_exp_neg(step.h_eta) / step.h_eta,
                        }
                        * step.h
                        / h_old;
                    x = (x + (&denoised - old)?.affine(slope_coef, 0.0)?)?;
                }
                previous = history(denoised, step.h);
                step.add_noise(x, noise)
            },
        )
    }
}

/// DPM-Solver++(3M) SDE: third-order multistep in λ with SDE noise (`eta`, `s_noise`).
#[derive(Debug)]
struct Dpmpp3mSde {
    eta: f64,
    s_noise: f64,
}

impl Sampler for Dpmpp3mSde {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        // Most recent first: (D, h) of the last two steps.
        let mut previous: Vec<(Tensor, f64)> = Vec::with_capacity(2);
        multistep(
            denoiser,
            x,
            sigmas,
            ctx,
            (self.eta, self.s_noise),
            |x, denoised, step, noise| {
                let mut x = step.first_order(&x, &denoised)?;
                // φ₂ and φ₃ weigh the first and second divided differences of D in λ.
                let phi_2 = 1.0 - one_minus_exp_neg(step.h_eta) / step.h_eta;
                let phi_3 = phi_2 / step.h_eta - 0.5;
                let a = step.alpha_next;
                match previous.as_slice() {
                    [] => {}
                    [(d1, h1)] => {
                        let r = h1 / step.h;
                        x = (x + (&denoised - d1)?.affine(a * phi_2 / r, 0.0)?)?;
                    }
                    [(d1, h1), (d2, h2), ..] => {
                        let (r0, r1) = (h1 / step.h, h2 / step.h);
                        let diff_0 = (&denoised - d1)?.affine(1.0 / r0, 0.0)?;
                        let diff_1 = (d1 - d2)?.affine(1.0 / r1, 0.0)?;
                        let second = (&diff_0 - &diff_1)?.affine(1.0 / (r0 + r1), 0.0)?;
                        let first = (&diff_0 + second.affine(r0, 0.0)?)?;
                        x = (x + lerp(&first, a * phi_2, &second, -a * phi_3)?)?;
                    }
                }
                match history(denoised, step.h) {
                    Some(entry) => {
                        previous.insert(0, entry);
                        previous.truncate(2);
                    }
                    None => previous.clear(),
                }
                step.add_noise(x, noise)
            },
        )
    }
}

/// The loop shared by the multistep SDE solvers. `step` advances x given D
/// and the [`SdeStep`]; the last step to σ = 0 returns D itself (every
/// exponential-integrator coefficient but D's vanishes there), and a repeated
/// σ is skipped, since h = 0 would divide the history's step ratios by zero.
fn multistep(
    denoiser: &dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    ctx: &mut SampleContext<'_>,
    (eta, s_noise): (f64, f64),
    mut step: impl FnMut(Tensor, Tensor, &SdeStep, &mut dyn NoiseSource) -> Result<Tensor>,
) -> Result<Tensor> {
    let path = denoiser.path();
    walk(x, sigmas, ctx, s_noise, |_, x, sigma, next, noise| {
        if next == sigma {
            return Ok(x);
        }
        let denoised = denoiser.denoise(&x, sigma)?;
        if next <= 0.0 {
            Ok(denoised)
        } else {
            step(x, denoised, &SdeStep::new(path, sigma, next, eta), noise)
        }
    })
}

/// Latent-consistency sampling: jump to the denoised estimate, then re-noise
/// it to the next σ with fresh noise on the model's path (`s_noise`). Also
/// diffusers' flow-match Euler with `stochastic_sampling`.
#[derive(Debug)]
struct Lcm {
    s_noise: f64,
}

impl Sampler for Lcm {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let path = denoiser.path();
        walk(
            x,
            sigmas,
            ctx,
            self.s_noise,
            |_, mut x, sigma, next, noise| {
                x = denoiser.denoise(&x, sigma)?;
                if next > 0.0 {
                    x = path.noise(next, &noise.sample(&x)?, &x)?;
                }
                Ok(x)
            },
        )
    }
}
