//! How each Stable Diffusion family's latents are previewed while
//! sampling: ComfyUI's linear latent → RGB factors and its TAESD decoder
//! names, carried by every MODEL in its [`LatentFormat`](weft_sampling::LatentFormat).
//!
//! The numbers are data, copied from ComfyUI's `comfy/latent_formats.py`
//! (classes `SD15`, used for SD 2.x too, and `SDXL`, used for the refiner
//! too; comfyanonymous/ComfyUI at commit 040a324). They apply to the
//! denoised estimate in the network's scale (the latent × 0.18215 or
//! 0.13025), giving RGB in about [-1, 1].

use weft_sampling::{LatentPreview, LatentRgb};

use super::config::Family;

/// ComfyUI's `SD15.latent_rgb_factors` (no bias).
pub const SD15_RGB: LatentRgb = LatentRgb {
    factors: &[
        //   R        G        B
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    bias: [0.0, 0.0, 0.0],
};

/// ComfyUI's `SDXL.latent_rgb_factors` and `latent_rgb_factors_bias`.
pub const SDXL_RGB: LatentRgb = LatentRgb {
    factors: &[
        //   R        G        B
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ],
    bias: [0.1084, -0.0175, -0.0011],
};

/// The preview of a family's latents. A custom UNet (`Other`) is taken as
/// SD 1.x's latent space, whose scale it is given as well.
pub fn latent_preview(family: Family) -> LatentPreview {
    match family {
        Family::Sd1 | Family::Sd2 | Family::Other => LatentPreview::Latent {
            rgb: SD15_RGB,
            taesd: Some("taesd_decoder"),
        },
        Family::Sdxl | Family::SdxlRefiner => LatentPreview::Latent {
            rgb: SDXL_RGB,
            taesd: Some("taesdxl_decoder"),
        },
    }
}
