//! Components of a single-file checkpoint worked out from its tensor names
//! and shapes (the layout A1111, ComfyUI and Civitai files use).

use std::collections::HashMap;

use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

use super::{Family, TextTime, UNetSpec, VaeSpec};
use crate::clip::{Activation, ClipConfig};
use crate::sd::ldm::{UNET_PREFIX, VAE_PREFIX};
use weft_sampling::Prediction;

/// Tensor names (full keys) and shapes of a single-file checkpoint.
pub type Shapes = HashMap<String, Vec<usize>>;

pub(crate) fn shape<'a>(shapes: &'a Shapes, key: &str) -> Result<&'a [usize], String> {
    shapes
        .get(key)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("missing `{key}`"))
}

pub(crate) fn dim(shapes: &Shapes, key: &str, d: usize) -> Result<usize, String> {
    shape(shapes, key)?
        .get(d)
        .copied()
        .ok_or_else(|| format!("`{key}` has too few dimensions"))
}

/// SDXL's features per micro-conditioning number; the checkpoints do not
/// state it (it has no weights), and every SDXL-family model uses 256.
pub(crate) const SDXL_TIME_DIM: usize = 256;

/// SDXL's added embedding (`label_emb.0.0`, the MLP's first layer), if the
/// UNet has one.
fn added_from_shapes(shapes: &Shapes, context_dim: usize) -> Option<TextTime> {
    let input_dim = dim(shapes, &format!("{UNET_PREFIX}label_emb.0.0.weight"), 1).ok()?;
    Some(TextTime::new(SDXL_TIME_DIM, input_dim, context_dim))
}

/// What the shapes of a single file say about its family.
pub fn detect_family(shapes: &Shapes) -> Family {
    let context = shapes
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with("attn2.to_k.weight"))
        .and_then(|(_, s)| s.get(1).copied());
    context.map_or(Family::Other, |c| {
        Family::from_context(c, added_from_shapes(shapes, c).as_ref())
    })
}

/// Counts the indices `i` for which `{prefix}{i}.` starts some key.
pub(crate) fn count_indexed(shapes: &Shapes, prefix: &str) -> usize {
    let mut n = 0;
    while shapes
        .keys()
        .any(|k| k.starts_with(&format!("{prefix}{n}.")))
    {
        n += 1;
    }
    n
}

/// The UNet of a single file, for a known family.
pub fn unet_from_shapes(shapes: &Shapes, family: Family) -> Result<UNetSpec, String> {
    let p = UNET_PREFIX;
    let in_channels = dim(shapes, &format!("{p}input_blocks.0.0.weight"), 1)?;
    let out_channels = dim(shapes, &format!("{p}out.2.weight"), 0)?;
    let n_input = count_indexed(shapes, &format!("{p}input_blocks."));
    let downsamples: Vec<usize> = (1..n_input)
        .filter(|i| shapes.contains_key(&format!("{p}input_blocks.{i}.0.op.weight")))
        .collect();
    let lpb = downsamples.first().map(|&i| i - 1).unwrap_or(n_input - 1);
    let levels = downsamples.len() + 1;
    if lpb == 0 || n_input != levels * (lpb + 1) {
        return Err(format!(
            "input blocks do not form levels of equal depth ({n_input} blocks, {} downsamples)",
            downsamples.len()
        ));
    }
    let mut blocks = Vec::with_capacity(levels);
    let mut linear = false;
    let mut context = None;
    for l in 0..levels {
        let first = 1 + l * (lpb + 1);
        let out_channels = dim(
            shapes,
            &format!("{p}input_blocks.{first}.0.out_layers.3.weight"),
            0,
        )?;
        let attn = format!("{p}input_blocks.{first}.1.");
        let depth = count_indexed(shapes, &format!("{attn}transformer_blocks."));
        if depth > 0 {
            linear = shape(shapes, &format!("{attn}proj_in.weight"))?.len() == 2;
            context = Some(dim(
                shapes,
                &format!("{attn}transformer_blocks.0.attn2.to_k.weight"),
                1,
            )?);
        }
        let heads = family.heads(out_channels).ok_or(
            "the attention head count of this UNet cannot be read from its shapes (not SD 1.x or 2.x); give a diffusers folder as its config",
        )?;
        blocks.push(BlockConfig {
            out_channels,
            use_cross_attn: (depth > 0).then_some(depth),
            attention_head_dim: heads,
        });
    }
    let cross_attention_dim = context.ok_or("the UNet has no cross-attention")?;
    let mid_depth = count_indexed(shapes, &format!("{p}middle_block.1.transformer_blocks."));
    Ok(UNetSpec {
        in_channels,
        out_channels,
        mid_depth: mid_depth.max(1),
        added: added_from_shapes(shapes, cross_attention_dim),
        config: UNet2DConditionModelConfig {
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            blocks,
            layers_per_block: lpb,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim,
            sliced_attention_size: None,
            use_linear_projection: linear,
        },
    })
}

