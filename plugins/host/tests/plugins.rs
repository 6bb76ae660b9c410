//! Plugins end to end: the example plugins (Rust and C) in real graphs, and
//! every way a plugin can be broken, each refused with a clear error while
//! the host goes on.

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use weft_core::{Executor, RunReport, SourceFile, Value};
use weft_plugin_host::{PluginError, PluginHost};

mod support;
use support::*;

fn tensor(report: &RunReport, node: &str) -> Tensor {
    let outputs = report
        .output(node)
        .unwrap_or_else(|| panic!("`{node}` has no output; failures: {:?}", report.failed));
    match &outputs[0] {
        Value::Image(t) => t.clone(),
        Value::Latent(l) => l.samples.clone(),
        other => panic!("`{node}` gave {}", other.summary()),
    }
}

fn failure<'a>(report: &'a RunReport, node: &str) -> &'a str {
    &report
        .failed
        .iter()
        .find(|f| f.node == node)
        .unwrap_or_else(|| panic!("`{node}` did not fail: {report:?}"))
        .message
}

#[test]
fn c_plugin_nodes_join_the_registry_and_run_in_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let invert = c_plugin(
        "plugins/examples/c/invert.c",
        &[],
        &dir.path().join(library_name("invert")),
    );
    let (registry, host) = with_plugins(&[invert]);
    assert_eq!(host.plugins()[0].name, "invert-c");
    // The schema crossed the ABI intact: types, default, range.
    let schema = registry.get("InvertImage").unwrap().schema();
    assert_eq!(schema.inputs[0].ty, weft_core::ValueType::Image);
    assert!(matches!(schema.inputs[1].default, Some(weft_core::Literal::Float(d)) if d == 1.0));
    assert_eq!(
        (schema.inputs[1].min, schema.inputs[1].max),
        (Some(0.0), Some(1.0))
    );
    // ... and is checked like a built-in's: 1.5 is above the maximum.
    let text = format!(
        "(nodes: {{ {IMAGE_SOURCE} \"inverted\": InvertImage(image: Link(\"image\", \"IMAGE\"), amount: 1.5) }})"
    );
    let err = weft_core::load(SourceFile::new("g.ron", text), &registry, &[]).unwrap_err();
    assert!(err.to_string().contains("above the maximum 1"), "{err}");

    let text = format!(
        "(nodes: {{ {IMAGE_SOURCE} \"inverted\": InvertImage(image: Link(\"image\", \"IMAGE\"), amount: 0.25) }})"
    );
    let report = run(
        &Executor::new(1 << 26),
        &graph(&registry, &text),
        &["image", "inverted"],
    );
    let image = tensor(&report, "image");
    let inverted = tensor(&report, "inverted");
    let expected =
        ((image.affine(-1.0, 1.0).unwrap() * 0.25).unwrap() + (&image * 0.75).unwrap()).unwrap();
    assert_eq!(inverted.dims(), image.dims());
    assert!(max_abs_diff(&inverted, &expected) < 1e-6);
    assert!(
        max_abs_diff(&image, &inverted) > 0.05,
        "the image is not flat"
    );
}

/// Samples the MNIST flow model through the Restart plugin sampler.
fn mnist_graph(sampler: &str) -> String {
    let model = repo().join("assets/mnist/mnist_flow.safetensors");
    format!(
        r#"(nodes: {{
        "model": CheckpointLoader(ckpt_name: "{}"),
        "digits": ClassLabel(labels: "0,1,2,3,4,5,6,7,8,9", repeat: 2),
        "nothing": ClassLabel(labels: "none"),
        "guider": CFGGuider(model: Link("model", "MODEL"), positive: Link("digits", "CONDITIONING"),
            negative: Link("nothing", "CONDITIONING"), cfg: 4.0),
        {sampler}
        "sigmas": FlowMatchScheduler(steps: 8, shift: 1.0),
        "noise": RandomNoise(noise_seed: 11),
        "latent": EmptyLatent(width: 28, height: 28, channels: 1, batch_size: 20),
        "sample": SamplerCustomAdvanced(noise: Link("noise", "NOISE"), guider: Link("guider", "GUIDER"),
            sampler: Link("sampler", "SAMPLER"), sigmas: Link("sigmas", "SIGMAS"), latent_image: Link("latent", "LATENT")),
    }})"#,
        model.display()
    )
}

