//! `VAEDecode`, `VAEEncode` and their tiled forms.

use std::sync::Arc;

use candle_core::DType;
use weft_core::{
    Define, InputSpec, Inputs, Latent, NodeDef, NodeError, NodeSchema, Value, ValueType,
};
use weft_models::vae::Vae;

use crate::image::image_dims;

/// Tile options shared by the tiled VAE nodes.
fn tile_inputs(schema: NodeSchema) -> NodeSchema {
    schema
        .input(InputSpec::int("tile_size").default(512).range(64.0, 4096.0).doc("Tile edge in pixels (a multiple of the VAE's 8)."))
        .input(InputSpec::int("overlap").default(64).range(0.0, 4096.0).doc("Pixels each tile shares with its neighbours, blended with linear ramps so no seam shows."))
}

/// The tile edge and overlap in latent cells.
fn tiles(inputs: &Inputs, vae: &Vae) -> Result<(usize, usize), NodeError> {
    let f = vae.spec().downscale() as i64;
    let (tile, overlap) = (inputs.int("tile_size")?, inputs.int("overlap")?);
    if overlap * 2 >= tile {
        return Err(NodeError::input(
            "overlap",
            format!("overlap {overlap} must be under half the tile size {tile}"),
        ));
    }
    Ok(((tile / f).max(1) as usize, (overlap / f) as usize))
}

/// `VAEDecode` (`VAEDecodeTiled` when `tiled`): latents to images.
pub fn vae_decode(tiled: bool) -> NodeDef {
    let schema = if tiled {
        tile_inputs(NodeSchema::new(
            "VAEDecodeTiled",
            "latent",
            "Decodes latents tile by tile, so large images fit in memory; tiles overlap and are blended so no seams show.",
        ))
    } else {
        NodeSchema::new(
            "VAEDecode",
            "latent",
            "Decodes latents into images with the VAE.",
        )
    };
    schema
        .input(InputSpec::of("samples", ValueType::Latent).doc("Latents of the VAE's space."))
        .input(InputSpec::of("vae", ValueType::Vae).doc("The VAE."))
        .output("IMAGE", ValueType::Image, "Images in [0, 1].")
        .run(move |cx| {
            let vae = cx.get::<Vae>("vae")?;
            let latent = cx.latent("samples")?;
            if latent.space != vae.latent_space() {
                return Err(NodeError::input(
                    "samples",
                    format!(
                        "the latent is in the `{}` space; this VAE decodes `{}` latents",
                        latent.space.0,
                        vae.latent_space().0
                    ),
                ));
            }
            let (_, c, _, _) = image_dims(&latent.samples, "samples")?;
            let want = vae.spec().config.latent_channels;
            if c != want {
                return Err(NodeError::input(
                    "samples",
                    format!("the VAE decodes {want}-channel latents, got {c}"),
                ));
            }
            let samples = latent.samples.to_dtype(DType::F32)?;
            let image = if tiled {
                let (tile, overlap) = tiles(cx.inputs, vae)?;
                vae.decode_tiled(&samples, tile, overlap)?
            } else {
                vae.decode(&samples)?
            };
            Ok(Value::Image(image))
        })
}

/// `VAEEncode` (`VAEEncodeTiled` when `tiled`): images to latents.
pub fn vae_encode(tiled: bool) -> NodeDef {
    let schema = if tiled {
        tile_inputs(NodeSchema::new(
            "VAEEncodeTiled",
            "latent",
            "Encodes images tile by tile, with blended overlaps, so large images fit in memory.",
        ))
    } else {
        NodeSchema::new(
            "VAEEncode",
            "latent",
            "Encodes images into latents with the VAE (the posterior's mean, so img2img is deterministic).",
        )
    };
    schema
        .input(InputSpec::of("pixels", ValueType::Image).doc("Images in [0, 1], sides a multiple of 8."))
        .input(InputSpec::of("vae", ValueType::Vae).doc("The VAE."))
        .output("LATENT", ValueType::Latent, "The VAE's latents (the model scales them for its network when sampling).")
        .run(move |cx| {
            let vae = cx.get::<Vae>("vae")?;
            let Value::Image(image) = cx.value("pixels")? else {
                return Err(NodeError::input("pixels", "expected IMAGE"));
            };
            let (_, c, h, w) = image_dims(image, "pixels")?;
            let f = vae.spec().downscale();
            if h % f != 0 || w % f != 0 {
                return Err(NodeError::input(
                    "pixels",
                    format!("the image is {w}×{h}; the VAE needs sides that are multiples of {f} (scale it first with ImageScale)"),
                ));
            }
            let image = image.to_dtype(DType::F32)?;
            // Grayscale to the RGB the VAE expects.
            let image = match (c, vae.spec().in_channels) {
                (1, 3) => image.repeat((1, 3, 1, 1))?,
                (a, b) if a == b => image,
                (a, b) => {
                    return Err(NodeError::input(
                        "pixels",
                        format!("the VAE encodes {b}-channel images, got {a}"),
                    ))
                }
            };
            let samples = if tiled {
                let (tile, overlap) = tiles(cx.inputs, vae)?;
                vae.encode_tiled(&image, tile * f, overlap * f)?
            } else {
                vae.encode(&image)?
            };
            Ok(Value::Latent(Arc::new(Latent {
                samples,
                space: vae.latent_space(),
                noise_mask: None,
            })))
        })
}
