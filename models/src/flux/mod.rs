//! Flux.1 dev and schnell: the transformer ([`model`]), BFL's original key
//! names ([`keys`]), finding its weights, and the model as a sampling
//! [`Network`].

pub mod keys;
pub mod model;

use std::path::Path;
use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_sampling::{Conditioning, FlowShift, Model, Network};

use crate::dit_files::{self, count_blocks};
use crate::packed::WeightMode;
use crate::sd::config::Shapes;
use crate::weights::TensorMap;
pub use model::{FluxConfig, FluxTransformer};

/// Flux's latent format: (latent − 0.1159) · 0.3611.
pub const LATENT_SCALE: f64 = 0.3611;
pub const LATENT_SHIFT: f64 = 0.1159;
/// The guidance strength dev sees when no `FluxGuidance` set one (ComfyUI's).
pub const DEFAULT_GUIDANCE: f64 = 3.5;
/// ComfyUI's default μ of dev's time shift (schnell: none).
pub const DEV_SHIFT: f64 = 1.15;

/// The transformer's config from BFL-layout shapes (keys without prefix).
/// The rotary axes are the released (16, 56, 56), so other head widths
/// need a config folder.
pub fn config_from_shapes(shapes: &Shapes) -> std::result::Result<FluxConfig, String> {
    let dim = dit_files::shape_reader(shapes, "Flux");
    let keys: Vec<String> = shapes.keys().cloned().collect();
    let inner = dim("img_in.weight", 0)?;
    let head_dim = dim("double_blocks.0.img_attn.norm.query_norm.scale", 0)?;
    if head_dim != 128 || inner % head_dim != 0 {
        return Err(format!(
            "a Flux transformer with {head_dim}-wide heads of {inner}: give its diffusers config folder (the released models have 128)"
        ));
    }
    let in_channels = dim("img_in.weight", 1)?;
    Ok(FluxConfig {
        patch_size: 1,
        in_channels,
        out_channels: Some(dim("final_layer.linear.weight", 0)?),
        num_layers: count_blocks(&keys, "double_blocks."),
        num_single_layers: count_blocks(&keys, "single_blocks."),
        attention_head_dim: head_dim,
        num_attention_heads: inner / head_dim,
        joint_attention_dim: dim("txt_in.weight", 1)?,
        pooled_projection_dim: dim("vector_in.in_layer.weight", 1)?,
        guidance_embeds: shapes.contains_key("guidance_in.in_layer.weight"),
        axes_dims_rope: vec![16, 56, 56],
    })
}

/// Flux's files: BFL's original layout, or diffusers'.
const LAYOUT: dit_files::Layout<FluxConfig> = dit_files::Layout {
    family: "Flux",
    marker: "double_blocks.",
    diffusers_marker: "single_transformer_blocks.",
    config_from_shapes,
    names: |key, _| keys::diffusers_names(key),
};

/// Opens a Flux transformer (see [`dit_files::open_transformer`]).
pub fn open_transformer(
    path: &Path,
    config_dir: Option<&Path>,
) -> std::result::Result<(FluxConfig, TensorMap), String> {
    dit_files::open_transformer(path, config_dir, &LAYOUT)
}

/// The Flux transformer as a sampling network.
#[derive(Debug)]
pub struct FluxNetwork {
    /// The weights it was built from and how its linears are held, so a
    /// LoRA can rebuild it with a few layers replaced.
    pub tensors: TensorMap,
    pub mode: WeightMode,
    pub transformer: FluxTransformer,
    bytes: usize,
}

impl FluxNetwork {
    /// Builds the transformer; `mode` says how its linears are held.
    pub fn build(
        config: &FluxConfig,
        tensors: &TensorMap,
        mode: WeightMode,
    ) -> std::result::Result<FluxNetwork, String> {
        let transformer = tensors.build("Flux transformer", |vb| {
            FluxTransformer::new(config, tensors.loader(vb, mode))
        })?;
        Ok(FluxNetwork {
            tensors: tensors.clone(),
            mode,
            transformer,
            bytes: crate::packed::resident_bytes(tensors, mode),
        })
    }

    /// The MODEL: velocity prediction on Flux's time-shifted schedule
    /// (dev μ = 1.15 until `ModelSamplingFlux` sets it from the size;
    /// schnell unshifted), as ComfyUI.
    pub fn into_model(self) -> Model {
        let cfg = self.transformer.config();
        let shift = if cfg.guidance_embeds {
            FlowShift::Flux(DEV_SHIFT)
        } else {
            FlowShift::Flux(0.0)
        };
        let channels = cfg.latent_channels();
        crate::dit::flow_model(Arc::new(self), shift, LATENT_SCALE, LATENT_SHIFT, channels)
    }
}

impl Network for FluxNetwork {
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let cfg = self.transformer.config();
        let (context, pooled) = crate::dit::text_inputs(
            cond,
            "Flux",
            cfg.joint_attention_dim,
            cfg.pooled_projection_dim,
        )?;
        let b = x.dim(0)?;
        let guidance = if cfg.guidance_embeds {
            let g: Vec<f32> = (0..b)
                .map(|i| {
                    let g = match cond.guidance.len() {
                        0 => None,
                        1 => cond.guidance[0],
                        _ => cond.guidance.get(i).copied().flatten(),
                    };
                    (g.unwrap_or(DEFAULT_GUIDANCE) * 1000.0) as f32
                })
                .collect();
            Some(Tensor::new(g, x.device())?)
        } else {
            None
        };
        let x = with_image_inputs(x, cond, cfg.input_channels())?;
        self.transformer
            .forward(&x, timesteps, context, pooled, guidance.as_ref())
    }

    fn size_bytes(&self) -> usize {
        self.bytes
    }

    fn release_pages(&self) {
        self.tensors.release_pages()
    }
}

/// The transformer's input: the latent `x`, then for Flux Fill the image
/// latent and the mask folded 8×8 into 64 channels (at 8× the latent's
/// size, 1 where to paint), or for Canny/Depth the control image's latent:
/// channels concatenated before packing, which packs each part as
/// diffusers' Fill and Control pipelines do before concatenating tokens.
fn with_image_inputs(x: &Tensor, cond: &Conditioning, channels: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if channels == c {
        return Ok(x.clone());
    }
    let image = cond.concat_latent.as_ref().ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "this Flux model takes an image beside the latent ({channels} input channels): \
             use InpaintModelConditioning (Fill) or InstructPixToPixConditioning (Canny, Depth)"
        ))
    })?;
    let image = crate::inpaint::fit_to(image.to_dtype(x.dtype())?, b, h, w)?;
    match channels - c {
        n if n == image.dim(1)? => Tensor::cat(&[x, &image], 1),
        n if n == image.dim(1)? + 64 => {
            let mask = match &cond.concat_mask {
                Some(m) => crate::inpaint::mask_planes(m, x.dtype())?,
                None => Tensor::ones((1, 1, 8 * h, 8 * w), x.dtype(), x.device())?,
            };
            let mask = crate::inpaint::fit_to(mask, b, 8 * h, 8 * w)?;
            // [B, 1, 8h, 8w] → [B, 64, h, w]: each latent cell's 8×8 pixels.
            let folded = mask
                .reshape((b, h, 8, w, 8))?
                .permute((0, 2, 4, 1, 3))?
                .reshape((b, 64, h, w))?;
            Tensor::cat(&[x, &image, &folded], 1)
        }
        n => candle_core::bail!(
            "this Flux model takes {channels} input channels: the latent's {c} and {n} more, which no image input gives"
        ),
    }
}
