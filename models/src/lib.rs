//! weft's model families: each network's architecture, with the loaders
//! and checkpoint key maps beside it.
//!
//! - [`weights`]: weight files (memory-mapped safetensors), read into a
//!   [`weights::TensorMap`] under the names the architectures use.
//! - [`sd`]: Stable Diffusion 1.x, 2.x and SDXL — family detection from
//!   tensor shapes, single-file and diffusers loaders, the UNet.
//! - [`vae`]: the KL autoencoder; [`inpaint`]: images and masks prepared
//!   for inpainting.
//! - [`sd3`]: SD3 and SD3.5's MM-DiT; [`flux`]: Flux.1's transformer; both
//!   built from [`dit`]'s shared blocks through a [`loader::Loader`] whose
//!   linear layers may stay compressed; [`dit_files`] finds their weights
//!   and [`dit_checkpoint`] a whole checkpoint's; [`packed`] keeps their
//!   linear weights compressed (bf16, fp8, GGUF) or quantises them, and
//!   [`quantize`] writes GGUF files.
//! - [`clip`]: CLIP text encoders and prompt weighting; [`t5`]: the T5-XXL
//!   encoder and its tokenizer.
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
pub mod dit;
pub mod dit_checkpoint;
pub mod dit_files;
pub mod flux;
pub mod inpaint;
pub mod loader;
pub mod lora;
pub mod memory;
pub mod mnist;
pub mod packed;
pub mod quantize;
pub mod sd;
pub mod sd3;
pub mod t5;
pub mod taesd;
pub mod upscale;
pub mod vae;
pub mod weights;
