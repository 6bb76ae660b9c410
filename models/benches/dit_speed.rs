//! weft's SD3 and Flux transformers against PyTorch/diffusers (issue #15):
//! f32 on the CPU, batch 1, random weights, at 1024² (a 16×128×128 latent:
//! 4096 image tokens for both).
//!
//!   WEFT_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p weft-models --bench dit_speed
//!
//! Phases (PyTorch runs `scripts/bench_dit_torch.py` with the same config):
//! - `flux_double`: Flux dev's widths (24 heads × 128, guidance embedder)
//!   with one double-stream block and no single-stream one, so the block
//!   dominates what the cheap embedders and final layer add; 512 text tokens.
//! - `flux_single`: the same with one single-stream block instead.
//! - `sd35m_step`: the whole SD3.5 medium transformer (2.5 B parameters,
//!   ≈ 10 GB in f32), one step; 333 text tokens (77 CLIP + 256 T5).
//!   Skipped, with a note, where the memory is not there.
//! - `flux_double_quant`, `flux_single_quant` (weft only): the block built
//!   f32 (`WeightMode::Dense`), Q8_0 and Q4_K on load, run in turn in one
//!   process; their time against f32's and the largest output difference
//!   relative to f32's largest output value.
//!
//! The driver first writes each model's random weights (uniform ±1/√fan_in
//! as PyTorch's default, norms 1) under diffusers' names, with its
//! `config.json`, to a temporary diffusers component folder, each in a
//! child process of its own; weft then opens it as a user's folder would
//! (`open_transformer`, `*Network::build`) and runs it through
//! `weft_sampling::Network::forward`. As in the other speed benches (whose
//! process and table code `benches/common` holds), every measurement is a
//! process of its own and the sides alternate.
//!
//! Environment: `WEFT_BENCH_RUNS`, `WEFT_BENCH_ROUNDS` (defaults: 2 runs ×
//! 3 rounds for the block phases, 1 × 2 for `sd35m_step`);
//! `WEFT_BENCH_PHASES` (comma-separated, default all);
//! `WEFT_BENCH_DIT_SIZE` (pixels, default 1024; smaller for a quick check).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use common::{
    available_mib, child_args, env_count, log_memory, median, parse, random_weights, report, timed,
    Driver,
};
use weft_kernels::quant::StoredType;
use weft_models::flux::{self, FluxConfig, FluxNetwork, FluxTransformer};
use weft_models::loader::Loader;
use weft_models::lora::Weights;
use weft_models::packed::WeightMode;
use weft_models::sd3::{self, Sd3Config, Sd3Network, Sd3Transformer};
use weft_sampling::{Conditioning, Network};

const RUNS: usize = 2;
const ROUNDS: usize = 3;
/// `sd35m_step` takes minutes a step on two cores, hence fewer.
const STEP_RUNS: usize = 1;
const STEP_ROUNDS: usize = 2;
const SIZE: usize = 1024;
/// Flux's T5 tokens (dev's `max_sequence_length`).
const FLUX_TEXT: usize = 512;
/// SD3's 77 CLIP tokens and 256 T5 tokens.
const SD3_TEXT: usize = 333;
/// Where the children find the weights the driver wrote.
const DIR_VAR: &str = "WEFT_BENCH_DIT_DIR";

/// Flux dev's transformer config with `double` and `single` blocks.
fn flux_config(double: usize, single: usize) -> String {
    format!(
        r#"{{"patch_size": 1, "in_channels": 64, "out_channels": null, "num_layers": {double},
  "num_single_layers": {single}, "attention_head_dim": 128, "num_attention_heads": 24,
  "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": true,
  "axes_dims_rope": [16, 56, 56]}}"#
    )
}

/// diffusers' `transformer/config.json` of stabilityai/stable-diffusion-3.5-medium.
const SD35_MEDIUM: &str = r#"{"sample_size": 128, "patch_size": 2, "in_channels": 16,
  "num_layers": 24, "attention_head_dim": 64, "num_attention_heads": 24,
  "joint_attention_dim": 4096, "caption_projection_dim": 1536, "pooled_projection_dim": 2048,
  "out_channels": 16, "pos_embed_max_size": 384,
  "dual_attention_layers": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], "qk_norm": "rms_norm"}"#;

