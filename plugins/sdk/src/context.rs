//! The host's side of one call: the host table this library was loaded
//! with, [`Context`] (what a plugin may ask of the host during a call), and
//! [`guard`], which every exported function runs its body in.
//!
//! Depends only on `error`; host objects live in `handle`.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

use candle_core::Tensor;
use weft_plugin_abi::{self as abi, tensor, Call, HostApi, Status, Str};

use crate::error::{Error, Result};

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

thread_local! {
    /// How many [`guard`]s this thread is inside (they nest: a plugin
    /// sampler's `sample` calls the host, which may call a plugin guider).
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Installs, once per loaded copy of the plugin, a panic hook that stays
/// silent inside [`guard`]: there the panic becomes the node's error, and
/// weft prints that one message, so the default hook's `thread '…'
/// panicked at …` on stderr would say it twice. Elsewhere (a thread the
/// plugin started) the previous hook runs as before. A cdylib links its own
/// copy of std, so this hook only ever sees this plugin's panics.
fn quiet_guarded_panics() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning its error or panic into a status and a message on `call`.
pub(crate) fn guard(call: *const Call, f: impl FnOnce() -> Result<()>) -> Status {
    quiet_guarded_panics();
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    let message = match result {
        Ok(Ok(())) => return abi::STATUS_OK,
        Ok(Err(e)) => e.0,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text payload".into());
            format!("the plugin panicked: {what}")
        }
    };
    unsafe { (host().set_error)(call, Str::new(&message)) };
    abi::STATUS_ERROR
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

/// The host's side of one call: progress, cancellation, logging, threads
/// and step noise. Guiders and samplers get it directly; a node gets it
/// inside its [`NodeContext`](crate::NodeContext), which dereferences to it.
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
