//! Inference layers for the Stable Diffusion networks, written for the CPU:
//! a 2-D convolution, a linear layer, a GroupNorm with optional SiLU, and
//! GEGLU's gate.
//!
//! Why not candle-nn's: its CPU `conv2d` re-lays out the whole kernel and
//! transposes the input to NHWC on every call, and its GroupNorm is a chain
//! of ten whole-tensor ops. Profiles of a 512² UNet step put most of the
//! time there. These keep candle-nn's parameter names and shapes, so the
//! same checkpoints load, and fall back to candle's kernels off the CPU.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor, D,
};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use std::sync::Arc;

use crate::quant::PackedWeight;
use crate::{pointwise, winograd};

/// Bytes of patch matrix built at once; larger images go in row bands.
const PATCH_BYTES: usize = 64 << 20;

/// A 2-D convolution (square kernel, no groups or dilation).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// A `k×k` convolution with bias, named and initialised like candle-nn's.
pub fn conv2d(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = candle_nn::Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    };
    let inner = candle_nn::conv2d(in_c, out_c, kernel, cfg, vb)?;
    Ok(Conv2d {
        weight: inner.weight().clone(),
        bias: inner.bias().cloned(),
        kernel,
        stride,
        padding,
    })
}

impl Conv2d {
    /// A convolution from its tensors: `weight` `[out, in, k, k]` (square
    /// kernel) and an optional `bias` `[out]`.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let (out_c, _, kh, kw) = weight.dims4()?;
        if kh != kw {
            candle_core::bail!("a convolution kernel must be square, got {kh}×{kw}");
        }
        if let Some(b) = &bias {
            if b.dims() != [out_c] {
                candle_core::bail!(
                    "a convolution bias of shape {:?} for {out_c} output channels",
                    b.dims()
                );
            }
        }
        Ok(Conv2d {
            weight,
            bias,
            kernel: kh,
            stride,
            padding,
        })
    }

    fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let span = |n: usize| {
            (n + 2 * self.padding)
                .checked_sub(self.kernel)
                .map(|d| d / self.stride + 1)
        };
        match (span(h), span(w)) {
            (Some(oh), Some(ow)) if self.stride > 0 => Ok((oh, ow)),
            _ => candle_core::bail!(
                "a {k}×{k} convolution does not fit a {h}×{w} input",
                k = self.kernel
            ),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
            return match &self.bias {
                Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
                None => Ok(y),
            };
        }
        let (b, c, h, w) = x.dims4()?;
        let (out_c, in_c, _, _) = self.weight.dims4()?;
        if c != in_c {
            candle_core::bail!("the convolution takes {in_c} channels, got {c}");
        }
        let (oh, ow) = self.output_size(h, w)?;
        let tiled = winograd::Dims {
            batch: b,
            in_c,
            out_c,
            h,
            w,
            padding: self.padding,
        };
        if self.kernel == 3
            && self.stride == 1
            && x.dtype() == candle_core::DType::F32
            && tiled.pays()
        {
            let y = x
                .contiguous()?
                .apply_op2_no_bwd(&self.weight.contiguous()?, &Winograd(tiled))?;
            return match &self.bias {
                Some(bias) => y.broadcast_add(&bias.reshape((1, out_c, 1, 1))?),
                None => Ok(y),
            };
        }
        let k = in_c * self.kernel * self.kernel;
        let weight = self.weight.reshape((out_c, k))?;
        let x = x.contiguous()?;
        let pointwise = self.kernel == 1 && self.stride == 1 && self.padding == 0;
        // Output rows per band, so one band's patches stay under PATCH_BYTES.
        let band = (PATCH_BYTES / (4 * k * ow).max(1)).clamp(1, oh);
        let mut images = Vec::with_capacity(b);
        for i in 0..b {
            let xi = x.get(i)?;
            let y = if pointwise {
                weight.matmul(&xi.reshape((c, h * w))?)?
            } else {
                let data: Vec<f32> = xi.flatten_all()?.to_vec1()?;
                let mut bands = Vec::with_capacity(oh.div_ceil(band));
                for r0 in (0..oh).step_by(band) {
                    let rows = band.min(oh - r0);
                    let cols = self.patches(&data, (c, h, w), (r0, rows, ow));
                    let cols = Tensor::from_vec(cols, (k, rows * ow), x.device())?;
                    bands.push(weight.matmul(&cols)?);
                }
                Tensor::cat(&bands, 1)?
            };
            images.push(y.reshape((out_c, oh, ow))?);
        }
        let y = Tensor::stack(&images, 0)?;
        match &self.bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, out_c, 1, 1))?),
            None => Ok(y),
        }
    }
}

