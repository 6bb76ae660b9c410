//! Inpainting and outpainting: `SetLatentNoiseMask` (any model),
//! `VAEEncodeForInpaint`, `InpaintModelConditioning` (9-channel inpainting
//! UNets, Flux Fill), `InstructPixToPixConditioning` (Flux Canny and Depth)
//! and `DifferentialDiffusion` (soft masks), with ComfyUI's inputs.

use std::sync::Arc;

use weft_core::{
    Define, InputSpec, Latent, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType,
};
use weft_models::inpaint;
use weft_models::vae::Vae;
use weft_sampling::{Conditioning, Model};

fn mask_input(cx: &NodeContext<'_>, name: &str) -> Result<candle_core::Tensor, NodeError> {
    match cx.value(name)? {
        Value::Mask(m) => Ok(m.clone()),
        other => Err(NodeError::input(
            name,
            format!("expected MASK, found {}", other.ty()),
        )),
    }
}

fn pixels_input(cx: &NodeContext<'_>) -> Result<candle_core::Tensor, NodeError> {
    Ok(crate::image::image_input(cx, "pixels")?.clone())
}

fn encode(vae: &Vae, pixels: &candle_core::Tensor) -> Result<candle_core::Tensor, NodeError> {
    let c = pixels.dim(1)?;
    let pixels = match (c, vae.spec().in_channels) {
        (1, 3) => pixels.repeat((1, 3, 1, 1))?,
        _ => pixels.clone(),
    };
    Ok(vae.encode(&pixels)?)
}

/// `mask` `[B, 1, H, W]` as a LATENT's noise mask.
fn latent(vae: &Vae, samples: candle_core::Tensor, mask: Option<candle_core::Tensor>) -> Value {
    Value::Latent(Arc::new(Latent {
        samples,
        space: vae.latent_space(),
        noise_mask: mask,
    }))
}

pub fn set_latent_noise_mask() -> NodeDef {
    NodeSchema::new(
        "SetLatentNoiseMask",
        "latent/inpaint",
        "Restricts sampling to a mask, for any model: at every step the cells outside it are the original latent noised to the current σ, and they end exactly as they began (ComfyUI's inpainting sampler). A soft mask blends; with DifferentialDiffusion it is a per-cell schedule instead.",
    )
    .input(InputSpec::of("samples", ValueType::Latent).doc("The latent to repaint."))
    .input(InputSpec::of("mask", ValueType::Mask).doc("Where it may change (1), in image pixels or any size."))
    .output("LATENT", ValueType::Latent, "The latent with its noise mask.")
    .run(|cx| {
        let latent = cx.latent("samples")?;
        let mask = mask_input(cx, "mask")?;
        let (h, w) = (mask.dim(mask.rank() - 2)?, mask.dim(mask.rank() - 1)?);
        Ok(Value::Latent(Arc::new(Latent {
            noise_mask: Some(mask.reshape(((), 1, h, w))?),
            ..latent.clone()
        })))
    })
}

fn grow_input() -> InputSpec {
    InputSpec::int("grow_mask_by")
        .default(6)
        .range(0.0, 64.0)
        .doc("Pixels the noise mask grows by, so seams fall inside the repainted part.")
}

pub fn vae_encode_for_inpaint() -> NodeDef {
    NodeSchema::new(
        "VAEEncodeForInpaint",
        "latent/inpaint",
        "Encodes an image for inpainting, as ComfyUI does: the masked pixels are set to grey before encoding and the grown mask becomes the latent's noise mask. Use it at denoise 1 (the masked part is regenerated from noise).",
    )
    .input(InputSpec::of("pixels", ValueType::Image).doc("The image in [0, 1]; cropped (centred) to a multiple of 8."))
    .input(InputSpec::of("vae", ValueType::Vae).doc("The VAE."))
    .input(InputSpec::of("mask", ValueType::Mask).doc("Where to repaint (1)."))
    .input(grow_input())
    .output("LATENT", ValueType::Latent, "The latent with its noise mask.")
    .run(|cx| {
        let vae = cx.get::<Vae>("vae")?;
        let p = inpaint::prepare(&pixels_input(cx)?, &mask_input(cx, "mask")?, vae.spec().downscale())
            .map_err(|e| NodeError::input("pixels", e.to_string()))?;
        let grow = cx.int("grow_mask_by")?.max(0) as usize;
        let noise_mask = inpaint::grow(&p.mask, grow)?;
        Ok(latent(vae, encode(vae, &p.greyed)?, Some(noise_mask)))
    })
}

/// The conditioning input `name` with every entry carrying `concat` (an
/// image's latent the model takes beside the noisy one) and `mask`.
fn with_image_inputs(
    cx: &NodeContext<'_>,
    name: &str,
    concat: &candle_core::Tensor,
    mask: Option<&candle_core::Tensor>,
) -> Result<Value, NodeError> {
    let c = cx
        .get::<Conditioning>(name)?
        .map_entries(&mut |e| {
            Ok(Conditioning {
                concat_latent: Some(concat.clone()),
                concat_mask: mask.cloned(),
                ..e
            })
        })
        .map_err(|e| NodeError::input(name, e.to_string()))?;
    Ok(Value::handle(c))
}

