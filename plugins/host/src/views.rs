//! ABI 1.1's CONDITIONING views: a plugin reads the entries of a
//! conditioning and builds new ones; every edit returns a new handle and
//! the conditioning it came from is never changed.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use weft_core::Value;
use weft_plugin_abi::{self as abi, tensor, Call, DLManagedTensorVersioned, Str};
use weft_sampling::{Area, Conditioning};

use crate::call::{shielded, with_call};
use crate::handle::{resolve, HostHandle};

/// The conditioning behind a handle.
unsafe fn conditioning(handle: *const abi::Handle) -> Result<Conditioning, String> {
    let handle = resolve(handle).ok_or("the conditioning handle is null")?;
    handle
        .value()
        .and_then(|v| v.downcast::<Conditioning>())
        .cloned()
        .ok_or_else(|| "the handle is not a CONDITIONING".to_string())
}

/// One conditioning of `entries`, the first holding the rest (as
/// `ConditioningCombine` builds them).
fn from_entries(mut entries: Vec<Conditioning>) -> Result<Conditioning, String> {
    if entries.is_empty() {
        return Err("a conditioning needs at least one entry".into());
    }
    let rest = entries.split_off(1);
    let mut head = entries.pop().expect("one entry");
    head.also = rest;
    Ok(head)
}

fn entry(cond: &Conditioning, index: usize) -> Result<Conditioning, String> {
    let entries = cond.entries();
    let n = entries.len();
    entries
        .into_iter()
        .nth(index)
        .ok_or_else(|| format!("entry {index} of a conditioning with {n}"))
}

unsafe fn give(out: *mut *const abi::Handle, cond: Conditioning) -> Result<(), String> {
    if out.is_null() {
        return Err("the output pointer is null".into());
    }
    *out = HostHandle::share(Value::handle(cond));
    Ok(())
}

pub(crate) unsafe extern "C" fn cond_len(cond: *const abi::Handle) -> usize {
    shielded(0, || conditioning(cond).map_or(0, |c| c.entries().len()))
}

thread_local! {
    /// The last `area` string given out on this thread: valid until the
    /// next `cond_get` here, as the ABI's rule for returned strings.
    static AREA_TEXT: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) unsafe extern "C" fn cond_get(
    call: *const Call,
    cond: *const abi::Handle,
    index: usize,
    key: Str,
    out: *mut abi::Value,
) -> abi::Status {
    with_call(call, |_| {
        if out.is_null() {
            return Err("the output pointer is null".into());
        }
        let key = key.as_str().ok_or("the key is not UTF-8")?;
        let e = entry(&conditioning(cond)?, index)?;
        let mut v = abi::Value::NONE;
        let tensor_value = |t: &Option<Tensor>, v: &mut abi::Value| -> Result<(), String> {
            if let Some(t) = t {
                v.tag = abi::VALUE_TENSOR;
                v.tensor = tensor::export(t)?;
            }
            Ok(())
        };
        let float = |x: Option<f64>, v: &mut abi::Value| {
            if let Some(x) = x {
                v.tag = abi::VALUE_FLOAT;
                v.float = x;
            }
        };
        match key {
            "context" => tensor_value(&e.context, &mut v)?,
            "pooled" => tensor_value(&e.pooled, &mut v)?,
            "mask" => tensor_value(&e.mask, &mut v)?,
            "concat_latent" => tensor_value(&e.concat_latent, &mut v)?,
            "concat_mask" => tensor_value(&e.concat_mask, &mut v)?,
            "labels" => {
                let labels = e.labels.as_ref().map(|l| {
                    let codes: Vec<i64> = l.iter().map(|x| x.map_or(-1, i64::from)).collect();
                    Tensor::new(codes, &Device::Cpu)
                });
                tensor_value(&labels.transpose().map_err(|e| e.to_string())?, &mut v)?
            }
            "strength" => float(e.strength, &mut v),
            "guidance" => float(e.guidance.iter().flatten().next().copied(), &mut v),
            "start_percent" => float(e.timestep_range.map(|r| r.0), &mut v),
            "end_percent" => float(e.timestep_range.map(|r| r.1), &mut v),
            "area" => {
                if let Some(area) = e.area {
                    let text = match area {
                        Area::Cells(h, w, t, l) => format!("cells {h} {w} {t} {l}"),
                        Area::Fraction(h, w, t, l) => format!("fraction {h} {w} {t} {l}"),
                    };
                    v.tag = abi::VALUE_STRING;
                    v.string = AREA_TEXT.with(|a| {
                        *a.borrow_mut() = text;
                        Str::new(a.borrow().as_str())
                    });
                }
            }
            other => return Err(unknown_key(other)),
        }
        *out = v;
        Ok(())
    })
}

fn unknown_key(key: &str) -> String {
    format!(
        "unknown conditioning key `{key}` (known: {})",
        abi::COND_KEYS.join(", ")
    )
}

/// The tensor in a value, copied; `None` for `VALUE_NONE`.
unsafe fn tensor_of(value: &abi::Value, key: &str) -> Result<Option<Tensor>, String> {
    match value.tag {
        abi::VALUE_NONE => Ok(None),
        abi::VALUE_TENSOR => tensor::import_borrowed(value.tensor)
            .and_then(|t| t.to_dtype(DType::F32).map_err(|e| e.to_string()))
            .map(Some)
            .map_err(|e| format!("`{key}`: {e}")),
        _ => Err(format!("`{key}` takes a tensor")),
    }
}

