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
    // Zero terminal SNR with ComfyUI's last ᾱ = 4.897e-8 (not diffusers'
    // 2⁻²⁴ floor, σ ≈ 4096): σ_max = √((1 − ᾱ)/ᾱ).
    let last = 4.8973451890853435e-08f64;
    assert!(
        (after.sigma_max() - ((1.0 - last) / last).sqrt()).abs() < 1e-6,
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

/// KSampler and KSamplerAdvanced on the exact model, from one noise seed.
const ADVANCED: &str = r#"(nodes: {
    "model": ExactGaussianModel(parameterization: "epsilon"),
    "positive": ClassLabel(labels: "0"),
    "negative": ClassLabel(labels: "none"),
    "latent": EmptyLatent(width: 8, height: 8, channels: 1, batch_size: 2),
    "full": KSampler(model: Link("model", "MODEL"), seed: 3, steps: 10, cfg: 2.0,
        sampler_name: "euler", scheduler: "karras",
        positive: Link("positive", "CONDITIONING"), negative: Link("negative", "CONDITIONING"),
        latent_image: Link("latent", "LATENT")),
    "base": KSamplerAdvanced(model: Link("model", "MODEL"), add_noise: "enable", noise_seed: 3,
        steps: 10, cfg: 2.0, sampler_name: "euler", scheduler: "karras",
        positive: Link("positive", "CONDITIONING"), negative: Link("negative", "CONDITIONING"),
        latent_image: Link("latent", "LATENT"),
        start_at_step: 0, end_at_step: 6, return_with_leftover_noise: "enable"),
    "refiner": KSamplerAdvanced(model: Link("model", "MODEL"), add_noise: "disable", noise_seed: 3,
        steps: 10, cfg: 2.0, sampler_name: "euler", scheduler: "karras",
        positive: Link("positive", "CONDITIONING"), negative: Link("negative", "CONDITIONING"),
        latent_image: Link("base", "LATENT"),
        start_at_step: 6, end_at_step: 10000, return_with_leftover_noise: "disable"),
    "show": Print(value: Link("refiner", "LATENT")),
})"#;

fn run_targets(graph: &str, overrides: &[&str], targets: &[&str]) -> RunReport {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let graph = weft_core::load(SourceFile::new("g.ron", graph), &registry(), &overrides)
        .unwrap_or_else(|d| panic!("{d}"));
    let opts = RunOptions {
        workers: 1,
        targets: Some(targets.iter().map(|t| t.to_string()).collect()),
        ..RunOptions::default()
    };
    let report = Executor::new(1 << 30)
        .run(
            &graph,
            &opts,
            &Recorder::default().sink(),
            &CancelToken::new(),
        )
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report
}

/// A node's LATENT as f32 bit patterns, for bit-for-bit comparisons.
fn latent_bits(report: &RunReport, id: &str) -> Vec<u32> {
    match &report
        .output(id)
        .unwrap_or_else(|| panic!("no output {id}"))[0]
    {
        Value::Latent(l) => l
            .samples
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        other => panic!("{id}: not a latent: {}", other.summary()),
    }
}

#[test]
fn ksampler_advanced_hand_off_equals_one_run_bit_for_bit() {
    let report = run_targets(ADVANCED, &[], &["full", "base", "refiner"]);
    let full = latent_bits(&report, "full");
    assert_eq!(latent_bits(&report, "refiner"), full);
    // The whole range in one KSamplerAdvanced is KSampler itself.
    let whole = run_targets(ADVANCED, &["base.end_at_step=10000"], &["base"]);
    assert_eq!(latent_bits(&whole, "base"), full);
    let whole = run_targets(ADVANCED, &["base.end_at_step=10"], &["base"]);
    assert_eq!(latent_bits(&whole, "base"), full);
    // Without leftover noise the base run ends at σ = 0, so the refiner
    // starts from a clean sample: a different result.
    let clean = run_targets(
        ADVANCED,
        &["base.return_with_leftover_noise=\"disable\""],
        &["refiner"],
    );
    assert_ne!(latent_bits(&clean, "refiner"), full);
    // Re-noising at the hand-off also breaks it.
    let renoised = run_targets(ADVANCED, &["refiner.add_noise=\"enable\""], &["refiner"]);
    assert_ne!(latent_bits(&renoised, "refiner"), full);
}

