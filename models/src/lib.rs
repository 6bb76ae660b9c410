//! weft's model families: each network's architecture, with the loaders
//! and checkpoint key maps beside it.
//!
//! - [`weights`]: weight files (memory-mapped safetensors), read into a
//!   [`weights::TensorMap`] under the names the architectures use.
//! - [`sd`]: Stable Diffusion 1.x, 2.x and SDXL — family detection from
//!   tensor shapes, single-file and diffusers loaders, the UNet.
//! - [`vae`]: the KL autoencoder; [`inpaint`]: images and masks prepared
//!   for inpainting.
//! - [`clip`]: CLIP text encoders and prompt weighting.
//! - [`controlnet`]: ControlNet, in three file layouts.
//! - [`lora`]: LoRA / LyCORIS files matched to a model's weights and applied.
//! - [`taesd`]: TAESD's tiny decoder, for previews while sampling.
//! - [`upscale`]: image upscale models (ESRGAN, Real-ESRGAN, Compact), tiled.
//! - [`mnist`]: weft's own small DiT, U-Net and classifiers, and the
//!   checkpoint format that records how they were trained.
//!
//! Each network is a config plus a plain `forward`; the samplers see it
//! through [`weft_sampling::Network`]. Architecture invariant: models know no
//! node — nothing here reads graph inputs or registers a node type.

pub mod clip;
pub mod controlnet;
pub mod detect;
pub mod inpaint;
pub mod lora;
pub mod mnist;
pub mod sd;
pub mod taesd;
pub mod upscale;
pub mod vae;
pub mod weights;
