use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use weft_core::{
    Define, InputSpec, Latent, LatentSpace, NodeDef, NodeError, NodeSchema, Value, ValueType,
};

/// `EmptyLatent`: an all-zero latent batch to sample into.
pub fn empty_latent() -> NodeDef {
    NodeSchema::new("EmptyLatent", "latent", "A zero latent of the given image size; `downscale` is the VAE factor (8 for Stable Diffusion, 1 for pixel-space models).")
        .input(InputSpec::int("width").default(28).range(1.0, 16384.0).doc("Image width in pixels."))
        .input(InputSpec::int("height").default(28).range(1.0, 16384.0).doc("Image height in pixels."))
        .input(InputSpec::int("channels").default(1).range(1.0, 64.0).doc("Latent channels (4 for SD 1.x/2.x)."))
        .input(InputSpec::int("downscale").default(1).range(1.0, 64.0).doc("Pixels per latent cell."))
        .input(InputSpec::int("batch_size").default(1).range(1.0, 4096.0).doc("How many latents."))
        .input(InputSpec::string("space").default("pixels").doc("The latent space tag, so a VAE can refuse a foreign latent."))
        .output("LATENT", ValueType::Latent, "The empty latent.")
        .run(|cx| {
            let down = cx.int("downscale")? as usize;
            let (w, h) = (cx.int("width")? as usize, cx.int("height")? as usize);
            if w % down != 0 || h % down != 0 {
                return Err(NodeError::input(
                    "width",
                    format!("{w}×{h} is not a multiple of downscale {down}"),
                ));
            }
            let shape = (
                cx.int("batch_size")? as usize,
                cx.int("channels")? as usize,
                h / down,
                w / down,
            );
            let samples = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            Ok(Value::Latent(Arc::new(Latent {
                samples,
                space: LatentSpace::new(cx.str("space")?),
                noise_mask: None,
            })))
        })
}

/// Zero VAE latents of `channels` for images of the inputs' size (1/8 of
/// the pixels on each side), as `EmptyLatentImage` and its SD3 form make.
fn empty_vae_latents(
    name: &str,
    category: &str,
    doc: &str,
    default_side: i64,
    step: f64,
    channels: usize,
) -> NodeDef {
    NodeSchema::new(name, category, doc)
        .input(
            InputSpec::int("width")
                .default(default_side)
                .range(step, 16384.0)
                .step(step)
                .doc("Image width in pixels, a multiple of 8."),
        )
        .input(
            InputSpec::int("height")
                .default(default_side)
                .range(step, 16384.0)
                .step(step)
                .doc("Image height in pixels, a multiple of 8."),
        )
        .input(
            InputSpec::int("batch_size")
                .default(1)
                .range(1.0, 4096.0)
                .doc("How many images."),
        )
        .output("LATENT", ValueType::Latent, "The empty latents.")
        .run(move |cx| {
            let side = |name: &str| -> Result<usize, NodeError> {
                let v = cx.int(name)?;
                if v % 8 != 0 {
                    return Err(NodeError::input(
                        name,
                        format!("{v} is not a multiple of 8"),
                    ));
                }
                Ok(v as usize / 8)
            };
            let (w, h) = (side("width")?, side("height")?);
            let b = cx.int("batch_size")? as usize;
            Ok(Value::Latent(Arc::new(Latent {
                samples: Tensor::zeros((b, channels, h, w), DType::F32, &Device::Cpu)?,
                space: weft_models::vae::sd_latent_space(),
                noise_mask: None,
            })))
        })
}

/// `EmptyLatentImage`: an empty Stable Diffusion latent for a picture size.
pub fn empty_latent_image() -> NodeDef {
    empty_vae_latents(
        "EmptyLatentImage",
        "latent",
        "Zero latents for Stable Diffusion 1.x/2.x and SDXL images of the given size (4 channels, 1/8 of the pixels on each side): the start of text-to-image.",
        512,
        8.0,
        4,
    )
}

/// `EmptySD3LatentImage`: empty 16-channel latents (SD3, Flux).
pub fn empty_sd3_latent_image() -> NodeDef {
    empty_vae_latents(
        "EmptySD3LatentImage",
        "latent/sd3",
        "Zero latents for SD3, SD3.5 and Flux images of the given size (16 channels, 1/8 of the pixels on each side; Flux pads to whole 2×2 patches).",
        1024,
        16.0,
        16,
    )
}
