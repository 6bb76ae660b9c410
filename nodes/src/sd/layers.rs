//! Inference layers for the Stable Diffusion networks, written for the CPU:
//! a 2-D convolution and a GroupNorm with optional SiLU.
//!
//! Why not candle-nn's: its CPU `conv2d` re-lays out the whole kernel and
//! transposes the input to NHWC on every call, and its GroupNorm is a chain
//! of ten whole-tensor ops. Profiles of a 512² UNet step put most of the
//! time there. These keep candle-nn's parameter names and shapes, so the
//! same checkpoints load, and fall back to candle's kernels off the CPU.

use candle_core::{CpuStorage, CustomOp3, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

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
        None => candle_core::bail!("GroupNorm needs contiguous tensors"),
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
                    if self.silu {
                        for (o, &v) in o.iter_mut().zip(i) {
                            let y = v * scale + offset;
                            *o = y / (1.0 + (-y).exp());
                        }
                    } else {
                        for (o, &v) in o.iter_mut().zip(i) {
                            *o = v * scale + offset;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn wavy(shape: &[usize], phase: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f64 * 0.37 + phase).sin() * 2.0 + (i as f64 * 0.011).cos()) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Against candle's direct convolution for every kernel, stride and
    /// padding the SD networks use, including band-split patches.
    #[test]
    fn conv_matches_candle() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        for (i, (k, s, p, h, w)) in [
            (3, 1, 1, 9, 7),
            (3, 2, 1, 8, 8),
            (3, 2, 0, 9, 9),
            (1, 1, 0, 5, 6),
            (3, 1, 0, 6, 4),
        ]
        .into_iter()
        .enumerate()
        {
            let conv = conv2d(3, 5, k, s, p, vb.pp(i)).unwrap();
            let x = wavy(&[2, 3, h, w], i as f64);
            let want = x
                .conv2d(&conv.weight, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&conv.bias.as_ref().unwrap().reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            assert!(
                max_diff(&conv.forward(&x).unwrap(), &want) < 1e-5,
                "case {i}"
            );
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
}
