//! Host objects (a MODEL, a GUIDER, a CONDITIONING, ...) as the plugin
//! holds them, and the Gaussian [`Path`] a denoiser lives on.
//!
//! Depends on `context` (the host table, and the call a denoise runs in).

use candle_core::Tensor;
use weft_plugin_abi::{self as abi, tensor};

use crate::context::{host, host_result, Context};
use crate::error::Result;

/// The Gaussian path a model lives on: `x_σ = α(σ)·x0 + σ·ε`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// α = 1 (variance-exploding form; weft converts VP models into it).
    Diffusion,
    /// α = 1 − σ (flow matching).
    Flow,
}

impl Path {
    pub fn alpha(self, sigma: f64) -> f64 {
        match self {
            Path::Diffusion => 1.0,
            Path::Flow => 1.0 - sigma,
        }
    }

    pub(crate) fn code(self) -> u32 {
        match self {
            Path::Diffusion => abi::PATH_DIFFUSION,
            Path::Flow => abi::PATH_FLOW,
        }
    }
}

/// A host object (a MODEL, a GUIDER, a CONDITIONING, ...). Cloning retains
/// it and dropping releases it, so a plugin guider can keep its inputs.
pub struct Handle {
    ptr: *const abi::Handle,
    /// Borrowed handles (the denoiser given to a sampler) are not released.
    owned: bool,
}

// SAFETY: host handles are reference-counted and thread-safe on the host side.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Handle {
    /// Retains `ptr` (an input's handle) so it outlives the call.
    pub(crate) fn retained(ptr: *const abi::Handle) -> Self {
        unsafe { (host().handle_retain)(ptr) };
        Handle { ptr, owned: true }
    }

    /// Wraps a handle valid for the current call only.
    pub(crate) fn borrowed(ptr: *const abi::Handle) -> Self {
        Handle { ptr, owned: false }
    }

    /// Takes over a reference the host gave us (a new handle it returned).
    pub(crate) fn owned(ptr: *const abi::Handle) -> Self {
        Handle { ptr, owned: true }
    }

    pub(crate) fn as_ptr(&self) -> *const abi::Handle {
        self.ptr
    }

    /// Gives up this reference to the host, which takes it over.
    pub(crate) fn into_ptr(self) -> *const abi::Handle {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// The weft type name: "GUIDER", "MODEL", ...
    pub fn type_name(&self) -> &'static str {
        unsafe { (host().handle_type)(self.ptr).as_str() }.unwrap_or("?")
    }

    /// D(x, σ) through the host: this must be a GUIDER (or a sampler's
    /// denoiser). In a node's `run`, pass `&cx` (it dereferences to the
    /// [`Context`]).
    pub fn denoise(&self, ctx: &Context, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let x = tensor::export(x)?;
        let mut out = std::ptr::null_mut();
        let status = unsafe { (host().denoise)(ctx.call(), self.ptr, x, sigma, &mut out) };
        unsafe { tensor::delete(x) };
        host_result(status)?;
        Ok(unsafe { tensor::import_owned(out) }?)
    }

    /// The path of the model behind a denoiser.
    pub fn path(&self) -> Path {
        match unsafe { (host().denoiser_path)(self.ptr) } {
            abi::PATH_FLOW => Path::Flow,
            _ => Path::Diffusion,
        }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Self {
        Handle::retained(self.ptr)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.owned {
            unsafe { (host().handle_release)(self.ptr) }
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} handle", self.type_name())
    }
}
