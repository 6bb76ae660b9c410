//! Guiders and samplers made by plugins, behind weft's own traits, so every
//! built-in sampler drives a plugin guider and a plugin sampler drives any
//! built-in guider.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use candle_core::{Result, Tensor};
use libloading::Library;
use weft_plugin_abi::{self as abi, tensor};
use weft_sampling::{Denoiser, Path, SampleContext, Sampler};

use crate::call::{CallState, Origin};
use crate::handle::HostHandle;

/// A plugin object and the library its code lives in.
pub(crate) struct PluginObject {
    object: abi::Object,
    /// Who made it, for error messages: "plugin node `APGGuider`".
    name: String,
    _library: Arc<Library>,
}

// SAFETY: the ABI requires plugin objects to be callable from any thread.
unsafe impl Send for PluginObject {}
unsafe impl Sync for PluginObject {}

impl PluginObject {
    pub(crate) fn new(object: abi::Object, name: String, library: Arc<Library>) -> Self {
        PluginObject {
            object,
            name,
            _library: library,
        }
    }

    /// Who made the object, for calls it makes back into the host.
    pub(crate) fn owner(&self) -> crate::call::Owner {
        crate::call::Owner {
            name: self.name.clone(),
            library: self._library.clone(),
        }
    }

    pub(crate) fn data(&self) -> *mut std::ffi::c_void {
        self.object.data
    }

    pub(crate) fn vtable(&self) -> &abi::ObjectVTable {
        // SAFETY: checked non-null when the object was accepted.
        unsafe { &*self.object.vtable }
    }

    /// Whether the plugin's table is long enough to hold a field ending at
    /// `end` and that field is set.
    pub(crate) fn provides(&self, end: usize, set: impl Fn(&abi::ObjectVTable) -> bool) -> bool {
        self.vtable().size as usize >= end && set(self.vtable())
    }

    fn fail(&self, state: &CallState<'_, '_>) -> candle_core::Error {
        if state.was_cancelled() {
            return candle_core::Error::Msg("interrupted".into());
        }
        candle_core::Error::Msg(format!("{}: {}", self.name, state.take_error()))
    }

    /// Imports a tensor the plugin returned, which must match `like`'s shape.
    pub(crate) unsafe fn result(
        &self,
        status: abi::Status,
        state: &CallState<'_, '_>,
        out: *mut abi::DLManagedTensorVersioned,
        like: &Tensor,
    ) -> Result<Tensor> {
        if status != abi::STATUS_OK {
            tensor::delete(out);
            return Err(self.fail(state));
        }
        let t = tensor::import_owned(out).map_err(|e| {
            candle_core::Error::Msg(format!("{} returned a malformed tensor: {e}", self.name))
        })?;
        if t.dims() != like.dims() {
            return Err(candle_core::Error::Msg(format!(
                "{} returned shape {:?}, expected {:?}",
                self.name,
                t.dims(),
                like.dims()
            )));
        }
        t.to_dtype(like.dtype())
    }
}

impl Drop for PluginObject {
    fn drop(&mut self) {
        if let Some(release) = self.vtable().release {
            unsafe { release(self.object.data) }
        }
    }
}

impl fmt::Debug for PluginObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A plugin GUIDER.
pub(crate) struct PluginGuider(pub(crate) Arc<PluginObject>);

impl Denoiser for PluginGuider {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let object = &self.0;
        let denoise = object.vtable().denoise.expect("checked on creation");
        let state = CallState::new(Origin::Denoise);
        let exported = tensor::export(x).map_err(candle_core::Error::Msg)?;
        let mut out = std::ptr::null_mut();
        unsafe {
            let status = denoise(
                object.object.data,
                state.as_call(),
                exported,
                sigma,
                &mut out,
            );
            tensor::delete(exported);
            object.result(status, &state, out, x)
        }
    }

    fn path(&self) -> Path {
        let path = self.0.vtable().path.expect("checked on creation");
        match unsafe { path(self.0.object.data) } {
            abi::PATH_FLOW => Path::Flow,
            _ => Path::Diffusion,
        }
    }
}

/// A plugin SAMPLER.
#[derive(Debug)]
pub(crate) struct PluginSampler(pub(crate) Arc<PluginObject>);

impl Sampler for PluginSampler {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        ctx: &mut SampleContext<'_>,
    ) -> Result<Tensor> {
        let object = &self.0;
        let sample = object.vtable().sample.expect("checked on creation");
        let lent = HostHandle::lend(denoiser);
        let state = CallState::new(Origin::Sample(RefCell::new(ctx)));
        let exported = tensor::export(&x).map_err(candle_core::Error::Msg)?;
        let mut out = std::ptr::null_mut();
        unsafe {
            let status = sample(
                object.object.data,
                state.as_call(),
                lent.as_abi(),
                exported,
                sigmas.as_ptr(),
                sigmas.len(),
                &mut out,
            );
            lent.expire();
            tensor::delete(exported);
            object.result(status, &state, out, &x)
        }
    }
}
