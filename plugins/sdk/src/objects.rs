//! Plugin code weft calls back: guiders and samplers (GUIDER and SAMPLER
//! values), and ABI 1.1's model patches, denoiser wrappers and attention
//! hooks; with the object tables the host calls them through.
//!
//! Depends on `context` (for `guard`), `handle` and `views`.

use std::ffi::c_void;
use std::sync::Arc;

use candle_core::Tensor;
use weft_plugin_abi::{self as abi, tensor, Call, DLManagedTensorVersioned, ObjectVTable, Status};

use crate::context::host_result;
use crate::context::{guard, Context};
use crate::error::Result;
use crate::handle::{Handle, Path};
use crate::views::{owned, Conditioning, Model};

/// A guidance rule: what the denoiser returns. Use it as a GUIDER output.
pub trait Guider: Send + Sync + 'static {
    fn denoise(&self, ctx: &Context, x: &Tensor, sigma: f64) -> Result<Tensor>;
    fn path(&self) -> Path;
}

/// A sampling algorithm over any weft denoiser. Use it as a SAMPLER output.
/// `x` is already noised to `sigmas[0]`; return the sample at the last σ.
pub trait Sampler: Send + Sync + 'static {
    fn sample(&self, ctx: &Context, denoiser: &Handle, x: Tensor, sigmas: &[f64])
        -> Result<Tensor>;
}

/// Code around a model's D(x, σ) (ABI 1.1), installed with [`Model::wrap`]:
/// return a denoised estimate, calling `inner.denoise(ctx, …)` for the
/// wrapped model's as often as needed.
pub trait DenoiserWrapper: Send + Sync + 'static {
    fn denoise(
        &self,
        ctx: &Context,
        inner: &Model,
        x: &Tensor,
        sigma: f64,
        cond: &Conditioning,
    ) -> Result<Tensor>;
}

/// Replaces selected attention layers (ABI 1.1), installed with
/// [`Model::with_attention_hook`]. `name` is the layer's diffusers weight
/// prefix (`mid_block.attentions.0.transformer_blocks.0.attn1`); `q`, `k`,
/// `v` are `[batch, tokens, heads·dim]`. Return the attention output
/// (shaped like `q`, before the output projection), or `None` to keep
/// weft's own for this layer.
pub trait AttentionHook: Send + Sync + 'static {
    fn attend(
        &self,
        ctx: &Context,
        name: &str,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<Option<Tensor>>;
}

pub(crate) enum Boxed {
    Guider(Arc<dyn Guider>),
    Sampler(Arc<dyn Sampler>),
    Wrapper(Box<dyn DenoiserWrapper>),
    Hook(Box<dyn AttentionHook>),
}

pub(crate) fn into_object(boxed: Boxed) -> abi::Object {
    let vtable = match boxed {
        Boxed::Guider(_) => &GUIDER_VTABLE,
        Boxed::Sampler(_) => &SAMPLER_VTABLE,
        Boxed::Wrapper(_) => &WRAPPER_VTABLE,
        Boxed::Hook(_) => &HOOK_VTABLE,
    };
    abi::Object {
        data: Box::into_raw(Box::new(boxed)).cast(),
        vtable,
    }
}

static GUIDER_VTABLE: ObjectVTable = ObjectVTable {
    size: std::mem::size_of::<ObjectVTable>() as u32,
    release: Some(release),
    denoise: Some(denoise),
    path: Some(path),
    sample: None,
    wrap_denoise: None,
    attend: None,
};

static SAMPLER_VTABLE: ObjectVTable = ObjectVTable {
    size: std::mem::size_of::<ObjectVTable>() as u32,
    release: Some(release),
    denoise: None,
    path: None,
    sample: Some(sample),
    wrap_denoise: None,
    attend: None,
};

static WRAPPER_VTABLE: ObjectVTable = ObjectVTable {
    size: std::mem::size_of::<ObjectVTable>() as u32,
    release: Some(release),
    denoise: None,
    path: None,
    sample: None,
    wrap_denoise: Some(wrap_denoise),
    attend: None,
};

static HOOK_VTABLE: ObjectVTable = ObjectVTable {
    size: std::mem::size_of::<ObjectVTable>() as u32,
    release: Some(release),
    denoise: None,
    path: None,
    sample: None,
    wrap_denoise: None,
    attend: Some(attend),
};

unsafe extern "C" fn release(data: *mut c_void) {
    let _ = std::panic::catch_unwind(|| drop(Box::from_raw(data.cast::<Boxed>())));
}

unsafe fn boxed<'a>(data: *mut c_void) -> &'a Boxed {
    &*data.cast::<Boxed>()
}

