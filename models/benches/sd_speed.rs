//! Stable Diffusion 1.5 at full size, random weights: one UNet step at
//! 512×512 (batch 2: conditional and unconditional) and one VAE decode at
//! 512×512, for weft and for PyTorch/diffusers on the same machine in the
//! same run, with the ratio and each side's peak RSS.
//!
//!   cargo bench -p weft-models --bench sd_speed
//!
//! PyTorch comes from `WEFT_BENCH_PYTHON` (default `python3`) running
//! `scripts/bench_sd_torch.py`; without torch only weft's figures print.
//! Each measurement runs in its own process, so peak RSS is per phase, and
//! the two sides alternate for [`ROUNDS`] rounds of a warm-up and [`RUNS`]
//! timed runs (`WEFT_BENCH_ROUNDS`, `WEFT_BENCH_RUNS`), so that this
//! machine's drift (±25 % over minutes) falls on both alike; the table gives
//! the median over all rounds and the ratio of medians, then each round's
//! ratio. The process and table code is shared with `sdxl_speed`
//! (`benches/common`).

mod common;

use candle_core::{Device, Tensor};
use common::{child_args, env_count, log_memory, measure, random, Driver};
use weft_models::sd::config::{unet_from_json, vae_from_json};
use weft_models::sd::unet::SdUNet;
use weft_models::vae::Vae;

/// diffusers' `unet/config.json` of Stable Diffusion 1.5.
const SD15_UNET: &str = r#"{
  "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
  "norm_num_groups": 32, "norm_eps": 1e-05, "sample_size": 64
}"#;

/// diffusers' `vae/config.json` of Stable Diffusion 1.5.
const SD15_VAE: &str = r#"{
  "in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 512, 512],
  "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32,
  "scaling_factor": 0.18215, "sample_size": 512
}"#;

const RUNS: usize = 3;
const ROUNDS: usize = 3;

fn phase(name: &str, runs: usize) {
    weft_kernels::alloc::keep_freed_memory();
    let dev = Device::Cpu;
    match name {
        "unet" => {
            let spec = unet_from_json(SD15_UNET).unwrap();
            let unet = random(|vb| SdUNet::new(&spec, vb));
            log_memory("built");
            // WEFT_BENCH_LATENT: another latent side, for memory and scaling studies.
            let side = env_count("WEFT_BENCH_LATENT", 64);
            let x = Tensor::randn(0f32, 1.0, (2, 4, side, side), &dev).unwrap();
            let ctx = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev).unwrap();
            measure("unet", runs, || {
                unet.forward_at(&x, 500.0, &ctx).unwrap();
            });
        }
        "vae" => {
            let spec = vae_from_json(SD15_VAE).unwrap();
            let vae = random(|vb| Vae::new(&spec, vb));
            log_memory("built");
            let z = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev).unwrap();
            measure("vae", runs, || {
                vae.decode_raw(&z).unwrap();
            });
        }
        other => panic!("unknown phase {other}"),
    }
}

fn main() {
    if let Some((p, runs)) = child_args() {
        return phase(&p, runs);
    }
    let driver = Driver::new(RUNS, ROUNDS);
    println!("SD 1.5, random weights, {}", driver.describe());
    driver.compare(
        &[
            ("unet", "UNet step, 512², batch 2"),
            ("vae", "VAE decode, 512²"),
        ],
        |p| driver.torch("scripts/bench_sd_torch.py", p, &[]),
    );
}
