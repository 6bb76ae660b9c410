//! Elementwise kernels for the CPU forward passes: `exp` and `erf` as
//! polynomials that LLVM vectorises, compiled a second time for AVX2 and
//! picked at run time.
//!
//! Why: glibc's `expf` and libm's `erff` run one element at a time, and
//! were 11 % and 3 % of a 512² UNet step (softmax over the attention scores
//! and GEGLU's exact GELU). No fused multiply-add is used, so the AVX2 and
//! the portable builds give the same bits on every machine.

/// Runs `$body` compiled for AVX2 when the CPU has it, else portably.
macro_rules! with_avx2 {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has the feature `avx2` is compiled for.
                return unsafe { avx2(|| $body) };
            }
        }
        $body
    }};
}

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// e^x to about 2 ulp for x ≤ 88 (Cephes' `expf` polynomial); inputs below
/// −87 give e^−87, which is 0 next to any softmax maximum.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let n = (x * LOG2E + 0.5).floor();
    // ln 2 split in two, so n·ln 2 is subtracted without rounding error.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from the exponent bits: n + 127 is in [1, 255], so adding
    // 1.5·2²³ puts it in the low mantissa bits (no float-to-int
    // conversion, which would not vectorise).
    let biased = (n + (127.0 + 12_582_912.0)).to_bits();
    y * f32::from_bits(biased << 23)
}

/// erf(x) to 5e-7 (Abramowitz & Stegun 7.1.26: 1.5e-7, plus f32 rounding
/// where 1 − p·e^−x² cancels); ample for GELU, whose error is x/2 times it.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// The exact GELU, x·Φ(x), as PyTorch's default.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Lanes of the reductions: a fixed split, so sums do not depend on the
/// instruction set or the thread count.
const LANES: usize = 8;

/// Replaces `row` by e^(row − max row) and returns the sum: an
/// unnormalised softmax, to be divided by the sum later.
pub fn softmax_unnormalised(row: &mut [f32]) -> f32 {
    with_avx2!({
        let mut peak = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (p, &v) in peak.iter_mut().zip(c) {
                *p = if v > *p { v } else { *p };
            }
        }
        let tail_max = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let max = peak.iter().fold(tail_max, |a, &b| a.max(b));
        let mut sums = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (s, v) in sums.iter_mut().zip(c) {
                *v = exp(*v - max);
                *s += *v;
            }
        }
        let mut tail = 0f32;
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            tail += *v;
        }
        sums.iter().sum::<f32>() + tail
    })
}

/// GEGLU's gate: `out[i] = a[i]·gelu(g[i])`.
pub fn gated_gelu(out: &mut [f32], a: &[f32], g: &[f32]) {
    with_avx2!({
        for ((o, &a), &g) in out.iter_mut().zip(a).zip(g) {
            *o = a * gelu(g);
        }
    })
}

/// SiLU in place, x·σ(x).
pub fn silu(xs: &mut [f32]) {
    with_avx2!({
        for x in xs.iter_mut() {
            *x /= 1.0 + exp(-*x);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        for x in grid(-87.0, 88.0, 200_000) {
            let (got, want) = (exp(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, libm {want}");
        }
        assert!(exp(-1000.0) < 1e-37);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_and_gelu_match_f64_references() {
        // erf in f64 by its Maclaurin series (|x| ≤ 3) or 1 − erfc's
        // continued fraction, independent of the approximation under test.
        fn erf64(x: f64) -> f64 {
            if x.abs() < 3.0 {
                let (mut term, mut sum) = (x, x);
                for n in 1..200 {
                    term *= -x * x / n as f64;
                    sum += term / (2 * n + 1) as f64;
                }
                sum * 2.0 / std::f64::consts::PI.sqrt()
            } else {
                let a = x.abs();
                let mut f = a;
                for k in (1..60).rev() {
                    f = a + (k as f64 / 2.0) / f;
                }
                (1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())).copysign(x)
            }
        }
        for x in grid(-8.0, 8.0, 40_000) {
            let want = erf64(x as f64);
            assert!(
                (erf(x) as f64 - want).abs() < 5e-7,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
            let want_gelu = 0.5 * x as f64 * (1.0 + erf64(x as f64 / 2f64.sqrt()));
            assert!(
                (gelu(x) as f64 - want_gelu).abs() < 3e-7 * (1.0 + x.abs() as f64),
                "gelu({x})"
            );
        }
    }

    #[test]
    fn softmax_sums_and_keeps_the_maximum_at_one() {
        for len in [1, 7, 8, 9, 77, 4096] {
            let mut row: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 101) as f32 * 0.3 - 20.0)
                .collect();
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let want: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
            let sum = softmax_unnormalised(&mut row);
            let want_sum: f64 = want.iter().sum();
            assert!(
                ((sum as f64) - want_sum).abs() < 1e-5 * want_sum,
                "len {len}"
            );
            for (g, w) in row.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6 * w.max(1e-30) + 1e-30);
            }
        }
    }

    #[test]
    fn silu_and_gated_gelu_match_their_formulas() {
        let xs: Vec<f32> = grid(-30.0, 30.0, 999).collect();
        let mut s = xs.clone();
        silu(&mut s);
        for (&x, &y) in xs.iter().zip(&s) {
            let want = x as f64 / (1.0 + (-x as f64).exp());
            assert!(
                (y as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                "silu({x})"
            );
        }
        let a: Vec<f32> = xs.iter().map(|x| x * 0.5 + 1.0).collect();
        let mut out = vec![0f32; xs.len()];
        gated_gelu(&mut out, &a, &xs);
        for ((&o, &a), &g) in out.iter().zip(&a).zip(&xs) {
            assert_eq!(o, a * gelu(g));
        }
    }
}
