//! ComfyUI's latent resizing nodes: `LatentUpscale` and `LatentUpscaleBy`
//! (hires fix), over the image module's `common_upscale`.

use std::sync::Arc;

use weft_core::{
    Define, InputSpec, Latent, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType,
};

use crate::image::resample::{
    common_upscale, python_round, UpscaleMethod, CROP_METHODS, LATENT_UPSCALE_METHODS,
};

/// ComfyUI's MAX_RESOLUTION.
const MAX_RESOLUTION: f64 = 16384.0;

const METHOD_DOC: &str = "nearest-exact, bilinear, area and bicubic are PyTorch's `interpolate` modes (align_corners=False, bicubic a = −0.75); bislerp is ComfyUI's: bilinear positions, channel vectors slerped, their norms interpolated linearly.";

fn method_input() -> InputSpec {
    InputSpec::choice("upscale_method", &LATENT_UPSCALE_METHODS).doc(METHOD_DOC)
}

fn method(cx: &NodeContext<'_>) -> Result<UpscaleMethod, NodeError> {
    let name = cx.str("upscale_method")?;
    UpscaleMethod::parse(name)
        .ok_or_else(|| NodeError::input("upscale_method", format!("unknown method `{name}`")))
}

/// `latent` resized to `width`×`height` cells; space and noise mask are
/// kept (ComfyUI leaves the noise mask as it was).
pub fn resize_latent(
    latent: &Latent,
    input: &str,
    width: usize,
    height: usize,
    method: UpscaleMethod,
    center: bool,
) -> Result<Latent, NodeError> {
    let dims = latent.samples.dims();
    if dims.len() != 4 {
        return Err(NodeError::input(
            input,
            format!("a latent is [batch, channels, height, width], found shape {dims:?}"),
        ));
    }
    let samples = common_upscale(&latent.samples, width, height, method, center)
        .map_err(|e| NodeError::input(input, e))?
        .to_dtype(latent.samples.dtype())?;
    Ok(Latent {
        samples,
        space: latent.space.clone(),
        noise_mask: latent.noise_mask.clone(),
    })
}

/// `LatentUpscale`: resizes latents to an image size.
pub fn latent_upscale() -> NodeDef {
    NodeSchema::new(
        "LatentUpscale",
        "latent",
        "Resizes latents to the latent size of a width×height image (sides ÷ 8, at least 64 pixels). A 0 side follows the other one's scale; both 0 leave the latents unchanged. `center` first crops to the new aspect ratio.",
    )
    .input(InputSpec::of("samples", ValueType::Latent).doc("The latents."))
    .input(method_input())
    .input(
        InputSpec::int("width")
            .default(512)
            .range(0.0, MAX_RESOLUTION)
            .step(8.0)
            .doc("Image width in pixels; 0 follows height."),
    )
    .input(
        InputSpec::int("height")
            .default(512)
            .range(0.0, MAX_RESOLUTION)
            .step(8.0)
            .doc("Image height in pixels; 0 follows width."),
    )
    .input(InputSpec::choice("crop", &CROP_METHODS).doc("center: crop to the new aspect ratio first; disabled: stretch."))
    .output("LATENT", ValueType::Latent, "The resized latents.")
    .run(|cx| {
        let latent = cx.latent("samples")?;
        let (mut width, mut height) = (cx.int("width")?, cx.int("height")?);
        if width == 0 && height == 0 {
            return Ok(cx.value("samples")?.clone());
        }
        let dims = latent.samples.dims();
        let (h, w) = match dims {
            &[_, _, h, w] if h > 0 && w > 0 => (h as f64, w as f64),
            other => {
                return Err(NodeError::input(
                    "samples",
                    format!("cannot resize a latent of shape {other:?}"),
                ))
            }
        };
        if width == 0 {
            height = height.max(64);
            width = python_round(w * height as f64 / h).max(64);
        } else if height == 0 {
            width = width.max(64);
            height = python_round(h * width as f64 / w).max(64);
        } else {
            width = width.max(64);
            height = height.max(64);
        }
        let out = resize_latent(
            latent,
            "samples",
            (width / 8) as usize,
            (height / 8) as usize,
            method(cx)?,
            cx.str("crop")? == "center",
        )?;
        Ok(Value::Latent(Arc::new(out)))
    })
}

/// `LatentUpscaleBy`: resizes latents by a factor.
pub fn latent_upscale_by() -> NodeDef {
    NodeSchema::new(
        "LatentUpscaleBy",
        "latent",
        "Resizes latents by a factor: the new sides are round(side × scale_by) cells (the hires fix's first half).",
    )
    .input(InputSpec::of("samples", ValueType::Latent).doc("The latents."))
    .input(method_input())
    .input(
        InputSpec::float("scale_by")
            .default(1.5)
            .range(0.01, 8.0)
            .step(0.01)
            .doc("The factor."),
    )
    .output("LATENT", ValueType::Latent, "The resized latents.")
    .run(|cx| {
        let latent = cx.latent("samples")?;
        let by = cx.float("scale_by")?;
        let dims = latent.samples.dims();
        let &[_, _, h, w] = dims else {
            return Err(NodeError::input(
                "samples",
                format!("a latent is [batch, channels, height, width], found shape {dims:?}"),
            ));
        };
        let side = |n: usize| -> Result<usize, NodeError> {
            let v = python_round(n as f64 * by);
            if v < 1 {
                return Err(NodeError::input(
                    "scale_by",
                    format!("{n} cells × {by} rounds to {v}"),
                ));
            }
            Ok(v as usize)
        };
        let out = resize_latent(latent, "samples", side(w)?, side(h)?, method(cx)?, false)?;
        Ok(Value::Latent(Arc::new(out)))
    })
}
