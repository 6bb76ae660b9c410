//! What the transformer families (T5, SD3, Flux) are built from: a
//! `VarBuilder` for the small tensors, and linear layers that may stay in
//! their stored type (bf16, fp8, GGUF blocks) rather than become f32.
//!
//! Why not a VarBuilder alone: it can only hand out dense tensors, and a
//! 12 B-parameter Flux is 48 GB at f32. The model code asks this loader
//! for a [`Linear`] and never learns how its weight is stored, so each
//! model is written once over every weight format.

use std::sync::Arc;

use candle_core::{Result, Shape, Tensor};
use candle_nn::VarBuilder;
use weft_kernels::layers::{self, Linear};

/// Where compressed linear weights come from, by full tensor name
/// (`….weight`): a layer with `bias`, or `None` when the weight is to be
/// loaded dense.
pub trait PackedSource: Send + Sync {
    fn linear(
        &self,
        name: &str,
        out_dim: usize,
        in_dim: usize,
        bias: Option<Tensor>,
    ) -> Option<Result<Linear>>;
}

/// A position in a model's weights: a `VarBuilder` prefix plus the
/// compressed weights, if any.
#[derive(Clone)]
pub struct Loader<'a> {
    vb: VarBuilder<'a>,
    packed: Option<Arc<dyn PackedSource>>,
}

impl<'a> Loader<'a> {
    /// Dense weights only.
    pub fn new(vb: VarBuilder<'a>) -> Loader<'a> {
        Loader { vb, packed: None }
    }

    /// Linear weights from `packed` where it has them, the rest from `vb`.
    pub fn with_packed(vb: VarBuilder<'a>, packed: Arc<dyn PackedSource>) -> Loader<'a> {
        Loader {
            vb,
            packed: Some(packed),
        }
    }

    pub fn pp<S: ToString>(&self, name: S) -> Loader<'a> {
        Loader {
            vb: self.vb.pp(name),
            packed: self.packed.clone(),
        }
    }

    /// The dense `VarBuilder` at this position (norms, embeddings, convs).
    pub fn vb(&self) -> &VarBuilder<'a> {
        &self.vb
    }

    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str) -> Result<Tensor> {
        self.vb.get(shape, name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    /// A linear layer `in_dim → out_dim` with a bias.
    pub fn linear(&self, in_dim: usize, out_dim: usize) -> Result<Linear> {
        self.linear_with(in_dim, out_dim, true)
    }

    /// A linear layer without a bias.
    pub fn linear_no_bias(&self, in_dim: usize, out_dim: usize) -> Result<Linear> {
        self.linear_with(in_dim, out_dim, false)
    }

    fn linear_with(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        if let Some(packed) = &self.packed {
            let name = format!("{}.weight", self.vb.prefix());
            let b = if bias {
                Some(self.vb.get(out_dim, "bias")?)
            } else {
                None
            };
            if let Some(layer) = packed.linear(&name, out_dim, in_dim, b) {
                return layer;
            }
        }
        if bias {
            layers::linear(in_dim, out_dim, self.vb.clone())
        } else {
            layers::linear_no_bias(in_dim, out_dim, self.vb.clone())
        }
    }
}
