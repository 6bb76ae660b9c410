use std::sync::Arc;

use weft_core::{
    Define, InputSpec, Latent, LatentSpace, NodeDef, NodeError, NodeSchema, Value, ValueType,
};

use super::{image_dims, image_input};

/// `LatentToImage`: a pixel-space latent (values in [-1, 1]) as an image
/// (values in [0, 1]).
pub fn latent_to_image() -> NodeDef {
    NodeSchema::new(
        "LatentToImage",
        "image",
        "Turns a pixel-space latent (values in [-1, 1]) into an image in [0, 1], clamped; latents of other spaces need their VAE.",
    )
    .input(InputSpec::of("latent", ValueType::Latent).doc("A latent in the `pixels` space."))
    .output("IMAGE", ValueType::Image, "The image, (x + 1) / 2.")
    .run(|cx| {
        let latent = cx.latent("latent")?;
        // Reading another space's latent as pixels would silently produce
        // noise-like garbage; a VAE is what maps those to images.
        if latent.space != LatentSpace::pixels() {
            return Err(NodeError::input(
                "latent",
                format!(
                    "the latent is in the `{}` space, not `pixels`; decode it with that space's VAE",
                    latent.space.0
                ),
            ));
        }
        image_dims(&latent.samples, "latent")?;
        let image = ((latent.samples.to_dtype(candle_core::DType::F32)? + 1.0)? * 0.5)?
            .clamp(0f32, 1f32)?;
        Ok(Value::Image(image))
    })
}

/// `ImageToLatent`: an image as a pixel-space latent, the inverse of
/// `LatentToImage`.
pub fn image_to_latent() -> NodeDef {
    NodeSchema::new(
        "ImageToLatent",
        "image",
        "Turns an image in [0, 1] into a pixel-space latent in [-1, 1] (x·2 − 1), for pixel-space models and img2img.",
    )
    .input(InputSpec::of("image", ValueType::Image).doc("The images."))
    .output("LATENT", ValueType::Latent, "The latent, in the `pixels` space.")
    .run(|cx| {
        let image = image_input(cx, "image")?;
        image_dims(image, "image")?;
        let samples = ((image.to_dtype(candle_core::DType::F32)? * 2.0)? - 1.0)?;
        Ok(Value::Latent(Arc::new(Latent {
            samples,
            space: LatentSpace::pixels(),
            noise_mask: None,
        })))
    })
}
