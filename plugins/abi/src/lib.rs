//! The boundary between weft and a plugin library, as plain `#[repr(C)]`
//! data and `extern "C"` function pointers, mirrored by
//! `include/weft_plugin.h` for plugins written in C.
//!
//! Nothing Rust-specific crosses: strings are pointer + length, tensors are
//! DLPack (`DLManagedTensorVersioned`), host objects are opaque handles and
//! plugin objects are a data pointer plus a function table.
//!
//! # Versioning
//! The entry symbol [`ENTRY_SYMBOL`] and its signature ([`EntryFn`]) never
//! change, nor do the first three fields of [`HostApi`] and [`PluginInfo`]:
//! ABI major, minor and the table's size in bytes. A new minor version only
//! appends fields, so either side reads just the fields the other one's
//! `size` covers. A new major version is refused by the other side.
//!
//! # Ownership
//! Whoever allocates frees. Inputs handed to a plugin (tensors, strings,
//! handles) belong to the host and live for the duration of the call; a
//! plugin that keeps a handle retains it. Tensors a plugin returns carry their
//! own DLPack deleter, which the host calls once it has copied them. Strings a
//! plugin returns must stay valid until its next call on the same thread.
//! Plugin objects are released through their table's `release`.

#![allow(non_camel_case_types)]

use std::ffi::c_void;

/// Raised when a change breaks existing plugins; the host refuses other majors.
pub const ABI_MAJOR: u32 = 1;
/// Raised when fields are appended to a table. 1.1 appended the
/// CONDITIONING views and MODEL patches to [`HostApi`] and two slots to
/// [`ObjectVTable`].
pub const ABI_MINOR: u32 = 1;

/// The one symbol a plugin library exports.
pub const ENTRY_SYMBOL: &[u8] = b"weft_plugin_entry";

/// `const WeftPluginInfo *weft_plugin_entry(const WeftHostApi *host)`.
/// Returns null to refuse the host (its message goes through `host.log`).
pub type EntryFn = unsafe extern "C" fn(host: *const HostApi) -> *const PluginInfo;

/// Return value of fallible calls: [`STATUS_OK`] or [`STATUS_ERROR`], with
/// the message passed to [`HostApi::set_error`] first.
pub type Status = i32;
pub const STATUS_OK: Status = 0;
pub const STATUS_ERROR: Status = 1;

/// Borrowed UTF-8 text (not NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    pub ptr: *const u8,
    pub len: usize,
}

impl Str {
    pub const EMPTY: Str = Str {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn new(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The text, or `None` when the pointer is null with a length or the bytes are not UTF-8.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_str<'a>(self) -> Option<&'a str> {
        if self.len == 0 {
            return Some("");
        }
        if self.ptr.is_null() {
            return None;
        }
        std::str::from_utf8(std::slice::from_raw_parts(self.ptr, self.len)).ok()
    }
}

// ---------------------------------------------------------------- DLPack 1.x

/// DLPack's ABI version, carried by every versioned tensor.
pub const DLPACK_MAJOR: u32 = 1;
pub const DLPACK_MINOR: u32 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLPackVersion {
    pub major: u32,
    pub minor: u32,
}

/// `kDLCPU`; weft's plugins exchange CPU tensors.
pub const DL_CPU: i32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

pub const DL_INT: u8 = 0;
pub const DL_UINT: u8 = 1;
pub const DL_FLOAT: u8 = 2;
pub const DL_BFLOAT: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

impl DLDataType {
    pub const F32: DLDataType = DLDataType {
        code: DL_FLOAT,
        bits: 32,
        lanes: 1,
    };
}

#[repr(C)]
#[derive(Debug)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    /// In elements; null means compact row-major.
    pub strides: *mut i64,
    pub byte_offset: u64,
}

/// The tensor is shared; writing to it is undefined.
pub const DLPACK_FLAG_READ_ONLY: u64 = 1;

#[repr(C)]
#[derive(Debug)]
pub struct DLManagedTensorVersioned {
    pub version: DLPackVersion,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    pub flags: u64,
    pub dl_tensor: DLTensor,
}

// ------------------------------------------------------------------- values

/// Which field of a [`Value`] holds it.
pub type ValueTag = u32;
/// An absent optional input.
pub const VALUE_NONE: ValueTag = 0;
pub const VALUE_INT: ValueTag = 1;
pub const VALUE_FLOAT: ValueTag = 2;
pub const VALUE_BOOL: ValueTag = 3;
pub const VALUE_STRING: ValueTag = 4;
/// IMAGE, MASK, SIGMAS, or LATENT (with its latent space in `string`).
pub const VALUE_TENSOR: ValueTag = 5;
/// A host object (MODEL, GUIDER, CONDITIONING, ...), passed by handle.
pub const VALUE_HANDLE: ValueTag = 6;
/// An object the plugin made (a GUIDER or SAMPLER), with its function table.
pub const VALUE_OBJECT: ValueTag = 7;

/// A host object. Opaque: plugins only pass it back to the host.
#[repr(C)]
pub struct Handle {
    _private: [u8; 0],
}

/// The host's state for one call into the plugin. Opaque.
#[repr(C)]
pub struct Call {
    _private: [u8; 0],
}

/// A tagged value. Only the field named by `tag` is meaningful.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Value {
    pub tag: ValueTag,
    pub reserved: u32,
    pub int: i64,
    pub float: f64,
    /// STRING's text; for a LATENT tensor, its latent space.
    pub string: Str,
    pub tensor: *mut DLManagedTensorVersioned,
    pub handle: *const Handle,
    pub object: Object,
}

