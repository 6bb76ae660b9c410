//! Deterministic samplers of the probability-flow ODE.
//!
//! Every sampler here talks only to a [`Denoiser`] and reads α(σ) from its
//! [`Path`], so one implementation serves every parameterisation (ε, v, x0,
//! velocity) on both the diffusion and the flow path. Multistep methods keep
//! their history of denoised estimates locally; nothing persists between calls.
//!
//! Where diffusers switches between first- and higher-order updates
//! differently from the textbook method, the diffusers behaviour is kept (and
//! said so on the sampler), because the parity fixtures pin it down.
//!
//! `flow_euler` and `flow_heun` are Euler and Heun in the velocity form of
//! flow matching. On the flow path x = (1−σ)·x0 + σ·ε the derivative
//! (x − D)/σ is exactly the velocity ε − x0, so these names are the `euler`
//! and `heun` samplers themselves and give identical results on flow models;
//! they exist so flow workflows can name the method they expect.

use std::collections::VecDeque;

use candle_core::{Result, Tensor};

use super::super::model::Path;
use super::{derivative, lerp, walk, Denoiser, Euler, SampleContext, Sampler, SamplerOptions};

/// Names served by [`by_name`].
pub const NAMES: &[&str] = &[
    "heun",
    "dpm_2",
    "lms",
    "dpmpp_2m",
    "ipndm",
    "uni_pc_bh2",
    "ddim",
    "flow_euler",
    "flow_heun",
];

pub fn by_name(name: &str, _opts: SamplerOptions) -> Option<Box<dyn Sampler>> {
    Some(match name {
        "heun" | "flow_heun" => Box::new(Heun),
        "dpm_2" => Box::new(Dpm2),
        "lms" => Box::new(Lms),
        "dpmpp_2m" => Box::new(DpmPp2M),
        "ipndm" => Box::new(IPndm),
        "uni_pc_bh2" => Box::new(UniPcBh2),
        "ddim" => Box::new(Ddim),
        "flow_euler" => Box::new(Euler),
        _ => return None,
    })
}

/// `Σ cᵢ·tᵢ` over a sampler's history.
fn combine(terms: &[(&Tensor, f64)]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for &(t, c) in terms {
        let term = t.affine(c, 0.0)?;
        acc = Some(match acc {
            Some(a) => (a + term)?,
            None => term,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("combine: no terms".into()))
}

/// The first-order exponential-integrator step in data prediction, from σ to
/// σ' holding D fixed: `x' = (σ'/σ)·x + (α' − α·σ'/σ)·D`.
///
/// This is `x' = (σ'/σ)x − α'(e^{−h} − 1)·D` with h = λ' − λ, written with
/// e^{−h} = α·σ'/(σ·α') so that σ' = 0 (λ' = +∞) and α = 0 (the flow path's
/// σ = 1, λ = −∞) need no infinities. It is DDIM (η = 0) and DPM-Solver++(1)
/// on any path, and on both of weft's paths it coincides with Euler in σ.
/// Returns the coefficients of x and D.
fn exp_coefficients(path: Path, sigma: f64, next: f64) -> (f64, f64) {
    let ratio = next / sigma;
    (ratio, path.alpha(next) - path.alpha(sigma) * ratio)
}

fn exp_step(path: Path, x: &Tensor, denoised: &Tensor, sigma: f64, next: f64) -> Result<Tensor> {
    let (cx, cd) = exp_coefficients(path, sigma, next);
    lerp(x, cx, denoised, cd)
}

/// Heun's method (the trapezoidal predictor–corrector of Karras et al.).
/// A step ending at σ = 0 is a plain Euler step, since D at σ = 0 would
/// divide by zero and adds nothing. `flow_heun` is this sampler: on the flow
/// path the derivative is the velocity, so it is Heun in velocity form.
#[derive(Debug, Default)]
pub struct Heun;

impl Sampler for Heun {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        walk(x, sigmas, ctx, 1.0, |_, mut x, sigma, next, _| {
            let d = derivative(&x, &denoiser.denoise(&x, sigma)?, sigma)?;
            let euler = (&x + d.affine(next - sigma, 0.0)?)?;
            x = if next == 0.0 {
                euler
            } else {
                let d_next = derivative(&euler, &denoiser.denoise(&euler, next)?, next)?;
                (x + (d + d_next)?.affine(0.5 * (next - sigma), 0.0)?)?
            };
            Ok(x)
        })
    }
}

/// DPM-Solver-2 as k-diffusion writes it: the derivative is re-evaluated at
/// the geometric midpoint √(σσ'), the midpoint in log σ, which is where the
/// solution curves most evenly. Steps to σ = 0 are Euler steps.
#[derive(Debug, Default)]
pub struct Dpm2;

impl Sampler for Dpm2 {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        walk(x, sigmas, ctx, 1.0, |_, mut x, sigma, next, _| {
            let d = derivative(&x, &denoiser.denoise(&x, sigma)?, sigma)?;
            x = if next == 0.0 {
                (x + d.affine(next - sigma, 0.0)?)?
            } else {
                let mid = (sigma * next).sqrt();
                let x_mid = (&x + d.affine(mid - sigma, 0.0)?)?;
                let d_mid = derivative(&x_mid, &denoiser.denoise(&x_mid, mid)?, mid)?;
                (x + d_mid.affine(next - sigma, 0.0)?)?
            };
            Ok(x)
        })
    }
}

