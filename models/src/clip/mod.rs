//! Text encoders: the CLIP text transformer ([`model`]) in both the
//! transformers (CLIP-L) and OpenCLIP (SD 2.x) layouts, ComfyUI's prompt
//! syntax ([`prompt`]), and the two put together as a CLIP value ([`text`]).

pub mod embedding;
pub mod model;
pub mod prompt;
pub mod text;

pub use embedding::Embedding;
pub use model::{Activation, ClipConfig, ClipText};
pub use text::{TextEncoder, TextFamily};
