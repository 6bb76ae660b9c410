//! The Stable Diffusion node types, with ComfyUI's names: loaders, text
//! encoding and the VAE.

use std::sync::Arc;

use weft_core::{
    InputSpec, Inputs, Latent, Node, NodeContext, NodeError, NodeSchema, Value, ValueType,
};

use crate::image::image_dims;
use crate::sampling_nodes::handles::{handle, value};
use crate::sampling_nodes::run::latent_input;
use weft_models::clip::TextEncoder;
use weft_models::vae::Vae;

/// Registers the Stable Diffusion nodes.
pub fn register(registry: &mut weft_core::Registry) -> Result<(), String> {
    registry.register(ClipTextEncode::new())?;
    registry.register(ClipSetLastLayer::new())?;
    registry.register(VaeDecode::new(false))?;
    registry.register(VaeDecode::new(true))?;
    registry.register(VaeEncode::new(false))?;
    registry.register(VaeEncode::new(true))?;
    registry.register(EmptyLatentImage::new())?;
    crate::controlnet::register(registry)?;
    Ok(())
}

fn clip_input(inputs: &Inputs) -> Result<&TextEncoder, NodeError> {
    handle::<TextEncoder>(inputs, "clip", ValueType::Clip)
}

fn vae_input(inputs: &Inputs) -> Result<&Vae, NodeError> {
    handle::<Vae>(inputs, "vae", ValueType::Vae)
}

/// Prompt text to conditioning.
pub struct ClipTextEncode(NodeSchema);

impl ClipTextEncode {
    pub fn new() -> Self {
        ClipTextEncode(
            NodeSchema::new(
                "CLIPTextEncode",
                "conditioning",
                "Encodes a prompt with CLIP. `(word:1.3)` weights words (bare parentheses ×1.1, nesting multiplies, `\\(` is a literal parenthesis); prompts over 75 tokens are encoded in 77-token chunks placed side by side, as in ComfyUI.",
            )
            .input(InputSpec::string("text").default("").doc("The prompt."))
            .input(InputSpec::of("clip", ValueType::Clip).doc("The text encoder."))
            .output("CONDITIONING", ValueType::Conditioning, "The text states the UNet attends to, and the pooled output."),
        )
    }
}

impl Default for ClipTextEncode {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ClipTextEncode {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let clip = clip_input(ctx.inputs)?;
        let cond = clip
            .encode(ctx.inputs.str("text")?)
            .map_err(|e| NodeError::new(format!("text encoding failed: {e}")))?;
        Ok(vec![value(ValueType::Conditioning, cond)])
    }
}

/// Which CLIP layer conditions the UNet ("clip skip").
pub struct ClipSetLastLayer(NodeSchema);

impl ClipSetLastLayer {
    pub fn new() -> Self {
        ClipSetLastLayer(
            NodeSchema::new(
                "CLIPSetLastLayer",
                "conditioning",
                "Stops the text encoder at an earlier layer: -1 is the last layer, -2 the one before (A1111's \"clip skip 2\"). SD 2.x single files default to -2, which is what SD 2.x was trained with.",
            )
            .input(InputSpec::of("clip", ValueType::Clip).doc("The text encoder."))
            .input(InputSpec::int("stop_at_clip_layer").default(-1).range(-48.0, -1.0).doc("The layer, counted from the end."))
            .output("CLIP", ValueType::Clip, "The same encoder, stopping at that layer."),
        )
    }
}

impl Default for ClipSetLastLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ClipSetLastLayer {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let mut clip = clip_input(ctx.inputs)?.clone();
        let back = ctx.inputs.int("stop_at_clip_layer")?;
        let n = clip.num_layers() as i64;
        if -back > n {
            return Err(NodeError::input(
                "stop_at_clip_layer",
                format!("the text encoder has {n} layers; {back} is before the first"),
            ));
        }
        clip.layer = (n + 1 + back) as usize;
        Ok(vec![value(ValueType::Clip, clip)])
    }
}

