//! Finding a transformer's weights: a diffusers component folder (one file
//! or shards), a whole diffusers pipeline folder, or a single file whose
//! keys may carry a checkpoint prefix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sd::config::Shapes;
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

/// How one transformer family's files are told apart and named.
pub struct Layout<C> {
    /// "SD3", "Flux": for messages.
    pub family: &'static str,
    /// A key part only the original layout has (`joint_blocks.`).
    pub marker: &'static str,
    /// A key part only the diffusers layout has.
    pub diffusers_marker: &'static str,
    /// The config an original file's shapes (prefix removed) describe.
    pub config_from_shapes: fn(&Shapes) -> Result<C, String>,
    /// An original key's diffusers names, given the config.
    pub names: fn(&str, &C) -> Vec<(String, Transform)>,
}

/// The component config of diffusers folder `dir` (a pipeline's
/// `transformer/`, or the component folder itself).
fn folder_config<C: serde::de::DeserializeOwned>(dir: &Path) -> Result<C, String> {
    component_config(&dir.join("transformer")).or_else(|_| component_config(dir))
}

/// Opens a transformer of `layout`'s family: a diffusers pipeline or
/// component folder, a file in the original layout (bare or under
/// `model.diffusion_model.`; the config read from its shapes unless
/// `config_dir`, a diffusers folder, gives it), or a diffusers-named file
/// with `config_dir`.
pub fn open_transformer<C: serde::de::DeserializeOwned>(
    path: &Path,
    config_dir: Option<&Path>,
    layout: &Layout<C>,
) -> Result<(C, TensorMap), String> {
    if path.is_dir() {
        let dir = if path.join("transformer").is_dir() {
            path.join("transformer")
        } else {
            path.to_path_buf()
        };
        let config = component_config(&dir)?;
        let files = component_files(&dir)?;
        return Ok((
            config,
            tensor_map(&files, "", crate::weights::diffusers_names)?,
        ));
    }
    let family = layout.family;
    let file = WeightFile::open(path)?;
    let all = file.shapes();
    let keys: Vec<String> = all.keys().cloned().collect();
    let Some(prefix) = key_prefix(&keys, layout.marker, &["model.diffusion_model."]) else {
        if key_prefix(&keys, layout.diffusers_marker, &[]).is_some() {
            let dir = config_dir.ok_or_else(|| {
                format!(
                    "{}: a diffusers-named {family} transformer needs its config folder",
                    path.display()
                )
            })?;
            let mut map = TensorMap::default();
            map.add_file(&file, "", crate::weights::diffusers_names);
            return Ok((folder_config(dir)?, map));
        }
        return Err(format!(
            "{}: no {family} transformer (`{}…`)",
            path.display(),
            layout.marker
        ));
    };
    let shapes: Shapes = all
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
        .collect();
    let config = match config_dir {
        Some(dir) => folder_config(dir)?,
        None => {
            (layout.config_from_shapes)(&shapes).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let mut map = TensorMap::default();
    map.add_file(&file, prefix, |k| (layout.names)(k, &config));
    Ok((config, map))
}

/// Reads sizes from `shapes`: `dim(key, i)` is dimension `i` of `key`, or
/// an error naming the key and the family.
pub fn shape_reader<'a>(
    shapes: &'a Shapes,
    family: &'a str,
) -> impl Fn(&str, usize) -> Result<usize, String> + 'a {
    move |key, i| {
        shapes
            .get(key)
            .and_then(|s| s.get(i).copied())
            .ok_or_else(|| format!("no `{key}` to read the {family} transformer's size from"))
    }
}
