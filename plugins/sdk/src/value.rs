//! Node inputs as the plugin reads them, and the outputs it returns.
//!
//! Depends on `handle` and `objects`; knows nothing of the call's context.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::Tensor;
use weft_plugin_abi::{self as abi, tensor, Str};

use weft_schema::{NodeSchema, ValueType};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::objects::{into_object, Boxed, Guider, Sampler};

/// An output value. Its variant must fit the schema's output type.
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    /// IMAGE (`[b, c, h, w]` in [0, 1]), MASK or SIGMAS.
    Tensor(Tensor),
    /// LATENT samples and their latent space (pass on the input's).
    Latent {
        samples: Tensor,
        space: String,
    },
    /// A host object, passed through.
    Handle(Handle),
    Guider(Arc<dyn Guider>),
    Sampler(Arc<dyn Sampler>),
}

thread_local! {
    /// Strings returned by the last call on this thread; the ABI lets the
    /// host read them until the next call.
    static RETURNED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn forget_returned_strings() {
    RETURNED.with(|r| r.borrow_mut().clear());
}

fn keep(s: String) -> Str {
    RETURNED.with(|r| {
        let mut r = r.borrow_mut();
        r.push(s);
        Str::new(r.last().expect("just pushed"))
    })
}

impl Value {
    /// Converts to the ABI, checking the variant against the output type.
    pub(crate) fn into_abi(self, name: &str, ty: ValueType) -> Result<abi::Value> {
        let mut v = abi::Value::NONE;
        let fits = match (self, ty) {
            (Value::Int(i), ValueType::Int) => {
                v.tag = abi::VALUE_INT;
                v.int = i;
                true
            }
            (Value::Float(x), ValueType::Float) => {
                v.tag = abi::VALUE_FLOAT;
                v.float = x;
                true
            }
            (Value::Bool(b), ValueType::Bool) => {
                v.tag = abi::VALUE_BOOL;
                v.int = b as i64;
                true
            }
            (Value::String(s), ValueType::String) => {
                v.tag = abi::VALUE_STRING;
                v.string = keep(s);
                true
            }
            (Value::Tensor(t), ValueType::Image | ValueType::Mask | ValueType::Sigmas) => {
                v.tag = abi::VALUE_TENSOR;
                v.tensor = tensor::export(&t)?;
                true
            }
            (Value::Latent { samples, space }, ValueType::Latent) => {
                v.tag = abi::VALUE_TENSOR;
                v.tensor = tensor::export(&samples)?;
                v.string = keep(space);
                true
            }
            (Value::Handle(h), _) => {
                if h.type_name() != ty.name() {
                    return Err(Error(format!(
                        "output `{name}` is a {} handle, the schema says {}",
                        h.type_name(),
                        ty.name()
                    )));
                }
                // The host takes over our reference.
                v.tag = abi::VALUE_HANDLE;
                v.handle = h.into_ptr();
                true
            }
            (Value::Guider(g), ValueType::Guider) => {
                v.tag = abi::VALUE_OBJECT;
                v.object = into_object(Boxed::Guider(g));
                true
            }
            (Value::Sampler(s), ValueType::Sampler) => {
                v.tag = abi::VALUE_OBJECT;
                v.object = into_object(Boxed::Sampler(s));
                true
            }
            _ => false,
        };
        if fits {
            Ok(v)
        } else {
            Err(Error(format!(
                "output `{name}` does not hold a {} value",
                ty.name()
            )))
        }
    }
}

/// A node's inputs during `run`, in schema order, defaults applied.
pub struct Inputs<'a> {
    schema: &'a NodeSchema,
    values: &'a [abi::Value],
}

impl<'a> Inputs<'a> {
    pub(crate) fn new(schema: &'a NodeSchema, values: &'a [abi::Value]) -> Self {
        Inputs { schema, values }
    }

    /// The schema the inputs follow.
    pub fn schema(&self) -> &'a NodeSchema {
        self.schema
    }

    fn get(&self, name: &str) -> Result<&'a abi::Value> {
        let i = self
            .schema
            .input_index(name)
            .ok_or_else(|| Error(format!("the schema has no input `{name}`")))?;
        let v = &self.values[i];
        if v.tag == abi::VALUE_NONE {
            return Err(Error(format!("input `{name}` is absent")));
        }
        Ok(v)
    }

    fn wrong(name: &str, expected: &str) -> Error {
        Error(format!("input `{name}`: expected {expected}"))
    }

    /// Whether an optional input was given.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    pub fn int(&self, name: &str) -> Result<i64> {
        match self.get(name)? {
            v if v.tag == abi::VALUE_INT => Ok(v.int),
            _ => Err(Self::wrong(name, "INT")),
        }
    }

    /// A FLOAT (an INT widens).
    pub fn float(&self, name: &str) -> Result<f64> {
        match self.get(name)? {
            v if v.tag == abi::VALUE_FLOAT => Ok(v.float),
            v if v.tag == abi::VALUE_INT => Ok(v.int as f64),
            _ => Err(Self::wrong(name, "FLOAT")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name)? {
            v if v.tag == abi::VALUE_BOOL => Ok(v.int != 0),
            _ => Err(Self::wrong(name, "BOOLEAN")),
        }
    }

    pub fn str(&self, name: &str) -> Result<&'a str> {
        match self.get(name)? {
            v if v.tag == abi::VALUE_STRING => {
                unsafe { v.string.as_str() }.ok_or_else(|| Self::wrong(name, "UTF-8 text"))
            }
            _ => Err(Self::wrong(name, "STRING")),
        }
    }

    /// An IMAGE, MASK, SIGMAS or LATENT input's tensor (copied once).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        match self.get(name)? {
            v if v.tag == abi::VALUE_TENSOR => unsafe { tensor::import_borrowed(v.tensor) }
                .map_err(|e| Error(format!("input `{name}`: {e}"))),
            _ => Err(Self::wrong(name, "a tensor")),
        }
    }

    /// A LATENT input's latent space, to pass on with derived latents.
    pub fn latent_space(&self, name: &str) -> Result<&'a str> {
        match self.get(name)? {
            v if v.tag == abi::VALUE_TENSOR => {
                unsafe { v.string.as_str() }.ok_or_else(|| Self::wrong(name, "UTF-8 text"))
            }
            _ => Err(Self::wrong(name, "LATENT")),
        }
    }

    /// A host object (GUIDER, MODEL, ...), retained so it may be kept.
    pub fn handle(&self, name: &str) -> Result<Handle> {
        match self.get(name)? {
            v if v.tag == abi::VALUE_HANDLE && !v.handle.is_null() => {
                Ok(Handle::retained(v.handle))
            }
            _ => Err(Self::wrong(name, "a host object")),
        }
    }
}

impl From<crate::Conditioning> for Value {
    fn from(c: crate::Conditioning) -> Value {
        Value::Handle(c.into_handle())
    }
}

impl From<crate::Model> for Value {
    fn from(m: crate::Model) -> Value {
        Value::Handle(m.into_handle())
    }
}
