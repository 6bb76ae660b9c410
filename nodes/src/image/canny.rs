//! Canny edge detection, for ControlNet edge hints.
//!
//! The pipeline, per image: luma → 5×5 Gaussian blur (σ = 1, reflect
//! padding) → 3×3 Sobel gradients (replicate padding) → magnitude and
//! direction (quantised to 0°, 45°, 90°, 135°) → non-maximum suppression →
//! double threshold → hysteresis (8-connected flood fill from strong pixels).
//! Everything runs on plain `Vec<f32>` planes, single-threaded and in a fixed
//! order, so the result is bit-for-bit reproducible.

use candle_core::{Device, Tensor};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::{image_dims, image_input, pixels};

/// Half-width of the Gaussian kernel (5 taps) and its σ, as kornia's defaults.
const BLUR_RADIUS: usize = 2;
const BLUR_SIGMA: f32 = 1.0;

/// tan 22.5°: gradients within ±22.5° of an axis count as that axis.
const TAN_22_5: f32 = 0.414_213_57;

/// ITU-R BT.601 luma weights for R, G, B.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// `Canny`: finds edges with the Canny algorithm, for ControlNet edge hints.
pub fn canny_node() -> NodeDef {
    NodeSchema::new(
        "Canny",
        "image",
        "Finds edges with the Canny algorithm (luma, 5×5 Gaussian blur with σ = 1, Sobel \
         gradients, non-maximum suppression, double threshold, hysteresis) and returns a \
         3-channel map with edges 1 and background 0, e.g. as a ControlNet hint. \
         Thresholds are on the raw Sobel gradient magnitude of the blurred luma, as in \
         ComfyUI's Canny (kornia), so ComfyUI values carry over: a full-contrast straight \
         step measures about 2.59, so the defaults 0.4 and 0.8 are about 15 % and 31 % of \
         it.",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images, 1 or 3 channels."))
    .input(
        InputSpec::float("low_threshold")
            .default(0.4)
            .range(0.01, 0.99)
            .step(0.01)
            .doc(
                "Weak edges: suppressed-maximum pixels whose normalised gradient \
                  magnitude exceeds this are kept when 8-connected to a strong edge.",
            ),
    )
    .input(
        InputSpec::float("high_threshold")
            .default(0.8)
            .range(0.01, 0.99)
            .step(0.01)
            .doc(
                "Strong edges: suppressed-maximum pixels whose normalised gradient \
                  magnitude exceeds this are always kept. Must not be below low_threshold.",
            ),
    )
    .output(
        "IMAGE",
        ValueType::Image,
        "The edge map, [B, 3, H, W]: 1 on edges, 0 elsewhere, the same in every channel.",
    )
    .run(|cx| {
        let out = canny(
            image_input(cx, "image")?,
            cx.float("low_threshold")? as f32,
            cx.float("high_threshold")? as f32,
        )?;
        Ok(Value::Image(out))
    })
}

/// Canny edges of every image in `[B, C, H, W]` (C = 1 or 3, values in
/// `[0, 1]`), as `[B, 3, H, W]` with 1 on edges and 0 elsewhere.
///
/// `low` and `high` are on the raw Sobel magnitude (kornia's scale; a
/// full-contrast step reaches about 2.59 after the blur); a pixel that survives
/// non-maximum suppression is strong above `high`, weak above `low`, and weak
/// pixels are kept only when 8-connected (through other weak pixels) to a
/// strong one.
pub fn canny(images: &Tensor, low: f32, high: f32) -> Result<Tensor, NodeError> {
    let (b, c, h, w) = image_dims(images, "image")?;
    if !low.is_finite() {
        return Err(NodeError::input("low_threshold", "must be a finite number"));
    }
    if !high.is_finite() {
        return Err(NodeError::input(
            "high_threshold",
            "must be a finite number",
        ));
    }
    if low > high {
        return Err(NodeError::input(
            "low_threshold",
            format!("{low} is above high_threshold {high}; the low threshold must not exceed the high one"),
        ));
    }
    if c != 1 && c != 3 {
        return Err(NodeError::input(
            "image",
            format!("expected 1 or 3 channels, found {c}"),
        ));
    }
    let plane = h * w;
    let mut out = vec![0.0f32; b * 3 * plane];
    if plane > 0 {
        let src = pixels(images)?;
        let kernel = gaussian_kernel();
        for (item, dst) in src
            .chunks_exact(c * plane)
            .zip(out.chunks_exact_mut(3 * plane))
        {
            let gray = luma(item, c, plane);
            let blurred = blur(&gray, w, h, &kernel);
            let edges = edges(&blurred, w, h, low, high);
            for ch in dst.chunks_exact_mut(plane) {
                ch.copy_from_slice(&edges);
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, 3, h, w), &Device::Cpu)?)
}

/// One channel of brightness: the plane itself, or BT.601 luma of R, G, B.
fn luma(item: &[f32], c: usize, plane: usize) -> Vec<f32> {
    if c == 1 {
        return item.to_vec();
    }
    let (r, rest) = item.split_at(plane);
    let (g, b) = rest.split_at(plane);
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((r, g), b)| LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)
        .collect()
}

