use candle_core::{Device, Tensor};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::{image_dims, image_input, pixels};

/// `ImageGrid`: tiles a batch into one image, to see a whole batch at a
/// glance.
pub fn image_grid() -> NodeDef {
    NodeSchema::new(
        "ImageGrid",
        "image",
        "Tiles a batch into one image, row by row, with padding between tiles.",
    )
    .input(InputSpec::of("images", ValueType::Image).doc("The batch to tile."))
    .input(
        InputSpec::int("columns")
            .default(10)
            .range(1.0, 4096.0)
            .doc("Tiles per row (fewer if the batch is smaller)."),
    )
    .input(
        InputSpec::int("padding")
            .default(2)
            .range(0.0, 4096.0)
            .doc("Pixels between tiles."),
    )
    .input(
        InputSpec::float("background")
            .default(0.0)
            .range(0.0, 1.0)
            .doc("Value of the padding and of empty cells."),
    )
    .output("IMAGE", ValueType::Image, "One image holding every tile.")
    .run(|cx| {
        let out = grid(
            image_input(cx, "images")?,
            cx.int("columns")? as usize,
            cx.int("padding")? as usize,
            cx.float("background")? as f32,
        )?;
        Ok(Value::Image(out))
    })
}

/// Tiles `[B, C, H, W]` into `[1, C, rows·H + (rows−1)·pad, cols·W + (cols−1)·pad]`,
/// item k at row k / cols, column k % cols.
pub fn grid(
    images: &Tensor,
    columns: usize,
    padding: usize,
    background: f32,
) -> Result<Tensor, NodeError> {
    let (b, c, h, w) = image_dims(images, "images")?;
    if b == 0 {
        return Err(NodeError::input("images", "the batch is empty"));
    }
    let cols = columns.clamp(1, b);
    let rows = b.div_ceil(cols);
    let gw = cols * w + (cols - 1) * padding;
    let gh = rows * h + (rows - 1) * padding;
    let src = pixels(images)?;
    let mut out = vec![background; c * gh * gw];
    for k in 0..b {
        let (y0, x0) = ((k / cols) * (h + padding), (k % cols) * (w + padding));
        for ch in 0..c {
            for y in 0..h {
                let from = ((k * c + ch) * h + y) * w;
                let to = (ch * gh + y0 + y) * gw + x0;
                out[to..to + w].copy_from_slice(&src[from..from + w]);
            }
        }
    }
    Ok(Tensor::from_vec(out, (1, c, gh, gw), &Device::Cpu)?)
}

/// Resizes `[B, C, H, W]` to `[B, C, height, width]`: nearest picks source
/// pixel ⌊x·in/out⌋; bilinear samples at ((x + ½)·in/out − ½), clamped at the edges.
pub fn scale(
    images: &Tensor,
    width: usize,
    height: usize,
    bilinear: bool,
) -> Result<Tensor, NodeError> {
    let (b, c, h, w) = image_dims(images, "image")?;
    if h == 0 || w == 0 || width == 0 || height == 0 {
        return Err(NodeError::input("image", "cannot scale an empty image"));
    }
    let src = pixels(images)?;
    // Per output coordinate: two source indices and the weight of the second.
    let taps = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        let ratio = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|x| {
                if bilinear {
                    let s = ((x as f64 + 0.5) * ratio - 0.5).max(0.0);
                    let i0 = (s.floor() as usize).min(n_in - 1);
                    let i1 = (i0 + 1).min(n_in - 1);
                    (i0, i1, (s - i0 as f64) as f32)
                } else {
                    let i = ((x as f64 * ratio).floor() as usize).min(n_in - 1);
                    (i, i, 0.0)
                }
            })
            .collect()
    };
    let (xs, ys) = (taps(width, w), taps(height, h));
    let mut out = Vec::with_capacity(b * c * height * width);
    for plane in src.chunks_exact(h * w) {
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let at = |y: usize, x: usize| plane[y * w + x];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, c, height, width), &Device::Cpu)?)
}
