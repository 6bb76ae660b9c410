//! ComfyUI's latent batch and compositing nodes: `LatentFromBatch`,
//! `RepeatLatentBatch`, `LatentComposite` and `LatentBlend`.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use weft_core::{Define, InputSpec, Latent, NodeDef, NodeError, NodeSchema, Value, ValueType};

use crate::image::resample::{common_upscale, UpscaleMethod};

/// ComfyUI's MAX_RESOLUTION.
const MAX_RESOLUTION: f64 = 16384.0;

/// `[B, C, H, W]` of a latent, or an error naming `input`.
fn latent_dims(latent: &Latent, input: &str) -> Result<(usize, usize, usize, usize), NodeError> {
    match latent.samples.dims() {
        &[b, c, h, w] => Ok((b, c, h, w)),
        other => Err(NodeError::input(
            input,
            format!("a latent is [batch, channels, height, width], found shape {other:?}"),
        )),
    }
}

/// A noise mask with one item per latent: a single mask stays single,
/// a shorter batch is repeated to the latent's (ComfyUI's rule).
fn masks_per_item(mask: &Tensor, batch: usize) -> Result<Option<Tensor>, NodeError> {
    let n = mask.dim(0)?;
    if n == 0 {
        return Err(NodeError::input(
            "samples",
            "the latent's noise mask is empty",
        ));
    }
    if n == 1 {
        return Ok(None);
    }
    let mask = if n < batch {
        let mut reps = vec![1usize; mask.rank()];
        reps[0] = batch.div_ceil(n);
        mask.repeat(reps)?.narrow(0, 0, batch)?
    } else {
        mask.clone()
    };
    Ok(Some(mask))
}

/// `LatentFromBatch`: a run of items out of a latent batch.
pub fn latent_from_batch_node() -> NodeDef {
    NodeSchema::new(
        "LatentFromBatch",
        "latent/batch",
        "Takes `length` latents starting at `batch_index` (fewer if the batch ends first). A per-item noise mask is cut the same way.",
    )
    .input(InputSpec::of("samples", ValueType::Latent).doc("The batch."))
    .input(InputSpec::int("batch_index").default(0).range(0.0, 63.0).doc("First item, from 0; must be in the batch."))
    .input(InputSpec::int("length").default(1).range(1.0, 64.0).doc("How many items."))
    .output("LATENT", ValueType::Latent, "The items.")
    .run(|cx| {
        let latent = cx.latent("samples")?;
        let index = usize::try_from(cx.int("batch_index")?).unwrap_or(usize::MAX);
        let length = usize::try_from(cx.int("length")?).unwrap_or(0);
        Ok(Value::Latent(Arc::new(latent_from_batch(latent, index, length)?)))
    })
}

/// Items `index .. index + length` of the batch (cut at its end).
/// Unlike ComfyUI, which clamps `batch_index` to the last item, an index
/// past the batch is an error.
pub fn latent_from_batch(
    latent: &Latent,
    index: usize,
    length: usize,
) -> Result<Latent, NodeError> {
    let (b, _, _, _) = latent_dims(latent, "samples")?;
    if index >= b {
        return Err(NodeError::input(
            "batch_index",
            format!("{index} is past the batch of {b} (indices start at 0)"),
        ));
    }
    if length == 0 {
        return Err(NodeError::input("length", "must be at least 1"));
    }
    let length = length.min(b - index);
    let noise_mask = match &latent.noise_mask {
        Some(mask) => Some(match masks_per_item(mask, b)? {
            None => mask.clone(),
            Some(masks) => masks.narrow(0, index, length)?,
        }),
        None => None,
    };
    Ok(Latent {
        samples: latent.samples.narrow(0, index, length)?.contiguous()?,
        space: latent.space.clone(),
        noise_mask,
    })
}

/// `RepeatLatentBatch`: the batch repeated.
pub fn repeat_latent_batch_node() -> NodeDef {
    NodeSchema::new(
        "RepeatLatentBatch",
        "latent/batch",
        "Repeats the whole batch `amount` times (a, b → a, b, a, b, …). A per-item noise mask is repeated with it.",
    )
    .input(InputSpec::of("samples", ValueType::Latent).doc("The batch."))
    .input(InputSpec::int("amount").default(1).range(1.0, 64.0).doc("How many copies."))
    .output("LATENT", ValueType::Latent, "The repeated batch.")
    .run(|cx| {
        let latent = cx.latent("samples")?;
        let amount = usize::try_from(cx.int("amount")?).unwrap_or(0);
        Ok(Value::Latent(Arc::new(repeat_latent_batch(latent, amount)?)))
    })
}

