//! Inputs and comparisons shared by the kernels' tests and by the model
//! and node tests downstream.

use candle_core::{Device, Tensor};

/// Smooth, non-repeating test values (no randomness, so failures repeat).
pub fn wavy_values(n: usize, phase: f64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f64 * 0.37 + phase).sin() * 2.0 + (i as f64 * 0.011).cos()) as f32)
        .collect()
}

/// [`wavy_values`] as a CPU tensor of `shape`.
pub fn wavy(shape: &[usize], phase: f64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(wavy_values(n, phase), shape, &Device::Cpu).unwrap()
}

/// The largest elementwise |a − b|.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}
