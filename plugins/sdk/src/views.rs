//! ABI 1.1's views of host values: a [`Conditioning`] a plugin can read
//! and rebuild entry by entry, and a [`Model`] it can denoise with or
//! patch. Edits return new values; the ones they came from never change.
//!
//! Depends on `context` and `handle`. (The entry point already refused a
//! host older than the SDK's ABI, so every 1.1 function is there.) Model patches that hand plugin code
//! to the host (wrappers, attention hooks) live in `objects`.

use candle_core::Tensor;
use weft_plugin_abi::{self as abi, tensor, Str};

use crate::context::{host, host_result, Context};
use crate::error::{Error, Result};
use crate::handle::Handle;

/// Takes over a handle the host returned.
pub(crate) fn owned(ptr: *const abi::Handle) -> Handle {
    Handle::owned(ptr)
}

/// A CONDITIONING: a list of entries, each with its tensors (`context`
/// `[B,T,C]`, `pooled` `[B,C]`, `labels`, `mask`, `concat_latent`,
/// `concat_mask`), its options (`strength`, `guidance`, `start_percent`,
/// `end_percent`, `area`) and attachments (ControlNet hints, size
/// conditioning) that stay opaque and are kept through every edit.
#[derive(Clone, Debug)]
pub struct Conditioning(Handle);

