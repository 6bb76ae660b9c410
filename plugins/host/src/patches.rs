//! ABI 1.1's MODEL patches: a plugin returns a MODEL that wraps the host's
//! (code around D(x, σ)), adds deltas to named weights, or hooks attention
//! layers. Each returns a new MODEL; the one it came from is unchanged, and
//! a model with no patch runs exactly as before.

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_core::Value;
use weft_plugin_abi::{self as abi, tensor, Call, DLManagedTensorVersioned, Str};
use weft_sampling::attention_hook::{AttentionHook, HookedNetwork};
use weft_sampling::wrapper::{DenoiserWrapper, Inner};
use weft_sampling::{Conditioning, Model};

use crate::call::{with_call, CallState, Origin};
use crate::handle::{resolve, HostHandle, HostObject};
use crate::objects::PluginObject;

/// The model behind a MODEL handle.
unsafe fn model(handle: *const abi::Handle) -> std::result::Result<Model, String> {
    resolve(handle)
        .and_then(HostHandle::value)
        .and_then(|v| v.downcast::<Model>())
        .cloned()
        .ok_or_else(|| "the handle is not a MODEL".into())
}

unsafe fn give(out: *mut *const abi::Handle, m: Model) -> std::result::Result<(), String> {
    if out.is_null() {
        return Err("the output pointer is null".into());
    }
    *out = HostHandle::share(Value::handle(m));
    Ok(())
}

/// Takes over a plugin object handed to the host, checking its table has
/// the slot ending at `end`.
fn adopt(
    state: &CallState<'_, '_>,
    object: abi::Object,
    what: &str,
    end: usize,
    set: impl Fn(&abi::ObjectVTable) -> bool,
) -> std::result::Result<Arc<PluginObject>, String> {
    if object.vtable.is_null() {
        return Err(format!("the {what} object has no function table"));
    }
    let owner = state
        .owner
        .clone()
        .ok_or_else(|| format!("a {what} can only be made in a node's run"))?;
    // From here on, dropping it releases the object.
    let object = Arc::new(PluginObject::new(
        object,
        format!("{} ({what})", owner.name),
        owner.library,
    ));
    if !object.provides(end, set) {
        return Err(format!(
            "the {what} object's table lacks its function (ABI 1.1)"
        ));
    }
    Ok(object)
}

/// A plugin's denoiser wrapper, as weft's sampling calls it.
#[derive(Debug)]
struct PluginWrapper(Arc<PluginObject>);

impl DenoiserWrapper for PluginWrapper {
    fn denoise(
        &self,
        inner: Inner<'_>,
        x: &Tensor,
        sigma: f64,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let object = &self.0;
        let wrap = object.vtable().wrap_denoise.expect("checked on adoption");
        let state = CallState::new(Origin::Denoise).owned_by(object.owner());
        let lent = HostHandle::lend_inner(inner);
        let cond = HostHandle::share(Value::handle(cond.clone()));
        let exported = tensor::export(x).map_err(candle_core::Error::Msg)?;
        let mut out = std::ptr::null_mut();
        unsafe {
            let status = wrap(
                object.data(),
                state.as_call(),
                lent.as_abi(),
                exported,
                sigma,
                cond,
                &mut out,
            );
            lent.expire();
            crate::handle::handle_release(cond);
            tensor::delete(exported);
            object.result(status, &state, out, x)
        }
    }
}

/// A plugin's attention hook, as weft's attention layers call it.
#[derive(Debug)]
struct PluginHook(Arc<PluginObject>);

