use std::sync::Arc;

use weft_core::{
    InputSpec, Latent, LatentSpace, Node, NodeContext, NodeError, NodeSchema, Value, ValueType,
};

use super::image_dims;

/// A pixel-space latent (values in [-1, 1]) as an image (values in [0, 1]).
pub struct LatentToImage(NodeSchema);

impl LatentToImage {
    pub fn new() -> Self {
        LatentToImage(
            NodeSchema::new(
                "LatentToImage",
                "image",
                "Turns a pixel-space latent (values in [-1, 1]) into an image in [0, 1], clamped; latents of other spaces need their VAE.",
            )
            .input(InputSpec::of("latent", ValueType::Latent).doc("A latent in the `pixels` space."))
            .output("IMAGE", ValueType::Image, "The image, (x + 1) / 2."),
        )
    }
}

impl Default for LatentToImage {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for LatentToImage {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let Value::Latent(latent) = ctx.inputs.value("latent")? else {
            return Err(NodeError::input("latent", "expected LATENT"));
        };
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
        Ok(vec![Value::Image(image)])
    }
}

/// An image as a pixel-space latent, the inverse of [`LatentToImage`].
pub struct ImageToLatent(NodeSchema);

impl ImageToLatent {
    pub fn new() -> Self {
        ImageToLatent(
            NodeSchema::new(
                "ImageToLatent",
                "image",
                "Turns an image in [0, 1] into a pixel-space latent in [-1, 1] (x·2 − 1), for pixel-space models and img2img.",
            )
            .input(InputSpec::of("image", ValueType::Image).doc("The images."))
            .output("LATENT", ValueType::Latent, "The latent, in the `pixels` space."),
        )
    }
}

impl Default for ImageToLatent {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ImageToLatent {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let Value::Image(image) = ctx.inputs.value("image")? else {
            return Err(NodeError::input("image", "expected IMAGE"));
        };
        image_dims(image, "image")?;
        let samples = ((image.to_dtype(candle_core::DType::F32)? * 2.0)? - 1.0)?;
        Ok(vec![Value::Latent(Arc::new(Latent {
            samples,
            space: LatentSpace::pixels(),
            noise_mask: None,
        }))])
    }
}
