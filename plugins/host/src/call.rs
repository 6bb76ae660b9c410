//! The host's side of one call into a plugin, and the host API table whose
//! functions a plugin calls back with it.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::{DType, Device, Tensor};
use weft_core::NodeContext;
use weft_plugin_abi::{
    self as abi, tensor, Call, DLDataType, DLManagedTensorVersioned, HostApi, Str,
};
use weft_sampling::SampleContext;

use crate::handle::{denoise_through, handle_path, handle_release, handle_retain, handle_type};
use crate::{patches, views};

/// Where a call came from decides what progress and step noise mean.
pub(crate) enum Origin<'a, 'b> {
    /// A node's `run`.
    Node(&'a NodeContext<'b>),
    /// A plugin sampler's `sample`: progress and noise go to the sampling loop.
    Sample(RefCell<&'a mut SampleContext<'b>>),
    /// A plugin guider's `denoise`, inside some sampler.
    Denoise,
}

/// One call's state. Plugins see it as an opaque `WeftCall*`.
pub(crate) struct CallState<'a, 'b> {
    origin: Origin<'a, 'b>,
    error: RefCell<Option<String>>,
    cancelled: Cell<bool>,
    /// Who is calling: objects the plugin hands over during the call
    /// (model wrappers, attention hooks) keep its library loaded.
    pub(crate) owner: Option<Owner>,
}

/// The plugin code behind a call, for naming and keeping it loaded.
#[derive(Clone)]
pub(crate) struct Owner {
    pub(crate) name: String,
    pub(crate) library: std::sync::Arc<libloading::Library>,
}

impl<'a, 'b> CallState<'a, 'b> {
    pub(crate) fn new(origin: Origin<'a, 'b>) -> Self {
        CallState {
            origin,
            error: RefCell::new(None),
            cancelled: Cell::new(false),
            owner: None,
        }
    }

    pub(crate) fn owned_by(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    pub(crate) fn as_call(&self) -> *const Call {
        (self as *const Self).cast()
    }

    /// The plugin's message, or a stand-in when it gave none.
    pub(crate) fn take_error(&self) -> String {
        self.error
            .borrow_mut()
            .take()
            .unwrap_or_else(|| "the plugin reported an error without a message".into())
    }

    pub(crate) fn was_cancelled(&self) -> bool {
        self.cancelled.get()
            || matches!(&self.origin, Origin::Node(ctx) if ctx.cancel_token().is_cancelled())
    }

    /// Records an error; the first wins, so a host error a plugin passes on
    /// keeps its detail.
    pub(crate) fn set_error(&self, message: String) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(message);
        }
    }
}

/// Recovers the call state; `None` for a null call (the entry point's log).
///
/// # Safety
/// `call` must be null or come from [`CallState::as_call`] of a live state.
pub(crate) unsafe fn state<'x>(call: *const Call) -> Option<&'x CallState<'x, 'x>> {
    call.cast::<CallState<'x, 'x>>().as_ref()
}

/// Runs a host callback without letting a panic unwind into plugin code.
pub(crate) fn shielded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

unsafe extern "C" fn set_error(call: *const Call, message: Str) {
    shielded((), || {
        if let Some(state) = state(call) {
            let text = message
                .as_str()
                .unwrap_or("(the plugin's error message is not UTF-8)");
            state.set_error(text.to_string());
        }
    })
}

unsafe extern "C" fn log(call: *const Call, level: u32, message: Str) {
    shielded((), || {
        let text = message.as_str().unwrap_or("(not UTF-8)");
        match state(call).map(|s| &s.origin) {
            Some(Origin::Node(ctx)) => ctx.output(text),
            _ if level == abi::LOG_WARN => eprintln!("warning: plugin: {text}"),
            _ => eprintln!("plugin: {text}"),
        }
    })
}

unsafe extern "C" fn progress(call: *const Call, done: u64, total: u64) {
    shielded((), || match state(call).map(|s| (s, &s.origin)) {
        Some((_, Origin::Node(ctx))) => ctx.progress(done, total),
        Some((state, Origin::Sample(sample))) => {
            let mut sample = sample.borrow_mut();
            if (sample.progress)(done as usize, total as usize).is_err() {
                state.cancelled.set(true);
            }
        }
        _ => {}
    })
}

unsafe extern "C" fn is_cancelled(call: *const Call) -> i32 {
    shielded(0, || state(call).is_some_and(|s| s.was_cancelled()) as i32)
}

unsafe extern "C" fn threads(call: *const Call) -> u32 {
    shielded(1, || match state(call).map(|s| &s.origin) {
        Some(Origin::Node(ctx)) => ctx.threads.max(1) as u32,
        // Guiders and samplers run inside a heavy node that owns the cores.
        _ => 1,
    })
}

