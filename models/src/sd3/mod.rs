//! Stable Diffusion 3 and 3.5: the MM-DiT ([`mmdit`]), its original key
//! names ([`keys`]), and finding its weights in single files and diffusers
//! folders; the model as a sampling [`Network`].

pub mod keys;
pub mod mmdit;

use std::path::Path;
use std::sync::Arc;

use candle_core::{Result, Tensor};
use weft_sampling::{Conditioning, FlowShift, Model, Network};

use crate::dit_files::{self, count_blocks};
use crate::packed::WeightMode;
use crate::sd::config::Shapes;
use crate::weights::TensorMap;
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
    let dim = dit_files::shape_reader(shapes, "SD3");
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

/// SD3's files: Stability's original layout, or diffusers'.
const LAYOUT: dit_files::Layout<Sd3Config> = dit_files::Layout {
    family: "SD3",
    marker: "joint_blocks.",
    diffusers_marker: "transformer_blocks.0.attn.add_q_proj",
    config_from_shapes,
    names: |key, config| keys::diffusers_names(key, config.num_layers),
};

/// Opens an SD3 transformer (see [`dit_files::open_transformer`]).
pub fn open_transformer(
    path: &Path,
    config_dir: Option<&Path>,
) -> std::result::Result<(Sd3Config, TensorMap), String> {
    dit_files::open_transformer(path, config_dir, &LAYOUT)
}

/// The SD3 transformer as a sampling network.
#[derive(Clone, Debug)]
pub struct Sd3Network {
    /// The weights it was built from and how its linears are held, so a
    /// LoRA can rebuild it with a few layers replaced.
    pub tensors: TensorMap,
    pub mode: WeightMode,
    pub transformer: Arc<Sd3Transformer>,
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
            tensors: tensors.clone(),
            mode,
            transformer: Arc::new(transformer),
            bytes: crate::packed::resident_bytes(tensors, mode),
            skip: Vec::new(),
        })
    }

    /// The MODEL: velocity prediction on SD3's shifted flow schedule.
    pub fn into_model(self) -> Model {
        let channels = self.transformer.config().out_channels;
        let shift = FlowShift::Sd3(DEFAULT_SHIFT);
        crate::dit::flow_model(Arc::new(self), shift, LATENT_SCALE, LATENT_SHIFT, channels)
    }
}

impl Network for Sd3Network {
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let cfg = self.transformer.config();
        let (context, pooled) = crate::dit::text_inputs(
            cond,
            "SD3",
            cfg.joint_attention_dim,
            cfg.pooled_projection_dim,
        )?;
        self.transformer
            .forward(x, timesteps, context, pooled, &self.skip)
    }

    fn size_bytes(&self) -> usize {
        self.bytes
    }

    fn release_pages(&self) {
        self.tensors.release_pages()
    }

    fn without_blocks(&self, blocks: &[usize]) -> Option<Arc<dyn Network>> {
        Some(Arc::new(Sd3Network {
            skip: blocks.to_vec(),
            ..self.clone()
        }))
    }
}
