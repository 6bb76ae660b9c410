//! Resizing the way ComfyUI's `common_upscale` (`comfy/utils.py`) does it,
//! on weft's `[batch, channels, height, width]` tensors (IMAGE batches and
//! latents alike; a MASK goes through as one channel).
//!
//! - `nearest-exact`, `bilinear`, `bicubic` and `area` are PyTorch's
//!   `interpolate` modes: source pixel ⌊(x + ½)·in/out⌋; linear taps at
//!   (x + ½)·in/out − ½ (`align_corners=False`, clamped at 0); Keys' cubic
//!   with a = −0.75 on the same positions, taps clamped to the edge and
//!   values not clamped (they may overshoot, as in PyTorch); adaptive
//!   average pooling over ⌊i·in/out⌋ .. ⌈(i+1)·in/out⌉.
//! - `bislerp` is ComfyUI's latent resize: bilinear positions, but each
//!   pair of channel vectors is slerped and its norm interpolated linearly.
//! - `lanczos` is Pillow's `Image.resize(LANCZOS)`, which ComfyUI calls on
//!   8-bit copies of the images: values are clipped to [0, 1] and truncated
//!   to 8 bits, filtered with Pillow's a = 3 window (its double-precision
//!   weights, 22-bit fixed-point sums, horizontal pass first with an 8-bit
//!   intermediate) and read back as n/255. Channels are filtered
//!   independently (Pillow premultiplies RGBA by alpha; weft does not).
//! - The `center` crop cuts the input to the target's aspect ratio first:
//!   ComfyUI's `round((old − old·(new/old aspect))/2)` pixels off each side.
//!
//! Sizes are computed with Python's `round` (half to even), as ComfyUI does.
//! The samplers resize masks with [`bilinear`]; the image and latent nodes
//! use every method.

use candle_core::{DType, Device, Result as CandleResult, Tensor};

/// A tensor's values as f32, flattened.
fn pixels(t: &Tensor) -> CandleResult<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// The resampling filters of ComfyUI's scale nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpscaleMethod {
    NearestExact,
    Bilinear,
    Area,
    Bicubic,
    Bislerp,
    Lanczos,
}

/// `upscale_method` choices of the image scale nodes, in ComfyUI's order.
pub const IMAGE_UPSCALE_METHODS: [&str; 5] =
    ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];
/// `upscale_method` choices of the latent scale nodes, in ComfyUI's order.
pub const LATENT_UPSCALE_METHODS: [&str; 5] =
    ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"];
/// `crop` choices.
pub const CROP_METHODS: [&str; 2] = ["disabled", "center"];

impl UpscaleMethod {
    /// The method a `upscale_method` string names.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "nearest-exact" => UpscaleMethod::NearestExact,
            "bilinear" => UpscaleMethod::Bilinear,
            "area" => UpscaleMethod::Area,
            "bicubic" => UpscaleMethod::Bicubic,
            "bislerp" => UpscaleMethod::Bislerp,
            "lanczos" => UpscaleMethod::Lanczos,
            _ => return None,
        })
    }
}

/// Python's `round`: to the nearest integer, halves to even.
pub fn python_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// ComfyUI's centre crop of an `old_w`×`old_h` input for a `width`×`height`
/// target: `(x, y, w, h)` of the kept box, which has the target's aspect
/// ratio up to rounding.
pub fn center_crop_box(
    old_w: usize,
    old_h: usize,
    width: usize,
    height: usize,
) -> (usize, usize, usize, usize) {
    let old_aspect = old_w as f64 / old_h as f64;
    let new_aspect = width as f64 / height as f64;
    let (mut x, mut y) = (0usize, 0usize);
    if old_aspect > new_aspect {
        x = python_round((old_w as f64 - old_w as f64 * (new_aspect / old_aspect)) / 2.0) as usize;
    } else if old_aspect < new_aspect {
        y = python_round((old_h as f64 - old_h as f64 * (old_aspect / new_aspect)) / 2.0) as usize;
    }
    (
        x,
        y,
        old_w.saturating_sub(2 * x),
        old_h.saturating_sub(2 * y),
    )
}

