//! `x·Wᵀ (+ b)` straight from a [`PackedWeight`], never expanding the
//! whole weight.
//!
//! The output features are cut into tiles of [`TILE`] weight rows. A task
//! decodes its tile into a per-thread f32 buffer and multiplies the whole
//! `x` by it with one single-threaded `gemm` call, writing the tile's
//! output columns in place. Each output element thus comes from exactly
//! one `gemm` call whose shape does not depend on the thread count, so the
//! result is bit-identical on any number of threads. Decoding a tile costs
//! `TILE·in` operations against `rows·TILE·in` multiply-adds: nothing, once
//! `x` has more than a handful of rows.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{integer, PackedWeight};

/// Weight rows per task. 128 rows of a 3072-wide weight is 1.5 MB of f32,
/// about what stays in L2 while `gemm` streams `x` past it.
pub(crate) const TILE: usize = 128;

thread_local! {
    /// The decoded tile, reused across calls on each thread.
    static TILE_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Output pointer shared by the tasks, which write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes its own columns only; see `product`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// By method, so closures capture the `Send` wrapper, not the field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl PackedWeight {
    /// `x·Wᵀ`, plus `bias` when given, for `x` of shape `(..., in)` and
    /// this weight `(out, in)`. On the CPU, Q8_0/Q4_K/Q6_K products of
    /// enough rows run on integer kernels where the CPU has them (see
    /// `integer.rs`), everything else by the tiled product above; other
    /// dtypes are converted to f32 and back; other devices get the decoded
    /// weight and candle's matmul.
    pub fn matmul_t(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (out_dim, in_dim) = self.dims2()?;
        let x_in = x.dims().last().copied();
        if x_in != Some(in_dim) {
            candle_core::bail!(
                "a {} weight [{out_dim}, {in_dim}] cannot multiply an input of shape {:?}",
                self.stored_type(),
                x.dims()
            );
        }
        if let Some(b) = bias {
            if b.dims() != [out_dim] {
                candle_core::bail!("a bias of shape {:?} for {out_dim} outputs", b.dims());
            }
        }
        if !x.device().is_cpu() {
            let w = self
                .to_f32_tensor()?
                .to_device(x.device())?
                .to_dtype(x.dtype())?;
            return candle_nn::Linear::new(w, bias.cloned()).forward(x);
        }
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?.contiguous()?;
        if integer::pays(self, xf.elem_count() / in_dim.max(1)) {
            let b = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
            return integer::product(self, &xf, b.as_ref())?.to_dtype(dtype);
        }
        self.tiled(&xf, bias)?.to_dtype(dtype)
    }

    /// [`matmul_t`](Self::matmul_t) by decoded f32 tiles always, never the
    /// integer kernels: for `x` f32 on the CPU, bit-identical on any thread
    /// count and any CPU model with the same `gemm` kernels.
    pub fn matmul_t_dequantized(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (out_dim, in_dim) = self.dims2()?;
        if x.dims().last() != Some(&in_dim) || !x.device().is_cpu() {
            candle_core::bail!(
                "a {} weight [{out_dim}, {in_dim}] cannot multiply an input of shape {:?} on {:?}",
                self.stored_type(),
                x.dims(),
                x.device()
            );
        }
        let dtype = x.dtype();
        self.tiled(&x.to_dtype(DType::F32)?.contiguous()?, bias)?
            .to_dtype(dtype)
    }

    fn tiled(&self, xf: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let op = Product(self);
        let y = match bias {
            Some(b) => xf.apply_op2_no_bwd(&b.to_dtype(DType::F32)?.contiguous()?, &op)?,
            None => xf.apply_op1_no_bwd(&op)?,
        };
        Ok(y)
    }

    /// `(out, in)` of a 2-D weight.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self.shape() {
            &[o, i] => Ok((o, i)),
            s => candle_core::bail!("a matrix product needs a 2-D weight, this one is {s:?}"),
        }
    }

    /// The product into `out` (`m × out_dim`, row-major), by tiles of
    /// decoded weight rows. `x` is `m × in_dim`.
    fn product_dequantized(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let (n, k) = self.rows_cols();
        let m = out.len() / n.max(1);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            // An empty sum: the output is the bias, or zero.
            for row in out.chunks_exact_mut(n) {
                match bias {
                    Some(b) => row.copy_from_slice(b),
                    None => row.fill(0.0),
                }
            }
            return;
        }
        let dst = OutPtr(out.as_mut_ptr());
        (0..n.div_ceil(TILE)).into_par_iter().for_each(|t| {
            let rows = t * TILE..((t + 1) * TILE).min(n);
            let width = rows.len();
            TILE_BUF.with_borrow_mut(|buf| {
                buf.resize(width * k, 0.0);
                self.dequantize_rows(rows.clone(), &mut buf[..width * k])
                    .expect("the tile is inside the weight");
                // SAFETY: this task alone writes columns `rows` of each of
                // the m output rows (stride n); the buffer is width×k and
                // read transposed (column stride k, row stride 1).
                unsafe {
                    let o = dst.get().add(rows.start);
                    if let Some(b) = bias {
                        for r in 0..m {
                            std::ptr::copy_nonoverlapping(
                                b.as_ptr().add(rows.start),
                                o.add(r * n),
                                width,
                            );
                        }
                    }
                    gemm::gemm(
                        m,
                        width,
                        k,
                        o,
                        1,
                        n as isize,
                        bias.is_some(),
                        x.as_ptr(),
                        1,
                        k as isize,
                        buf.as_ptr(),
                        k as isize,
                        1,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        });
    }

    fn run(&self, x: &[f32], x_shape: &Shape, bias: Option<&[f32]>) -> (CpuStorage, Shape) {
        let (n, k) = self.rows_cols();
        let m = x.len() / k.max(1);
        let mut dims = x_shape.dims().to_vec();
        *dims.last_mut().expect("matmul_t checked the rank") = n;
        let mut out = vec![0f32; m * n];
        self.product_dequantized(x, bias, &mut out);
        (CpuStorage::F32(out), Shape::from(dims))
    }
}

/// The product as a candle op, so `x` is read in place.
struct Product<'a>(&'a PackedWeight);

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("the packed matmul needs contiguous tensors"),
    }
}

impl CustomOp1 for Product<'_> {
    fn name(&self) -> &'static str {
        "weft-packed-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok(self.0.run(slice(s, l)?, l.shape(), None))
    }
}

impl CustomOp2 for Product<'_> {
    fn name(&self) -> &'static str {
        "weft-packed-matmul"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok(self.0.run(slice(s, l)?, l.shape(), Some(slice(bs, bl)?)))
    }
}
