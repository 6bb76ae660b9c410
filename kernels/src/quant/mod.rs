//! Weights kept compressed in memory: GGUF block quantisations, fp16/bf16
//! and (scaled) fp8, multiplied without expanding the whole weight.
//!
//! - [`StoredType`]: the storage types and their block geometry;
//! - [`PackedWeight`]: one weight's bytes (borrowed from a memory map or
//!   owned), decoding, quantising and [`PackedWeight::matmul_t`];
//! - [`GgufFile`] / [`write_gguf`]: GGUF files, memory-mapped;
//! - [`fp8`]: the fp8 decoding tables.
//!
//! Block decoders and quantisers are candle's (llama.cpp's); this module
//! adds the layout, the tiled product and the files.

mod decode;
mod dtype;
pub mod fp8;
mod gguf;
mod integer;
mod matmul;
mod packed;

pub use candle_core::quantized::gguf_file::Value as GgufValue;
pub use dtype::StoredType;
pub use gguf::{write_gguf, GgufFile};
pub use packed::{PackedWeight, SharedBytes};

#[cfg(test)]
mod tests;