impl Value {
    pub const NONE: Value = Value {
        tag: VALUE_NONE,
        reserved: 0,
        int: 0,
        float: 0.0,
        string: Str::EMPTY,
        tensor: std::ptr::null_mut(),
        handle: std::ptr::null(),
        object: Object {
            data: std::ptr::null_mut(),
            vtable: std::ptr::null(),
        },
    };
}

/// A plugin-made object: its data and the functions that work on it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Object {
    pub data: *mut c_void,
    pub vtable: *const ObjectVTable,
}

/// The path a denoiser's model lives on (see weft's sampling notes).
pub const PATH_DIFFUSION: u32 = 0;
pub const PATH_FLOW: u32 = 1;

/// What a plugin object can do. GUIDER objects fill `denoise` and `path`;
/// SAMPLER objects fill `sample`.
#[repr(C)]
pub struct ObjectVTable {
    /// `sizeof` this table, so fields can be appended.
    pub size: u32,
    /// Frees `data`; the host calls it once, when the last user is gone.
    pub release: Option<unsafe extern "C" fn(data: *mut c_void)>,
    /// D(x, σ): writes a new tensor to `out`.
    pub denoise: Option<
        unsafe extern "C" fn(
            data: *mut c_void,
            call: *const Call,
            x: *const DLManagedTensorVersioned,
            sigma: f64,
            out: *mut *mut DLManagedTensorVersioned,
        ) -> Status,
    >,
    pub path: Option<unsafe extern "C" fn(data: *mut c_void) -> u32>,
    /// Walks `x` (already noised to `sigmas[0]`) down the schedule, calling
    /// the host's `denoise` on `denoiser` (valid during this call only) and
    /// drawing step noise with `step_noise`.
    pub sample: Option<
        unsafe extern "C" fn(
            data: *mut c_void,
            call: *const Call,
            denoiser: *const Handle,
            x: *const DLManagedTensorVersioned,
            sigmas: *const f64,
            n_sigmas: usize,
            out: *mut *mut DLManagedTensorVersioned,
        ) -> Status,
    >,
    /// 1.1, a denoiser wrapper ([`HostApi::model_wrap`]): D(x, σ) for the
    /// CONDITIONING `cond`, given the wrapped model `inner` (a handle valid
    /// during this call, for [`HostApi::model_denoise`]).
    pub wrap_denoise: Option<
        unsafe extern "C" fn(
            data: *mut c_void,
            call: *const Call,
            inner: *const Handle,
            x: *const DLManagedTensorVersioned,
            sigma: f64,
            cond: *const Handle,
            out: *mut *mut DLManagedTensorVersioned,
        ) -> Status,
    >,
    /// 1.1, an attention hook ([`HostApi::model_attention_hook`]): the
    /// attention of the layer `name` (diffusers' weight prefix) from `q`,
    /// `k`, `v` (`[batch, tokens, heads·dim]`), before the output
    /// projection. Leaving `*out` null keeps the host's attention.
    pub attend: Option<
        unsafe extern "C" fn(
            data: *mut c_void,
            call: *const Call,
            name: Str,
            q: *const DLManagedTensorVersioned,
            k: *const DLManagedTensorVersioned,
            v: *const DLManagedTensorVersioned,
            heads: u32,
            out: *mut *mut DLManagedTensorVersioned,
        ) -> Status,
    >,
}

// ------------------------------------------------------------------ schemas

/// The input must be connected or given.
pub const INPUT_REQUIRED: u32 = 1;
/// `min` holds a lower bound.
pub const INPUT_HAS_MIN: u32 = 2;
/// `max` holds an upper bound.
pub const INPUT_HAS_MAX: u32 = 4;
/// `step` holds a UI step.
pub const INPUT_HAS_STEP: u32 = 8;

