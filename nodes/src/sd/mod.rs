//! Stable Diffusion 1.x and 2.x: checkpoint loading (single-file LDM and
//! diffusers folders), the CLIP text encoder and prompt handling, and the
//! UNet and VAE as weft values.

pub mod attention;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod controlnet;
pub mod kernels;
pub mod layers;
pub mod ldm;
pub mod nodes;
pub mod prompt;
#[cfg(test)]
mod test_support;
pub mod text;
pub mod unet;
pub mod vae;
pub mod weights;
pub mod winograd;

pub use nodes::register;
