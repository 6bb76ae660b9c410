//! ComfyUI's everyday image nodes: `ImageInvert`, `ImageBatch`,
//! `ImageCrop`, `ImageBlur`, `ImageSharpen`, `ImagePadForOutpaint` and
//! `ImageCompositeMasked`.

use candle_core::{Device, Tensor};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::mask::{mask_dims, mask_input};
use super::resample::{common_upscale, UpscaleMethod};
use super::scaling::MAX_RESOLUTION;
use super::{image_dims, image_input, pixels};

/// `ImageInvert`: 1 − image.
pub fn image_invert() -> NodeDef {
    NodeSchema::new("ImageInvert", "image", "1 − image, in every channel.")
        .input(InputSpec::of("image", ValueType::Image).doc("The images."))
        .output("IMAGE", ValueType::Image, "The inverted images.")
        .run(|cx| {
            let image = image_input(cx, "image")?;
            image_dims(image, "image")?;
            Ok(Value::Image((1.0 - image)?))
        })
}

/// `ImageBatch`: two batches as one.
pub fn image_batch_node() -> NodeDef {
    NodeSchema::new(
        "ImageBatch",
        "image",
        "Joins two image batches, image1's first. image2 is resized to image1's size if they differ (bilinear, centre crop, as ComfyUI). A grayscale batch joined with a colour one becomes colour; RGB joined with RGBA gains an opaque alpha.",
    )
    .input(InputSpec::of("image1", ValueType::Image).doc("The first batch."))
    .input(InputSpec::of("image2", ValueType::Image).doc("The second batch."))
    .output("IMAGE", ValueType::Image, "Both batches, image1's items first.")
    .run(|cx| {
        let out = image_batch(image_input(cx, "image1")?, image_input(cx, "image2")?)?;
        Ok(Value::Image(out))
    })
}

/// A batch with `channels` channels: gray repeated into colour, an opaque
/// alpha added to colour. Fewer channels are never asked for.
fn widen_channels(image: &Tensor, channels: usize) -> Result<Tensor, NodeError> {
    let (_, c, _, _) = image.dims4()?;
    let mut out = image.clone();
    if c == 1 && channels >= 3 {
        out = out.repeat((1, 3, 1, 1))?;
    }
    let c = out.dim(1)?;
    if c + 1 == channels {
        let alpha = Tensor::ones_like(&out.narrow(1, 0, 1)?)?;
        out = Tensor::cat(&[&out, &alpha], 1)?;
    }
    Ok(out)
}

/// `image2` after `image1`, resized to image1's size (bilinear, centre
/// crop) when it differs, with the channel counts reconciled.
pub fn image_batch(image1: &Tensor, image2: &Tensor) -> Result<Tensor, NodeError> {
    let (_, c1, h, w) = image_dims(image1, "image1")?;
    let (_, c2, _, _) = image_dims(image2, "image2")?;
    let c = c1.max(c2);
    let (a, b) = (widen_channels(image1, c)?, widen_channels(image2, c)?);
    if a.dim(1)? != b.dim(1)? {
        return Err(NodeError::input(
            "image2",
            format!("cannot join {c1}-channel and {c2}-channel images"),
        ));
    }
    let b = if b.dims()[2..] != [h, w] {
        common_upscale(&b, w, h, UpscaleMethod::Bilinear, true)
            .map_err(|e| NodeError::input("image2", e))?
    } else {
        b
    };
    Ok(Tensor::cat(&[&a.to_dtype(b.dtype())?, &b], 0)?)
}