/// A field's value, as [`Conditioning::with`] sets it.
pub enum Field<'a> {
    Tensor(&'a Tensor),
    Float(f64),
    /// `area`: `"cells H W TOP LEFT"` or `"fraction H W TOP LEFT"`.
    Text(&'a str),
    /// Clears the field.
    None,
}

impl Conditioning {
    /// A CONDITIONING input's handle as a view.
    pub fn from_handle(handle: Handle) -> Result<Conditioning> {
        match handle.type_name() {
            "CONDITIONING" => Ok(Conditioning(handle)),
            other => Err(Error(format!(
                "expected a CONDITIONING, got a {other} handle"
            ))),
        }
    }

    pub fn handle(&self) -> &Handle {
        &self.0
    }

    pub fn into_handle(self) -> Handle {
        self.0
    }

    /// The number of entries (one, unless conditionings were combined).
    pub fn len(&self) -> usize {
        unsafe { (host().cond_len)(self.0.as_ptr()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, ctx: &Context, index: usize, key: &str) -> Result<abi::Value> {
        let mut v = abi::Value::NONE;
        let status =
            unsafe { (host().cond_get)(ctx.call(), self.0.as_ptr(), index, Str::new(key), &mut v) };
        host_result(status)?;
        Ok(v)
    }

    /// A tensor field of entry `index` (a copy), `None` when unset.
    pub fn tensor(&self, ctx: &Context, index: usize, key: &str) -> Result<Option<Tensor>> {
        let v = self.get(ctx, index, key)?;
        match v.tag {
            abi::VALUE_NONE => Ok(None),
            abi::VALUE_TENSOR => Ok(Some(unsafe { tensor::import_owned(v.tensor) }?)),
            _ => Err(Error(format!("`{key}` is not a tensor field"))),
        }
    }

    /// A float field of entry `index`, `None` when unset.
    pub fn float(&self, ctx: &Context, index: usize, key: &str) -> Result<Option<f64>> {
        let v = self.get(ctx, index, key)?;
        match v.tag {
            abi::VALUE_NONE => Ok(None),
            abi::VALUE_FLOAT => Ok(Some(v.float)),
            _ => {
                if v.tag == abi::VALUE_TENSOR {
                    unsafe { tensor::delete(v.tensor) };
                }
                Err(Error(format!("`{key}` is not a float field")))
            }
        }
    }

    /// Entry `index`'s area, as `"cells H W TOP LEFT"` or `"fraction …"`.
    pub fn area(&self, ctx: &Context, index: usize) -> Result<Option<String>> {
        let v = self.get(ctx, index, "area")?;
        Ok(match v.tag {
            abi::VALUE_STRING => unsafe { v.string.as_str() }.map(str::to_string),
            _ => None,
        })
    }

    /// A copy with field `key` of entry `index` set to `value`.
    pub fn with(
        &self,
        ctx: &Context,
        index: usize,
        key: &str,
        value: Field<'_>,
    ) -> Result<Conditioning> {
        let mut v = abi::Value::NONE;
        let mut exported = None;
        match value {
            Field::Tensor(t) => {
                let managed = tensor::export(t)?;
                exported = Some(managed);
                v.tag = abi::VALUE_TENSOR;
                v.tensor = managed;
            }
            Field::Float(x) => {
                v.tag = abi::VALUE_FLOAT;
                v.float = x;
            }
            Field::Text(s) => {
                v.tag = abi::VALUE_STRING;
                v.string = Str::new(s);
            }
            Field::None => {}
        }
        let mut out = std::ptr::null();
        let status = unsafe {
            (host().cond_set)(
                ctx.call(),
                self.0.as_ptr(),
                index,
                Str::new(key),
                &v,
                &mut out,
            )
        };
        if let Some(managed) = exported {
            unsafe { tensor::delete(managed) };
        }
        host_result(status)?;
        Ok(Conditioning(owned(out)))
    }

    /// Entry `index` alone, attachments included.
    pub fn entry(&self, ctx: &Context, index: usize) -> Result<Conditioning> {
        let mut out = std::ptr::null();
        let status = unsafe { (host().cond_entry)(ctx.call(), self.0.as_ptr(), index, &mut out) };
        host_result(status)?;
        Ok(Conditioning(owned(out)))
    }

    /// These entries, then `other`'s (`ConditioningCombine`).
    pub fn combine(&self, ctx: &Context, other: &Conditioning) -> Result<Conditioning> {
        let mut out = std::ptr::null();
        let status = unsafe {
            (host().cond_combine)(ctx.call(), self.0.as_ptr(), other.0.as_ptr(), &mut out)
        };
        host_result(status)?;
        Ok(Conditioning(owned(out)))
    }

    /// A new one-entry conditioning from token states and pooled states.
    pub fn new(ctx: &Context, context: &Tensor, pooled: Option<&Tensor>) -> Result<Conditioning> {
        let c = tensor::export(context)?;
        let p = pooled.map(tensor::export).transpose()?;
        let mut out = std::ptr::null();
        let status = unsafe {
            (host().cond_new)(
                ctx.call(),
                c,
                p.map_or(std::ptr::null(), |p| p as *const _),
                &mut out,
            )
        };
        unsafe {
            tensor::delete(c);
            if let Some(p) = p {
                tensor::delete(p);
            }
        }
        host_result(status)?;
        Ok(Conditioning(owned(out)))
    }
}

/// A MODEL: denoise with it, or patch it (weight deltas here; wrappers and
/// attention hooks, which are plugin code, in [`crate::DenoiserWrapper`]
/// and [`crate::AttentionHook`]).
#[derive(Clone, Debug)]
pub struct Model(pub(crate) Handle);

impl Model {
    pub fn from_handle(handle: Handle) -> Result<Model> {
        match handle.type_name() {
            "MODEL" => Ok(Model(handle)),
            other => Err(Error(format!("expected a MODEL, got a {other} handle"))),
        }
    }

    pub fn handle(&self) -> &Handle {
        &self.0
    }

    pub fn into_handle(self) -> Handle {
        self.0
    }

    /// D(x, σ) of this model for `cond`: the denoised estimate, with the
    /// model's own wrappers applied.
    pub fn denoise(
        &self,
        ctx: &Context,
        x: &Tensor,
        sigma: f64,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let x = tensor::export(x)?;
        let mut out = std::ptr::null_mut();
        let status = unsafe {
            (host().model_denoise)(
                ctx.call(),
                self.0.as_ptr(),
                x,
                sigma,
                cond.0.as_ptr(),
                &mut out,
            )
        };
        unsafe { tensor::delete(x) };
        host_result(status)?;
        Ok(unsafe { tensor::import_owned(out) }?)
    }

    /// A copy with `deltas` (weight name → tensor shaped like the weight)
    /// added at `strength`: LoRA-like patches. Names are the UNet's
    /// diffusers names (`mid_block.attentions.0.proj_in.weight`).
    pub fn add_deltas(
        &self,
        ctx: &Context,
        deltas: &[(&str, Tensor)],
        strength: f64,
    ) -> Result<Model> {
        let names: Vec<Str> = deltas.iter().map(|(n, _)| Str::new(n)).collect();
        let exported = deltas
            .iter()
            .map(|(_, t)| tensor::export(t))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let pointers: Vec<*const abi::DLManagedTensorVersioned> =
            exported.iter().map(|p| *p as *const _).collect();
        let mut out = std::ptr::null();
        let status = unsafe {
            (host().model_add_deltas)(
                ctx.call(),
                self.0.as_ptr(),
                names.as_ptr(),
                pointers.as_ptr(),
                deltas.len(),
                strength,
                &mut out,
            )
        };
        for p in exported {
            unsafe { tensor::delete(p) };
        }
        host_result(status)?;
        Ok(Model(owned(out)))
    }
}
