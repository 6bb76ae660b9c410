//! Integer products for Q8_0, Q4_K and Q6_K through candle's AVX512-VNNI
//! kernels.
//!
//! Why: decoding to f32 and multiplying with f32 FMAs can at best match a
//! dense f32 layer. candle 0.11 carries llama.cpp-style kernels that
//! quantise the activations to 8 bits per block once per product and
//! multiply i8×u8 → i32 with `vpdpbusd`, 64 products per instruction: about
//! 2.2× the f32 layer on a Flux block's shapes (benches/quant_matmul.rs).
//! They are reached only through a `QTensor`, which owns its bytes, so one
//! is built per product from the stored bytes (a copy of one layer's
//! weight, O(out·in) against the product's O(rows·out·in)) and dropped
//! after: the weights stay compressed and mapped between products.
//!
//! Each output tile is computed by one task of fixed shape, so the result
//! does not depend on the thread count; it differs from the f32 path by
//! the activations' 8-bit rounding (tested within 1% of the output scale).
//! Without AVX512-VNNI, or for shapes the kernels do not take, the f32
//! path runs instead.

use std::borrow::Cow;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Result, Tensor};

use super::{PackedWeight, StoredType};

/// Rows of `x` from which the per-product copy of the weight is worth it.
const MIN_ROWS: usize = 32;

/// Whether the integer kernels take this product: a type they have, output
/// features in tiles of 16, rows in K-blocks of 256, enough rows, and a
/// CPU with AVX512-VNNI (where candle runs them; elsewhere it falls back
/// to a generic loop slower than ours).
pub(crate) fn pays(w: &PackedWeight, rows: usize) -> bool {
    let (n, k) = w.rows_cols();
    matches!(
        w.stored_type(),
        StoredType::Q8_0 | StoredType::Q4K | StoredType::Q6K
    ) && w.scale().is_none()
        && rows >= MIN_ROWS
        && n.is_multiple_of(16)
        && k.is_multiple_of(256)
        && vnni()
}

#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni() -> bool {
    false
}

/// `x·Wᵀ (+ bias)` by candle's quantised matmul; `x` is f32, contiguous,
/// on the CPU.
pub(crate) fn product(w: &PackedWeight, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let g = w
        .stored_type()
        .ggml()
        .expect("pays() admits GGUF types only");
    let storage = QStorage::from_data(Cow::Borrowed(w.bytes()), &Device::Cpu, g)?;
    let mm = QMatMul::from_qtensor(QTensor::new(storage, w.shape())?)?;
    let y = mm.forward(x)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}
