//! Latents: empty latents to sample into, the VAE between images and
//! latents (whole or tile by tile), and inpainting.

mod batch;
mod empty;
mod file;
mod inpaint;
mod scale;
mod vae;

pub use batch::{
    latent_blend, latent_blend_node, latent_composite, latent_composite_node, latent_from_batch,
    latent_from_batch_node, repeat_latent_batch, repeat_latent_batch_node,
};
pub use empty::{empty_latent, empty_latent_image, empty_sd3_latent_image};
pub use file::{
    decode_latent_file, encode_latent_file, load_latent, save_latent, LATENT_KEY, OLD_FORMAT_SCALE,
    SPACE_KEY, VERSION_KEY,
};
pub use inpaint::{
    differential_diffusion, inpaint_model_conditioning, instruct_pix_to_pix_conditioning,
    set_latent_noise_mask, vae_encode_for_inpaint,
};
pub use scale::{latent_upscale, latent_upscale_by, resize_latent};
pub use vae::{vae_decode, vae_encode};

use weft_core::NodeDef;

/// The latent node types.
pub fn nodes() -> Vec<NodeDef> {
    vec![
        empty_latent(),
        empty_latent_image(),
        empty_sd3_latent_image(),
        vae_decode(false),
        vae_decode(true),
        vae_encode(false),
        vae_encode(true),
        set_latent_noise_mask(),
        vae_encode_for_inpaint(),
        inpaint_model_conditioning(),
        instruct_pix_to_pix_conditioning(),
        differential_diffusion(),
        latent_upscale(),
        latent_upscale_by(),
        latent_from_batch_node(),
        repeat_latent_batch_node(),
        latent_composite_node(),
        latent_blend_node(),
        save_latent(),
        load_latent(),
    ]
}