/// The most past derivatives linear multistep combines (diffusers' and
/// k-diffusion's default).
const LMS_ORDER: usize = 4;

/// Linear multistep in σ: dx/dσ is interpolated by the Lagrange polynomial
/// through the last (up to 4) derivatives and integrated exactly over the
/// step, so uneven σ grids are handled properly. The order ramps up 1, 2, 3,
/// 4 over the first steps, as in diffusers.
#[derive(Debug, Default)]
pub struct Lms;

/// Three-point Gauss–Legendre nodes and weights on [−1, 1]: exact for
/// polynomials up to degree 5, and the Lagrange basis here has degree ≤ 3,
/// so the integral is exact (no adaptive quadrature needed).
const GAUSS_LEGENDRE_3: [(f64, f64); 3] = [
    (-0.774_596_669_241_483_4, 5.0 / 9.0),
    (0.0, 8.0 / 9.0),
    (0.774_596_669_241_483_4, 5.0 / 9.0),
];

/// ∫ from `nodes[0]` to `to` of the Lagrange basis polynomial that is 1 at
/// `nodes[j]` and 0 at the other nodes.
fn lagrange_integral(nodes: &[f64], j: usize, to: f64) -> f64 {
    let (a, b) = (nodes[0], to);
    let basis = |tau: f64| {
        nodes
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != j)
            .map(|(_, &s)| (tau - s) / (nodes[j] - s))
            .product::<f64>()
    };
    let (mid, half) = (0.5 * (a + b), 0.5 * (b - a));
    half * GAUSS_LEGENDRE_3
        .iter()
        .map(|&(xi, w)| w * basis(mid + half * xi))
        .sum::<f64>()
}

impl Sampler for Lms {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        // dx/dσ at sigmas[i], sigmas[i − 1], …: most recent first.
        let mut history: VecDeque<Tensor> = VecDeque::with_capacity(LMS_ORDER);
        walk(x, sigmas, ctx, 1.0, |i, mut x, sigma, next, _| {
            history.push_front(derivative(&x, &denoiser.denoise(&x, sigma)?, sigma)?);
            history.truncate(LMS_ORDER);
            let nodes: Vec<f64> = (0..history.len()).map(|k| sigmas[i - k]).collect();
            let terms: Vec<(&Tensor, f64)> = history
                .iter()
                .enumerate()
                .map(|(j, d)| (d, lagrange_integral(&nodes, j, next)))
                .collect();
            x = (x + combine(&terms)?)?;
            Ok(x)
        })
    }
}

/// The number of steps below which diffusers' multistep solvers
/// (`lower_order_final`) take a first-order last step whatever σ it ends at.
const LOWER_ORDER_FINAL_BELOW: usize = 15;

