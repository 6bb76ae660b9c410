//! Multi-head attention, softmax(QKᵀ/√d)·V, fused on the CPU.
//!
//! Why: composed from tensor ops, SD 1.5's 64×64 level writes a
//! 2 × 8 × 4096 × 4096 score tensor (1 GB) to memory, runs a separate
//! softmax over it, and transposes every head out of the token layout and
//! back. Here each task takes one block of queries of one image, scores it
//! against all keys into a buffer that stays in cache, exponentiates with
//! the vectorised [`pointwise::softmax_unnormalised`], multiplies by V and
//! divides by the row sums, reading Q, K and V where the projections put
//! them. Tasks never share an output, so the result does not depend on the
//! thread count.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::pointwise;

/// Scores per task (256 KiB): a block of queries against every key.
const BLOCK_SCORES: usize = 1 << 20;

/// Attention of queries `q` `[B, N, C]` over keys `k` and values `v`
/// `[B, M, C]`, with `C` split into `heads` heads; returns `[B, N, C]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let (kb, m, kc) = k.dims3()?;
    if kb != b || kc != c || v.dims() != k.dims() || heads == 0 || c / heads * heads != c {
        candle_core::bail!(
            "attention: queries {:?}, keys {:?} and values {:?} do not fit {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if q.device().is_cpu() && q.dtype() == candle_core::DType::F32 {
        return q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &FusedAttention { heads },
        );
    }
    let d = c / heads;
    let split =
        |t: &Tensor, len: usize| t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous();
    let (qh, kh, vh) = (split(q, n)?, split(k, m)?, split(v, m)?);
    let scores = (qh.matmul(&kh.t()?)? * (d as f64).powf(-0.5))?;
    candle_nn::ops::softmax_last_dim(&scores)?
        .matmul(&vh)?
        .transpose(1, 2)?
        .reshape((b, n, c))
}

struct FusedAttention {
    heads: usize,
}

thread_local! {
    /// Per thread: one block's scores, then its row sums.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("attention needs contiguous inputs"),
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "weft-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            contiguous(qs, ql)?,
            contiguous(ks, kl)?,
            contiguous(vs, vl)?,
        );
        let (b, n, c) = ql.shape().dims3()?;
        let m = kl.shape().dims3()?.1;
        let d = c / self.heads;
        let scale = (d as f32).powf(-0.5);
        let rows = (BLOCK_SCORES / m.max(1)).clamp(1, n.max(1));
        let mut out = vec![0f32; b * n * c];
        if m == 0 {
            return Ok((CpuStorage::F32(out), ql.shape().clone()));
        }
        out.par_chunks_mut(n * c)
            .enumerate()
            .for_each(|(bi, image)| {
                let (kb, vb) = (&k[bi * m * c..][..m * c], &v[bi * m * c..][..m * c]);
                image
                    .par_chunks_mut(rows * c)
                    .enumerate()
                    .for_each(|(blk, o)| {
                        let r = o.len() / c;
                        let qb = &q[(bi * n + blk * rows) * c..][..r * c];
                        SCRATCH.with_borrow_mut(|scratch| {
                            scratch.resize(r * (m + 1), 0.0);
                            let (s, sums) = scratch.split_at_mut(r * m);
                            for h in 0..self.heads {
                                block(s, sums, o, qb, kb, vb, (r, m, c, h * d, d), scale);
                            }
                        });
                    });
            });
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

/// One head of one block: `o[:, at..at+d] = softmax(scale·q kᵀ)·v` for the
/// `r` query rows in `q` (row stride `c`) against the `m` keys and values,
/// with `s` (r×m) and `sums` (r) as scratch.
#[allow(clippy::too_many_arguments)]
fn block(
    s: &mut [f32],
    sums: &mut [f32],
    o: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (r, m, c, at, d): (usize, usize, usize, usize, usize),
    scale: f32,
) {
    let c_ = c as isize;
    // SAFETY: every pointer, stride and extent below stays inside the
    // slices: q and o are r×c, k and v are m×c, s is r×m, and at + d ≤ c.
    unsafe {
        gemm(
            r,
            m,
            d,
            s.as_mut_ptr(),
            1,
            m as isize,
            false,
            q.as_ptr().add(at),
            1,
            c_,
            k.as_ptr().add(at),
            c_,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    for (row, sum) in s.chunks_exact_mut(m).zip(sums.iter_mut()) {
        *sum = pointwise::softmax_unnormalised(row);
    }
    // SAFETY: as above.
    unsafe {
        gemm(
            r,
            d,
            m,
            o.as_mut_ptr().add(at),
            1,
            c_,
            false,
            s.as_ptr(),
            1,
            m as isize,
            v.as_ptr().add(at),
            1,
            c_,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    for (row, &sum) in o.chunks_exact_mut(c).zip(sums.iter()) {
        let inv = 1.0 / sum;
        for x in &mut row[at..at + d] {
            *x *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn wavy((b, n, c): (usize, usize, usize), phase: f64) -> Tensor {
        testing::wavy(&[b, n, c], phase)
    }

    /// softmax(QKᵀ/√d)V per head, in f64 loops.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Vec<f64> {
        let (b, n, c) = q.dims3().unwrap();
        let m = k.dim(1).unwrap();
        let d = c / heads;
        let get = |t: &Tensor| -> Vec<f64> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect()
        };
        let (q, k, v) = (get(q), get(k), get(v));
        let mut out = vec![0f64; b * n * c];
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..n {
                    let scores: Vec<f64> = (0..m)
                        .map(|j| {
                            (0..d)
                                .map(|e| {
                                    q[(bi * n + i) * c + h * d + e]
                                        * k[(bi * m + j) * c + h * d + e]
                                })
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = w.iter().sum();
                    for e in 0..d {
                        out[(bi * n + i) * c + h * d + e] = (0..m)
                            .map(|j| w[j] * v[(bi * m + j) * c + h * d + e])
                            .sum::<f64>()
                            / total;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn fused_attention_matches_the_definition() {
        // Self-attention with blocks that do not divide the queries, and
        // cross-attention to a short context.
        for (n, m, heads, c) in [(70, 70, 2, 8), (5, 77, 4, 16), (40, 3000, 1, 4)] {
            let q = wavy((2, n, c), 0.0);
            let k = wavy((2, m, c), 1.0);
            let v = wavy((2, m, c), 2.0);
            let got = attention(&q, &k, &v, heads).unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = reference(&q, &k, &v, heads);
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "n {n} m {m} heads {heads}: {err}");
        }
    }

    #[test]
    fn fused_attention_repeats_exactly_across_thread_counts() {
        let (q, k, v) = (
            wavy((1, 300, 8), 0.0),
            wavy((1, 300, 8), 1.0),
            wavy((1, 300, 8), 2.0),
        );
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| attention(&q, &k, &v, 2).unwrap())
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn mismatched_heads_are_an_error() {
        let q = wavy((1, 4, 6), 0.0);
        let err = attention(&q, &q, &q, 4).unwrap_err().to_string();
        assert!(err.contains("4 heads"), "{err}");
    }
}