/// Resizes `samples` (`[B, C, H, W]`) to `width`×`height` with `method`,
/// after ComfyUI's centre crop when `center` is set. The result is f32.
pub fn common_upscale(
    samples: &Tensor,
    width: usize,
    height: usize,
    method: UpscaleMethod,
    center: bool,
) -> Result<Tensor, String> {
    let (b, c, h, w) = samples.dims4().map_err(|e| e.to_string())?;
    if width == 0 || height == 0 {
        return Err(format!("cannot resize to {width}×{height}"));
    }
    if h == 0 || w == 0 || b == 0 || c == 0 {
        return Err(format!(
            "cannot resize an empty tensor of shape {:?}",
            samples.dims()
        ));
    }
    let mut data = pixels(samples).map_err(|e| e.to_string())?;
    let (mut h, mut w) = (h, w);
    if center {
        let (x0, y0, cw, ch) = center_crop_box(w, h, width, height);
        if cw == 0 || ch == 0 {
            return Err(format!(
                "a centre crop of {w}×{h} to the aspect ratio of {width}×{height} leaves nothing"
            ));
        }
        if (cw, ch) != (w, h) {
            data = crop_planes(&data, b * c, h, w, x0, y0, cw, ch);
            (h, w) = (ch, cw);
        }
    }
    let out = match method {
        UpscaleMethod::Bislerp => bislerp(&data, b, c, h, w, width, height),
        UpscaleMethod::Lanczos => {
            let mut out = Vec::with_capacity(b * c * height * width);
            for plane in data.chunks_exact(h * w) {
                out.extend(lanczos_plane(plane, h, w, width, height));
            }
            out
        }
        _ => {
            let xs = taps(method, w, width);
            let ys = taps(method, h, height);
            let mut out = Vec::with_capacity(b * c * height * width);
            for plane in data.chunks_exact(h * w) {
                out.extend(separable(plane, w, &xs, &ys));
            }
            out
        }
    };
    Tensor::from_vec(out, (b, c, height, width), &Device::Cpu).map_err(|e| e.to_string())
}

/// The `cw`×`ch` box at (`x0`, `y0`) of each of `planes` `h`×`w` planes.
#[allow(clippy::too_many_arguments)]
fn crop_planes(
    data: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    x0: usize,
    y0: usize,
    cw: usize,
    ch: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(planes * cw * ch);
    for p in 0..planes {
        for y in y0..y0 + ch {
            let row = (p * h + y) * w;
            out.extend_from_slice(&data[row + x0..row + x0 + cw]);
        }
    }
    out
}

/// One output coordinate's source indices and weights.
type Tap = Vec<(usize, f32)>;

/// The taps along one axis, `n_in` → `n_out`, for the PyTorch modes.
fn taps(method: UpscaleMethod, n_in: usize, n_out: usize) -> Vec<Tap> {
    // PyTorch's scale for an explicit output size: in / out, in f32.
    let scale = n_in as f32 / n_out as f32;
    let last = n_in - 1;
    (0..n_out)
        .map(|x| match method {
            UpscaleMethod::NearestExact => {
                let src = (((x as f64 + 0.5) * scale as f64) as f32).floor() as usize;
                vec![(src.min(last), 1.0)]
            }
            UpscaleMethod::Area => {
                let start = x * n_in / n_out;
                let end = ((x + 1) * n_in).div_ceil(n_out);
                let weight = 1.0 / (end - start) as f32;
                (start..end).map(|i| (i, weight)).collect()
            }
            UpscaleMethod::Bicubic => {
                let real = scale * (x as f32 + 0.5) - 0.5;
                let floor = real.floor();
                let t = real - floor;
                let i0 = floor as i64;
                cubic_coefficients(t)
                    .into_iter()
                    .enumerate()
                    .map(|(k, weight)| ((i0 - 1 + k as i64).clamp(0, last as i64) as usize, weight))
                    .collect()
            }
            // Bilinear, and the positions bislerp uses.
            _ => {
                let (i0, i1, lambda) = linear_position(scale, x, n_in);
                vec![(i0, 1.0 - lambda), (i1, lambda)]
            }
        })
        .collect()
}

