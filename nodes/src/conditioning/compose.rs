//! ComfyUI's conditioning editors: lists of entries (`ConditioningCombine`),
//! token-wise joins and blends (`…Concat`, `…Average`), where and when an
//! entry applies (`…SetArea`, `…SetMask`, `…SetTimestepRange`) and
//! `ConditioningZeroOut`. Each edits every entry of its input, as ComfyUI's.

use candle_core::Tensor;
use weft_core::{Define, InputSpec, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_sampling::{Area, Conditioning};

/// ComfyUI's largest image side.
const MAX_RESOLUTION: f64 = 16384.0;

fn cond_input(name: &str, doc: &str) -> InputSpec {
    InputSpec::of(name, ValueType::Conditioning).doc(doc)
}

fn output(def: NodeSchema) -> NodeSchema {
    def.output(
        "CONDITIONING",
        ValueType::Conditioning,
        "The edited conditioning.",
    )
}

/// Every entry of input `name` through `f`.
fn edit(
    cx: &NodeContext<'_>,
    name: &str,
    mut f: impl FnMut(Conditioning) -> candle_core::Result<Conditioning>,
) -> Result<Value, NodeError> {
    let cond = cx
        .get::<Conditioning>(name)?
        .map_entries(&mut f)
        .map_err(|e| NodeError::input(name, e.to_string()))?;
    Ok(Value::handle(cond))
}

/// The text states of the first entry of input `name` (ComfyUI's
/// `conditioning_from[0]`).
fn first(cx: &NodeContext<'_>, name: &str) -> Result<Conditioning, NodeError> {
    let c = cx.get::<Conditioning>(name)?;
    if c.context.is_none() {
        return Err(NodeError::input(
            name,
            "expected text conditioning (from a text encoder)",
        ));
    }
    Ok(Conditioning {
        also: Vec::new(),
        ..c.clone()
    })
}

pub fn conditioning_combine() -> NodeDef {
    output(
        NodeSchema::new(
            "ConditioningCombine",
            "conditioning",
            "Both conditionings as one list: at every step each entry is predicted on its own and the predictions are averaged (weighted by their areas, masks and strengths), as ComfyUI composes prompts.",
        )
        .input(cond_input("conditioning_1", "The first entries."))
        .input(cond_input("conditioning_2", "The entries added.")),
    )
    .run(|cx| {
        let a = cx.get::<Conditioning>("conditioning_1")?;
        let b = cx.get::<Conditioning>("conditioning_2")?;
        Ok(Value::handle(a.combine(b)))
    })
}

pub fn conditioning_concat() -> NodeDef {
    output(
        NodeSchema::new(
            "ConditioningConcat",
            "conditioning",
            "Appends the tokens of `conditioning_from` (its first entry) after those of each entry of `conditioning_to`, so the UNet attends to both prompts; the pooled output stays `conditioning_to`'s.",
        )
        .input(cond_input("conditioning_to", "The conditioning extended."))
        .input(cond_input("conditioning_from", "The tokens appended.")),
    )
    .run(|cx| {
        let from = first(cx, "conditioning_from")?;
        edit(cx, "conditioning_to", |e| e.concat_tokens(&from))
    })
}

pub fn conditioning_average() -> NodeDef {
    output(
        NodeSchema::new(
            "ConditioningAverage",
            "conditioning",
            "Blends each entry of `conditioning_to` with the first entry of `conditioning_from`: to·s + from·(1 − s), token by token (`from` cut or zero-padded to `to`'s length) and for the pooled output, as ComfyUI does.",
        )
        .input(cond_input("conditioning_to", "The conditioning weighted by the strength."))
        .input(cond_input("conditioning_from", "The conditioning weighted by 1 − strength."))
        .input(
            InputSpec::float("conditioning_to_strength")
                .default(1.0)
                .range(0.0, 1.0)
                .step(0.01)
                .doc("The weight of `conditioning_to`."),
        ),
    )
    .run(|cx| {
        let from = first(cx, "conditioning_from")?;
        let s = cx.float("conditioning_to_strength")?;
        edit(cx, "conditioning_to", |e| e.average(&from, s))
    })
}

fn strength() -> InputSpec {
    InputSpec::float("strength")
        .default(1.0)
        .range(0.0, 10.0)
        .step(0.01)
        .doc("The weight of this entry's prediction where it applies.")
}

pub fn conditioning_set_area() -> NodeDef {
    let px = |name: &str, default: i64, doc: &str| {
        let min = if default == 0 { 0.0 } else { 64.0 };
        InputSpec::int(name)
            .default(default)
            .range(min, MAX_RESOLUTION)
            .step(8.0)
            .doc(doc)
    };
    output(
        NodeSchema::new(
            "ConditioningSetArea",
            "conditioning",
            "Limits each entry to a rectangle, in pixels (rounded down to latent cells of 8). Combined with other entries (ConditioningCombine), its prediction on its crop is blended in, its weight ramping up over 8 cells at edges inside the image.",
        )
        .input(cond_input("conditioning", "The entries to place."))
        .input(px("width", 64, "Width of the area."))
        .input(px("height", 64, "Height of the area."))
        .input(px("x", 0, "Left edge."))
        .input(px("y", 0, "Top edge."))
        .input(strength()),
    )
    .run(|cx| {
        let cells = |name: &str| -> Result<usize, NodeError> { Ok(cx.int(name)?.max(0) as usize / 8) };
        let area = Area::Cells(cells("height")?, cells("width")?, cells("y")?, cells("x")?);
        let strength = cx.float("strength")?;
        edit(cx, "conditioning", |e| {
            Ok(Conditioning {
                area: Some(area),
                strength: Some(strength),
                ..e
            })
        })
    })
}

pub fn conditioning_set_area_percentage() -> NodeDef {
    let frac = |name: &str, default: f64, doc: &str| {
        InputSpec::float(name)
            .default(default)
            .range(0.0, 1.0)
            .step(0.01)
            .doc(doc)
    };
    output(
        NodeSchema::new(
            "ConditioningSetAreaPercentage",
            "conditioning",
            "ConditioningSetArea with the rectangle in fractions of the image, resolved against the latent when sampling.",
        )
        .input(cond_input("conditioning", "The entries to place."))
        .input(frac("width", 1.0, "Width, as a fraction of the image."))
        .input(frac("height", 1.0, "Height, as a fraction."))
        .input(frac("x", 0.0, "Left edge, as a fraction."))
        .input(frac("y", 0.0, "Top edge, as a fraction."))
        .input(strength()),
    )
    .run(|cx| {
        let area = Area::Fraction(
            cx.float("height")?,
            cx.float("width")?,
            cx.float("y")?,
            cx.float("x")?,
        );
        let strength = cx.float("strength")?;
        edit(cx, "conditioning", |e| {
            Ok(Conditioning {
                area: Some(area),
                strength: Some(strength),
                ..e
            })
        })
    })
}

pub fn conditioning_set_area_strength() -> NodeDef {
    output(
        NodeSchema::new(
            "ConditioningSetAreaStrength",
            "conditioning",
            "Sets the weight of each entry's prediction.",
        )
        .input(cond_input("conditioning", "The entries."))
        .input(strength()),
    )
    .run(|cx| {
        let strength = cx.float("strength")?;
        edit(cx, "conditioning", |e| {
            Ok(Conditioning {
                strength: Some(strength),
                ..e
            })
        })
    })
}

pub fn conditioning_set_mask() -> NodeDef {
    output(
        NodeSchema::new(
            "ConditioningSetMask",
            "conditioning",
            "Limits each entry to a soft mask (resized to the latent when sampling, and multiplied by strength). `mask bounds` also crops the prediction to the mask's bounding box.",
        )
        .input(cond_input("conditioning", "The entries to place."))
        .input(InputSpec::of("mask", ValueType::Mask).doc("Where the entries apply, in [0, 1]."))
        .input(strength())
        .input(InputSpec::choice("set_cond_area", &["default", "mask bounds"]).doc("`mask bounds`: predict only on the mask's bounding box.")),
    )
    .run(|cx| {
        let mask = match cx.value("mask")? {
            Value::Mask(m) => m.clone(),
            other => return Err(NodeError::input("mask", format!("expected a MASK, found {}", other.ty()))),
        };
        let mask = match mask.rank() {
            2 => mask.unsqueeze(0)?,
            3 => mask,
            r => return Err(NodeError::input("mask", format!("expected [B, H, W], got rank {r}"))),
        };
        let strength = cx.float("strength")?;
        let area = match cx.str("set_cond_area")? {
            "mask bounds" => Some(mask_bounds(&mask)?),
            _ => None,
        };
        let scaled = mask.affine(strength, 0.0)?;
        edit(cx, "conditioning", |e| {
            Ok(Conditioning {
                mask: Some(scaled.clone()),
                area,
                ..e
            })
        })
    })
}

/// The bounding box of a mask's non-zero cells, as fractions of its size
/// (an empty mask: the whole image).
fn mask_bounds(mask: &Tensor) -> Result<Area, NodeError> {
    let (_, h, w) = mask.dims3()?;
    let any = mask
        .max(0)?
        .gt(0f32)?
        .to_dtype(candle_core::DType::U8)?
        .to_vec2::<u8>()?;
    let rows: Vec<usize> = (0..h).filter(|&y| any[y].iter().any(|&v| v > 0)).collect();
    let cols: Vec<usize> = (0..w).filter(|&x| any.iter().any(|r| r[x] > 0)).collect();
    let (Some(&y0), Some(&y1), Some(&x0), Some(&x1)) =
        (rows.first(), rows.last(), cols.first(), cols.last())
    else {
        return Ok(Area::Fraction(1.0, 1.0, 0.0, 0.0));
    };
    let (h, w) = (h as f64, w as f64);
    Ok(Area::Fraction(
        (y1 + 1 - y0) as f64 / h,
        (x1 + 1 - x0) as f64 / w,
        y0 as f64 / h,
        x0 as f64 / w,
    ))
}

pub fn conditioning_zero_out() -> NodeDef {
    output(
        NodeSchema::new(
            "ConditioningZeroOut",
            "advanced/conditioning",
            "Zeros each entry's text states and pooled output (SDXL Turbo and Flux graphs use it as the negative).",
        )
        .input(cond_input("conditioning", "The entries to zero.")),
    )
    .run(|cx| edit(cx, "conditioning", Conditioning::zero_out))
}

pub fn conditioning_set_timestep_range() -> NodeDef {
    let frac = |name: &str, default: f64, doc: &str| {
        InputSpec::float(name)
            .default(default)
            .range(0.0, 1.0)
            .step(0.001)
            .doc(doc)
    };
    output(
        NodeSchema::new(
            "ConditioningSetTimestepRange",
            "advanced/conditioning",
            "Makes each entry apply only between two points of sampling, as fractions of the schedule (0: the first step's σ, 1: the end), converted to σ as ComfyUI's `percent_to_sigma` does.",
        )
        .input(cond_input("conditioning", "The entries."))
        .input(frac("start", 0.0, "Where they start applying."))
        .input(frac("end", 1.0, "Where they stop.")),
    )
    .run(|cx| {
        let (start, end) = (cx.float("start")?, cx.float("end")?);
        if start > end {
            return Err(NodeError::input("start", format!("{start} is after end {end}")));
        }
        edit(cx, "conditioning", |e| {
            Ok(Conditioning {
                timestep_range: Some((start, end)),
                ..e
            })
        })
    })
}
