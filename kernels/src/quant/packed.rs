//! [`PackedWeight`]: a weight kept in its stored type, borrowing a memory
//! map or owning its bytes.
//!
//! Why: a 12B-parameter Flux in f32 needs 48 GB; in Q8_0 it needs 12.7.
//! Keeping the bytes as stored and decoding a few rows at a time (see
//! [`matmul_t`](PackedWeight::matmul_t)) is what lets such a model fit.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use super::{decode, fp8, StoredType};

/// Bytes that a [`PackedWeight`] reads: a memory map, a `Vec<u8>`, ...
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A weight of shape `[rows, cols]` (or any rank: the last dimension is the
/// row length) stored as [`StoredType`]. Cloning shares the bytes.
#[derive(Clone)]
pub struct PackedWeight {
    data: SharedBytes,
    offset: usize,
    len: usize,
    ty: StoredType,
    scale: Option<f32>,
    shape: Vec<usize>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeight")
            .field("type", &self.ty)
            .field("shape", &self.shape)
            .field("scale", &self.scale)
            .field("bytes", &self.len)
            .finish()
    }
}

impl PackedWeight {
    /// A view of `data[offset..offset + len]` as a `shape` tensor of `ty`;
    /// `scale` multiplies every value (ComfyUI's `scale_weight`). Checks
    /// that the byte count matches and that rows are whole blocks.
    pub fn from_bytes(
        data: SharedBytes,
        offset: usize,
        len: usize,
        ty: StoredType,
        shape: &[usize],
        scale: Option<f32>,
    ) -> Result<PackedWeight> {
        let cols = *shape.last().ok_or_else(|| {
            candle_core::Error::Msg("a packed weight needs at least one dimension".into())
        })?;
        let count: usize = shape.iter().product();
        if !cols.is_multiple_of(ty.block_size()) {
            candle_core::bail!(
                "rows of {cols} values are not whole {ty} blocks of {}",
                ty.block_size()
            );
        }
        let want = ty.bytes_for(count);
        if len != want {
            candle_core::bail!("a {ty} tensor of shape {shape:?} takes {want} bytes, got {len}");
        }
        let available = (*data).as_ref().len();
        if offset.checked_add(len).is_none_or(|end| end > available) {
            candle_core::bail!(
                "a {ty} tensor of {len} bytes at offset {offset} overruns its {available}-byte source"
            );
        }
        if scale.is_some_and(|s| !s.is_finite()) {
            candle_core::bail!("a weight scale must be finite, got {scale:?}");
        }
        Ok(PackedWeight {
            data,
            offset,
            len,
            ty,
            scale,
            shape: shape.to_vec(),
        })
    }

    /// [`from_bytes`](Self::from_bytes) over an owned buffer.
    pub fn from_vec(
        bytes: Vec<u8>,
        ty: StoredType,
        shape: &[usize],
        scale: Option<f32>,
    ) -> Result<PackedWeight> {
        let len = bytes.len();
        Self::from_bytes(Arc::new(bytes), 0, len, ty, shape, scale)
    }

    /// A safetensors tensor, viewed in place: F32, F16, BF16, F8_E4M3 or
    /// F8_E5M2, with ComfyUI's optional per-tensor `scale_weight`.
    pub fn from_safetensors_bytes(
        dtype: safetensors::Dtype,
        shape: &[usize],
        data: SharedBytes,
        offset: usize,
        len: usize,
        scale: Option<f32>,
    ) -> Result<PackedWeight> {
        use safetensors::Dtype;
        let ty = match dtype {
            Dtype::F32 => StoredType::F32,
            Dtype::F16 => StoredType::F16,
            Dtype::BF16 => StoredType::BF16,
            Dtype::F8_E4M3 => StoredType::F8E4M3,
            Dtype::F8_E5M2 => StoredType::F8E5M2,
            other => candle_core::bail!("safetensors weights of type {other:?} are not supported"),
        };
        // A scalar is stored as one value.
        let shape = if shape.is_empty() { &[1][..] } else { shape };
        Self::from_bytes(data, offset, len, ty, shape, scale)
    }

    /// The stored type.
    pub fn stored_type(&self) -> StoredType {
        self.ty
    }

