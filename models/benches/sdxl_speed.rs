//! The full-size SDXL base UNet (2.6 B parameters), random weights: one
//! UNet step at 1024×1024 (latent 128², batch 2: conditional and
//! unconditional) for weft and for PyTorch/diffusers on the same machine in
//! the same run, with the ratio and each side's peak RSS; then weft's LoRA
//! patching of that UNet with a synthetic rank-32 kohya LoRA.
//!
//!   WEFT_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p weft-models --bench sdxl_speed
//!
//! PyTorch runs `scripts/bench_sdxl_torch.py` with the config below; without
//! torch only weft's figures print. As in `sd_speed` (whose process and
//! table code `benches/common` shares), each measurement runs in its own
//! process and the sides alternate for [`ROUNDS`] rounds of a warm-up and
//! [`RUNS`] timed runs; a step takes minutes on two cores, hence the few.
//!
//! The LoRA phases are weft's alone, one process each:
//! - `lora_patch`: a kohya-format f16 LoRA of rank [`RANK`] over every
//!   attention projection, feed-forward and `proj_in`/`proj_out` linear of
//!   the UNet (LDM names, as kohya's trainer writes for SDXL) is written to
//!   a temporary folder; timed is what `LoraLoader` does with it: open,
//!   resolve against the UNet's weights, patch, rebuild the UNet sharing
//!   every unpatched tensor. The first (cold) run is reported apart.
//! - `lora_step`: the patched and the plain UNet, one step each in turn in
//!   the same process, at [`LORA_SIZE`] pixels (batch 2) to save time.
//!
//! Environment: `WEFT_BENCH_RUNS`, `WEFT_BENCH_ROUNDS`;
//! `WEFT_BENCH_SDXL_SIZE` (pixels of the UNet step, default 1024),
//! `WEFT_BENCH_SDXL_LORA_SIZE` (of `lora_step`, default 512),
//! `WEFT_BENCH_SDXL_PHASES` (comma-separated, default all three),
//! `WEFT_BENCH_SDXL_CONFIG` (a diffusers `config.json` to use instead, e.g.
//! a small UNet of the same layout for a quick check that everything runs).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{
    available_mib, child_args, env_count, log_memory, measure, median, parse, random_weights,
    report, timed, Driver,
};
use weft_models::lora::{self, LoraFile, Target, UnetLayout, Weights};
use weft_models::sd::config::{unet_from_json, UNetSpec};
use weft_models::sd::unet::SdUNet;

/// diffusers' `unet/config.json` of SDXL base 1.0 (stabilityai/
/// stable-diffusion-xl-base-1.0), the settings that differ from
/// `UNet2DConditionModel`'s defaults.
const SDXL_UNET: &str = r#"{
  "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280],
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  "mid_block_type": "UNetMidBlock2DCrossAttn",
  "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
  "use_linear_projection": true, "cross_attention_dim": 2048,
  "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
  "projection_class_embeddings_input_dim": 2816,
  "layers_per_block": 2, "norm_num_groups": 32, "norm_eps": 1e-05, "sample_size": 128
}"#;

const RUNS: usize = 2;
const ROUNDS: usize = 2;
/// Pixels of the UNet step.
const SIZE: usize = 1024;
/// Pixels of the LoRA'd-against-plain step.
const LORA_SIZE: usize = 512;
/// The LoRA's rank.
const RANK: usize = 32;
/// The weights a LoRA file of kohya's trainer patches in an SDXL UNet.
const LORA_TARGETS: [&str; 8] = [
    ".to_q.weight",
    ".to_k.weight",
    ".to_v.weight",
    ".to_out.0.weight",
    ".ff.net.0.proj.weight",
    ".ff.net.2.weight",
    ".proj_in.weight",
    ".proj_out.weight",
];

