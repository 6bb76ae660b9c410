//! Each adapter kind against its formula, written out as loops.

use super::{patched, rand, scalar, values};
use crate::lora::patch::decompose;

const TOL: f32 = 1e-5;

fn close(got: &candle_core::Tensor, want: &[f32]) {
    let diff = super::max_diff(got, want);
    assert!(diff < TOL, "max abs difference {diff}");
}

/// `Σ_m a[i, m] b[m, j]` for row-major `a [n, k]`, `b [k, m]`.
fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            out[i * m + j] = (0..k).map(|x| a[i * k + x] * b[x * m + j]).sum();
        }
    }
    out
}

/// `w + f·d`, elementwise.
fn plus(w: &[f32], d: &[f32], f: f32) -> Vec<f32> {
    w.iter().zip(d).map(|(w, d)| w + f * d).collect()
}

#[test]
fn lora_linear_with_alpha_and_strength() {
    let (o, r, i) = (6, 3, 5);
    let (up, down, w) = (rand(&[o, r], 1), rand(&[r, i], 2), rand(&[o, i], 3));
    let delta = matmul(&values(&up), &values(&down), o, r, i);
    let alpha = scalar(1.5);
    for strength in [1.0, 0.5, -0.75] {
        let got = patched(
            &[
                ("lora_up.weight", &up),
                ("lora_down.weight", &down),
                ("alpha", &alpha),
            ],
            &w,
            strength,
        )
        .unwrap();
        close(
            &got,
            &plus(&values(&w), &delta, strength as f32 * 1.5 / 3.0),
        );
    }
    // Without alpha the scale is 1.
    let got = patched(
        &[("lora_up.weight", &up), ("lora_down.weight", &down)],
        &w,
        1.0,
    )
    .unwrap();
    close(&got, &plus(&values(&w), &delta, 1.0));
}

#[test]
fn locon_conv_and_linear_on_a_1x1_conv() {
    let (o, r, i, k) = (4, 2, 3, 3);
    let (up, down) = (rand(&[o, r, 1, 1], 4), rand(&[r, i, k, k], 5));
    let w = rand(&[o, i, k, k], 6);
    let (u, d) = (values(&up), values(&down));
    let mut delta = vec![0.0; o * i * k * k];
    for a in 0..o {
        for b in 0..i {
            for y in 0..k * k {
                delta[(a * i + b) * k * k + y] = (0..r)
                    .map(|m| u[a * r + m] * d[(m * i + b) * k * k + y])
                    .sum();
            }
        }
    }
    let got = patched(
        &[("lora_up.weight", &up), ("lora_down.weight", &down)],
        &w,
        1.0,
    )
    .unwrap();
    assert_eq!(got.dims(), &[o, i, k, k]);
    close(&got, &plus(&values(&w), &delta, 1.0));

    // A linear LoRA on SD 1.x's 1×1 proj_in conv keeps the conv's shape.
    let (up, down, w) = (rand(&[o, r], 7), rand(&[r, i], 8), rand(&[o, i, 1, 1], 9));
    let got = patched(
        &[("lora_up.weight", &up), ("lora_down.weight", &down)],
        &w,
        1.0,
    )
    .unwrap();
    assert_eq!(got.dims(), &[o, i, 1, 1]);
    close(
        &got,
        &plus(
            &values(&w),
            &matmul(&values(&up), &values(&down), o, r, i),
            1.0,
        ),
    );
}

#[test]
fn locon_tucker_mid() {
    let (o, r, i, k) = (4, 2, 3, 3);
    let up = rand(&[o, r, 1, 1], 10);
    let mid = rand(&[r, r, k, k], 11);
    let down = rand(&[r, i, 1, 1], 12);
    let w = rand(&[o, i, k, k], 13);
    let (u, t, d) = (values(&up), values(&mid), values(&down));
    let mut delta = vec![0.0; o * i * k * k];
    for a in 0..o {
        for b in 0..i {
            for y in 0..k * k {
                let mut sum = 0.0;
                for m in 0..r {
                    for n in 0..r {
                        sum += u[a * r + m] * t[(m * r + n) * k * k + y] * d[n * i + b];
                    }
                }
                delta[(a * i + b) * k * k + y] = sum;
            }
        }
    }
    let alpha = scalar(1.0);
    let parts = [
        ("lora_up.weight", &up),
        ("lora_mid.weight", &mid),
        ("lora_down.weight", &down),
        ("alpha", &alpha),
    ];
    let got = patched(&parts, &w, 1.0).unwrap();
    close(&got, &plus(&values(&w), &delta, 0.5));
}

