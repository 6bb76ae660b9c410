//! 3×3, stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray 2016): each 2×2 block of outputs costs 16 multiplies per
//! channel pair instead of 36, as 16 matrix products over all tiles.
//!
//! Why: the UNet's and the VAE's 3×3 convolutions are most of their
//! arithmetic. F(2×2, 3×3) only adds, subtracts and halves in its
//! transforms, so it stays as accurate as direct convolution in f32; the
//! larger F(4×4, 3×3) would save more but loses digits.
//!
//! Layouts put each parallel task's data in one contiguous block (the
//! input transform per channel, the filter transform and the output per
//! output channel); `gemm` reads and writes them through strides. Images
//! are transformed in bands of tile rows, so the transformed inputs and
//! products stay within [`BAND_BYTES`] however large the image.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Transformed positions per tile.
const XI: usize = 16;

/// Fewest output tiles for which Winograd pays: its filter transform costs
/// as much as the convolution of about a hundred tiles (measured at 1280
/// channels), so the UNet's 8×8 and 16×16 levels stay on im2col.
pub const MIN_TILES: usize = 256;

/// Bytes of transformed inputs and products per band.
const BAND_BYTES: usize = 64 << 20;

/// Shapes of one call: batch, channels in and out, input and output sides.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub h: usize,
    pub w: usize,
    pub padding: usize,
}

impl Dims {
    /// Output height and width (the caller has checked they are positive).
    pub fn output(&self) -> (usize, usize) {
        (self.h + 2 * self.padding - 2, self.w + 2 * self.padding - 2)
    }

    /// Whether this call is worth the transforms.
    pub fn pays(&self) -> bool {
        let (th, tw) = self.tiles();
        self.batch * th * tw >= MIN_TILES
    }

    fn tiles(&self) -> (usize, usize) {
        let (oh, ow) = self.output();
        (oh.div_ceil(2), ow.div_ceil(2))
    }
}

/// A band: rows of tiles of one image.
type Band = std::ops::Range<usize>;

/// The convolution of `x` `[B, C, H, W]` by `weight` `[O, C, 3, 3]`:
/// `[B, O, H + 2p − 2, W + 2p − 2]`, without bias.
pub fn conv3x3(x: &[f32], weight: &[f32], d: Dims) -> Vec<f32> {
    in_bands(x, weight, d, BAND_BYTES)
}

fn in_bands(x: &[f32], weight: &[f32], d: Dims, band_bytes: usize) -> Vec<f32> {
    let (th, tw) = d.tiles();
    let (oh, ow) = d.output();
    let u = filters(weight, d.in_c, d.out_c);
    let per_row = 4 * XI * (d.in_c + d.out_c) * tw;
    let band_rows = (band_bytes / per_row.max(1)).clamp(1, th);
    let mut y = vec![0f32; d.batch * d.out_c * oh * ow];
    for (image, yb) in y.chunks_exact_mut(d.out_c * oh * ow).enumerate() {
        let xb = &x[image * d.in_c * d.h * d.w..][..d.in_c * d.h * d.w];
        for start in (0..th).step_by(band_rows) {
            let band = start..(start + band_rows).min(th);
            let v = inputs(xb, d, &band);
            let m = products(&u, &v, d, band.len() * tw);
            outputs(&m, d, &band, yb);
        }
    }
    y
}

