//! Plugin ABI 1.1: CONDITIONING views and MODEL patches, from Rust and C
//! plugins, each checked against weft's built-in nodes or a reference
//! computed here; and plugins built against the 1.0 header still run.

mod support;

use std::sync::Arc;

use candle_core::{Device, Tensor};
use weft_core::{Executor, RunReport, Value};
use weft_sampling::attention_hook::{AttentionHook, HookedNetwork};
use weft_sampling::{Conditioning, Model};

use support::*;

fn checkpoint() -> String {
    repo()
        .join("models/tests/fixtures/sd/tiny_sd15")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// Two prompts, combined (two entries) and concatenated (twice the tokens).
fn text_graph(extra: &str) -> String {
    format!(
        r#"(nodes: {{
        "ckpt": CheckpointLoaderSimple(ckpt_name: "{}"),
        "a": CLIPTextEncode(clip: Link("ckpt", "CLIP"), text: "a red fox"),
        "b": CLIPTextEncode(clip: Link("ckpt", "CLIP"), text: "a blue bird in the sky"),
        "ab": ConditioningCombine(conditioning_1: Link("a", "CONDITIONING"), conditioning_2: Link("b", "CONDITIONING")),
        "long": ConditioningConcat(conditioning_to: Link("b", "CONDITIONING"), conditioning_from: Link("a", "CONDITIONING")),
        {extra}
    }})"#,
        checkpoint()
    )
}

fn cond(report: &RunReport, node: &str) -> Conditioning {
    let outputs = report
        .output(node)
        .unwrap_or_else(|| panic!("`{node}` has no output; failures: {:?}", report.failed));
    outputs[0].downcast::<Conditioning>().unwrap().clone()
}

fn model(report: &RunReport, node: &str) -> Model {
    let outputs = report
        .output(node)
        .unwrap_or_else(|| panic!("`{node}` has no output; failures: {:?}", report.failed));
    match &outputs[0] {
        v @ Value::Object(..) => v.downcast::<Model>().unwrap().clone(),
        other => panic!("`{node}` gave {}", other.summary()),
    }
}

fn assert_same_tensors(a: &Option<Tensor>, b: &Option<Tensor>, what: &str) {
    match (a, b) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            assert_eq!(a.dims(), b.dims(), "{what}");
            assert!(max_abs_diff(a, b) < 1e-6, "{what}: {}", max_abs_diff(a, b));
        }
        _ => panic!("{what}: one is missing"),
    }
}

#[test]
fn a_rust_conditioning_average_matches_the_builtin() {
    let (registry, _host) = with_plugins(&[rust_plugin("weft-plugin-conditioning")]);
    let graph = graph(
        &registry,
        &text_graph(
            r#"
        "builtin": ConditioningAverage(conditioning_to: Link("ab", "CONDITIONING"), conditioning_from: Link("long", "CONDITIONING"), conditioning_to_strength: 0.3),
        "plugin": ExampleConditioningAverage(conditioning_to: Link("ab", "CONDITIONING"), conditioning_from: Link("long", "CONDITIONING"), conditioning_to_strength: 0.3),
        "builtin_pad": ConditioningAverage(conditioning_to: Link("long", "CONDITIONING"), conditioning_from: Link("a", "CONDITIONING"), conditioning_to_strength: 0.6),
        "plugin_pad": ExampleConditioningAverage(conditioning_to: Link("long", "CONDITIONING"), conditioning_from: Link("a", "CONDITIONING"), conditioning_to_strength: 0.6),"#,
        ),
    );
    let report = run(
        &Executor::new(1 << 30),
        &graph,
        &["builtin", "plugin", "builtin_pad", "plugin_pad", "a"],
    );
    for (builtin, plugin) in [("builtin", "plugin"), ("builtin_pad", "plugin_pad")] {
        let (want, got) = (
            cond(&report, builtin).entries(),
            cond(&report, plugin).entries(),
        );
        assert_eq!(want.len(), got.len(), "{plugin}: entries");
        for (w, g) in want.iter().zip(&got) {
            assert_same_tensors(&w.context, &g.context, plugin);
            assert_same_tensors(&w.pooled, &g.pooled, plugin);
        }
    }
    // It really blended: the result is neither input.
    let a = cond(&report, "a");
    let out = &cond(&report, "plugin").entries()[0];
    assert!(max_abs_diff(a.context.as_ref().unwrap(), out.context.as_ref().unwrap()) > 1e-3);
}