/// Tile options shared by the tiled VAE nodes.
fn tile_inputs(schema: NodeSchema) -> NodeSchema {
    schema
        .input(InputSpec::int("tile_size").default(512).range(64.0, 4096.0).doc("Tile edge in pixels (a multiple of the VAE's 8)."))
        .input(InputSpec::int("overlap").default(64).range(0.0, 4096.0).doc("Pixels each tile shares with its neighbours, blended with linear ramps so no seam shows."))
}

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

/// Latents to images.
pub struct VaeDecode(NodeSchema, bool);

impl VaeDecode {
    pub fn new(tiled: bool) -> Self {
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
        VaeDecode(
            schema
                .input(
                    InputSpec::of("samples", ValueType::Latent).doc("Latents of the VAE's space."),
                )
                .input(InputSpec::of("vae", ValueType::Vae).doc("The VAE."))
                .output("IMAGE", ValueType::Image, "Images in [0, 1]."),
            tiled,
        )
    }
}

impl Node for VaeDecode {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let vae = vae_input(ctx.inputs)?;
        let latent = latent_input(ctx.inputs, "samples")?;
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
        let samples = latent.samples.to_dtype(candle_core::DType::F32)?;
        let image = if self.1 {
            let (tile, overlap) = tiles(ctx.inputs, vae)?;
            vae.decode_tiled(&samples, tile, overlap)?
        } else {
            vae.decode(&samples)?
        };
        Ok(vec![Value::Image(image)])
    }
}

/// Images to latents.
pub struct VaeEncode(NodeSchema, bool);

impl VaeEncode {
    pub fn new(tiled: bool) -> Self {
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
        VaeEncode(
            schema
                .input(
                    InputSpec::of("pixels", ValueType::Image)
                        .doc("Images in [0, 1], sides a multiple of 8."),
                )
                .input(InputSpec::of("vae", ValueType::Vae).doc("The VAE."))
                .output(
                    "LATENT",
                    ValueType::Latent,
                    "The latents, scaled for the UNet.",
                ),
            tiled,
        )
    }
}

impl Node for VaeEncode {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let vae = vae_input(ctx.inputs)?;
        let Value::Image(image) = ctx.inputs.value("pixels")? else {
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
        let image = image.to_dtype(candle_core::DType::F32)?;
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
        let samples = if self.1 {
            let (tile, overlap) = tiles(ctx.inputs, vae)?;
            vae.encode_tiled(&image, tile * f, overlap * f)?
        } else {
            vae.encode(&image)?
        };
        Ok(vec![Value::Latent(Arc::new(Latent {
            samples,
            space: vae.latent_space(),
            noise_mask: None,
        }))])
    }
}

/// An empty Stable Diffusion latent for a picture size.
pub struct EmptyLatentImage(NodeSchema);

impl EmptyLatentImage {
    pub fn new() -> Self {
        EmptyLatentImage(
            NodeSchema::new(
                "EmptyLatentImage",
                "latent",
                "Zero latents for Stable Diffusion 1.x/2.x images of the given size (4 channels, 1/8 of the pixels on each side): the start of text-to-image.",
            )
            .input(InputSpec::int("width").default(512).range(8.0, 16384.0).step(8.0).doc("Image width in pixels, a multiple of 8."))
            .input(InputSpec::int("height").default(512).range(8.0, 16384.0).step(8.0).doc("Image height in pixels, a multiple of 8."))
            .input(InputSpec::int("batch_size").default(1).range(1.0, 4096.0).doc("How many images."))
            .output("LATENT", ValueType::Latent, "The empty latents."),
        )
    }
}

impl Default for EmptyLatentImage {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for EmptyLatentImage {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let side = |name: &str| -> Result<usize, NodeError> {
            let v = ctx.inputs.int(name)?;
            if v % 8 != 0 {
                return Err(NodeError::input(
                    name,
                    format!("{v} is not a multiple of 8"),
                ));
            }
            Ok(v as usize / 8)
        };
        let (w, h) = (side("width")?, side("height")?);
        let b = ctx.inputs.int("batch_size")? as usize;
        let samples = candle_core::Tensor::zeros(
            (b, 4, h, w),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )?;
        Ok(vec![Value::Latent(Arc::new(Latent {
            samples,
            space: weft_models::vae::sd_latent_space(),
            noise_mask: None,
        }))])
    }
}