/// The sampled, normalised 1-D Gaussian, `exp(−x² / 2σ²)` at x = −2..=2.
fn gaussian_kernel() -> [f32; 2 * BLUR_RADIUS + 1] {
    let mut k = [0.0f32; 2 * BLUR_RADIUS + 1];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f32 - BLUR_RADIUS as f32;
        *v = (-x * x / (2.0 * BLUR_SIGMA * BLUR_SIGMA)).exp();
    }
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Mirror padding without repeating the edge sample (…, 2, 1 | 0, 1, 2, …),
/// folded again as often as needed so tiny images work too.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Separable Gaussian blur of a `w`×`h` plane: rows, then columns.
fn blur(src: &[f32], w: usize, h: usize, k: &[f32]) -> Vec<f32> {
    let r = (k.len() / 2) as isize;
    let mut rows = vec![0.0f32; w * h];
    for y in 0..h {
        let line = &src[y * w..(y + 1) * w];
        for x in 0..w {
            rows[y * w + x] = k
                .iter()
                .enumerate()
                .map(|(j, kv)| kv * line[reflect(x as isize + j as isize - r, w)])
                .sum();
        }
    }
    let mut out = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = k
                .iter()
                .enumerate()
                .map(|(j, kv)| kv * rows[reflect(y as isize + j as isize - r, h) * w + x])
                .sum();
        }
    }
    out
}

/// Which pair of neighbours a pixel is compared with in non-maximum
/// suppression: the two along its quantised gradient direction, as
/// `(backward, forward)` offsets `(dx, dy)`.
fn nms_neighbours(gx: f32, gy: f32) -> [(isize, isize); 2] {
    let (ax, ay) = (gx.abs(), gy.abs());
    if ay <= TAN_22_5 * ax {
        [(-1, 0), (1, 0)] // gradient near horizontal: a vertical edge
    } else if ax <= TAN_22_5 * ay {
        [(0, -1), (0, 1)]
    } else if (gx > 0.0) == (gy > 0.0) {
        [(-1, -1), (1, 1)]
    } else {
        [(-1, 1), (1, -1)]
    }
}

/// The binary edge map (1.0 / 0.0) of a blurred `w`×`h` plane.
fn edges(src: &[f32], w: usize, h: usize, low: f32, high: f32) -> Vec<f32> {
    // Sobel with replicate padding; the magnitude stays unnormalised, as kornia's.
    let at = |x: isize, y: isize| -> f32 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        src[y * w + x]
    };
    let mut gx = vec![0.0f32; w * h];
    let mut gy = vec![0.0f32; w * h];
    let mut mag = vec![0.0f32; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let dx = (at(x + 1, y - 1) - at(x - 1, y - 1))
                + 2.0 * (at(x + 1, y) - at(x - 1, y))
                + (at(x + 1, y + 1) - at(x - 1, y + 1));
            let dy = (at(x - 1, y + 1) - at(x - 1, y - 1))
                + 2.0 * (at(x, y + 1) - at(x, y - 1))
                + (at(x + 1, y + 1) - at(x + 1, y - 1));
            let i = y as usize * w + x as usize;
            gx[i] = dx;
            gy[i] = dy;
            mag[i] = (dx * dx + dy * dy).sqrt();
        }
    }

    // Non-maximum suppression and double threshold. A pixel must be strictly
    // above its backward neighbour and at least its forward one, so of two
    // equal maxima side by side (a step edge falling between two pixels)
    // exactly one survives. Outside the image counts as 0.
    const NONE: u8 = 0;
    const WEAK: u8 = 1;
    const EDGE: u8 = 2;
    let mag_at = |x: isize, y: isize| -> f32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0.0
        } else {
            mag[y as usize * w + x as usize]
        }
    };
    let mut class = vec![NONE; w * h];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let [(bx, by), (fx, fy)] = nms_neighbours(gx[i], gy[i]);
            let (xi, yi) = (x as isize, y as isize);
            if m > mag_at(xi + bx, yi + by) && m >= mag_at(xi + fx, yi + fy) {
                if m > high {
                    class[i] = EDGE;
                    stack.push(i);
                } else {
                    class[i] = WEAK;
                }
            }
        }
    }

    // Hysteresis: grow every strong pixel through 8-connected weak ones.
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
            for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                let n = ny * w + nx;
                if class[n] == WEAK {
                    class[n] = EDGE;
                    stack.push(n);
                }
            }
        }
    }
    class
        .into_iter()
        .map(|c| if c == EDGE { 1.0 } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        let got: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(reflect(-2, 1), 0);
        assert_eq!(reflect(-2, 2), 0);
        assert_eq!(reflect(3, 2), 1);
    }
}
