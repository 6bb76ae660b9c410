//! ComfyUI's mask nodes: `LoadImageMask`, `ImageToMask`, `MaskToImage`,
//! `InvertMask`, `SolidMask`, `GrowMask` and `FeatherMask`.
//!
//! A MASK is `[batch, height, width]` f32, 1 where something is to change
//! (ComfyUI's convention; `LoadImage` gives 1 − alpha). A `[height, width]`
//! tensor is read as one mask.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use weft_core::{
    Define, InputSpec, Inputs, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType,
};

use super::scaling::MAX_RESOLUTION;
use super::{image_dims, image_input, load_image, pixels};

/// The tensor behind MASK input `name`.
pub(crate) fn mask_input<'a>(cx: &'a NodeContext<'_>, name: &str) -> Result<&'a Tensor, NodeError> {
    match cx.value(name)? {
        Value::Mask(t) => Ok(t),
        other => Err(NodeError::input(
            name,
            format!("expected MASK, found {}", other.ty()),
        )),
    }
}

/// `(batch, height, width)` of a mask, `[H, W]` counting as one.
pub(crate) fn mask_dims(mask: &Tensor, input: &str) -> Result<(usize, usize, usize), NodeError> {
    match mask.dims() {
        &[b, h, w] => Ok((b, h, w)),
        &[h, w] => Ok((1, h, w)),
        other => Err(NodeError::input(
            input,
            format!("a mask is [batch, height, width], found shape {other:?}"),
        )),
    }
}

/// A path input: absolute, else relative to the graph file's folder if
/// the file is there, else relative to the working directory.
pub(crate) fn input_path(inputs: &Inputs, name: &str) -> Result<PathBuf, NodeError> {
    let text = inputs.str(name)?;
    if text.is_empty() {
        return Err(NodeError::input(name, "no file given"));
    }
    if inputs.confined() {
        return confined_path(inputs, name, text);
    }
    let path = Path::new(text);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    if let Some(base) = inputs.base_dir() {
        let near_graph = base.join(path);
        if near_graph.exists() {
            return Ok(near_graph);
        }
    }
    Ok(path.to_path_buf())
}

/// A file input of a graph run with confined files (`weft serve`): a
/// relative name inside the input folder, also after symlinks.
fn confined_path(inputs: &Inputs, name: &str, text: &str) -> Result<PathBuf, NodeError> {
    let outside = || {
        NodeError::input(
            name,
            format!("{text:?}: name a file in the input folder (no absolute path, no `..`)"),
        )
    };
    let base = inputs.base_dir().ok_or_else(outside)?;
    if !crate::loaders::plain_relative(text) {
        return Err(outside());
    }
    let path = base.join(text);
    let resolved = path.canonicalize().map_err(|e| {
        NodeError::input(
            name,
            format!("cannot read {text:?} in the input folder: {e}"),
        )
    })?;
    let base = base.canonicalize().map_err(|_| outside())?;
    if resolved.starts_with(&base) {
        Ok(path)
    } else {
        Err(outside())
    }
}

/// The cache key of a file input: its path, size and modification time.
pub(crate) fn file_stamp(inputs: &Inputs, name: &str) -> Result<String, NodeError> {
    let path = input_path(inputs, name)?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| NodeError::input(name, format!("cannot read {}: {e}", path.display())))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{}:{mtime}", path.display(), meta.len()))
}

/// `LoadImageMask`: one channel of an image file as a mask.
pub fn load_image_mask() -> NodeDef {
    NodeSchema::new(
        "LoadImageMask",
        "mask",
        "Loads one channel of an image file as a mask. `alpha` gives 1 − alpha (1 where the image is transparent; all 0 without alpha), as LoadImage's MASK; red, green and blue give that channel as it is (a grayscale file's gray).",
    )
    .input(InputSpec::string("image").doc("The image file: absolute, relative to the graph's folder, or to the working directory."))
    .input(InputSpec::choice("channel", &["alpha", "red", "green", "blue"]).doc("Which channel."))
    .output("MASK", ValueType::Mask, "The mask, [1, H, W].")
    .run(|cx| {
        let path = input_path(cx.inputs, "image")?;
        let (image, mask) = load_image(&path).map_err(|e| NodeError::input("image", e))?;
        let out = match cx.str("channel")? {
            "alpha" => mask,
            channel => image_to_mask(&image, channel).map_err(|e| NodeError::input("image", e.message))?,
        };
        Ok(Value::Mask(out))
    })
    .fingerprint(|inputs| file_stamp(inputs, "image"))
}