    /// The per-tensor scale, if any.
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// The shape, in PyTorch order.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// `(rows, row length)`: all dimensions but the last, and the last.
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = *self.shape.last().expect("checked at construction");
        let rows = self.shape[..self.shape.len() - 1].iter().product();
        (rows, cols)
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &(*self.data).as_ref()[self.offset..self.offset + self.len]
    }

    /// Bytes the weight occupies, for memory budgets.
    pub fn stored_size(&self) -> usize {
        self.len
    }

    /// Rows `start .. start + len` of a 2-D weight, sharing the bytes: a
    /// fused q/k/v projection split into its parts without a copy.
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<PackedWeight> {
        let (rows, cols) = self.rows_cols();
        if self.shape.len() != 2 || start + len > rows {
            candle_core::bail!(
                "rows {start}..{} of a packed weight of shape {:?}",
                start + len,
                self.shape
            );
        }
        let row_bytes = self.ty.bytes_for(cols);
        Self::from_bytes(
            self.data.clone(),
            self.offset + start * row_bytes,
            len * row_bytes,
            self.ty,
            &[len, cols],
            self.scale,
        )
    }

    /// Decodes rows `rows` into `out` (`rows.len() × cols` values).
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) -> Result<()> {
        let (n, cols) = self.rows_cols();
        if rows.start > rows.end || rows.end > n {
            candle_core::bail!("rows {rows:?} of a weight with {n}");
        }
        if out.len() != rows.len() * cols {
            candle_core::bail!(
                "{} rows of {cols} need {} values, the buffer has {}",
                rows.len(),
                rows.len() * cols,
                out.len()
            );
        }
        let row_bytes = self.ty.bytes_for(cols);
        let bytes = &self.bytes()[rows.start * row_bytes..rows.end * row_bytes];
        decode::decode(self.ty, bytes, self.scale, out);
        Ok(())
    }

    /// The whole weight as an f32 tensor of its shape (rows decoded in
    /// parallel).
    pub fn to_f32_tensor(&self) -> Result<Tensor> {
        let (n, cols) = self.rows_cols();
        let mut out = vec![0f32; n * cols];
        if cols > 0 {
            const ROWS: usize = 64;
            out.par_chunks_mut(ROWS * cols)
                .enumerate()
                .try_for_each(|(i, chunk)| {
                    let r0 = i * ROWS;
                    self.dequantize_rows(r0..r0 + chunk.len() / cols, chunk)
                })?;
        }
        Tensor::from_vec(out, self.shape.as_slice(), &Device::Cpu)
    }

    /// Stores `tensor` (any float dtype, rows = its last dimension) as
    /// `ty`. GGUF types use candle's (llama.cpp's) quantizers; fp8 gets a
    /// per-tensor scale that maps the largest |value| to the format's
    /// largest finite value, as ComfyUI's scaled fp8. Rows that are not
    /// whole blocks are an error, so a caller can fall back to F16.
    pub fn quantize(tensor: &Tensor, ty: StoredType) -> Result<PackedWeight> {
        let shape = tensor.dims().to_vec();
        let Some(&cols) = shape.last() else {
            candle_core::bail!("cannot quantize a scalar to {ty}");
        };
        if !cols.is_multiple_of(ty.block_size()) {
            candle_core::bail!(
                "cannot quantize rows of {cols} values to {ty}: not a multiple of its block of {}",
                ty.block_size()
            );
        }
        let values: Vec<f32> = tensor
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let scale = match ty {
            StoredType::F8E4M3 | StoredType::F8E5M2 => {
                let max = if ty == StoredType::F8E4M3 {
                    fp8::E4M3_MAX
                } else {
                    fp8::E5M2_MAX
                };
                let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                if !amax.is_finite() {
                    candle_core::bail!("cannot quantize non-finite values to {ty}");
                }
                Some(if amax > 0.0 { amax / max } else { 1.0 })
            }
            _ => None,
        };
        let row_bytes = ty.bytes_for(cols);
        let mut bytes = vec![0u8; ty.bytes_for(values.len())];
        if cols > 0 {
            // Many rows per task: the quantizers are cheap per row.
            const ROWS: usize = 16;
            bytes
                .par_chunks_mut(ROWS * row_bytes)
                .zip(values.par_chunks(ROWS * cols))
                .for_each(|(out, vals)| decode::encode(ty, vals, scale.unwrap_or(1.0), out));
        }
        Self::from_vec(bytes, ty, &shape, scale)
    }
}
