//! `ImageUpscaleWithModel`: images through an UPSCALE_MODEL, in tiles.

use candle_core::{DType, Tensor};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_models::upscale::{Tiling, UpscaleModel};

use super::{image_dims, image_input};

pub fn image_upscale_with_model() -> NodeDef {
    NodeSchema::new(
        "ImageUpscaleWithModel",
        "image/upscaling",
        "Upscales images with an upscale model, as ComfyUI does: in 512-pixel tiles overlapping by 32, cross-faded where they overlap, so any size fits in memory. The output is the model's scale times the input (×4 for most ESRGANs), clamped to [0, 1]. Grayscale images are upscaled as RGB; an alpha channel is upscaled by the model too, as a gray image.",
    )
    .input(InputSpec::of("upscale_model", ValueType::UpscaleModel).doc("The upscale model (UpscaleModelLoader)."))
    .input(InputSpec::of("image", ValueType::Image).doc("The images to upscale."))
    .output("IMAGE", ValueType::Image, "The upscaled images.")
    .heavy()
    .run(|cx| {
        let model = cx.get::<UpscaleModel>("upscale_model")?;
        let image = image_input(cx, "image")?;
        let mut progress = |done: usize, total: usize| {
            cx.progress(done as u64, total as u64);
            cx.check_cancelled().is_ok()
        };
        let out = upscale(model, image, Tiling::default(), &mut progress).map_err(|e| {
            match cx.check_cancelled() {
                Err(cancelled) => cancelled,
                Ok(()) => e,
            }
        })?;
        Ok(Value::Image(out))
    })
}

/// `image` `[B, C, H, W]` upscaled by `model` in tiles and clamped to
/// [0, 1]: gray images as RGB, and RGBA as its colour and then its alpha
/// (as a gray image, the mean of what the model makes of it).
fn upscale(
    model: &UpscaleModel,
    image: &Tensor,
    tiling: Tiling,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Tensor, NodeError> {
    let (_, c, _, _) = image_dims(image, "image")?;
    let want = model.architecture().image_channels();
    let image = image.to_dtype(DType::F32)?;
    let mut run = |x: &Tensor| {
        model
            .upscale(x, tiling, progress)
            .map_err(|e| NodeError::input("image", e.to_string()))
    };
    let out = match (c, want) {
        (a, b) if a == b => run(&image)?,
        (1, 3) => run(&image.repeat((1, 3, 1, 1))?)?,
        (4, 3) => {
            let rgb = run(&image.narrow(1, 0, 3)?)?;
            let alpha = run(&image.narrow(1, 3, 1)?.repeat((1, 3, 1, 1))?)?;
            Tensor::cat(&[rgb, alpha.mean_keepdim(1)?], 1)?
        }
        _ => {
            return Err(NodeError::input(
                "image",
                format!("the upscale model takes {want}-channel images; this one has {c}"),
            ))
        }
    };
    Ok(out.clamp(0f32, 1f32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn model() -> UpscaleModel {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/tests/fixtures/upscale/compact_x2.safetensors");
        UpscaleModel::open(&path).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn gray_and_alpha_go_through_the_model_as_rgb() {
        let model = model();
        let rgba = Tensor::rand(0f32, 1.0, (1, 4, 5, 6), &Device::Cpu).unwrap();
        let tiling = Tiling::default();
        let out = upscale(&model, &rgba, tiling, &mut |_, _| true).unwrap();
        assert_eq!(out.dims(), [1, 4, 10, 12]);
        let rgb = upscale(
            &model,
            &rgba.narrow(1, 0, 3).unwrap(),
            tiling,
            &mut |_, _| true,
        )
        .unwrap();
        assert_eq!(values(&out.narrow(1, 0, 3).unwrap()), values(&rgb));
        let gray = rgba.narrow(1, 3, 1).unwrap();
        let as_rgb = upscale(&model, &gray, tiling, &mut |_, _| true).unwrap();
        assert_eq!(as_rgb.dims(), [1, 3, 10, 12]);
        let raw = model.forward(&gray.repeat((1, 3, 1, 1)).unwrap()).unwrap();
        let alpha = raw.mean_keepdim(1).unwrap().clamp(0f32, 1f32).unwrap();
        let got = out.narrow(1, 3, 1).unwrap();
        assert!(weft_kernels::testing::max_diff(&got, &alpha) < 1e-6);
        // Clamped, unlike the model's own output.
        let raw = model.forward(&rgba.narrow(1, 0, 3).unwrap()).unwrap();
        assert!(values(&raw).iter().any(|v| !(0.0..=1.0).contains(v)));
        assert!(values(&out).iter().all(|v| (0.0..=1.0).contains(v)));
        let two = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let err = upscale(&model, &two, tiling, &mut |_, _| true).unwrap_err();
        assert!(
            err.message.contains("3-channel images; this one has 2"),
            "{}",
            err.message
        );
        let err = upscale(&model, &rgba, tiling, &mut |_, _| false).unwrap_err();
        assert!(err.message.contains("interrupted"), "{}", err.message);
    }
}
