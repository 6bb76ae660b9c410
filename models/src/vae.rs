//! The Stable Diffusion VAE as a weft value: images in [0, 1] to latents
//! and back. Latents are the VAE's own, unscaled, as in ComfyUI (whose
//! latent files weft reads and writes): the MODEL scales them for its
//! network ([`weft_sampling::LatentFormat`]), so one VAE file serves SD 1.x
//! and SDXL models although they scale differently.
//!
//! Ours rather than candle-transformers' `AutoEncoderKL`: that one keeps the
//! posterior private, so it can only return a random sample, and its
//! attention materialises the 4096 × 4096 scores of a 512² image. Encoding
//! takes the posterior's mean, so img2img is deterministic (as ComfyUI;
//! diffusers samples it).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::sd::blocks::ResBlock;
use weft_core::{LatentSpace, Object};
use weft_kernels::attention;
use weft_kernels::layers::{self, Conv2d, GroupNorm, Linear};

use crate::sd::config::VaeSpec;
use crate::weights::TensorMap;

/// The latent space of SD 1.x, 2.x and SDXL (one 4-channel VAE serves all).
pub fn sd_latent_space() -> LatentSpace {
    LatentSpace::new("sd15")
}

/// A built VAE.
pub struct Vae {
    encoder: Coder,
    decoder: Coder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    spec: VaeSpec,
    bytes: usize,
}

impl std::fmt::Debug for Vae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vae({:?})", self.spec.config.block_out_channels)
    }
}

impl Object for Vae {
    fn size_bytes(&self) -> usize {
        self.bytes
    }
}

impl weft_core::Handle for Vae {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Vae;
}

const EPS: f64 = 1e-6;

