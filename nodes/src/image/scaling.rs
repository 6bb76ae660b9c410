//! ComfyUI's image resizing nodes: `ImageScale`, `ImageScaleBy` and
//! `ImageScaleToTotalPixels`, over [`super::resample::common_upscale`].

use candle_core::Tensor;
use weft_core::{Define, InputSpec, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::resample::{
    common_upscale, python_round, UpscaleMethod, CROP_METHODS, IMAGE_UPSCALE_METHODS,
};
use super::{image_dims, image_input};

/// ComfyUI's MAX_RESOLUTION.
pub(crate) const MAX_RESOLUTION: f64 = 16384.0;

const METHOD_DOC: &str = "nearest-exact, bilinear, area and bicubic are PyTorch's `interpolate` modes (align_corners=False; bicubic a = −0.75, may overshoot [0, 1]); lanczos is Pillow's, on 8-bit values, as ComfyUI does it.";

/// The `upscale_method` input of the image nodes.
pub(crate) fn image_method_input() -> InputSpec {
    InputSpec::choice("upscale_method", &IMAGE_UPSCALE_METHODS).doc(METHOD_DOC)
}

/// The method named by input `upscale_method`.
pub(crate) fn method(cx: &NodeContext<'_>) -> Result<UpscaleMethod, NodeError> {
    let name = cx.str("upscale_method")?;
    UpscaleMethod::parse(name)
        .ok_or_else(|| NodeError::input("upscale_method", format!("unknown method `{name}`")))
}

/// Resizes an IMAGE batch; errors name `input`.
pub(crate) fn resize_images(
    images: &Tensor,
    input: &str,
    width: usize,
    height: usize,
    method: UpscaleMethod,
    center: bool,
) -> Result<Tensor, NodeError> {
    image_dims(images, input)?;
    common_upscale(images, width, height, method, center).map_err(|e| NodeError::input(input, e))
}

/// A size that must be at least 1, or an error naming `input`.
fn positive(size: i64, input: &str, what: &str) -> Result<usize, NodeError> {
    if size < 1 {
        return Err(NodeError::input(
            input,
            format!("the new {what} would be {size} pixels"),
        ));
    }
    Ok(size as usize)
}

/// `ImageScale`: resizes to a width and height (0 keeps the aspect ratio).
pub fn image_scale() -> NodeDef {
    NodeSchema::new(
        "ImageScale",
        "image/upscaling",
        "Resizes every image of a batch to width×height. A 0 side follows the other one's scale (aspect ratio kept); both 0 leaves the images unchanged. `center` first crops the images to the new aspect ratio (ComfyUI's rule), `disabled` stretches.",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(image_method_input())
    .input(
        InputSpec::int("width")
            .default(512)
            .range(0.0, MAX_RESOLUTION)
            .doc("New width in pixels; 0 follows height."),
    )
    .input(
        InputSpec::int("height")
            .default(512)
            .range(0.0, MAX_RESOLUTION)
            .doc("New height in pixels; 0 follows width."),
    )
    .input(InputSpec::choice("crop", &CROP_METHODS).doc("center: crop to the new aspect ratio first; disabled: stretch."))
    .output("IMAGE", ValueType::Image, "The resized images.")
    .run(|cx| {
        let image = image_input(cx, "image")?;
        let (_, _, h, w) = image_dims(image, "image")?;
        let (mut width, mut height) = (cx.int("width")?, cx.int("height")?);
        if width == 0 && height == 0 {
            return Ok(Value::Image(image.clone()));
        }
        if h == 0 || w == 0 {
            return Err(NodeError::input("image", "the image is empty"));
        }
        if width == 0 {
            width = python_round(w as f64 * height as f64 / h as f64).max(1);
        } else if height == 0 {
            height = python_round(h as f64 * width as f64 / w as f64).max(1);
        }
        let out = resize_images(
            image,
            "image",
            width as usize,
            height as usize,
            method(cx)?,
            cx.str("crop")? == "center",
        )?;
        Ok(Value::Image(out))
    })
}

/// `ImageScaleBy`: resizes by a factor.
pub fn image_scale_by() -> NodeDef {
    NodeSchema::new(
        "ImageScaleBy",
        "image/upscaling",
        "Resizes every image of a batch by a factor: the new sides are round(side × scale_by).",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(image_method_input())
    .input(
        InputSpec::float("scale_by")
            .default(1.0)
            .range(0.01, 8.0)
            .step(0.01)
            .doc("The factor."),
    )
    .output("IMAGE", ValueType::Image, "The resized images.")
    .run(|cx| {
        let image = image_input(cx, "image")?;
        let (_, _, h, w) = image_dims(image, "image")?;
        let by = cx.float("scale_by")?;
        let width = positive(python_round(w as f64 * by), "scale_by", "width")?;
        let height = positive(python_round(h as f64 * by), "scale_by", "height")?;
        let out = resize_images(image, "image", width, height, method(cx)?, false)?;
        Ok(Value::Image(out))
    })
}

/// `ImageScaleToTotalPixels`: resizes to about a number of megapixels.
pub fn image_scale_to_total_pixels() -> NodeDef {
    NodeSchema::new(
        "ImageScaleToTotalPixels",
        "image/upscaling",
        "Resizes every image of a batch to about `megapixels` × 1024² pixels, keeping its aspect ratio; each side is rounded to a multiple of resolution_steps.",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .input(image_method_input())
    .input(
        InputSpec::float("megapixels")
            .default(1.0)
            .range(0.01, 16.0)
            .step(0.01)
            .doc("Target size in units of 1024² pixels."),
    )
    .input(
        InputSpec::int("resolution_steps")
            .default(1)
            .range(1.0, 256.0)
            .doc("Each side becomes a multiple of this."),
    )
    .output("IMAGE", ValueType::Image, "The resized images.")
    .run(|cx| {
        let image = image_input(cx, "image")?;
        let (_, _, h, w) = image_dims(image, "image")?;
        if h == 0 || w == 0 {
            return Err(NodeError::input("image", "the image is empty"));
        }
        let total = cx.float("megapixels")? * 1024.0 * 1024.0;
        let steps = cx.int("resolution_steps")?;
        let by = (total / (w * h) as f64).sqrt();
        let side = |n: usize, what: &str| {
            positive(
                python_round(n as f64 * by / steps as f64) * steps,
                "resolution_steps",
                what,
            )
        };
        let (width, height) = (side(w, "width")?, side(h, "height")?);
        let out = resize_images(image, "image", width, height, method(cx)?, false)?;
        Ok(Value::Image(out))
    })
}
