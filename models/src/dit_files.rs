//! Finding a transformer's weights: a diffusers component folder (one file
//! or shards), a whole diffusers pipeline folder, or a single file whose
//! keys may carry a checkpoint prefix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::weights::{TensorMap, Transform, WeightFile};

/// The safetensors files of diffusers component folder `dir`: its one
/// `diffusion_pytorch_model.safetensors` (or `model.safetensors`), or every
/// shard `…-0000k-of-0000n.safetensors`; pickles are refused.
pub fn component_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    // A folder holding both a whole file and its fp16 variant: take the first name.
    let whole: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !p.to_string_lossy().contains("-of-"))
        .collect();
    if let Some(first) = whole.first() {
        if files.iter().all(|p| !p.to_string_lossy().contains("-of-")) {
            return Ok(vec![(*first).clone()]);
        }
    }
    let shards: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("-of-"))
        .cloned()
        .collect();
    if shards.is_empty() {
        return Err(format!(
            "{}: no safetensors weights (pickled .bin weights are not loaded; convert them to safetensors)",
            dir.display()
        ));
    }
    Ok(shards)
}

/// The tensors of `files` whose keys start with `prefix`, named by `names`.
pub fn tensor_map(
    files: &[PathBuf],
    prefix: &str,
    names: impl Fn(&str) -> Vec<(String, Transform)>,
) -> Result<TensorMap, String> {
    let mut map = TensorMap::default();
    for path in files {
        let file: Arc<WeightFile> = WeightFile::open(path)?;
        map.add_file(&file, prefix, &names);
    }
    Ok(map)
}

/// A diffusers component folder's `config.json`, parsed.
pub fn component_config<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The common prefix of a single file's transformer keys: `""` or one of
/// `prefixes` (`model.diffusion_model.`), whichever has `marker` after it.
pub fn key_prefix<'a>(keys: &[String], marker: &str, prefixes: &[&'a str]) -> Option<&'a str> {
    prefixes
        .iter()
        .chain(std::iter::once(&""))
        .find(|p| keys.iter().any(|k| k.starts_with(&format!("{p}{marker}"))))
        .copied()
}

/// How many numbered blocks `prefix{i}.` the keys hold.
pub fn count_blocks(keys: &[String], prefix: &str) -> usize {
    keys.iter()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1)
}