#[test]
fn ksampler_advanced_without_add_noise_starts_from_the_latent_as_it_is() {
    let at = |overrides: &[&str]| {
        let mut o = vec!["base.add_noise=\"disable\"", "base.end_at_step=10000"];
        o.extend(overrides);
        latent_bits(&run_targets(ADVANCED, &o, &["base"]), "base")
    };
    // euler is deterministic: with no initial noise the seed plays no part.
    let a = at(&["base.noise_seed=1"]);
    assert_eq!(a, at(&["base.noise_seed=2"]));
    let noised = |seed: &str| {
        let o = ["base.end_at_step=10000", seed];
        latent_bits(&run_targets(ADVANCED, &o, &["base"]), "base")
    };
    assert_ne!(noised("base.noise_seed=1"), noised("base.noise_seed=2"));
    assert_ne!(a, noised("base.noise_seed=1"));
    // The same run composed from parts with DisableNoise.
    let parts = r#"(nodes: {
        "model": ExactGaussianModel(parameterization: "epsilon"),
        "positive": ClassLabel(labels: "0"),
        "negative": ClassLabel(labels: "none"),
        "latent": EmptyLatent(width: 8, height: 8, channels: 1, batch_size: 2),
        "guider": CFGGuider(model: Link("model", "MODEL"), positive: Link("positive", "CONDITIONING"),
            negative: Link("negative", "CONDITIONING"), cfg: 2.0, convention: "interpolate"),
        "sigmas": BasicScheduler(model: Link("model", "MODEL"), scheduler: "karras", steps: 10),
        "sample": SamplerCustomAdvanced(noise: Link("none", "NOISE"), guider: Link("guider", "GUIDER"),
            sampler: Link("sampler", "SAMPLER"), sigmas: Link("sigmas", "SIGMAS"),
            latent_image: Link("latent", "LATENT")),
        "none": DisableNoise(),
        "sampler": KSamplerSelect(sampler_name: "euler"),
        "show": Print(value: Link("sample", "output")),
    })"#;
    assert_eq!(
        latent_bits(&run_targets(parts, &[], &["sample"]), "sample"),
        a
    );
    // Stochastic steps still draw from noise_seed, as ComfyUI's do.
    let ancestral = |seed: &str| at(&["base.sampler_name=\"euler_ancestral\"", seed]);
    assert_eq!(
        ancestral("base.noise_seed=1"),
        ancestral("base.noise_seed=1")
    );
    assert_ne!(
        ancestral("base.noise_seed=1"),
        ancestral("base.noise_seed=2")
    );
}

#[test]
fn ksampler_advanced_with_no_step_in_range_returns_the_latent_unchanged() {
    let input = latent_bits(&run_targets(ADVANCED, &[], &["latent"]), "latent");
    for (start, end) in [("6", "6"), ("7", "3"), ("10", "10000"), ("0", "0")] {
        let o = [
            format!("base.start_at_step={start}"),
            format!("base.end_at_step={end}"),
        ];
        let o: Vec<&str> = o.iter().map(|s| s.as_str()).collect();
        let report = run_targets(ADVANCED, &o, &["base"]);
        assert_eq!(latent_bits(&report, "base"), input, "{start}..{end}");
    }
    // One step in range does run.
    let report = run_targets(
        ADVANCED,
        &["base.start_at_step=9", "base.end_at_step=10000"],
        &["base"],
    );
    assert_ne!(latent_bits(&report, "base"), input);
}

#[test]
fn ksampler_advanced_inputs_are_comfyuis() {
    let registry = registry();
    let schema = registry.get("KSamplerAdvanced").unwrap().schema().clone();
    let names: Vec<&str> = schema.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model",
            "add_noise",
            "noise_seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "start_at_step",
            "end_at_step",
            "return_with_leftover_noise"
        ]
    );
    let err = weft_core::load(
        SourceFile::new("g.ron", ADVANCED),
        &registry,
        &["base.add_noise=\"maybe\"".into()],
    )
    .unwrap_err();
    assert_eq!(err.items[0].node.as_deref(), Some("base"), "{err}");
    assert_eq!(err.items[0].input.as_deref(), Some("add_noise"));
    let err = weft_core::load(
        SourceFile::new("g.ron", ADVANCED),
        &registry,
        &["base.end_at_step=10001".into()],
    )
    .unwrap_err();
    assert_eq!(err.items[0].input.as_deref(), Some("end_at_step"));
}