/// DPM-Solver++(2M): data prediction, second order in λ = ln(α/σ) from the
/// current and previous D, exact for the linear part of the ODE on any path
/// x = α·x0 + σ·ε: `x' = (σ'/σ)x − α'(e^{−h} − 1)·(D + (D − D_prev)/(2r))`,
/// h = λ' − λ, r = h_prev/h.
///
/// The first step is first order (no history). The last step is first order
/// when it ends at σ = 0 (where the correction term is unreliable) *or* when
/// the run has fewer than 15 steps: the latter is diffusers'
/// `lower_order_final` and differs from k-diffusion, which only drops to
/// first order at σ = 0. A step out of σ = 1 on the flow path (λ = −∞) makes
/// r infinite, so the step after it is first order too.
#[derive(Debug, Default)]
pub struct DpmPp2M;

impl Sampler for DpmPp2M {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let path = denoiser.path();
        let steps = sigmas.len().saturating_sub(1);
        let mut previous: Option<(Tensor, f64)> = None;
        walk(x, sigmas, ctx, 1.0, |i, mut x, sigma, next, _| {
            let denoised = denoiser.denoise(&x, sigma)?;
            let h = path.lambda(next) - path.lambda(sigma);
            let last = i + 1 == steps;
            let lower_final = last && (next == 0.0 || steps < LOWER_ORDER_FINAL_BELOW);
            let effective = match &previous {
                Some((old, h_prev)) if !lower_final => {
                    let r = h_prev / h;
                    if r > 0.0 && r.is_finite() {
                        let k = 0.5 / r;
                        lerp(&denoised, 1.0 + k, old, -k)?
                    } else {
                        denoised.clone()
                    }
                }
                _ => denoised.clone(),
            };
            x = exp_step(path, &x, &effective, sigma, next)?;
            previous = Some((denoised, h));
            Ok(x)
        })
    }
}

/// Adams–Bashforth weights on the last 1–4 derivatives, most recent first.
const IPNDM_WEIGHTS: [&[f64]; 4] = [
    &[1.0],
    &[3.0 / 2.0, -1.0 / 2.0],
    &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
    &[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
];

/// Improved pseudo-numerical method (iPNDM, Zhang & Chen): Adams–Bashforth
/// on dx/dσ with the fixed equal-step weights, warming up from first to
/// fourth order with lower-order weights instead of PNDM's Runge–Kutta
/// start, so every step costs one model call.
#[derive(Debug, Default)]
pub struct IPndm;

impl Sampler for IPndm {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let mut history: VecDeque<Tensor> = VecDeque::with_capacity(IPNDM_WEIGHTS.len());
        walk(x, sigmas, ctx, 1.0, |_, mut x, sigma, next, _| {
            history.push_front(derivative(&x, &denoiser.denoise(&x, sigma)?, sigma)?);
            history.truncate(IPNDM_WEIGHTS.len());
            let weights = IPNDM_WEIGHTS[history.len() - 1];
            let terms: Vec<(&Tensor, f64)> = history
                .iter()
                .zip(weights)
                .map(|(d, w)| (d, w * (next - sigma)))
                .collect();
            x = (x + combine(&terms)?)?;
            Ok(x)
        })
    }
}

/// UniPC (Zhao et al.) with B(h) = e^{−h} − 1 ("bh2"), order 2, in data
/// prediction on λ, with diffusers' `UniPCMultistepScheduler` scheduling:
///
/// * each step first corrects the current sample (UniC) using the model
///   output just computed at the *uncorrected* sample, then predicts (UniP)
///   from the corrected one, so the corrector costs no extra model call;
/// * the predictor's order warms up (1, then 2) and drops to 1 on the last
///   step (`lower_order_final`); the corrector uses the order of the
///   predictor that produced the sample it corrects;
/// * nothing corrects the final sample.
///
/// With bh2 the order-2 predictor (ρ = ½) is exactly DPM-Solver++(2M).
#[derive(Debug, Default)]
pub struct UniPcBh2;

const UNIPC_ORDER: usize = 2;