/// The middle block's single-head self-attention over all pixels:
/// diffusers' `Attention` with its GroupNorm and residual.
struct MidAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl MidAttention {
    fn new(channels: usize, groups: usize, vb: VarBuilder) -> Result<MidAttention> {
        // Older diffusers files name the projections query/key/value/proj_attn,
        // some as 1×1 convolutions.
        let names = if vb.contains_tensor("to_q.weight") {
            ["to_q", "to_k", "to_v", "to_out.0"]
        } else {
            ["query", "key", "value", "proj_attn"]
        };
        let projection = |name: &str| -> Result<Linear> {
            let vb = vb.pp(name);
            let weight = match vb.get((channels, channels), "weight") {
                Ok(w) => w,
                Err(_) => vb
                    .get((channels, channels, 1, 1), "weight")?
                    .reshape((channels, channels))?,
            };
            Ok(Linear::new(weight, Some(vb.get(channels, "bias")?)))
        };
        Ok(MidAttention {
            norm: layers::group_norm(groups, channels, EPS, vb.pp("group_norm"))?,
            q: projection(names[0])?,
            k: projection(names[1])?,
            v: projection(names[2])?,
            out: projection(names[3])?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self
            .norm
            .forward(x)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let o = attention(
            &self.q.forward(&t)?,
            &self.k.forward(&t)?,
            &self.v.forward(&t)?,
            1,
        )?;
        let o = self
            .out
            .forward(&o)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        o + x
    }
}

/// A level's ResNet blocks and its resampling conv.
struct Level {
    resnets: Vec<ResBlock>,
    resample: Option<Conv2d>,
}

/// The encoder or the decoder: conv in, levels around a middle of
/// ResNet–attention–ResNet, then GroupNorm, SiLU and conv out.
struct Coder {
    conv_in: Conv2d,
    levels: Vec<Level>,
    mid: (ResBlock, MidAttention, ResBlock),
    norm_out: GroupNorm,
    conv_out: Conv2d,
    decoder: bool,
}

impl Coder {
    fn new(spec: &VaeSpec, decoder: bool, vb: VarBuilder) -> Result<Coder> {
        let cfg = &spec.config;
        let groups = cfg.norm_num_groups;
        let resnet =
            |i: usize, o: usize, vb: VarBuilder| ResBlock::with(i, o, None, groups, EPS, vb);
        let mut channels = cfg.block_out_channels.clone();
        if decoder {
            channels.reverse();
        }
        let (first, last) = (channels[0], *channels.last().expect("validated non-empty"));
        let (in_c, out_c) = if decoder {
            (cfg.latent_channels, spec.out_channels)
        } else {
            (spec.in_channels, 2 * cfg.latent_channels)
        };
        let (blocks, per_level) = if decoder {
            ("up_blocks", cfg.layers_per_block + 1)
        } else {
            ("down_blocks", cfg.layers_per_block)
        };
        let mid_c = if decoder { first } else { last };
        let mut levels = Vec::with_capacity(channels.len());
        let mut cur = if decoder { mid_c } else { first };
        for (l, &c) in channels.iter().enumerate() {
            let vbl = vb.pp(format!("{blocks}.{l}"));
            let resnets = (0..per_level)
                .map(|j| {
                    let r = resnet(
                        if j == 0 { cur } else { c },
                        c,
                        vbl.pp(format!("resnets.{j}")),
                    );
                    r
                })
                .collect::<Result<Vec<_>>>()?;
            cur = c;
            let resample = if l + 1 < channels.len() {
                Some(if decoder {
                    layers::conv2d(c, c, 3, 1, 1, vbl.pp("upsamplers.0.conv"))?
                } else {
                    layers::conv2d(c, c, 3, 2, 0, vbl.pp("downsamplers.0.conv"))?
                })
            } else {
                None
            };
            levels.push(Level { resnets, resample });
        }
        let mvb = vb.pp("mid_block");
        let mid = (
            resnet(mid_c, mid_c, mvb.pp("resnets.0"))?,
            MidAttention::new(mid_c, groups, mvb.pp("attentions.0"))?,
            resnet(mid_c, mid_c, mvb.pp("resnets.1"))?,
        );
        Ok(Coder {
            conv_in: layers::conv2d(
                in_c,
                if decoder { mid_c } else { first },
                3,
                1,
                1,
                vb.pp("conv_in"),
            )?,
            levels,
            mid,
            norm_out: layers::group_norm(groups, last, EPS, vb.pp("conv_norm_out"))?,
            conv_out: layers::conv2d(last, out_c, 3, 1, 1, vb.pp("conv_out"))?,
            decoder,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        let mid = |h: &Tensor| -> Result<Tensor> {
            let h = self.mid.0.forward(h, None)?;
            let h = self.mid.1.forward(&h)?;
            self.mid.2.forward(&h, None)
        };
        if self.decoder {
            h = mid(&h)?;
        }
        for level in &self.levels {
            for r in &level.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(c) = &level.resample {
                h = if self.decoder {
                    let (_, _, hh, ww) = h.dims4()?;
                    c.forward(&h.upsample_nearest2d(hh * 2, ww * 2)?)?
                } else {
                    // Asymmetric padding (right and bottom), as the LDM VAE.
                    c.forward(&h.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(
                        D::Minus2,
                        0,
                        1,
                    )?)?
                };
            }
        }
        if !self.decoder {
            h = mid(&h)?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

impl Vae {
    /// Builds the VAE from a checkpoint's tensors.
    pub fn build(spec: &VaeSpec, tensors: &TensorMap) -> std::result::Result<Vae, String> {
        let cfg = &spec.config;
        if cfg.block_out_channels.is_empty() || cfg.norm_num_groups == 0 {
            return Err("a VAE needs block_out_channels and norm_num_groups".into());
        }
        let mut vae = tensors.build("VAE", |vb| Vae::new(spec, vb))?;
        vae.bytes = tensors.f32_bytes();
        Ok(vae)
    }

    /// Builds the VAE from any variables (random ones for benchmarks).
    pub fn new(spec: &VaeSpec, vb: VarBuilder) -> Result<Vae> {
        let cfg = &spec.config;
        let latent2 = 2 * cfg.latent_channels;
        let l = cfg.latent_channels;
        Ok(Vae {
            encoder: Coder::new(spec, false, vb.pp("encoder"))?,
            decoder: Coder::new(spec, true, vb.pp("decoder"))?,
            quant_conv: cfg
                .use_quant_conv
                .then(|| layers::conv2d(latent2, latent2, 1, 1, 0, vb.pp("quant_conv")))
                .transpose()?,
            post_quant_conv: cfg
                .use_post_quant_conv
                .then(|| layers::conv2d(l, l, 1, 1, 0, vb.pp("post_quant_conv")))
                .transpose()?,
            spec: spec.clone(),
            bytes: 0,
        })
    }

    pub fn spec(&self) -> &VaeSpec {
        &self.spec
    }

    pub fn latent_space(&self) -> LatentSpace {
        sd_latent_space()
    }

    /// The posterior's mean and log-variance for `pixels` in [-1, 1], unscaled.
    pub fn posterior(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut moments = self.encoder.forward(pixels)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        let l = self.spec.config.latent_channels;
        Ok((moments.narrow(1, 0, l)?, moments.narrow(1, l, l)?))
    }

    /// Images `[B, C, H, W]` in [0, 1] → latents (the posterior's mean).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = images.dims4()?;
        let f = self.spec.downscale();
        if h % f != 0 || w % f != 0 {
            candle_core::bail!("VAE encoding needs a size divisible by {f}, got {w}×{h}");
        }
        let (mean, _) = self.posterior(&(images * 2.0)?.affine(1.0, -1.0)?)?;
        Ok(mean)
    }

    /// Latents → the decoder's raw output (about [-1, 1]).
    pub fn decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = latents.clone();
        if let Some(p) = &self.post_quant_conv {
            z = p.forward(&z)?;
        }
        self.decoder.forward(&z)
    }

    /// Latents → images in [0, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        ((self.decode_raw(latents)? + 1.0)? / 2.0)?.clamp(0f32, 1f32)
    }
}

/// Tile start offsets along an axis of `len` cells.
fn tile_starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let step = (tile - overlap).max(1);
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * step)
        .take_while(|&s| s + tile < len)
        .collect();
    starts.push(len - tile);
    starts.dedup();
    starts
}

/// Blend weight of position `i` of a tile `n` long whose first/last
/// `ramp` cells overlap a neighbour (`lo`/`hi` say which sides do).
fn ramp(i: usize, n: usize, ramp: usize, lo: bool, hi: bool) -> f32 {
    let mut w = 1f32;
    if ramp > 0 {
        if lo {
            w = w.min((i as f32 + 0.5) / ramp as f32);
        }
        if hi {
            w = w.min((n as f32 - i as f32 - 0.5) / ramp as f32);
        }
    }
    w
}

/// Runs `f` on overlapping `tile`×`tile` windows of `x` `[B, C, H, W]`
/// and blends the results, which are `num/den` times the input's size,
/// with linear ramps across each overlap (no seams, no visible grid).
fn tiled(
    x: &Tensor,
    tile: usize,
    overlap: usize,
    (num, den): (usize, usize),
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    let (ys, xs) = (tile_starts(h, tile, overlap), tile_starts(w, tile, overlap));
    let (oh, ow) = (h * num / den, w * num / den);
    let ramp_out = overlap * num / den;
    let mut acc: Vec<f32> = Vec::new();
    let mut weight = vec![0f32; oh * ow];
    let mut channels = 0;
    for (yi, &y0) in ys.iter().enumerate() {
        for (xi, &x0) in xs.iter().enumerate() {
            let (th, tw) = (tile.min(h), tile.min(w));
            let out = f(&x.narrow(2, y0, th)?.narrow(3, x0, tw)?)?;
            let (_, c, ph, pw) = out.dims4()?;
            if acc.is_empty() {
                channels = c;
                acc = vec![0f32; b * c * oh * ow];
            }
            let data: Vec<f32> = out.flatten_all()?.to_vec1()?;
            let (oy, ox) = (y0 * num / den, x0 * num / den);
            for py in 0..ph {
                let wy = ramp(py, ph, ramp_out, yi > 0, yi + 1 < ys.len());
                for px in 0..pw {
                    let wgt = wy * ramp(px, pw, ramp_out, xi > 0, xi + 1 < xs.len());
                    let at = (oy + py) * ow + ox + px;
                    weight[at] += wgt;
                    for bc in 0..b * c {
                        acc[bc * oh * ow + at] += wgt * data[(bc * ph + py) * pw + px];
                    }
                }
            }
        }
    }
    for (i, v) in acc.iter_mut().enumerate() {
        *v /= weight[i % (oh * ow)].max(f32::MIN_POSITIVE);
    }
    Tensor::from_vec(acc, (b, channels, oh, ow), x.device())
}

impl Vae {
    /// [`Vae::decode`] over overlapping latent tiles (`tile`, `overlap` in
    /// latent cells).
    pub fn decode_tiled(&self, latents: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
        let f = self.spec.downscale();
        tiled(latents, tile, overlap, (f, 1), |t| self.decode(t))
    }

    /// [`Vae::encode`] over overlapping image tiles (`tile`, `overlap` in
    /// pixels, multiples of the downscale). GroupNorm sees one tile at a
    /// time, so results differ slightly from a whole-image encode.
    pub fn encode_tiled(&self, images: &Tensor, tile: usize, overlap: usize) -> Result<Tensor> {
        let f = self.spec.downscale();
        tiled(images, tile, overlap, (1, f), |t| self.encode(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;
    use weft_kernels::testing::max_diff;

    /// Older diffusers VAEs name the attention projections
    /// query/key/value/proj_attn and store them as 1×1 convolutions; both
    /// spellings must build the same layer.
    #[test]
    fn mid_attention_reads_both_naming_schemes() {
        let c = 8;
        let dev = Device::Cpu;
        let wavy = |n: usize, phase: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (i as f32 * 0.37 + phase).sin() * 0.3)
                .collect()
        };
        let mut modern = HashMap::new();
        let mut legacy = HashMap::new();
        for (i, (new, old)) in [
            ("to_q", "query"),
            ("to_k", "key"),
            ("to_v", "value"),
            ("to_out.0", "proj_attn"),
        ]
        .into_iter()
        .enumerate()
        {
            let w = wavy(c * c, i as f32);
            let b = Tensor::new(wavy(c, 10.0 + i as f32), &dev).unwrap();
            modern.insert(
                format!("{new}.weight"),
                Tensor::from_vec(w.clone(), (c, c), &dev).unwrap(),
            );
            legacy.insert(
                format!("{old}.weight"),
                Tensor::from_vec(w, (c, c, 1, 1), &dev).unwrap(),
            );
            modern.insert(format!("{new}.bias"), b.clone());
            legacy.insert(format!("{old}.bias"), b);
        }
        for map in [&mut modern, &mut legacy] {
            map.insert(
                "group_norm.weight".into(),
                Tensor::ones(c, DType::F32, &dev).unwrap(),
            );
            map.insert(
                "group_norm.bias".into(),
                Tensor::zeros(c, DType::F32, &dev).unwrap(),
            );
        }
        let build = |map: HashMap<String, Tensor>| {
            MidAttention::new(c, 2, VarBuilder::from_tensors(map, DType::F32, &dev)).unwrap()
        };
        let x = Tensor::from_vec(wavy(2 * c * 5 * 3, 0.5), (2, c, 5, 3), &dev).unwrap();
        let a = build(modern).forward(&x).unwrap();
        let b = build(legacy).forward(&x).unwrap();
        assert_eq!(max_diff(&a, &b), 0.0);
        // And the output is not just the residual.
        assert!(max_diff(&b, &x) > 1e-3);
    }

    #[test]
    fn tiles_cover_the_axis_and_overlap() {
        assert_eq!(tile_starts(10, 16, 4), vec![0]);
        assert_eq!(tile_starts(64, 32, 8), vec![0, 24, 32]);
        let starts = tile_starts(100, 32, 8);
        assert_eq!(*starts.last().unwrap(), 68);
        assert!(starts.windows(2).all(|w| w[1] - w[0] <= 24));
    }

    /// With an elementwise `f`, blending tiles must give exactly `f(x)`
    /// (the ramps are a partition of unity), at any tiling.
    #[test]
    fn blending_is_a_partition_of_unity() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 37.0 * 29.0, &candle_core::Device::Cpu)
            .unwrap()
            .reshape((2, 3, 37, 29))
            .unwrap();
        let f = |t: &Tensor| t.affine(2.0, 1.0);
        let whole = f(&x).unwrap();
        for (tile, overlap) in [(8, 2), (16, 5), (40, 0), (10, 4)] {
            let t = tiled(&x, tile, overlap, (1, 1), f).unwrap();
            let d = max_diff(&t, &whole);
            assert!(d < 1e-2, "tile {tile} overlap {overlap}: {d}");
        }
    }
}
