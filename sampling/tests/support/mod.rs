//! Shared by the sampling tests: diffusers fixtures, the toy model they use,
//! a denoiser that replays it, and replayed step noise.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::PathBuf;

use candle_core::{Device, Result, Tensor};
use serde_json::Value as Json;
use weft_sampling::{Denoiser, ModelSampling, NoiseSource, Path};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers")
}

/// A diffusers scheduler fixture (see tests/fixtures/schedulers/README.md).
pub fn fixture(name: &str) -> Json {
    let path = fixture_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn f64s(v: &Json) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

pub fn f32s(v: &Json) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

/// A fixture tensor (flattened, row-major) with the fixture's shape.
pub fn tensor(case: &Json, v: &Json) -> Tensor {
    let shape: Vec<usize> = case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    Tensor::from_vec(f32s(v), shape, &Device::Cpu).unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The fixtures' model: `0.5·tanh(x) + 0.1·t/1000`, in f64, rounded once to f32.
pub fn toy_model(x_in: &Tensor, t: f64) -> Result<Tensor> {
    let xs: Vec<f32> = x_in.flatten_all()?.to_vec1()?;
    let out: Vec<f32> = xs
        .iter()
        .map(|&x| (0.5 * (x as f64).tanh() + 0.1 * (t / 1000.0)) as f32)
        .collect();
    Tensor::from_vec(out, x_in.dims(), x_in.device())
}

/// Runs the toy model the way diffusers' pipeline did: the network sees
/// `x·input_scale(σ)` and the timestep diffusers paired with σ in the fixture.
pub struct FixtureDenoiser {
    pub sampling: ModelSampling,
    /// (σ, timestep) pairs from the fixture, looked up by nearest σ.
    pub table: Vec<(f64, f64)>,
    /// Every (σ, timestep) the sampler asked for, to check call sequences.
    pub calls: std::sync::Mutex<Vec<(f64, f64)>>,
}

impl FixtureDenoiser {
    pub fn new(sampling: ModelSampling, table: Vec<(f64, f64)>) -> Self {
        FixtureDenoiser {
            sampling,
            table,
            calls: Default::default(),
        }
    }

    pub fn timestep(&self, sigma: f64) -> f64 {
        self.table
            .iter()
            .min_by(|a, b| (a.0 - sigma).abs().total_cmp(&(b.0 - sigma).abs()))
            .map(|(_, t)| *t)
            .expect("non-empty table")
    }
}

impl Denoiser for FixtureDenoiser {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let t = self.timestep(sigma);
        self.calls.lock().unwrap().push((sigma, t));
        let x_in = x.affine(self.sampling.input_scale(sigma), 0.0)?;
        let out = toy_model(&x_in, t)?;
        self.sampling.denoised(sigma, x, &out)
    }

    fn path(&self) -> Path {
        self.sampling.path()
    }
}

/// Replays recorded draws in order; panics if the sampler asks for more.
pub struct ReplayNoise(pub VecDeque<Vec<f32>>);

impl ReplayNoise {
    /// All `step_noise` tensors of a fixture, in draw order.
    pub fn from_fixture(case: &Json) -> Self {
        let mut draws = VecDeque::new();
        for step in case["steps"].as_array().unwrap() {
            if let Some(list) = step["step_noise"].as_array() {
                for d in list {
                    draws.push_back(f32s(d));
                }
            }
        }
        ReplayNoise(draws)
    }
}

impl NoiseSource for ReplayNoise {
    fn sample(&mut self, like: &Tensor) -> Result<Tensor> {
        let data = self
            .0
            .pop_front()
            .expect("the sampler drew more noise than diffusers did");
        Tensor::from_vec(data, like.dims(), like.device())
    }
}

/// Largest absolute difference.
/// The largest elementwise |a − b| of two tensors of the same shape.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
