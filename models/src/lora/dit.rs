//! LoRA for the SD3 and Flux transformers: module names of every format
//! users have (diffusers/PEFT and ai-toolkit under diffusers' names; kohya
//! under the original names, whose fused q/k/v and Flux's `linear1` cover
//! several of weft's weights) matched to the transformer's weights and
//! merged into in-memory copies of just those layers; every other weight
//! stays where it was (memory-mapped, compressed).

use std::collections::HashMap;

use candle_core::Tensor;

use super::{LoraFile, Weights};
use crate::weights::{TensorMap, Transform};

/// Where a LoRA module's change goes: weft's weights, each with how it is
/// cut from the module's (original, possibly fused) weight.
type Targets = Vec<(String, Transform)>;

/// Prefixes that name the transformer in LoRA files.
const PREFIXES: [&str; 5] = [
    "transformer.",
    "diffusion_model.",
    "model.diffusion_model.",
    "base_model.model.",
    "lora_unet_",
];

/// Module-name forms → targets, for a transformer whose weights are
/// `tensors` (diffusers names) and whose original linear modules are
/// `originals`, mapped by `names`.
pub(super) fn table(
    tensors: &TensorMap,
    originals: &[String],
    names: impl Fn(&str) -> Targets,
) -> HashMap<String, Targets> {
    let mut table = HashMap::new();
    for (name, _) in tensors.sources() {
        if let Some(module) = name.strip_suffix(".weight") {
            let target = vec![(name.clone(), Transform::Same)];
            table.insert(module.replace('.', "_"), target.clone());
            table.insert(module.to_string(), target);
        }
    }
    for module in originals {
        let targets = names(&format!("{module}.weight"));
        if !targets.is_empty() {
            table.insert(module.replace('.', "_"), targets.clone());
            table.insert(module.clone(), targets);
        }
    }
    table
}

/// The targets of LoRA module `name`, after its format's prefix.
fn lookup<'a>(table: &'a HashMap<String, Targets>, name: &str) -> Option<&'a Targets> {
    let bare = PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    let bare = bare.strip_prefix("lora_transformer_").unwrap_or(bare);
    table.get(bare)
}

/// The two halves along dim 0 swapped (the original modulations' order).
fn swap_halves(t: &Tensor) -> candle_core::Result<Tensor> {
    let rows = t.dim(0)?;
    Tensor::cat(
        &[t.narrow(0, rows / 2, rows / 2)?, t.narrow(0, 0, rows / 2)?],
        0,
    )
}

/// The patched weights (weft's names → new f32 tensors) of `lora` at
/// `strength` on `tensors`, and the module names that match none.
pub(super) fn merge(
    lora: &LoraFile,
    tensors: &TensorMap,
    table: &HashMap<String, Targets>,
    strength: f64,
) -> Result<(Weights, Vec<String>), String> {
    let mut changed = Weights::new();
    let mut unmatched = lora.unknown.clone();
    for module in &lora.modules {
        let (Some(targets), Some(adapter)) = (lookup(table, &module.name), &module.weight) else {
            unmatched.push(module.name.clone());
            continue;
        };
        let mut sorted = targets.clone();
        sorted.sort_by_key(|(_, t)| match t {
            Transform::Chunk { index, .. } => *index,
            _ => 0,
        });
        // The module's own weight: weft's parts, joined back in their order.
        let parts = sorted
            .iter()
            .map(|(name, _)| match changed.get(name) {
                Some(t) => Ok(t.clone()),
                None => tensors.load(name),
            })
            .collect::<Result<Vec<Tensor>, String>>()?;
        let rows: Vec<usize> = parts.iter().map(|p| p.dim(0).unwrap_or(0)).collect();
        let err = |e: candle_core::Error| format!("`{}`: {e}", module.name);
        let mut base = Tensor::cat(&parts, 0).map_err(err)?;
        let swapped = sorted.iter().any(|(_, t)| *t == Transform::SwapHalves);
        if swapped {
            base = swap_halves(&base).map_err(err)?;
        }
        let mut patched = adapter.apply(&base, strength)?;
        if swapped {
            patched = swap_halves(&patched).map_err(err)?;
        }
        let mut start = 0;
        for ((name, _), n) in sorted.iter().zip(rows) {
            changed.insert(name.clone(), patched.narrow(0, start, n).map_err(err)?);
            start += n;
        }
    }
    unmatched.sort();
    Ok((changed, unmatched))
}
