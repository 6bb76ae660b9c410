//! Flux.1 dev and schnell: the transformer ([`model`]), BFL's original key
//! names ([`keys`]), finding its weights, and the model as a sampling
//! [`Network`].

pub mod keys;
pub mod model;

use std::path::Path;
use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_sampling::{Conditioning, FlowShift, LatentFormat, Model, ModelSampling, Network};

use crate::dit_files::{self, count_blocks, key_prefix};
use crate::packed::WeightMode;
use crate::sd::config::Shapes;
use crate::weights::{self, TensorMap, WeightFile};
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
    let dim = |key: &str, i: usize| -> std::result::Result<usize, String> {
        shapes
            .get(key)
            .and_then(|s| s.get(i).copied())
            .ok_or_else(|| format!("no `{key}` to read the Flux transformer's size from"))
    };
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

/// Opens a Flux transformer: a diffusers pipeline or component folder, a
/// transformer file in BFL's layout (`double_blocks.…`, bare or under
/// `model.diffusion_model.`), or a diffusers-named file with `config_dir`.
pub fn open_transformer(
    path: &Path,
    config_dir: Option<&Path>,
) -> std::result::Result<(FluxConfig, TensorMap), String> {
    let folder_config = |dir: &Path| {
        dit_files::component_config(&dir.join("transformer"))
            .or_else(|_| dit_files::component_config(dir))
    };
    if path.is_dir() {
        let dir = if path.join("transformer").is_dir() {
            path.join("transformer")
        } else {
            path.to_path_buf()
        };
        let config = dit_files::component_config(&dir)?;
        let files = dit_files::component_files(&dir)?;
        return Ok((
            config,
            dit_files::tensor_map(&files, "", weights::diffusers_names)?,
        ));
    }
    let file = WeightFile::open(path)?;
    let all = file.shapes();
    let keys: Vec<String> = all.keys().cloned().collect();
    let Some(prefix) = key_prefix(&keys, "double_blocks.", &["model.diffusion_model."]) else {
        if key_prefix(&keys, "single_transformer_blocks.", &[]).is_some() {
            let dir = config_dir.ok_or_else(|| {
                format!(
                    "{}: a diffusers-named Flux transformer needs its config folder",
                    path.display()
                )
            })?;
            let mut map = TensorMap::default();
            map.add_file(&file, "", weights::diffusers_names);
            return Ok((folder_config(dir)?, map));
        }
        return Err(format!(
            "{}: no Flux transformer (`double_blocks.…`)",
            path.display()
        ));
    };
    let shapes: Shapes = all
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
        .collect();
    let config = match config_dir {
        Some(dir) => folder_config(dir)?,
        None => config_from_shapes(&shapes).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    let mut map = TensorMap::default();
    map.add_file(&file, prefix, keys::diffusers_names);
    Ok((config, map))
}

/// The Flux transformer as a sampling network.
#[derive(Debug)]
pub struct FluxNetwork {
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
            transformer,
            bytes: tensors.f32_bytes(),
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
        Model {
            network: Arc::new(self),
            sampling: ModelSampling::flow_shifted(1000.0, shift),
            latent_space: crate::vae::sd_latent_space(),
            latent_format: LatentFormat {
                scale: LATENT_SCALE,
                shift: LATENT_SHIFT,
                preview: weft_sampling::LatentPreview::Pixels,
            },
            differential_diffusion: false,
            latent_channels: Some(channels),
        }
    }
}

impl Network for FluxNetwork {
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let context = cond.context.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "the Flux transformer needs text states (CLIPTextEncode)".into(),
            )
        })?;
        let pooled = cond.pooled.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "the Flux transformer needs a pooled CLIP-L embedding (a Flux text encoder)".into(),
            )
        })?;
        let cfg = self.transformer.config();
        if context.dim(2)? != cfg.joint_attention_dim || pooled.dim(1)? != cfg.pooled_projection_dim
        {
            candle_core::bail!(
                "the Flux transformer takes {}-wide text states and a {}-wide pooled embedding, got {} and {} (a text encoder of another family?)",
                cfg.joint_attention_dim,
                cfg.pooled_projection_dim,
                context.dim(2)?,
                pooled.dim(1)?
            );
        }
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
        self.transformer
            .forward(x, timesteps, context, pooled, guidance.as_ref())
    }

    fn size_bytes(&self) -> usize {
        self.bytes
    }
}