#[test]
fn a_rust_timestep_range_node_sets_every_entry_and_mutates_nothing() {
    let (registry, _host) = with_plugins(&[rust_plugin("weft-plugin-conditioning")]);
    let graph = graph(
        &registry,
        &text_graph(
            r#"
        "builtin": ConditioningSetTimestepRange(conditioning: Link("ab", "CONDITIONING"), start: 0.2, end: 0.7),
        "plugin": ExampleConditioningTimestepRange(conditioning: Link("ab", "CONDITIONING"), start: 0.2, end: 0.7),
        "again": ExampleConditioningTimestepRange(conditioning: Link("plugin", "CONDITIONING"), start: 0.0, end: 0.1),"#,
        ),
    );
    let report = run(
        &Executor::new(1 << 30),
        &graph,
        &["builtin", "plugin", "again", "ab"],
    );
    let want = cond(&report, "builtin").entries();
    let got = cond(&report, "plugin").entries();
    assert_eq!(got.len(), 2);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g.timestep_range, Some((0.2, 0.7)));
        assert_eq!(w.timestep_range, g.timestep_range);
        assert_same_tensors(&w.context, &g.context, "context kept");
    }
    // A new range over an old one, and the input left as it was.
    assert!(cond(&report, "again")
        .entries()
        .iter()
        .all(|e| e.timestep_range == Some((0.0, 0.1))));
    assert!(cond(&report, "ab")
        .entries()
        .iter()
        .all(|e| e.timestep_range.is_none()));
}

#[test]
fn a_c_conditioning_plugin_scales_states_and_keeps_options() {
    let dir = tempfile::tempdir().unwrap();
    let scale = c_plugin(
        "plugins/examples/c/conditioning_scale.c",
        &[],
        &dir.path().join(library_name("conditioning_scale")),
    );
    let (registry, _host) = with_plugins(&[scale]);
    let graph = graph(
        &registry,
        &text_graph(
            r#"
        "ranged": ConditioningSetTimestepRange(conditioning: Link("ab", "CONDITIONING"), start: 0.1, end: 0.9),
        "half": ExampleConditioningScale(conditioning: Link("ranged", "CONDITIONING"), factor: 0.5),"#,
        ),
    );
    let report = run(&Executor::new(1 << 30), &graph, &["ranged", "half"]);
    let before = cond(&report, "ranged").entries();
    let after = cond(&report, "half").entries();
    assert_eq!(after.len(), 2);
    for (b, a) in before.iter().zip(&after) {
        let half = (b.context.as_ref().unwrap() * 0.5).unwrap();
        assert!(max_abs_diff(&half, a.context.as_ref().unwrap()) < 1e-6);
        if let (Some(bp), Some(ap)) = (&b.pooled, &a.pooled) {
            assert!(max_abs_diff(&(bp * 0.5).unwrap(), ap) < 1e-6);
        }
        assert_eq!(a.timestep_range, Some((0.1, 0.9)), "options kept");
    }
}

#[test]
fn a_plugin_built_against_the_1_0_header_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let old = c_plugin_with(
        "plugins/host/tests/c/abi_1_0",
        "plugins/examples/c/invert.c",
        &[],
        &dir.path().join(library_name("invert_1_0")),
    );
    let (registry, _host) = with_plugins(&[old]);
    let graph = graph(
        &registry,
        &format!(
            r#"(nodes: {{ {IMAGE_SOURCE}
        "inverted": InvertImage(image: Link("image", "IMAGE")),
    }})"#
        ),
    );
    let report = run(&Executor::new(1 << 30), &graph, &["image", "inverted"]);
    let image = match &report.output("image").unwrap()[0] {
        Value::Image(t) => t.clone(),
        other => panic!("{}", other.summary()),
    };
    let inverted = match &report.output("inverted").unwrap()[0] {
        Value::Image(t) => t.clone(),
        other => panic!("{}", other.summary()),
    };
    let expected = image.affine(-1.0, 1.0).unwrap();
    assert!(max_abs_diff(&expected, &inverted) < 1e-6);
}

/// The reference: PAG's perturbation (self-attention as the identity map in
/// the middle block) applied by weft's own hook, not through the ABI.
#[derive(Debug)]
struct MidBlockIdentity;

impl AttentionHook for MidBlockIdentity {
    fn attend(
        &self,
        name: &str,
        _q: &Tensor,
        _k: &Tensor,
        v: &Tensor,
        _heads: usize,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok((name.starts_with("mid_block") && name.ends_with(".attn1")).then(|| v.clone()))
    }
}

fn denoised(m: &Model, x: &Tensor, sigma: f64, c: &Conditioning) -> Tensor {
    let raw = m.predict(x, sigma, c).unwrap();
    m.sampling.denoised(sigma, x, &raw).unwrap()
}

fn latent() -> Tensor {
    let values: Vec<f32> = (0..4 * 8 * 8)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(values, (1, 4, 8, 8), &Device::Cpu).unwrap()
}

