use std::path::Path;

use candle_core::{Device, Tensor};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

/// `LoadImage`: loads an image file as a one-image batch plus a mask from
/// its alpha.
pub fn load_image_node() -> NodeDef {
    NodeSchema::new(
        "LoadImage",
        "image",
        "Loads a PNG, JPEG, WebP or BMP file as a one-image batch (1 channel if grayscale, else 3) and a mask that is 1 where the image is transparent (ComfyUI's convention; all 0 without alpha).",
    )
    .input(InputSpec::string("image_path").doc("The file: absolute, or relative to the graph's folder (the input folder under `weft serve`, which accepts nothing else), else to the working directory."))
    .output("IMAGE", ValueType::Image, "The image, [1, C, H, W] in [0, 1].")
    .output("MASK", ValueType::Mask, "1 − alpha, [1, H, W].")
    .run(|cx| {
        let path = super::mask::input_path(cx.inputs, "image_path")?;
        let (image, mask) = load_image(&path).map_err(|e| NodeError::input("image_path", e))?;
        Ok((Value::Image(image), Value::Mask(mask)))
    })
    .fingerprint(|inputs| super::mask::file_stamp(inputs, "image_path"))
}

/// Decodes an image file into `([1, C, H, W], [1, H, W])`: the image in
/// `[0, 1]` (C = 1 for grayscale sources, 3 otherwise; 16-bit sources keep
/// their precision) and the mask `1 − alpha` (zeros without alpha).
/// Errors name the path.
pub fn load_image(path: &Path) -> Result<(Tensor, Tensor), String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot read image {}: {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode image {}: {e}", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let color = img.color();
    let (channels, interleaved) = if color.has_color() {
        (3, img.to_rgb32f().into_raw())
    } else {
        (1, img.to_luma32f().into_raw())
    };
    let area = w * h;
    let mut planar = vec![0f32; channels * area];
    for p in 0..area {
        for c in 0..channels {
            planar[c * area + p] = interleaved[p * channels + c];
        }
    }
    let mask: Vec<f32> = if color.has_alpha() {
        img.to_rgba32f()
            .into_raw()
            .chunks_exact(4)
            .map(|px| 1.0 - px[3])
            .collect()
    } else {
        vec![0.0; area]
    };
    let tensor = |data: Vec<f32>, shape: &[usize]| {
        Tensor::from_vec(data, shape, &Device::Cpu).map_err(|e| e.to_string())
    };
    Ok((
        tensor(planar, &[1, channels, h, w])?,
        tensor(mask, &[1, h, w])?,
    ))
}
