//! Guiders and samplers a plugin hands to weft as GUIDER and SAMPLER values,
//! and the object tables the host calls them through.
//!
//! Depends on `context` (for `guard`) and `handle`.

use std::ffi::c_void;
use std::sync::Arc;

use candle_core::Tensor;
use weft_plugin_abi::{self as abi, tensor, Call, DLManagedTensorVersioned, ObjectVTable, Status};

use crate::context::{guard, Context};
use crate::error::Result;
use crate::handle::{Handle, Path};

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

pub(crate) enum Boxed {
    Guider(Arc<dyn Guider>),
    Sampler(Arc<dyn Sampler>),
}

pub(crate) fn into_object(boxed: Boxed) -> abi::Object {
    let vtable = match boxed {
        Boxed::Guider(_) => &GUIDER_VTABLE,
        Boxed::Sampler(_) => &SAMPLER_VTABLE,
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
};

static SAMPLER_VTABLE: ObjectVTable = ObjectVTable {
    size: std::mem::size_of::<ObjectVTable>() as u32,
    release: Some(release),
    denoise: None,
    path: None,
    sample: Some(sample),
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
        Boxed::Sampler(_) => abi::PATH_DIFFUSION,
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
