//! `weft quantize`: a model file rewritten as GGUF with its weight
//! matrices in a block type, as city96's ComfyUI-GGUF converter writes
//! them, so ComfyUI-GGUF and weft read each other's files.
//!
//! The rules follow that converter: tensor names are kept (original key
//! names), matrices whose rows are whole blocks are quantised, other
//! matrices and convolutions are kept in f16, and vectors (biases, norms)
//! in f32, where quantisation would cost quality for no memory.

use std::path::Path;

use weft_kernels::quant::{write_gguf, GgufValue, PackedWeight, StoredType};

use crate::weights::WeightFile;

/// What a conversion did.
#[derive(Debug, Default, PartialEq)]
pub struct QuantizeReport {
    pub quantized: usize,
    pub kept_f16: usize,
    pub kept_f32: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The architecture name city96's loaders expect in `general.architecture`.
fn architecture(names: &[String]) -> &'static str {
    let has = |p: &str| names.iter().any(|n| n.contains(p));
    if has("double_blocks.") {
        "flux"
    } else if has("joint_blocks.") {
        "sd3"
    } else if has("encoder.block.") {
        "t5encoder"
    } else if has("input_blocks.") {
        "sdxl"
    } else {
        "unknown"
    }
}

/// One tensor by the converter's rules: a matrix whose rows are whole
/// blocks in `ty`, other matrices and convolutions in f16, vectors in f32.
pub fn quantize_packed(
    t: &candle_core::Tensor,
    ty: StoredType,
) -> candle_core::Result<PackedWeight> {
    if t.rank() == 2 && t.dim(1)? % ty.block_size() == 0 {
        PackedWeight::quantize(t, ty)
    } else if t.rank() >= 2 {
        PackedWeight::quantize(t, StoredType::F16)
    } else {
        PackedWeight::quantize(t, StoredType::F32)
    }
}

/// Rewrites `input` (safetensors or GGUF) as GGUF at `output`, matrices in
/// `ty`; the file appears whole or not at all.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    ty: StoredType,
) -> Result<QuantizeReport, String> {
    if ty.ggml().is_none() {
        return Err(format!(
            "{ty} is not a GGUF type (use q8_0, q6_k, q5_k, q4_k, q4_0, f16, bf16, …)"
        ));
    }
    let file = WeightFile::open(input)?;
    let mut names: Vec<String> = file.shapes().into_keys().collect();
    names.sort();
    let err = |name: &str, e: candle_core::Error| format!("{}: `{name}`: {e}", input.display());
    let mut report = QuantizeReport {
        bytes_in: std::fs::metadata(input).map(|m| m.len()).unwrap_or(0),
        ..Default::default()
    };
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        // ComfyUI's fp8 scales are folded into the values when loading.
        if name.ends_with(".scale_weight") || name.ends_with(".scale_input") || name == "scaled_fp8"
        {
            continue;
        }
        let t = file.load_f32(name).map_err(|e| err(name, e))?;
        let packed = quantize_packed(&t, ty).map_err(|e| err(name, e))?;
        match packed.stored_type() {
            StoredType::F32 => report.kept_f32 += 1,
            StoredType::F16 if ty != StoredType::F16 => report.kept_f16 += 1,
            _ => report.quantized += 1,
        }
        tensors.push((name.as_str(), packed));
    }
    let arch = GgufValue::String(architecture(&names).to_string());
    let kind = GgufValue::String(format!("weft quantize {ty}"));
    let refs: Vec<(&str, &PackedWeight)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    write_gguf(
        output,
        &[
            ("general.architecture", &arch),
            ("general.quantized_by", &kind),
        ],
        &refs,
    )
    .map_err(|e| format!("{}: {e}", output.display()))?;
    report.bytes_out = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    Ok(report)
}