/// The batch tiled `amount` times.
pub fn repeat_latent_batch(latent: &Latent, amount: usize) -> Result<Latent, NodeError> {
    let (b, _, _, _) = latent_dims(latent, "samples")?;
    if amount == 0 {
        return Err(NodeError::input("amount", "must be at least 1"));
    }
    let tile = |t: &Tensor| -> Result<Tensor, NodeError> {
        let mut reps = vec![1usize; t.rank()];
        reps[0] = amount;
        Ok(t.repeat(reps)?)
    };
    let noise_mask = match &latent.noise_mask {
        Some(mask) => Some(match masks_per_item(mask, b)? {
            None => mask.clone(),
            Some(masks) => tile(&masks)?,
        }),
        None => None,
    };
    Ok(Latent {
        samples: tile(&latent.samples)?,
        space: latent.space.clone(),
        noise_mask,
    })
}

/// `LatentComposite`: pastes one latent into another.
pub fn latent_composite_node() -> NodeDef {
    let px = |name: &str, doc: &str| {
        InputSpec::int(name)
            .default(0)
            .range(0.0, MAX_RESOLUTION)
            .step(8.0)
            .doc(doc)
    };
    NodeSchema::new(
        "LatentComposite",
        "latent",
        "Pastes samples_from into samples_to at (x, y). Positions and feather are in pixels and become latent cells ÷ 8, as in ComfyUI. With feather f cells, the pasted block fades in over its first f rows/columns on every side that lies inside samples_to: the k-th from that edge (k = 0, 1, …) is weighted (k + 1)/f, the rest of the block 1.",
    )
    .input(InputSpec::of("samples_to", ValueType::Latent).doc("The background."))
    .input(InputSpec::of("samples_from", ValueType::Latent).doc("What is pasted; one item or as many as samples_to."))
    .input(px("x", "Left edge in pixels."))
    .input(px("y", "Top edge in pixels."))
    .input(px("feather", "Fade width in pixels."))
    .output("LATENT", ValueType::Latent, "samples_to with samples_from pasted in.")
    .run(|cx| {
        let get = |name: &str| -> Result<usize, NodeError> {
            let v = cx.int(name)?;
            usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} is negative")))
        };
        let out = latent_composite(
            cx.latent("samples_to")?,
            cx.latent("samples_from")?,
            get("x")?,
            get("y")?,
            get("feather")?,
        )?;
        Ok(Value::Latent(Arc::new(out)))
    })
}

