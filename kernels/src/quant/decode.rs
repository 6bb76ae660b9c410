//! Bytes of whole blocks → f32, for every [`StoredType`].
//!
//! The GGUF block decoders are candle's (`GgmlType::to_float`), which are
//! kept in step with llama.cpp; this file only views the bytes as blocks.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, GgmlType,
};
use candle_core::quantized::k_quants::{QK8_0, QK_K};
use half::{bf16, f16, slice::HalfFloatSliceExt};

use super::fp8;
use super::StoredType;

/// Decodes `bytes` (whole blocks of `ty`) into `out`, then multiplies by
/// `scale` when there is one. `out.len()` is the number of values.
pub(crate) fn decode(ty: StoredType, bytes: &[u8], scale: Option<f32>, out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), ty.bytes_for(out.len()));
    match ty {
        StoredType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        StoredType::F16 => halves::<f16>(bytes, out),
        StoredType::BF16 => halves::<bf16>(bytes, out),
        StoredType::F8E4M3 => {
            fp8::decode_into(&fp8::E4M3, bytes, scale.unwrap_or(1.0), out);
            return;
        }
        StoredType::F8E5M2 => {
            fp8::decode_into(&fp8::E5M2, bytes, scale.unwrap_or(1.0), out);
            return;
        }
        StoredType::Q4_0 => blocks::<BlockQ4_0>(bytes, out),
        StoredType::Q4_1 => blocks::<BlockQ4_1>(bytes, out),
        StoredType::Q5_0 => blocks::<BlockQ5_0>(bytes, out),
        StoredType::Q5_1 => blocks::<BlockQ5_1>(bytes, out),
        StoredType::Q8_0 => blocks::<BlockQ8_0>(bytes, out),
        StoredType::Q2K => blocks::<BlockQ2K>(bytes, out),
        StoredType::Q3K => blocks::<BlockQ3K>(bytes, out),
        StoredType::Q4K => blocks::<BlockQ4K>(bytes, out),
        StoredType::Q5K => blocks::<BlockQ5K>(bytes, out),
        StoredType::Q6K => blocks::<BlockQ6K>(bytes, out),
    }
    if let Some(s) = scale {
        out.iter_mut().for_each(|v| *v *= s);
    }
}

/// Values decoded per call, so the staging copy of unaligned bytes stays
/// on the stack-sized scale and in cache.
const CHUNK: usize = 8 * QK_K;

/// GGUF blocks: viewed in place when the bytes are aligned for the block
/// struct (always so in a GGUF file, whose data is 32-byte aligned),
/// otherwise copied into aligned blocks first.
fn blocks<B: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    let n = B::BLCK_SIZE;
    debug_assert!(n == QK8_0 || n == QK_K);
    if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()) {
        // SAFETY: the block structs are #[repr(C)] of f16/u8/i8 fields, for
        // which every bit pattern is valid; the pointer is aligned and the
        // length is whole blocks.
        let view =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) };
        B::to_float(view, out);
        return;
    }
    let mut staged: Vec<B> = vec![B::zeros(); CHUNK / n];
    for (src, dst) in bytes.chunks(CHUNK / n * size).zip(out.chunks_mut(CHUNK)) {
        let count = src.len() / size;
        // SAFETY: as above; `staged` is aligned and holds `count` blocks.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), staged.as_mut_ptr().cast::<u8>(), src.len())
        };
        B::to_float(&staged[..count], dst);
    }
}

/// f16/bf16, by half's vectorised slice conversion.
fn halves<H: Copy + Default>(bytes: &[u8], out: &mut [f32])
where
    [H]: HalfFloatSliceExt,
{
    let n = bytes.len() / 2;
    if (bytes.as_ptr() as usize).is_multiple_of(2) {
        // SAFETY: f16/bf16 are 2-byte plain data; aligned, whole values.
        let view = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<H>(), n) };
        view.convert_to_f32_slice(out);
        return;
    }
    let mut staged = vec![H::default(); CHUNK.min(n)];
    for (src, dst) in bytes.chunks(CHUNK * 2).zip(out.chunks_mut(CHUNK)) {
        let count = src.len() / 2;
        // SAFETY: `staged` holds at least `count` values.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), staged.as_mut_ptr().cast::<u8>(), src.len())
        };
        staged[..count].convert_to_f32_slice(dst);
    }
}

/// Encodes `values` (whole blocks) as `ty` into `out` (the matching byte
/// count), for [`quantize`](super::PackedWeight::quantize). fp8 values
/// are divided by `scale` first.
pub(crate) fn encode(ty: StoredType, values: &[f32], scale: f32, out: &mut [u8]) {
    match ty {
        StoredType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(values) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        StoredType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        StoredType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        StoredType::F8E4M3 => {
            for (o, v) in out.iter_mut().zip(values) {
                *o = fp8::encode_e4m3(v / scale);
            }
        }
        StoredType::F8E5M2 => {
            for (o, v) in out.iter_mut().zip(values) {
                *o = fp8::encode_e5m2(v / scale);
            }
        }
        StoredType::Q4_0 => encode_blocks::<BlockQ4_0>(values, out),
        StoredType::Q4_1 => encode_blocks::<BlockQ4_1>(values, out),
        StoredType::Q5_0 => encode_blocks::<BlockQ5_0>(values, out),
        StoredType::Q5_1 => encode_blocks::<BlockQ5_1>(values, out),
        StoredType::Q8_0 => encode_blocks::<BlockQ8_0>(values, out),
        StoredType::Q2K => encode_blocks::<BlockQ2K>(values, out),
        StoredType::Q3K => encode_blocks::<BlockQ3K>(values, out),
        StoredType::Q4K => encode_blocks::<BlockQ4K>(values, out),
        StoredType::Q5K => encode_blocks::<BlockQ5K>(values, out),
        StoredType::Q6K => encode_blocks::<BlockQ6K>(values, out),
    }
}

/// candle's `from_float` into aligned blocks, then their bytes.
fn encode_blocks<B: GgmlType>(values: &[f32], out: &mut [u8]) {
    let mut blocks = vec![B::zeros(); values.len() / B::BLCK_SIZE];
    B::from_float(values, &mut blocks);
    // SAFETY: plain-data blocks viewed as their bytes.
    let raw = unsafe {
        std::slice::from_raw_parts(
            blocks.as_ptr().cast::<u8>(),
            std::mem::size_of_val(blocks.as_slice()),
        )
    };
    out.copy_from_slice(raw);
}