/// The UNet's diffusers config: SDXL base's, or the file named by
/// `WEFT_BENCH_SDXL_CONFIG` (a smaller UNet of the same layout, say, for a
/// quick check that everything runs).
fn config() -> String {
    match std::env::var("WEFT_BENCH_SDXL_CONFIG") {
        Ok(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        Err(_) => SDXL_UNET.to_string(),
    }
}

fn size() -> usize {
    env_count("WEFT_BENCH_SDXL_SIZE", SIZE)
}

fn lora_size() -> usize {
    env_count("WEFT_BENCH_SDXL_LORA_SIZE", LORA_SIZE)
}

/// A UNet with random weights, kept by name as a loaded one is (what LoRA
/// patches).
fn random_unet(spec: &UNetSpec) -> SdUNet {
    let weights = random_weights(|vb| SdUNet::new(spec, vb));
    let unet = SdUNet::from_weights(spec, weights).unwrap();
    log_memory("built");
    unet
}

/// A step's inputs at `pixels`²: latents, text states, SDXL's added input.
struct Inputs {
    x: Tensor,
    context: Tensor,
    added: Tensor,
}

impl Inputs {
    fn new(unet: &SdUNet, pixels: usize) -> Inputs {
        let dev = Device::Cpu;
        let side = pixels / 8;
        let pooled = Tensor::randn(0f32, 1.0, (2, 1280), &dev).unwrap();
        let p = pixels as f64;
        let numbers = vec![vec![p, p, 0.0, 0.0, p, p]; 2];
        Inputs {
            x: Tensor::randn(0f32, 1.0, (2, 4, side, side), &dev).unwrap(),
            context: Tensor::randn(0f32, 1.0, (2, 77, 2048), &dev).unwrap(),
            added: unet.added_input(&pooled, &numbers).unwrap(),
        }
    }

    fn step(&self, unet: &SdUNet) -> Tensor {
        unet.forward_controlled(&self.x, 500.0, &self.context, Some(&self.added), None)
            .unwrap()
    }
}

/// Writes a kohya-format LoRA of rank `rank` (f16, `alpha` = rank / 2) for
/// every [`LORA_TARGETS`] weight of `weights` to `path`; the module count.
fn write_lora(weights: &Weights, layers_per_block: usize, rank: usize, path: &Path) -> usize {
    let dev = Device::Cpu;
    let layout = UnetLayout::new(weights.keys().map(String::as_str), layers_per_block);
    let mut tensors = HashMap::new();
    let mut modules = 0;
    for (name, w) in weights {
        if !LORA_TARGETS.iter().any(|t| name.ends_with(t)) {
            continue;
        }
        let (out, inp) = w.dims2().unwrap();
        let ldm = layout.ldm_name(name).expect("an LDM name");
        let module = format!(
            "lora_unet_{}",
            ldm.strip_suffix(".weight").unwrap().replace('.', "_")
        );
        let f16 = |t: Tensor| t.to_dtype(DType::F16).unwrap();
        let down = Tensor::randn(0f32, 1.0 / (inp as f32).sqrt(), (rank, inp), &dev).unwrap();
        let up = Tensor::randn(0f32, 0.02, (out, rank), &dev).unwrap();
        let alpha = Tensor::new(rank as f32 / 2.0, &dev).unwrap();
        tensors.insert(format!("{module}.lora_down.weight"), f16(down));
        tensors.insert(format!("{module}.lora_up.weight"), f16(up));
        tensors.insert(format!("{module}.alpha"), f16(alpha));
        modules += 1;
    }
    candle_core::safetensors::save(&tensors, path).unwrap();
    modules
}

/// What `LoraLoader` does with a file: open, resolve, patch, rebuild. The
/// patched UNet and the f32 bytes of its new tensors, with each part's
/// seconds (open + resolve, patch, rebuild).
fn patch(unet: &SdUNet, path: &Path) -> (SdUNet, usize, [f64; 3]) {
    let lpb = unet.spec().config.layers_per_block;
    let (open_s, resolved) = timed(|| {
        let file = LoraFile::open(path).unwrap();
        file.resolve(&[(Target::Unet, unet.weights())], lpb)
    });
    assert!(
        resolved.unmatched.is_empty(),
        "unmatched: {:?}",
        resolved.unmatched
    );
    let (apply_s, changed) =
        timed(|| lora::apply(Target::Unet, unet.weights(), &resolved, 1.0).unwrap());
    let bytes = changed.values().map(|t| t.elem_count() * 4).sum();
    let (build_s, patched) = timed(|| unet.with_weights(&changed).unwrap());
    (patched, bytes, [open_s, apply_s, build_s])
}

/// The f32 bytes the patched copy will add (its targets'), against what
/// the machine has; false, with a note, when it would not fit.
fn patch_fits(unet: &SdUNet) -> bool {
    let need = unet
        .weights()
        .iter()
        .filter(|(n, _)| LORA_TARGETS.iter().any(|t| n.ends_with(t)))
        .map(|(_, t)| t.elem_count() * 4)
        .sum::<usize>() as f64
        / (1 << 20) as f64;
    let have = available_mib();
    eprintln!("the patch needs {need:.0} MiB more; {have:.0} MiB available");
    let fits = have > need + 1024.0;
    if !fits {
        eprintln!("not enough memory for a patched copy: skipped");
    }
    fits
}

/// A temporary folder with the LoRA file; its path, size in MB, modules.
fn lora_file(unet: &SdUNet) -> (tempfile::TempDir, std::path::PathBuf, f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("sdxl_lora_r{RANK}.safetensors"));
    let (secs, modules) = timed(|| {
        write_lora(
            unet.weights(),
            unet.spec().config.layers_per_block,
            RANK,
            &path,
        )
    });
    let mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    eprintln!("LoRA: {modules} modules, {mb:.0} MB, written in {secs:.1} s");
    (dir, path, mb, modules)
}