/// UniC: corrects x_t (predicted from `x_prev` at `sigma_prev`) using
/// `model_t`, the denoised estimate at x_t, and the stored estimates
/// `history` (D at `sigma_prev`, then D one step earlier).
fn unipc_correct(
    path: Path,
    x_prev: &Tensor,
    sigmas: (f64, f64, Option<f64>),
    history: &VecDeque<Tensor>,
    model_t: &Tensor,
    order: usize,
) -> Result<Tensor> {
    let (sigma_prev, sigma, sigma_older) = sigmas;
    let (cx, cd) = exp_coefficients(path, sigma_prev, sigma);
    let m0 = &history[0];
    let h = path.lambda(sigma) - path.lambda(sigma_prev);
    // α_t·B(h) with B = e^{−h} − 1 is −cd: the corrections share the
    // first-order step's coefficient.
    let (rho_older, rho_t) = match (order, sigma_older) {
        (2, Some(older)) => {
            let hh = -h;
            let b_h = hh.exp_m1();
            let g1 = b_h / hh - 1.0;
            let g2 = g1 / hh - 0.5;
            let (b0, b1) = (g1 / b_h, 2.0 * g2 / b_h);
            let r1 = (path.lambda(older) - path.lambda(sigma_prev)) / h;
            let rho0 = (b0 - b1) / (1.0 - r1);
            // ρ₀·(m₁ − m₀)/r₁, folded into one coefficient.
            (rho0 / r1, b0 - rho0)
        }
        _ => (0.0, 0.5),
    };
    // x_t = cx·x_prev + cd·(m0 + ρ_o·(m1 − m0) + ρ_t·(model_t − m0)).
    let mut terms = vec![
        (x_prev, cx),
        (m0, cd * (1.0 - rho_t - rho_older)),
        (model_t, cd * rho_t),
    ];
    if rho_older != 0.0 {
        terms.push((&history[1], cd * rho_older));
    }
    combine(&terms)
}

impl Sampler for UniPcBh2 {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let path = denoiser.path();
        let steps = sigmas.len().saturating_sub(1);
        // Denoised estimates, most recent first.
        let mut history: VecDeque<Tensor> = VecDeque::with_capacity(UNIPC_ORDER);
        let mut corrected_from: Option<(Tensor, usize)> = None;
        walk(x, sigmas, ctx, 1.0, |i, mut x, sigma, next, _| {
            let model_t = denoiser.denoise(&x, sigma)?;
            if let Some((x_prev, order)) = corrected_from.take() {
                let older = i.checked_sub(2).map(|k| sigmas[k]);
                x = unipc_correct(
                    path,
                    &x_prev,
                    (sigmas[i - 1], sigma, older),
                    &history,
                    &model_t,
                    order,
                )?;
            }
            history.push_front(model_t);
            history.truncate(UNIPC_ORDER);
            let order = UNIPC_ORDER.min(steps - i).min(history.len());
            let (cx, cd) = exp_coefficients(path, sigma, next);
            let mut terms = vec![(&x, cx), (&history[0], cd)];
            if order == 2 {
                let h = path.lambda(next) - path.lambda(sigma);
                let r = (path.lambda(sigma) - path.lambda(sigmas[i - 1])) / h;
                if r > 0.0 && r.is_finite() {
                    let k = 0.5 / r;
                    terms[1].1 = cd * (1.0 + k);
                    terms.push((&history[1], -cd * k));
                }
            }
            let predicted = combine(&terms)?;
            corrected_from = Some((x, order));
            x = predicted;
            Ok(x)
        })
    }
}

/// DDIM with η = 0: x' = α'·D + σ'·ε̂ with ε̂ = (x − α·D)/σ, i.e. the
/// first-order exponential step. On weft's σ coordinates this equals Euler,
/// but it is kept under its own name with DDIM's semantics (a VP sample is
/// `x / sqrt(1 + σ²)`).
///
/// diffusers' `set_alpha_to_one` only changes the last "previous ᾱ": `true`
/// ends at ᾱ = 1, σ = 0, where the step returns D; `false` ends at the
/// training schedule's ᾱ_0, i.e. σ_min = sqrt((1 − ᾱ_0)/ᾱ_0). Express it by
/// making σ_min rather than 0 the last entry of the σ list.
#[derive(Debug, Default)]
pub struct Ddim;

impl Sampler for Ddim {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let path = denoiser.path();
        walk(x, sigmas, ctx, 1.0, |_, mut x, sigma, next, _| {
            let denoised = denoiser.denoise(&x, sigma)?;
            x = exp_step(path, &x, &denoised, sigma, next)?;
            Ok(x)
        })
    }
}
