//! A real-size ESRGAN ×4 (RRDBNet: 23 blocks, 64 features, growth 32, the
//! network of RealESRGAN_x4plus and 4x-UltraSharp), random weights: one
//! 128² image upscaled to 512², and a 512² image upscaled to 2048² the way
//! `ImageUpscaleWithModel` does it (ComfyUI's 512-pixel tiles, so one tile
//! here), for weft and for PyTorch/spandrel on the same machine in the same
//! run, with the ratio and each side's peak RSS.
//!
//!   cargo bench -p weft-models --bench upscale_speed
//!
//! PyTorch comes from `WEFT_BENCH_PYTHON` (default `python3`) running
//! `scripts/bench_upscale_torch.py` (spandrel's RRDBNet); without torch and
//! spandrel only weft's figures print. As `sd_speed`, each measurement runs
//! in its own process and the sides alternate for [`ROUNDS`] rounds of a
//! warm-up and [`RUNS`] timed runs (`WEFT_BENCH_ROUNDS`, `WEFT_BENCH_RUNS`);
//! `WEFT_BENCH_PHASES` (comma-separated) picks phases. The weights are
//! written to a safetensors file in the original ESRGAN layout and loaded
//! with `UpscaleModel::open`, as a user's file is.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{child_args, log_memory, measure, Driver};
use weft_models::upscale::{Tiling, UpscaleModel};

const RUNS: usize = 3;
const ROUNDS: usize = 3;
const FEATURES: usize = 64;
const GROWTH: usize = 32;
const BLOCKS: usize = 23;

/// PyTorch's default initialisation of a 3×3 convolution: uniform in
/// ±1/√fan_in, weight and bias.
fn conv(weights: &mut HashMap<String, Tensor>, name: &str, o: usize, i: usize) {
    let bound = 1.0 / ((9 * i) as f64).sqrt();
    let u =
        |shape: &[usize]| Tensor::rand(-bound as f32, bound as f32, shape, &Device::Cpu).unwrap();
    weights.insert(format!("{name}.weight"), u(&[o, i, 3, 3]));
    weights.insert(format!("{name}.bias"), u(&[o]));
}

/// A random ×4 RRDBNet written as the original ESRGAN repository names it.
fn model() -> UpscaleModel {
    let (nf, gc) = (FEATURES, GROWTH);
    let mut w = HashMap::new();
    conv(&mut w, "model.0", nf, 3);
    for b in 0..BLOCKS {
        for r in 1..=3 {
            for k in 1..=5 {
                let out = if k == 5 { nf } else { gc };
                let name = format!("model.1.sub.{b}.RDB{r}.conv{k}.0");
                conv(&mut w, &name, out, nf + (k - 1) * gc);
            }
        }
    }
    conv(&mut w, &format!("model.1.sub.{BLOCKS}"), nf, nf);
    conv(&mut w, "model.3", nf, nf);
    conv(&mut w, "model.6", nf, nf);
    conv(&mut w, "model.8", nf, nf);
    conv(&mut w, "model.10", 3, nf);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("RRDB_x4.safetensors");
    candle_core::safetensors::save(&w, &path).unwrap();
    drop(w);
    let model = UpscaleModel::open(&path).unwrap();
    eprintln!("{}", model.architecture().describe());
    model
}

fn phase(name: &str, runs: usize) {
    weft_kernels::alloc::keep_freed_memory();
    let model = model();
    log_memory("built");
    let side = match name {
        "x4_128" => 128,
        "x4_512" => 512,
        other => panic!("unknown phase {other}"),
    };
    let x = Tensor::rand(0f32, 1.0, (1, 3, side, side), &Device::Cpu).unwrap();
    measure(name, runs, || {
        let y = model
            .upscale(&x, Tiling::default(), &mut |_, _| true)
            .unwrap();
        assert_eq!(y.dims(), [1, 3, 4 * side, 4 * side]);
    });
}

fn main() {
    if let Some((p, runs)) = child_args() {
        return phase(&p, runs);
    }
    let driver = Driver::new(RUNS, ROUNDS);
    println!(
        "ESRGAN ×4 (RRDBNet, {BLOCKS} blocks, nf {FEATURES}, gc {GROWTH}), random weights, {}",
        driver.describe()
    );
    let wanted = std::env::var("WEFT_BENCH_PHASES").unwrap_or_else(|_| "x4_128,x4_512".into());
    let all = [
        ("x4_128", "128² → 512²"),
        ("x4_512", "512² → 2048² (one 512² tile)"),
    ];
    let phases: Vec<(&str, &str)> = all
        .into_iter()
        .filter(|(p, _)| wanted.split(',').any(|w| w.trim() == *p))
        .collect();
    driver.compare(&phases, |p| {
        driver.torch("scripts/bench_upscale_torch.py", p, &[])
    });
}
