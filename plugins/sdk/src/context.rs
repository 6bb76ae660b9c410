//! What a plugin can ask of the host during a call, and host objects.

use std::sync::atomic::{AtomicPtr, Ordering};

use candle_core::Tensor;
use weft_plugin_abi::{self as abi, tensor, Call, HostApi, Str};

use crate::objects::Path;
use crate::{Error, Result};

/// The host table this library was loaded with (each loaded copy of a
/// plugin has its own).
static HOST: AtomicPtr<HostApi> = AtomicPtr::new(std::ptr::null_mut());

pub(crate) fn set_host(host: *const HostApi) {
    HOST.store(host as *mut HostApi, Ordering::Release);
}

pub(crate) fn host() -> &'static HostApi {
    let host = HOST.load(Ordering::Acquire);
    // SAFETY: the entry point stores the host's static table before any
    // node, guider or sampler can be called.
    unsafe { host.as_ref() }.expect("weft_plugin_entry ran first")
}

/// The host's side of one call: progress, cancellation, logging, threads
/// and step noise.
pub struct Context {
    call: *const Call,
}

impl Context {
    pub(crate) fn new(call: *const Call) -> Self {
        Context { call }
    }

    pub(crate) fn call(&self) -> *const Call {
        self.call
    }

    /// Reports step progress (`done` of `total`).
    pub fn progress(&self, done: u64, total: u64) {
        unsafe { (host().progress)(self.call, done, total) }
    }

    pub fn is_cancelled(&self) -> bool {
        unsafe { (host().is_cancelled)(self.call) != 0 }
    }

    /// An error once the user interrupted the run; long loops call it each step.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error("interrupted".into()))
        } else {
            Ok(())
        }
    }

    pub fn log(&self, message: &str) {
        unsafe { (host().log)(self.call, abi::LOG_INFO, Str::new(message)) }
    }

    pub fn warn(&self, message: &str) {
        unsafe { (host().log)(self.call, abi::LOG_WARN, Str::new(message)) }
    }

    /// Threads this call may use; a plugin must not start more, nor keep any.
    pub fn threads(&self) -> usize {
        unsafe { (host().threads)(self.call) as usize }
    }

    /// Seeded noise shaped like `like`, for stochastic samplers: the same
    /// seed gives the same noise, so plugin samplers stay deterministic.
    pub fn step_noise(&self, like: &Tensor) -> Result<Tensor> {
        let like = tensor::export(like)?;
        let mut out = std::ptr::null_mut();
        let status = unsafe { (host().step_noise)(self.call, like, &mut out) };
        unsafe { tensor::delete(like) };
        host_result(status)?;
        Ok(unsafe { tensor::import_owned(out) }?)
    }
}

/// Turns a host status into an error; the host already recorded the details
/// on the call, and they win over the plugin's later message.
pub(crate) fn host_result(status: abi::Status) -> Result<()> {
    if status == abi::STATUS_OK {
        Ok(())
    } else {
        Err(Error("the host reported an error".into()))
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

    pub(crate) fn ptr(&self) -> *const abi::Handle {
        self.ptr
    }

    /// The weft type name: "GUIDER", "MODEL", ...
    pub fn type_name(&self) -> &'static str {
        unsafe { (host().handle_type)(self.ptr).as_str() }.unwrap_or("?")
    }

    /// D(x, σ) through the host: this must be a GUIDER (or a sampler's denoiser).
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
