//! Noise schedules against diffusers' own (tests/fixtures/schedulers): the
//! training ᾱ, and every fixture's timesteps and σ.

mod support;

use serde_json::Value as Json;
use support::{f32s, fixture, fixture_dir};
use weft_sampling::schedule::{
    self, DiffusersConfig, DiffusersSchedule, FinalSigma, TimestepSpacing,
};

/// σ must agree to this relative error (fixtures hold f32 values computed by
/// torch in f32, and weft computes in f64).
const SIGMA_RTOL: f64 = 1e-6;

/// A fixture array of float32 values, exactly (README: parse, cast to f32).
fn exact_f32s(v: &Json) -> Vec<f64> {
    f32s(v).into_iter().map(f64::from).collect()
}

/// Timesteps are written as the exact f64 of what diffusers held.
fn timesteps_of(case: &Json) -> Vec<f64> {
    support::f64s(&case["timesteps"])
}

/// Largest relative error of `got` against `want`; a zero in `want` must be
/// matched exactly. Panics on a length mismatch or an error above `rtol`.
fn check_close(what: &str, got: &[f64], want: &[f64], rtol: f64) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length\n got {got:?}\nwant {want:?}"
    );
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = if *w == 0.0 {
            g.abs()
        } else {
            ((g - w) / w).abs()
        };
        assert!(
            err <= rtol,
            "{what}[{i}]: got {g}, want {w} (relative error {err:e})\n got {got:?}\nwant {want:?}"
        );
        worst = worst.max(err);
    }
    worst
}

fn config_str<'a>(config: &'a Json, key: &str, default: &'a str) -> &'a str {
    config[key].as_str().unwrap_or(default)
}

/// The training ᾱ a fixture's scheduler builds from its config.
fn alphas_from_config(config: &Json) -> Vec<f64> {
    let betas = schedule::betas(
        config_str(config, "beta_schedule", "linear"),
        config["num_train_timesteps"].as_u64().unwrap_or(1000) as usize,
        config["beta_start"].as_f64().unwrap_or(0.0001),
        config["beta_end"].as_f64().unwrap_or(0.02),
    )
    .unwrap();
    let ac = schedule::alphas_cumprod(&betas);
    if config["rescale_betas_zero_snr"].as_bool().unwrap_or(false) {
        schedule::rescale_zero_terminal_snr(&ac).unwrap()
    } else {
        ac
    }
}

/// The ᾱ diffusers itself held for a fixture's config (schedules.json), so
/// σ can be compared at 1e-6: weft's f64 ᾱ differs from torch's f32 product
/// by up to ~1e-6 relative, which the σ near t = 0 amplify.
fn fixture_alphas(config: &Json) -> Vec<f64> {
    let kind = config_str(config, "beta_schedule", "linear");
    let name = if config["rescale_betas_zero_snr"].as_bool().unwrap_or(false) {
        assert_eq!(kind, "scaled_linear", "only SD's zero-SNR ᾱ is recorded");
        "scaled_linear_zero_snr"
    } else {
        kind
    };
    let file = fixture("schedules");
    let entry = file["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("schedules.json has no {name}"));
    for key in ["beta_start", "beta_end", "num_train_timesteps"] {
        assert_eq!(
            entry["config"][key], config[key],
            "{name}: {key} differs from the case's"
        );
    }
    exact_f32s(&entry["alphas_cumprod"])
}

fn diffusers_config(config: &Json, default_spacing: &str) -> DiffusersConfig {
    DiffusersConfig {
        spacing: TimestepSpacing::parse(config_str(config, "timestep_spacing", default_spacing))
            .unwrap(),
        steps_offset: config["steps_offset"].as_u64().unwrap_or(0) as usize,
        karras: config["use_karras_sigmas"].as_bool().unwrap_or(false),
        final_sigma: FinalSigma::parse(config_str(config, "final_sigmas_type", "zero")).unwrap(),
    }
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "schedules")
        .collect();
    names.sort();
    names
}

