//! Sampling under a noise mask (a LATENT's `noise_mask`, set by
//! `SetLatentNoiseMask`, `VAEEncodeForInpaint` or `InpaintModelConditioning`),
//! as ComfyUI's `KSamplerX0Inpaint`: before each model call the cells
//! outside the mask are replaced by the original latent noised to the
//! current σ with the run's own noise, and the estimate there is the
//! original, so those cells end exactly as they began. Differential
//! diffusion thresholds a soft mask per step instead.

use candle_core::{DType, Result, Tensor};

use crate::{Denoiser, ModelSampling, Path};

/// A denoiser restricted to a mask; see the module docs.
pub struct Masked<'a> {
    inner: &'a dyn Denoiser,
    /// Where the sample may change, `[B, C, h, w]` in [0, 1].
    mask: Tensor,
    /// The original latent, in the network's scale.
    latent: Tensor,
    /// The noise the run started from (zeros when it added none).
    noise: Tensor,
    path: Path,
    differential: Option<Differential>,
}

/// Differential diffusion's per-step threshold: a cell changes once the
/// schedule is `mask` of the way from its end to its start.
struct Differential {
    sampling: ModelSampling,
    ts_from: f64,
    ts_to: f64,
}

impl<'a> Masked<'a> {
    /// `mask` `[B or 1, (1,) H, W]` (any size; resized bilinearly to the
    /// latent).
    /// With `differential`, the mask is thresholded per step over `sigmas`
    /// (ComfyUI's `DifferentialDiffusion`).
    pub fn new(
        inner: &'a dyn Denoiser,
        mask: &Tensor,
        latent: Tensor,
        noise: Tensor,
        differential: Option<(&ModelSampling, &[f64])>,
    ) -> Result<Masked<'a>> {
        let (b, c, h, w) = latent.dims4()?;
        let m = mask.to_dtype(DType::F32)?;
        let m = match m.rank() {
            2 => m.unsqueeze(0)?.unsqueeze(1)?,
            3 => m.unsqueeze(1)?,
            4 if m.dim(1)? == 1 => m,
            _ => candle_core::bail!("a noise mask is [B, H, W], got shape {:?}", m.dims()),
        };
        let m = weft_kernels::resize::bilinear(&m, h, w)?;
        let m = match m.dim(0)? {
            n if n == b => m,
            1 => m.repeat((b, 1, 1, 1))?,
            n => candle_core::bail!("a noise mask of {n} items for {b} latents"),
        };
        let differential = differential.map(|(sampling, sigmas)| {
            let first = sigmas.first().copied().unwrap_or(0.0);
            let last = sigmas
                .last()
                .copied()
                .unwrap_or(0.0)
                .max(sampling.sigma_min());
            Differential {
                sampling: sampling.clone(),
                ts_from: sampling.timestep(first),
                ts_to: sampling.timestep(last),
            }
        });
        Ok(Masked {
            path: inner.path(),
            inner,
            mask: m.repeat((1, c, 1, 1))?,
            latent,
            noise,
            differential,
        })
    }

    /// The mask in force at σ.
    fn mask_at(&self, sigma: f64) -> Result<Tensor> {
        let Some(d) = &self.differential else {
            return Ok(self.mask.clone());
        };
        let span = d.ts_from - d.ts_to;
        let threshold = if span == 0.0 {
            0.0
        } else {
            (d.sampling.timestep(sigma) - d.ts_to) / span
        };
        self.mask.ge(threshold)?.to_dtype(DType::F32)
    }
}

impl Denoiser for Masked<'_> {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let mask = self.mask_at(sigma)?;
        let keep = mask.affine(-1.0, 1.0)?;
        let original = self.path.noise(sigma, &self.noise, &self.latent)?;
        let x = ((x * &mask)? + (original * &keep)?)?;
        let out = self.inner.denoise(&x, sigma)?;
        (out * &mask)? + (&self.latent * &keep)?
    }

    fn path(&self) -> Path {
        self.path
    }
}