/// `ImageToMask`: one channel of an image batch as masks.
pub fn image_to_mask_node() -> NodeDef {
    NodeSchema::new(
        "ImageToMask",
        "mask",
        "One channel of every image as a mask, values unchanged. A grayscale image's one channel serves as red, green and blue; alpha needs a 4-channel image.",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(InputSpec::choice("channel", &["red", "green", "blue", "alpha"]).doc("Which channel."))
    .output("MASK", ValueType::Mask, "The masks, [B, H, W].")
    .run(|cx| {
        let image = image_input(cx, "image")?;
        let out = image_to_mask(image, cx.str("channel")?)?;
        Ok(Value::Mask(out))
    })
}

/// Channel `channel` (red, green, blue or alpha) of `[B, C, H, W]` as
/// `[B, H, W]`.
pub fn image_to_mask(image: &Tensor, channel: &str) -> Result<Tensor, NodeError> {
    let (_, c, _, _) = image_dims(image, "image")?;
    let index = match (channel, c) {
        ("red" | "green" | "blue", 1 | 2) => 0,
        ("red", _) => 0,
        ("green", 3 | 4) => 1,
        ("blue", 3 | 4) => 2,
        ("alpha", 2) => 1,
        ("alpha", 4) => 3,
        _ => {
            return Err(NodeError::input(
                "channel",
                format!("a {c}-channel image has no {channel} channel"),
            ))
        }
    };
    Ok(image.narrow(1, index, 1)?.squeeze(1)?.contiguous()?)
}

/// `MaskToImage`: masks as gray RGB images.
pub fn mask_to_image_node() -> NodeDef {
    NodeSchema::new(
        "MaskToImage",
        "mask",
        "Masks as images: the mask in all three channels.",
    )
    .input(InputSpec::of("mask", ValueType::Mask).doc("The masks."))
    .output("IMAGE", ValueType::Image, "The images, [B, 3, H, W].")
    .run(|cx| Ok(Value::Image(mask_to_image(mask_input(cx, "mask")?)?)))
}

/// `[B, H, W]` (or `[H, W]`) as `[B, 3, H, W]`.
pub fn mask_to_image(mask: &Tensor) -> Result<Tensor, NodeError> {
    let (b, h, w) = mask_dims(mask, "mask")?;
    Ok(mask.reshape((b, 1, h, w))?.repeat((1, 3, 1, 1))?)
}

/// `InvertMask`: 1 − mask.
pub fn invert_mask() -> NodeDef {
    NodeSchema::new("InvertMask", "mask", "1 − mask.")
        .input(InputSpec::of("mask", ValueType::Mask).doc("The masks."))
        .output("MASK", ValueType::Mask, "The inverted masks.")
        .run(|cx| {
            let mask = mask_input(cx, "mask")?;
            mask_dims(mask, "mask")?;
            Ok(Value::Mask((1.0 - mask)?))
        })
}

/// `SolidMask`: a constant mask.
pub fn solid_mask() -> NodeDef {
    NodeSchema::new("SolidMask", "mask", "A mask of one value everywhere.")
        .input(
            InputSpec::float("value")
                .default(1.0)
                .range(0.0, 1.0)
                .step(0.01)
                .doc("The value."),
        )
        .input(
            InputSpec::int("width")
                .default(512)
                .range(1.0, MAX_RESOLUTION)
                .doc("Width in pixels."),
        )
        .input(
            InputSpec::int("height")
                .default(512)
                .range(1.0, MAX_RESOLUTION)
                .doc("Height in pixels."),
        )
        .output("MASK", ValueType::Mask, "The mask, [1, height, width].")
        .run(|cx| {
            let (w, h) = (cx.int("width")?, cx.int("height")?);
            for (name, v) in [("width", w), ("height", h)] {
                if v < 1 {
                    return Err(NodeError::input(name, format!("{v} is not a size")));
                }
            }
            let value = cx.float("value")? as f32;
            let mask = Tensor::full(value, (1, h as usize, w as usize), &Device::Cpu)?;
            Ok(Value::Mask(mask))
        })
}

/// `GrowMask`: dilates (or erodes) masks pixel by pixel.
pub fn grow_mask_node() -> NodeDef {
    NodeSchema::new(
        "GrowMask",
        "mask",
        "Grows masks by `expand` pixels (a grey dilation: each step takes the maximum over a 3×3 neighbourhood), or shrinks them for negative values (the minimum). Tapered corners use the 4-neighbour cross, so corners round off; otherwise the full square.",
    )
    .input(InputSpec::of("mask", ValueType::Mask).doc("The masks."))
    .input(
        InputSpec::int("expand")
            .default(0)
            .range(-MAX_RESOLUTION, MAX_RESOLUTION)
            .doc("Pixels to grow by; negative shrinks."),
    )
    .input(
        InputSpec::bool("tapered_corners")
            .default(true)
            .doc("Cross-shaped steps (rounded corners) instead of square ones."),
    )
    .output("MASK", ValueType::Mask, "The grown masks, [B, H, W].")
    .run(|cx| {
        let mask = mask_input(cx, "mask")?;
        let out = grow_mask(
            mask,
            cx.int("expand")?,
            cx.bool("tapered_corners")?,
            &|| cx.check_cancelled(),
        )?;
        Ok(Value::Mask(out))
    })
}

/// SciPy's `grey_dilation` (`expand` > 0) or `grey_erosion` (< 0) with a
/// 3×3 footprint, |expand| times, as ComfyUI's GrowMask: the cross
/// footprint when `tapered`, else the square. Neighbours outside the mask
/// are ignored (SciPy's `reflect` border gives the same for a 3×3 window).
pub fn grow_mask(
    mask: &Tensor,
    expand: i64,
    tapered: bool,
    check: &dyn Fn() -> Result<(), NodeError>,
) -> Result<Tensor, NodeError> {
    let (b, h, w) = mask_dims(mask, "mask")?;
    if h == 0 || w == 0 {
        return Err(NodeError::input("mask", "the mask is empty"));
    }
    let mut data = pixels(mask)?;
    let grow = expand > 0;
    let pick = |a: f32, b: f32| if grow { a.max(b) } else { a.min(b) };
    let offsets: &[(i64, i64)] = if tapered {
        &[(0, -1), (-1, 0), (1, 0), (0, 1)]
    } else {
        &[
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ]
    };
    let mut next = vec![0f32; data.len()];
    for _ in 0..expand.unsigned_abs() {
        check()?;
        for (src, dst) in data.chunks_exact(h * w).zip(next.chunks_exact_mut(h * w)) {
            for y in 0..h {
                for x in 0..w {
                    let mut v = src[y * w + x];
                    for &(dx, dy) in offsets {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h {
                            v = pick(v, src[ny as usize * w + nx as usize]);
                        }
                    }
                    dst[y * w + x] = v;
                }
            }
        }
        std::mem::swap(&mut data, &mut next);
    }
    Ok(Tensor::from_vec(data, (b, h, w), &Device::Cpu)?)
}

/// `FeatherMask`: linear ramps along chosen edges.
pub fn feather_mask_node() -> NodeDef {
    let side = |name: &str, doc: &str| {
        InputSpec::int(name)
            .default(0)
            .range(0.0, MAX_RESOLUTION)
            .doc(doc)
    };
    NodeSchema::new(
        "FeatherMask",
        "mask",
        "Fades masks towards their edges: over the first `left` columns the mask is multiplied by 1/left, 2/left, …, 1 from the edge inwards, and likewise for the other sides (ramps longer than the mask are cut to it).",
    )
    .input(InputSpec::of("mask", ValueType::Mask).doc("The masks."))
    .input(side("left", "Columns faded on the left."))
    .input(side("top", "Rows faded at the top."))
    .input(side("right", "Columns faded on the right."))
    .input(side("bottom", "Rows faded at the bottom."))
    .output("MASK", ValueType::Mask, "The feathered masks, [B, H, W].")
    .run(|cx| {
        let get = |name: &str| -> Result<usize, NodeError> {
            let v = cx.int(name)?;
            usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} is negative")))
        };
        let out = feather_mask(
            mask_input(cx, "mask")?,
            get("left")?,
            get("top")?,
            get("right")?,
            get("bottom")?,
        )?;
        Ok(Value::Mask(out))
    })
}

