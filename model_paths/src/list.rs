//! Listing every model of a kind, for pickers and suggestions.
//!
//! Model folders can hold hundreds of gigabytes, so this reads directory
//! entries and metadata only, never file contents.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::kind::ModelKind;
use crate::paths::ModelPaths;

/// One model found under a kind's folders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// The name a workflow uses: relative to its kind folder, `/`-separated.
    pub name: String,
    /// Where it is on disk (through any symlinks, not canonicalised).
    pub path: PathBuf,
    /// Size in bytes (for a folder model, the sum of the files inside).
    pub size: u64,
}

impl ModelPaths {
    /// Every model of `kind`, sorted by name. When two folders hold the same
    /// name the earlier folder wins, matching [`ModelPaths::resolve`].
    /// Hidden files and folders are skipped, as are entries that can't be
    /// read; symlinked folders are followed, but never round a loop.
    pub fn list(&self, kind: ModelKind) -> Vec<ModelFile> {
        let mut found = BTreeMap::new();
        for folder in self.folders(kind) {
            let Ok(canonical) = fs::canonicalize(folder) else {
                continue;
            };
            let mut walk = Walk {
                kind,
                found: &mut found,
                ancestors: vec![canonical],
            };
            walk.dir(folder, "");
        }
        found.into_values().collect()
    }
}

struct Walk<'a> {
    kind: ModelKind,
    found: &'a mut BTreeMap<String, ModelFile>,
    /// Canonical paths of the folders being walked, outermost first: a
    /// symlink to any of them would loop.
    ancestors: Vec<PathBuf>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, prefix: &str) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(file_name) = entry.file_name().into_string() else {
                continue; // workflows name files in UTF-8
            };
            if file_name.starts_with('.') {
                continue; // .git, .cache, macOS `._` resource forks
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let name = format!("{prefix}{file_name}");
            // Following a symlink costs a stat; plain entries need none.
            let (is_dir, metadata) = if file_type.is_symlink() {
                match fs::metadata(&path) {
                    Ok(m) => (m.is_dir(), Some(m)),
                    Err(_) => continue, // dangling
                }
            } else {
                (file_type.is_dir(), None)
            };
            if is_dir {
                self.subdir(&path, name, file_type.is_symlink());
            } else if !self.kind.is_folder_model() && ModelKind::has_model_extension(&path) {
                let size = match metadata {
                    Some(m) => m.len(),
                    None => entry.metadata().map_or(0, |m| m.len()),
                };
                self.found
                    .entry(name.clone())
                    .or_insert(ModelFile { name, path, size });
            }
        }
    }

    fn subdir(&mut self, path: &Path, name: String, via_symlink: bool) {
        let parent = self.ancestors.last().expect("root is an ancestor");
        let canonical = if via_symlink {
            match fs::canonicalize(path) {
                Ok(c) => c,
                Err(_) => return,
            }
        } else {
            parent.join(path.file_name().unwrap_or_default())
        };
        if self.ancestors.contains(&canonical) {
            return; // a loop
        }
        // A diffusers pipeline folder is one model wherever it sits (weft's
        // checkpoint loaders read them), never the files inside it.
        if path.join("model_index.json").is_file() {
            let size = folder_size(path, &mut vec![canonical]);
            let path = path.to_path_buf();
            self.found
                .entry(name.clone())
                .or_insert(ModelFile { name, path, size });
            return;
        }
        self.ancestors.push(canonical);
        self.dir(path, &format!("{name}/"));
        self.ancestors.pop();
    }
}

/// Total size of the files under `dir`, following symlinks without looping.
fn folder_size(dir: &Path, ancestors: &mut Vec<PathBuf>) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let Ok(canonical) = fs::canonicalize(&path) else {
                continue;
            };
            if !ancestors.contains(&canonical) {
                ancestors.push(canonical);
                total += folder_size(&path, ancestors);
                ancestors.pop();
            }
        } else {
            total += meta.len();
        }
    }
    total
}
