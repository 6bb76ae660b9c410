//! The element-wise and re-layout steps of the upscale networks, as single
//! passes on the CPU: LeakyReLU / PReLU, nearest upsampling,
//! pixel shuffle and unshuffle, reflection padding, and the in-place
//! writes RRDBNet's dense blocks are built on ([`Store`], [`Residual`],
//! [`Blend`]).
//!
//! Why custom ops: candle spells LeakyReLU as four whole-tensor passes and
//! a bias and a scaled residual as two more, and a dense block's
//! concatenations copy every earlier feature map again for each
//! convolution. Here each map is written once, bias and activation
//! included, into the channels of one buffer that the block's convolutions
//! read prefixes of.

use candle_core::{CpuStorage, CustomOp1, InplaceOp2, InplaceOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task of the element-wise ops.
const CHUNK: usize = 1 << 16;

/// The f32 data of a contiguous layout.
fn f32_data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

/// `x` where `x ≥ 0`, `slope·x` below: LeakyReLU with one slope, PReLU
/// with one per channel of `[B, C, H, W]`.
#[derive(Clone, Debug)]
pub(crate) struct Leaky(pub Vec<f32>);

impl CustomOp1 for Leaky {
    fn name(&self) -> &'static str {
        "weft-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l)?;
        let dims = l.shape().dims();
        let plane: usize = dims.iter().skip(2).product();
        let channels = dims.get(1).copied().unwrap_or(1);
        let slopes = &self.0;
        if slopes.len() != 1 && slopes.len() != channels {
            candle_core::bail!("{} activation slopes for {channels} channels", slopes.len());
        }
        let act = |v: f32, a: f32| if v >= 0.0 { v } else { a * v };
        let out: Vec<f32> = if slopes.len() == 1 || plane == 0 {
            let a = slopes[0];
            x.par_iter()
                .with_min_len(CHUNK)
                .map(|&v| act(v, a))
                .collect()
        } else {
            x.par_iter()
                .enumerate()
                .with_min_len(CHUNK)
                .map(|(i, &v)| act(v, slopes[(i / plane) % channels]))
                .collect()
        };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `x` with LeakyReLU (`slopes` of one value) or PReLU (one per channel).
pub(crate) fn leaky(x: &Tensor, slopes: &Leaky) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        let a = Tensor::new(slopes.0.as_slice(), x.device())?.to_dtype(x.dtype())?;
        let a = if slopes.0.len() == 1 {
            a.reshape(())?.broadcast_as(x.shape())?
        } else {
            a.reshape((1, (), 1, 1))?.broadcast_as(x.shape())?
        };
        let neg = x.minimum(0f32)?;
        return x.maximum(0f32)? + (neg * a)?;
    }
    x.contiguous()?.apply_op1_no_bwd(slopes)
}

/// The f32 data of a contiguous layout, to write.
fn f32_data_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("expected f32 data");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut data[a..b]),
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

/// `(channels, plane)` of a one-image `[1, C, H, W]` layout.
fn one_image(l: &Layout) -> Result<(usize, usize)> {
    match l.shape().dims() {
        &[1, c, h, w] => Ok((c, h * w)),
        other => candle_core::bail!("expected one image [1, C, H, W], got {other:?}"),
    }
}

/// Writes `act(src + bias)` (bias per channel, LeakyReLU with `slope`;
/// either optional) into channels `channel..` of a buffer; both are one
/// image `[1, C, H, W]`.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    pub channel: usize,
    pub bias: Option<Vec<f32>>,
    pub slope: Option<f32>,
}

impl InplaceOp2 for Store {
    fn name(&self) -> &'static str {
        "weft-store-channels"
    }

    fn cpu_fwd(
        &self,
        ds: &mut CpuStorage,
        dl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<()> {
        let ((dc, plane), (sc, splane)) = (one_image(dl)?, one_image(sl)?);
        if plane != splane || self.channel + sc > dc {
            candle_core::bail!(
                "cannot store {:?} at channel {} of {:?}",
                sl.shape().dims(),
                self.channel,
                dl.shape().dims()
            );
        }
        if self.bias.as_ref().is_some_and(|b| b.len() != sc) {
            candle_core::bail!("a bias for {sc} channels has the wrong length");
        }
        let src = f32_data(ss, sl)?;
        let dst = &mut f32_data_mut(ds, dl)?[self.channel * plane..(self.channel + sc) * plane];
        dst.par_chunks_mut(plane)
            .zip(src.par_chunks(plane))
            .enumerate()
            .for_each(|(c, (d, s))| {
                let b = self.bias.as_ref().map_or(0.0, |b| b[c]);
                match self.slope {
                    Some(a) => {
                        for (d, &v) in d.iter_mut().zip(s) {
                            let v = v + b;
                            *d = if v >= 0.0 { v } else { a * v };
                        }
                    }
                    None => {
                        for (d, &v) in d.iter_mut().zip(s) {
                            *d = v + b;
                        }
                    }
                }
            });
        Ok(())
    }
}