/// `ImageCrop`: a rectangle of every image.
pub fn image_crop_node() -> NodeDef {
    NodeSchema::new(
        "ImageCrop",
        "image/transform",
        "Crops every image to the width×height rectangle at (x, y). As in ComfyUI, x and y are moved inside the image if they are past it, and the rectangle is cut at the image's edge (so it may come out smaller).",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(InputSpec::int("width").default(512).range(1.0, MAX_RESOLUTION).doc("Width of the rectangle."))
    .input(InputSpec::int("height").default(512).range(1.0, MAX_RESOLUTION).doc("Height of the rectangle."))
    .input(InputSpec::int("x").default(0).range(0.0, MAX_RESOLUTION).doc("Left edge."))
    .input(InputSpec::int("y").default(0).range(0.0, MAX_RESOLUTION).doc("Top edge."))
    .output("IMAGE", ValueType::Image, "The cropped images.")
    .run(|cx| {
        let get = |name: &str| -> Result<usize, NodeError> {
            let v = cx.int(name)?;
            usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} is negative")))
        };
        let out = image_crop(
            image_input(cx, "image")?,
            get("width")?,
            get("height")?,
            get("x")?,
            get("y")?,
        )?;
        Ok(Value::Image(out))
    })
}

/// ComfyUI's ImageCrop: x, y clamped to the last column and row, the
/// rectangle cut at the image's edge.
pub fn image_crop(
    image: &Tensor,
    width: usize,
    height: usize,
    x: usize,
    y: usize,
) -> Result<Tensor, NodeError> {
    let (_, _, h, w) = image_dims(image, "image")?;
    if h == 0 || w == 0 {
        return Err(NodeError::input("image", "the image is empty"));
    }
    for (name, v) in [("width", width), ("height", height)] {
        if v == 0 {
            return Err(NodeError::input(name, "a crop needs at least one pixel"));
        }
    }
    let (x, y) = (x.min(w - 1), y.min(h - 1));
    let (cw, ch) = (width.min(w - x), height.min(h - y));
    Ok(image.narrow(2, y, ch)?.narrow(3, x, cw)?.contiguous()?)
}

/// ComfyUI's `gaussian_kernel`: a `size`×`size` Gaussian over coordinates
/// spaced evenly from −1 to 1 (so σ is in units of the radius, not
/// pixels), normalised to sum 1; row-major.
pub fn gaussian_kernel(size: usize, sigma: f32) -> Vec<f32> {
    // torch.linspace(-1, 1, size), symmetric as PyTorch computes it.
    let step = if size > 1 {
        2.0 / (size - 1) as f32
    } else {
        0.0
    };
    let coords: Vec<f32> = (0..size)
        .map(|i| {
            if i < size / 2 {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (size - 1 - i) as f32
            }
        })
        .collect();
    let mut k = Vec::with_capacity(size * size);
    for &y in &coords {
        for &x in &coords {
            let d = (x * x + y * y).sqrt();
            k.push((-(d * d) / (2.0 * sigma * sigma)).exp());
        }
    }
    let total: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= total);
    k
}

/// PyTorch's `reflect` padding index (the edge is not repeated).
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let i = if i < 0 { -i } else { i };
    (if i >= n { 2 * (n - 1) - i } else { i }) as usize
}

/// Correlates every plane of `[B, C, H, W]` with a square `kernel` of
/// radius `radius` over a reflect-padded border, as ComfyUI's blur and
/// sharpen do; errors name `input` when the image is not larger than the
/// radius (PyTorch's reflect padding needs that).
fn convolve_reflect(
    image: &Tensor,
    kernel: &[f32],
    radius: usize,
    input: &str,
) -> Result<Vec<f32>, NodeError> {
    let (_, _, h, w) = image_dims(image, "image")?;
    if radius >= h || radius >= w {
        return Err(NodeError::input(
            input,
            format!("a radius of {radius} needs an image larger than it on both sides; this one is {w}×{h}"),
        ));
    }
    let size = 2 * radius + 1;
    let src = pixels(image)?;
    let mut out = vec![0f32; src.len()];
    let r = radius as i64;
    for (plane, dst) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0f32;
                for ky in 0..size {
                    let sy = reflect(y as i64 + ky as i64 - r, h);
                    let row = &plane[sy * w..(sy + 1) * w];
                    let krow = &kernel[ky * size..(ky + 1) * size];
                    for (kx, &k) in krow.iter().enumerate() {
                        sum += k * row[reflect(x as i64 + kx as i64 - r, w)];
                    }
                }
                dst[y * w + x] = sum;
            }
        }
    }
    Ok(out)
}

