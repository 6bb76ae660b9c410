//! A plugin's node type as a weft [`Node`]: values cross as DLPack tensors,
//! scalars and handles; outputs are checked before weft trusts them.

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use candle_core::DType;
use libloading::Library;
use weft_core::{
    Inputs, Latent, LatentSpace, Node, NodeContext, NodeError, NodeSchema, Value, ValueType,
};
use weft_plugin_abi::{self as abi, tensor, Str};
use weft_sampling::handles::{GuiderHandle, SamplerHandle};

use crate::call::{CallState, Origin, Owner};
use crate::handle::{handle_release, resolve, HostHandle};
use crate::objects::{PluginGuider, PluginObject, PluginSampler};

pub(crate) struct PluginNode {
    pub(crate) schema: NodeSchema,
    run: abi::RunFn,
    node_data: usize,
    library: Arc<Library>,
}

impl PluginNode {
    pub(crate) fn new(
        schema: NodeSchema,
        run: abi::RunFn,
        node_data: *mut std::ffi::c_void,
        library: Arc<Library>,
    ) -> Self {
        PluginNode {
            schema,
            run,
            node_data: node_data as usize,
            library,
        }
    }
}

/// Inputs as the plugin sees them, and what to free once the call returns.
#[derive(Default)]
struct Lent {
    values: Vec<abi::Value>,
    tensors: Vec<*mut abi::DLManagedTensorVersioned>,
    handles: Vec<*const abi::Handle>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        unsafe {
            self.tensors.iter().for_each(|t| tensor::delete(*t));
            self.handles.iter().for_each(|h| handle_release(*h));
        }
    }
}

fn lend(inputs: &Inputs, schema: &NodeSchema) -> Result<Lent, NodeError> {
    let mut lent = Lent::default();
    for spec in &schema.inputs {
        let mut v = abi::Value::NONE;
        let export = |t: &candle_core::Tensor| {
            tensor::export(t).map_err(|e| NodeError::input(&spec.name, e))
        };
        match inputs.get(&spec.name) {
            None => {}
            Some(Value::Int(i)) => {
                v.tag = abi::VALUE_INT;
                v.int = *i;
            }
            Some(Value::Float(x)) => {
                v.tag = abi::VALUE_FLOAT;
                v.float = *x;
            }
            Some(Value::Bool(b)) => {
                v.tag = abi::VALUE_BOOL;
                v.int = *b as i64;
            }
            Some(Value::String(s)) => {
                v.tag = abi::VALUE_STRING;
                v.string = Str::new(s);
            }
            Some(Value::Image(t) | Value::Mask(t) | Value::Sigmas(t)) => {
                v.tag = abi::VALUE_TENSOR;
                v.tensor = export(t)?;
                lent.tensors.push(v.tensor);
            }
            Some(Value::Latent(latent)) => {
                v.tag = abi::VALUE_TENSOR;
                v.tensor = export(&latent.samples)?;
                v.string = Str::new(&latent.space.0);
                lent.tensors.push(v.tensor);
            }
            Some(object @ Value::Object(..)) => {
                v.tag = abi::VALUE_HANDLE;
                v.handle = HostHandle::share(object.clone());
                lent.handles.push(v.handle);
            }
        }
        lent.values.push(v);
    }
    Ok(lent)
}

impl Node for PluginNode {
    fn schema(&self) -> &NodeSchema {
        &self.schema
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let lent = lend(ctx.inputs, &self.schema)?;
        let n_outputs = self.schema.outputs.len();
        let mut outputs = vec![abi::Value::NONE; n_outputs];
        let state = CallState::new(Origin::Node(ctx)).owned_by(Owner {
            name: format!("plugin node `{}`", self.schema.type_name),
            library: self.library.clone(),
        });
        let status = unsafe {
            (self.run)(
                self.node_data as *mut std::ffi::c_void,
                state.as_call(),
                lent.values.as_ptr(),
                lent.values.len(),
                outputs.as_mut_ptr(),
                n_outputs,
            )
        };
        drop(lent);
        if status != abi::STATUS_OK {
            if state.was_cancelled() {
                return Err(NodeError::cancelled());
            }
            return Err(NodeError::new(state.take_error()));
        }
        // Take ownership of every output, so a bad one does not leak the rest.
        let mut results = Vec::with_capacity(n_outputs);
        let mut first_error = None;
        for (raw, spec) in outputs.iter().zip(&self.schema.outputs) {
            let ty = match &spec.ty {
                weft_core::OutputType::Fixed(ty) => *ty,
                weft_core::OutputType::SameAs(_) => ValueType::Any,
            };
            match self.accept(raw, ty, ctx.inputs) {
                Ok(v) => results.push(v),
                Err(e) => {
                    first_error.get_or_insert(format!("output `{}`: {e}", spec.name));
                }
            }
        }
        match first_error {
            Some(message) => Err(NodeError::new(message)),
            None => Ok(results),
        }
    }
}

