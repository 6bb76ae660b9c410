//! Helpers shared by the parity tests: reading a fixture folder's
//! references and running a guided sampler the way diffusers' pipelines do.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use weft_sampling::guidance::Cfg;
use weft_sampling::{sampler_by_name, Conditioning, Model, SampleContext, SamplerOptions};

/// `reference.safetensors` of a fixture folder.
pub fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap()
}

/// `reference.json` of a fixture folder.
pub fn json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap()
}

pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Row `row` of an id tensor.
pub fn ids(t: &Tensor, row: usize) -> Vec<u32> {
    t.get(row)
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A noise source for deterministic samplers.
pub struct NoNoise;

impl weft_sampling::NoiseSource for NoNoise {
    fn sample(&mut self, _: &Tensor) -> candle_core::Result<Tensor> {
        panic!("a deterministic sampler drew noise")
    }
}

/// Runs `sampler` from `x` over `sigmas` with classifier-free guidance at
/// `scale` (diffusers' convention), as a pipeline's denoising loop.
pub fn sample_cfg(
    model: Arc<Model>,
    positive: Conditioning,
    negative: Conditioning,
    scale: f64,
    sigmas: &[f64],
    x: Tensor,
    sampler: &str,
) -> Tensor {
    let guider = Cfg {
        model,
        positive,
        negative,
        scale,
        rescale: 0.0,
        norm_rescale: false,
        interval: None,
    };
    let mut noise = NoNoise;
    let mut progress = |_: usize, _: usize| -> candle_core::Result<()> { Ok(()) };
    let mut ctx = SampleContext {
        noise: &mut noise,
        progress: &mut progress,
    };
    let s = sampler_by_name(sampler, SamplerOptions::default()).unwrap();
    s.sample(&guider, x, sigmas, &mut ctx).unwrap()
}

/// The largest |a − b| over the largest |b|: an error relative to the
/// reference's scale.
pub fn relative(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    weft_kernels::testing::max_diff(a, b) / scale.max(1e-6)
}