unsafe extern "C" fn denoise(
    data: *mut c_void,
    call: *const Call,
    x: *const DLManagedTensorVersioned,
    sigma: f64,
    out: *mut *mut DLManagedTensorVersioned,
) -> Status {
    guard(call, || {
        let Boxed::Guider(guider) = boxed(data) else {
            return Err("this object is not a guider".into());
        };
        let x = tensor::import_borrowed(x)?;
        let d = guider.denoise(&Context::new(call), &x, sigma)?;
        *out = tensor::export(&d)?;
        Ok(())
    })
}

unsafe extern "C" fn path(data: *mut c_void) -> u32 {
    std::panic::catch_unwind(|| match boxed(data) {
        Boxed::Guider(g) => g.path().code(),
        _ => abi::PATH_DIFFUSION,
    })
    .unwrap_or(abi::PATH_DIFFUSION)
}

unsafe extern "C" fn sample(
    data: *mut c_void,
    call: *const Call,
    denoiser: *const abi::Handle,
    x: *const DLManagedTensorVersioned,
    sigmas: *const f64,
    n_sigmas: usize,
    out: *mut *mut DLManagedTensorVersioned,
) -> Status {
    guard(call, || {
        let Boxed::Sampler(sampler) = boxed(data) else {
            return Err("this object is not a sampler".into());
        };
        if sigmas.is_null() && n_sigmas > 0 {
            return Err("the sigmas pointer is null".into());
        }
        let sigmas = if n_sigmas == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(sigmas, n_sigmas)
        };
        let x = tensor::import_borrowed(x)?;
        let denoiser = Handle::borrowed(denoiser);
        let result = sampler.sample(&Context::new(call), &denoiser, x, sigmas)?;
        *out = tensor::export(&result)?;
        Ok(())
    })
}

unsafe extern "C" fn wrap_denoise(
    data: *mut c_void,
    call: *const Call,
    inner: *const abi::Handle,
    x: *const DLManagedTensorVersioned,
    sigma: f64,
    cond: *const abi::Handle,
    out: *mut *mut DLManagedTensorVersioned,
) -> Status {
    guard(call, || {
        let Boxed::Wrapper(wrapper) = boxed(data) else {
            return Err("this object is not a denoiser wrapper".into());
        };
        let x = tensor::import_borrowed(x)?;
        let inner = Model(Handle::borrowed(inner));
        let cond = Conditioning::from_handle(Handle::borrowed(cond))?;
        let d = wrapper.denoise(&Context::new(call), &inner, &x, sigma, &cond)?;
        *out = tensor::export(&d)?;
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn attend(
    data: *mut c_void,
    call: *const Call,
    name: abi::Str,
    q: *const DLManagedTensorVersioned,
    k: *const DLManagedTensorVersioned,
    v: *const DLManagedTensorVersioned,
    heads: u32,
    out: *mut *mut DLManagedTensorVersioned,
) -> Status {
    guard(call, || {
        let Boxed::Hook(hook) = boxed(data) else {
            return Err("this object is not an attention hook".into());
        };
        let name = name.as_str().ok_or("the layer name is not UTF-8")?;
        let (q, k, v) = (
            tensor::import_borrowed(q)?,
            tensor::import_borrowed(k)?,
            tensor::import_borrowed(v)?,
        );
        *out = match hook.attend(&Context::new(call), name, &q, &k, &v, heads as usize)? {
            Some(t) => tensor::export(&t)?,
            None => std::ptr::null_mut(),
        };
        Ok(())
    })
}

impl Model {
    /// A copy of this model with `wrapper` around its D(x, σ).
    pub fn wrap(&self, ctx: &Context, wrapper: impl DenoiserWrapper) -> Result<Model> {
        let object = into_object(Boxed::Wrapper(Box::new(wrapper)));
        let mut out = std::ptr::null();
        let status = unsafe {
            (crate::context::host().model_wrap)(ctx.call(), self.0.as_ptr(), object, &mut out)
        };
        host_result(status)?;
        Ok(Model(owned(out)))
    }

    /// A copy of this model whose attention layers consult `hook`.
    pub fn with_attention_hook(&self, ctx: &Context, hook: impl AttentionHook) -> Result<Model> {
        let object = into_object(Boxed::Hook(Box::new(hook)));
        let mut out = std::ptr::null();
        let status = unsafe {
            (crate::context::host().model_attention_hook)(
                ctx.call(),
                self.0.as_ptr(),
                object,
                &mut out,
            )
        };
        host_result(status)?;
        Ok(Model(owned(out)))
    }
}
