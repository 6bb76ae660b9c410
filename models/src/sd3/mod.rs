//! Stable Diffusion 3 and 3.5: the MM-DiT ([`mmdit`]), its original key
//! names ([`keys`]), and finding its weights in single files and diffusers
//! folders; the model as a sampling [`Network`].

pub mod keys;
pub mod mmdit;

use std::path::Path;
use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_sampling::{Conditioning, FlowShift, LatentFormat, Model, ModelSampling, Network};

use crate::dit_files::{self, count_blocks, key_prefix};
use crate::packed::WeightMode;
use crate::sd::config::Shapes;
use crate::weights::{self, TensorMap, WeightFile};
pub use mmdit::{Sd3Config, Sd3Transformer};

/// The prefix of the transformer in an all-in-one checkpoint.
pub const CHECKPOINT_PREFIX: &str = "model.diffusion_model.";

/// SD3's latent format: (latent − 0.0609) · 1.5305.
pub const LATENT_SCALE: f64 = 1.5305;
pub const LATENT_SHIFT: f64 = 0.0609;
/// ComfyUI's default shift for SD3 (`ModelSamplingSD3`).
pub const DEFAULT_SHIFT: f64 = 3.0;

/// The transformer's config from an original-layout file's shapes (keys
/// without prefix). The head width is 64 in every released SD3 (and read
/// from the q/k norms where SD3.5 has them).
pub fn config_from_shapes(shapes: &Shapes) -> std::result::Result<Sd3Config, String> {
    let dim = |key: &str, i: usize| -> std::result::Result<usize, String> {
        shapes
            .get(key)
            .and_then(|s| s.get(i).copied())
            .ok_or_else(|| format!("no `{key}` to read the SD3 transformer's size from"))
    };
    let keys: Vec<String> = shapes.keys().cloned().collect();
    let inner = dim("x_embedder.proj.weight", 0)?;
    let patch = dim("x_embedder.proj.weight", 2)?;
    let head_dim = match shapes.get("joint_blocks.0.x_block.attn.ln_q.weight") {
        Some(s) => s[0],
        None => 64,
    };
    let layers = count_blocks(&keys, "joint_blocks.");
    let positions = dim("pos_embed", 1)?;
    let max = (positions as f64).sqrt().round() as usize;
    let out = dim("final_layer.linear.weight", 0)? / (patch * patch).max(1);
    if inner % head_dim != 0 || max * max != positions || layers == 0 {
        return Err(format!(
            "not an SD3 transformer: width {inner}, {layers} blocks, {positions} positions"
        ));
    }
    Ok(Sd3Config {
        sample_size: 128,
        patch_size: patch,
        in_channels: dim("x_embedder.proj.weight", 1)?,
        num_layers: layers,
        attention_head_dim: head_dim,
        num_attention_heads: inner / head_dim,
        joint_attention_dim: dim("context_embedder.weight", 1)?,
        caption_projection_dim: inner,
        pooled_projection_dim: dim("y_embedder.mlp.0.weight", 1)?,
        out_channels: out,
        pos_embed_max_size: Some(max),
        dual_attention_layers: (0..layers)
            .filter(|i| shapes.contains_key(&format!("joint_blocks.{i}.x_block.attn2.qkv.weight")))
            .collect(),
        qk_norm: shapes
            .contains_key("joint_blocks.0.x_block.attn.ln_q.weight")
            .then(|| "rms_norm".to_string()),
    })
}

/// Opens an SD3 transformer: a diffusers pipeline folder (`transformer/`)
/// or component folder, an all-in-one checkpoint
/// (`model.diffusion_model.joint_blocks.…`) or a transformer-only file in
/// Stability's layout. `config_dir`, a diffusers folder, overrides the
/// config read from the shapes.
pub fn open_transformer(
    path: &Path,
    config_dir: Option<&Path>,
) -> std::result::Result<(Sd3Config, TensorMap), String> {
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
    let Some(prefix) = key_prefix(&keys, "joint_blocks.", &[CHECKPOINT_PREFIX]) else {
        if key_prefix(&keys, "transformer_blocks.0.attn.add_q_proj", &[]).is_some() {
            // A diffusers-named transformer file: its folder's config is needed.
            let dir = config_dir.ok_or_else(|| {
                format!(
                    "{}: a diffusers-named SD3 transformer needs its config folder",
                    path.display()
                )
            })?;
            let config = dit_files::component_config(&dir.join("transformer"))
                .or_else(|_| dit_files::component_config(dir))?;
            let mut map = TensorMap::default();
            map.add_file(&file, "", weights::diffusers_names);
            return Ok((config, map));
        }
        return Err(format!(
            "{}: no SD3 transformer (`joint_blocks.…`)",
            path.display()
        ));
    };
    let shapes: Shapes = all
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
        .collect();
    let config = match config_dir {
        Some(dir) => dit_files::component_config(&dir.join("transformer"))
            .or_else(|_| dit_files::component_config(dir))?,
        None => config_from_shapes(&shapes).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    let layers = config.num_layers;
    let mut map = TensorMap::default();
    map.add_file(&file, prefix, |k| keys::diffusers_names(k, layers));
    Ok((config, map))
}

/// The SD3 transformer as a sampling network.
#[derive(Debug)]
pub struct Sd3Network {
    pub transformer: Sd3Transformer,
    bytes: usize,
    /// Blocks left out of every forward (a skip-layer-guidance variant).
    pub skip: Vec<usize>,
}

impl Sd3Network {
    /// Builds the transformer; `mode` says how its linears are held.
    pub fn build(
        config: &Sd3Config,
        tensors: &TensorMap,
        mode: WeightMode,
    ) -> std::result::Result<Sd3Network, String> {
        let transformer = tensors.build("SD3 transformer", |vb| {
            Sd3Transformer::new(config, tensors.loader(vb, mode))
        })?;
        Ok(Sd3Network {
            transformer,
            bytes: tensors.f32_bytes(),
            skip: Vec::new(),
        })
    }

    /// The MODEL: velocity prediction on SD3's shifted flow schedule.
    pub fn into_model(self) -> Model {
        let channels = self.transformer.config().out_channels;
        Model {
            network: Arc::new(self),
            sampling: ModelSampling::flow_shifted(1000.0, FlowShift::Sd3(DEFAULT_SHIFT)),
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

impl Network for Sd3Network {
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let context = cond.context.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("the SD3 transformer needs text states (CLIPTextEncode)".into())
        })?;
        let pooled = cond.pooled.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "the SD3 transformer needs a pooled text embedding (an SD3 text encoder)".into(),
            )
        })?;
        let cfg = self.transformer.config();
        if context.dim(2)? != cfg.joint_attention_dim || pooled.dim(1)? != cfg.pooled_projection_dim
        {
            candle_core::bail!(
                "the SD3 transformer takes {}-wide text states and a {}-wide pooled embedding, got {} and {} (a text encoder of another family?)",
                cfg.joint_attention_dim,
                cfg.pooled_projection_dim,
                context.dim(2)?,
                pooled.dim(1)?
            );
        }
        self.transformer
            .forward(x, timesteps, context, pooled, &self.skip)
    }

    fn size_bytes(&self) -> usize {
        self.bytes
    }
}
