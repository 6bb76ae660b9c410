//! A node's view of one call, [`NodeContext`], and the [`Node`] trait it is
//! run through: the same shape as weft's own `NodeContext` and `Node`.
//!
//! Depends on `context` and `value` (and `handle`, for the input readers).

use std::ops::Deref;

use candle_core::Tensor;
use weft_schema::NodeSchema;

use crate::context::Context;
use crate::error::Result;
use crate::handle::Handle;
use crate::value::{Inputs, Value};

/// Everything a node's `run` gets: the host's services for this call
/// (through [`Deref`] to [`Context`]: `cx.progress(..)`,
/// `cx.check_cancelled()`, `cx.step_noise(..)`, and `&cx` wherever a
/// `&Context` is asked for, as in [`Handle::denoise`]) and the typed input
/// readers (`cx.float("amount")`, `cx.tensor("image")`, ...).
pub struct NodeContext<'a> {
    /// The node's inputs; the readers below are shorthands for its own.
    pub inputs: Inputs<'a>,
    context: Context,
}

impl<'a> NodeContext<'a> {
    pub(crate) fn new(context: Context, inputs: Inputs<'a>) -> Self {
        NodeContext { inputs, context }
    }

    /// The host's services for this call (also reached through `Deref`).
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Whether an optional input was given.
    pub fn has(&self, name: &str) -> bool {
        self.inputs.has(name)
    }

    pub fn int(&self, name: &str) -> Result<i64> {
        self.inputs.int(name)
    }

    /// A FLOAT (an INT widens).
    pub fn float(&self, name: &str) -> Result<f64> {
        self.inputs.float(name)
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        self.inputs.bool(name)
    }

    pub fn str(&self, name: &str) -> Result<&'a str> {
        self.inputs.str(name)
    }

    /// An IMAGE, MASK, SIGMAS or LATENT input's tensor (copied once).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.inputs.tensor(name)
    }

    /// A LATENT input's latent space, to pass on with derived latents.
    pub fn latent_space(&self, name: &str) -> Result<&'a str> {
        self.inputs.latent_space(name)
    }

    /// A host object (GUIDER, MODEL, ...), retained so it may be kept.
    pub fn handle(&self, name: &str) -> Result<Handle> {
        self.inputs.handle(name)
    }

    /// A CONDITIONING input as a view of its entries (ABI 1.1).
    pub fn conditioning(&self, name: &str) -> Result<crate::Conditioning> {
        crate::Conditioning::from_handle(self.handle(name)?)
    }

    /// A MODEL input, to denoise with or patch (ABI 1.1).
    pub fn model(&self, name: &str) -> Result<crate::Model> {
        crate::Model::from_handle(self.handle(name)?)
    }
}

impl Deref for NodeContext<'_> {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.context
    }
}

/// A node type, as in weft itself. Most are written as a
/// [`NodeDef`](crate::NodeDef) with [`Define::run`](crate::Define::run);
/// implement this for node types that carry state of their own. One
/// instance serves every node of its type, possibly from several threads at
/// once, so it keeps no run state.
pub trait Node: Send + Sync + 'static {
    fn schema(&self) -> &NodeSchema;
    /// Computes the outputs, in the schema's output order.
    fn run(&self, cx: &NodeContext<'_>) -> Result<Vec<Value>>;
}
