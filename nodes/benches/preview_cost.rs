//! What a live preview costs against the sampling step it follows: an SD
//! 1.5-shaped UNet step at 512² (batch 2: conditional and unconditional;
//! random weights) against the preview of a 64×64 latent by `latent2rgb`
//! (projection, bytes, PNG) and by a full-size TAESD decoder (64 channels,
//! stages of 3, 3, 3 and 1 blocks, random weights: decode to 512², bytes,
//! PNG), plus the CLI's delivery of one preview (the JSON line with its
//! base64 PNG, and `preview.png` written atomically).
//!
//!   cargo bench -p weft-nodes --bench preview_cost
//!
//! The machine drifts, so the three are timed in turns for
//! `WEFT_BENCH_ROUNDS` rounds (default 3) after one warm-up each; each
//! figure is the median over the rounds (latent2rgb and delivery: the
//! median of 50 runs per round). A run previews at most once per step
//! (the default rate limit is 250 ms, and a step takes seconds), so the
//! share of a step is the preview's time over the step's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use weft_core::{Event, PreviewPng};
use weft_models::sd::config::unet_from_json;
use weft_models::sd::preview::SD15_RGB;
use weft_models::sd::unet::SdUNet;
use weft_models::taesd::TinyDecoder;
use weft_nodes::sampling::preview::Previewer;

// weft-models' bench helpers: the product's allocator, random weights.
#[path = "../../models/benches/common/mod.rs"]
mod common;

use common::random;

/// diffusers' `unet/config.json` of Stable Diffusion 1.5.
const SD15_UNET: &str = r#"{
  "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
  "norm_num_groups": 32, "norm_eps": 1e-05, "sample_size": 64
}"#;

/// The released TAESD decoder's layout (original keys), random weights.
fn taesd() -> TinyDecoder {
    let c = 64;
    let mut m = HashMap::new();
    let mut add = |name: String, shape: &[usize]| {
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        let scale = (2.0 / fan_in as f64).sqrt();
        let t = (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * scale).unwrap();
        m.insert(name, t);
    };
    add("1.weight".into(), &[c, 4, 3, 3]);
    add("1.bias".into(), &[c]);
    for i in [3, 4, 5, 8, 9, 10, 13, 14, 15, 18] {
        for j in [0, 2, 4] {
            add(format!("{i}.conv.{j}.weight"), &[c, c, 3, 3]);
            add(format!("{i}.conv.{j}.bias"), &[c]);
        }
    }
    for i in [7, 12, 17] {
        add(format!("{i}.weight"), &[c, c, 3, 3]);
    }
    add("19.weight".into(), &[3, c, 3, 3]);
    add("19.bias".into(), &[3]);
    TinyDecoder::from_tensors(&m).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn seconds(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() {
    weft_kernels::alloc::keep_freed_memory();
    let rounds: usize = std::env::var("WEFT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dev = Device::Cpu;
    let spec = unet_from_json(SD15_UNET).unwrap();
    let unet = random(|vb| SdUNet::new(&spec, vb));
    let x = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), &dev).unwrap();
    let ctx = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev).unwrap();
    // A denoised estimate in the network's scale (SD latents × 0.18215 ≈ unit variance).
    let x0 = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), &dev).unwrap();
    let rgb = Previewer::latent2rgb(SD15_RGB);
    let tiny = Previewer::taesd(Arc::new(taesd()));
    let out_dir = tempfile::tempdir().unwrap();
    let preview_file = out_dir.path().join("preview.png");

    let step = || {
        unet.forward_at(&x, 500.0, &ctx).unwrap();
    };
    let latent2rgb = || rgb.draw(&x0).unwrap().png().unwrap();
    let taesd = || tiny.draw(&x0).unwrap().png().unwrap();
    let deliver = |png: &[u8]| {
        let event = Event::Preview {
            node: "sample".into(),
            step: 1,
            max: 20,
            width: 512,
            height: 512,
            png: PreviewPng(png.into()),
        };
        weft_core::atomic::write_atomic(&preview_file, png).unwrap();
        std::hint::black_box(event.to_json());
    };

    // Warm-ups, and the sizes of what is made.
    step();
    let small = latent2rgb();
    let large = taesd();
    deliver(&large);
    let (mut steps, mut rgbs, mut taesds, mut small_sends, mut large_sends) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        steps.push(seconds(step));
        taesds.push(seconds(|| {
            taesd();
        }));
        rgbs.push(median(
            (0..50)
                .map(|_| {
                    seconds(|| {
                        latent2rgb();
                    })
                })
                .collect(),
        ));
        small_sends.push(median(
            (0..50).map(|_| seconds(|| deliver(&small))).collect(),
        ));
        large_sends.push(median(
            (0..50).map(|_| seconds(|| deliver(&large))).collect(),
        ));
        eprintln!(
            "round {}: step {:.2} s, TAESD {:.3} s, latent2rgb {:.3} ms",
            round + 1,
            steps[round],
            taesds[round],
            rgbs[round] * 1e3
        );
    }
    let step_s = median(steps);
    let row = |name: &str, what: &str, s: f64| {
        println!(
            "| {name} | {what} | {:.3} ms | {:.4} % |",
            s * 1e3,
            100.0 * s / step_s
        );
    };
    println!("SD 1.5 UNet step, 512², batch 2, random weights: {step_s:.2} s (median of {rounds})");
    println!();
    println!("| preview | what | time | share of the step |");
    println!("|---|---|---|---|");
    row(
        "latent2rgb",
        &format!("64×64 projection + PNG ({} bytes)", small.len()),
        median(rgbs),
    );
    row(
        "TAESD",
        &format!("decode to 512×512 + PNG ({} bytes)", large.len()),
        median(taesds),
    );
    row(
        "delivery, latent2rgb",
        "JSON line (base64) + preview.png written atomically",
        median(small_sends),
    );
    row(
        "delivery, TAESD",
        "JSON line (base64) + preview.png written atomically",
        median(large_sends),
    );
}
