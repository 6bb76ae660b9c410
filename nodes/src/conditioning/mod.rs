//! Conditioning: prompts encoded with CLIP (SDXL's with its sizes), class labels for
//! class-conditional models, and ControlNets attached to a conditioning.

mod class_label;
mod controlnet;
mod sdxl;
mod text;

pub use class_label::class_label;
pub use controlnet::{control_net_apply, control_net_apply_advanced};
pub use sdxl::{clip_text_encode_sdxl, clip_text_encode_sdxl_refiner};
pub use text::{clip_set_last_layer, clip_text_encode};

use weft_core::NodeDef;

/// The conditioning node types.
pub fn nodes() -> Vec<NodeDef> {
    vec![
        clip_text_encode(),
        clip_set_last_layer(),
        clip_text_encode_sdxl(),
        clip_text_encode_sdxl_refiner(),
        class_label(),
        control_net_apply(),
        control_net_apply_advanced(),
    ]
}
