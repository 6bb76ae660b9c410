//! weft's built-in node types: the node layer over `weft-models` and
//! `weft-sampling`, with ComfyUI's names, in modules that follow ComfyUI's
//! categories: [`loaders`], [`conditioning`], [`latent`], [`sampling`],
//! [`image`] and [`utility`].

pub mod conditioning;
pub mod controlnet;
pub mod image;
pub mod latent;
pub mod loaders;
pub mod sampling;
pub mod utility;

use weft_core::Registry;

pub use loaders::ModelFiles;

/// Registers every built-in node type; loaders search `files`.
pub fn register_builtins(registry: &mut Registry, files: &ModelFiles) {
    let families = [
        loaders::nodes(files),
        conditioning::nodes(files),
        latent::nodes(),
        sampling::nodes(),
        image::nodes(),
        utility::nodes(),
    ];
    for family in families {
        registry
            .register_all(family)
            .expect("built-in schemas are valid and unique");
    }
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
