//! Sampling composed from graph files: every sampler with every model
//! parameterisation, determinism, and clear errors that name the node.

use candle_core::DType;
use weft_core::{CancelToken, Executor, RunOptions, RunReport, SourceFile, Value};
use weft_tests::{registry, Recorder};

const GRAPH: &str = include_str!("../graphs/exact_gaussian_cfg.ron");

/// Runs `graph` with `overrides`, computing only the `sample` node.
fn run_graph(graph: &str, overrides: &[&str], workers: usize) -> RunReport {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let graph = weft_core::load(SourceFile::new("g.ron", graph), &registry(), &overrides)
        .unwrap_or_else(|d| panic!("{d}"));
    let opts = RunOptions {
        workers,
        targets: Some(vec!["sample".into()]),
        ..RunOptions::default()
    };
    Executor::new(1 << 30)
        .run(
            &graph,
            &opts,
            &Recorder::default().sink(),
            &CancelToken::new(),
        )
        .unwrap()
}

fn run(overrides: &[&str], workers: usize) -> RunReport {
    run_graph(GRAPH, overrides, workers)
}

fn samples(report: &RunReport) -> Vec<f32> {
    let outputs = report
        .output("sample")
        .unwrap_or_else(|| panic!("no output: {:?}", report.failed));
    match &outputs[0] {
        Value::Latent(l) => l
            .samples
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(),
        other => panic!("not a latent: {}", other.summary()),
    }
}

