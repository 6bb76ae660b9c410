//! The architecture of each Stable Diffusion component: read from a
//! diffusers folder's `config.json` files, or worked out from the tensor
//! names and shapes of a single-file checkpoint.
//!
//! Shapes say almost everything (levels, channels, blocks, attention,
//! context width, projection style) but not the attention head count or
//! GroupNorm groups; those come from the family the shapes identify (SD 1.x:
//! CLIP-L context 768, 8 heads; SD 2.x: OpenCLIP-H context 1024, 64 channels
//! per head), or from a diffusers folder given as the config.

use std::collections::HashMap;

use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde::Deserialize;

use super::ldm::{UNET_PREFIX, VAE_PREFIX};
use crate::clip::{Activation, ClipConfig};
use weft_sampling::Prediction;

/// Which release line a checkpoint belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x: CLIP ViT-L/14 text encoder, 768-wide context.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H/14, 1024-wide context, linear projections.
    Sd2,
    /// SDXL base: CLIP-L and OpenCLIP bigG side by side (2048-wide context),
    /// micro-conditioning on image size and crop.
    Sdxl,
    /// SDXL refiner: bigG only (1280-wide), conditioned on an aesthetic score.
    SdxlRefiner,
    /// Shapes of neither; configs must come from a diffusers folder.
    Other,
}

impl Family {
    /// The family of a UNet cross-attending to `width`-wide text states,
    /// with SDXL's added embedding of `added` inputs (`None`: no added
    /// embedding, as SD 1.x/2.x).
    pub fn from_context(width: usize, added: Option<&TextTime>) -> Family {
        match (width, added) {
            (768, None) => Family::Sd1,
            (1024, None) => Family::Sd2,
            (_, Some(a)) if a.time_ids() == Some(5) => Family::SdxlRefiner,
            (_, Some(a)) if a.time_ids() == Some(6) => Family::Sdxl,
            _ => Family::Other,
        }
    }

    /// Attention heads at a level of `channels`: SD 1.x has 8, SD 2.x and
    /// SDXL 64 channels per head; other families' counts are not in the shapes.
    pub fn heads(self, channels: usize) -> Option<usize> {
        match self {
            Family::Sd1 => Some(8),
            Family::Sd2 | Family::Sdxl | Family::SdxlRefiner => Some((channels / 64).max(1)),
            Family::Other => None,
        }
    }

    /// The factor the family's UNet was trained to see VAE latents scaled by.
    pub fn latent_scale(self) -> f64 {
        match self {
            Family::Sdxl | Family::SdxlRefiner => 0.13025,
            Family::Sd1 | Family::Sd2 | Family::Other => 0.18215,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
            Family::Sdxl => "SDXL",
            Family::SdxlRefiner => "SDXL refiner",
            Family::Other => "custom",
        }
    }
}

/// A UNet's build parameters.
#[derive(Clone, Debug)]
pub struct UNetSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub config: UNet2DConditionModelConfig,
    /// Transformer depth of the middle block (diffusers takes the last
    /// level's entry even when that level has no attention: SDXL's refiner).
    pub mid_depth: usize,
    /// SDXL's added embedding (`addition_embed_type: "text_time"`).
    pub added: Option<TextTime>,
}

/// SDXL's micro-conditioning: each of the size/crop (base) or
/// size/crop/aesthetic-score (refiner) numbers becomes `time_dim`
/// sinusoidal features, appended to the pooled text embedding, and the
/// `input_dim` vector goes through a two-layer MLP added to the time
/// embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextTime {
    /// Sinusoidal features per number (256 in SDXL).
    pub time_dim: usize,
    /// The MLP's input width: pooled text width + numbers × `time_dim`.
    pub input_dim: usize,
    /// Width of the pooled text embedding (bigG's projection, 1280).
    pub pooled_dim: usize,
}

impl TextTime {
    /// From the sizes a config or checkpoint gives. The pooled width is
    /// not stated anywhere: the refiner's pooled embedding is as wide as
    /// its context (bigG alone, 5 numbers); otherwise the base's 6 numbers
    /// are assumed, as SDXL's.
    pub fn new(time_dim: usize, input_dim: usize, context_dim: usize) -> TextTime {
        let pooled_dim = match input_dim.checked_sub(5 * time_dim) {
            Some(rest) if rest == context_dim => rest,
            _ => input_dim.saturating_sub(6 * time_dim),
        };
        TextTime {
            time_dim,
            input_dim,
            pooled_dim,
        }
    }

    /// How many micro-conditioning numbers the model takes: 6 (SDXL base:
    /// original size, crop, target size) or 5 (refiner: original size,
    /// crop, aesthetic score).
    pub fn time_ids(&self) -> Option<usize> {
        let rest = self.input_dim.checked_sub(self.pooled_dim)?;
        (self.time_dim > 0 && rest % self.time_dim == 0).then(|| rest / self.time_dim)
    }
}

impl UNetSpec {
    /// The release line this UNet's shapes belong to.
    pub fn family(&self) -> Family {
        Family::from_context(self.config.cross_attention_dim, self.added.as_ref())
    }

    /// 9 input channels: latent + mask + masked-image latent.
    pub fn is_inpainting(&self) -> bool {
        self.in_channels == 9
    }
}

/// A VAE's build parameters.
#[derive(Clone, Debug)]
pub struct VaeSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub config: AutoEncoderKLConfig,
    /// Latents are scaled by this after encoding (0.18215 for SD 1.x/2.x).
    pub scaling_factor: f64,
}

impl VaeSpec {
    /// Pixels per latent cell.
    pub fn downscale(&self) -> usize {
        1 << self.config.block_out_channels.len().saturating_sub(1)
    }
}

/// The diffusion training schedule and what the network predicts.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSpec {
    pub beta_schedule: String,
    pub beta_start: f64,
    pub beta_end: f64,
    pub num_train_timesteps: usize,
    pub prediction: Prediction,
    /// Rescaled to zero terminal SNR (a `ztsnr` marker key, or diffusers'
    /// `rescale_betas_zero_snr`).
    pub zero_terminal_snr: bool,
}

impl ScheduleSpec {
    /// Stable Diffusion's: 1000 scaled-linear βs from 0.00085 to 0.012.
    pub fn stable_diffusion(prediction: Prediction) -> ScheduleSpec {
        ScheduleSpec {
            beta_schedule: "scaled_linear".into(),
            beta_start: 0.00085,
            beta_end: 0.012,
            num_train_timesteps: 1000,
            prediction,
            zero_terminal_snr: false,
        }
    }
}

// ---------------------------------------------------------------------------
// diffusers config.json files

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
    ("shift_factor", "null"),
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

// ---------------------------------------------------------------------------
// single-file checkpoints

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
