//! ComfyUI's `extra_model_paths.yaml`, read as ComfyUI reads it.
//!
//! The file has top-level sections (`a1111:`, `comfyui:`, …). Each may set
//! `base_path` (with `~` and environment variables expanded; relative to the
//! yaml file's folder) and `is_default`, and maps folder keys (`checkpoints`,
//! `unet`, `clip`, …) to one path or a block of paths, one per line, relative
//! to `base_path`. Keys that are not model kinds (`configs`, `custom_nodes`,
//! whatever custom nodes register) are ignored, as ComfyUI keeps them for
//! others.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::error::LoadError;
use crate::kind::ModelKind;
use crate::pathutil::{absolute, expand, Lookup};

/// One folder a yaml file adds for a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct YamlFolder {
    pub kind: ModelKind,
    pub folder: PathBuf,
    /// ComfyUI's `is_default`: searched before the install's own folders.
    pub is_default: bool,
}

/// Reads and interprets the yaml file at `file`.
pub(crate) fn read(file: &Path, env: Lookup) -> Result<Vec<YamlFolder>, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(&text, file, env)
}

/// Interprets yaml `text` as if read from `file` (which anchors relative paths).
pub(crate) fn parse(text: &str, file: &Path, env: Lookup) -> Result<Vec<YamlFolder>, LoadError> {
    let error = |line: Option<usize>, message: String| LoadError::Yaml {
        file: file.to_path_buf(),
        line,
        message,
    };
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| error(Some(e.marker().line()), e.info().to_string()))?;
    let yaml_dir = absolute(file, None)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let sections = match docs.first() {
        None | Some(Yaml::Null) => return Ok(Vec::new()),
        Some(Yaml::Hash(sections)) => sections,
        Some(_) => return Err(error(None, "expected sections (name: …) at the top".into())),
    };

    let mut out = Vec::new();
    for (name, body) in sections {
        let section = scalar_text(name).unwrap_or_else(|| format!("{name:?}"));
        let body = match body {
            Yaml::Null => continue,
            Yaml::Hash(body) => body,
            _ => {
                let msg = format!("section `{section}` should map folder names to paths");
                return Err(error(None, msg));
            }
        };
        let key = |k: &str| body.get(&Yaml::String(k.to_string()));
        let base = match key("base_path") {
            None | Some(Yaml::Null) => yaml_dir.clone(),
            Some(v) => match scalar_text(v) {
                Some(s) => absolute(&expand(s.trim(), env), Some(&yaml_dir)),
                None => {
                    let msg = format!("section `{section}`: base_path should be a path");
                    return Err(error(None, msg));
                }
            },
        };
        let is_default = match key("is_default") {
            None | Some(Yaml::Null) => false,
            Some(v) => as_bool(v).ok_or_else(|| {
                error(
                    None,
                    format!("section `{section}`: is_default should be true or false"),
                )
            })?,
        };
        for (k, v) in body {
            let Some(kind) = k.as_str().and_then(|k| k.parse::<ModelKind>().ok()) else {
                continue; // base_path, is_default, configs, custom keys
            };
            let key_name = k.as_str().unwrap_or_default();
            let lines = paths_of(v).ok_or_else(|| {
                let msg =
                    format!("section `{section}`: `{key_name}` should be a path or lines of paths");
                error(None, msg)
            })?;
            for line in lines {
                out.push(YamlFolder {
                    kind,
                    folder: absolute(&expand(&line, env), Some(&base)),
                    is_default,
                });
            }
        }
    }
    Ok(out)
}

/// A scalar as text (paths such as `2024` arrive as numbers).
fn scalar_text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// YAML 1.2 booleans, plus the YAML 1.1 words PyYAML (hence ComfyUI) accepts.
fn as_bool(v: &Yaml) -> Option<bool> {
    match v {
        Yaml::Boolean(b) => Some(*b),
        Yaml::String(s) => match s.to_ascii_lowercase().as_str() {
            "yes" | "on" | "y" => Some(true),
            "no" | "off" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The non-empty lines of a value: one path, a block of paths, or a list.
fn paths_of(v: &Yaml) -> Option<Vec<String>> {
    let lines = |s: &str| -> Vec<String> {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    match v {
        Yaml::Null => Some(Vec::new()),
        Yaml::Array(items) => {
            let texts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
            Some(texts?.iter().flat_map(|s| lines(s)).collect())
        }
        other => scalar_text(other).map(|s| lines(&s)),
    }
}