/// ComfyUI's FeatherMask ramps: the k-th column from the left edge
/// (k = 0, 1, …) is multiplied by (k + 1)/left, and likewise from the
/// other edges; each ramp is cut to the mask's size. (ComfyUI indexes the
/// right and bottom ramps from `-0`, which scales the first column and row
/// by 1/right and 1/bottom and leaves those ramps one pixel short; here
/// they mirror the left and top ones.)
pub fn feather_mask(
    mask: &Tensor,
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
) -> Result<Tensor, NodeError> {
    let (b, h, w) = mask_dims(mask, "mask")?;
    if h == 0 || w == 0 {
        return Err(NodeError::input("mask", "the mask is empty"));
    }
    let (left, right) = (left.min(w), right.min(w));
    let (top, bottom) = (top.min(h), bottom.min(h));
    let ramp = |k: usize, n: usize| (k + 1) as f32 / n as f32;
    let mut data = pixels(mask)?;
    for plane in data.chunks_exact_mut(h * w) {
        for y in 0..h {
            for x in 0..w {
                let v = &mut plane[y * w + x];
                if x < left {
                    *v *= ramp(x, left);
                }
                if w - 1 - x < right {
                    *v *= ramp(w - 1 - x, right);
                }
                if y < top {
                    *v *= ramp(y, top);
                }
                if h - 1 - y < bottom {
                    *v *= ramp(h - 1 - y, bottom);
                }
            }
        }
    }
    Ok(Tensor::from_vec(data, (b, h, w), &Device::Cpu)?)
}