/// One input, as in weft's built-in schemas.
#[repr(C)]
pub struct InputSpec {
    pub name: Str,
    /// A weft type name: "INT", "FLOAT", "IMAGE", "GUIDER", ...
    pub type_name: Str,
    pub flags: u32,
    /// A scalar default (`VALUE_NONE` for none).
    pub default_value: Value,
    pub min: f64,
    pub max: f64,
    pub step: f64,
    /// Allowed strings; the first is the default.
    pub choices: *const Str,
    pub n_choices: usize,
    pub doc: Str,
}

#[repr(C)]
pub struct OutputSpec {
    pub name: Str,
    pub type_name: Str,
    pub doc: Str,
}

/// The node has side effects and is what a run targets.
pub const NODE_OUTPUT: u32 = 1;
/// The node's result changes from run to run; it is never cached.
pub const NODE_NONDETERMINISTIC: u32 = 2;
/// The node uses every core it is given; the scheduler serialises such nodes.
pub const NODE_HEAVY: u32 = 4;

/// Runs a node: reads `inputs` (schema order), writes `outputs` (schema order).
pub type RunFn = unsafe extern "C" fn(
    node_data: *mut c_void,
    call: *const Call,
    inputs: *const Value,
    n_inputs: usize,
    outputs: *mut Value,
    n_outputs: usize,
) -> Status;

#[repr(C)]
pub struct NodeType {
    pub type_name: Str,
    pub category: Str,
    pub doc: Str,
    pub inputs: *const InputSpec,
    pub n_inputs: usize,
    pub outputs: *const OutputSpec,
    pub n_outputs: usize,
    pub flags: u32,
    pub node_data: *mut c_void,
    pub run: Option<RunFn>,
}

/// What [`EntryFn`] returns; static for the library's lifetime.
#[repr(C)]
pub struct PluginInfo {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `sizeof(PluginInfo)` as the plugin was built.
    pub size: u32,
    pub name: Str,
    pub version: Str,
    pub nodes: *const NodeType,
    pub n_nodes: usize,
}

// ---------------------------------------------------------------- host API

pub const LOG_INFO: u32 = 0;
pub const LOG_WARN: u32 = 1;

/// What the host offers a plugin. Functions that take a `call` must be
/// called on the thread running that call; the others on any thread. None
/// of them unwinds.
#[repr(C)]
pub struct HostApi {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `sizeof(HostApi)` as the host was built.
    pub size: u32,
    /// Records (copies) the error message for the current call. The first
    /// one wins, so a host error that a plugin passes on keeps its detail.
    pub set_error: unsafe extern "C" fn(call: *const Call, message: Str),
    pub log: unsafe extern "C" fn(call: *const Call, level: u32, message: Str),
    pub progress: unsafe extern "C" fn(call: *const Call, done: u64, total: u64),
    /// 1 once the user interrupted the run; long loops stop with an error.
    pub is_cancelled: unsafe extern "C" fn(call: *const Call) -> i32,
    /// Threads the plugin may use during this call (it must not keep any).
    pub threads: unsafe extern "C" fn(call: *const Call) -> u32,
    /// A zeroed, compact CPU tensor the plugin may fill and return.
    pub alloc_tensor: unsafe extern "C" fn(
        dtype: DLDataType,
        ndim: i32,
        shape: *const i64,
    ) -> *mut DLManagedTensorVersioned,
    pub handle_retain: unsafe extern "C" fn(handle: *const Handle),
    pub handle_release: unsafe extern "C" fn(handle: *const Handle),
    /// The weft type name of a handle ("GUIDER", "MODEL", ...), static text.
    pub handle_type: unsafe extern "C" fn(handle: *const Handle) -> Str,
    /// D(x, σ) through a GUIDER handle, or the denoiser given to `sample`.
    pub denoise: unsafe extern "C" fn(
        call: *const Call,
        denoiser: *const Handle,
        x: *const DLManagedTensorVersioned,
        sigma: f64,
        out: *mut *mut DLManagedTensorVersioned,
    ) -> Status,
    /// [`PATH_DIFFUSION`] or [`PATH_FLOW`] for a denoiser handle.
    pub denoiser_path: unsafe extern "C" fn(denoiser: *const Handle) -> u32,
    /// Seeded step noise shaped like `like` (during `sample` only).
    pub step_noise: unsafe extern "C" fn(
        call: *const Call,
        like: *const DLManagedTensorVersioned,
        out: *mut *mut DLManagedTensorVersioned,
    ) -> Status,

