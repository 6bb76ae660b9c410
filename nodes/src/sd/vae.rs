//! The Stable Diffusion VAE as a weft value: images in [0, 1] to scaled
//! latents and back.
//!
//! The network is written here from candle-transformers' ResNet and
//! attention blocks: its own `AutoEncoderKL` keeps the posterior private, so
//! it can only return a random sample. Encoding takes the posterior's mean,
//! so img2img is deterministic (as ComfyUI; diffusers samples it).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::attention::{
    AttentionBlock, AttentionBlockConfig,
};
use candle_transformers::models::stable_diffusion::resnet::{ResnetBlock2D, ResnetBlock2DConfig};
use weft_core::{LatentSpace, Object};

use super::config::VaeSpec;
use super::weights::TensorMap;

/// The latent space of SD 1.x and 2.x (one VAE serves both).
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

const EPS: f64 = 1e-6;

fn conv(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    };
    candle_nn::conv2d(i, o, k, cfg, vb)
}

/// A level's ResNet blocks and its resampling conv.
struct Level {
    resnets: Vec<ResnetBlock2D>,
    resample: Option<Conv2d>,
}

/// The encoder or the decoder: conv in, levels around a middle of
/// ResNet–attention–ResNet, then GroupNorm, SiLU and conv out.
struct Coder {
    conv_in: Conv2d,
    levels: Vec<Level>,
    mid: (ResnetBlock2D, AttentionBlock, ResnetBlock2D),
    norm_out: GroupNorm,
    conv_out: Conv2d,
    decoder: bool,
}

impl Coder {
    fn new(spec: &VaeSpec, decoder: bool, vb: VarBuilder) -> Result<Coder> {
        let cfg = &spec.config;
        let groups = cfg.norm_num_groups;
        let resnet = |i: usize, o: usize, vb: VarBuilder| {
            let rc = ResnetBlock2DConfig {
                out_channels: Some(o),
                temb_channels: None,
                groups,
                eps: EPS,
                ..Default::default()
            };
            ResnetBlock2D::new(vb, i, rc)
        };
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
                    conv(c, c, 3, 1, 1, vbl.pp("upsamplers.0.conv"))?
                } else {
                    conv(c, c, 3, 2, 0, vbl.pp("downsamplers.0.conv"))?
                })
            } else {
                None
            };
            levels.push(Level { resnets, resample });
        }
        let attn_cfg = AttentionBlockConfig {
            num_head_channels: None,
            num_groups: groups,
            rescale_output_factor: 1.0,
            eps: EPS,
        };
        let mvb = vb.pp("mid_block");
        let mid = (
            resnet(mid_c, mid_c, mvb.pp("resnets.0"))?,
            AttentionBlock::new(mvb.pp("attentions.0"), mid_c, attn_cfg)?,
            resnet(mid_c, mid_c, mvb.pp("resnets.1"))?,
        );
        let end_c = if decoder { last } else { last };
        Ok(Coder {
            conv_in: conv(
                in_c,
                if decoder { mid_c } else { first },
                3,
                1,
                1,
                vb.pp("conv_in"),
            )?,
            levels,
            mid,
            norm_out: candle_nn::group_norm(groups, end_c, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv(end_c, out_c, 3, 1, 1, vb.pp("conv_out"))?,
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
        self.conv_out
            .forward(&candle_nn::ops::silu(&self.norm_out.forward(&h)?)?)
    }
}

impl Vae {
    pub fn build(spec: &VaeSpec, tensors: &TensorMap) -> std::result::Result<Vae, String> {
        let cfg = &spec.config;
        if cfg.block_out_channels.is_empty() || cfg.norm_num_groups == 0 {
            return Err("a VAE needs block_out_channels and norm_num_groups".into());
        }
        let built = tensors.build("VAE", |vb| {
            let latent2 = 2 * cfg.latent_channels;
            Ok((
                Coder::new(spec, false, vb.pp("encoder"))?,
                Coder::new(spec, true, vb.pp("decoder"))?,
                cfg.use_quant_conv
                    .then(|| conv(latent2, latent2, 1, 1, 0, vb.pp("quant_conv")))
                    .transpose()?,
                cfg.use_post_quant_conv
                    .then(|| {
                        let l = cfg.latent_channels;
                        conv(l, l, 1, 1, 0, vb.pp("post_quant_conv"))
                    })
                    .transpose()?,
            ))
        })?;
        let (encoder, decoder, quant_conv, post_quant_conv) = built;
        Ok(Vae {
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            spec: spec.clone(),
            bytes: tensors.f32_bytes(),
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

    /// Images `[B, C, H, W]` in [0, 1] → latents, scaled for the UNet.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = images.dims4()?;
        let f = self.spec.downscale();
        if h % f != 0 || w % f != 0 {
            candle_core::bail!("VAE encoding needs a size divisible by {f}, got {w}×{h}");
        }
        let (mean, _) = self.posterior(&(images * 2.0)?.affine(1.0, -1.0)?)?;
        mean * self.spec.scaling_factor
    }

    /// Scaled latents → the decoder's raw output (about [-1, 1]).
    pub fn decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = (latents / self.spec.scaling_factor)?;
        if let Some(p) = &self.post_quant_conv {
            z = p.forward(&z)?;
        }
        self.decoder.forward(&z)
    }

    /// Scaled latents → images in [0, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        ((self.decode_raw(latents)? + 1.0)? / 2.0)?.clamp(0f32, 1f32)
    }
}