impl Conv2d {
    /// The patch matrix `[C·k·k, rows·ow]` for output rows `r0..r0+rows`
    /// of one image (`data` is `[C, H, W]`); zero where the kernel
    /// overhangs the padded border. Channels fill their rows in parallel.
    fn patches(
        &self,
        data: &[f32],
        (c, h, w): (usize, usize, usize),
        (r0, rows, ow): (usize, usize, usize),
    ) -> Vec<f32> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let per_row = rows * ow;
        let mut out = vec![0f32; c * k * k * per_row];
        out.par_chunks_mut(k * k * per_row)
            .enumerate()
            .for_each(|(ch, dst)| {
                let src = &data[ch * h * w..(ch + 1) * h * w];
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &mut dst[(ky * k + kx) * per_row..(ky * k + kx + 1) * per_row];
                        // Output columns whose input column ox·s + kx − p is inside.
                        let lo = p.saturating_sub(kx).div_ceil(s);
                        let hi = (w + p).saturating_sub(kx).div_ceil(s).min(ow);
                        for r in 0..rows {
                            let iy = ((r0 + r) * s + ky) as isize - p as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let line = &src[iy as usize * w..(iy as usize + 1) * w];
                            let out_line = &mut row[r * ow..(r + 1) * ow];
                            if s == 1 {
                                let start = lo + kx - p;
                                out_line[lo..hi].copy_from_slice(&line[start..start + hi - lo]);
                            } else {
                                for ox in lo..hi {
                                    out_line[ox] = line[ox * s + kx - p];
                                }
                            }
                        }
                    }
                }
            });
        out
    }
}

/// Rows per task of the linear layer's product.
const LINEAR_ROWS: usize = 256;

/// A linear layer, `x·Wᵀ + b`, named like candle-nn's (`weight`, `bias`).
///
/// Why not candle-nn's: it multiplies image by image, each product split
/// over the threads, and adds the bias in another pass. Here blocks of
/// rows of the whole batch are the parallel tasks, each one single-threaded
/// product that starts from the bias: 1.2–1.6× the throughput on the
/// UNet's shapes.
///
/// The weight is either a dense tensor (the path above) or a
/// [`PackedWeight`] kept in its stored type (GGUF quantisations, f16/bf16,
/// fp8), multiplied by [`PackedWeight::matmul_t`]: a model written against
/// `Linear` runs on any storage.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

#[derive(Clone, Debug)]
enum LinearWeight {
    Dense(Tensor),
    Packed(Arc<PackedWeight>),
}

impl Linear {
    /// From a `[out, in]` weight and an optional `[out]` bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear {
            weight: LinearWeight::Dense(weight),
            bias,
        }
    }

    /// From a packed `[out, in]` weight and an optional `[out]` bias.
    pub fn packed(weight: Arc<PackedWeight>, bias: Option<Tensor>) -> Linear {
        Linear {
            weight: LinearWeight::Packed(weight),
            bias,
        }
    }

    /// The dense weight; `None` when it is packed.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => Some(w),
            LinearWeight::Packed(_) => None,
        }
    }

    /// The packed weight; `None` when it is dense.
    pub fn packed_weight(&self) -> Option<&Arc<PackedWeight>> {
        match &self.weight {
            LinearWeight::Dense(_) => None,
            LinearWeight::Packed(w) => Some(w),
        }
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// A linear layer with a bias.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let inner = candle_nn::linear(in_dim, out_dim, vb)?;
    Ok(Linear::new(inner.weight().clone(), inner.bias().cloned()))
}

