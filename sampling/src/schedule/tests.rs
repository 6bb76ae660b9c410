//! The schedules against closed forms and their own invariants.

use super::beta_dist::{beta_quantile, incomplete_beta, ln_gamma};
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
            (incomplete_beta(x, 0.6, 0.6) + incomplete_beta(1.0 - x, 0.6, 0.6) - 1.0).abs() < 1e-13
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

/// SD's σ table from scratch: β from √β evenly spaced, ᾱ as a running
/// product, σ = √((1 − ᾱ)/ᾱ). Independent of `betas`/`alphas_cumprod`.
fn sd_alphas_by_hand() -> Vec<f64> {
    let (a, b) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut acc = 1.0;
    (0..1000)
        .map(|i| {
            let r = a + (b - a) * i as f64 / 999.0;
            acc *= 1.0 - r * r;
            acc
        })
        .collect()
}

fn sigma_of(alpha: f64) -> f64 {
    ((1.0 - alpha) / alpha).sqrt()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * w.abs(),
            "{what}[{i}]: {g} vs {w} (all: {got:?})"
        );
    }
}

#[test]
fn step_range_cuts_as_comfyui_ksampler_advanced() {
    let s = [10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.0];
    let cut = |start, end, force| step_range(&s, start, end, force);
    // Stopping early keeps the noise of σ[end] only with leftover noise.
    assert_eq!(
        cut(0, 6, false).unwrap(),
        [10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.5]
    );
    assert_eq!(
        cut(0, 6, true).unwrap(),
        [10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.0]
    );
    assert_eq!(cut(3, 6, true).unwrap(), [4.0, 2.0, 1.0, 0.0]);
    assert_eq!(
        cut(0, 9, true).unwrap(),
        [10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.0]
    );
    // An end at or past the last step cuts nothing and zeroes nothing.
    assert_eq!(cut(6, 10_000, true).unwrap(), [0.5, 0.25, 0.1, 0.05, 0.0]);
    assert_eq!(cut(6, 10, true).unwrap(), [0.5, 0.25, 0.1, 0.05, 0.0]);
    assert_eq!(cut(9, 10_000, false).unwrap(), [0.05, 0.0]);
    assert_eq!(cut(0, 10_000, true).unwrap(), s);
    // No step left: the caller returns the latent unchanged.
    for (start, end) in [(6, 6), (7, 6), (10, 10_000), (0, 0), (10_000, 10_000)] {
        assert_eq!(cut(start, end, true), None, "{start}..{end}");
        assert_eq!(cut(start, end, false), None, "{start}..{end}");
    }
    assert_eq!(step_range(&[], 0, 10, true), None);
    assert_eq!(step_range(&[1.0], 0, 10, true), None);
}

#[test]
fn sd_turbo_takes_the_distilled_timesteps_from_the_sd_table() {
    let ac = sd_alphas_by_hand();
    let at = |ts: &[usize]| -> Vec<f64> {
        let mut v: Vec<f64> = ts.iter().map(|t| sigma_of(ac[*t])).collect();
        v.push(0.0);
        v
    };
    let ms = sd();
    let got = |steps, denoise| sd_turbo(&ms, steps, denoise).unwrap();
    assert_close("1 step", &got(1, 1.0), &at(&[999]), 1e-9);
    assert_close("4 steps", &got(4, 1.0), &at(&[999, 899, 799, 699]), 1e-9);
    assert_close(
        "10 steps",
        &got(10, 1.0),
        &at(&[999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
        1e-9,
    );
    // denoise skips 10 − ⌊10·denoise⌋ timesteps, in f64 as Python's int():
    // 10·0.7 = 7.000000000000001 → 7, 10·0.3 = 3.0000000000000004 → 3.
    assert_close("0.7", &got(2, 0.7), &at(&[699, 599]), 1e-9);
    assert_close("0.3", &got(1, 0.3), &at(&[299]), 1e-9);
    assert_close("0.55", &got(1, 0.55), &at(&[499]), 1e-9);
    // Fewer than `steps` remain past the offset.
    assert_close("0.5", &got(10, 0.5), &at(&[499, 399, 299, 199, 99]), 1e-9);
    assert_eq!(got(3, 0.0), [0.0]);
    assert_eq!(got(1, 0.09), [0.0]);
    for (steps, denoise) in [(0, 1.0), (11, 1.0), (1, -0.1), (1, 1.5), (1, f64::NAN)] {
        assert!(sd_turbo(&ms, steps, denoise).is_err(), "{steps} {denoise}");
    }
    let empty = ModelSampling::discrete(&[], Prediction::Epsilon);
    assert!(sd_turbo(&empty, 1, 1.0).is_err());
}

#[test]
fn zero_terminal_snr_sigmas_match_the_closed_form_with_comfyuis_last_alpha() {
    let ac = sd_alphas_by_hand();
    let (first, last) = (ac[0].sqrt(), ac[999].sqrt());
    let want: Vec<f64> = ac
        .iter()
        .enumerate()
        .map(|(t, a)| {
            if t == 999 {
                sigma_of(4.8973451890853435e-08)
            } else {
                let r = (a.sqrt() - last) * first / (first - last);
                sigma_of(r * r)
            }
        })
        .collect();
    let table: Vec<f64> = ac.iter().map(|a| sigma_of(*a)).collect();
    let got = rescale_zero_terminal_snr_sigmas(&table).unwrap();
    assert_close("zsnr", &got, &want, 1e-9);
    // The first level keeps its value, the last is ComfyUI's finite stand-in
    // for σ = ∞ (not diffusers' 2⁻²⁴ floor, σ ≈ 4096).
    assert!((got[0] - table[0]).abs() < 1e-12);
    assert!((got[999] - 4_518.763_698_66).abs() < 1e-6, "{}", got[999]);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert!(rescale_zero_terminal_snr_sigmas(&[]).is_err());
    assert!(rescale_zero_terminal_snr_sigmas(&[1.0, f64::NAN]).is_err());
    assert!(rescale_zero_terminal_snr_sigmas(&[2.0, 1.0]).is_err());
    // A level that repeats the last one would reach σ = ∞ early.
    assert!(rescale_zero_terminal_snr_sigmas(&[0.1, 3.0, 1.0, 3.0]).is_err());
}