#[test]
fn restart_plugin_samples_the_mnist_model_through_the_host_denoiser() {
    let (registry, _host) = with_plugins(&[rust_plugin("weft-plugin-restart")]);
    let executor = Executor::new(1 << 28);

    // Without restarts, Restart is plain Heun: it must agree with the
    // built-in Heun sampler, step for step.
    let heun = tensor(
        &run(
            &executor,
            &graph(
                &registry,
                &mnist_graph(r#""sampler": KSamplerSelect(sampler_name: "heun"),"#),
            ),
            &["sample"],
        ),
        "sample",
    );
    let plain = tensor(
        &run(
            &executor,
            &graph(
                &registry,
                &mnist_graph(r#""sampler": SamplerRestart(restarts: 0),"#),
            ),
            &["sample"],
        ),
        "sample",
    );
    assert!(
        max_abs_diff(&heun, &plain) < 1e-4,
        "{}",
        max_abs_diff(&heun, &plain)
    );

    // With restarts the result changes, is reproducible, and still shows the digits asked for.
    let text = mnist_graph(
        r#""sampler": SamplerRestart(restarts: 2, restart_from: 0.75, restart_to: 0.375),"#,
    );
    let restarted = tensor(
        &run(&executor, &graph(&registry, &text), &["sample"]),
        "sample",
    );
    assert!(max_abs_diff(&restarted, &plain) > 1e-2);
    let again = tensor(
        &run(
            &Executor::new(1 << 28),
            &graph(&registry, &text),
            &["sample"],
        ),
        "sample",
    );
    assert_eq!(
        restarted.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        again.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        "the same seed gives the same bits"
    );
    let judge = weft_models::mnist::load_classifier(
        &repo().join("assets/mnist/mnist_classifier.safetensors"),
    )
    .unwrap();
    let images = weft_models::mnist::classifier::as_saved(&restarted).unwrap();
    let (_, predicted) = judge.classify(&images).unwrap();
    let right = predicted
        .iter()
        .enumerate()
        .filter(|(i, p)| **p == (*i / 2) as u32)
        .count();
    assert!(
        right >= 16,
        "the judge agrees on {right} of 20: {predicted:?}"
    );
}

/// The Restart sampler as built from the 1.0 SDK (weft efb7495, release,
/// stripped; see `plugins/host/tests/prebuilt/README.md`): a real 1.0
/// Rust plugin still loads under the 1.1 host and samples exactly as the
/// same plugin built today.
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn a_rust_plugin_built_with_the_1_0_sdk_samples_as_todays_build() {
    let old = repo().join("plugins/host/tests/prebuilt/libweft_plugin_restart_abi_1_0.so");
    let text = mnist_graph(
        r#""sampler": SamplerRestart(restarts: 1, restart_from: 0.75, restart_to: 0.375),"#,
    );
    let sample = |library: PathBuf| {
        let (registry, _host) = with_plugins(&[library]);
        tensor(
            &run(
                &Executor::new(1 << 28),
                &graph(&registry, &text),
                &["sample"],
            ),
            "sample",
        )
    };
    let then = sample(old);
    let now = sample(rust_plugin("weft-plugin-restart"));
    assert_eq!(
        then.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        now.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// A CFG setup on an exact model where guidance matters; `guider` names the rule.
fn cfg_graph(guider: &str, sampler: &str) -> String {
    format!(
        r#"(nodes: {{
        "model": ExactGaussianModel(means: "-2,2", stds: "0.5,0.5", weights: "1,1", parameterization: "flow"),
        "digit": ClassLabel(labels: "1"),
        "nothing": ClassLabel(labels: "none"),
        "pos": BasicGuider(model: Link("model", "MODEL"), conditioning: Link("digit", "CONDITIONING")),
        "neg": BasicGuider(model: Link("model", "MODEL"), conditioning: Link("nothing", "CONDITIONING")),
        "guider": {guider},
        "sampler": {sampler},
        "sigmas": FlowMatchScheduler(steps: 10, shift: 1.0),
        "noise": RandomNoise(noise_seed: 5),
        "latent": EmptyLatent(width: 6, height: 5, channels: 2, batch_size: 3),
        "sample": SamplerCustomAdvanced(noise: Link("noise", "NOISE"), guider: Link("guider", "GUIDER"),
            sampler: Link("sampler", "SAMPLER"), sigmas: Link("sigmas", "SIGMAS"), latent_image: Link("latent", "LATENT")),
    }})"#
    )
}

#[test]
fn apg_plugin_guider_drives_builtin_and_plugin_samplers() {
    let (registry, _host) = with_plugins(&[
        rust_plugin("weft-plugin-apg"),
        rust_plugin("weft-plugin-restart"),
    ]);
    let executor = Executor::new(1 << 26);
    let euler = r#"KSamplerSelect(sampler_name: "euler")"#;
    let sample = |guider: &str, sampler: &str| {
        tensor(
            &run(
                &executor,
                &graph(&registry, &cfg_graph(guider, sampler)),
                &["sample"],
            ),
            "sample",
        )
    };
    let cfg = sample(
        r#"CFGGuider(model: Link("model", "MODEL"), positive: Link("digit", "CONDITIONING"), negative: Link("nothing", "CONDITIONING"), cfg: 3.0)"#,
        euler,
    );
    let apg = |eta: f64| {
        format!(
            r#"APGGuider(positive: Link("pos", "GUIDER"), negative: Link("neg", "GUIDER"), cfg: 3.0, eta: {eta})"#
        )
    };
    // With the parallel component kept whole, APG is classic CFG.
    let apg_full = sample(&apg(1.0), euler);
    assert!(
        max_abs_diff(&cfg, &apg_full) < 1e-4,
        "{}",
        max_abs_diff(&cfg, &apg_full)
    );
    // Dropping it is a different rule, and gives a visibly different result.
    let apg_orthogonal = sample(&apg(0.0), euler);
    assert!(max_abs_diff(&cfg, &apg_orthogonal) > 1e-2);
    // A plugin sampler driving a plugin guider through the host: Restart
    // without restarts is Heun, as with a built-in guider.
    let heun = sample(&apg(0.0), r#"KSamplerSelect(sampler_name: "heun")"#);
    let restart = sample(&apg(0.0), "SamplerRestart(restarts: 0)");
    assert!(max_abs_diff(&heun, &restart) < 1e-4);
}

#[test]
fn broken_libraries_are_refused_by_name_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    c_plugin(
        "plugins/examples/c/invert.c",
        &[],
        &d.join(library_name("a_invert")),
    );
    c_plugin(
        "plugins/host/tests/c/misbehave.c",
        &["-DWEFT_TEST_ABI_MAJOR=99"],
        &d.join(library_name("b_future")),
    );
    c_plugin(
        "plugins/host/tests/c/misbehave.c",
        &["-DWEFT_TEST_NO_ENTRY"],
        &d.join(library_name("c_no_entry")),
    );
    std::fs::write(d.join(library_name("d_text")), "this is not a library\n").unwrap();
    c_plugin(
        "plugins/host/tests/c/misbehave.c",
        &["-DWEFT_TEST_BAD_TYPE"],
        &d.join(library_name("e_bad_type")),
    );
    std::fs::write(d.join("README.txt"), "ignored: not a library name\n").unwrap();

    let mut registry = weft_nodes::builtin_registry();
    let mut host = PluginHost::new();
    let errors = host.load_dirs(&[d.to_path_buf(), d.join("missing")], &mut registry);
    let message = |stem: &str| -> String {
        errors
            .iter()
            .find(|e| e.path.file_name().unwrap().to_string_lossy().contains(stem))
            .unwrap_or_else(|| panic!("no error for {stem}: {errors:?}"))
            .to_string()
    };
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(message("b_future").contains("built for plugin ABI 99."));
    assert!(message("b_future").contains("this weft speaks 1.x"));
    assert!(message("c_no_entry").contains("does not export `weft_plugin_entry`"));
    assert!(message("d_text").contains("not a loadable library"));
    assert!(message("missing").contains("cannot read the plugin directory"));
    assert!(
        message("e_bad_type").contains(
            "`DeletedCount` output `INT`: unknown type \"INTEGER\"; weft's types are INT, FLOAT"
        ),
        "{}",
        message("e_bad_type")
    );
    // The good plugin loaded regardless, and none of the refused ones left node types behind.
    assert_eq!(host.plugins().len(), 1);
    assert!(registry.get("InvertImage").is_some());
    assert!(registry.get("BadTensor").is_none());
}

#[test]
fn a_duplicate_node_type_refuses_the_second_plugin_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = c_plugin(
        "plugins/examples/c/invert.c",
        &[],
        &dir.path().join(library_name("one")),
    );
    let second = dir.path().join(library_name("two"));
    std::fs::copy(&first, &second).unwrap();
    let (mut registry, mut host) = with_plugins(std::slice::from_ref(&first));
    let Err(PluginError { path, message }) = host.load(&second, &mut registry) else {
        panic!("the duplicate loaded");
    };
    assert_eq!(path, second);
    assert!(
        message.contains("node type `InvertImage` is already provided by plugin `invert-c`")
            && message.contains(&first.display().to_string()),
        "{message}"
    );
    assert_eq!(host.plugins().len(), 1);
}