/// The transformer a phase runs.
#[derive(Clone, Copy, PartialEq)]
enum Model {
    FluxDouble,
    FluxSingle,
    Sd35m,
}

impl Model {
    fn of(phase: &str) -> Model {
        match phase.trim_end_matches("_quant") {
            "flux_double" => Model::FluxDouble,
            "flux_single" => Model::FluxSingle,
            "sd35m_step" => Model::Sd35m,
            other => panic!("unknown phase {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Model::FluxDouble => "flux_double",
            Model::FluxSingle => "flux_single",
            Model::Sd35m => "sd35m_step",
        }
    }

    fn config(self) -> String {
        match self {
            Model::FluxDouble => flux_config(1, 0),
            Model::FluxSingle => flux_config(0, 1),
            Model::Sd35m => SD35_MEDIUM.to_string(),
        }
    }

    /// The component folder the driver wrote for this model.
    fn dir(self) -> PathBuf {
        let root = std::env::var(DIR_VAR).expect("run by the bench's driver");
        Path::new(&root).join(self.name())
    }

    /// Random weights by diffusers name (see [`reinit`]).
    fn weights(self) -> Weights {
        let mut w = match self {
            Model::Sd35m => {
                let cfg: Sd3Config = serde_json::from_str(&self.config()).unwrap();
                random_weights(|vb| Sd3Transformer::new(&cfg, Loader::new(vb)))
            }
            _ => {
                let cfg: FluxConfig = serde_json::from_str(&self.config()).unwrap();
                random_weights(|vb| FluxTransformer::new(&cfg, Loader::new(vb)))
            }
        };
        reinit(&mut w);
        w
    }

    /// The network from its folder, its linears held as `mode` says.
    fn build(self, mode: WeightMode) -> Box<dyn Network> {
        let dir = self.dir();
        let net: Box<dyn Network> = match self {
            Model::Sd35m => {
                let (cfg, map) = sd3::open_transformer(&dir, None).unwrap();
                Box::new(Sd3Network::build(&cfg, &map, mode).unwrap())
            }
            _ => {
                let (cfg, map) = flux::open_transformer(&dir, None).unwrap();
                Box::new(FluxNetwork::build(&cfg, &map, mode).unwrap())
            }
        };
        log_memory(&format!("{} built ({mode:?})", self.name()));
        net
    }

    /// A step's inputs at `pixels`²: the unpacked latent, σ·1000 and the
    /// conditioning a text encoder (and, for dev, FluxGuidance) gives.
    fn inputs(self, pixels: usize) -> (Tensor, Tensor, Conditioning) {
        let dev = Device::Cpu;
        let side = pixels / 8;
        let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let (text, pooled, guidance) = match self {
            Model::Sd35m => (SD3_TEXT, 2048, vec![]),
            _ => (FLUX_TEXT, 768, vec![Some(3.5)]),
        };
        let cond = Conditioning {
            context: Some(randn(&[1, text, 4096])),
            pooled: Some(randn(&[1, pooled])),
            guidance,
            ..Default::default()
        };
        let t = Tensor::new(&[500f32], &dev).unwrap();
        (randn(&[1, 16, side, side]), t, cond)
    }

    /// This model's f32 bytes in MiB, and what a step needs beyond them.
    fn need_mib(self) -> f64 {
        match self {
            Model::Sd35m => 9_500.0 + 5_000.0,
            Model::FluxDouble => 1_600.0 + 3_000.0,
            Model::FluxSingle => 850.0 + 3_000.0,
        }
    }
}

/// PyTorch's default initialisation, near enough for timing and for a
/// meaningful quantisation error: weights and biases uniform ±1/√fan_in
/// (a bias takes its weight's fan-in), other vectors (norm scales) 1.
fn reinit(w: &mut Weights) {
    let dev = Device::Cpu;
    let fan_in = |shape: &[usize]| shape[1..].iter().product::<usize>().max(1) as f64;
    let names: Vec<String> = w.keys().cloned().collect();
    for name in names {
        let shape = w[&name].dims().to_vec();
        let weight = name
            .strip_suffix(".bias")
            .and_then(|n| w.get(&format!("{n}.weight")));
        let bound = match weight {
            Some(wt) if wt.rank() >= 2 => Some(1.0 / fan_in(wt.dims()).sqrt()),
            _ if shape.len() >= 2 => Some(1.0 / fan_in(&shape).sqrt()),
            _ => None,
        };
        let new = match bound {
            Some(b) => Tensor::rand(-b as f32, b as f32, shape.as_slice(), &dev),
            None => Tensor::ones(shape.as_slice(), candle_core::DType::F32, &dev),
        };
        // One tensor at a time, so SD3.5 medium's 10 GB are not held twice.
        w.insert(name, new.unwrap());
    }
}

fn size() -> usize {
    env_count("WEFT_BENCH_DIT_SIZE", SIZE)
}

/// The child that writes `model`'s folder: `write MODEL`.
fn write(model: Model) {
    let dir = model.dir();
    std::fs::create_dir_all(&dir).unwrap();
    let (secs, weights) = timed(|| model.weights());
    let params: usize = weights.values().map(|t| t.elem_count()).sum();
    std::fs::write(dir.join("config.json"), model.config()).unwrap();
    let file = dir.join("diffusion_pytorch_model.safetensors");
    candle_core::safetensors::save(&weights, &file).unwrap();
    eprintln!(
        "{}: {:.0} M parameters, made in {secs:.0} s, written to {}",
        model.name(),
        params as f64 / 1e6,
        file.display()
    );
}

/// One network's step, unwrapped.
fn step(net: &dyn Network, inputs: &(Tensor, Tensor, Conditioning)) -> Tensor {
    net.forward(&inputs.0, &inputs.1, &inputs.2).unwrap()
}

/// max |a − b| over max |b|.
fn relative_diff(a: &Tensor, b: &Tensor) -> f64 {
    let max = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    f64::from(max(&(a - b).unwrap()) / max(b).max(1e-12))
}

/// f32, Q8_0 and Q4_K builds of `model`, each step timed `runs` times in
/// rotating order (against drift within the process).
fn quant(model: Model, runs: usize) {
    let modes = [
        WeightMode::Dense,
        WeightMode::Quantize(StoredType::Q8_0),
        WeightMode::Quantize(StoredType::Q4K),
    ];
    let inputs = model.inputs(size());
    let mut nets = Vec::new();
    let mut build_s = Vec::new();
    for mode in modes {
        let (secs, net) = timed(|| model.build(mode));
        nets.push(net);
        build_s.push(secs);
    }
    let outs: Vec<Tensor> = nets.iter().map(|n| step(n.as_ref(), &inputs)).collect();
    log_memory("warm-up");
    let mut times = vec![Vec::new(); modes.len()];
    for run in 0..runs {
        for k in 0..modes.len() {
            let i = (run + k) % modes.len();
            times[i].push(timed(|| step(nets[i].as_ref(), &inputs)).0);
        }
    }
    let [f32_s, q8_s, q4_s] = [0, 1, 2].map(|i| median(times[i].clone()));
    report(
        &format!("{}_quant", model.name()),
        &[
            ("median_s", f32_s),
            ("q8_s", q8_s),
            ("q4k_s", q4_s),
            ("q8_diff_pct", 100.0 * relative_diff(&outs[1], &outs[0])),
            ("q4k_diff_pct", 100.0 * relative_diff(&outs[2], &outs[0])),
            ("q8_build_s", build_s[1]),
            ("q4k_build_s", build_s[2]),
        ],
    );
}

fn phase(name: &str, runs: usize) {
    weft_kernels::alloc::keep_freed_memory();
    let model = Model::of(name);
    if name.ends_with("_quant") {
        return quant(model, runs);
    }
    let have = available_mib();
    if have < model.need_mib() {
        eprintln!(
            "{name}: {have:.0} MiB available, about {:.0} needed: skipped",
            model.need_mib()
        );
        return;
    }
    let net = model.build(WeightMode::Dense);
    let inputs = model.inputs(size());
    common::measure(name, runs, || {
        step(net.as_ref(), &inputs);
    });
}

/// A figure of a JSON line, to `places`, or a dash.
fn field(json: &str, key: &str, places: usize) -> String {
    parse(json, key).map_or("–".into(), |v| format!("{v:.places$}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("write") {
        return write(Model::of(&args[1]));
    }
    if let Some((p, runs)) = child_args() {
        return phase(&p, runs);
    }
    let phases = std::env::var("WEFT_BENCH_PHASES").unwrap_or_else(|_| {
        "flux_double,flux_single,sd35m_step,flux_double_quant,flux_single_quant".into()
    });
    let wanted: Vec<&str> = phases.split(',').map(str::trim).collect();
    let root = tempfile::tempdir().unwrap();
    // The children find the folders through the environment they inherit.
    std::env::set_var(DIR_VAR, root.path());
    let mut models: Vec<Model> = Vec::new();
    for m in wanted.iter().map(|p| Model::of(p)) {
        if !models.contains(&m) {
            models.push(m);
        }
    }
    for model in models {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["write", model.name()])
            .status()
            .unwrap();
        assert!(out.success(), "writing {} failed", model.name());
    }
    let size = size();
    println!("Flux dev widths (24 × 128 heads) and SD3.5 medium, random weights, {size}², batch 1");
    let torch = |driver: &Driver, p: &str| {
        let extra = [size.to_string(), Model::of(p).config()];
        driver.torch("scripts/bench_dit_torch.py", p, &extra)
    };
    let image = (size / 16) * (size / 16);
    let labels = [
        ("flux_double", format!("Flux: one double-stream block + embedders and final layer ({image} + {FLUX_TEXT} tokens)")),
        ("flux_single", format!("Flux: one single-stream block + embedders and final layer ({image} + {FLUX_TEXT} tokens)")),
    ];
    let blocks: Vec<(&str, &str)> = labels
        .iter()
        .filter(|(p, _)| wanted.contains(p))
        .map(|(p, l)| (*p, l.as_str()))
        .collect();
    if !blocks.is_empty() {
        let driver = Driver::new(RUNS, ROUNDS);
        println!("{}", driver.describe());
        driver.compare(&blocks, |p| torch(&driver, p));
    }
    if wanted.contains(&"sd35m_step") {
        let driver = Driver::new(STEP_RUNS, STEP_ROUNDS);
        println!();
        println!("{}", driver.describe());
        driver.compare(
            &[(
                "sd35m_step",
                &format!("SD3.5 medium: whole transformer, one step ({image} + {SD3_TEXT} tokens)"),
            )],
            |p| torch(&driver, p),
        );
    }
    let quants: Vec<&&str> = wanted.iter().filter(|p| p.ends_with("_quant")).collect();
    if quants.is_empty() {
        return;
    }
    let driver = Driver::new(RUNS, ROUNDS);
    println!();
    println!(
        "weft only: linears quantised on load against f32, one process per row, {} timed runs each after a warm-up, in rotating order",
        driver.runs
    );
    println!("| phase | f32 (s) | Q8_0 (s) | f32 / Q8_0 | Q8_0 max rel. diff (%) | Q4_K (s) | f32 / Q4_K | Q4_K max rel. diff (%) | peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for p in quants {
        let j = driver.weft(p);
        eprintln!("{p}: {}", j.trim());
        let speedup = |k: &str| match (parse(&j, "median_s"), parse(&j, k)) {
            (Some(f), Some(q)) => format!("**{:.2}×**", f / q),
            _ => "–".into(),
        };
        println!(
            "| {p} | {} | {} | {} | {} | {} | {} | {} | {} |",
            field(&j, "median_s", 2),
            field(&j, "q8_s", 2),
            speedup("q8_s"),
            field(&j, "q8_diff_pct", 3),
            field(&j, "q4k_s", 2),
            speedup("q4k_s"),
            field(&j, "q4k_diff_pct", 3),
            field(&j, "peak_rss_mib", 0),
        );
    }
}