unsafe fn float_of(value: &abi::Value, key: &str) -> Result<Option<f64>, String> {
    match value.tag {
        abi::VALUE_NONE => Ok(None),
        abi::VALUE_FLOAT => Ok(Some(value.float)),
        abi::VALUE_INT => Ok(Some(value.int as f64)),
        _ => Err(format!("`{key}` takes a float")),
    }
}

fn parse_area(text: &str) -> Result<Area, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let bad =
        || format!("area {text:?}: expected \"cells H W TOP LEFT\" or \"fraction H W TOP LEFT\"");
    let [kind, a, b, c, d] = parts[..] else {
        return Err(bad());
    };
    match kind {
        "cells" => {
            let n = |s: &str| s.parse::<usize>().map_err(|_| bad());
            Ok(Area::Cells(n(a)?, n(b)?, n(c)?, n(d)?))
        }
        "fraction" => {
            let f = |s: &str| {
                s.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(bad)
            };
            Ok(Area::Fraction(f(a)?, f(b)?, f(c)?, f(d)?))
        }
        _ => Err(bad()),
    }
}

/// Sets one field of an entry from a plugin's value.
unsafe fn set_field(e: &mut Conditioning, key: &str, value: &abi::Value) -> Result<(), String> {
    match key {
        "context" => e.context = tensor_of(value, key)?,
        "pooled" => e.pooled = tensor_of(value, key)?,
        "mask" => e.mask = tensor_of(value, key)?,
        "concat_latent" => e.concat_latent = tensor_of(value, key)?,
        "concat_mask" => e.concat_mask = tensor_of(value, key)?,
        "labels" => {
            e.labels = match value.tag {
                abi::VALUE_NONE => None,
                abi::VALUE_TENSOR => {
                    let t = tensor::import_borrowed(value.tensor)?;
                    let codes = t
                        .to_dtype(DType::I64)
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_vec1::<i64>())
                        .map_err(|e| format!("`labels`: {e}"))?;
                    Some(codes.into_iter().map(|c| u32::try_from(c).ok()).collect())
                }
                _ => return Err("`labels` takes an int64 tensor".into()),
            }
        }
        "strength" => e.strength = float_of(value, key)?,
        "guidance" => e.guidance = float_of(value, key)?.map_or_else(Vec::new, |g| vec![Some(g)]),
        "start_percent" | "end_percent" => {
            let (mut start, mut end) = e.timestep_range.unwrap_or((0.0, 1.0));
            let x = float_of(value, key)?;
            if key == "start_percent" {
                start = x.unwrap_or(0.0);
            } else {
                end = x.unwrap_or(1.0);
            }
            if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&end) || start > end {
                return Err(format!(
                    "timestep range ({start}, {end}) must lie in 0..=1 with start ≤ end"
                ));
            }
            e.timestep_range = ((start, end) != (0.0, 1.0)).then_some((start, end));
        }
        "area" => {
            e.area = match value.tag {
                abi::VALUE_NONE => None,
                abi::VALUE_STRING => Some(parse_area(
                    value.string.as_str().ok_or("`area` is not UTF-8")?,
                )?),
                _ => return Err("`area` takes a string".into()),
            }
        }
        other => return Err(unknown_key(other)),
    }
    Ok(())
}

pub(crate) unsafe extern "C" fn cond_set(
    call: *const Call,
    cond: *const abi::Handle,
    index: usize,
    key: Str,
    value: *const abi::Value,
    out: *mut *const abi::Handle,
) -> abi::Status {
    with_call(call, |_| {
        let key = key.as_str().ok_or("the key is not UTF-8")?;
        let value = value.as_ref().ok_or("the value pointer is null")?;
        let mut entries = conditioning(cond)?.entries();
        let n = entries.len();
        let e = entries
            .get_mut(index)
            .ok_or_else(|| format!("entry {index} of a conditioning with {n}"))?;
        set_field(e, key, value)?;
        give(out, from_entries(entries)?)
    })
}

pub(crate) unsafe extern "C" fn cond_entry(
    call: *const Call,
    cond: *const abi::Handle,
    index: usize,
    out: *mut *const abi::Handle,
) -> abi::Status {
    with_call(call, |_| give(out, entry(&conditioning(cond)?, index)?))
}

pub(crate) unsafe extern "C" fn cond_combine(
    call: *const Call,
    a: *const abi::Handle,
    b: *const abi::Handle,
    out: *mut *const abi::Handle,
) -> abi::Status {
    with_call(call, |_| {
        let mut entries = conditioning(a)?.entries();
        entries.extend(conditioning(b)?.entries());
        give(out, from_entries(entries)?)
    })
}

pub(crate) unsafe extern "C" fn cond_new(
    call: *const Call,
    context: *const DLManagedTensorVersioned,
    pooled: *const DLManagedTensorVersioned,
    out: *mut *const abi::Handle,
) -> abi::Status {
    with_call(call, |_| {
        let context = tensor::import_borrowed(context)
            .and_then(|t| t.to_dtype(DType::F32).map_err(|e| e.to_string()))
            .map_err(|e| format!("context: {e}"))?;
        if context.rank() != 3 {
            return Err(format!(
                "context must be [batch, tokens, dim], got {:?}",
                context.dims()
            ));
        }
        let pooled = if pooled.is_null() {
            None
        } else {
            Some(
                tensor::import_borrowed(pooled)
                    .and_then(|t| t.to_dtype(DType::F32).map_err(|e| e.to_string()))
                    .map_err(|e| format!("pooled: {e}"))?,
            )
        };
        give(
            out,
            Conditioning {
                context: Some(context),
                pooled,
                ..Conditioning::default()
            },
        )
    })
}
