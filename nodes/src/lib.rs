//! weft's built-in node types: the node layer over `weft-models` and
//! `weft-sampling`, with ComfyUI's names.

pub mod controlnet;
pub mod image;
pub mod loaders;
pub mod sampling_nodes;
pub mod sd;
pub mod utility;

use weft_core::Registry;

pub use loaders::ModelFiles;

/// Registers every built-in node type; loaders search `files`.
pub fn register_builtins(registry: &mut Registry, files: &ModelFiles) {
    utility::register(registry).expect("built-in schemas are valid and unique");
    sampling_nodes::register(registry).expect("built-in schemas are valid and unique");
    image::register(registry).expect("built-in schemas are valid and unique");
    registry
        .register_all(loaders::nodes(files))
        .expect("built-in schemas are valid and unique");
    sd::register(registry).expect("built-in schemas are valid and unique");
}

/// A registry holding just the built-ins, with no model folders (names
/// resolve against the graph's folder, the working directory and weft's
/// built-in checkpoints).
pub fn builtin_registry() -> Registry {
    builtin_registry_with(&ModelFiles::default())
}

/// A registry holding the built-ins, whose loaders search `files`.
pub fn builtin_registry_with(files: &ModelFiles) -> Registry {
    let mut registry = Registry::new();
    register_builtins(&mut registry, files);
    registry
}
