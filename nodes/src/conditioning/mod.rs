//! Conditioning: prompts encoded with CLIP (SDXL's with its sizes; SD3's and
//! Flux's with T5 and Flux's guidance), class labels for
//! class-conditional models, and ControlNets attached to a conditioning.

mod class_label;
mod compose;
mod controlnet;
mod flow;
mod sdxl;
mod text;

pub use class_label::class_label;
pub use compose::{
    conditioning_average, conditioning_combine, conditioning_concat, conditioning_set_area,
    conditioning_set_area_percentage, conditioning_set_area_strength, conditioning_set_mask,
    conditioning_set_timestep_range, conditioning_zero_out,
};
pub use controlnet::{control_net_apply, control_net_apply_advanced};
pub use flow::{clip_text_encode_flux, clip_text_encode_sd3, flux_guidance};
pub use sdxl::{clip_text_encode_sdxl, clip_text_encode_sdxl_refiner};
pub use text::{clip_set_last_layer, clip_text_encode};

use std::sync::Arc;

use weft_core::{Inputs, NodeDef};
use weft_models::clip::Embedding;

use crate::ModelFiles;

/// The conditioning node types; text encoders find `embedding:name` in
/// `files`' embeddings folders.
pub fn nodes(files: &ModelFiles) -> Vec<NodeDef> {
    vec![
        clip_text_encode(files.clone()),
        clip_set_last_layer(),
        clip_text_encode_sdxl(files.clone()),
        clip_text_encode_sdxl_refiner(files.clone()),
        clip_text_encode_sd3(files.clone()),
        clip_text_encode_flux(files.clone()),
        flux_guidance(),
        class_label(),
        conditioning_combine(),
        conditioning_concat(),
        conditioning_average(),
        conditioning_set_area(),
        conditioning_set_area_percentage(),
        conditioning_set_area_strength(),
        conditioning_set_mask(),
        conditioning_zero_out(),
        conditioning_set_timestep_range(),
        control_net_apply(),
        control_net_apply_advanced(),
    ]
}

/// How a text node finds `embedding:name`: the embeddings folders, then the
/// graph's folder.
fn embeddings<'a>(
    files: &'a ModelFiles,
    inputs: &'a Inputs,
) -> impl Fn(&str) -> Result<Arc<Embedding>, String> + 'a {
    move |name| {
        if inputs.confined() && !crate::loaders::plain_relative(name) {
            return Err(format!(
                "embedding {name:?}: name one in the embeddings folders"
            ));
        }
        let graph_folder = inputs.base_dir().filter(|_| !inputs.confined());
        files.embedding(name, graph_folder)
    }
}