/// `m[o][ξ][t] = Σ_c u[o][ξ][c] · v[c][ξ][t]`, one product per ξ.
fn products(u: &[f32], v: &[f32], d: Dims, tiles: usize) -> Vec<f32> {
    let mut m = vec![0f32; d.out_c * XI * tiles];
    let dst = m.as_mut_ptr() as usize;
    (0..XI).into_par_iter().for_each(|xi| {
        // SAFETY: product ξ writes only m[·][ξ][·], which no other product
        // touches, and every stride and extent stays inside u, v and m.
        unsafe {
            gemm(
                d.out_c,
                tiles,
                d.in_c,
                (dst as *mut f32).add(xi * tiles),
                1,
                (XI * tiles) as isize,
                false,
                u.as_ptr().add(xi * d.in_c),
                1,
                (XI * d.in_c) as isize,
                v.as_ptr().add(xi * tiles),
                1,
                (XI * tiles) as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    });
    m
}

/// G, the filter transform's matrix.
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// G g Gᵀ for every filter, as `u[o][ξ][c]`. Per output channel this is
/// one product, (G ⊗ G) `[16 × 9]` times the filters `[9 × C]` (read
/// through strides), so it runs at matrix-multiply speed.
fn filters(weight: &[f32], in_c: usize, out_c: usize) -> Vec<f32> {
    let mut kron = [0f32; XI * 9];
    for (xi, row) in kron.chunks_exact_mut(9).enumerate() {
        for (k, value) in row.iter_mut().enumerate() {
            *value = G[xi / 4][k / 3] * G[xi % 4][k % 3];
        }
    }
    let mut u = vec![0f32; out_c * XI * in_c];
    u.par_chunks_mut(XI * in_c)
        .zip(weight.par_chunks(in_c * 9))
        .for_each(|(uo, wo)| {
            // SAFETY: uo is 16×C, kron 16×9, and wo holds C filters of 9
            // taps, read as 9×C with strides (1, 9).
            unsafe {
                gemm(
                    XI,
                    in_c,
                    9,
                    uo.as_mut_ptr(),
                    1,
                    in_c as isize,
                    false,
                    kron.as_ptr(),
                    1,
                    9,
                    wo.as_ptr(),
                    9,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
    u
}

/// Bᵀ d B for every 4×4 input tile of a band of image `x` `[C, H, W]`
/// (stride 2, zero outside the image), as `v[c][ξ][t]`, tiles numbered row
/// by row. B is applied to every padded input row once, then Bᵀ down each
/// tile row, so both passes run along contiguous rows of tiles.
fn inputs(x: &[f32], d: Dims, band: &Band) -> Vec<f32> {
    let tw = d.tiles().1;
    let tiles = band.len() * tw;
    // The band's tiles read padded rows 2·first .. 2·last + 4.
    let first = 2 * band.start;
    let rows = 2 * band.len() + 2;
    let cols = 2 * tw + 2;
    let mut v = vec![0f32; d.in_c * XI * tiles];
    v.par_chunks_mut(XI * tiles)
        .enumerate()
        .for_each(|(c, vc)| {
            let plane = &x[c * d.h * d.w..][..d.h * d.w];
            let mut line = vec![0f32; cols];
            // ct[r][j][tx]: column transform j of padded row r at tile tx.
            let mut ct = vec![0f32; rows * 4 * tw];
            for (r, out) in ct.chunks_exact_mut(4 * tw).enumerate() {
                line.fill(0.0);
                if let Some(y) = (first + r).checked_sub(d.padding).filter(|&y| y < d.h) {
                    line[d.padding..d.padding + d.w]
                        .copy_from_slice(&plane[y * d.w..(y + 1) * d.w]);
                }
                let (o0, rest) = out.split_at_mut(tw);
                let (o1, rest) = rest.split_at_mut(tw);
                let (o2, o3) = rest.split_at_mut(tw);
                for (tx, q) in line.windows(4).step_by(2).enumerate() {
                    o0[tx] = q[0] - q[2];
                    o1[tx] = q[1] + q[2];
                    o2[tx] = q[2] - q[1];
                    o3[tx] = q[1] - q[3];
                }
            }
            for ty in 0..band.len() {
                for j in 0..4 {
                    let row = |i: usize| &ct[((2 * ty + i) * 4 + j) * tw..][..tw];
                    let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
                    let mut put = |a: usize, l: &[f32], r: &[f32], sign: f32| {
                        let dst = &mut vc[(4 * a + j) * tiles + ty * tw..][..tw];
                        for ((o, &l), &r) in dst.iter_mut().zip(l).zip(r) {
                            *o = l + sign * r;
                        }
                    };
                    put(0, d0, d2, -1.0);
                    put(1, d1, d2, 1.0);
                    put(2, d2, d1, -1.0);
                    put(3, d1, d3, -1.0);
                }
            }
        });
    v
}

/// Aᵀ m A for every tile of a band, cropped into its rows of image `y`
/// `[O, oh, ow]`: Aᵀ down each tile row, then A along it.
fn outputs(m: &[f32], d: Dims, band: &Band, y: &mut [f32]) {
    let tw = d.tiles().1;
    let tiles = band.len() * tw;
    let (oh, ow) = d.output();
    y.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(o, plane)| {
            let mo = &m[o * XI * tiles..][..XI * tiles];
            // s[i][j][tx]: row transform i of column j at tile tx.
            let mut s = vec![0f32; 2 * 4 * tw];
            let mut line = vec![0f32; 2 * tw];
            for (ty, tile_row) in band.clone().enumerate() {
                let at = |xi: usize| &mo[xi * tiles + ty * tw..][..tw];
                let (s0, s1) = s.split_at_mut(4 * tw);
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                    let (s0, s1) = (&mut s0[j * tw..][..tw], &mut s1[j * tw..][..tw]);
                    for t in 0..tw {
                        s0[t] = m0[t] + m1[t] + m2[t];
                        s1[t] = m1[t] - m2[t] - m3[t];
                    }
                }
                for (i, si) in s.chunks_exact(4 * tw).enumerate() {
                    let yy = 2 * tile_row + i;
                    if yy >= oh {
                        continue;
                    }
                    let col = |j: usize| &si[j * tw..][..tw];
                    let (c0, c1, c2, c3) = (col(0), col(1), col(2), col(3));
                    for (t, pair) in line.chunks_exact_mut(2).enumerate() {
                        pair[0] = c0[t] + c1[t] + c2[t];
                        pair[1] = c1[t] - c2[t] - c3[t];
                    }
                    plane[yy * ow..(yy + 1) * ow].copy_from_slice(&line[..ow]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wavy(n: usize, phase: f64) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f64 * 0.37 + phase).sin() + (i as f64 * 0.011).cos() * 0.5) as f32)
            .collect()
    }

    /// Cross-correlation by its definition, in f64.
    fn direct(x: &[f32], w: &[f32], d: Dims) -> Vec<f64> {
        let (oh, ow) = d.output();
        let mut y = vec![0f64; d.batch * d.out_c * oh * ow];
        for b in 0..d.batch {
            for o in 0..d.out_c {
                for (yy, xx) in (0..oh).flat_map(|yy| (0..ow).map(move |xx| (yy, xx))) {
                    let mut acc = 0f64;
                    for c in 0..d.in_c {
                        for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                            let iy = (yy + ky) as isize - d.padding as isize;
                            let ix = (xx + kx) as isize - d.padding as isize;
                            if iy < 0 || ix < 0 || iy >= d.h as isize || ix >= d.w as isize {
                                continue;
                            }
                            acc += x[((b * d.in_c + c) * d.h + iy as usize) * d.w + ix as usize]
                                as f64
                                * w[((o * d.in_c + c) * 3 + ky) * 3 + kx] as f64;
                        }
                    }
                    y[((b * d.out_c + o) * oh + yy) * ow + xx] = acc;
                }
            }
        }
        y
    }

    #[test]
    fn matches_direct_convolution_for_every_side_and_padding() {
        for (i, &(batch, in_c, out_c, h, w, padding)) in [
            (1, 1, 1, 3, 3, 0),
            (2, 3, 5, 9, 7, 1),
            (1, 4, 2, 1, 1, 1),
            (2, 2, 3, 6, 4, 0),
            (1, 3, 2, 5, 5, 2),
            (3, 17, 9, 8, 11, 1),
        ]
        .iter()
        .enumerate()
        {
            let d = Dims {
                batch,
                in_c,
                out_c,
                h,
                w,
                padding,
            };
            let x = wavy(batch * in_c * h * w, i as f64);
            let k = wavy(out_c * in_c * 9, 10.0 + i as f64);
            let want = direct(&x, &k, d);
            // Whole images, and bands of one and two tile rows.
            for band_bytes in [BAND_BYTES, 1, 2 * 4 * XI * (in_c + out_c) * w.div_ceil(2)] {
                let got = in_bands(&x, &k, d, band_bytes);
                assert_eq!(got.len(), want.len(), "case {i}");
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (*g as f64 - w).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-5, "case {i}, band {band_bytes}: {err}");
            }
        }
    }

    #[test]
    fn small_calls_stay_on_im2col() {
        let d = |batch, side| Dims {
            batch,
            in_c: 1,
            out_c: 1,
            h: side,
            w: side,
            padding: 1,
        };
        assert!(!d(2, 16).pays());
        assert!(d(2, 32).pays());
        assert!(d(1, 64).pays());
    }
}