#[test]
fn the_pag_plugin_moves_predictions_away_from_the_perturbed_model() {
    let (registry, _host) = with_plugins(&[rust_plugin("weft-plugin-model-patches")]);
    let graph = graph(
        &registry,
        &text_graph(
            r#""pag": PerturbedAttentionGuidance(model: Link("ckpt", "MODEL"), scale: 2.0),"#,
        ),
    );
    let report = run(&Executor::new(1 << 30), &graph, &["ckpt", "pag", "a"]);
    let (plain, patched, c) = (
        model(&report, "ckpt"),
        model(&report, "pag"),
        cond(&report, "a"),
    );
    let (x, sigma) = (latent(), 3.0);
    let d = denoised(&plain, &x, sigma, &c);
    let perturbed = Model {
        network: Arc::new(HookedNetwork {
            inner: plain.network.clone(),
            hook: Arc::new(MidBlockIdentity),
        }),
        ..plain.clone()
    };
    let dp = denoised(&perturbed, &x, sigma, &c);
    let expected = (&d + ((&d - &dp).unwrap() * 2.0).unwrap()).unwrap();
    let got = denoised(&patched, &x, sigma, &c);
    let scale = expected
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        max_abs_diff(&got, &expected) <= 1e-5 * scale,
        "{}",
        max_abs_diff(&got, &expected)
    );
    // The perturbation is real, and the plain model is untouched.
    assert!(
        max_abs_diff(&d, &dp) > 1e-4 * scale,
        "the hook changed nothing"
    );
    assert!(max_abs_diff(&denoised(&plain, &x, sigma, &c), &d) == 0.0);
}

#[test]
fn a_weight_delta_from_a_plugin_equals_adding_it_here() {
    let (registry, _host) = with_plugins(&[rust_plugin("weft-plugin-model-patches")]);
    let graph = graph(
        &registry,
        &text_graph(
            r#""delta": ExampleWeightDelta(model: Link("ckpt", "MODEL"), weight: "conv_out.bias", shape: "4", amount: 0.5),
        "wrong": ExampleWeightDelta(model: Link("ckpt", "MODEL"), weight: "conv_out.bais", shape: "4", amount: 0.5),"#,
        ),
    );
    let report = run(
        &Executor::new(1 << 30),
        &graph,
        &["ckpt", "delta", "a", "wrong"],
    );
    let (plain, patched, c) = (
        model(&report, "ckpt"),
        model(&report, "delta"),
        cond(&report, "a"),
    );
    let pattern: Vec<f32> = (0..4)
        .map(|i| (0.5 * ((i % 7) as f64 - 3.0) / 3.0) as f32)
        .collect();
    let delta = Tensor::from_vec(pattern, 4, &Device::Cpu).unwrap();
    let reference = Model {
        network: plain
            .network
            .with_deltas(&[("conv_out.bias".into(), delta)], 1.0)
            .unwrap()
            .unwrap(),
        ..plain.clone()
    };
    let x = latent();
    let want = denoised(&reference, &x, 2.0, &c);
    let got = denoised(&patched, &x, 2.0, &c);
    assert!(max_abs_diff(&want, &got) < 1e-6);
    assert!(max_abs_diff(&denoised(&plain, &x, 2.0, &c), &got) > 1e-3);
    let message = &report
        .failed
        .iter()
        .find(|f| f.node == "wrong")
        .unwrap()
        .message;
    assert!(
        message.contains("conv_out.bais") && message.contains("conv_out.bias"),
        "{message}"
    );
}

#[test]
fn a_latent_keeps_its_noise_mask_through_a_plugin() {
    let (registry, _host) = with_plugins(&[rust_plugin("weft-plugin-conditioning")]);
    let graph = graph(
        &registry,
        r#"(nodes: {
        "latent": EmptyLatentImage(width: 64, height: 64, batch_size: 1),
        "mask": SolidMask(value: 0.5, width: 64, height: 64),
        "masked": SetLatentNoiseMask(samples: Link("latent", "LATENT"), mask: Link("mask", "MASK")),
        "scaled": ExampleLatentMultiply(samples: Link("masked", "LATENT"), multiplier: 2.0),
    })"#,
    );
    let report = run(&Executor::new(1 << 30), &graph, &["masked", "scaled"]);
    let latent = |node: &str| match &report.output(node).unwrap()[0] {
        Value::Latent(l) => l.clone(),
        other => panic!("{}", other.summary()),
    };
    let (before, after) = (latent("masked"), latent("scaled"));
    let mask = after.noise_mask.as_ref().expect("the mask survived");
    assert!(max_abs_diff(before.noise_mask.as_ref().unwrap(), mask) == 0.0);
    assert_eq!(after.space, before.space);
}