/// PyTorch's linear source position for output `x`: the two source
/// indices and the second one's weight.
fn linear_position(scale: f32, x: usize, n_in: usize) -> (usize, usize, f32) {
    let real = (scale * (x as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (real.floor() as usize).min(n_in - 1);
    let lambda = (real - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
    (i0, i1, lambda)
}

/// Keys' cubic convolution weights (a = −0.75, PyTorch's) of the four taps
/// around a position `t` ∈ [0, 1) past the second one.
fn cubic_coefficients(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    // |x| ≤ 1 and 1 < |x| < 2.
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Σ kᵢ·v(i) over a tap list, starting from the first product (so a
/// single unit tap copies its value exactly, −0 included).
fn weigh(tap: &[(usize, f32)], v: impl Fn(usize) -> f32) -> f32 {
    let mut taps = tap.iter();
    let Some(&(i, k)) = taps.next() else {
        return 0.0;
    };
    taps.fold(v(i) * k, |sum, &(i, k)| sum + v(i) * k)
}

/// Applies per-axis taps to one `h`×`w` plane: rows first, then columns.
fn separable(plane: &[f32], w: usize, xs: &[Tap], ys: &[Tap]) -> Vec<f32> {
    let h = plane.len() / w;
    let new_w = xs.len();
    let mut rows = vec![0f32; h * new_w];
    for y in 0..h {
        let src = &plane[y * w..(y + 1) * w];
        for (x, tap) in xs.iter().enumerate() {
            rows[y * new_w + x] = weigh(tap, |i| src[i]);
        }
    }
    let mut out = vec![0f32; ys.len() * new_w];
    for (y, tap) in ys.iter().enumerate() {
        let dst = &mut out[y * new_w..(y + 1) * new_w];
        for (x, d) in dst.iter_mut().enumerate() {
            *d = weigh(tap, |i| rows[i * new_w + x]);
        }
    }
    out
}

/// ComfyUI's bislerp: along width, then along height, each output pixel's
/// channel vector is the slerp of its two bilinear neighbours.
fn bislerp(
    data: &[f32],
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    width: usize,
    height: usize,
) -> Vec<f32> {
    // Pass 1: [b, c, h, w] → [b, c, h, width].
    let xs = bislerp_positions(w, width);
    let mut mid = vec![0f32; b * c * h * width];
    let mut v1 = vec![0f32; c];
    let mut v2 = vec![0f32; c];
    let mut res = vec![0f32; c];
    for n in 0..b {
        for y in 0..h {
            for (x, &(i1, i2, r)) in xs.iter().enumerate() {
                for ch in 0..c {
                    let row = ((n * c + ch) * h + y) * w;
                    v1[ch] = data[row + i1];
                    v2[ch] = data[row + i2];
                }
                slerp(&v1, &v2, r, &mut res);
                for ch in 0..c {
                    mid[((n * c + ch) * h + y) * width + x] = res[ch];
                }
            }
        }
    }
    // Pass 2: [b, c, h, width] → [b, c, height, width].
    let ys = bislerp_positions(h, height);
    let mut out = vec![0f32; b * c * height * width];
    for n in 0..b {
        for (y, &(i1, i2, r)) in ys.iter().enumerate() {
            for x in 0..width {
                for ch in 0..c {
                    let plane = (n * c + ch) * h;
                    v1[ch] = mid[(plane + i1) * width + x];
                    v2[ch] = mid[(plane + i2) * width + x];
                }
                slerp(&v1, &v2, r, &mut res);
                for ch in 0..c {
                    out[((n * c + ch) * height + y) * width + x] = res[ch];
                }
            }
        }
    }
    out
}

/// bislerp's `generate_bilinear_data`: PyTorch's bilinear interpolation of
/// the index ramps 0..n and 1..n (last repeated), read back as two indices
/// and the fraction between them.
fn bislerp_positions(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f32 / n_out as f32;
    let last = n_in - 1;
    (0..n_out)
        .map(|x| {
            let (i0, i1, lambda) = linear_position(scale, x, n_in);
            let at = |f: &dyn Fn(usize) -> f32| f(i0) * (1.0 - lambda) + f(i1) * lambda;
            let first = at(&|i| i as f32);
            let second = at(&|i| if i < last { i as f32 + 1.0 } else { i as f32 });
            (
                first as usize,
                (second as usize).min(last),
                first - first.floor(),
            )
        })
        .collect()
}

/// ComfyUI's slerp of two channel vectors at ratio `r`: the unit vectors
/// are slerped and scaled by the linearly interpolated norm; nearly equal
/// directions give `b1` itself, opposite ones the linear blend.
fn slerp(b1: &[f32], b2: &[f32], r: f32, out: &mut [f32]) {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let (n1, n2) = (norm(b1), norm(b2));
    let unit = |v: f32, n: f32| if n == 0.0 { 0.0 } else { v / n };
    let dot: f32 = b1
        .iter()
        .zip(b2)
        .map(|(&a, &b)| unit(a, n1) * unit(b, n2))
        .sum();
    if dot > 1.0 - 1e-5 {
        out.copy_from_slice(b1);
        return;
    }
    if dot < 1e-5 - 1.0 {
        for ((o, &a), &b) in out.iter_mut().zip(b1).zip(b2) {
            *o = a * (1.0 - r) + b * r;
        }
        return;
    }
    let omega = dot.acos();
    let so = omega.sin();
    let (k1, k2) = (((1.0 - r) * omega).sin() / so, (r * omega).sin() / so);
    let scale = n1 * (1.0 - r) + n2 * r;
    for ((o, &a), &b) in out.iter_mut().zip(b1).zip(b2) {
        *o = (k1 * unit(a, n1) + k2 * unit(b, n2)) * scale;
    }
}

/// Pillow's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's Lanczos window (a = 3).
fn lanczos_kernel(x: f64) -> f64 {
    fn sinc(x: f64) -> f64 {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    }
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` for LANCZOS, normalised to fixed point:
/// per output pixel, the first source index and the integer weights.
fn lanczos_coefficients(n_in: usize, n_out: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = n_in as f64 / n_out as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    (0..n_out)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(n_in as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| lanczos_kernel((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let scaled = k * (1i64 << PRECISION_BITS) as f64;
                    if k < 0.0 {
                        (scaled - 0.5) as i64
                    } else {
                        (scaled + 0.5) as i64
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: a fixed-point sum back to 0..=255.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One plane through ComfyUI's `lanczos`: to 8 bits, Pillow's LANCZOS
/// resize (horizontal pass, then vertical, each only when its size
/// changes), back to n/255.
fn lanczos_plane(plane: &[f32], h: usize, w: usize, width: usize, height: usize) -> Vec<f32> {
    // numpy's `clip(255·x, 0, 255).astype(uint8)` truncates.
    let img: Vec<u8> = plane
        .iter()
        .map(|&v| (255.0f32 * v).clamp(0.0, 255.0) as u8)
        .collect();
    let mut vertical = lanczos_coefficients(h, height);
    let (img, cur_w) = if width != w {
        // The horizontal pass covers only the rows the vertical one reads.
        let (first, last) = match (height != h, vertical.first(), vertical.last()) {
            (true, Some((start, _)), Some((end, k))) => (*start, end + k.len()),
            _ => (0, h),
        };
        for (ymin, _) in &mut vertical {
            *ymin -= first;
        }
        let rows = &img[first * w..last * w];
        (
            horizontal_pass(rows, w, &lanczos_coefficients(w, width)),
            width,
        )
    } else {
        (img, w)
    };
    let img = if height != h {
        vertical_pass(&img, cur_w, &vertical)
    } else {
        img
    };
    img.into_iter().map(|v| v as f32 / 255.0).collect()
}

/// Pillow's horizontal 8-bit pass over `w`-wide rows.
fn horizontal_pass(img: &[u8], w: usize, coefficients: &[(usize, Vec<i64>)]) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = Vec::with_capacity(img.len() / w * coefficients.len());
    for row in img.chunks_exact(w) {
        for (xmin, k) in coefficients {
            let sum: i64 = k
                .iter()
                .zip(&row[*xmin..])
                .map(|(&kk, &v)| v as i64 * kk)
                .sum();
            out.push(clip8(half + sum));
        }
    }
    out
}

/// Pillow's vertical 8-bit pass over a `w`-wide image.
fn vertical_pass(img: &[u8], w: usize, coefficients: &[(usize, Vec<i64>)]) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = Vec::with_capacity(coefficients.len() * w);
    for (ymin, k) in coefficients {
        for x in 0..w {
            let sum: i64 = k
                .iter()
                .enumerate()
                .map(|(i, &kk)| img[(ymin + i) * w + x] as i64 * kk)
                .sum();
            out.push(clip8(half + sum));
        }
    }
    out
}

/// `t` `[B, C, H, W]` bilinearly resized to `h`×`w` (PyTorch's
/// `align_corners=False`, as ComfyUI resizes masks).
pub fn bilinear(t: &Tensor, h: usize, w: usize) -> CandleResult<Tensor> {
    common_upscale(t, w, h, UpscaleMethod::Bilinear, false).map_err(candle_core::Error::Msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch.nn.functional.interpolate([[1, 2], [3, 4]], size=4,
    /// mode="bilinear", align_corners=False), worked out by hand: sources at
    /// -0.25, 0.25, 0.75, 1.25 → clamped 0, 0.25, 0.75, 1.
    #[test]
    fn bilinear_matches_torch_align_corners_false() {
        let t = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
        let r = bilinear(&t, 4, 4).unwrap();
        let rows = r
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(rows[0], [1.0, 1.25, 1.75, 2.0]);
        assert_eq!(rows[1], [1.5, 1.75, 2.25, 2.5]);
        assert_eq!(rows[3], [3.0, 3.25, 3.75, 4.0]);
        assert!(bilinear(&t, 0, 3).is_err());
    }
}
