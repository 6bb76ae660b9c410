//! Tests of the LoRA module: closed-form checks of each adapter's change,
//! key resolution over synthetic SD 1.5 / SDXL / refiner weight names, and
//! whole files written to a temporary folder.

mod files;
mod keys;
mod math;
mod unets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::{apply, LoraFile, Target, Weights};

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(t: &Tensor, want: &[f32]) -> f32 {
    let got = values(t);
    assert_eq!(got.len(), want.len(), "element counts differ");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Writes `tensors` as a safetensors file `name` in `dir`.
fn write(
    dir: &Path,
    name: &str,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> PathBuf {
    let path = dir.join(name);
    let data: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    safetensors::serialize_to_file(data, metadata, &path).unwrap();
    path
}

/// Keys `module.part` for each `(part, tensor)`.
fn keyed(module: &str, parts: &[(&str, &Tensor)]) -> Vec<(String, Tensor)> {
    parts
        .iter()
        .map(|(part, t)| (format!("{module}.{part}"), (*t).clone()))
        .collect()
}

/// `base`, as a one-weight UNet's `conv_in.weight`, patched at `strength`
/// by a file holding `parts` for module `conv_in`.
fn patched(parts: &[(&str, &Tensor)], base: &Tensor, strength: f64) -> Result<Tensor, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "lora.safetensors",
        &keyed("conv_in", parts),
        None,
    );
    let lora = LoraFile::open(&path)?;
    let unet: Weights = [("conv_in.weight".to_string(), base.clone())].into();
    let resolved = lora.resolve(&[(Target::Unet, &unet)], 2);
    assert!(resolved.unmatched.is_empty(), "{:?}", resolved.unmatched);
    let mut out = apply(Target::Unet, &unet, &resolved, strength)?;
    Ok(out.remove("conv_in.weight").expect("patched"))
}

/// A 0-d tensor (kohya's `alpha`).
fn scalar(v: f32) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}
