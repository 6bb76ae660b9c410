//! Stable Diffusion 1.x and 2.x: the family's architecture read from a
//! checkpoint ([`config`]), its loaders and key maps ([`checkpoint`],
//! [`ldm`]), and the UNet ([`blocks`], [`unet`]) with its sampling adapter
//! ([`network`]) and its previews ([`preview`]).

pub mod blocks;
pub mod checkpoint;
pub mod config;
pub mod ldm;
pub mod network;
pub mod preview;
pub mod unet;

pub use unet::SdUNet;