fn mean_std(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn every_sampler_with_every_parameterisation_reaches_the_labelled_class() {
    let names = weft_sampling::sampler_names();
    assert!(names.len() >= 15, "{names:?}");
    for parameterization in ["epsilon", "v_prediction", "sample", "flow"] {
        let (scheduler, steps): (&str, &str) = if parameterization == "flow" {
            ("FlowMatchScheduler", "30")
        } else {
            ("BasicScheduler", "30")
        };
        for name in &names {
            let sampler = format!("sampler={name}");
            let param = format!("model.parameterization=\"{parameterization}\"");
            // diffusers' FlowMatch schedule ends with a jump from σ ≈ 0.03 to
            // 0.001, ten times the previous step in λ; multistep SDE solvers
            // extrapolate across it and need more steps (as in k-diffusion).
            let multistep_sde = name.starts_with("dpmpp_2m_sde") || *name == "dpmpp_3m_sde";
            let steps = if parameterization == "flow" && multistep_sde {
                "100"
            } else {
                steps
            };
            let steps = format!("steps={steps}");
            let mut overrides = vec!["cfg=1", sampler.as_str(), param.as_str(), steps.as_str()];
            let graph_text;
            if scheduler == "BasicScheduler" {
                // Diffusion models take their σ range from the model.
                graph_text = GRAPH.replace(
                    "\"sigmas\": FlowMatchScheduler(steps: 20, shift: 1.0)",
                    "\"sigmas\": BasicScheduler(model: Link(\"model\", \"MODEL\"), scheduler: \"karras\", steps: 20)",
                );
                let report = run_graph(&graph_text, &overrides, 1);
                check(&report, name, parameterization);
            } else {
                overrides.push("seed=5");
                check(&run(&overrides, 1), name, parameterization);
            }
        }
    }
}

fn check(report: &RunReport, sampler: &str, parameterization: &str) {
    assert!(
        report.failed.is_empty(),
        "{sampler}/{parameterization}: {:?}",
        report.failed
    );
    let (mean, std) = mean_std(&samples(report));
    // 3,136 samples of N(2, 0.5²): the mean's standard error is 0.009;
    // the tolerance also covers 20–30 steps of discretisation error.
    assert!(
        (mean - 2.0).abs() < 0.08,
        "{sampler}/{parameterization}: mean {mean}"
    );
    if sampler == "lcm" {
        // LCM re-noises the denoiser's estimate at every step, which is a
        // sampler only for consistency models; with an ordinary (posterior
        // mean) denoiser it is under-dispersed by design.
        assert!(
            std < 0.5 && std > 0.2,
            "{sampler}/{parameterization}: std {std}"
        );
    } else {
        assert!(
            (std - 0.5).abs() < 0.08,
            "{sampler}/{parameterization}: std {std}"
        );
    }
}

#[test]
fn stronger_guidance_moves_past_the_class_and_narrows() {
    let (m1, s1) = mean_std(&samples(&run(&["cfg=1"], 1)));
    let (m3, s3) = mean_std(&samples(&run(&["cfg=3"], 1)));
    assert!(m3 > m1 + 0.2, "{m3} vs {m1}");
    assert!(s3 < s1 - 0.1, "{s3} vs {s1}");
}

#[test]
fn same_seed_is_bit_identical_across_runs_and_worker_counts() {
    for sampler in [
        "sampler=euler_ancestral",
        "sampler=dpmpp_2m_sde",
        "sampler=flow_heun",
    ] {
        let a = samples(&run(&[sampler], 1));
        let b = samples(&run(&[sampler], 2));
        let c = samples(&run(&[sampler], 2));
        assert_eq!(a, b, "{sampler}");
        assert_eq!(b, c, "{sampler}");
        let other = samples(&run(&[sampler, "seed=43"], 1));
        assert_ne!(
            a, other,
            "{sampler}: a different seed must change the result"
        );
    }
}

fn failure(overrides: &[&str], graph: &str) -> String {
    let report = run_graph(graph, overrides, 1);
    let f = report
        .failed
        .first()
        .unwrap_or_else(|| panic!("expected a failure"));
    format!("{} ({}): {}", f.node, f.type_name, f.message)
}

#[test]
fn zero_steps_and_nan_guidance_are_rejected_before_running() {
    let err = weft_core::load(
        SourceFile::new("g.ron", GRAPH),
        &registry(),
        &["steps=0".into()],
    )
    .unwrap_err();
    assert_eq!(err.items[0].node.as_deref(), Some("sigmas"));
    assert_eq!(err.items[0].input.as_deref(), Some("steps"));
    assert!(
        err.items[0].message.contains("below the minimum 1"),
        "{}",
        err.items[0].message
    );
    let err = weft_core::load(
        SourceFile::new("g.ron", GRAPH),
        &registry(),
        &["cfg=NaN".into()],
    )
    .unwrap_err();
    assert_eq!(err.items[0].node.as_deref(), Some("guider"));
    assert!(
        err.items[0].message.contains("NaN"),
        "{}",
        err.items[0].message
    );
}

#[test]
fn sigmas_that_do_not_decrease_are_a_node_error() {
    let flipped = GRAPH
        .replace(
            "\"show\":",
            "\"flip\": FlipSigmas(sigmas: Link(\"sigmas\", \"SIGMAS\")),\n        \"show\":",
        )
        .replace(
            "sigmas: Link(\"sigmas\", \"SIGMAS\"),\n            latent_image",
            "sigmas: Link(\"flip\", \"SIGMAS\"),\n            latent_image",
        );
    let message = failure(&[], &flipped);
    assert!(
        message.starts_with(
            "sample (SamplerCustomAdvanced): input `sigmas`: sigmas must not increase"
        ),
        "{message}"
    );
}

#[test]
fn a_latent_that_does_not_fit_the_model_is_a_node_error() {
    let message = failure(&["latent.space=\"sd15\""], GRAPH);
    assert!(message.contains("sample (SamplerCustomAdvanced): input `latent_image`: the latent is in space `sd15`, the model works in `pixels`"), "{message}");
    let message = failure(&["model.channels=4"], GRAPH);
    assert!(
        message.contains("the latent has 1 channels, the model expects 4 (shape [4, 1, 28, 28])"),
        "{message}"
    );
}

#[test]
fn model_sampling_discrete_patches_prediction_and_zero_snr() {
    let text = r#"(nodes: {
        "model": ExactGaussianModel(parameterization: "epsilon"),
        "patched": ModelSamplingDiscrete(model: Link("model", "MODEL"), sampling: "v_prediction", zsnr: true),
        "show": Print(value: Link("patched", "MODEL")),
    })"#;
    let g = weft_core::load(SourceFile::new("g.ron", text), &registry(), &[]).unwrap();
    let opts = RunOptions {
        workers: 1,
        targets: Some(vec!["model".into(), "patched".into()]),
        ..RunOptions::default()
    };
    let report = Executor::new(1 << 30)
        .run(&g, &opts, &Recorder::default().sink(), &CancelToken::new())
        .unwrap();
    let model = |id: &str| {
        report.output(id).unwrap()[0]
            .downcast::<weft_sampling::Model>()
            .unwrap()
            .sampling
            .clone()
    };
    let (before, after) = (model("model"), model("patched"));
    assert_eq!(after.prediction, weft_sampling::Prediction::V);
    assert!(
        (before.sigma_max() - 14.6146).abs() < 1e-3,
        "{}",
        before.sigma_max()
    );
    // Zero terminal SNR with diffusers' 2^-24 floor: σ_max = sqrt(2^24 − 1).
    assert!(
        (after.sigma_max() - (16_777_215f64).sqrt()).abs() < 1e-6,
        "{}",
        after.sigma_max()
    );
    assert!(
        (after.sigma_min() - before.sigma_min()).abs() < 1e-9,
        "the first ᾱ is kept"
    );
}

#[test]
fn sampling_is_interrupted_between_steps() {
    let graph = weft_core::load(
        SourceFile::new("g.ron", GRAPH),
        &registry(),
        &["steps=10000".into()],
    )
    .unwrap();
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        trigger.cancel();
    });
    let rec = Recorder::default();
    let t = std::time::Instant::now();
    let report = Executor::new(1 << 30)
        .run(&graph, &RunOptions::default(), &rec.sink(), &cancel)
        .unwrap();
    assert!(report.interrupted);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let progress = rec
        .take()
        .iter()
        .filter(|e| matches!(e, weft_core::Event::Progress { node, .. } if node == "sample"))
        .count();
    assert!(
        progress > 0 && progress < 10000,
        "stopped part-way: {progress} steps"
    );
}

#[test]
fn label_count_must_match_the_batch() {
    let message = failure(&["digit.labels=\"0,1\""], GRAPH);
    assert!(
        message.contains("the conditioning has 2 labels for a batch of 4"),
        "{message}"
    );
    // One label per item, repeated per row, is fine.
    let report = run(&["digit.labels=\"1,1\"", "digit.repeat=2", "cfg=1"], 1);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
}
