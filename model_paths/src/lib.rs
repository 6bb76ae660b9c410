//! Where model files live: ComfyUI-compatible model folders for weft.
//!
//! [`ModelPaths`] holds the ordered folders of each [`ModelKind`], built by
//! [`ModelPaths::load`] from [`Sources`] (`--models` roots, `WEFT_MODELS`,
//! weft's [`ConfigFile`], ComfyUI's `extra_model_paths.yaml`).
//! [`ModelPaths::resolve`] turns a workflow's name (`sdxl/juggernaut.safetensors`)
//! into a file or a [`NotFound`] that says where it looked;
//! [`ModelPaths::list`] enumerates [`ModelFile`]s for pickers.

mod comfy_yaml;
mod error;
mod kind;
mod list;
mod paths;
mod pathutil;
mod resolve;
mod sources;

pub use error::{LoadError, Origin, Warning};
pub use kind::{ModelKind, UnknownKind, MODEL_EXTENSIONS};
pub use list::ModelFile;
pub use paths::{ModelPaths, Root, COMFY_YAML};
pub use resolve::{NotFound, Place, Searched};
pub use sources::{default_config_path, parse_env_list, ConfigFile, Sources, ENV_VAR};

#[cfg(test)]
mod tests;