/// `InstructPixToPixConditioning`: an image beside the latent for models
/// that take one (Flux.1 Canny and Depth: the control image's latent).
pub fn instruct_pix_to_pix_conditioning() -> NodeDef {
    NodeSchema::new(
        "InstructPixToPixConditioning",
        "conditioning/instructpix2pix",
        "Gives both conditionings the latent of an image that the model takes beside the noisy latent (Flux.1 Canny and Depth: the edge or depth map), cropped to whole latent cells from the centre as ComfyUI does; also returns an empty latent of that size to sample.",
    )
    .input(InputSpec::of("positive", ValueType::Conditioning).doc("The prompt."))
    .input(InputSpec::of("negative", ValueType::Conditioning).doc("The negative prompt."))
    .input(InputSpec::of("vae", ValueType::Vae).doc("The VAE."))
    .input(InputSpec::of("pixels", ValueType::Image).doc("The image in [0, 1] (a control map)."))
    .output("positive", ValueType::Conditioning, "The prompt with the image.")
    .output("negative", ValueType::Conditioning, "The negative prompt with the image.")
    .output("latent", ValueType::Latent, "An empty latent of the image's size.")
    .run(|cx| {
        let vae = cx.get::<Vae>("vae")?;
        let pixels = pixels_input(cx)?;
        let mask = pixels.narrow(1, 0, 1)?.squeeze(1)?.ones_like()?;
        let p = inpaint::prepare(&pixels, &mask, vae.spec().downscale())
            .map_err(|e| NodeError::input("pixels", e.to_string()))?;
        let concat = encode(vae, &p.pixels)?;
        let with = |name| with_image_inputs(cx, name, &concat, None);
        Ok((with("positive")?, with("negative")?, latent(vae, concat.zeros_like()?, None)))
    })
}

pub fn inpaint_model_conditioning() -> NodeDef {
    NodeSchema::new(
        "InpaintModelConditioning",
        "conditioning/inpaint",
        "Conditions an inpainting model (9-channel UNets of SD 1.5, SD 2 and SDXL): both conditionings carry the latent of the image with the masked part grey and the mask, which the UNet takes beside the noisy latent, as diffusers' and ComfyUI's inpainting pipelines do. Also returns the image's latent, with the mask as its noise mask when `noise_mask` is on.",
    )
    .input(InputSpec::of("positive", ValueType::Conditioning).doc("The prompt."))
    .input(InputSpec::of("negative", ValueType::Conditioning).doc("The negative prompt."))
    .input(InputSpec::of("vae", ValueType::Vae).doc("The VAE."))
    .input(InputSpec::of("pixels", ValueType::Image).doc("The image in [0, 1]."))
    .input(InputSpec::of("mask", ValueType::Mask).doc("Where to repaint (1)."))
    .input(InputSpec::bool("noise_mask").default(true).doc("Also restrict sampling to the mask (keeps the rest exactly)."))
    .output("positive", ValueType::Conditioning, "The prompt with the inpainting inputs.")
    .output("negative", ValueType::Conditioning, "The negative prompt with them.")
    .output("latent", ValueType::Latent, "The image's latent.")
    .run(|cx| {
        let vae = cx.get::<Vae>("vae")?;
        let p = inpaint::prepare(&pixels_input(cx)?, &mask_input(cx, "mask")?, vae.spec().downscale())
            .map_err(|e| NodeError::input("pixels", e.to_string()))?;
        let concat = encode(vae, &p.greyed)?;
        let mask = p.mask.squeeze(1)?;
        let with = |name| with_image_inputs(cx, name, &concat, Some(&mask));
        let noise_mask = cx.bool("noise_mask")?.then(|| p.mask.clone());
        Ok((
            with("positive")?,
            with("negative")?,
            latent(vae, encode(vae, &p.pixels)?, noise_mask),
        ))
    })
}

pub fn differential_diffusion() -> NodeDef {
    NodeSchema::new(
        "DifferentialDiffusion",
        "_for_testing",
        "Differential diffusion: a soft noise mask becomes a per-cell schedule. A cell of mask value m changes only once sampling is m of the way from its end (1: from the start; 0.2: only in the last fifth), so gradients in the mask become gradients in how much changes.",
    )
    .input(InputSpec::of("model", ValueType::Model).doc("The model."))
    .output("MODEL", ValueType::Model, "The model, thresholding noise masks per step.")
    .run(|cx| {
        let model = Model {
            differential_diffusion: true,
            ..cx.get::<Model>("model")?.clone()
        };
        Ok(Value::handle(model))
    })
}
