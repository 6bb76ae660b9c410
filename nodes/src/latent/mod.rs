//! Latents: empty latents to sample into, and the VAE between images and
//! latents (whole or tile by tile).

mod empty;
mod vae;

pub use empty::{empty_latent, empty_latent_image};
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
    ]
}
