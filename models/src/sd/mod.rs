//! Stable Diffusion 1.x and 2.x: the family's architecture read from a
//! checkpoint ([`config`]), its loaders and key maps ([`checkpoint`],
//! [`ldm`]), and the UNet ([`blocks`], [`unet`]) with its sampling adapter
//! ([`network`]).

pub mod blocks;
pub mod checkpoint;
pub mod config;
pub mod ldm;
pub mod network;
pub mod unet;

pub use unet::SdUNet;
