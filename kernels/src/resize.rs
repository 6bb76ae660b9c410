//! Resizing `[B, C, H, W]` tensors as torch's `interpolate(mode="bilinear",
//! align_corners=False)` does (half-pixel centres, edges clamped), which
//! ComfyUI uses for masks and latents.

use candle_core::{DType, Result, Tensor};

/// For each output index along an axis of `from` → `to` cells: the two
/// source indices and the weight of the second.
fn taps(from: usize, to: usize) -> Vec<(usize, usize, f32)> {
    let scale = from as f64 / to as f64;
    (0..to)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(from - 1);
            let hi = (lo + 1).min(from - 1);
            (lo, hi, (src - lo as f64) as f32)
        })
        .collect()
}

/// `t` `[B, C, H, W]` bilinearly resized to `h`×`w` (f32).
pub fn bilinear(t: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, c, ih, iw) = t.dims4()?;
    if ih == 0 || iw == 0 || h == 0 || w == 0 {
        candle_core::bail!("cannot resize a {ih}×{iw} tensor to {h}×{w}");
    }
    let src = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (ty, tx) = (taps(ih, h), taps(iw, w));
    let mut out = Vec::with_capacity(b * c * h * w);
    for plane in src.chunks(ih * iw) {
        for &(y0, y1, fy) in &ty {
            for &(x0, x1, fx) in &tx {
                let at = |y: usize, x: usize| plane[y * iw + x];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    Tensor::from_vec(out, (b, c, h, w), t.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// torch.nn.functional.interpolate([[1, 2], [3, 4]], size=4,
    /// mode="bilinear", align_corners=False), worked out by hand: sources at
    /// -0.25, 0.25, 0.75, 1.25 → clamped 0, 0.25, 0.75, 1.
    #[test]
    fn matches_torch_align_corners_false() {
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
        // Downscaling by 2 averages each 2×2 block's centre pair.
        let big = Tensor::arange(0f32, 16., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let small = bilinear(&big, 2, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(small, [2.5, 4.5, 10.5, 12.5]);
        assert!(bilinear(&t, 0, 3).is_err());
    }
}