/// A linear layer without a bias.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let inner = candle_nn::linear_no_bias(in_dim, out_dim, vb)?;
    Ok(Linear::new(inner.weight().clone(), None))
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = match &self.weight {
            LinearWeight::Dense(w) => w,
            LinearWeight::Packed(w) => return w.matmul_t(x, self.bias.as_ref()),
        };
        if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
            return candle_nn::Linear::new(weight.clone(), self.bias.clone()).forward(x);
        }
        let (x, weight) = (x.contiguous()?, weight.contiguous()?);
        match &self.bias {
            Some(bias) => x.apply_op3_no_bwd(&weight, &bias.contiguous()?, &RowBlocks),
            None => x.apply_op2_no_bwd(&weight, &RowBlocks),
        }
    }
}

struct RowBlocks;

impl RowBlocks {
    fn run(
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (xs, ws) = (f32_slice(x.0, x.1)?, f32_slice(w.0, w.1)?);
        let (out_dim, in_dim) = w.1.shape().dims2()?;
        let mut dims = x.1.shape().dims().to_vec();
        if dims.last() != Some(&in_dim) {
            candle_core::bail!("a linear layer from {in_dim} features got {dims:?}");
        }
        let bias = bias.map(|(s, l)| f32_slice(s, l)).transpose()?;
        if bias.is_some_and(|b| b.len() != out_dim) {
            candle_core::bail!("the linear layer's bias does not have {out_dim} values");
        }
        *dims.last_mut().expect("checked above") = out_dim;
        let mut out = vec![0f32; xs.len() / in_dim.max(1) * out_dim];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from(dims)));
        }
        out.par_chunks_mut(LINEAR_ROWS * out_dim)
            .zip(xs.par_chunks(LINEAR_ROWS * in_dim.max(1)))
            .for_each(|(o, x)| {
                if let Some(b) = bias {
                    for row in o.chunks_exact_mut(out_dim) {
                        row.copy_from_slice(b);
                    }
                }
                // SAFETY: o is rows×out_dim, x is rows×in_dim and the weight
                // out_dim×in_dim, read transposed through its strides.
                unsafe {
                    gemm::gemm(
                        o.len() / out_dim,
                        out_dim,
                        in_dim,
                        o.as_mut_ptr(),
                        1,
                        out_dim as isize,
                        bias.is_some(),
                        x.as_ptr(),
                        1,
                        in_dim as isize,
                        ws.as_ptr(),
                        in_dim as isize,
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
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

impl CustomOp2 for RowBlocks {
    fn name(&self) -> &'static str {
        "weft-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        RowBlocks::run((xs, xl), (ws, wl), None)
    }
}

impl CustomOp3 for RowBlocks {
    fn name(&self) -> &'static str {
        "weft-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        RowBlocks::run((xs, xl), (ws, wl), Some((bs, bl)))
    }
}

/// The 3×3 stride-1 case, by [`winograd`].
struct Winograd(winograd::Dims);

impl CustomOp2 for Winograd {
    fn name(&self) -> &'static str {
        "weft-winograd-conv"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.0;
        let (oh, ow) = d.output();
        let y = winograd::conv3x3(f32_slice(xs, xl)?, f32_slice(ws, wl)?, d);
        Ok((CpuStorage::F32(y), Shape::from((d.batch, d.out_c, oh, ow))))
    }
}

/// GroupNorm, optionally followed by SiLU, in two passes over the data.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

/// A GroupNorm named like candle-nn's (`weight`, `bias`).
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    if groups == 0 || channels / groups * groups != channels {
        candle_core::bail!("GroupNorm: {groups} groups do not divide {channels} channels");
    }
    Ok(GroupNorm {
        weight: vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?,
        bias: vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?,
        groups,
        eps,
    })
}

