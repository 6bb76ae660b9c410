//! Components described by diffusers' and transformers' `config.json`
//! files; every setting a file leaves out takes the library's default.

use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde::Deserialize;

use super::{ScheduleSpec, TextTime, UNetSpec, VaeSpec};
use crate::clip::ClipConfig;
use weft_sampling::Prediction;

/// The diffusers block types weft's UNet is built from.
const CROSS_DOWN: &str = "CrossAttnDownBlock2D";
const PLAIN_DOWN: &str = "DownBlock2D";
const CROSS_UP: &str = "CrossAttnUpBlock2D";
const PLAIN_UP: &str = "UpBlock2D";
const MID_BLOCK: &str = "UNetMidBlock2DCrossAttn";

/// An int or a per-level list, as diffusers writes head counts.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum PerLevel {
    One(usize),
    Each(Vec<usize>),
}

impl PerLevel {
    fn get(&self, level: usize) -> Option<usize> {
        match self {
            PerLevel::One(v) => Some(*v),
            PerLevel::Each(v) => v.get(level).copied(),
        }
    }
}

fn one() -> PerLevel {
    PerLevel::One(1)
}
fn four() -> usize {
    4
}
fn two_per_level() -> PerLevel {
    PerLevel::One(2)
}
fn eight() -> PerLevel {
    PerLevel::One(8)
}
fn sd_unet_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn sd_down_blocks() -> Vec<String> {
    [CROSS_DOWN, CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN]
        .map(String::from)
        .to_vec()
}
fn cross_attention_1280() -> usize {
    1280
}
fn cross_attn_mid() -> Option<String> {
    Some(MID_BLOCK.into())
}
fn default_true() -> bool {
    true
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_one() -> usize {
    1
}
fn default_scale() -> f64 {
    1.0
}

/// A diffusers `UNet2DConditionModel` config. Every setting a config.json
/// may leave out gets `UNet2DConditionModel`'s default (diffusers 0.42:
/// SD 1.x's four levels of 320–1280 channels, 2 resnets per level, 8 heads,
/// 32 groups, ε 1e-5, cross-attention width 1280).
#[derive(Debug, Deserialize)]
struct DiffusersUNet {
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    #[serde(default = "sd_unet_channels")]
    block_out_channels: Vec<usize>,
    #[serde(default = "sd_down_blocks")]
    down_block_types: Vec<String>,
    /// Absent: the mirror of `down_block_types`, as diffusers' default.
    #[serde(default)]
    up_block_types: Option<Vec<String>>,
    /// `null` means no middle block in diffusers (which weft cannot build).
    #[serde(default = "cross_attn_mid")]
    mid_block_type: Option<String>,
    #[serde(default = "two_per_level")]
    layers_per_block: PerLevel,
    #[serde(default = "cross_attention_1280")]
    cross_attention_dim: usize,
    #[serde(default = "eight")]
    attention_head_dim: PerLevel,
    #[serde(default)]
    num_attention_heads: Option<PerLevel>,
    #[serde(default = "one")]
    transformer_layers_per_block: PerLevel,
    #[serde(default = "default_groups")]
    norm_num_groups: usize,
    #[serde(default = "default_eps")]
    norm_eps: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default = "default_true")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    #[serde(default = "default_one")]
    downsample_padding: usize,
    #[serde(default = "default_scale")]
    mid_block_scale_factor: f64,
    #[serde(default)]
    center_input_sample: bool,
    #[serde(default)]
    addition_embed_type: Option<String>,
    #[serde(default)]
    addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    projection_class_embeddings_input_dim: Option<usize>,
}