impl PluginNode {
    /// Converts one output, taking ownership of what it holds.
    fn accept(&self, raw: &abi::Value, ty: ValueType, inputs: &Inputs) -> Result<Value, String> {
        let tag_name = |tag| match tag {
            abi::VALUE_NONE => "nothing",
            abi::VALUE_INT => "an INT",
            abi::VALUE_FLOAT => "a FLOAT",
            abi::VALUE_BOOL => "a BOOLEAN",
            abi::VALUE_STRING => "a STRING",
            abi::VALUE_TENSOR => "a tensor",
            abi::VALUE_HANDLE => "a host handle",
            abi::VALUE_OBJECT => "a plugin object",
            _ => "an unknown tag",
        };
        let mismatch = || format!("expected {ty}, the plugin returned {}", tag_name(raw.tag));
        match raw.tag {
            abi::VALUE_TENSOR => {
                let t = unsafe { tensor::import_owned(raw.tensor) }?;
                let expected_rank = match ty {
                    ValueType::Image | ValueType::Latent => 4,
                    ValueType::Mask => 3,
                    ValueType::Sigmas => 1,
                    _ => return Err(mismatch()),
                };
                if t.rank() != expected_rank {
                    return Err(format!(
                        "a {ty} has {expected_rank} dimensions, the plugin returned shape {:?}",
                        t.dims()
                    ));
                }
                let dtype = if ty == ValueType::Sigmas {
                    DType::F64
                } else {
                    DType::F32
                };
                let t = t.to_dtype(dtype).map_err(|e| e.to_string())?;
                Ok(match ty {
                    ValueType::Image => Value::Image(t),
                    ValueType::Mask => Value::Mask(t),
                    ValueType::Sigmas => Value::Sigmas(t),
                    _ => {
                        let space = unsafe { raw.string.as_str() }
                            .ok_or("the latent space is not UTF-8")?;
                        let space = if space.is_empty() {
                            latent_space_of(inputs)
                        } else {
                            LatentSpace::new(space)
                        };
                        let noise_mask = noise_mask_for(inputs, &t);
                        Value::Latent(Arc::new(Latent {
                            samples: t,
                            space,
                            noise_mask,
                        }))
                    }
                })
            }
            abi::VALUE_HANDLE => {
                let handle = raw.handle;
                let value = unsafe { resolve(handle) }
                    .and_then(HostHandle::value)
                    .cloned()
                    .ok_or("the handle is not a live graph value");
                // The plugin handed its reference over.
                unsafe { handle_release(handle) };
                let value = value?;
                if value.ty() != ty && ty != ValueType::Any {
                    return Err(format!(
                        "expected {ty}, the plugin returned a {} handle",
                        value.ty()
                    ));
                }
                Ok(value)
            }
            abi::VALUE_OBJECT => self.accept_object(raw.object, ty),
            _ => {
                let value = match (raw.tag, ty) {
                    (abi::VALUE_INT, ValueType::Int) => Value::Int(raw.int),
                    (abi::VALUE_INT, ValueType::Float) => Value::Float(raw.int as f64),
                    (abi::VALUE_FLOAT, ValueType::Float) => Value::Float(raw.float),
                    (abi::VALUE_BOOL, ValueType::Bool) => Value::Bool(raw.int != 0),
                    (abi::VALUE_STRING, ValueType::String) => Value::from(
                        unsafe { raw.string.as_str() }.ok_or("the string is not UTF-8")?,
                    ),
                    _ => return Err(mismatch()),
                };
                Ok(value)
            }
        }
    }

    fn accept_object(&self, object: abi::Object, ty: ValueType) -> Result<Value, String> {
        if object.vtable.is_null() {
            return Err("the plugin object has no function table".into());
        }
        let name = format!("plugin node `{}`", self.schema.type_name);
        // From here on, dropping `object` releases it.
        let object = Arc::new(PluginObject::new(
            object,
            name.clone(),
            self.library.clone(),
        ));
        type T = abi::ObjectVTable;
        let end = |offset: usize, size: usize| offset + size;
        match ty {
            ValueType::Guider => {
                let ok = object.provides(end(offset_of!(T, denoise), size_of::<usize>()), |t| {
                    t.denoise.is_some()
                }) && object.provides(end(offset_of!(T, path), size_of::<usize>()), |t| {
                    t.path.is_some()
                });
                if !ok {
                    return Err("a GUIDER object needs `denoise` and `path`".into());
                }
                Ok(Value::Object(
                    ValueType::Guider,
                    Arc::new(GuiderHandle {
                        name,
                        denoiser: Arc::new(PluginGuider(object)),
                        model: None,
                    }),
                ))
            }
            ValueType::Sampler => {
                if !object.provides(end(offset_of!(T, sample), size_of::<usize>()), |t| {
                    t.sample.is_some()
                }) {
                    return Err("a SAMPLER object needs `sample`".into());
                }
                Ok(Value::Object(
                    ValueType::Sampler,
                    Arc::new(SamplerHandle {
                        name,
                        sampler: Arc::new(PluginSampler(object)),
                    }),
                ))
            }
            _ => Err(format!(
                "plugins can make GUIDER and SAMPLER objects, not {ty}"
            )),
        }
    }
}

/// The space of the first LATENT input, for latents returned without one.
fn latent_space_of(inputs: &Inputs) -> LatentSpace {
    inputs
        .schema()
        .inputs
        .iter()
        .find_map(|spec| match inputs.get(&spec.name) {
            Some(Value::Latent(l)) => Some(l.space.clone()),
            _ => None,
        })
        .unwrap_or_else(LatentSpace::pixels)
}

/// A LATENT input's noise mask, carried to a latent the plugin returns at
/// the same size: plugins see latents as plain tensors, and an inpainting
/// mask must not vanish because one passed through a plugin node.
fn noise_mask_for(inputs: &Inputs, samples: &candle_core::Tensor) -> Option<candle_core::Tensor> {
    inputs
        .schema()
        .inputs
        .iter()
        .find_map(|spec| match inputs.get(&spec.name) {
            Some(Value::Latent(l)) if l.samples.dims() == samples.dims() => l.noise_mask.clone(),
            _ => None,
        })
}
