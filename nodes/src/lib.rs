//! weft's built-in node types: the node layer over `weft-models` and
//! `weft-sampling`, with ComfyUI's names.

pub mod controlnet;
pub mod image;
pub mod mnist;
pub mod sampling_nodes;
pub mod sd;
pub mod utility;

use weft_core::Registry;

/// Registers every built-in node type.
pub fn register_builtins(registry: &mut Registry) {
    utility::register(registry).expect("built-in schemas are valid and unique");
    sampling_nodes::register(registry).expect("built-in schemas are valid and unique");
    image::register(registry).expect("built-in schemas are valid and unique");
    mnist::register(registry).expect("built-in schemas are valid and unique");
    sd::register(registry).expect("built-in schemas are valid and unique");
}

/// A registry holding just the built-ins.
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::new();
    register_builtins(&mut registry);
    registry
}
