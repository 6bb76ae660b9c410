//! weft's CPU compute kernels, for the networks in `weft-models`.
//!
//! The main types are the layers in [`layers`] — [`Conv2d`], [`Linear`] and
//! [`GroupNorm`] — which keep candle-nn's parameter names and shapes, so
//! checkpoints load unchanged, and run on:
//! - [`attention`]: softmax(QKᵀ/√d)·V fused, never materialising the scores;
//! - [`winograd`]: 3×3 stride-1 convolution by minimal filtering;
//! - [`pointwise`]: vectorised `exp`, `erf`, SiLU, GELU and softmax;
//! - [`resize`]: torch's bilinear resizing, for masks and latents;
//! - [`alloc`]: the allocator setting that keeps freed tensor memory;
//! - [`quant`]: weights kept compressed (GGUF, f16/bf16, fp8) and their
//!   matrix product, behind [`Linear`].
//!
//! Every kernel is tested against a direct definition, and every result is
//! independent of the thread count. Off the CPU, or off f32, each falls back
//! to candle's own ops.
//!
//! Architecture invariant: this crate knows no model. Nothing here names a
//! checkpoint key, a family or a node.

pub mod alloc;
pub mod attention;
pub mod layers;
pub mod pointwise;
pub mod quant;
pub mod resize;
pub mod testing;
pub mod winograd;

pub use attention::attention;
pub use layers::{conv2d, geglu, group_norm, linear, Conv2d, GroupNorm, Linear};
