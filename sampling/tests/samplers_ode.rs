//! The deterministic samplers against exact answers: the moments of Gaussian
//! data, the analytic probability-flow map of a single Gaussian (for orders
//! of convergence), and diffusers' schedulers step by step.

mod support;

use std::collections::VecDeque;
use std::sync::Mutex;

use candle_core::{Device, Result, Tensor};
use support::{f64s, fixture, flat, max_abs_diff, tensor, FixtureDenoiser, ReplayNoise};
use weft_sampling::exact::{ExactDenoiser, GaussianMixture};
use weft_sampling::{
    sampler_by_name, seeded_noise, Denoiser, ModelSampling, Path, Prediction, SampleContext,
    SamplerOptions,
};

const DETERMINISTIC: &[&str] = &[
    "euler",
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

/// Runs sampler `name`, checking the progress callback counts every step.
fn run(name: &str, denoiser: &dyn Denoiser, x: Tensor, sigmas: &[f64]) -> Tensor {
    let sampler = sampler_by_name(name, SamplerOptions::default())
        .unwrap_or_else(|| panic!("no sampler {name}"));
    // Deterministic samplers must not draw noise: an empty replay panics.
    let mut noise = ReplayNoise(VecDeque::new());
    let mut seen = Vec::new();
    let mut progress = |done: usize, total: usize| -> Result<()> {
        seen.push((done, total));
        Ok(())
    };
    let mut ctx = SampleContext {
        noise: &mut noise,
        progress: &mut progress,
    };
    let out = sampler.sample(denoiser, x, sigmas, &mut ctx).unwrap();
    let steps = sigmas.len() - 1;
    let want: Vec<(usize, usize)> = (1..=steps).map(|i| (i, steps)).collect();
    assert_eq!(seen, want, "{name}: progress calls");
    out
}

fn mean_var(t: &Tensor) -> (f64, f64) {
    let v: Vec<f64> = flat(t).iter().map(|&x| x as f64).collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Karras et al.'s ρ = 7 schedule from `max` to `min`, then 0.
fn karras(n: usize, max: f64, min: f64) -> Vec<f64> {
    let (a, b) = (max.powf(1.0 / 7.0), min.powf(1.0 / 7.0));
    let mut s: Vec<f64> = (0..n)
        .map(|i| (a + i as f64 / (n - 1) as f64 * (b - a)).powi(7))
        .collect();
    s.push(0.0);
    s
}

const MU: f64 = 0.7;
const S: f64 = 0.4;

/// Every sampler brings N(0, σ_max²) noise to data N(0.7, 0.4²) on both paths.
///
/// 4096 independent elements: the sample mean of N(μ, s²) has standard error
/// s/64 = 0.00625 and the sample variance s²·sqrt(2/4095) = 0.0035. The
/// tolerances are 4 standard errors plus a discretisation allowance of 1% of
/// s (mean) and 2% of s² (variance). Higher-order samplers take 40 steps and
/// the first-order ones 400, which keeps every sampler's bias (measured: at
/// most 2% of s², sampling error included) inside the allowance; Euler at 40 steps is 14% short in
/// variance, so a sampler that loses an order fails.
#[test]
fn samplers_reach_gaussian_data_moments_on_both_paths() {
    let data = GaussianMixture::single(MU, S);
    let n = 64 * 64;
    let z = seeded_noise(7, &[1, 1, 64, 64]).unwrap();
    let tol_mean = 4.0 * S / (n as f64).sqrt() + 0.01 * S;
    let tol_var = 4.0 * S * S * (2.0 / (n as f64 - 1.0)).sqrt() + 0.02 * S * S;
    for path in [Path::Diffusion, Path::Flow] {
        let denoiser = ExactDenoiser {
            data: data.clone(),
            path,
            label: None,
        };
        for name in DETERMINISTIC {
            let steps = match *name {
                "euler" | "ddim" | "flow_euler" => 400,
                _ => 40,
            };
            let sigmas: Vec<f64> = match path {
                Path::Diffusion => karras(steps, 80.0, 0.002),
                Path::Flow => (0..=steps).map(|i| 1.0 - i as f64 / steps as f64).collect(),
            };
            let x = z.affine(sigmas[0], 0.0).unwrap();
            let out = run(name, &denoiser, x, &sigmas);
            let (mean, var) = mean_var(&out);
            eprintln!("{path:?} {name}: mean {mean:.5} var {var:.5}");
            assert!(
                (mean - MU).abs() < tol_mean,
                "{path:?} {name}: mean {mean} vs {MU} (±{tol_mean})"
            );
            assert!(
                (var - S * S).abs() < tol_var,
                "{path:?} {name}: variance {var} vs {} (±{tol_var})",
                S * S
            );
        }
    }
}

/// On the flow path the velocity-form aliases are the σ-form samplers.
#[test]
fn flow_aliases_equal_euler_and_heun_on_flow_paths() {
    let denoiser = ExactDenoiser {
        data: GaussianMixture::single(MU, S),
        path: Path::Flow,
        label: None,
    };
    let sigmas: Vec<f64> = (0..=12).map(|i| 1.0 - i as f64 / 12.0).collect();
    let x = seeded_noise(3, &[1, 2, 4, 4]).unwrap();
    for (alias, base) in [("flow_euler", "euler"), ("flow_heun", "heun")] {
        let a = flat(&run(alias, &denoiser, x.clone(), &sigmas));
        let b = flat(&run(base, &denoiser, x.clone(), &sigmas));
        assert_eq!(a, b, "{alias} vs {base}");
    }
}

/// The exact probability-flow map of data N(μ, s²) from σ0 to σ on `path`.
/// Marginals are Gaussian with mean α·μ and variance α²s² + σ², the velocity
/// is affine in x, so the flow keeps each point's standard score: diffusion
/// gives x(σ) = μ + sqrt((s²+σ²)/(s²+σ0²))·(x0 − μ), and flow, with α = 1 − σ,
/// x(σ) = α·μ + sqrt((α²s²+σ²)/(α0²s²+σ0²))·(x0 − α0·μ).
fn exact_flow_map(path: Path, x0: f64, sigma0: f64, sigma: f64) -> f64 {
    let (a0, a) = (path.alpha(sigma0), path.alpha(sigma));
    let sd = |a: f64, s: f64| (a * a * S * S + s * s).sqrt();
    a * MU + sd(a, sigma) / sd(a0, sigma0) * (x0 - a0 * MU)
}

/// Least-squares slope of log(error) against log(steps), negated.
fn convergence_order(steps: &[usize], errors: &[f64]) -> f64 {
    let xs: Vec<f64> = steps.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errors.iter().map(|e| e.ln()).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    -cov / var
}

/// Observed orders of convergence against the analytic flow map: σ uniform
/// in log σ from 80 to 0.05 on the diffusion path (the natural time of these
/// solvers: equal steps in λ), and uniform in σ from 1 to 0.05 on the flow
/// path (equal steps in flow time). Neither grid ends at 0, so no step
/// jumps to the data. 8 to 256 steps: the fit spans the pre-asymptotic
/// start and the f32 rounding of D stays below every error measured.
#[test]
fn observed_orders_of_convergence() {
    let steps = [8usize, 16, 32, 64, 128, 256];
    let grids: [(Path, f64, f64); 2] = [(Path::Diffusion, 80.0, 0.05), (Path::Flow, 1.0, 0.05)];
    // (sampler, lowest and highest accepted order). LMS, iPNDM and UniPC
    // have higher-order cores, but their first-order warm-up step (and
    // UniPC's uncorrected first-order last step) caps the global order at 2.
    let expected: &[(&str, f64, f64)] = &[
        ("euler", 0.8, 1.2),
        ("ddim", 0.8, 1.2),
        ("heun", 1.7, 2.4),
        ("dpm_2", 1.7, 2.4),
        ("dpmpp_2m", 1.7, 2.4),
        ("lms", 1.7, f64::INFINITY),
        ("ipndm", 1.7, f64::INFINITY),
        ("uni_pc_bh2", 1.7, f64::INFINITY),
    ];
    for (path, max, min) in grids {
        let denoiser = ExactDenoiser {
            data: GaussianMixture::single(MU, S),
            path,
            label: None,
        };
        let starts: Vec<f64> = (0..64)
            .map(|i| path.alpha(max) * MU + (-3.0 + 6.0 * i as f64 / 63.0) * max)
            .collect();
        let x = Tensor::from_vec(starts.clone(), (1, 1, 8, 8), &Device::Cpu).unwrap();
        let want: Vec<f64> = starts
            .iter()
            .map(|&x0| exact_flow_map(path, x0, max, min))
            .collect();
        for &(name, lo, hi) in expected {
            let errors: Vec<f64> = steps
                .iter()
                .map(|&n| {
                    let sigmas: Vec<f64> = (0..=n)
                        .map(|i| {
                            let t = i as f64 / n as f64;
                            match path {
                                Path::Diffusion => (max.ln() + t * (min.ln() - max.ln())).exp(),
                                Path::Flow => max + t * (min - max),
                            }
                        })
                        .collect();
                    let out = run(name, &denoiser, x.clone(), &sigmas);
                    let got: Vec<f64> = out.flatten_all().unwrap().to_vec1().unwrap();
                    got.iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0.0, f64::max)
                })
                .collect();
            let order = convergence_order(&steps, &errors);
            let shown: Vec<String> = errors.iter().map(|e| format!("{e:.3e}")).collect();
            eprintln!("{path:?} {name}: errors {shown:?} order {order:.3}");
            assert!(
                (lo..=hi).contains(&order),
                "{path:?} {name}: order {order} outside {lo}..{hi} (errors {errors:?})"
            );
        }
    }
}

/// On an even σ grid the Lagrange weights integrated by `lms` are the
/// Adams–Bashforth weights `ipndm` hard-codes (both warm up through orders
/// 1, 2, 3, 4), so the two must agree: a check of the quadrature.
#[test]
fn lms_is_adams_bashforth_on_even_grids() {
    let denoiser = ExactDenoiser {
        data: GaussianMixture {
            weights: vec![1.0, 2.0],
            means: vec![-1.0, 1.0],
            stds: vec![0.3, 0.5],
        },
        path: Path::Flow,
        label: None,
    };
    let sigmas: Vec<f64> = (0..=20).map(|i| 1.0 - 0.9 * i as f64 / 20.0).collect();
    let x = seeded_noise(5, &[1, 2, 4, 4]).unwrap();
    let lms = flat(&run("lms", &denoiser, x.clone(), &sigmas));
    let ipndm = flat(&run("ipndm", &denoiser, x, &sigmas));
    let err = max_abs_diff(&lms, &ipndm);
    assert!(err < 1e-5, "lms vs ipndm: {err}");
}

/// Records every state the sampler hands the model, so each of diffusers'
/// per-step `prev_sample`s can be compared, not just the end result.
struct Recording {
    inner: FixtureDenoiser,
    inputs: Mutex<Vec<(f64, Tensor)>>,
}

impl Denoiser for Recording {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        self.inputs.lock().unwrap().push((sigma, x.clone()));
        self.inner.denoise(x, sigma)
    }

    fn path(&self) -> Path {
        self.inner.path()
    }
}