/// ComfyUI's LatentComposite, with `x`, `y` and `feather` in pixels.
pub fn latent_composite(
    to: &Latent,
    from: &Latent,
    x: usize,
    y: usize,
    feather: usize,
) -> Result<Latent, NodeError> {
    let (tb, tc, th, tw) = latent_dims(to, "samples_to")?;
    let (fb, fc, fh, fw) = latent_dims(from, "samples_from")?;
    let (x, y, feather) = (x / 8, y / 8, feather / 8);
    if fc != tc {
        return Err(NodeError::input(
            "samples_from",
            format!("{fc} channels cannot be pasted into {tc}"),
        ));
    }
    if fb != tb && fb != 1 {
        return Err(NodeError::input(
            "samples_from",
            format!("a batch of {fb} cannot be pasted into a batch of {tb} (give 1 or {tb})"),
        ));
    }
    if x >= tw {
        return Err(NodeError::input(
            "x",
            format!("cell {x} is past samples_to's width of {tw} cells"),
        ));
    }
    if y >= th {
        return Err(NodeError::input(
            "y",
            format!("cell {y} is past samples_to's height of {th} cells"),
        ));
    }
    // The part of samples_from that lands inside samples_to.
    let (ph, pw) = (fh.min(th - y), fw.min(tw - x));
    if ph == 0 || pw == 0 || tb == 0 || fb == 0 {
        return Ok(to.clone());
    }
    // ComfyUI's factor, (1/feather)·(k + 1), in double precision.
    let ramp = |k: usize| ((1.0 / feather as f64) * (k + 1) as f64) as f32;
    let mut weights = vec![1f32; ph * pw];
    if feather > 0 {
        for t in 0..feather {
            for (r, row) in weights.chunks_exact_mut(pw).enumerate() {
                for (c, wgt) in row.iter_mut().enumerate() {
                    if y != 0 && r == t {
                        *wgt *= ramp(t);
                    }
                    if y + ph < th && r + 1 + t == ph {
                        *wgt *= ramp(t);
                    }
                    if x != 0 && c == t {
                        *wgt *= ramp(t);
                    }
                    if x + pw < tw && c + 1 + t == pw {
                        *wgt *= ramp(t);
                    }
                }
            }
        }
    }
    let mut out = to
        .samples
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let src = from
        .samples
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for n in 0..tb {
        let sn = if fb == 1 { 0 } else { n };
        for ch in 0..tc {
            for r in 0..ph {
                for c in 0..pw {
                    let m = weights[r * pw + c];
                    let s = src[((sn * fc + ch) * fh + r) * fw + c];
                    let d = &mut out[((n * tc + ch) * th + y + r) * tw + x + c];
                    *d = s * m + *d * (1.0 - m);
                }
            }
        }
    }
    Ok(Latent {
        samples: Tensor::from_vec(out, (tb, tc, th, tw), &Device::Cpu)?
            .to_dtype(to.samples.dtype())?,
        space: to.space.clone(),
        noise_mask: to.noise_mask.clone(),
    })
}

/// `LatentBlend`: a weighted mix of two latents.
pub fn latent_blend_node() -> NodeDef {
    NodeSchema::new(
        "LatentBlend",
        "latent",
        "samples1 × blend_factor + samples2 × (1 − blend_factor). samples2 is resized to samples1's size first if it differs (bicubic, centre crop, as ComfyUI).",
    )
    .input(InputSpec::of("samples1", ValueType::Latent).doc("The first latents."))
    .input(InputSpec::of("samples2", ValueType::Latent).doc("The second latents; one item or as many as samples1."))
    .input(
        InputSpec::float("blend_factor")
            .default(0.5)
            .range(0.0, 1.0)
            .step(0.01)
            .doc("Weight of samples1."),
    )
    .input(InputSpec::choice("blend_mode", &["normal"]).doc("normal: samples2 as it is (ComfyUI's only mode)."))
    .output("LATENT", ValueType::Latent, "The blend, with samples1's space and noise mask.")
    .run(|cx| {
        let out = latent_blend(
            cx.latent("samples1")?,
            cx.latent("samples2")?,
            cx.float("blend_factor")?,
        )?;
        Ok(Value::Latent(Arc::new(out)))
    })
}

/// ComfyUI's LatentBlend in its `normal` mode.
pub fn latent_blend(a: &Latent, b: &Latent, factor: f64) -> Result<Latent, NodeError> {
    let (ab, ac, ah, aw) = latent_dims(a, "samples1")?;
    let (bb, bc, bh, bw) = latent_dims(b, "samples2")?;
    if bc != ac {
        return Err(NodeError::input(
            "samples2",
            format!("{bc} channels cannot be blended with {ac}"),
        ));
    }
    if bb != ab && bb != 1 {
        return Err(NodeError::input(
            "samples2",
            format!("a batch of {bb} cannot be blended with a batch of {ab} (give 1 or {ab})"),
        ));
    }
    let second = if (bh, bw) != (ah, aw) {
        common_upscale(&b.samples, aw, ah, UpscaleMethod::Bicubic, true)
            .map_err(|e| NodeError::input("samples2", e))?
    } else {
        b.samples.to_dtype(DType::F32)?
    };
    let first = a.samples.to_dtype(DType::F32)?;
    let blended = ((first * factor)?.broadcast_add(&(second * (1.0 - factor))?))?;
    Ok(Latent {
        samples: blended.to_dtype(a.samples.dtype())?,
        space: a.space.clone(),
        noise_mask: a.noise_mask.clone(),
    })
}
