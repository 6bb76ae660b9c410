//! 3×3, stride-1 convolution by Winograd's minimal filtering (Lavin & Gray
//! 2016). F(m×m, 3×3) turns each m×m block of outputs into (m+2)²
//! multiplies per channel pair instead of 9m², as (m+2)² matrix products
//! over all tiles: F(2×2) needs 16 for 4 outputs (2.25× fewer), F(4×4) 36
//! for 16 (4× fewer).
//!
//! Why: the UNet's and the VAE's 3×3 convolutions are most of their
//! arithmetic. F(2×2)'s transforms only add, subtract and halve, so it is
//! as accurate as direct convolution in f32; F(4×4)'s constants (up to 8
//! and 1/24) cost about a digit (2e-5 relative at SD's widths, far inside
//! the half-precision error SD is usually run at), and it is 1.3–1.6×
//! faster from 64×64 outputs up, where [`conv3x3`] uses it.
//!
//! Layouts put each parallel task's data in one contiguous block (the
//! input transform per channel, the filter transform and the output per
//! output channel); `gemm` reads and writes them through strides. Images
//! are transformed in bands of tile rows, so the transformed inputs and
//! products stay within 64 MB however large the image.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Fewest output pixels for which Winograd pays: its filter transform
/// costs as much as convolving about four hundred pixels (measured at 1280
/// channels), so the UNet's 8×8 and 16×16 levels stay on im2col.
pub const MIN_PIXELS: usize = 1024;

/// Bytes of transformed inputs and products per band.
const BAND_BYTES: usize = 64 << 20;

/// One F(m×m, 3×3): its output tile side and its three transforms, as
/// entries so that loops over them unroll to the non-zero terms.
pub trait Scheme {
    /// Outputs per tile side.
    const M: usize;
    /// Inputs per tile side.
    const N: usize = Self::M + 2;
    /// Bᵀ, N×N: input tile → transformed tile.
    fn bt(i: usize, k: usize) -> f32;
    /// G, N×3: filter → transformed filter.
    fn g(i: usize, k: usize) -> f32;
    /// Aᵀ, M×N: product → output tile.
    fn at(i: usize, k: usize) -> f32;
}

/// F(2×2, 3×3), interpolation points 0, ±1, ∞.
pub struct F2;

impl Scheme for F2 {
    const M: usize = 2;

    #[inline(always)]
    fn bt(i: usize, k: usize) -> f32 {
        const BT: [[f32; 4]; 4] = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        BT[i][k]
    }