/// The VAE of a single file (SD's: 32 groups, scaling 0.18215).
pub fn vae_from_shapes(shapes: &Shapes) -> Result<VaeSpec, String> {
    let p = format!("{VAE_PREFIX}encoder.");
    let levels = count_indexed(shapes, &format!("{p}down."));
    if levels == 0 {
        return Err(format!("no VAE encoder levels (`{p}down.0.…`)"));
    }
    let block_out_channels = (0..levels)
        .map(|l| dim(shapes, &format!("{p}down.{l}.block.0.conv1.weight"), 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VaeSpec {
        in_channels: dim(shapes, &format!("{p}conv_in.weight"), 1)?,
        out_channels: dim(shapes, &format!("{VAE_PREFIX}decoder.conv_out.weight"), 0)?,
        config: AutoEncoderKLConfig {
            block_out_channels,
            layers_per_block: count_indexed(shapes, &format!("{p}down.0.block.")),
            latent_channels: dim(shapes, &format!("{VAE_PREFIX}decoder.conv_in.weight"), 1)?,
            norm_num_groups: 32,
            use_quant_conv: shapes.contains_key(&format!("{VAE_PREFIX}quant_conv.weight")),
            use_post_quant_conv: shapes
                .contains_key(&format!("{VAE_PREFIX}post_quant_conv.weight")),
        },
        scaling_factor: 0.18215,
    })
}

/// The VAE of a diffusers-named weights file without its config.json
/// (`encoder.down_blocks.…`, as `diffusion_pytorch_model.safetensors` of
/// sdxl-vae-fp16-fix); SD's 32 groups. The scaling factor is the model's
/// business (weft's VAE works on unscaled latents).
pub fn vae_from_diffusers_shapes(shapes: &Shapes) -> Result<VaeSpec, String> {
    let levels = count_indexed(shapes, "encoder.down_blocks.");
    if levels == 0 {
        return Err("no VAE encoder levels (`encoder.down_blocks.0.…`)".into());
    }
    let block_out_channels = (0..levels)
        .map(|l| {
            dim(
                shapes,
                &format!("encoder.down_blocks.{l}.resnets.0.conv1.weight"),
                0,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VaeSpec {
        in_channels: dim(shapes, "encoder.conv_in.weight", 1)?,
        out_channels: dim(shapes, "decoder.conv_out.weight", 0)?,
        config: AutoEncoderKLConfig {
            block_out_channels,
            layers_per_block: count_indexed(shapes, "encoder.down_blocks.0.resnets."),
            latent_channels: dim(shapes, "decoder.conv_in.weight", 1)?,
            norm_num_groups: 32,
            use_quant_conv: shapes.contains_key("quant_conv.weight"),
            use_post_quant_conv: shapes.contains_key("post_quant_conv.weight"),
        },
        scaling_factor: 0.18215,
    })
}

/// Which layout a single file's text encoder is stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipLayout {
    /// `cond_stage_model.transformer.…` (Hugging Face names, SD 1.x).
    HuggingFace,
    /// `cond_stage_model.model.…` (OpenCLIP, SD 2.x).
    OpenClip,
}

/// The text encoder of a single file under `prefix` (`cond_stage_model.`,
/// or SDXL's `conditioner.embedders.N.`); 64 channels per head, as every
/// CLIP Stable Diffusion uses.
pub fn clip_from_shapes(shapes: &Shapes, prefix: &str) -> Result<(ClipConfig, ClipLayout), String> {
    // transformers' names in either of its layouts (see
    // `crate::weights::transformers_text_names`).
    let hf = [
        format!("{prefix}transformer.text_model."),
        format!("{prefix}transformer."),
    ]
    .into_iter()
    .find(|p| shapes.contains_key(&format!("{p}embeddings.token_embedding.weight")))
    .unwrap_or_else(|| format!("{prefix}transformer.text_model."));
    let open = format!("{prefix}model.");
    let (layout, tok, pos, layers, fc1, proj) =
        if shapes.contains_key(&format!("{hf}embeddings.token_embedding.weight")) {
            (
                ClipLayout::HuggingFace,
                format!("{hf}embeddings.token_embedding.weight"),
                format!("{hf}embeddings.position_embedding.weight"),
                format!("{hf}encoder.layers."),
                format!("{hf}encoder.layers.0.mlp.fc1.weight"),
                None,
            )
        } else if shapes.contains_key(&format!("{open}token_embedding.weight")) {
            (
                ClipLayout::OpenClip,
                format!("{open}token_embedding.weight"),
                format!("{open}positional_embedding"),
                format!("{open}transformer.resblocks."),
                format!("{open}transformer.resblocks.0.mlp.c_fc.weight"),
                Some(format!("{open}text_projection")),
            )
        } else {
            return Err(format!(
                "no text encoder (`{hf}…` or `{open}…`) in this checkpoint"
            ));
        };
    let hidden = dim(shapes, &tok, 1)?;
    let cfg = ClipConfig {
        vocab_size: dim(shapes, &tok, 0)?,
        hidden_size: hidden,
        intermediate_size: dim(shapes, &fc1, 0)?,
        num_hidden_layers: count_indexed(shapes, &layers),
        num_attention_heads: (hidden / 64).max(1),
        max_position_embeddings: dim(shapes, &pos, 0)?,
        // OpenCLIP's towers (ViT-H 1024 wide, ViT-bigG 1280) use the exact
        // GELU also when converted to transformers' names (SD 2.x's and
        // SDXL's diffusers text encoders); OpenAI's CLIP (L 768) quick GELU.
        hidden_act: match (layout, hidden) {
            (ClipLayout::OpenClip, _) | (ClipLayout::HuggingFace, 1024 | 1280) => Activation::Gelu,
            (ClipLayout::HuggingFace, _) => Activation::QuickGelu,
        },
        layer_norm_eps: 1e-5,
        projection_dim: match &proj {
            Some(p) => Some(dim(shapes, p, 1)?),
            None => None,
        },
    };
    Ok((cfg, layout))
}

/// Whether a single file marks its schedule as zero terminal SNR (`ztsnr`,
/// as NoobAI's v-prediction checkpoints do).
pub fn zero_terminal_snr_from_shapes(shapes: &Shapes) -> bool {
    shapes.contains_key("ztsnr")
}

/// What a single file's UNet predicts: a `v_pred` marker key says v; SD 2.x
/// files carry no marker, and ComfyUI's test tells the 768-v models from the
/// ε base models by the spread of one late LayerNorm bias (v models' is wider).
pub fn prediction_from_shapes(
    shapes: &Shapes,
    family: Family,
    late_norm_bias_std: impl FnOnce(&str) -> Option<f64>,
) -> Prediction {
    if shapes.contains_key("v_pred") {
        return Prediction::V;
    }
    if family == Family::Sd2 {
        let key = format!("{UNET_PREFIX}output_blocks.11.1.transformer_blocks.0.norm1.bias");
        if shapes.contains_key(&key) && late_norm_bias_std(&key).is_some_and(|s| s > 0.09) {
            return Prediction::V;
        }
    }
    Prediction::Epsilon
}