/// SIGMAS of a node as f64.
fn sigmas_of(report: &RunReport, id: &str) -> Vec<f64> {
    match &report
        .output(id)
        .unwrap_or_else(|| panic!("no output {id}"))[0]
    {
        Value::Sigmas(t) => t.to_dtype(DType::F64).unwrap().to_vec1().unwrap(),
        other => panic!("{id}: not SIGMAS: {}", other.summary()),
    }
}

#[test]
fn sd_turbo_scheduler_gives_the_sd_sigmas_at_the_distilled_timesteps() {
    let graph = r#"(nodes: {
        "model": ExactGaussianModel(parameterization: "epsilon"),
        "turbo": SDTurboScheduler(model: Link("model", "MODEL"), steps: 4),
        "show": Print(value: Link("turbo", "SIGMAS")),
    })"#;
    // SD's ᾱ_t by hand: √β evenly spaced from √0.00085 to √0.012.
    let (a, b) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut acc = 1.0;
    let sigma: Vec<f64> = (0..1000)
        .map(|i| {
            let r = a + (b - a) * i as f64 / 999.0;
            acc *= 1.0 - r * r;
            ((1.0 - acc) / acc).sqrt()
        })
        .collect();
    for (overrides, timesteps) in [
        (vec![], vec![999, 899, 799, 699]),
        (vec!["turbo.steps=1"], vec![999]),
        (vec!["turbo.denoise=0.5"], vec![499, 399, 299, 199]),
        (vec!["turbo.denoise=0.2", "turbo.steps=10"], vec![199, 99]),
    ] {
        let got = sigmas_of(&run_targets(graph, &overrides, &["turbo"]), "turbo");
        let mut want: Vec<f64> = timesteps.iter().map(|t| sigma[*t]).collect();
        want.push(0.0);
        assert_eq!(got.len(), want.len(), "{overrides:?}: {got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-9 * w,
                "{overrides:?}: {got:?} vs {want:?}"
            );
        }
    }
    let zero = run_targets(graph, &["turbo.denoise=0"], &["turbo"]);
    assert_eq!(sigmas_of(&zero, "turbo"), [0.0]);
    let err = weft_core::load(
        SourceFile::new("g.ron", graph),
        &registry(),
        &["turbo.steps=11".into()],
    )
    .unwrap_err();
    assert_eq!(err.items[0].input.as_deref(), Some("steps"));
}

/// The models of a `ModelSamplingDiscrete` chain on the exact ε model.
const PATCHES: &str = r#"(nodes: {
    "model": ExactGaussianModel(parameterization: "epsilon"),
    "patched": ModelSamplingDiscrete(model: Link("model", "MODEL"), sampling: "v_prediction"),
    "again": ModelSamplingDiscrete(model: Link("patched", "MODEL"), sampling: "eps"),
    "show": Print(value: Link("again", "MODEL")),
})"#;

fn patched_models(
    overrides: &[&str],
) -> (
    weft_sampling::Model,
    weft_sampling::Model,
    weft_sampling::Model,
) {
    let report = run_targets(PATCHES, overrides, &["model", "patched", "again"]);
    let model = |id: &str| {
        report.output(id).unwrap()[0]
            .downcast::<weft_sampling::Model>()
            .unwrap()
            .clone()
    };
    (model("model"), model("patched"), model("again"))
}