/// `dst[:, ..n] = x + scale·(y + bias)` for `x`, `y` `[1, n, H, W]`: a
/// residual block's output written into the next buffer.
#[derive(Clone, Debug)]
pub(crate) struct Residual {
    pub bias: Vec<f32>,
    pub scale: f32,
}

impl InplaceOp3 for Residual {
    fn name(&self) -> &'static str {
        "weft-residual-into"
    }

    fn cpu_fwd(
        &self,
        ds: &mut CpuStorage,
        dl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<()> {
        let ((dc, plane), (n, _)) = (one_image(dl)?, one_image(xl)?);
        if xl.shape() != yl.shape()
            || n > dc
            || self.bias.len() != n
            || xl.shape().elem_count() != n * plane
        {
            candle_core::bail!(
                "cannot add {:?} and {:?} into {:?}",
                xl.shape().dims(),
                yl.shape().dims(),
                dl.shape().dims()
            );
        }
        let (x, y) = (f32_data(xs, xl)?, f32_data(ys, yl)?);
        let dst = &mut f32_data_mut(ds, dl)?[..n * plane];
        let a = self.scale;
        dst.par_chunks_mut(plane)
            .zip(x.par_chunks(plane).zip(y.par_chunks(plane)))
            .enumerate()
            .for_each(|(c, (d, (x, y)))| {
                let b = self.bias[c];
                for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
                    *d = x + a * (y + b);
                }
            });
        Ok(())
    }
}

/// `dst[:, ..n] = x + scale·dst[:, ..n]` for `x` `[1, n, H, W]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blend(pub f32);

impl InplaceOp2 for Blend {
    fn name(&self) -> &'static str {
        "weft-blend-into"
    }

    fn cpu_fwd(
        &self,
        ds: &mut CpuStorage,
        dl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<()> {
        let ((dc, plane), (n, xplane)) = (one_image(dl)?, one_image(xl)?);
        if plane != xplane || n > dc {
            candle_core::bail!(
                "cannot blend {:?} into {:?}",
                xl.shape().dims(),
                dl.shape().dims()
            );
        }
        let x = f32_data(xs, xl)?;
        let dst = &mut f32_data_mut(ds, dl)?[..n * plane];
        let a = self.0;
        dst.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(d, x)| {
                for (d, &x) in d.iter_mut().zip(x) {
                    *d = x + a * *d;
                }
            });
        Ok(())
    }
}

/// Nearest-neighbour upsampling of `[B, C, H, W]` by an integer factor.
struct Nearest(usize);

