//! Images: saving PNGs that carry the graph that made them, loading image
//! files, tiling and resizing batches, and moving between pixel-space latents
//! and images.
//!
//! Images are `[batch, channels, height, width]` f32 in `[0, 1]`, with one
//! channel for grayscale and three for colour.

mod canny;
mod convert;
mod load;
mod png_io;
mod save;
mod transform;

pub use canny::{canny, Canny};
pub use convert::{ImageToLatent, LatentToImage};
pub use load::{load_image, LoadImage};
pub use png_io::{embedded_graph, encode_png, read_png, PngFile, GRAPH_KEY, NODE_KEY};
pub use save::SaveImage;
pub use transform::{grid, scale, ImageGrid, ImageScale};

use weft_core::Registry;

pub fn register(registry: &mut Registry) -> Result<(), String> {
    registry.register(SaveImage::new())?;
    registry.register(LoadImage::new())?;
    registry.register(ImageGrid::new())?;
    registry.register(ImageScale::new())?;
    registry.register(LatentToImage::new())?;
    registry.register(ImageToLatent::new())?;
    registry.register(Canny::new())?;
    Ok(())
}

/// The shape of an image batch, checked once so every node reports a wrong
/// rank the same way.
pub(crate) fn image_dims(
    t: &candle_core::Tensor,
    input: &str,
) -> Result<(usize, usize, usize, usize), weft_core::NodeError> {
    match t.dims() {
        &[b, c, h, w] => Ok((b, c, h, w)),
        other => Err(weft_core::NodeError::input(
            input,
            format!("an image is [batch, channels, height, width], found shape {other:?}"),
        )),
    }
}

/// The image's values as f32 on the CPU, batch-major, for per-pixel work.
pub(crate) fn pixels(t: &candle_core::Tensor) -> Result<Vec<f32>, weft_core::NodeError> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}