unsafe extern "C" fn alloc_tensor(
    dtype: DLDataType,
    ndim: i32,
    shape: *const i64,
) -> *mut DLManagedTensorVersioned {
    shielded(std::ptr::null_mut(), || {
        let dtype = match (dtype.code, dtype.bits, dtype.lanes) {
            (abi::DL_FLOAT, 32, 1) => DType::F32,
            (abi::DL_FLOAT, 64, 1) => DType::F64,
            (abi::DL_INT, 64, 1) => DType::I64,
            (abi::DL_UINT, 8, 1) => DType::U8,
            (abi::DL_UINT, 32, 1) => DType::U32,
            _ => return std::ptr::null_mut(),
        };
        if !(0..=tensor::MAX_DIMS).contains(&ndim) || (ndim > 0 && shape.is_null()) {
            return std::ptr::null_mut();
        }
        let dims = if ndim == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(shape, ndim as usize)
        };
        if dims.iter().any(|d| *d < 0) {
            return std::ptr::null_mut();
        }
        let dims: Vec<usize> = dims.iter().map(|d| *d as usize).collect();
        let allocated = Tensor::zeros(dims, dtype, &Device::Cpu).and_then(|t| {
            // A private copy the plugin may write, not a shared zero buffer.
            t.copy()
        });
        match allocated
            .map_err(|e| e.to_string())
            .and_then(|t| tensor::export(&t))
        {
            Ok(managed) => {
                // Writable: nobody else holds this storage.
                (*managed).flags &= !abi::DLPACK_FLAG_READ_ONLY;
                managed
            }
            Err(_) => std::ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn step_noise(
    call: *const Call,
    like: *const DLManagedTensorVersioned,
    out: *mut *mut DLManagedTensorVersioned,
) -> abi::Status {
    shielded(abi::STATUS_ERROR, || {
        let Some(state) = state(call) else {
            return abi::STATUS_ERROR;
        };
        let result = (|| {
            let Origin::Sample(sample) = &state.origin else {
                return Err("step noise is only available while a plugin sampler runs".into());
            };
            if out.is_null() {
                return Err("the output pointer is null".to_string());
            }
            let like = tensor::import_borrowed(like)?;
            let noise = sample
                .borrow_mut()
                .noise
                .sample(&like)
                .map_err(|e| e.to_string())?;
            *out = tensor::export(&noise)?;
            Ok(())
        })();
        status(state, result)
    })
}

unsafe extern "C" fn denoise(
    call: *const Call,
    denoiser: *const abi::Handle,
    x: *const DLManagedTensorVersioned,
    sigma: f64,
    out: *mut *mut DLManagedTensorVersioned,
) -> abi::Status {
    shielded(abi::STATUS_ERROR, || {
        let Some(state) = state(call) else {
            return abi::STATUS_ERROR;
        };
        let result = (|| {
            if out.is_null() {
                return Err("the output pointer is null".to_string());
            }
            let x = tensor::import_borrowed(x).map_err(|e| format!("denoise: x: {e}"))?;
            let d = denoise_through(denoiser, &x, sigma)?;
            *out = tensor::export(&d)?;
            Ok(())
        })();
        status(state, result)
    })
}

/// Runs a fallible host function for `call`, recording its error there.
///
/// # Safety
/// As [`state`].
pub(crate) unsafe fn with_call(
    call: *const Call,
    f: impl FnOnce(&CallState<'_, '_>) -> Result<(), String>,
) -> abi::Status {
    shielded(abi::STATUS_ERROR, || {
        let Some(state) = state(call) else {
            return abi::STATUS_ERROR;
        };
        let result = f(state);
        status(state, result)
    })
}

fn status(state: &CallState<'_, '_>, result: Result<(), String>) -> abi::Status {
    match result {
        Ok(()) => abi::STATUS_OK,
        Err(message) => {
            state.set_error(message);
            abi::STATUS_ERROR
        }
    }
}

/// The table every plugin receives; static, so it outlives any plugin.
pub(crate) static HOST_API: HostApi = HostApi {
    abi_major: abi::ABI_MAJOR,
    abi_minor: abi::ABI_MINOR,
    size: std::mem::size_of::<HostApi>() as u32,
    set_error,
    log,
    progress,
    is_cancelled,
    threads,
    alloc_tensor,
    handle_retain,
    handle_release,
    handle_type,
    denoise,
    denoiser_path: handle_path,
    step_noise,
    cond_len: views::cond_len,
    cond_get: views::cond_get,
    cond_set: views::cond_set,
    cond_entry: views::cond_entry,
    cond_combine: views::cond_combine,
    cond_new: views::cond_new,
    model_wrap: patches::model_wrap,
    model_denoise: patches::model_denoise,
    model_add_deltas: patches::model_add_deltas,
    model_attention_hook: patches::model_attention_hook,
};