impl CustomOp1 for Nearest {
    fn name(&self) -> &'static str {
        "weft-nearest-upsample"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l)?;
        let (b, c, h, w) = l.shape().dims4()?;
        let r = self.0;
        let (oh, ow) = (h * r, w * r);
        let mut out = vec![0f32; b * c * oh * ow];
        if !out.is_empty() {
            out.par_chunks_mut(oh * ow)
                .zip(x.par_chunks(h * w))
                .for_each(|(o, x)| {
                    for (y, line) in x.chunks_exact(w).enumerate() {
                        let rows = &mut o[y * r * ow..(y + 1) * r * ow];
                        let (first, rest) = rows.split_at_mut(ow);
                        for (dst, &v) in first.chunks_exact_mut(r).zip(line) {
                            dst.fill(v);
                        }
                        for row in rest.chunks_exact_mut(ow) {
                            row.copy_from_slice(first);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

/// `x` `[B, C, H, W]` upsampled `r`× by repeating pixels (PyTorch's
/// `interpolate(mode="nearest")` at an integer scale).
pub(crate) fn upsample_nearest(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return x.upsample_nearest2d(h * r, w * r);
    }
    x.contiguous()?.apply_op1_no_bwd(&Nearest(r))
}

/// `[B, C·r², H, W]` → `[B, C, H·r, W·r]` (PyTorch's `pixel_shuffle`).
pub(crate) fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    if c % (r * r) != 0 {
        candle_core::bail!("pixel shuffle by {r} of {c} channels");
    }
    let c = c / (r * r);
    x.reshape(vec![b, c, r, r, h, w])?
        .permute([0, 1, 4, 2, 5, 3])?
        .contiguous()?
        .reshape((b, c, h * r, w * r))
}

/// `[B, C, H·r, W·r]` → `[B, C·r², H, W]` (PyTorch's `pixel_unshuffle`).
pub(crate) fn pixel_unshuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    if h % r != 0 || w % r != 0 {
        candle_core::bail!("pixel unshuffle by {r} of a {w}×{h} image");
    }
    let (h, w) = (h / r, w / r);
    x.reshape(vec![b, c, h, r, w, r])?
        .permute([0, 1, 3, 5, 2, 4])?
        .contiguous()?
        .reshape((b, c * r * r, h, w))
}

/// Index `i` of an axis of `n` cells, mirrored at its ends without
/// repeating them (PyTorch's reflect padding, also past one reflection).
fn reflect(i: usize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let j = i % period;
    if j < n {
        j
    } else {
        period - j
    }
}

/// `x` `[B, C, H, W]` padded at the bottom and right, by reflection, to
/// sides that are multiples of `m`.
pub(crate) fn pad_reflect_to(x: &Tensor, m: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (ph, pw) = (h.next_multiple_of(m), w.next_multiple_of(m));
    let mut x = x.clone();
    for (dim, n, to) in [(2, h, ph), (3, w, pw)] {
        if to > n {
            let idx: Vec<u32> = (0..to).map(|i| reflect(i, n) as u32).collect();
            let idx = Tensor::new(idx, x.device())?;
            x = x.index_select(&idx, dim)?;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    fn values(x: &Tensor) -> Vec<f32> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn leaky_and_prelu_scale_only_negatives() {
        let x = t(&[-2.0, 0.0, 3.0, -1.0, -4.0, 5.0], &[1, 2, 3, 1]);
        let y = leaky(&x, &Leaky(vec![0.2])).unwrap();
        assert_eq!(values(&y), [-0.4, 0.0, 3.0, -0.2, -0.8, 5.0]);
        let y = leaky(&x, &Leaky(vec![0.5, 0.1])).unwrap();
        assert_eq!(values(&y), [-1.0, 0.0, 3.0, -0.1, -0.4, 5.0]);
        assert!(leaky(&x, &Leaky(vec![0.5, 0.1, 0.3])).is_err());
    }

    #[test]
    fn in_place_writes_land_in_their_channels() {
        let buf = Tensor::zeros((1, 4, 1, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = t(&[-1.0, 2.0, 3.0, -4.0], &[1, 2, 1, 2]);
        let store = Store {
            channel: 1,
            bias: Some(vec![0.5, -0.5]),
            slope: Some(0.25),
        };
        buf.inplace_op2(&y, &store).unwrap();
        assert_eq!(values(&buf), [0.0, 0.0, -0.125, 2.5, 2.5, -1.125, 0.0, 0.0]);
        let plain = Store {
            channel: 3,
            bias: None,
            slope: None,
        };
        buf.inplace_op2(&t(&[7.0, -8.0], &[1, 1, 1, 2]), &plain)
            .unwrap();
        assert_eq!(values(&buf)[6..], [7.0, -8.0]);
        // Past the last channel: an error, not a write out of bounds.
        assert!(buf
            .inplace_op2(
                &y,
                &Store {
                    channel: 3,
                    ..plain.clone()
                }
            )
            .is_err());
        // Aliasing its own buffer is refused by candle.
        assert!(buf
            .inplace_op2(&buf.narrow(1, 0, 1).unwrap(), &plain)
            .is_err());

        let out = Tensor::zeros((1, 3, 1, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let x = t(&[1.0, 1.0, 2.0, 2.0], &[1, 2, 1, 2]);
        let res = Residual {
            bias: vec![1.0, 0.0],
            scale: 0.5,
        };
        out.inplace_op3(&x, &y, &res).unwrap();
        assert_eq!(values(&out), [1.0, 2.5, 3.5, 0.0, 0.0, 0.0]);
        out.inplace_op2(&x, &Blend(0.5)).unwrap();
        assert_eq!(values(&out), [1.5, 2.25, 3.75, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn nearest_repeats_pixels() {
        let x = t(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
        let y = upsample_nearest(&x, 2).unwrap();
        assert_eq!(y.dims(), [1, 1, 4, 4]);
        let want = [
            1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0,
        ];
        assert_eq!(values(&y), want);
        assert_eq!(values(&x.upsample_nearest2d(4, 4).unwrap()), want);
    }

    #[test]
    fn shuffle_undoes_unshuffle_and_matches_torch_order() {
        // torch.pixel_unshuffle(arange(16).view(1,1,4,4), 2)[0, :, 0, 0] is 0, 1, 4, 5.
        let x = Tensor::arange(0f32, 32.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 4, 4))
            .unwrap();
        let u = pixel_unshuffle(&x, 2).unwrap();
        assert_eq!(u.dims(), [1, 8, 2, 2]);
        let corner: Vec<f32> = values(&u.narrow(2, 0, 1).unwrap().narrow(3, 0, 1).unwrap());
        assert_eq!(corner, [0.0, 1.0, 4.0, 5.0, 16.0, 17.0, 20.0, 21.0]);
        assert_eq!(values(&pixel_shuffle(&u, 2).unwrap()), values(&x));
    }

    #[test]
    fn reflection_pads_like_torch() {
        // F.pad(x, (0, 1, 0, 1), mode="reflect") of a 3×3 ramp.
        let x = t(
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            &[1, 1, 3, 3],
        );
        let y = pad_reflect_to(&x, 4).unwrap();
        assert_eq!(y.dims(), [1, 1, 4, 4]);
        assert_eq!(
            values(&y),
            [0.0, 1.0, 2.0, 1.0, 3.0, 4.0, 5.0, 4.0, 6.0, 7.0, 8.0, 7.0, 3.0, 4.0, 5.0, 4.0]
        );
        assert_eq!(
            (0..6).map(|i| reflect(i, 3)).collect::<Vec<_>>(),
            [0, 1, 2, 1, 0, 1]
        );
    }
}
