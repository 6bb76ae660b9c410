//! Reading and writing handle values in node inputs and outputs.

use std::sync::Arc;

use weft_core::{NodeError, Object, Value, ValueType};

pub use weft_sampling::handles::{GuiderHandle, NoiseHandle, SamplerHandle};

/// Reads a handle of type `T` from input `name`. Superseded by
/// `Inputs::handle`; kept while `sd.rs` and `controlnet.rs` use it.
pub fn handle<'a, T: Object>(
    inputs: &'a weft_core::Inputs,
    name: &str,
    ty: ValueType,
) -> Result<&'a T, NodeError> {
    inputs
        .value(name)?
        .downcast::<T>()
        .ok_or_else(|| NodeError::input(name, format!("expected a {ty} value")))
}

/// Wraps a handle as a value of type `ty`. Superseded by `Value::handle`;
/// kept while `sd.rs` and `controlnet.rs` use it.
pub fn value<T: Object>(ty: ValueType, object: T) -> Value {
    Value::Object(ty, Arc::new(object))
}