fn phase(name: &str, runs: usize) {
    weft_kernels::alloc::keep_freed_memory();
    let spec = unet_from_json(&config()).unwrap();
    let unet = random_unet(&spec);
    match name {
        "unet" => {
            let inputs = Inputs::new(&unet, size());
            measure("unet", runs, || {
                inputs.step(&unet);
            });
        }
        "lora_patch" => {
            let (_dir, path, mb, modules) = lora_file(&unet);
            if !patch_fits(&unet) {
                return;
            }
            let (first_s, (patched, bytes, _)) = timed(|| patch(&unet, &path));
            drop(patched);
            log_memory("first patch");
            let (mut totals, mut parts) = (Vec::new(), [Vec::new(), Vec::new(), Vec::new()]);
            for _ in 0..runs {
                let (secs, (patched, _, part)) = timed(|| patch(&unet, &path));
                drop(patched);
                totals.push(secs);
                for (all, p) in parts.iter_mut().zip(part) {
                    all.push(p);
                }
            }
            let [open, apply, build] = parts.map(median);
            report(
                "lora_patch",
                &[
                    ("first_s", first_s),
                    ("median_s", median(totals)),
                    ("open_s", open),
                    ("apply_s", apply),
                    ("build_s", build),
                    ("file_mb", mb),
                    ("modules", modules as f64),
                    ("patched_mib", bytes as f64 / (1 << 20) as f64),
                ],
            );
        }
        "lora_step" => {
            let (_dir, path, _, _) = lora_file(&unet);
            if !patch_fits(&unet) {
                return;
            }
            let (patched, _, _) = patch(&unet, &path);
            log_memory("patched");
            let inputs = Inputs::new(&unet, lora_size());
            let (plain_out, lora_out) = (inputs.step(&unet), inputs.step(&patched));
            let diff = max_abs_diff(&plain_out, &lora_out).unwrap();
            log_memory(&format!(
                "warm-up (LoRA'd against plain output: max |difference| {diff:.3e})"
            ));
            let (mut plain, mut lora) = (Vec::new(), Vec::new());
            for i in 0..runs {
                // Alternate which goes first, against drift within a run.
                let order = if i % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                for is_lora in order {
                    let (secs, _) = timed(|| inputs.step(if is_lora { &patched } else { &unet }));
                    if is_lora { &mut lora } else { &mut plain }.push(secs);
                }
            }
            let (l, p) = (median(lora), median(plain));
            report(
                "lora_step",
                &[
                    ("median_s", l),
                    ("plain_median_s", p),
                    ("ratio", l / p),
                    ("max_diff", f64::from(diff)),
                ],
            );
        }
        other => panic!("unknown phase {other}"),
    }
}

/// The largest |a − b|.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
}

/// A figure of a JSON line, to `places`, or a dash.
fn field(json: &str, key: &str, places: usize) -> String {
    parse(json, key).map_or("–".into(), |v| format!("{v:.places$}"))
}

fn main() {
    if let Some((p, runs)) = child_args() {
        return phase(&p, runs);
    }
    let driver = Driver::new(RUNS, ROUNDS);
    let phases = std::env::var("WEFT_BENCH_SDXL_PHASES")
        .unwrap_or_else(|_| "unet,lora_patch,lora_step".into());
    let wanted = |p: &str| phases.split(',').any(|w| w.trim() == p);
    let smoke = if config() == SDXL_UNET {
        ""
    } else {
        " (the config of WEFT_BENCH_SDXL_CONFIG)"
    };
    println!(
        "SDXL base UNet{smoke}, random weights, {}",
        driver.describe()
    );
    if wanted("unet") {
        let size = size();
        let extra = [size.to_string(), config().to_string()];
        driver.compare(&[("unet", &format!("UNet step, {size}², batch 2"))], |p| {
            driver.torch("scripts/bench_sdxl_torch.py", p, &extra)
        });
    }
    if !wanted("lora_patch") && !wanted("lora_step") {
        return;
    }
    println!();
    println!(
        "weft only: a synthetic kohya LoRA, rank {RANK}, f16, one process per row, {} timed runs after a warm-up",
        driver.runs
    );
    println!("| LoRA | weft | peak RSS (MiB) |");
    println!("|---|---|---|");
    if wanted("lora_patch") {
        let j = driver.weft("lora_patch");
        println!(
            "| patch: open + resolve + patch + rebuild ({} modules, {} MB file) | first {} s, then median {} s (open + resolve {} s, patch {} s, rebuild {} s); +{} MiB of patched tensors | {} |",
            field(&j, "modules", 0),
            field(&j, "file_mb", 0),
            field(&j, "first_s", 2),
            field(&j, "median_s", 2),
            field(&j, "open_s", 2),
            field(&j, "apply_s", 2),
            field(&j, "build_s", 2),
            field(&j, "patched_mib", 0),
            field(&j, "peak_rss_mib", 0),
        );
    }
    if wanted("lora_step") {
        let j = driver.weft("lora_step");
        println!(
            "| UNet step, {}², batch 2: LoRA'd / plain, alternating | {} s / {} s = **{}** | {} |",
            lora_size(),
            field(&j, "median_s", 2),
            field(&j, "plain_median_s", 2),
            field(&j, "ratio", 2),
            field(&j, "peak_rss_mib", 0),
        );
    }
}
