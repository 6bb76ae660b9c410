//! LoRA and LyCORIS files: read, matched to a model's weights, and applied
//! with ComfyUI's semantics (`comfy/lora.py`, `comfy/weight_adapter/`).
//!
//! - [`LoraFile::open`] groups a file's tensors by module and checks that
//!   each module is one complete adapter with consistent shapes.
//! - [`LoraFile::resolve`] matches modules to the weights of the networks
//!   given (`names` holds the key spellings).
//! - [`patch_weight`] / [`apply`] compute patched weights (`adapters` holds
//!   the arithmetic, `patch` the scaling and DoRA).
//! - [`patch()`] merges a file into MODEL and CLIP values (`values`).

mod adapters;
mod dit;
mod names;
mod parts;
mod patch;
#[cfg(test)]
mod tests;
mod values;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::weights::WeightFile;
pub use names::UnetLayout;
use patch::Adapter;
pub use values::{patch, Patched};

/// Which network of a model a patch is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Unet,
    /// `Clip(0)`: SD 1/2's only text encoder or SDXL's CLIP-L (kohya
    /// `lora_te_`/`lora_te1_`, diffusers `text_encoder.`); `Clip(1)`: SDXL's
    /// bigG (`lora_te2_`, `text_encoder_2.`).
    Clip(usize),
}

/// One network's weights by the internal names weft builds with: diffusers
/// names for the UNet, transformers names for text encoders.
pub use crate::weights::Weights;

/// One module of a file: the adapter for its weight and/or its bias.
#[derive(Debug)]
struct Module {
    name: String,
    weight: Option<Arc<Adapter>>,
    /// A `diff_b` / `b_norm` change, with its key (reported when the
    /// network's layer has no bias).
    bias: Option<(String, Arc<Adapter>)>,
}

/// An opened LoRA / LyCORIS file.
#[derive(Debug)]
pub struct LoraFile {
    path: PathBuf,
    modules: Vec<Module>,
    /// Keys of no adapter kind weft knows.
    unknown: Vec<String>,
}

/// A file's modules matched to a model's weights.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub patches: Vec<Patch>,
    /// File keys (module base names, or whole keys of unknown tensors) that
    /// match no weight of the networks given.
    pub unmatched: Vec<String>,
}

/// One adapter applied to one weight.
#[derive(Clone, Debug)]
pub struct Patch {
    pub target: Target,
    /// The internal name, with `.weight` or `.bias`.
    pub weight: String,
    adapter: Arc<Adapter>,
}

impl LoraFile {
    /// Memory-maps `path` and groups its tensors into adapters; reads only
    /// the header and the `alpha` scalars. Every incomplete or misshapen
    /// module is named in one error.
    pub fn open(path: &Path) -> Result<LoraFile, String> {
        let file = WeightFile::open(path)?;
        let (_, metadata) = crate::detect::header(path)
            .map_err(|e| format!("{}: not a valid safetensors file: {e}", path.display()))?;
        let (modules, unknown) = parts::modules(&file, &metadata)?;
        Ok(LoraFile {
            path: path.to_path_buf(),
            modules,
            unknown,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Matches every module to a weight of `networks`;
    /// `unet_layers_per_block` translates SGM/LDM module names.
    pub fn resolve(
        &self,
        networks: &[(Target, &Weights)],
        unet_layers_per_block: usize,
    ) -> Resolved {
        let table = names::KeyTable::new(networks, unet_layers_per_block);
        let mut patches = Vec::new();
        let mut unmatched = self.unknown.clone();
        for module in &self.modules {
            let Some((target, base)) = table.get(&module.name) else {
                unmatched.push(module.name.clone());
                continue;
            };
            if let Some(adapter) = &module.weight {
                patches.push(Patch {
                    target,
                    weight: format!("{base}.weight"),
                    adapter: adapter.clone(),
                });
            }
            if let Some((key, adapter)) = &module.bias {
                let bias = format!("{base}.bias");
                let network = networks.iter().find(|(t, _)| *t == target);
                if network.is_some_and(|(_, w)| w.contains_key(&bias)) {
                    patches.push(Patch {
                        target,
                        weight: bias,
                        adapter: adapter.clone(),
                    });
                } else {
                    unmatched.push(key.clone());
                }
            }
        }
        unmatched.sort();
        Resolved { patches, unmatched }
    }

    /// The width of the text states the UNet part cross-attends to (the
    /// in-width of an `attn2` key/value change), if the file patches one:
    /// 768 for SD 1.x, 1024 for SD 2.x, 2048 for SDXL.
    pub fn context_width(&self) -> Option<usize> {
        self.modules.iter().find_map(|m| {
            let name = m.name.as_str();
            let cross =
                name.contains("attn2") && (name.ends_with("to_k") || name.ends_with("to_v"));
            cross
                .then(|| m.weight.as_ref()?.shape.get(1).copied())
                .flatten()
        })
    }

    /// The model family the file's module names belong to, when they say.
    pub fn family_hint(&self) -> Option<&'static str> {
        let has = |part: &str| self.modules.iter().any(|m| m.name.contains(part));
        if has("double_blocks") || has("single_blocks") || has("single_transformer_blocks") {
            Some("Flux")
        } else if has("joint_blocks") || has("context_block") || has("add_q_proj") {
            Some("SD3")
        } else if has("down_blocks") || has("input_blocks") || has("lora_unet_down") {
            Some("Stable Diffusion (UNet)")
        } else {
            None
        }
    }

    /// Whether the file patches a second text encoder (SDXL's bigG).
    pub fn has_second_text_encoder(&self) -> bool {
        self.modules
            .iter()
            .any(|m| m.name.starts_with("lora_te2_") || m.name.starts_with("text_encoder_2."))
    }
}

/// `base` patched by `patches` in order at `strength`, in `base`'s shape and
/// dtype (computed in f32).
pub fn patch_weight(base: &Tensor, patches: &[&Patch], strength: f64) -> Result<Tensor, String> {
    let mut w = base.to_dtype(DType::F32).map_err(|e| e.to_string())?;
    for patch in patches {
        w = patch
            .adapter
            .apply(&w, strength)
            .map_err(|e| format!("{e} (patching `{}`)", patch.weight))?;
    }
    w.to_dtype(base.dtype()).map_err(|e| e.to_string())
}

/// The patched tensors of every weight of `target` that `resolved` patches
/// (name → new tensor); all other weights are left to the caller to share.
pub fn apply(
    target: Target,
    base: &Weights,
    resolved: &Resolved,
    strength: f64,
) -> Result<Weights, String> {
    let mut by_weight: HashMap<&str, Vec<&Patch>> = HashMap::new();
    for patch in resolved.patches.iter().filter(|p| p.target == target) {
        by_weight.entry(&patch.weight).or_default().push(patch);
    }
    by_weight
        .into_par_iter()
        .map(|(name, patches)| {
            let tensor = base
                .get(name)
                .ok_or_else(|| format!("`{name}` is not a weight of the {target:?} network"))?;
            Ok((name.to_string(), patch_weight(tensor, &patches, strength)?))
        })
        .collect()
}
