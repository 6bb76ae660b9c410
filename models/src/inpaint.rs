//! Preparing an image and mask for inpainting, as ComfyUI's
//! `VAEEncodeForInpaint` and `InpaintModelConditioning` do: the image
//! cropped to a multiple of the VAE's factor, the mask resized to it, the
//! masked pixels set to grey, and the noise mask grown so seams fall in
//! the repainted part.

use candle_core::{DType, Result, Tensor};

/// A conditioning's image input `t` `[B or 1, C, H', W']` for `batch`
/// latents, resized bilinearly to `h`×`w` where it differs (the image
/// latents inpainting and Flux Fill/Control models take beside the latent).
pub fn fit_to(t: Tensor, batch: usize, h: usize, w: usize) -> Result<Tensor> {
    let t = if t.dims()[2..] == [h, w] {
        t
    } else {
        weft_kernels::resize::bilinear(&t, h, w)?
    };
    match t.dim(0)? {
        n if n == batch => Ok(t),
        1 => t.repeat((batch, 1, 1, 1)),
        n => candle_core::bail!("an image conditioning of {n} items for {batch} latents"),
    }
}

/// A conditioning's mask `[B, H, W]` (or `[H, W]`) as `[B, 1, H, W]` in `dtype`.
pub fn mask_planes(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let m = mask.to_dtype(dtype)?;
    let m = if m.rank() == 2 { m.unsqueeze(0)? } else { m };
    m.unsqueeze(1)
}

/// An image `[B, C, H, W]` in [0, 1] with its mask, ready to encode.
pub struct Prepared {
    /// The image cropped to a multiple of `factor`.
    pub pixels: Tensor,
    /// The same, masked pixels (mask ≥ 0.5) set to 0.5.
    pub greyed: Tensor,
    /// The mask `[B, 1, H', W']` at the cropped size, in [0, 1].
    pub mask: Tensor,
}

/// Crops `pixels` to a multiple of `factor` (centred, as ComfyUI), resizes
/// `mask` `[B or 1, H, W]` to it bilinearly and greys the masked pixels.
pub fn prepare(pixels: &Tensor, mask: &Tensor, factor: usize) -> Result<Prepared> {
    let (_, _, h, w) = pixels.dims4()?;
    let (ch, cw) = (h / factor * factor, w / factor * factor);
    if ch == 0 || cw == 0 {
        candle_core::bail!("the image is {w}×{h}, smaller than the VAE's factor {factor}");
    }
    let m = mask.to_dtype(DType::F32)?;
    let m = match m.rank() {
        2 => m.unsqueeze(0)?.unsqueeze(1)?,
        3 => m.unsqueeze(1)?,
        _ => candle_core::bail!("a mask is [B, H, W], got shape {:?}", m.dims()),
    };
    let m = weft_kernels::resize::bilinear(&m, h, w)?;
    let (top, left) = ((h % factor) / 2, (w % factor) / 2);
    let crop = |t: &Tensor| t.narrow(2, top, ch)?.narrow(3, left, cw);
    let pixels = crop(&pixels.to_dtype(DType::F32)?)?;
    let mask = crop(&m)?;
    let keep = mask.round()?.affine(-1.0, 1.0)?;
    let greyed = (pixels.affine(1.0, -0.5)?.broadcast_mul(&keep)? + 0.5)?;
    Ok(Prepared {
        pixels,
        greyed,
        mask,
    })
}

/// The rounded mask grown by a `k`×`k` square (ComfyUI's `grow_mask_by`:
/// a convolution of ones with ⌈(k−1)/2⌉ padding, clamped to 1, keeping
/// the top-left `H`×`W`).
pub fn grow(mask: &Tensor, k: usize) -> Result<Tensor> {
    let m = mask.round()?;
    if k == 0 {
        return Ok(m);
    }
    let (b, c, h, w) = m.dims4()?;
    let pad = (k - 1).div_ceil(2);
    let v = m.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; v.len()];
    for plane in 0..b * c {
        let src = &v[plane * h * w..(plane + 1) * h * w];
        let dst = &mut out[plane * h * w..(plane + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                // Output (y, x) sums inputs (y − pad + i, x − pad + j).
                let hit = (0..k).any(|i| {
                    let yy = y as isize - pad as isize + i as isize;
                    (0..h as isize).contains(&yy)
                        && (0..k).any(|j| {
                            let xx = x as isize - pad as isize + j as isize;
                            (0..w as isize).contains(&xx)
                                && src[yy as usize * w + xx as usize] > 0.0
                        })
                });
                dst[y * w + x] = if hit { 1.0 } else { 0.0 };
            }
        }
    }
    Tensor::from_vec(out, (b, c, h, w), m.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn grow_matches_comfyuis_padded_convolution() {
        // One set cell at (3, 3) of 8×8; k = 3 pads 1: rows/cols 2..=4 set.
        let mut v = vec![0f32; 64];
        v[3 * 8 + 3] = 1.0;
        let m = Tensor::from_vec(v, (1, 1, 8, 8), &Device::Cpu).unwrap();
        let g = grow(&m, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let set: Vec<usize> = (0..64).filter(|&i| g[i] == 1.0).collect();
        assert_eq!(set, [18, 19, 20, 26, 27, 28, 34, 35, 36]);
        // k = 6 pads 3 (⌈5/2⌉): output row y sees input rows y−3..=y+2,
        // so row 3 reaches rows 1..=6 (ComfyUI's asymmetric growth).
        let g = grow(&m, 6)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let rows: Vec<usize> = (0..8).filter(|&y| g[y * 8 + 3] == 1.0).collect();
        assert_eq!(rows, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            grow(&m, 0)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            1.0
        );
    }

    #[test]
    fn prepare_crops_centred_and_greys_the_mask() {
        let pixels = Tensor::ones((1, 3, 10, 9), DType::F32, &Device::Cpu).unwrap();
        let mut mv = vec![0f32; 90];
        mv[5 * 9 + 4] = 1.0; // centre cell
        let mask = Tensor::from_vec(mv, (1, 10, 9), &Device::Cpu).unwrap();
        let p = prepare(&pixels, &mask, 8).unwrap();
        assert_eq!(p.pixels.dims(), [1, 3, 8, 8]);
        assert_eq!(p.mask.dims(), [1, 1, 8, 8]);
        // Crop offsets (1, 0): the masked cell lands at (4, 4).
        let g = p
            .greyed
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(g[4][4], 0.5);
        assert_eq!(g[0][0], 1.0);
        assert!(prepare(&pixels, &mask, 16).is_err());
    }
}