    #[inline(always)]
    fn g(i: usize, k: usize) -> f32 {
        const G: [[f32; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        G[i][k]
    }

    #[inline(always)]
    fn at(i: usize, k: usize) -> f32 {
        const AT: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        AT[i][k]
    }
}

/// F(4×4, 3×3), interpolation points 0, ±1, ±2, ∞.
pub struct F4;

impl Scheme for F4 {
    const M: usize = 4;

    #[inline(always)]
    fn bt(i: usize, k: usize) -> f32 {
        const BT: [[f32; 6]; 6] = [
            [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
            [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
            [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
            [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
            [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
            [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
        ];
        BT[i][k]
    }

    #[inline(always)]
    fn g(i: usize, k: usize) -> f32 {
        const G: [[f32; 3]; 6] = [
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        G[i][k]
    }

    #[inline(always)]
    fn at(i: usize, k: usize) -> f32 {
        const AT: [[f32; 6]; 4] = [
            [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
            [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
            [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
            [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
        ];
        AT[i][k]
    }
}

/// `dst = Σ_k coef(k)·src(k)` over k < n, row by row, skipping zero
/// coefficients: each term is one pass that vectorises, and the schemes'
/// matrices are sparse.
#[inline(always)]
fn mix<'a>(
    dst: &mut [f32],
    n: usize,
    coef: impl Fn(usize) -> f32,
    src: impl Fn(usize) -> &'a [f32],
) {
    let mut first = true;
    for k in 0..n {
        let c = coef(k);
        if c == 0.0 {
            continue;
        }
        let row = &src(k)[..dst.len()];
        if first {
            for (o, &v) in dst.iter_mut().zip(row) {
                *o = c * v;
            }
            first = false;
        } else {
            for (o, &v) in dst.iter_mut().zip(row) {
                *o += c * v;
            }
        }
    }
    if first {
        dst.fill(0.0);
    }
}

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
        let (oh, ow) = self.output();
        self.batch * oh * ow >= MIN_PIXELS
    }

    fn tiles<S: Scheme>(&self) -> (usize, usize) {
        let (oh, ow) = self.output();
        (oh.div_ceil(S::M), ow.div_ceil(S::M))
    }
}

/// A band: rows of tiles of one image.
type Band = std::ops::Range<usize>;

/// Output pixels per image from which F(4×4) is used: below, its larger
/// transforms cost what its products save (measured equal at 32×32), and
/// F(2×2) is the more accurate.
pub const F4_PIXELS: usize = 4096;

/// The convolution of `x` `[B, C, H, W]` by `weight` `[O, C, 3, 3]`:
/// `[B, O, H + 2p − 2, W + 2p − 2]`, without bias.
pub fn conv3x3(x: &[f32], weight: &[f32], d: Dims) -> Vec<f32> {
    let (oh, ow) = d.output();
    if oh * ow >= F4_PIXELS {
        in_bands::<F4>(x, weight, d, BAND_BYTES)
    } else {
        in_bands::<F2>(x, weight, d, BAND_BYTES)
    }
}

fn in_bands<S: Scheme>(x: &[f32], weight: &[f32], d: Dims, band_bytes: usize) -> Vec<f32> {
    let (th, tw) = d.tiles::<S>();
    let (oh, ow) = d.output();
    let u = filters::<S>(weight, d.in_c, d.out_c);
    let per_row = 4 * S::N * S::N * (d.in_c + d.out_c) * tw;
    let band_rows = (band_bytes / per_row.max(1)).clamp(1, th);
    let mut y = vec![0f32; d.batch * d.out_c * oh * ow];
    for (image, yb) in y.chunks_exact_mut(d.out_c * oh * ow).enumerate() {
        let xb = &x[image * d.in_c * d.h * d.w..][..d.in_c * d.h * d.w];
        for start in (0..th).step_by(band_rows) {
            let band = start..(start + band_rows).min(th);
            let v = inputs::<S>(xb, d, &band);
            let m = products::<S>(&u, &v, d, band.len() * tw);
            outputs::<S>(&m, d, &band, yb);
        }
    }
    y
}

/// `m[o][ξ][t] = Σ_c u[o][ξ][c] · v[c][ξ][t]`, one product per ξ.
fn products<S: Scheme>(u: &[f32], v: &[f32], d: Dims, tiles: usize) -> Vec<f32> {
    let xis = S::N * S::N;
    let mut m = vec![0f32; d.out_c * xis * tiles];
    let dst = m.as_mut_ptr() as usize;
    (0..xis).into_par_iter().for_each(|xi| {
        // SAFETY: product ξ writes only m[·][ξ][·], which no other product
        // touches, and every stride and extent stays inside u, v and m.
        unsafe {
            gemm(
                d.out_c,
                tiles,
                d.in_c,
                (dst as *mut f32).add(xi * tiles),
                1,
                (xis * tiles) as isize,
                false,
                u.as_ptr().add(xi * d.in_c),
                1,
                (xis * d.in_c) as isize,
                v.as_ptr().add(xi * tiles),
                1,
                (xis * tiles) as isize,
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

/// G g Gᵀ for every filter, as `u[o][ξ][c]`. Per output channel this is
/// one product, (G ⊗ G) `[N² × 9]` times the filters `[9 × C]` (read
/// through strides), so it runs at matrix-multiply speed.
fn filters<S: Scheme>(weight: &[f32], in_c: usize, out_c: usize) -> Vec<f32> {
    let xis = S::N * S::N;
    let kron: Vec<f32> = (0..xis * 9)
        .map(|e| {
            let (xi, k) = (e / 9, e % 9);
            S::g(xi / S::N, k / 3) * S::g(xi % S::N, k % 3)
        })
        .collect();
    let mut u = vec![0f32; out_c * xis * in_c];
    u.par_chunks_mut(xis * in_c)
        .zip(weight.par_chunks(in_c * 9))
        .for_each(|(uo, wo)| {
            // SAFETY: uo is N²×C, kron N²×9, and wo holds C filters of 9
            // taps, read as 9×C with strides (1, 9).
            unsafe {
                gemm(
                    xis,
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

/// Bᵀ d B for every N×N input tile of a band of image `x` `[C, H, W]`
/// (stride M, zero outside the image), as `v[c][ξ][t]`, tiles numbered
/// row by row. B is applied along every padded input row once, then Bᵀ
/// down each tile row, so both passes run along contiguous rows of tiles.
fn inputs<S: Scheme>(x: &[f32], d: Dims, band: &Band) -> Vec<f32> {
    let (m, n) = (S::M, S::N);
    let tw = d.tiles::<S>().1;
    let tiles = band.len() * tw;
    // The band's tiles read padded rows M·first .. M·last + N.
    let first = m * band.start;
    let rows = m * band.len() + 2;
    let mut v = vec![0f32; d.in_c * n * n * tiles];
    v.par_chunks_mut(n * n * tiles)
        .enumerate()
        .for_each(|(c, vc)| {
            let plane = &x[c * d.h * d.w..][..d.h * d.w];
            // The padded row split by column phase: phases[p][t] is column
            // M·t + p, so column M·t + k is phases[k mod M][t + k div M].
            let mut line = vec![0f32; m * (tw + 1)];
            let mut phases = vec![0f32; m * (tw + 1)];
            // ct[r][j][tx]: column transform j of padded row r at tile tx.
            let mut ct = vec![0f32; rows * n * tw];
            for (r, out) in ct.chunks_exact_mut(n * tw).enumerate() {
                line.fill(0.0);
                if let Some(y) = (first + r).checked_sub(d.padding).filter(|&y| y < d.h) {
                    line[d.padding..d.padding + d.w]
                        .copy_from_slice(&plane[y * d.w..(y + 1) * d.w]);
                }
                for (t, cols) in line.chunks_exact(m).enumerate() {
                    for (p, &value) in cols.iter().enumerate() {
                        phases[p * (tw + 1) + t] = value;
                    }
                }
                for (j, dst) in out.chunks_exact_mut(tw).enumerate() {
                    mix(
                        dst,
                        n,
                        |k| S::bt(j, k),
                        |k| &phases[(k % m) * (tw + 1) + k / m..][..tw],
                    );
                }
            }
            for ty in 0..band.len() {
                for j in 0..n {
                    for a in 0..n {
                        let dst = &mut vc[(n * a + j) * tiles + ty * tw..][..tw];
                        mix(
                            dst,
                            n,
                            |i| S::bt(a, i),
                            |i| &ct[((m * ty + i) * n + j) * tw..][..tw],
                        );
                    }
                }
            }
        });
    v
}

/// Aᵀ m A for every tile of a band, cropped into its rows of image `y`
/// `[O, oh, ow]`: Aᵀ down each tile row, then A along it.
fn outputs<S: Scheme>(mt: &[f32], d: Dims, band: &Band, y: &mut [f32]) {
    let (m, n) = (S::M, S::N);
    let tw = d.tiles::<S>().1;
    let tiles = band.len() * tw;
    let (oh, ow) = d.output();
    y.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(o, plane)| {
            let mo = &mt[o * n * n * tiles..][..n * n * tiles];
            // s[i][j][tx]: row transform i of column j at tile tx.
            let mut s = vec![0f32; m * n * tw];
            let mut out = vec![0f32; tw];
            let mut line = vec![0f32; m * tw];
            for (ty, tile_row) in band.clone().enumerate() {
                for (ij, dst) in s.chunks_exact_mut(tw).enumerate() {
                    let (i, j) = (ij / n, ij % n);
                    mix(
                        dst,
                        n,
                        |a| S::at(i, a),
                        |a| &mo[(n * a + j) * tiles + ty * tw..][..tw],
                    );
                }
                for (i, si) in s.chunks_exact(n * tw).enumerate() {
                    let yy = m * tile_row + i;
                    if yy >= oh {
                        continue;
                    }
                    for jj in 0..m {
                        mix(&mut out, n, |j| S::at(jj, j), |j| &si[j * tw..][..tw]);
                        for (t, &value) in out.iter().enumerate() {
                            line[m * t + jj] = value;
                        }
                    }
                    plane[yy * ow..(yy + 1) * ow].copy_from_slice(&line[..ow]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wavy_values;

    /// Values within ±1.5, the scale the absolute tolerances below are for.
    fn wavy(n: usize, phase: f64) -> Vec<f32> {
        wavy_values(n, phase).into_iter().map(|v| 0.5 * v).collect()
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
            for band_bytes in [BAND_BYTES, 1, 2 * 4 * 36 * (in_c + out_c) * w] {
                for (scheme, got) in [
                    ("F2", in_bands::<F2>(&x, &k, d, band_bytes)),
                    ("F4", in_bands::<F4>(&x, &k, d, band_bytes)),
                ] {
                    assert_eq!(got.len(), want.len(), "case {i}");
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (*g as f64 - w).abs())
                        .fold(0.0, f64::max);
                    let tolerance = if scheme == "F2" { 1e-5 } else { 5e-5 };
                    assert!(
                        err < tolerance,
                        "{scheme} case {i}, band {band_bytes}: {err}"
                    );
                }
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