#[test]
fn loha_plain_and_cp() {
    let (o, r, i) = (5, 2, 4);
    let (w1a, w1b, w2a, w2b) = (
        rand(&[o, r], 14),
        rand(&[r, i], 15),
        rand(&[o, r], 16),
        rand(&[r, i], 17),
    );
    let w = rand(&[o, i], 18);
    let m1 = matmul(&values(&w1a), &values(&w1b), o, r, i);
    let m2 = matmul(&values(&w2a), &values(&w2b), o, r, i);
    let delta: Vec<f32> = m1.iter().zip(&m2).map(|(a, b)| a * b).collect();
    let alpha = scalar(4.0);
    let parts = [
        ("hada_w1_a", &w1a),
        ("hada_w1_b", &w1b),
        ("hada_w2_a", &w2a),
        ("hada_w2_b", &w2b),
        ("alpha", &alpha),
    ];
    close(
        &patched(&parts, &w, 1.0).unwrap(),
        &plus(&values(&w), &delta, 2.0),
    );

    // CP: rebuild[p, q, y] = Σ_ij t[i, j, y] · b[j, q] · a[i, p], a stored [r, out].
    let k = 3;
    let (a1, b1, t1) = (
        rand(&[r, o], 19),
        rand(&[r, i], 20),
        rand(&[r, r, k, k], 21),
    );
    let (a2, b2, t2) = (
        rand(&[r, o], 22),
        rand(&[r, i], 23),
        rand(&[r, r, k, k], 24),
    );
    let w = rand(&[o, i, k, k], 25);
    let rebuild = |a: &[f32], b: &[f32], t: &[f32]| {
        let mut out = vec![0.0; o * i * k * k];
        for p in 0..o {
            for q in 0..i {
                for y in 0..k * k {
                    let mut sum = 0.0;
                    for x in 0..r {
                        for z in 0..r {
                            sum += t[(x * r + z) * k * k + y] * b[z * i + q] * a[x * o + p];
                        }
                    }
                    out[(p * i + q) * k * k + y] = sum;
                }
            }
        }
        out
    };
    let m1 = rebuild(&values(&a1), &values(&b1), &values(&t1));
    let m2 = rebuild(&values(&a2), &values(&b2), &values(&t2));
    let delta: Vec<f32> = m1.iter().zip(&m2).map(|(a, b)| a * b).collect();
    let parts = [
        ("hada_w1_a", &a1),
        ("hada_w1_b", &b1),
        ("hada_t1", &t1),
        ("hada_w2_a", &a2),
        ("hada_w2_b", &b2),
        ("hada_t2", &t2),
    ];
    close(
        &patched(&parts, &w, 0.5).unwrap(),
        &plus(&values(&w), &delta, 0.5),
    );
}

/// `kron(w1 [a, b], w2 [c, d, s])[i·c + p, j·d + q, y] = w1[i, j] · w2[p, q, y]`.
fn kron(
    w1: &[f32],
    w2: &[f32],
    (a, b): (usize, usize),
    (c, d, s): (usize, usize, usize),
) -> Vec<f32> {
    let mut out = vec![0.0; a * c * b * d * s];
    for i in 0..a {
        for j in 0..b {
            for p in 0..c {
                for q in 0..d {
                    for y in 0..s {
                        let row = i * c + p;
                        let col = j * d + q;
                        out[(row * b * d + col) * s + y] = w1[i * b + j] * w2[(p * d + q) * s + y];
                    }
                }
            }
        }
    }
    out
}

