//! Sampler overhead per step, excluding the model, on a 4×64×64 latent:
//! `cargo bench -p weft-sampling --bench sampler_overhead`.
//!
//! The reference in the same process is one forward of a tiny convolutional
//! network (4→64→64→4 channels, 3×3, batch 2 as under CFG), standing in for
//! the cheapest real model step.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Result, Tensor};
use weft_sampling::{
    sampler_by_name, sampler_names, Denoiser, Path, SampleContext, SamplerOptions, SeededSteps,
};

const STEPS: usize = 20;
const REPEATS: usize = 7;

/// Costs nothing: hands back a precomputed estimate.
struct Free(Tensor);

impl Denoiser for Free {
    fn denoise(&self, _: &Tensor, _: f64) -> Result<Tensor> {
        Ok(self.0.clone())
    }
    fn path(&self) -> Path {
        Path::Diffusion
    }
}

struct TinyNet {
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
}

impl TinyNet {
    fn new() -> Result<Self> {
        let d = &Device::Cpu;
        Ok(TinyNet {
            w1: Tensor::randn(0f32, 0.1, (64, 4, 3, 3), d)?,
            w2: Tensor::randn(0f32, 0.05, (64, 64, 3, 3), d)?,
            w3: Tensor::randn(0f32, 0.05, (4, 64, 3, 3), d)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.conv2d(&self.w1, 1, 1, 1, 1)?.silu()?;
        let h = h.conv2d(&self.w2, 1, 1, 1, 1)?.silu()?;
        h.conv2d(&self.w3, 1, 1, 1, 1)
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() -> Result<()> {
    let x = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &Device::Cpu)?;
    let net = TinyNet::new()?;
    let batch2 = Tensor::cat(&[&x, &x], 0)?;
    net.forward(&batch2)?;
    let model_step = median(
        (0..REPEATS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(net.forward(&batch2).unwrap());
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "tiny model step (batch 2, 4×64×64): {:.2} ms (median of {REPEATS})\n",
        model_step.as_secs_f64() * 1e3
    );
    println!(
        "{:<22} {:>16} {:>14}",
        "sampler", "overhead/step", "of model step"
    );

    let denoiser = Free(x.affine(0.5, 0.0)?.to_dtype(DType::F32)?);
    let sigmas: Vec<f64> = (0..=STEPS)
        .map(|i| 14.6 * (1.0 - i as f64 / STEPS as f64).powi(3))
        .collect();
    for name in sampler_names() {
        let sampler =
            sampler_by_name(name, SamplerOptions::default()).expect("listed samplers exist");
        let run = || {
            let mut noise = SeededSteps::new(0);
            let mut progress = |_: usize, _: usize| Ok(());
            let mut ctx = SampleContext {
                noise: &mut noise,
                progress: &mut progress,
            };
            let t = Instant::now();
            std::hint::black_box(
                sampler
                    .sample(&denoiser, x.clone(), &sigmas, &mut ctx)
                    .unwrap(),
            );
            t.elapsed()
        };
        run();
        let per_step = median((0..REPEATS).map(|_| run()).collect()) / STEPS as u32;
        println!(
            "{name:<22} {:>13.1} µs {:>13.2} %",
            per_step.as_secs_f64() * 1e6,
            100.0 * per_step.as_secs_f64() / model_step.as_secs_f64()
        );
    }
    Ok(())
}