#[test]
fn malformed_output_tensors_fail_their_node_clearly_and_are_still_freed() {
    let dir = tempfile::tempdir().unwrap();
    let lib = c_plugin(
        "plugins/host/tests/c/misbehave.c",
        &[],
        &dir.path().join(library_name("misbehave")),
    );
    let (registry, _host) = with_plugins(&[lib]);
    let text = r#"(nodes: {
        "null_data": BadTensor(kind: "null_data"),
        "bad_dtype": BadTensor(kind: "bad_dtype"),
        "bad_strides": BadTensor(kind: "bad_strides"),
        "null_tensor": BadTensor(kind: "null_tensor"),
        "fine": IntConstant(value: 4),
    })"#;
    let executor = Executor::new(1 << 20);
    let report = run(
        &executor,
        &graph(&registry, text),
        &[
            "null_data",
            "bad_dtype",
            "bad_strides",
            "null_tensor",
            "fine",
        ],
    );
    for (node, expected) in [
        (
            "null_data",
            "the data pointer is null for shape [1, 1, 2, 2]",
        ),
        (
            "bad_dtype",
            "dtype (code 2, 16 bits, 1 lanes) is not one of",
        ),
        ("bad_strides", "negative stride"),
        ("null_tensor", "the tensor pointer is null"),
    ] {
        let message = failure(&report, node);
        assert!(
            message.starts_with("output `IMAGE`: ") && message.contains(expected),
            "{node}: {message}"
        );
    }
    assert!(report.output("fine").is_some(), "other branches finish");
    // Whoever allocates frees: the host called the plugin's deleter on each rejected tensor.
    let report = run(
        &executor,
        &graph(&registry, r#"(nodes: { "count": DeletedCount() })"#),
        &["count"],
    );
    assert!(matches!(report.output("count").unwrap()[0], Value::Int(3)));
}