#[test]
fn lokr_full_and_decomposed_factors() {
    let (a, b, c, d, r) = (2, 3, 4, 2, 2);
    let w = rand(&[a * c, b * d], 26);
    let alpha = scalar(3.0);

    // w1 whole, w2 decomposed: scaled by alpha / rank of w2.
    let (w1, w2a, w2b) = (rand(&[a, b], 27), rand(&[c, r], 28), rand(&[r, d], 29));
    let w2 = matmul(&values(&w2a), &values(&w2b), c, r, d);
    let delta = kron(&values(&w1), &w2, (a, b), (c, d, 1));
    let parts = [
        ("lokr_w1", &w1),
        ("lokr_w2_a", &w2a),
        ("lokr_w2_b", &w2b),
        ("alpha", &alpha),
    ];
    close(
        &patched(&parts, &w, 1.0).unwrap(),
        &plus(&values(&w), &delta, 1.5),
    );

    // Both whole: alpha is not used (ComfyUI's rule).
    let w2 = rand(&[c, d], 30);
    let delta = kron(&values(&w1), &values(&w2), (a, b), (c, d, 1));
    let parts = [("lokr_w1", &w1), ("lokr_w2", &w2), ("alpha", &alpha)];
    close(
        &patched(&parts, &w, 0.5).unwrap(),
        &plus(&values(&w), &delta, 0.5),
    );

    // w1 decomposed, w2 a whole conv kernel: alpha / rank of w1.
    let k = 3;
    let (w1a, w1b) = (rand(&[a, r], 31), rand(&[r, b], 32));
    let w2 = rand(&[c, d, k, k], 33);
    let w = rand(&[a * c, b * d, k, k], 34);
    let w1 = matmul(&values(&w1a), &values(&w1b), a, r, b);
    let delta = kron(&w1, &values(&w2), (a, b), (c, d, k * k));
    let parts = [
        ("lokr_w1_a", &w1a),
        ("lokr_w1_b", &w1b),
        ("lokr_w2", &w2),
        ("alpha", &alpha),
    ];
    close(
        &patched(&parts, &w, 1.0).unwrap(),
        &plus(&values(&w), &delta, 1.5),
    );

    // Both decomposed, of ranks 1 and 3: w2's rank divides alpha.
    let (w1a, w1b) = (rand(&[a, 1], 35), rand(&[1, b], 36));
    let (w2a, w2b) = (rand(&[c, 3], 37), rand(&[3, d], 38));
    let w = rand(&[a * c, b * d], 39);
    let w1 = matmul(&values(&w1a), &values(&w1b), a, 1, b);
    let w2 = matmul(&values(&w2a), &values(&w2b), c, 3, d);
    let delta = kron(&w1, &w2, (a, b), (c, d, 1));
    let parts = [
        ("lokr_w1_a", &w1a),
        ("lokr_w1_b", &w1b),
        ("lokr_w2_a", &w2a),
        ("lokr_w2_b", &w2b),
        ("alpha", &alpha),
    ];
    close(
        &patched(&parts, &w, 1.0).unwrap(),
        &plus(&values(&w), &delta, 1.0),
    );
}

#[test]
fn full_diff() {
    let w = rand(&[3, 4], 35);
    let diff = rand(&[3, 4], 36);
    close(
        &patched(&[("diff", &diff)], &w, 0.25).unwrap(),
        &plus(&values(&w), &values(&diff), 0.25),
    );
}

/// DoRA by hand: `V = W + s·ΔW`, `W' = V · m / (‖V‖ + ε)` per input column
/// (kohya's `[1, in]` magnitudes) or output row (PEFT's `[out]`), then
/// `W + strength · (W' − W)`.
#[test]
fn dora_on_either_axis() {
    let (o, r, i) = (4, 2, 3);
    let (up, down, w) = (rand(&[o, r], 37), rand(&[r, i], 38), rand(&[o, i], 39));
    let alpha = scalar(1.0);
    let delta = matmul(&values(&up), &values(&down), o, r, i);
    let v = plus(&values(&w), &delta, 0.5);
    for (dora_shape, per_row) in [(vec![1, i], false), (vec![o], true)] {
        let m = rand(&dora_shape, 40).abs().unwrap();
        let mv = values(&m);
        let norm = |x: usize, y: usize| {
            let sum: f32 = if per_row {
                (0..i).map(|j| v[x * i + j].powi(2)).sum()
            } else {
                (0..o).map(|j| v[j * i + y].powi(2)).sum()
            };
            sum.sqrt() + f32::EPSILON
        };
        let strength = 0.7;
        let want: Vec<f32> = (0..o * i)
            .map(|n| {
                let (x, y) = (n / i, n % i);
                let mag = if per_row { mv[x] } else { mv[y] };
                let decomposed = v[n] * mag / norm(x, y);
                values(&w)[n] + strength * (decomposed - values(&w)[n])
            })
            .collect();
        let parts = [
            ("lora_up.weight", &up),
            ("lora_down.weight", &down),
            ("alpha", &alpha),
            ("dora_scale", &m),
        ];
        close(&patched(&parts, &w, strength as f64).unwrap(), &want);
    }
    // Magnitudes for neither axis are refused, not broadcast.
    let v = rand(&[o, i], 41);
    let err = decompose(&w, &v, &rand(&[1, 5], 42), 1.0).unwrap_err();
    assert!(err.contains("dora_scale"), "{err}");
}