impl AttentionHook for PluginHook {
    fn attend(
        &self,
        name: &str,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<Option<Tensor>> {
        let object = &self.0;
        let attend = object.vtable().attend.expect("checked on adoption");
        let state = CallState::new(Origin::Denoise).owned_by(object.owner());
        let export = |t: &Tensor| tensor::export(t).map_err(candle_core::Error::Msg);
        let (eq, ek, ev) = (export(q)?, export(k)?, export(v)?);
        let mut out = std::ptr::null_mut();
        unsafe {
            let status = attend(
                object.data(),
                state.as_call(),
                Str::new(name),
                eq,
                ek,
                ev,
                heads as u32,
                &mut out,
            );
            for t in [eq, ek, ev] {
                tensor::delete(t);
            }
            if status == abi::STATUS_OK && out.is_null() {
                return Ok(None);
            }
            object.result(status, &state, out, q).map(Some)
        }
    }
}

type T = abi::ObjectVTable;

pub(crate) unsafe extern "C" fn model_wrap(
    call: *const Call,
    model_handle: *const abi::Handle,
    wrapper: abi::Object,
    out: *mut *const abi::Handle,
) -> abi::Status {
    with_call(call, |state| {
        let end = offset_of!(T, wrap_denoise) + size_of::<usize>();
        let object = adopt(state, wrapper, "denoiser wrapper", end, |t| {
            t.wrap_denoise.is_some()
        })?;
        let m = model(model_handle)?;
        let wrappers = m.wrappers.with(Arc::new(PluginWrapper(object)));
        give(out, Model { wrappers, ..m })
    })
}

pub(crate) unsafe extern "C" fn model_attention_hook(
    call: *const Call,
    model_handle: *const abi::Handle,
    hook: abi::Object,
    out: *mut *const abi::Handle,
) -> abi::Status {
    with_call(call, |state| {
        let end = offset_of!(T, attend) + size_of::<usize>();
        let object = adopt(state, hook, "attention hook", end, |t| t.attend.is_some())?;
        let m = model(model_handle)?;
        let network = Arc::new(HookedNetwork {
            inner: m.network.clone(),
            hook: Arc::new(PluginHook(object)),
        });
        give(out, Model { network, ..m })
    })
}

pub(crate) unsafe extern "C" fn model_add_deltas(
    call: *const Call,
    model_handle: *const abi::Handle,
    names: *const Str,
    deltas: *const *const DLManagedTensorVersioned,
    n: usize,
    strength: f64,
    out: *mut *const abi::Handle,
) -> abi::Status {
    with_call(call, |_| {
        let m = model(model_handle)?;
        if n > 0 && (names.is_null() || deltas.is_null()) {
            return Err("names and deltas must not be null".into());
        }
        let mut pairs = Vec::with_capacity(n);
        for i in 0..n {
            let name = (*names.add(i))
                .as_str()
                .ok_or("a weight name is not UTF-8")?;
            let delta =
                tensor::import_borrowed(*deltas.add(i)).map_err(|e| format!("`{name}`: {e}"))?;
            pairs.push((name.to_string(), delta));
        }
        let network = m
            .network
            .with_deltas(&pairs, strength)
            .ok_or("this MODEL takes no weight deltas (Stable Diffusion UNets do)")??;
        give(out, Model { network, ..m })
    })
}

pub(crate) unsafe extern "C" fn model_denoise(
    call: *const Call,
    model_handle: *const abi::Handle,
    x: *const DLManagedTensorVersioned,
    sigma: f64,
    cond: *const abi::Handle,
    out: *mut *mut DLManagedTensorVersioned,
) -> abi::Status {
    with_call(call, |_| {
        if out.is_null() {
            return Err("the output pointer is null".into());
        }
        let x = tensor::import_borrowed(x).map_err(|e| format!("x: {e}"))?;
        let cond = resolve(cond)
            .and_then(HostHandle::value)
            .and_then(|v| v.downcast::<Conditioning>())
            .cloned()
            .ok_or("the conditioning handle is not a CONDITIONING")?;
        let handle = resolve(model_handle).ok_or("the model handle is null")?;
        let d = match &handle.object {
            HostObject::Inner(slot) => {
                let inner = (*slot.lock().unwrap_or_else(|e| e.into_inner()))
                    .ok_or("a wrapper's inner model was used after its call returned")?;
                (inner.0)(&x, sigma, &cond)
            }
            _ => {
                let m = model(model_handle)?;
                m.predict(&x, sigma, &cond)
                    .and_then(|raw| m.sampling.denoised(sigma, &x, &raw))
            }
        }
        .map_err(|e| e.to_string())?;
        *out = tensor::export(&d)?;
        Ok(())
    })
}