#[test]
fn panics_in_plugin_code_become_node_errors_and_the_host_goes_on() {
    let (registry, _host) = with_plugins(&[rust_plugin("weft-plugin-test-panicking")]);
    let executor = Executor::new(1 << 24);
    let report = run(
        &executor,
        &graph(
            &registry,
            r#"(nodes: { "boom": Panic(value: 7), "fine": IntConstant(value: 2) })"#,
        ),
        &["boom", "fine"],
    );
    assert_eq!(
        failure(&report, "boom"),
        "the plugin panicked: value 7 is not welcome here"
    );
    assert!(report.output("fine").is_some());
    // A panic deep inside sampling (a built-in sampler calling the plugin's guider).
    let text = cfg_graph(
        "PanickingGuider()",
        r#"KSamplerSelect(sampler_name: "euler")"#,
    );
    let report = run(&executor, &graph(&registry, &text), &["sample"]);
    let message = failure(&report, "sample");
    assert!(
        message.contains("the guider blew up at sigma 1"),
        "{message}"
    );
}

#[test]
fn reloading_a_rebuilt_plugin_changes_its_output_and_reruns_only_its_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(library_name("invert"));
    c_plugin("plugins/examples/c/invert.c", &[], &path);
    let (mut registry, mut host) = with_plugins(std::slice::from_ref(&path));
    let text = format!(
        "(nodes: {{ {IMAGE_SOURCE} \"inverted\": InvertImage(image: Link(\"image\", \"IMAGE\")), \"other\": IntConstant(value: 1) }})"
    );
    let executor = Executor::new(1 << 26);
    let targets = ["image", "inverted", "other"];
    let first = run(&executor, &graph(&registry, &text), &targets);
    assert!(first.executed.contains(&"inverted".to_string()));
    // An unchanged plugin is cached like a built-in.
    let second = run(&executor, &graph(&registry, &text), &targets);
    assert!(second.executed.is_empty(), "{:?}", second.executed);

    // Rebuild in place (the library inverts around 2 now) and reload.
    c_plugin("plugins/examples/c/invert.c", &["-DINVERT_ONE=2.0f"], &path);
    host.reload(&path, &mut registry).unwrap();
    let third = run(&executor, &graph(&registry, &text), &targets);
    assert_eq!(third.executed, vec!["inverted".to_string()]);
    let shift = (tensor(&third, "inverted") - tensor(&first, "inverted")).unwrap();
    let values = shift
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!(values.iter().all(|v| (v - 1.0).abs() < 1e-6), "{values:?}");

    // A broken rebuild keeps the working version.
    std::fs::write(&path, "half-written").unwrap();
    assert!(host.reload(&path, &mut registry).is_err());
    let fourth = run(&executor, &graph(&registry, &text), &targets);
    assert!(fourth.executed.is_empty() && fourth.failed.is_empty());
}

#[test]
fn example_plugin_graphs_pass_check_with_their_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let invert = c_plugin(
        "plugins/examples/c/invert.c",
        &[],
        &dir.path().join(library_name("invert")),
    );
    let (registry, _host) = with_plugins(&[
        invert,
        rust_plugin("weft-plugin-restart"),
        rust_plugin("weft-plugin-apg"),
    ]);
    let model = format!(
        "model.ckpt_name={}",
        repo().join("assets/mnist/mnist_flow.safetensors").display()
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("plugins/examples/graphs")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        weft_core::load(
            SourceFile::new(&name, text),
            &registry,
            std::slice::from_ref(&model),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        checked += 1;
    }
    assert_eq!(checked, 2);
}