fn values(t: &candle_core::Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// D(x, out, σ) of one parameterisation, by hand.
type Formula = fn(f64, f64, f64) -> f64;

#[test]
fn model_sampling_discrete_reads_the_same_network_output_as_its_prediction() {
    use candle_core::{Device, Tensor};
    let x = Tensor::new(&[[[[0.7f32, -1.3], [2.4, 0.1]]]], &Device::Cpu).unwrap();
    let cond = weft_sampling::Conditioning::labels(vec![Some(1)]);
    let cases: [(&str, Formula); 3] = [
        // ComfyUI's V_PREDICTION: x·1/(σ²+1) − out·σ/√(σ²+1).
        ("v_prediction", |x, out, s| {
            x / (s * s + 1.0) - out * s / (s * s + 1.0).sqrt()
        }),
        ("eps", |x, out, s| x - out * s),
        ("x0", |_, out, _| out),
    ];
    for (name, formula) in cases {
        let set = format!("patched.sampling=\"{name}\"");
        let (base, patched, _) = patched_models(&[set.as_str()]);
        for sigma in [0.3, 2.0, 9.0] {
            // The network is untouched: same timestep, same raw output.
            let raw = base.predict(&x, sigma, &cond).unwrap();
            assert_eq!(
                values(&patched.predict(&x, sigma, &cond).unwrap()),
                values(&raw)
            );
            let d = patched.sampling.denoised(sigma, &x, &raw).unwrap();
            let eps_d = values(&base.sampling.denoised(sigma, &x, &raw).unwrap());
            for ((got, x), out) in values(&d).iter().zip(values(&x)).zip(values(&raw)) {
                let want = formula(x, out, sigma);
                assert!(
                    (got - want).abs() < 1e-5,
                    "{name} σ={sigma}: {got} vs {want}"
                );
            }
            if name != "eps" {
                assert!(
                    values(&d)
                        .iter()
                        .zip(&eps_d)
                        .all(|(a, b)| (a - b).abs() > 1e-3),
                    "{name} σ={sigma} reads the output as ε"
                );
            }
        }
    }
}

#[test]
fn model_sampling_discrete_patches_start_from_the_models_own_schedule() {
    use weft_sampling::{NoiseLevels, Prediction};
    let table = |m: &weft_sampling::Model| match &m.sampling.levels {
        NoiseLevels::Discrete { sigmas } => sigmas.clone(),
        other => panic!("{other:?}"),
    };
    // lcm: 50 of the 1000 levels, at timesteps 19, 39, …, 999.
    let (base, lcm, again) = patched_models(&["patched.sampling=\"lcm\""]);
    let full = table(&base);
    let distilled = table(&lcm);
    assert_eq!(lcm.sampling.prediction, Prediction::Lcm);
    assert_eq!(distilled.len(), 50);
    for (i, s) in distilled.iter().enumerate() {
        assert_eq!(*s, full[20 * i + 19], "level {i}");
        assert_eq!(lcm.sampling.timestep(*s), (20 * i + 19) as f64);
    }
    // A second patch replaces the first: back to the full table, plain ε.
    assert_eq!(table(&again), full);
    assert_eq!(again.sampling.prediction, Prediction::Epsilon);
    assert_eq!(again.sampling.distilled_stride, None);
    // zsnr twice is zsnr once (ComfyUI rebuilds from the model's config).
    let (_, once, twice) = patched_models(&["patched.zsnr=true", "again.zsnr=true"]);
    assert_eq!(table(&once), table(&twice));
    assert!((once.sampling.sigma_max() - 4518.7637).abs() < 1e-3);
    // lcm with zsnr: the rescaled 1000 levels, then every twentieth.
    let (_, _, lcm_zsnr) = patched_models(&["again.sampling=\"lcm\"", "again.zsnr=true"]);
    let rescaled = table(&once);
    let picked = table(&lcm_zsnr);
    assert_eq!(picked.len(), 50);
    assert!(picked
        .iter()
        .enumerate()
        .all(|(i, s)| *s == rescaled[20 * i + 19]));
}

#[test]
fn lcm_sampling_on_a_patched_model_reaches_the_class() {
    let graph = r#"(nodes: {
        "model": ExactGaussianModel(parameterization: "epsilon"),
        "lcm": ModelSamplingDiscrete(model: Link("model", "MODEL"), sampling: "lcm"),
        "positive": ClassLabel(labels: "1"),
        "negative": ClassLabel(labels: "none"),
        "latent": EmptyLatent(width: 28, height: 28, channels: 1, batch_size: 4),
        "sample": KSampler(model: Link("lcm", "MODEL"), seed: 5, steps: 8, cfg: 1.0,
            sampler_name: "lcm", scheduler: "sgm_uniform",
            positive: Link("positive", "CONDITIONING"), negative: Link("negative", "CONDITIONING"),
            latent_image: Link("latent", "LATENT")),
        "show": Print(value: Link("sample", "LATENT")),
    })"#;
    let report = run_targets(graph, &[], &["sample"]);
    let (mean, std) = mean_std(&samples(&report));
    assert!((mean - 2.0).abs() < 0.1, "mean {mean}");
    assert!(std > 0.2 && std < 0.6, "std {std}");
}
