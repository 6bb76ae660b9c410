//! Upscaling in overlapping tiles, as ComfyUI does (512-pixel tiles
//! overlapping by 32), so an image of any size runs in the memory of one
//! tile: a ×4 RRDBNet holds about 3 GB of 64-channel feature maps at a 512²
//! tile, and would need 48 GB for a whole 2048² image.
//!
//! Tiles are laid out per axis every `tile − overlap` pixels, the last one
//! flush with the far edge (so every tile is whole, and the last may
//! overlap its neighbour by more). Where tiles overlap, their outputs are
//! cross-faded with linear ramps spanning the overlap: each tile's weight
//! falls towards its inner edges, where it saw the least context, and a
//! pixel only one tile covers is that tile's output exactly. The ramps are
//! normalised per axis to sum to one, so a pixel's weights over the tile
//! grid (a product of the two axes') sum to one too.

use candle_core::{Device, Result, Tensor};

/// Tile side and overlap, in input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub tile: usize,
    pub overlap: usize,
}

impl Default for Tiling {
    /// ComfyUI's `ImageUpscaleWithModel`: 512-pixel tiles, 32 of overlap.
    fn default() -> Self {
        Tiling {
            tile: 512,
            overlap: 32,
        }
    }
}

/// Tile starts along an axis of `len` pixels.
pub(crate) fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let step = tile.saturating_sub(overlap).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * step)
        .take_while(|&s| s + tile < len)
        .collect();
    starts.push(len - tile);
    starts.dedup();
    starts
}

