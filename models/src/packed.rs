//! Linear layers served from a [`TensorMap`] without expanding them to
//! f32: kept in their stored type (f16, bf16, fp8, scaled fp8, GGUF
//! blocks) as views of the memory-mapped file, or quantised on load.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_kernels::layers::Linear;
use weft_kernels::quant::{PackedWeight, StoredType};

use crate::loader::PackedSource;
use crate::weights::{TensorMap, Transform};

/// How a model's linear weights are held in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightMode {
    /// As stored: f32 dense, anything narrower packed (ComfyUI's `default`).
    Stored,
    /// Everything expanded to f32.
    Dense,
    /// Quantised on load to this type (ComfyUI's `fp8_e4m3fn`; weft's
    /// GGUF types too); rows that are not whole blocks stay as stored.
    Quantize(StoredType),
}

impl WeightMode {
    /// The `weight_dtype` names: ComfyUI's (`default`, `fp8_e4m3fn`,
    /// `fp8_e4m3fn_fast`, `fp8_e5m2`), `f32`, and GGUF types (`q8_0`, …).
    pub fn parse(name: &str) -> std::result::Result<WeightMode, String> {
        match name {
            "default" | "" => Ok(WeightMode::Stored),
            "f32" => Ok(WeightMode::Dense),
            "fp8_e4m3fn_fast" => Ok(WeightMode::Quantize(StoredType::F8E4M3)),
            other => other
                .parse::<StoredType>()
                .map(WeightMode::Quantize)
                .map_err(|e| e.to_string()),
        }
    }

    /// The names offered on loaders.
    pub const CHOICES: [&'static str; 10] = [
        "default",
        "fp8_e4m3fn",
        "fp8_e4m3fn_fast",
        "fp8_e5m2",
        "f16",
        "bf16",
        "q8_0",
        "q6_k",
        "q4_k",
        "f32",
    ];
}

/// Bytes a network built from `map` holds in memory with its linears held
/// as `mode` says: f32 tensors, and quantised copies; weights left as
/// views of a memory map cost nothing the OS cannot take back. Every 2-D
/// `….weight` but an embedding table counts as a linear.
pub fn resident_bytes(map: &TensorMap, mode: WeightMode) -> usize {
    map.sources()
        .map(|(name, source)| {
            if let Some(t) = map.overridden(name) {
                return t.elem_count() * 4;
            }
            let (file, key) = (&source.file, source.key.as_str());
            let shape = file.shape(key).unwrap_or_default();
            let n: usize = shape.iter().product();
            let n = match source.transform {
                Transform::Chunk { count, parts, .. } => n * count / parts.max(1),
                _ => n,
            };
            let linear = shape.len() == 2
                && name.ends_with(".weight")
                && !name.contains("embed")
                && !name.starts_with("shared.");
            let viewed = matches!(source.transform, Transform::Same | Transform::Chunk { .. });
            match mode {
                WeightMode::Stored if linear && viewed && !file.is_f32(key) => 0,
                WeightMode::Quantize(ty)
                    if linear && shape.last().is_some_and(|c| c % ty.block_size() == 0) =>
                {
                    ty.bytes_for(n)
                }
                _ => n * 4,
            }
        })
        .sum()
}

/// A [`PackedSource`] over a component's tensors.
pub struct MappedLinears {
    pub map: TensorMap,
    pub mode: WeightMode,
}

impl MappedLinears {
    /// The stored weight `name` as a packed view, when it is not f32 and
    /// its transform is a row range.
    fn stored(&self, name: &str) -> Option<Result<PackedWeight>> {
        if self.map.overridden(name).is_some() {
            return None;
        }
        let source = self.map.source(name)?;
        let (file, key) = (&source.file, source.key.as_str());
        if file.is_f32(key) {
            return None;
        }
        let rows = match source.transform {
            Transform::Same => None,
            Transform::Chunk {
                index,
                count,
                parts,
            } => {
                let n = file.shape(key)?.first().copied()?;
                Some(index * n / parts..(index + count) * n / parts)
            }
            // Rearranged or reshaped: served dense.
            _ => return None,
        };
        Some(file.packed(key, rows, file.scale_of(key)))
    }
}

impl PackedSource for MappedLinears {
    fn linear(
        &self,
        name: &str,
        out_dim: usize,
        in_dim: usize,
        bias: Option<Tensor>,
    ) -> Option<Result<Linear>> {
        let weight = match self.mode {
            WeightMode::Dense => return None,
            WeightMode::Stored => self.stored(name)?,
            WeightMode::Quantize(ty) => {
                self.map.source(name)?;
                let dense = match self.map.load(name) {
                    Ok(t) => t,
                    Err(e) => return Some(Err(candle_core::Error::Msg(e))),
                };
                match PackedWeight::quantize(&dense, ty) {
                    Ok(w) => Ok(w),
                    // Rows that are not whole blocks: as stored, as city96's converter.
                    Err(_) => self.stored(name)?,
                }
            }
        };
        Some(weight.and_then(|w| {
            if w.shape() != [out_dim, in_dim] {
                candle_core::bail!(
                    "`{name}` has shape {:?}, expected [{out_dim}, {in_dim}]",
                    w.shape()
                );
            }
            Ok(Linear::packed(Arc::new(w), bias))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_dtypes_parse_as_comfyui_names_them() {
        assert_eq!(WeightMode::parse("default").unwrap(), WeightMode::Stored);
        assert_eq!(
            WeightMode::parse("fp8_e4m3fn").unwrap(),
            WeightMode::Quantize(StoredType::F8E4M3)
        );
        assert_eq!(
            WeightMode::parse("q4_k").unwrap(),
            WeightMode::Quantize(StoredType::Q4K)
        );
        for name in WeightMode::CHOICES {
            WeightMode::parse(name).unwrap();
        }
        assert!(WeightMode::parse("q9").unwrap_err().contains("q9"));
    }
}
