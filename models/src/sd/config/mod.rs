//! The architecture of each Stable Diffusion component: read from a
//! diffusers folder's `config.json` files, or worked out from the tensor
//! names and shapes of a single-file checkpoint.
//!
//! Shapes say almost everything (levels, channels, blocks, attention,
//! context width, projection style) but not the attention head count or
//! GroupNorm groups; those come from the family the shapes identify (SD 1.x:
//! CLIP-L context 768, 8 heads; SD 2.x: OpenCLIP-H context 1024, 64 channels
//! per head), or from a diffusers folder given as the config.

mod diffusers;
mod shapes;

pub use diffusers::{clip_from_json, schedule_from_json, unet_from_json, vae_from_json};
pub use shapes::{
    clip_from_shapes, detect_family, prediction_from_shapes, unet_from_shapes,
    vae_from_diffusers_shapes, vae_from_shapes, zero_terminal_snr_from_shapes, ClipLayout, Shapes,
};
pub(crate) use shapes::{count_indexed, dim, shape, SDXL_TIME_DIM};

use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModelConfig;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
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