impl GroupNorm {
    /// GroupNorm then SiLU, fused.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
            let gn = candle_nn::GroupNorm::new(
                self.weight.clone(),
                self.bias.clone(),
                self.weight.dim(0)?,
                self.groups,
                self.eps,
            )?;
            let y = gn.forward(x)?;
            return if silu { y.silu() } else { Ok(y) };
        }
        x.contiguous()?.apply_op3_no_bwd(
            &self.weight,
            &self.bias,
            &FusedGroupNorm {
                groups: self.groups,
                eps: self.eps,
                silu,
            },
        )
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
}

struct FusedGroupNorm {
    groups: usize,
    eps: f64,
    silu: bool,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("the fused layers need contiguous tensors"),
    }
}

impl CustomOp3 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "weft-group-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = xl.shape().dims();
        if dims.len() < 2 {
            candle_core::bail!("GroupNorm needs [B, C, …], got {dims:?}");
        }
        let (b, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let (x, w, bias) = (f32_slice(xs, xl)?, f32_slice(ws, wl)?, f32_slice(bs, bl)?);
        if w.len() != c || bias.len() != c || c / self.groups * self.groups != c {
            candle_core::bail!("GroupNorm parameters do not match {c} channels");
        }
        let per_group = c / self.groups * spatial;
        let mut out = vec![0f32; b * c * spatial];
        out.par_chunks_mut(per_group)
            .zip(x.par_chunks(per_group))
            .enumerate()
            .for_each(|(bg, (dst, src))| {
                // Mean and variance in f64: one pass, sums of deviations
                // from the first value keep it stable.
                let shift = src[0] as f64;
                let (mut s1, mut s2) = (0f64, 0f64);
                for &v in src {
                    let d = v as f64 - shift;
                    s1 += d;
                    s2 += d * d;
                }
                let n = src.len() as f64;
                let mean = s1 / n;
                let var = (s2 / n - mean * mean).max(0.0);
                let mean = (mean + shift) as f32;
                let inv = (1.0 / (var + self.eps).sqrt()) as f32;
                let g = bg % self.groups;
                let cpg = c / self.groups;
                for (j, (o, i)) in dst.chunks_mut(spatial).zip(src.chunks(spatial)).enumerate() {
                    let ch = g * cpg + j;
                    let (scale, offset) = (inv * w[ch], bias[ch] - mean * inv * w[ch]);
                    for (o, &v) in o.iter_mut().zip(i) {
                        *o = v * scale + offset;
                    }
                    if self.silu {
                        pointwise::silu(o);
                    }
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// GEGLU's gate with the exact GELU, as diffusers: the last dimension's
/// first half times GELU of its second half, in one pass.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    if !h.device().is_cpu() || h.dtype() != candle_core::DType::F32 {
        let half = h.dim(D::Minus1)? / 2;
        return h.narrow(D::Minus1, 0, half)? * h.narrow(D::Minus1, half, half)?.gelu_erf()?;
    }
    h.contiguous()?.apply_op1_no_bwd(&Geglu)
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "weft-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let mut dims = l.shape().dims().to_vec();
        let width = dims.last().copied().unwrap_or(0);
        if width & 1 == 1 {
            candle_core::bail!("GEGLU needs an even last dimension, got {dims:?}");
        }
        let half = width / 2;
        *dims.last_mut().expect("checked above") = half;
        let mut out = vec![0f32; x.len() / 2];
        if half > 0 {
            out.par_chunks_mut(half)
                .zip(x.par_chunks(width))
                .for_each(|(o, row)| pointwise::gated_gelu(o, &row[..half], &row[half..]));
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_diff, wavy};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// Against candle's direct convolution for every kernel, stride and
    /// padding the SD networks use, including band-split patches.
    #[test]
    fn conv_matches_candle() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        // (kernel, stride, padding, h, w, in, out): odd and even sides and
        // paddings on im2col, then calls large enough for Winograd F(2×2)
        // and F(4×4) (odd sides, so the last tiles overhang the output).
        for (i, (k, s, p, h, w, ci, co)) in [
            (3, 1, 1, 9, 7, 3, 5),
            (3, 2, 1, 8, 8, 3, 5),
            (3, 2, 0, 9, 9, 3, 5),
            (1, 1, 0, 5, 6, 3, 5),
            (3, 1, 0, 6, 4, 3, 5),
            (3, 1, 2, 5, 5, 3, 5),
            (3, 1, 1, 1, 1, 3, 5),
            (3, 1, 1, 33, 31, 24, 16),
            (3, 1, 1, 65, 67, 8, 4),
        ]
        .into_iter()
        .enumerate()
        {
            let conv = conv2d(ci, co, k, s, p, vb.pp(i)).unwrap();
            let x = wavy(&[2, ci, h, w], i as f64);
            let want = x
                .conv2d(&conv.weight, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            let got = conv.forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims(), "case {i}");
            assert!(max_diff(&got, &want) < 1e-5, "case {i}");
        }
    }

    #[test]
    fn group_norm_matches_candle_with_and_without_silu() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let gn = group_norm(4, 8, 1e-6, vb).unwrap();
        let weight = wavy(&[8], 3.0);
        let bias = wavy(&[8], 5.0);
        let gn = GroupNorm {
            weight: weight.clone(),
            bias: bias.clone(),
            ..gn
        };
        let reference = candle_nn::GroupNorm::new(weight, bias, 8, 4, 1e-6).unwrap();
        // A large offset tests the variance's numerical stability.
        let x = (wavy(&[2, 8, 5, 3], 1.0) + 1000.0).unwrap();
        let want = reference.forward(&x).unwrap();
        assert!(max_diff(&gn.forward(&x).unwrap(), &want) < 1e-3);
        let x = wavy(&[2, 8, 5, 3], 1.0);
        let want = reference.forward(&x).unwrap();
        assert!(max_diff(&gn.forward(&x).unwrap(), &want) < 1e-5);
        assert!(max_diff(&gn.forward_silu(&x).unwrap(), &want.silu().unwrap()) < 1e-5);
    }

    #[test]
    fn linear_matches_candle_with_and_without_bias() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        // More rows than one block, and a 2-D input.
        let x = wavy(&[2, 300, 7], 0.3);
        for (i, layer) in [
            linear(7, 5, vb.pp("a")).unwrap(),
            linear_no_bias(7, 5, vb.pp("b")).unwrap(),
        ]
        .into_iter()
        .enumerate()
        {
            let reference =
                candle_nn::Linear::new(layer.weight().unwrap().clone(), layer.bias.clone());
            assert!(
                max_diff(&layer.forward(&x).unwrap(), &reference.forward(&x).unwrap()) < 1e-5,
                "layer {i}"
            );
            let flat = x.get(0).unwrap();
            assert_eq!(layer.forward(&flat).unwrap().dims(), &[300, 5]);
        }
        assert!(linear(3, 2, vb.pp("c")).unwrap().forward(&x).is_err());
    }

    #[test]
    fn geglu_matches_candles_exact_gelu() {
        let h = wavy(&[2, 3, 10], 0.5);
        let want =
            (h.narrow(2, 0, 5).unwrap() * h.narrow(2, 5, 5).unwrap().gelu_erf().unwrap()).unwrap();
        let got = geglu(&h).unwrap();
        assert_eq!(got.dims(), &[2, 3, 5]);
        assert!(max_diff(&got, &want) < 1e-5);
        assert!(geglu(&wavy(&[2, 3], 0.0)).is_err());
    }
}
