//! `ImageUpscaleWithModel`: images through an UPSCALE_MODEL, in tiles.

use candle_core::DType;
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_models::upscale::{Tiling, UpscaleModel};

use super::{image_dims, image_input};

pub fn image_upscale_with_model() -> NodeDef {
    NodeSchema::new(
        "ImageUpscaleWithModel",
        "image/upscaling",
        "Upscales images with an upscale model, as ComfyUI does: in 512-pixel tiles overlapping by 32, cross-faded where they overlap, so any size fits in memory. The output is the model's scale times the input (×4 for most ESRGANs), clamped to [0, 1]. Grayscale images are upscaled as RGB.",
    )
    .input(InputSpec::of("upscale_model", ValueType::UpscaleModel).doc("The upscale model (UpscaleModelLoader)."))
    .input(InputSpec::of("image", ValueType::Image).doc("The images to upscale."))
    .output("IMAGE", ValueType::Image, "The upscaled images.")
    .heavy()
    .run(|cx| {
        let model = cx.get::<UpscaleModel>("upscale_model")?;
        let image = image_input(cx, "image")?;
        let (_, c, _, _) = image_dims(image, "image")?;
        let want = model.architecture().image_channels();
        let image = image.to_dtype(DType::F32)?;
        let image = match (c, want) {
            (a, b) if a == b => image,
            (1, 3) => image.repeat((1, 3, 1, 1))?,
            _ => {
                return Err(NodeError::input(
                    "image",
                    format!("the upscale model takes {want}-channel images; this one has {c}"),
                ))
            }
        };
        let mut progress = |done: usize, total: usize| {
            cx.progress(done as u64, total as u64);
            cx.check_cancelled().is_ok()
        };
        let out = model
            .upscale(&image, Tiling::default(), &mut progress)
            .map_err(|e| match cx.check_cancelled() {
                Err(cancelled) => cancelled,
                Ok(()) => NodeError::input("image", e.to_string()),
            })?;
        Ok(Value::Image(out.clamp(0f32, 1f32)?))
    })
}