/// How a diffusers scheduler stores its sample relative to weft's x.
#[derive(Clone, Copy, Debug)]
enum Space {
    /// Karras-style schedulers (and flow matching): the same x.
    Same,
    /// DDIM, DPM-Solver, UniPC: the variance-preserving x / sqrt(1 + σ²).
    VariancePreserving,
}

impl Space {
    fn scale(self, sigma: f64) -> f64 {
        match self {
            Space::Same => 1.0,
            Space::VariancePreserving => 1.0 / (1.0 + sigma * sigma).sqrt(),
        }
    }
}

/// ᾱ of SD's scaled-linear training schedule, as torch computed it.
fn scaled_linear_alphas_cumprod() -> Vec<f64> {
    let all = fixture("schedules");
    let entry = all["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "scaled_linear")
        .expect("scaled_linear schedule");
    f64s(&entry["alphas_cumprod"])
}

fn vp_sigma(alpha_cumprod: f64) -> f64 {
    ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
}

/// Replays fixture `case` with weft sampler `sampler` and compares every
/// step's `prev_sample` (max abs error ≤ 1e-4); returns the worst error.
fn parity(case: &str, sampler: &str) -> f32 {
    let fx = fixture(case);
    let config = &fx["resolved_config"];
    let scheduler = fx["scheduler"].as_str().unwrap();
    let start = fx["img2img"]["start_index"].as_u64().unwrap_or(0) as usize;
    let timesteps = f64s(&fx["timesteps"]);
    let alphas_cumprod = scaled_linear_alphas_cumprod();
    let flow = scheduler.starts_with("FlowMatch");
    let sampling = if flow {
        ModelSampling::flow(1000.0)
    } else {
        let prediction =
            Prediction::parse(config["prediction_type"].as_str().unwrap()).expect("prediction");
        ModelSampling::discrete(&alphas_cumprod, prediction)
    };
    let space = match scheduler {
        "DDIMScheduler" | "DPMSolverMultistepScheduler" | "UniPCMultistepScheduler" => {
            Space::VariancePreserving
        }
        _ => Space::Same,
    };
    // The σ list weft is given, and diffusers' (σ, timestep) pairing.
    let (sigmas, table): (Vec<f64>, Vec<(f64, f64)>) = if scheduler == "DDIMScheduler" {
        let sigma_of = |t: f64| vp_sigma(alphas_cumprod[t as usize]);
        let table: Vec<(f64, f64)> = timesteps.iter().map(|&t| (sigma_of(t), t)).collect();
        let mut sigmas: Vec<f64> = table[start..].iter().map(|p| p.0).collect();
        // set_alpha_to_one: the last step ends at ᾱ = 1 (σ = 0), else at ᾱ_0.
        sigmas.push(if config["set_alpha_to_one"].as_bool().unwrap() {
            0.0
        } else {
            vp_sigma(alphas_cumprod[0])
        });
        (sigmas, table)
    } else {
        let all = f64s(&fx["sigmas"]);
        let table = all.iter().copied().zip(timesteps.iter().copied()).collect();
        let sigmas = if scheduler == "HeunDiscreteScheduler" {
            // diffusers interleaves [σ0, σ1, σ1, σ2, σ2, …, 0]; weft takes the
            // plain list and makes the second evaluation itself.
            std::iter::once(all[0])
                .chain(all[1..].iter().step_by(2).copied())
                .collect()
        } else {
            all[start..].to_vec()
        };
        (sigmas, table)
    };
    let denoiser = Recording {
        inner: FixtureDenoiser::new(sampling, table),
        inputs: Mutex::new(Vec::new()),
    };
    let x = tensor(&fx, &fx["initial_sample"])
        .affine(1.0 / space.scale(sigmas[0]), 0.0)
        .unwrap();
    let out = run(sampler, &denoiser, x, &sigmas);

    let steps = fx["steps"].as_array().unwrap();
    let inputs = denoiser.inputs.lock().unwrap();
    let calls = denoiser.inner.calls.lock().unwrap();
    assert_eq!(inputs.len(), steps.len(), "{case}: model calls");
    let mut worst = 0f32;
    for (k, step) in steps.iter().enumerate() {
        assert_eq!(
            calls[k].1,
            step["timestep"].as_f64().unwrap(),
            "{case}: timestep of call {k}"
        );
        let (got, sigma) = match inputs.get(k + 1) {
            Some((sigma, x)) => (x.clone(), *sigma),
            None => (out.clone(), *sigmas.last().unwrap()),
        };
        let got = flat(&got.affine(space.scale(sigma), 0.0).unwrap());
        let want = flat(&tensor(&fx, &step["prev_sample"]));
        let err = max_abs_diff(&got, &want);
        assert!(
            err <= 1e-4,
            "{case} with {sampler}: step {k} max abs error {err}"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn parity_with_diffusers_schedulers() {
    let cases = [
        ("euler_epsilon", "euler"),
        ("euler_v_prediction", "euler"),
        ("euler_karras", "euler"),
        ("euler_leading", "euler"),
        ("euler_trailing", "euler"),
        ("euler_linspace_sigma_min", "euler"),
        ("euler_img2img", "euler"),
        ("heun", "heun"),
        ("lms", "lms"),
        ("dpmpp_2m", "dpmpp_2m"),
        ("dpmpp_2m_sigma_min", "dpmpp_2m"),
        ("dpmpp_2m_karras", "dpmpp_2m"),
        ("unipc_bh2", "uni_pc_bh2"),
        ("ddim_eta0_alpha_one", "ddim"),
        ("ddim_eta0_no_alpha_one", "ddim"),
        ("ddim_trailing", "ddim"),
        ("ddim_img2img", "ddim"),
        ("flow_match_shift1", "flow_euler"),
        ("flow_match_shift3", "flow_euler"),
        ("flow_match_img2img", "flow_euler"),
    ];
    for (case, sampler) in cases {
        let worst = parity(case, sampler);
        eprintln!("{case} ({sampler}): worst step error {worst:.2e}");
    }
}