/// Settings of `UNet2DConditionModel` that weft's UNet does not implement,
/// with the value it does (diffusers' default). A config stating another
/// value is refused rather than run with the wrong arithmetic; `null` is
/// the default wherever the default is `null`.
const FIXED_UNET_SETTINGS: &[(&str, &str)] = &[
    ("act_fn", r#""silu""#),
    ("resnet_time_scale_shift", r#""default""#),
    ("resnet_skip_time_act", "false"),
    ("resnet_out_scale_factor", "1.0"),
    ("time_embedding_type", r#""positional""#),
    ("time_embedding_dim", "null"),
    ("time_embedding_act_fn", "null"),
    ("timestep_post_act", "null"),
    ("time_cond_proj_dim", "null"),
    ("class_embed_type", "null"),
    ("num_class_embeds", "null"),
    ("encoder_hid_dim", "null"),
    ("encoder_hid_dim_type", "null"),
    ("only_cross_attention", "false"),
    ("dual_cross_attention", "false"),
    ("attention_type", r#""default""#),
    ("cross_attention_norm", "null"),
    ("conv_in_kernel", "3"),
    ("conv_out_kernel", "3"),
    ("reverse_transformer_layers_per_block", "null"),
];

/// The first setting of `config` that weft does not implement.
fn unsupported_setting(config: &serde_json::Value, fixed: &[(&str, &str)]) -> Option<String> {
    fixed.iter().find_map(|&(key, supported)| {
        let value = config.get(key)?;
        let supported: serde_json::Value = serde_json::from_str(supported).expect("a JSON literal");
        let same = match (value.as_f64(), supported.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => value.is_null() || *value == supported,
        };
        // A per-level list of the supported value is the same setting.
        let same = same
            || value
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|v| *v == supported));
        (!same).then(|| format!("`{key}`: {value} (weft implements only {supported})"))
    })
}

/// Parses a diffusers `unet/config.json`; settings it leaves out take
/// `UNet2DConditionModel`'s defaults.
pub fn unet_from_json(text: &str) -> Result<UNetSpec, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let c: DiffusersUNet = serde_json::from_value(json.clone()).map_err(|e| e.to_string())?;
    let added = match c.addition_embed_type.as_deref() {
        None => None,
        Some("text_time") => {
            let (Some(time_dim), Some(input_dim)) = (
                c.addition_time_embed_dim,
                c.projection_class_embeddings_input_dim,
            ) else {
                return Err("`addition_embed_type: \"text_time\"` needs `addition_time_embed_dim` and `projection_class_embeddings_input_dim`".into());
            };
            Some(TextTime::new(time_dim, input_dim, c.cross_attention_dim))
        }
        Some(other) => {
            return Err(format!(
                "unsupported addition_embed_type {other:?} (weft implements SDXL's \"text_time\")"
            ))
        }
    };
    if let Some(setting) = unsupported_setting(&json, FIXED_UNET_SETTINGS) {
        return Err(format!("unsupported UNet setting {setting}"));
    }
    let n = c.block_out_channels.len();
    if n == 0 {
        return Err("block_out_channels is empty".into());
    }
    if c.down_block_types.len() != n {
        return Err("down_block_types and block_out_channels differ in length".into());
    }
    if let Some(t) = c
        .down_block_types
        .iter()
        .find(|t| *t != CROSS_DOWN && *t != PLAIN_DOWN)
    {
        return Err(format!(
            "unsupported down block type {t:?} (weft builds {CROSS_DOWN} and {PLAIN_DOWN})"
        ));
    }
    // The up path mirrors the down path; weft builds it from down_block_types.
    let mirror: Vec<&str> = c
        .down_block_types
        .iter()
        .rev()
        .map(|t| if t == CROSS_DOWN { CROSS_UP } else { PLAIN_UP })
        .collect();
    if let Some(up) = &c.up_block_types {
        if up.iter().map(String::as_str).ne(mirror.iter().copied()) {
            return Err(format!(
                "unsupported up_block_types {up:?}: weft builds the mirror of down_block_types, {mirror:?}"
            ));
        }
    }
    if c.mid_block_type.as_deref() != Some(MID_BLOCK) {
        return Err(format!(
            "unsupported mid_block_type {:?} (weft builds {MID_BLOCK})",
            c.mid_block_type
        ));
    }
    let layers_per_block = match &c.layers_per_block {
        PerLevel::One(v) => *v,
        PerLevel::Each(v) if !v.is_empty() && v.iter().all(|x| *x == v[0]) => v[0],
        PerLevel::Each(v) => {
            return Err(format!(
                "per-level layers_per_block {v:?} is not supported (weft needs one count for every level)"
            ))
        }
    };
    if layers_per_block == 0 {
        return Err("layers_per_block is 0".into());
    }
    // diffusers' historical naming: `attention_head_dim` holds the head count
    // (`num_attention_heads`, when given, wins). Down block i takes entry i,
    // the middle block the last, and up block i that of its mirrored level.
    let heads = c.num_attention_heads.unwrap_or(c.attention_head_dim);
    // The middle block's transformer depth is the last level's entry even
    // when that level has no attention; weft's spec keeps a depth only for
    // attention levels, so any other depth there is refused.
    let mid_depth = c.transformer_layers_per_block.get(n - 1).unwrap_or(1);
    let blocks = c
        .block_out_channels
        .iter()
        .enumerate()
        .map(|(l, &out_channels)| {
            let cross = c.down_block_types[l] == CROSS_DOWN;
            let depth = c
                .transformer_layers_per_block
                .get(l)
                .ok_or_else(|| format!("no transformer_layers_per_block for level {l}"))?;
            Ok(BlockConfig {
                out_channels,
                use_cross_attn: cross.then_some(depth),
                attention_head_dim: heads
                    .get(l)
                    .ok_or_else(|| format!("no attention head count for level {l}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(UNetSpec {
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        config: UNet2DConditionModelConfig {
            center_input_sample: c.center_input_sample,
            flip_sin_to_cos: c.flip_sin_to_cos,
            freq_shift: c.freq_shift,
            blocks,
            layers_per_block,
            downsample_padding: c.downsample_padding,
            mid_block_scale_factor: c.mid_block_scale_factor,
            norm_num_groups: c.norm_num_groups,
            norm_eps: c.norm_eps,
            cross_attention_dim: c.cross_attention_dim,
            sliced_attention_size: None,
            use_linear_projection: c.use_linear_projection,
        },
        mid_depth,
        added,
    })
}

/// A diffusers `AutoencoderKL` config; settings it leaves out take
/// `AutoencoderKL`'s defaults (one level of 64 channels, one resnet per
/// level, 4 latent channels, 32 groups, scaling 0.18215).
#[derive(Debug, Deserialize)]
struct DiffusersVae {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    #[serde(default = "vae_channels")]
    block_out_channels: Vec<usize>,
    #[serde(default)]
    down_block_types: Option<Vec<String>>,
    #[serde(default)]
    up_block_types: Option<Vec<String>>,
    #[serde(default = "default_one")]
    layers_per_block: usize,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "default_groups")]
    norm_num_groups: usize,
    #[serde(default = "sd_scaling")]
    scaling_factor: f64,
    #[serde(default = "default_true")]
    use_quant_conv: bool,
    #[serde(default = "default_true")]
    use_post_quant_conv: bool,
}

fn three() -> usize {
    3
}
fn vae_channels() -> Vec<usize> {
    vec![64]
}
fn sd_scaling() -> f64 {
    0.18215
}

/// Settings of `AutoencoderKL` weft's VAE does not implement (see
/// [`FIXED_UNET_SETTINGS`]).
const FIXED_VAE_SETTINGS: &[(&str, &str)] = &[
    ("act_fn", r#""silu""#),
    ("mid_block_add_attention", "true"),
    ("latents_mean", "null"),
    ("latents_std", "null"),
];

/// Parses a diffusers `vae/config.json`; settings it leaves out take
/// `AutoencoderKL`'s defaults.
pub fn vae_from_json(text: &str) -> Result<VaeSpec, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let c: DiffusersVae = serde_json::from_value(json.clone()).map_err(|e| e.to_string())?;
    if let Some(setting) = unsupported_setting(&json, FIXED_VAE_SETTINGS) {
        return Err(format!("unsupported VAE setting {setting}"));
    }
    let n = c.block_out_channels.len();
    for (key, types, want) in [
        (
            "down_block_types",
            &c.down_block_types,
            "DownEncoderBlock2D",
        ),
        ("up_block_types", &c.up_block_types, "UpDecoderBlock2D"),
    ] {
        if let Some(t) = types {
            if t.len() != n || t.iter().any(|t| t != want) {
                return Err(format!(
                    "unsupported {key} {t:?} (weft builds {n} × {want}, one per block_out_channels entry)"
                ));
            }
        }
    }
    Ok(VaeSpec {
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        config: AutoEncoderKLConfig {
            block_out_channels: c.block_out_channels,
            layers_per_block: c.layers_per_block,
            latent_channels: c.latent_channels,
            norm_num_groups: c.norm_num_groups,
            use_quant_conv: c.use_quant_conv,
            use_post_quant_conv: c.use_post_quant_conv,
        },
        scaling_factor: c.scaling_factor,
    })
}

/// Parses a transformers `text_encoder/config.json` (a `CLIPTextConfig`;
/// settings it leaves out take that class's defaults).
pub fn clip_from_json(text: &str) -> Result<ClipConfig, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[derive(Debug, Deserialize)]
struct DiffusersScheduler {
    #[serde(default = "scaled_linear")]
    beta_schedule: String,
    #[serde(default = "beta_start")]
    beta_start: f64,
    #[serde(default = "beta_end")]
    beta_end: f64,
    #[serde(default = "thousand")]
    num_train_timesteps: usize,
    #[serde(default = "epsilon")]
    prediction_type: String,
    #[serde(default)]
    rescale_betas_zero_snr: bool,
}

fn scaled_linear() -> String {
    "scaled_linear".into()
}
fn beta_start() -> f64 {
    0.00085
}
fn beta_end() -> f64 {
    0.012
}
fn thousand() -> usize {
    1000
}
fn epsilon() -> String {
    "epsilon".into()
}

/// Parses a diffusers `scheduler/scheduler_config.json`.
pub fn schedule_from_json(text: &str) -> Result<ScheduleSpec, String> {
    let c: DiffusersScheduler = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let prediction = Prediction::parse(&c.prediction_type)
        .ok_or_else(|| format!("unknown prediction_type {:?}", c.prediction_type))?;
    Ok(ScheduleSpec {
        beta_schedule: c.beta_schedule,
        beta_start: c.beta_start,
        beta_end: c.beta_end,
        num_train_timesteps: c.num_train_timesteps,
        prediction,
        zero_terminal_snr: c.rescale_betas_zero_snr,
    })
}
