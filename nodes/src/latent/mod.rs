//! Latents: empty latents to sample into, the VAE between images and
//! latents (whole or tile by tile), and inpainting.

mod empty;
mod inpaint;
mod vae;

pub use empty::{empty_latent, empty_latent_image};
pub use inpaint::{
    differential_diffusion, inpaint_model_conditioning, set_latent_noise_mask,
    vae_encode_for_inpaint,
};
pub use vae::{vae_decode, vae_encode};

use weft_core::NodeDef;

/// The latent node types.
pub fn nodes() -> Vec<NodeDef> {
    vec![
        empty_latent(),
        empty_latent_image(),
        vae_decode(false),
        vae_decode(true),
        vae_encode(false),
        vae_encode(true),
        set_latent_noise_mask(),
        vae_encode_for_inpaint(),
        inpaint_model_conditioning(),
        differential_diffusion(),
    ]
}
