//! Declaring a node type in one place: its schema and its `run`, as one
//! value.
//!
//! ```
//! use weft_core::{Define, InputSpec, NodeDef, NodeSchema, Value, ValueType};
//!
//! fn double() -> NodeDef {
//!     NodeSchema::new("Double", "utils", "Twice the input.")
//!         .input(InputSpec::int("x").doc("The number."))
//!         .output("value", ValueType::Int, "2·x.")
//!         .run(|cx| Ok(Value::Int(2 * cx.int("x")?)))
//! }
//! # let mut registry = weft_core::Registry::new();
//! # registry.register(double()).unwrap();
//! ```
//!
//! A family of nodes is then a function returning `Vec<NodeDef>`, and
//! [`crate::Registry::register_all`] adds the list. Handle values (MODEL,
//! VAE, …) state their [`ValueType`] once, by implementing [`Handle`], so
//! `cx.get::<Vae>("vae")` and [`Value::handle`] need no type tag. The
//! [`crate::Node`] trait stays for node types that keep state.

use std::sync::Arc;

use weft_schema::{IntoOutputs, NodeSchema, ValueType};

use crate::node::{Inputs, Node, NodeContext, NodeError};
use crate::value::{Latent, Object, Value};

type RunFn = dyn Fn(&NodeContext<'_>) -> Result<Vec<Value>, NodeError> + Send + Sync;
type InputsFn<T> = dyn Fn(&Inputs) -> Result<T, NodeError> + Send + Sync;

/// A node type made of a schema and closures; see the module docs.
pub struct NodeDef {
    schema: NodeSchema,
    run: Box<RunFn>,
    fingerprint: Option<Box<InputsFn<String>>>,
    lazy: Option<Box<InputsFn<Vec<String>>>>,
}

impl NodeDef {
    /// Computes a digest of external state (see [`Node::fingerprint`]);
    /// also marks the schema as reading external state.
    pub fn fingerprint(
        mut self,
        f: impl Fn(&Inputs) -> Result<String, NodeError> + Send + Sync + 'static,
    ) -> Self {
        self.schema.external_state = true;
        self.fingerprint = Some(Box::new(f));
        self
    }

    /// Says which lazy inputs are needed (see [`Node::needed_lazy`]).
    pub fn lazy(
        mut self,
        f: impl Fn(&Inputs) -> Result<Vec<String>, NodeError> + Send + Sync + 'static,
    ) -> Self {
        self.lazy = Some(Box::new(f));
        self
    }
}

/// Turns a finished [`NodeSchema`] into a [`NodeDef`] with its `run`.
pub trait Define {
    fn run<O: IntoOutputs<Value>>(
        self,
        f: impl Fn(&NodeContext<'_>) -> Result<O, NodeError> + Send + Sync + 'static,
    ) -> NodeDef;
}

impl Define for NodeSchema {
    fn run<O: IntoOutputs<Value>>(
        self,
        f: impl Fn(&NodeContext<'_>) -> Result<O, NodeError> + Send + Sync + 'static,
    ) -> NodeDef {
        NodeDef {
            schema: self,
            run: Box::new(move |cx| f(cx).map(IntoOutputs::into_outputs)),
            fingerprint: None,
            lazy: None,
        }
    }
}

impl Node for NodeDef {
    fn schema(&self) -> &NodeSchema {
        &self.schema
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        (self.run)(ctx)
    }

    fn needed_lazy(&self, inputs: &Inputs) -> Result<Vec<String>, NodeError> {
        match &self.lazy {
            Some(f) => f(inputs),
            None => Ok(all_lazy(inputs)),
        }
    }

    fn fingerprint(&self, inputs: &Inputs) -> Result<String, NodeError> {
        self.fingerprint
            .as_ref()
            .map_or(Ok(String::new()), |f| f(inputs))
    }
}

/// Every lazy input of the schema: the default for [`Node::needed_lazy`].
pub(crate) fn all_lazy(inputs: &Inputs) -> Vec<String> {
    inputs
        .schema()
        .inputs
        .iter()
        .filter(|i| i.lazy)
        .map(|i| i.name.clone())
        .collect()
}

/// A single value is one output (tuples and `Vec`s are covered in
/// `weft-schema`).
impl IntoOutputs<Value> for Value {
    fn into_outputs(self) -> Vec<Value> {
        vec![self]
    }
}

/// An object that travels along edges of one [`ValueType`] (a MODEL, a
/// VAE, …), declared once here instead of at every use.
pub trait Handle: Object + Sized {
    const TYPE: ValueType;
}

impl Value {
    /// Wraps a handle as the value of its type.
    pub fn handle<T: Handle>(object: T) -> Value {
        Value::Object(T::TYPE, Arc::new(object))
    }
}

impl Inputs {
    /// The handle behind input `name`.
    pub fn handle<T: Handle>(&self, name: &str) -> Result<&T, NodeError> {
        self.value(name)?
            .downcast::<T>()
            .ok_or_else(|| NodeError::input(name, format!("expected a {} value", T::TYPE)))
    }

    /// The handle behind an optional input, or `None` when it is absent.
    pub fn handle_opt<T: Handle>(&self, name: &str) -> Result<Option<&T>, NodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.handle(name).map(Some),
        }
    }

    /// The latent behind input `name`.
    pub fn latent(&self, name: &str) -> Result<&Latent, NodeError> {
        match self.value(name)? {
            Value::Latent(l) => Ok(l),
            other => Err(NodeError::input(
                name,
                format!("expected LATENT, found {}", other.ty()),
            )),
        }
    }

    /// The tensor behind an IMAGE, MASK or SIGMAS input.
    pub fn tensor(&self, name: &str) -> Result<&candle_core::Tensor, NodeError> {
        match self.value(name)? {
            Value::Image(t) | Value::Mask(t) | Value::Sigmas(t) => Ok(t),
            other => Err(NodeError::input(
                name,
                format!("expected a tensor, found {}", other.ty()),
            )),
        }
    }
}

/// The typed readers of [`Inputs`], straight from the context.
impl NodeContext<'_> {
    pub fn get<T: Handle>(&self, name: &str) -> Result<&T, NodeError> {
        self.inputs.handle(name)
    }
    pub fn get_opt<T: Handle>(&self, name: &str) -> Result<Option<&T>, NodeError> {
        self.inputs.handle_opt(name)
    }
    pub fn value(&self, name: &str) -> Result<&Value, NodeError> {
        self.inputs.value(name)
    }
    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        self.inputs.int(name)
    }
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        self.inputs.float(name)
    }
    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        self.inputs.bool(name)
    }
    pub fn str(&self, name: &str) -> Result<&str, NodeError> {
        self.inputs.str(name)
    }
    pub fn latent(&self, name: &str) -> Result<&Latent, NodeError> {
        self.inputs.latent(name)
    }
    pub fn tensor(&self, name: &str) -> Result<&candle_core::Tensor, NodeError> {
        self.inputs.tensor(name)
    }
}
