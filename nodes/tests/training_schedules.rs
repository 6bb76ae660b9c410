//! `ExactGaussianModel`'s `beta_schedule`: the MODEL's σ table against the
//! closed forms of each training schedule, computed here independently of
//! `weft_sampling::schedule`.

use std::f64::consts::FRAC_PI_2;

use weft_core::{CancelToken, EventSink, Executor, RunOptions, SourceFile};
use weft_sampling::{Model, NoiseLevels};

/// The σ table (σ_t = √((1 − ᾱ_t)/ᾱ_t), t = 0..999) of an
/// `ExactGaussianModel` with the given extra inputs.
fn sigmas(inputs: &str) -> Vec<f64> {
    let text = format!(
        r#"(nodes: {{
            "model": ExactGaussianModel(parameterization: "epsilon"{inputs}),
            "show": Print(value: Link("model", "MODEL")),
        }})"#
    );
    let registry = weft_nodes::builtin_registry();
    let graph = weft_core::load(SourceFile::new("g.ron", &text), &registry, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        workers: 1,
        targets: Some(vec!["model".into()]),
        ..RunOptions::default()
    };
    let report = Executor::new(1 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap();
    assert!(report.success(), "{:?}", report.failed);
    let model = report.output("model").unwrap()[0]
        .downcast::<Model>()
        .unwrap()
        .clone();
    let NoiseLevels::Discrete { sigmas } = model.sampling.levels else {
        panic!("expected a discrete model");
    };
    sigmas
}

fn alpha_bar(sigma: f64) -> f64 {
    1.0 / (1.0 + sigma * sigma)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

#[test]
fn squaredcos_cap_v2_is_the_cosine_alpha_bar() {
    let sigmas = sigmas(r#", beta_schedule: "squaredcos_cap_v2""#);
    let n = 1000;
    assert_eq!(sigmas.len(), n);
    // Nichol & Dhariwal: ᾱ(t) = f(t/T)/f(0), f(u) = cos²((u + s)/(1 + s)·π/2).
    // Without the cap the product of 1 − β telescopes, so ᾱ at index i is
    // ᾱ((i + 1)/T).
    let s = 0.008;
    let f = |u: f64| ((u + s) / (1.0 + s) * FRAC_PI_2).cos().powi(2);
    let closed = |i: usize| f((i + 1) as f64 / n as f64) / f(0.0);
    for i in [0, 1, 10, 250, 500, 750, 900, 990, 998] {
        let got = alpha_bar(sigmas[i]);
        assert!(
            close(got, closed(i), 1e-9),
            "ᾱ[{i}] = {got}, closed form {}",
            closed(i)
        );
    }
    // The last β (1 − f(1)/f(0.999) = 1) is capped at 0.999.
    let last = alpha_bar(sigmas[n - 1]);
    assert!(
        close(last, closed(n - 2) * (1.0 - 0.999), 1e-9),
        "ᾱ[999] = {last}"
    );
}

#[test]
fn the_default_and_linear_schedules_are_unchanged() {
    // Stable Diffusion's scaled_linear stays the default: σ_max ≈ 14.6146.
    let default = sigmas("");
    assert_eq!(default, sigmas(r#", beta_schedule: "scaled_linear""#));
    assert!((default[999] - 14.614642).abs() < 1e-5, "{}", default[999]);
    assert!(close(alpha_bar(default[0]), 1.0 - 0.00085, 1e-12));
    // DDPM's linear β: ᾱ_0 = 1 − 1e-4, ᾱ_1 = (1 − 1e-4)(1 − β_1).
    let linear = sigmas(r#", beta_schedule: "linear""#);
    let beta1 = 1e-4 + (0.02 - 1e-4) / 999.0;
    assert!(close(alpha_bar(linear[0]), 1.0 - 1e-4, 1e-12));
    assert!(close(
        alpha_bar(linear[1]),
        (1.0 - 1e-4) * (1.0 - beta1),
        1e-12
    ));
}

#[test]
fn an_unknown_beta_schedule_is_refused_before_running() {
    let text = r#"(nodes: {
        "model": ExactGaussianModel(beta_schedule: "cosine_v3"),
        "show": Print(value: Link("model", "MODEL")),
    })"#;
    let registry = weft_nodes::builtin_registry();
    let Err(e) = weft_core::load(SourceFile::new("g.ron", text), &registry, &[]) else {
        panic!("an unknown schedule validated");
    };
    assert!(e.to_string().contains("squaredcos_cap_v2"), "{e}");
}