/// `ImageBlur`: ComfyUI's Gaussian blur.
pub fn image_blur_node() -> NodeDef {
    NodeSchema::new(
        "ImageBlur",
        "image/postprocessing",
        "Gaussian blur with ComfyUI's kernel: (2·blur_radius + 1)² taps at coordinates spaced evenly from −1 to 1, weights exp(−d²/2σ²) normalised to sum 1 (so σ is relative to the radius), reflected at the borders.",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(InputSpec::int("blur_radius").default(1).range(1.0, 31.0).doc("Kernel radius in pixels."))
    .input(InputSpec::float("sigma").default(1.0).range(0.1, 10.0).step(0.1).doc("Spread, relative to the radius."))
    .output("IMAGE", ValueType::Image, "The blurred images.")
    .run(|cx| {
        let out = image_blur(
            image_input(cx, "image")?,
            cx.int("blur_radius")?,
            cx.float("sigma")? as f32,
        )?;
        Ok(Value::Image(out))
    })
}

/// ComfyUI's ImageBlur; radius 0 returns the images unchanged.
pub fn image_blur(image: &Tensor, radius: i64, sigma: f32) -> Result<Tensor, NodeError> {
    if radius == 0 {
        return Ok(image.clone());
    }
    let radius = usize::try_from(radius)
        .map_err(|_| NodeError::input("blur_radius", format!("{radius} is negative")))?;
    let kernel = gaussian_kernel(2 * radius + 1, sigma);
    let out = convolve_reflect(image, &kernel, radius, "blur_radius")?;
    Ok(Tensor::from_vec(out, image.dims(), &Device::Cpu)?)
}

/// `ImageSharpen`: ComfyUI's unsharp kernel.
pub fn image_sharpen_node() -> NodeDef {
    NodeSchema::new(
        "ImageSharpen",
        "image/postprocessing",
        "Sharpens with ComfyUI's kernel: ImageBlur's Gaussian times −10·alpha, with the centre raised so the kernel sums to 1; reflected at the borders, clamped to [0, 1].",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(InputSpec::int("sharpen_radius").default(1).range(1.0, 31.0).doc("Kernel radius in pixels."))
    .input(InputSpec::float("sigma").default(1.0).range(0.1, 10.0).step(0.01).doc("Spread, relative to the radius."))
    .input(InputSpec::float("alpha").default(1.0).range(0.0, 5.0).step(0.01).doc("Strength; 0 leaves the image unchanged."))
    .output("IMAGE", ValueType::Image, "The sharpened images.")
    .run(|cx| {
        let out = image_sharpen(
            image_input(cx, "image")?,
            cx.int("sharpen_radius")?,
            cx.float("sigma")? as f32,
            cx.float("alpha")? as f32,
        )?;
        Ok(Value::Image(out))
    })
}

/// ComfyUI's ImageSharpen; radius 0 returns the images unchanged.
pub fn image_sharpen(
    image: &Tensor,
    radius: i64,
    sigma: f32,
    alpha: f32,
) -> Result<Tensor, NodeError> {
    if radius == 0 {
        return Ok(image.clone());
    }
    let radius = usize::try_from(radius)
        .map_err(|_| NodeError::input("sharpen_radius", format!("{radius} is negative")))?;
    let size = 2 * radius + 1;
    let mut kernel: Vec<f32> = gaussian_kernel(size, sigma)
        .into_iter()
        .map(|k| k * -(alpha * 10.0))
        .collect();
    let centre = radius * size + radius;
    let total: f32 = kernel.iter().sum();
    kernel[centre] = kernel[centre] - total + 1.0;
    let out: Vec<f32> = convolve_reflect(image, &kernel, radius, "sharpen_radius")?
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect();
    Ok(Tensor::from_vec(out, image.dims(), &Device::Cpu)?)
}

/// `ImagePadForOutpaint`: a bigger canvas and the mask of what is new.
pub fn image_pad_for_outpaint_node() -> NodeDef {
    let side = |name: &str, doc: &str| {
        InputSpec::int(name)
            .default(0)
            .range(0.0, MAX_RESOLUTION)
            .step(8.0)
            .doc(doc)
    };
    NodeSchema::new(
        "ImagePadForOutpaint",
        "image",
        "Pads images for outpainting: the new border is 0.5 gray, and the mask is 1 there. Inside the original image the mask fades in over `feathering` pixels from each padded side, ((feathering − d)/feathering)² at distance d (ComfyUI's formula: d counts from 0 at the top and left edges and from 1 at the bottom and right ones); no fade unless 2·feathering is less than both sides.",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(side("left", "Pixels added on the left."))
    .input(side("top", "Pixels added at the top."))
    .input(side("right", "Pixels added on the right."))
    .input(side("bottom", "Pixels added at the bottom."))
    .input(InputSpec::int("feathering").default(40).range(0.0, MAX_RESOLUTION).doc("Width of the fade inside the original image."))
    .output("IMAGE", ValueType::Image, "The padded images.")
    .output("MASK", ValueType::Mask, "1 where to paint, [1, H, W].")
    .run(|cx| {
        let get = |name: &str| -> Result<usize, NodeError> {
            let v = cx.int(name)?;
            usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} is negative")))
        };
        let (image, mask) = image_pad_for_outpaint(
            image_input(cx, "image")?,
            [get("left")?, get("top")?, get("right")?, get("bottom")?],
            get("feathering")?,
        )?;
        Ok((Value::Image(image), Value::Mask(mask)))
    })
}

/// ComfyUI's ImagePadForOutpaint for padding `[left, top, right, bottom]`.
pub fn image_pad_for_outpaint(
    image: &Tensor,
    [left, top, right, bottom]: [usize; 4],
    feathering: usize,
) -> Result<(Tensor, Tensor), NodeError> {
    let (b, c, h, w) = image_dims(image, "image")?;
    let (nh, nw) = (h + top + bottom, w + left + right);
    let src = pixels(image)?;
    let mut out = vec![0.5f32; b * c * nh * nw];
    for p in 0..b * c {
        for y in 0..h {
            let from = (p * h + y) * w;
            let to = (p * nh + top + y) * nw + left;
            out[to..to + w].copy_from_slice(&src[from..from + w]);
        }
    }
    let mut mask = vec![1f32; nh * nw];
    let feather = feathering > 0 && feathering * 2 < h && feathering * 2 < w;
    for i in 0..h {
        for j in 0..w {
            let mut t = 0f32;
            if feather {
                let dt = if top != 0 { i } else { h };
                let db = if bottom != 0 { h - i } else { h };
                let dl = if left != 0 { j } else { w };
                let dr = if right != 0 { w - j } else { w };
                let d = dt.min(db).min(dl).min(dr);
                if d < feathering {
                    let v = (feathering - d) as f32 / feathering as f32;
                    t = v * v;
                }
            }
            mask[(top + i) * nw + left + j] = t;
        }
    }
    Ok((
        Tensor::from_vec(out, (b, c, nh, nw), &Device::Cpu)?,
        Tensor::from_vec(mask, (1, nh, nw), &Device::Cpu)?,
    ))
}

/// `ImageCompositeMasked`: pastes one image onto another through a mask.
pub fn image_composite_masked_node() -> NodeDef {
    NodeSchema::new(
        "ImageCompositeMasked",
        "image",
        "Pastes `source` onto `destination` with its top-left corner at (x, y), blended through `mask` (1 = source; bilinearly resized to the source's size; all 1 when absent). The part outside the destination is dropped. Batches are matched to the destination's by repeating or cutting, as ComfyUI does.",
    )
    .input(InputSpec::of("destination", ValueType::Image).doc("The background."))
    .input(InputSpec::of("source", ValueType::Image).doc("What is pasted."))
    .input(InputSpec::int("x").default(0).range(0.0, MAX_RESOLUTION).doc("Left edge of the paste."))
    .input(InputSpec::int("y").default(0).range(0.0, MAX_RESOLUTION).doc("Top edge of the paste."))
    .input(InputSpec::bool("resize_source").default(false).doc("Resize the source to the destination's size first (bilinear)."))
    .input(InputSpec::of("mask", ValueType::Mask).optional().doc("Where the source shows."))
    .output("IMAGE", ValueType::Image, "The composite.")
    .run(|cx| {
        let get = |name: &str| -> Result<usize, NodeError> {
            let v = cx.int(name)?;
            usize::try_from(v).map_err(|_| NodeError::input(name, format!("{v} is negative")))
        };
        let mask = match cx.inputs.get("mask") {
            Some(_) => Some(mask_input(cx, "mask")?),
            None => None,
        };
        let out = image_composite_masked(
            image_input(cx, "destination")?,
            image_input(cx, "source")?,
            get("x")?,
            get("y")?,
            cx.bool("resize_source")?,
            mask,
        )?;
        Ok(Value::Image(out))
    })
}

/// ComfyUI's `repeat_to_batch_size` along dim 0: the first `n` items of
/// the batch repeated as often as needed.
pub(crate) fn repeat_to_batch(t: &Tensor, n: usize) -> Result<Tensor, NodeError> {
    let b = t.dim(0)?;
    if b == 0 {
        return Err(NodeError::new("cannot repeat an empty batch"));
    }
    Ok(if b > n {
        t.narrow(0, 0, n)?
    } else if b < n {
        let mut reps = vec![1usize; t.rank()];
        reps[0] = n.div_ceil(b);
        t.repeat(reps)?.narrow(0, 0, n)?
    } else {
        t.clone()
    })
}

/// ComfyUI's image `composite` (multiplier 1): source pasted at (x, y)
/// through `mask`.
pub fn image_composite_masked(
    destination: &Tensor,
    source: &Tensor,
    x: usize,
    y: usize,
    resize_source: bool,
    mask: Option<&Tensor>,
) -> Result<Tensor, NodeError> {
    let (db, dc, dh, dw) = image_dims(destination, "destination")?;
    let (_, sc, _, _) = image_dims(source, "source")?;
    // ComfyUI's image_alpha_fix: a source with more channels loses the
    // extra ones; one with fewer gains gray → colour and an opaque alpha.
    let source = if sc > dc {
        source.narrow(1, 0, dc)?
    } else {
        widen_channels(source, dc)?
    };
    if source.dim(1)? != dc {
        return Err(NodeError::input(
            "source",
            format!("cannot paste a {sc}-channel image onto a {dc}-channel one"),
        ));
    }
    let source = if resize_source {
        common_upscale(&source, dw, dh, UpscaleMethod::Bilinear, false)
            .map_err(|e| NodeError::input("source", e))?
    } else {
        source.to_dtype(candle_core::DType::F32)?
    };
    if source.dim(0)? == 0 {
        return Err(NodeError::input("source", "the batch is empty"));
    }
    let source = repeat_to_batch(&source, db)?;
    let (_, _, sh, sw) = source.dims4()?;
    let mask = match mask {
        Some(m) => {
            let (mb, mh, mw) = mask_dims(m, "mask")?;
            if mb == 0 {
                return Err(NodeError::input("mask", "the batch is empty"));
            }
            let m = m.reshape((mb, 1, mh, mw))?;
            let m = common_upscale(&m, sw, sh, UpscaleMethod::Bilinear, false)
                .map_err(|e| NodeError::input("mask", e))?;
            Some(pixels(&repeat_to_batch(&m, db)?)?)
        }
        None => None,
    };
    let (x, y) = (x.min(dw), y.min(dh));
    let (vw, vh) = (sw.min(dw - x), sh.min(dh - y));
    let mut out = pixels(destination)?;
    let src = pixels(&source)?;
    for n in 0..db {
        for ch in 0..dc {
            for row in 0..vh {
                for col in 0..vw {
                    let m = mask.as_ref().map_or(1.0, |m| m[(n * sh + row) * sw + col]);
                    let s = src[((n * dc + ch) * sh + row) * sw + col];
                    let d = &mut out[((n * dc + ch) * dh + y + row) * dw + x + col];
                    *d = m * s + (1.0 - m) * *d;
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (db, dc, dh, dw), &Device::Cpu)?)
}
