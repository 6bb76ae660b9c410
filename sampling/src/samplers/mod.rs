//! The sampler interface: written once against a denoiser, so every sampler
//! works with every parameterisation, path, guidance rule and model.

use candle_core::{Result, Tensor};

mod ode;
mod stochastic;

use super::model::Path;
use super::noise::NoiseSource;

/// Options a sampler may use; stochastic samplers read `eta` and `s_noise`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerOptions {
    pub eta: f64,
    pub s_noise: f64,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            eta: 1.0,
            s_noise: 1.0,
        }
    }
}

/// Every sampler name weft knows (ComfyUI's vocabulary where it has one).
pub fn sampler_names() -> Vec<&'static str> {
    let mut names = vec!["euler", "euler_ancestral"];
    names.extend(ode::NAMES);
    names.extend(stochastic::NAMES);
    names
}

/// A sampler by name.
pub fn sampler_by_name(name: &str, opts: SamplerOptions) -> Option<Box<dyn Sampler>> {
    match name {
        "euler" => Some(Box::new(Euler)),
        "euler_ancestral" => Some(Box::new(EulerAncestral {
            eta: opts.eta,
            s_noise: opts.s_noise,
        })),
        _ => ode::by_name(name, opts).or_else(|| stochastic::by_name(name, opts)),
    }
}

/// Anything that returns a clean estimate D(x, σ): a guided model, an exact
/// closed-form denoiser in the tests, or a plugin's guidance rule.
pub trait Denoiser: Send + Sync {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor>;
    /// The path the model lives on; stochastic steps depend on it.
    fn path(&self) -> Path;
}

/// What a sampler gets besides the denoiser and the starting point.
pub struct SampleContext<'a> {
    /// Fresh noise for stochastic steps (seeded, or replayed in parity tests).
    pub noise: &'a mut dyn NoiseSource,
    /// Called after each step with (done, total); an error (cancellation) stops sampling.
    pub progress: &'a mut dyn FnMut(usize, usize) -> Result<()>,
}

/// A sampling algorithm. `x` is already noised to `sigmas[0]`; sampling walks
/// `sigmas` down to its last entry and returns the sample there.
pub trait Sampler: Send + Sync + std::fmt::Debug {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor>;
}

/// The ODE derivative dx/dσ = (x − D)/σ, the same on every path.
pub fn derivative(x: &Tensor, denoised: &Tensor, sigma: f64) -> Result<Tensor> {
    (x - denoised)?.affine(1.0 / sigma, 0.0)
}

/// Adds `a·x + b·y` without intermediate allocation of scalars.
pub fn lerp(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    x.affine(a, 0.0)? + y.affine(b, 0.0)?
}

/// The loop every sampler shares: one `step` per consecutive (σ, σ') pair,
/// given the step index, with step noise scaled by `s_noise`, and progress
/// reported after each step (which is where cancellation is noticed).
pub(crate) fn walk(
    mut x: Tensor,
    sigmas: &[f64],
    ctx: &mut SampleContext<'_>,
    s_noise: f64,
    mut step: impl FnMut(usize, Tensor, f64, f64, &mut dyn NoiseSource) -> Result<Tensor>,
) -> Result<Tensor> {
    let steps = sigmas.len().saturating_sub(1);
    let mut noise = ScaledNoise {
        inner: &mut *ctx.noise,
        scale: s_noise,
    };
    for i in 0..steps {
        x = step(i, x, sigmas[i], sigmas[i + 1], &mut noise)?;
        (ctx.progress)(i + 1, steps)?;
    }
    Ok(x)
}

/// One stochastic step from σ to σ' with strength η, generic over the path:
/// the DDIM-η / ancestral step written in the path's VE-equivalent
/// coordinates (x/α, σ/α), so it is DDPM's posterior for diffusion at η = 1
/// and the rectified-flow ancestral step for flow models.
///
/// Returns `(sigma_down, sigma_up)` in VE-equivalent units together with the
/// factors to apply: `x' = α'·(D + sigma_down·ε̂ + sigma_up·z)` where
/// `ε̂ = (x − α·D)/σ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AncestralStep {
    pub sigma_down: f64,
    pub sigma_up: f64,
}

impl AncestralStep {
    pub fn new(path: Path, sigma: f64, sigma_next: f64, eta: f64) -> Self {
        if sigma_next <= 0.0 || eta <= 0.0 {
            let ve_next = if sigma_next <= 0.0 {
                0.0
            } else {
                sigma_next / path.alpha(sigma_next)
            };
            return AncestralStep {
                sigma_down: ve_next,
                sigma_up: 0.0,
            };
        }
        let alpha_next = path.alpha(sigma_next);
        let ve_next = sigma_next / alpha_next;
        // ratio s'/s of VE-equivalent sigmas; 0 where α = 0 (σ = 1 on the flow path).
        let ratio = (sigma_next / alpha_next) * (path.alpha(sigma) / sigma);
        let up = (eta * ve_next * (1.0 - ratio * ratio).max(0.0).sqrt()).min(ve_next);
        AncestralStep {
            sigma_down: (ve_next * ve_next - up * up).max(0.0).sqrt(),
            sigma_up: up,
        }
    }

    /// Applies the step to `x` at σ given the denoised estimate.
    pub fn apply(
        &self,
        path: Path,
        x: &Tensor,
        denoised: &Tensor,
        sigma: f64,
        sigma_next: f64,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let alpha = path.alpha(sigma);
        let alpha_next = path.alpha(sigma_next);
        let eps = (x - denoised.affine(alpha, 0.0)?)?.affine(1.0 / sigma, 0.0)?;
        let mut next = (denoised + eps.affine(self.sigma_down, 0.0)?)?;
        if self.sigma_up > 0.0 {
            next = (next + noise.sample(x)?.affine(self.sigma_up, 0.0)?)?;
        }
        next.affine(alpha_next, 0.0)
    }
}

/// Euler's method on the probability-flow ODE: first order, deterministic.
#[derive(Debug, Default)]
pub struct Euler;

impl Sampler for Euler {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        walk(x, sigmas, ctx, 1.0, |_, x, sigma, next, _| {
            let d = derivative(&x, &denoiser.denoise(&x, sigma)?, sigma)?;
            x + d.affine(next - sigma, 0.0)?
        })
    }
}

/// Euler with ancestral noise: a stochastic first-order sampler (`eta`, `s_noise`).
#[derive(Debug)]
pub struct EulerAncestral {
    pub eta: f64,
    pub s_noise: f64,
}

impl Sampler for EulerAncestral {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let path = denoiser.path();
        walk(x, sigmas, ctx, self.s_noise, |_, x, sigma, next, noise| {
            let denoised = denoiser.denoise(&x, sigma)?;
            AncestralStep::new(path, sigma, next, self.eta)
                .apply(path, &x, &denoised, sigma, next, noise)
        })
    }
}

/// Noise multiplied by `s_noise`, the usual knob on stochastic samplers.
struct ScaledNoise<'a> {
    inner: &'a mut dyn NoiseSource,
    scale: f64,
}

impl NoiseSource for ScaledNoise<'_> {
    fn sample(&mut self, like: &Tensor) -> Result<Tensor> {
        let z = self.inner.sample(like)?;
        if self.scale == 1.0 {
            Ok(z)
        } else {
            z.affine(self.scale, 0.0)
        }
    }
}