    // ---- 1.1: CONDITIONING views. A conditioning is a list of entries;
    // nothing is changed in place: every edit returns a new handle, which
    // the plugin owns (release it, or return it as an output). ----
    /// The entries of a CONDITIONING handle (0 for any other handle).
    pub cond_len: unsafe extern "C" fn(cond: *const Handle) -> usize,
    /// Field `key` ([`COND_KEYS`]) of entry `index` into `*out`: a tensor
    /// the plugin owns (and deletes), a float, a string, or `VALUE_NONE`
    /// when the entry has none.
    pub cond_get: unsafe extern "C" fn(
        call: *const Call,
        cond: *const Handle,
        index: usize,
        key: Str,
        out: *mut Value,
    ) -> Status,
    /// A copy of `cond` with field `key` of entry `index` set to `*value`
    /// (`VALUE_NONE` clears it). Tensors are copied; attachments (ControlNet
    /// hints, size conditioning) stay as they are.
    pub cond_set: unsafe extern "C" fn(
        call: *const Call,
        cond: *const Handle,
        index: usize,
        key: Str,
        value: *const Value,
        out: *mut *const Handle,
    ) -> Status,
    /// Entry `index` of `cond` alone, attachments included.
    pub cond_entry: unsafe extern "C" fn(
        call: *const Call,
        cond: *const Handle,
        index: usize,
        out: *mut *const Handle,
    ) -> Status,
    /// The entries of `a`, then those of `b` (`ConditioningCombine`).
    pub cond_combine: unsafe extern "C" fn(
        call: *const Call,
        a: *const Handle,
        b: *const Handle,
        out: *mut *const Handle,
    ) -> Status,
    /// A one-entry CONDITIONING from token states `[batch, tokens, dim]`
    /// and, optionally (null), pooled states `[batch, dim]`.
    pub cond_new: unsafe extern "C" fn(
        call: *const Call,
        context: *const DLManagedTensorVersioned,
        pooled: *const DLManagedTensorVersioned,
        out: *mut *const Handle,
    ) -> Status,

    // ---- 1.1: MODEL patches, each returning a new MODEL handle. ----
    /// `model` with a denoiser wrapper around D(x, σ): `wrapper`'s table
    /// has `wrap_denoise`. The host owns the object from here on (and
    /// releases it even when this fails).
    pub model_wrap: unsafe extern "C" fn(
        call: *const Call,
        model: *const Handle,
        wrapper: Object,
        out: *mut *const Handle,
    ) -> Status,
    /// D(x, σ) of a MODEL handle (or a wrapper's `inner`) for a
    /// CONDITIONING handle, with the model's own wrappers applied.
    pub model_denoise: unsafe extern "C" fn(
        call: *const Call,
        model: *const Handle,
        x: *const DLManagedTensorVersioned,
        sigma: f64,
        cond: *const Handle,
        out: *mut *mut DLManagedTensorVersioned,
    ) -> Status,
    /// `model` with `n` deltas added at `strength` to the weights named in
    /// `names` (the UNet's diffusers names, `….weight`), each delta shaped
    /// like its weight.
    pub model_add_deltas: unsafe extern "C" fn(
        call: *const Call,
        model: *const Handle,
        names: *const Str,
        deltas: *const *const DLManagedTensorVersioned,
        n: usize,
        strength: f64,
        out: *mut *const Handle,
    ) -> Status,
    /// `model` with its attention layers consulting `hook` (a table with
    /// `attend`). The host owns the object from here on.
    pub model_attention_hook: unsafe extern "C" fn(
        call: *const Call,
        model: *const Handle,
        hook: Object,
        out: *mut *const Handle,
    ) -> Status,
}

/// The fields of a conditioning entry that [`HostApi::cond_get`] and
/// [`HostApi::cond_set`] know: tensors `context` `[B,T,C]`, `pooled`
/// `[B,C]`, `labels` (int64 `[B]`, −1 for the null class), `mask`
/// `[1,H,W]`, `concat_latent`, `concat_mask`; floats `strength`,
/// `guidance` (Flux), `start_percent`, `end_percent`; and `area`, a
/// string `"cells H W TOP LEFT"` or `"fraction H W TOP LEFT"`.
pub const COND_KEYS: [&str; 11] = [
    "context",
    "pooled",
    "labels",
    "mask",
    "concat_latent",
    "concat_mask",
    "strength",
    "guidance",
    "start_percent",
    "end_percent",
    "area",
];

#[cfg(feature = "candle")]
pub mod tensor;
