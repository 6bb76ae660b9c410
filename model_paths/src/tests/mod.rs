//! Tests over real temporary folders; each builds its own layout.

mod kinds_and_sources;
mod list;
mod resolve;
mod yaml;

use std::fs;
use std::path::{Path, PathBuf};

use crate::{ModelPaths, Origin};

/// Creates `root/rel` (and its parents) holding `bytes` bytes.
fn touch(root: &Path, rel: &str, bytes: usize) -> PathBuf {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, vec![0u8; bytes]).unwrap();
    path
}

/// A [`ModelPaths`] with the given roots, in order.
fn with_roots(roots: &[&Path]) -> ModelPaths {
    let mut paths = ModelPaths::new();
    for root in roots {
        paths.add_root(root, Origin::Added).unwrap();
    }
    paths
}

/// A lookup with only the given variables set.
fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
}
