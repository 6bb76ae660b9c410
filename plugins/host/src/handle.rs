//! Host objects as plugins see them: reference-counted opaque handles.

use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use weft_core::Value;
use weft_plugin_abi::{self as abi, Str};
use weft_sampling::handles::GuiderHandle;
use weft_sampling::{Conditioning, Denoiser, Path};

/// What a handle stands for.
pub(crate) enum HostObject {
    /// A graph value (MODEL, GUIDER, CONDITIONING, ...).
    Value(Value),
    /// The denoiser a sampler is driving, valid during `sample` only; cleared
    /// afterwards so a handle kept against the rules fails cleanly.
    Borrowed(Mutex<Option<&'static dyn Denoiser>>),
    /// The model a denoiser wrapper wraps, valid during its call only.
    Inner(Mutex<Option<InnerRef>>),
}

/// A wrapper's inner D(x, σ, c).
type InnerFn = dyn Fn(&Tensor, f64, &Conditioning) -> candle_core::Result<Tensor>;

/// A wrapper's inner D, lent for one call.
#[derive(Clone, Copy)]
pub(crate) struct InnerRef(pub(crate) &'static InnerFn);

// SAFETY: used only on the thread of the call it was lent for (the ABI's
// rule for `call`-taking functions), and cleared before the borrow ends.
unsafe impl Send for InnerRef {}
unsafe impl Sync for InnerRef {}

pub(crate) struct HostHandle {
    pub(crate) object: HostObject,
    type_name: &'static str,
}

impl HostHandle {
    /// A new handle holding one reference, which the caller must release.
    pub(crate) fn share(value: Value) -> *const abi::Handle {
        let type_name = value.ty().name();
        Arc::into_raw(Arc::new(HostHandle {
            object: HostObject::Value(value),
            type_name,
        }))
        .cast()
    }

    /// A handle for a denoiser borrowed for one call.
    pub(crate) fn lend(denoiser: &dyn Denoiser) -> Arc<HostHandle> {
        // SAFETY: `expire` clears the reference before the borrow ends.
        let denoiser: &'static dyn Denoiser = unsafe { std::mem::transmute(denoiser) };
        Arc::new(HostHandle {
            object: HostObject::Borrowed(Mutex::new(Some(denoiser))),
            type_name: "GUIDER",
        })
    }

    /// A MODEL handle for a wrapper's inner D, lent for one call.
    pub(crate) fn lend_inner(inner: weft_sampling::wrapper::Inner<'_>) -> Arc<HostHandle> {
        // SAFETY: `expire` clears the reference before the borrow ends.
        let inner: &'static InnerFn = unsafe { std::mem::transmute(inner) };
        Arc::new(HostHandle {
            object: HostObject::Inner(Mutex::new(Some(InnerRef(inner)))),
            type_name: "MODEL",
        })
    }

    pub(crate) fn expire(&self) {
        match &self.object {
            HostObject::Borrowed(d) => *d.lock().unwrap_or_else(|e| e.into_inner()) = None,
            HostObject::Inner(i) => *i.lock().unwrap_or_else(|e| e.into_inner()) = None,
            HostObject::Value(_) => {}
        }
    }

    pub(crate) fn as_abi(self: &Arc<Self>) -> *const abi::Handle {
        Arc::as_ptr(self).cast()
    }

    /// The value behind a handle a plugin returned.
    pub(crate) fn value(&self) -> Option<&Value> {
        match &self.object {
            HostObject::Value(v) => Some(v),
            HostObject::Borrowed(_) | HostObject::Inner(_) => None,
        }
    }
}

/// # Safety
/// `handle` must be null or a live handle from [`HostHandle::share`] or [`HostHandle::lend`].
pub(crate) unsafe fn resolve<'a>(handle: *const abi::Handle) -> Option<&'a HostHandle> {
    handle.cast::<HostHandle>().as_ref()
}

pub(crate) unsafe extern "C" fn handle_retain(handle: *const abi::Handle) {
    if !handle.is_null() {
        Arc::increment_strong_count(handle.cast::<HostHandle>());
    }
}

pub(crate) unsafe extern "C" fn handle_release(handle: *const abi::Handle) {
    if !handle.is_null() {
        let _ = std::panic::catch_unwind(|| {
            Arc::decrement_strong_count(handle.cast::<HostHandle>());
        });
    }
}

pub(crate) unsafe extern "C" fn handle_type(handle: *const abi::Handle) -> Str {
    resolve(handle).map_or(Str::new("?"), |h| Str::new(h.type_name))
}

fn path_code(path: Path) -> u32 {
    match path {
        Path::Diffusion => abi::PATH_DIFFUSION,
        Path::Flow => abi::PATH_FLOW,
    }
}

pub(crate) unsafe extern "C" fn handle_path(handle: *const abi::Handle) -> u32 {
    std::panic::catch_unwind(|| {
        with_denoiser(handle, |d| Ok(path_code(d.path()))).unwrap_or(abi::PATH_DIFFUSION)
    })
    .unwrap_or(abi::PATH_DIFFUSION)
}

/// Runs `f` on the denoiser behind a GUIDER handle or a lent denoiser.
unsafe fn with_denoiser<T>(
    handle: *const abi::Handle,
    f: impl FnOnce(&dyn Denoiser) -> Result<T, String>,
) -> Result<T, String> {
    let handle = resolve(handle).ok_or("the denoiser handle is null")?;
    match &handle.object {
        HostObject::Value(value) => {
            let guider = value.downcast::<GuiderHandle>().ok_or_else(|| {
                format!(
                    "denoise needs a GUIDER handle, this one is {}",
                    handle.type_name
                )
            })?;
            f(guider.denoiser.as_ref())
        }
        HostObject::Borrowed(slot) => {
            let denoiser = *slot.lock().unwrap_or_else(|e| e.into_inner());
            let denoiser =
                denoiser.ok_or("the sampler's denoiser handle was used after `sample` returned")?;
            f(denoiser)
        }
        HostObject::Inner(_) => Err("denoise needs a GUIDER; use model_denoise for a MODEL".into()),
    }
}

/// D(x, σ) through a handle, for the host API's `denoise`.
pub(crate) unsafe fn denoise_through(
    handle: *const abi::Handle,
    x: &Tensor,
    sigma: f64,
) -> Result<Tensor, String> {
    with_denoiser(handle, |d| d.denoise(x, sigma).map_err(|e| e.to_string()))
}