/// Timesteps to within `atol`, or with `atol` = 0 as diffusers' parity
/// requires: integers exactly, fractional (Karras) ones to [`SIGMA_RTOL`],
/// since numpy's vectorised float32 log differs from libm's by an ulp.
fn check_timesteps(what: &str, got: &[f64], want: &[f64], atol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: timestep count\n got {got:?}\nwant {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        let ok = if atol > 0.0 {
            (g - w).abs() <= atol
        } else if w.fract() == 0.0 {
            g == w
        } else {
            ((g - w) / w).abs() <= SIGMA_RTOL
        };
        assert!(
            ok,
            "{what}: timestep {g} vs {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

/// What weft computes for a fixture's scheduler, (timesteps, σ if it has
/// them), starting from the ᾱ `alphas` gives for the case's config.
fn weft_schedule(case: &Json, alphas: fn(&Json) -> Vec<f64>) -> (Vec<f64>, Option<Vec<f64>>) {
    let config = &case["config"];
    let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
    let n_train = config["num_train_timesteps"].as_u64().unwrap() as usize;
    let euler = |ac: &[f64]| {
        schedule::diffusers_euler(ac, steps, &diffusers_config(config, "linspace")).unwrap()
    };
    let split = |s: DiffusersSchedule| (s.timesteps, Some(s.sigmas));
    match case["scheduler"].as_str().unwrap() {
        "EulerDiscreteScheduler" | "EulerAncestralDiscreteScheduler" | "LMSDiscreteScheduler" => {
            let mut ac = alphas(config);
            if config["rescale_betas_zero_snr"].as_bool().unwrap_or(false) {
                ac = schedule::clamp_terminal_alpha(&ac).unwrap();
            }
            split(euler(&ac))
        }
        "HeunDiscreteScheduler" => {
            split(schedule::heun_interleave(&euler(&alphas(config))).unwrap())
        }
        "DPMSolverMultistepScheduler" | "UniPCMultistepScheduler" => split(
            schedule::diffusers_multistep(
                &alphas(config),
                steps,
                &diffusers_config(config, "linspace"),
            )
            .unwrap(),
        ),
        "DDIMScheduler" | "DDPMScheduler" => {
            let c = diffusers_config(config, "leading");
            let t =
                schedule::diffusers_timesteps(c.spacing, n_train, steps, c.steps_offset).unwrap();
            (t, None)
        }
        "FlowMatchEulerDiscreteScheduler" => {
            let sigmas =
                schedule::flow_sigmas(steps, config["shift"].as_f64().unwrap_or(1.0)).unwrap();
            // diffusers stores σ in f32 and the timesteps are that σ·1000.
            let t = sigmas[..steps]
                .iter()
                .map(|s| (*s as f32 * n_train as f32) as f64)
                .collect();
            (t, Some(sigmas))
        }
        other => panic!("no weft schedule for diffusers' {other}; add it here"),
    }
}

/// Every fixture's timesteps (to `t_atol`) and σ (to `rtol`), starting from
/// the ᾱ that `alphas` gives; returns the worst σ error and its case.
fn check_every_fixture(alphas: fn(&Json) -> Vec<f64>, t_atol: f64, rtol: f64) -> (f64, String) {
    let names = fixture_names();
    assert!(
        names.len() >= 25,
        "expected the full fixture set, found {names:?}"
    );
    let mut worst = (0.0f64, String::new());
    for name in &names {
        let case = fixture(name);
        let (timesteps, sigmas) = weft_schedule(&case, alphas);
        check_timesteps(name, &timesteps, &timesteps_of(&case), t_atol);
        match (sigmas, case.get("sigmas")) {
            (Some(got), Some(want)) => {
                let err = check_close(name, &got, &exact_f32s(want), rtol);
                if err > worst.0 {
                    worst = (err, name.clone());
                }
            }
            (None, None) => {}
            (got, want) => panic!(
                "{name}: σ computed {} but fixture has σ {}",
                got.is_some(),
                want.is_some()
            ),
        }
    }
    worst
}

#[test]
fn every_fixture_schedule_matches_diffusers() {
    let (err, case) = check_every_fixture(fixture_alphas, 0.0, SIGMA_RTOL);
    println!("worst σ relative error: {err:e} ({case})");
}

/// The same, from weft's own f64 training schedule: torch's f32 product
/// differs from it by up to ~1.4e-6 relative (measured), which σ near t = 0
/// amplify to ~2e-6; Karras timesteps mapped back from σ move by up to ~5e-4.
#[test]
fn weft_training_schedule_gives_diffusers_sigmas() {
    let (err, case) = check_every_fixture(alphas_from_config, 1e-3, 5e-6);
    println!("worst σ relative error from f64 ᾱ: {err:e} ({case})");
}

/// The diffusers behaviours the fixtures README calls out, asserted on their
/// own so a regression names the rule it broke.
#[test]
fn diffusers_special_cases() {
    let sd = fixture_alphas(&fixture("euler_epsilon")["config"]);
    let table = schedule::sigma_table(&sd).unwrap();
    // final_sigmas_type = sigma_min repeats σ(t = 0) after the last Euler σ.
    let c = DiffusersConfig {
        final_sigma: FinalSigma::SigmaMin,
        ..Default::default()
    };
    let s = schedule::diffusers_euler(&sd, 10, &c).unwrap();
    assert!((s.sigmas[10] / table[0] - 1.0).abs() < SIGMA_RTOL);
    assert_eq!(s.sigmas[9], s.sigmas[10]);
    // Multistep linspace rounds 499.5 to even: 500, as numpy does.
    let t =
        schedule::diffusers_multistep_timesteps(TimestepSpacing::Linspace, 1000, 10, 0).unwrap();
    assert_eq!(t[5], 500.0);
    // Zero-SNR Euler starts at σ = √(2²⁴ − 1) ≈ 4096.
    let zero_snr =
        schedule::clamp_terminal_alpha(&schedule::rescale_zero_terminal_snr(&sd).unwrap()).unwrap();
    let c = DiffusersConfig {
        spacing: TimestepSpacing::Trailing,
        ..Default::default()
    };
    let s = schedule::diffusers_euler(&zero_snr, 10, &c).unwrap();
    assert!((s.sigmas[0] / (16_777_215f64).sqrt() - 1.0).abs() < SIGMA_RTOL);
    // Without the clamp the σ table is infinite and refused.
    assert!(
        schedule::diffusers_euler(&schedule::rescale_zero_terminal_snr(&sd).unwrap(), 10, &c)
            .is_err()
    );
}

#[test]
fn training_alphas_cumprod_match_diffusers() {
    let file = fixture("schedules");
    let mut checked = 0;
    for entry in file["schedules"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let mut ac = alphas_from_config(&entry["config"]);
        if entry["scheduler"] == "EulerDiscreteScheduler"
            && entry["config"]["rescale_betas_zero_snr"] == true
        {
            ac = schedule::clamp_terminal_alpha(&ac).unwrap();
        }
        let want = exact_f32s(&entry["alphas_cumprod"]);
        // torch's ᾱ carries f32 rounding of β and of the running product
        // (measured ≤ 1.5e-6 below t = 900); near the end the values are
        // tiny (cosine) or come from subtracting nearly equal √ᾱ in f32
        // (zero SNR), which costs up to ~4e-5.
        let err = check_close(name, &ac, &want, 1e-4);
        let bulk = check_close(&format!("{name} (t < 900)"), &ac[..900], &want[..900], 2e-6);
        println!("{name}: worst relative error {err:e}, {bulk:e} below t = 900");
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn img2img_start_matches_fixtures() {
    for name in ["euler_img2img", "ddim_img2img", "flow_match_img2img"] {
        let case = fixture(name);
        let img = &case["img2img"];
        let steps = case["num_inference_steps"].as_u64().unwrap() as usize;
        let strength = img["strength"].as_f64().unwrap();
        let start = if case["scheduler"] == "FlowMatchEulerDiscreteScheduler" {
            schedule::sd3_img2img_start(steps, strength)
        } else {
            schedule::diffusers_img2img_start(steps, strength)
        }
        .unwrap();
        assert_eq!(start as u64, img["t_start"].as_u64().unwrap(), "{name}");
        let order = case["order"].as_u64().unwrap() as usize;
        assert_eq!(
            start * order,
            img["start_index"].as_u64().unwrap() as usize,
            "{name}"
        );
        let (timesteps, _) = weft_schedule(&case, fixture_alphas);
        assert_eq!(
            timesteps[start * order],
            img["noise_timestep"].as_f64().unwrap(),
            "{name}"
        );
    }
    // The README's example of the two rules disagreeing.
    assert_eq!(schedule::diffusers_img2img_start(50, 0.29).unwrap(), 36);
    assert_eq!(schedule::sd3_img2img_start(50, 0.29).unwrap(), 35);
}