/// One axis's tiles: where each starts in the output, and its blend weight
/// at each of its output positions.
struct Axis {
    starts: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

impl Axis {
    fn new(len: usize, tiling: Tiling, scale: usize) -> Axis {
        let starts = starts(len, tiling.tile, tiling.overlap);
        let side = tiling.tile.min(len);
        let n = side * scale;
        // Each ramp spans the whole overlap with the neighbour on that side
        // (the last tile, flush with the edge, may overlap by more).
        let overlap =
            |a: usize, b: usize| ((starts[a] + side).saturating_sub(starts[b]) * scale) as f32;
        let last = starts.len() - 1;
        let mut weights: Vec<Vec<f32>> = (0..starts.len())
            .map(|i| {
                let lo = if i > 0 { overlap(i - 1, i) } else { 0.0 };
                let hi = if i < last { overlap(i, i + 1) } else { 0.0 };
                (0..n)
                    .map(|p| {
                        let mut w = 1f32;
                        if lo > 0.0 {
                            w = w.min((p as f32 + 0.5) / lo);
                        }
                        if hi > 0.0 {
                            w = w.min(((n - p) as f32 - 0.5) / hi);
                        }
                        w
                    })
                    .collect()
            })
            .collect();
        let mut total = vec![0f32; len * scale];
        for (s, w) in starts.iter().zip(&weights) {
            for (t, w) in total[s * scale..].iter_mut().zip(w) {
                *t += w;
            }
        }
        for (s, w) in starts.iter().zip(&mut weights) {
            for (w, t) in w.iter_mut().zip(&total[s * scale..]) {
                *w /= *t;
            }
        }
        let starts = starts.into_iter().map(|s| s * scale).collect();
        Axis { starts, weights }
    }
}

/// `f` (an upscale by `scale`) applied to `x` `[B, C, H, W]` tile by tile,
/// one image at a time, the outputs blended. `progress(done, total)` is
/// told after each tile and stops the work by returning `false`.
pub(crate) fn tiled(
    x: &Tensor,
    tiling: Tiling,
    scale: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Tensor> {
    if tiling.tile == 0 || tiling.overlap * 2 >= tiling.tile {
        candle_core::bail!(
            "tiles of {} pixels cannot overlap by {} (the overlap must be under half a tile)",
            tiling.tile,
            tiling.overlap
        );
    }
    let (b, _, h, w) = x.dims4()?;
    if h == 0 || w == 0 {
        candle_core::bail!("cannot upscale an empty {w}×{h} image");
    }
    let (rows, cols) = (Axis::new(h, tiling, scale), Axis::new(w, tiling, scale));
    let (th, tw) = (tiling.tile.min(h), tiling.tile.min(w));
    let (oh, ow) = (h * scale, w * scale);
    let total = b * rows.starts.len() * cols.starts.len();
    let mut out: Vec<f32> = Vec::new();
    let mut channels = 0;
    let mut done = 0;
    for i in 0..b {
        let image = x.narrow(0, i, 1)?;
        for (&y0, wy) in rows.starts.iter().zip(&rows.weights) {
            for (&x0, wx) in cols.starts.iter().zip(&cols.weights) {
                let part = image.narrow(2, y0 / scale, th)?.narrow(3, x0 / scale, tw)?;
                let up = f(&part)?;
                let (_, c, ph, pw) = up.dims4()?;
                if (ph, pw) != (th * scale, tw * scale) {
                    candle_core::bail!("a {tw}×{th} tile came out {pw}×{ph}, not ×{scale}");
                }
                if out.is_empty() {
                    channels = c;
                    out = vec![0f32; b * c * oh * ow];
                } else if c != channels {
                    candle_core::bail!("tiles came out with {channels} and {c} channels");
                }
                let data: Vec<f32> = up.flatten_all()?.to_vec1()?;
                for ch in 0..c {
                    let plane = &mut out[(i * c + ch) * oh * ow..(i * c + ch + 1) * oh * ow];
                    let src = &data[ch * ph * pw..(ch + 1) * ph * pw];
                    for (py, line) in src.chunks_exact(pw).enumerate() {
                        let row = &mut plane[(y0 + py) * ow + x0..(y0 + py) * ow + x0 + pw];
                        let a = wy[py];
                        for ((o, &v), &b) in row.iter_mut().zip(line).zip(wx) {
                            *o += a * b * v;
                        }
                    }
                }
                done += 1;
                if !progress(done, total) {
                    candle_core::bail!("interrupted");
                }
            }
        }
    }
    Tensor::from_vec(out, (b, channels, oh, ow), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_each_axis_whole() {
        assert_eq!(starts(100, 512, 32), [0]);
        assert_eq!(starts(512, 512, 32), [0]);
        assert_eq!(starts(2048, 512, 32), [0, 480, 960, 1440, 1536]);
        for len in [33, 64, 65, 100, 1000] {
            let s = starts(len, 32, 8);
            assert_eq!(s[0], 0);
            assert_eq!(*s.last().unwrap() + 32, len);
            assert!(s.windows(2).all(|p| p[1] > p[0] && p[1] - p[0] <= 24));
        }
    }

    #[test]
    fn blend_weights_sum_to_one_and_fade_at_inner_edges() {
        for (len, tile, overlap, scale) in [(100, 32, 8, 1), (100, 40, 12, 4), (64, 64, 8, 2)] {
            let axis = Axis::new(len, Tiling { tile, overlap }, scale);
            let mut sum = vec![0f32; len * scale];
            for (s, w) in axis.starts.iter().zip(&axis.weights) {
                for (t, w) in sum[*s..].iter_mut().zip(w) {
                    *t += w;
                }
            }
            assert!(sum.iter().all(|s| (s - 1.0).abs() < 1e-6), "{sum:?}");
            if axis.starts.len() > 1 {
                // The first tile fades out towards its far edge.
                let w = &axis.weights[0];
                assert!(w[w.len() - 1] < 0.1 && w[0] == 1.0);
            }
        }
    }

    #[test]
    fn pointwise_functions_tile_exactly() {
        let x = weft_kernels::testing::wavy(&[2, 3, 37, 50], 0.3);
        let f = |t: &Tensor| crate::upscale::ops::upsample_nearest(&(t * 2.0)?, 3);
        let whole = f(&x).unwrap();
        let mut seen = Vec::new();
        let tiled = tiled(
            &x,
            Tiling {
                tile: 16,
                overlap: 4,
            },
            3,
            f,
            &mut |d, t| {
                seen.push((d, t));
                true
            },
        )
        .unwrap();
        assert!(weft_kernels::testing::max_diff(&whole, &tiled) < 1e-5);
        // Tiles: 3 rows × 4 columns, per image.
        assert_eq!(seen.len(), 24);
        assert_eq!(seen.last(), Some(&(24, 24)));
        let stop = super::tiled(
            &x,
            Tiling {
                tile: 16,
                overlap: 4,
            },
            3,
            f,
            &mut |d, _| d < 2,
        );
        assert!(stop.unwrap_err().to_string().contains("interrupted"));
        let bad = super::tiled(
            &x,
            Tiling {
                tile: 16,
                overlap: 8,
            },
            3,
            f,
            &mut |_, _| true,
        );
        assert!(bad.is_err());
    }
}
