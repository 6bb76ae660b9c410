//! Images: saving PNGs that carry the graph that made them (and previews),
//! loading image files, tiling, resizing ([`resample`], ComfyUI's
//! `common_upscale`), cropping, blurring, padding and compositing batches,
//! masks, and moving between pixel-space latents and images.
//!
//! Images are `[batch, channels, height, width]` f32 in `[0, 1]`, with one
//! channel for grayscale, three for colour and four with alpha (ComfyUI's
//! `[B, H, W, C]` with the channels moved first). Masks are
//! `[batch, height, width]` f32, 1 where something is to change, as in
//! ComfyUI.

mod canny;
mod convert;
mod load;
mod mask;
mod ops;
mod png_io;
mod preview;
pub use weft_kernels::resize as resample;
mod save;
mod scaling;
mod transform;
mod upscale;

pub use canny::{canny, canny_node};
pub use convert::{image_to_latent, latent_to_image};
pub use load::{load_image, load_image_node};
pub use mask::{
    feather_mask, feather_mask_node, grow_mask, grow_mask_node, image_to_mask, image_to_mask_node,
    invert_mask, load_image_mask, mask_to_image, mask_to_image_node, solid_mask,
};
pub(crate) use mask::{file_stamp, input_path};
pub use ops::{
    gaussian_kernel, image_batch, image_batch_node, image_blur, image_blur_node,
    image_composite_masked, image_composite_masked_node, image_crop, image_crop_node, image_invert,
    image_pad_for_outpaint, image_pad_for_outpaint_node, image_sharpen, image_sharpen_node,
};
pub use png_io::{
    embedded_graph, encode_png, read_png, text_chunks, PngFile, GRAPH_KEY, NODE_KEY, PROMPT_KEY,
    WORKFLOW_KEY,
};
pub use preview::{preview_dir, preview_image};
pub use save::save_image;
pub use scaling::{image_scale, image_scale_by, image_scale_to_total_pixels};
pub use transform::{grid, image_grid, scale};

use weft_core::{NodeContext, NodeDef, NodeError, Registry, Value};

/// The image node types.
pub fn nodes() -> Vec<NodeDef> {
    vec![
        save_image(),
        load_image_node(),
        image_grid(),
        image_scale(),
        latent_to_image(),
        image_to_latent(),
        canny_node(),
        upscale::image_upscale_with_model(),
        preview_image(),
        image_scale_by(),
        image_scale_to_total_pixels(),
        image_invert(),
        image_batch_node(),
        image_crop_node(),
        image_blur_node(),
        image_sharpen_node(),
        image_pad_for_outpaint_node(),
        image_composite_masked_node(),
        load_image_mask(),
        image_to_mask_node(),
        mask_to_image_node(),
        invert_mask(),
        solid_mask(),
        grow_mask_node(),
        feather_mask_node(),
    ]
}

pub fn register(registry: &mut Registry) -> Result<(), String> {
    registry.register_all(nodes())
}

/// The tensor behind IMAGE input `name`.
pub(crate) fn image_input<'a>(
    cx: &'a NodeContext<'_>,
    name: &str,
) -> Result<&'a candle_core::Tensor, NodeError> {
    match cx.value(name)? {
        Value::Image(t) => Ok(t),
        other => Err(NodeError::input(
            name,
            format!("expected IMAGE, found {}", other.ty()),
        )),
    }
}

/// The shape of an image batch, checked once so every node reports a wrong
/// rank the same way.
pub(crate) fn image_dims(
    t: &candle_core::Tensor,
    input: &str,
) -> Result<(usize, usize, usize, usize), NodeError> {
    match t.dims() {
        &[b, c, h, w] => Ok((b, c, h, w)),
        other => Err(NodeError::input(
            input,
            format!("an image is [batch, channels, height, width], found shape {other:?}"),
        )),
    }
}

/// The image's values as f32 on the CPU, batch-major, for per-pixel work.
pub(crate) fn pixels(t: &candle_core::Tensor) -> Result<Vec<f32>, NodeError> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}
