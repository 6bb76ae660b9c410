//! Conditioning entries with options, evaluated as ComfyUI's samplers do
//! (`calc_cond_batch`): each entry active at σ is predicted on its area of
//! the latent and weighted by its strength, its mask, and an 8-cell ramp
//! at area edges inside the image; the weighted predictions are summed and
//! divided by the summed weights. Blending network outputs is blending
//! denoised estimates: both are affine in the output with the same
//! per-pixel coefficients.

use candle_core::{DType, Result, Tensor};

use crate::{Conditioning, Model, SizeCond};

/// ComfyUI's edge ramp, in latent cells.
const RAMP: usize = 8;

/// ComfyUI's starting count, so cells no entry covers divide to 0.
const EMPTY: f64 = 1e-37;

pub(crate) fn predict(
    model: &Model,
    x: &Tensor,
    sigma: f64,
    cond: &Conditioning,
) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    let mut out = x.zeros_like()?;
    let mut count = Tensor::full(EMPTY as f32, (b, 1, h, w), x.device())?;
    // Sizes an entry leaves out are the whole latent's, also on an area.
    let pixels = ((h * 8) as f64, (w * 8) as f64);
    for entry in cond.entries() {
        if !active(model, &entry, sigma) {
            continue;
        }
        let (ah, aw, top, left) = entry.area.map_or((h, w, 0, 0), |a| a.cells(h, w));
        if ah == 0 || aw == 0 {
            continue;
        }
        let mut weight = Tensor::full(
            entry.strength.unwrap_or(1.0) as f32,
            (1, 1, ah, aw),
            x.device(),
        )?;
        match &entry.mask {
            Some(mask) => {
                let mask = resize_mask(mask, h, w)?
                    .narrow(2, top, ah)?
                    .narrow(3, left, aw)?;
                weight = weight.broadcast_mul(&mask)?;
            }
            None if entry.area.is_some() => {
                weight = weight.broadcast_mul(&edge_ramp((ah, aw, top, left), (h, w), x)?)?;
            }
            None => {}
        }
        let sizes = if entry.sizes.is_empty() {
            vec![None]
        } else {
            entry.sizes.clone()
        };
        let one = Conditioning {
            area: None,
            strength: None,
            mask: None,
            timestep_range: None,
            sizes: sizes
                .into_iter()
                .map(|s| {
                    let s = s.unwrap_or_default();
                    Some(SizeCond {
                        original: s.original.or(Some(pixels)),
                        target: s.target.or(Some(pixels)),
                        ..s
                    })
                })
                .collect(),
            ..entry
        };
        let crop = x.narrow(2, top, ah)?.narrow(3, left, aw)?;
        let pred = model.forward(&crop, sigma, &one)?;
        let place = |t: Tensor| -> Result<Tensor> {
            t.pad_with_zeros(2, top, h - top - ah)?
                .pad_with_zeros(3, left, w - left - aw)
        };
        out = (out + place(pred.broadcast_mul(&weight)?)?)?;
        count = count.broadcast_add(&place(weight)?)?;
    }
    out.broadcast_div(&count)
}

/// Whether `entry`'s timestep range includes σ.
fn active(model: &Model, entry: &Conditioning, sigma: f64) -> bool {
    entry.timestep_range.is_none_or(|(start, end)| {
        let s = &model.sampling;
        sigma <= s.percent_to_sigma(start) && sigma >= s.percent_to_sigma(end)
    })
}

/// `mask` `[1 or B, H, W]` bilinearly resized to `[B, 1, h, w]`.
fn resize_mask(mask: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?;
    let m = match m.rank() {
        2 => m.unsqueeze(0)?,
        _ => m,
    }
    .unsqueeze(1)?;
    let (_, _, mh, mw) = m.dims4()?;
    if (mh, mw) == (h, w) {
        return Ok(m);
    }
    weft_kernels::resize::bilinear(&m, h, w)
}

/// ComfyUI's weights at an area's edges that lie inside the image: the
/// first and last 8 rows and columns ramp from 1/8 to 1 (multiplied where
/// they cross).
fn edge_ramp(
    (ah, aw, top, left): (usize, usize, usize, usize),
    (h, w): (usize, usize),
    like: &Tensor,
) -> Result<Tensor> {
    let ramp = |n: usize, starts_inside: bool, ends_inside: bool| -> Vec<f32> {
        let mut v = vec![1f32; n];
        for t in 0..RAMP {
            let f = (t + 1) as f32 / RAMP as f32;
            if starts_inside && t < n {
                v[t] *= f;
            }
            if ends_inside && t < n {
                v[n - 1 - t] *= f;
            }
        }
        v
    };
    let rows = ramp(ah, top != 0, top + ah < h);
    let cols = ramp(aw, left != 0, left + aw < w);
    let rows = Tensor::from_vec(rows, (1, 1, ah, 1), like.device())?;
    let cols = Tensor::from_vec(cols, (1, 1, 1, aw), like.device())?;
    rows.broadcast_mul(&cols)
}
