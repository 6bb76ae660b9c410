//! Turning a workflow's model name into a file, or a helpful error.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::kind::{ModelKind, MODEL_EXTENSIONS};
use crate::list::ModelFile;
use crate::paths::ModelPaths;
use crate::pathutil::{absolute, contained, relative};

/// How many near-miss names a [`NotFound`] offers.
const MAX_SUGGESTIONS: usize = 3;
/// Below this similarity (0..=1) a name is not worth suggesting.
const MIN_SIMILARITY: f64 = 0.5;

/// What kind of place a [`Searched`] entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The name itself, an absolute path.
    AbsolutePath,
    /// The graph file's folder, tried before the kind folders.
    GraphFolder,
    /// One of the kind's folders.
    KindFolder,
}

/// One place [`ModelPaths::resolve`] looked, in the order it looked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Searched {
    pub path: PathBuf,
    /// Whether that path exists at all (a missing folder is a common cause).
    pub exists: bool,
    pub place: Place,
}

/// A model name that matched no file; its message says where weft looked and
/// what the user may have meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFound {
    pub kind: ModelKind,
    pub name: String,
    pub searched: Vec<Searched>,
    /// The name climbs out of the kind folders with `..`, so they were skipped.
    pub escapes: bool,
    /// Up to three known names close to `name`, best first.
    pub suggestions: Vec<String>,
}

impl ModelPaths {
    /// Finds the file a workflow means by `name`. An existing absolute path is
    /// taken as is. A relative one is tried against `base_dir` (the graph
    /// file's folder), then inside each folder of `kind` in order; `/` and `\`
    /// both separate subfolders. Inside kind folders, names that would climb
    /// out with `..` are refused.
    pub fn resolve(
        &self,
        kind: ModelKind,
        name: &str,
        base_dir: Option<&Path>,
    ) -> Result<PathBuf, NotFound> {
        // A diffusers folder is a model too, of any kind.
        let found = |p: &Path| {
            if kind.is_folder_model() {
                p.is_dir()
            } else {
                p.is_file()
                    || p.join("model_index.json").is_file()
                    || p.join("config.json").is_file()
            }
        };
        let mut searched = Vec::new();
        let mut escapes = false;
        let raw = Path::new(name);
        if name.trim().is_empty() {
            // Nothing to look for; fall through to the error.
        } else if raw.is_absolute() {
            if found(raw) {
                return Ok(raw.to_path_buf());
            }
            let (path, exists) = (raw.to_path_buf(), raw.exists());
            let place = Place::AbsolutePath;
            searched.push(Searched {
                path,
                exists,
                place,
            });
        } else {
            if let Some(base) = base_dir {
                let candidate = absolute(&relative(name), Some(base));
                if found(&candidate) {
                    return Ok(candidate);
                }
                let (path, exists) = (absolute(base, None), base.is_dir());
                let place = Place::GraphFolder;
                searched.push(Searched {
                    path,
                    exists,
                    place,
                });
            }
            match contained(name) {
                Some(rel) => {
                    for folder in self.folders(kind) {
                        let candidate = folder.join(&rel);
                        if found(&candidate) {
                            return Ok(candidate);
                        }
                        let (path, exists) = (folder.clone(), folder.is_dir());
                        let place = Place::KindFolder;
                        searched.push(Searched {
                            path,
                            exists,
                            place,
                        });
                    }
                }
                None => escapes = true,
            }
        }
        Err(NotFound {
            kind,
            name: name.to_string(),
            searched,
            escapes,
            suggestions: suggest(name, &self.list(kind)),
        })
    }
}

/// The closest known names to `name`, comparing whole relative names and
/// bare file names (so a missing or wrong subfolder still finds the file),
/// ignoring case and extension.
fn suggest(name: &str, files: &[ModelFile]) -> Vec<String> {
    let target = comparable(name);
    let target_base = base_name(&target);
    let mut scored: Vec<(f64, &str)> = files
        .iter()
        .filter_map(|f| {
            let cand = comparable(&f.name);
            let score = similarity(&target, &cand).max(similarity(target_base, base_name(&cand)));
            (score >= MIN_SIMILARITY).then_some((score, f.name.as_str()))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, n)| n.to_string())
        .collect()
}

fn similarity(a: &str, b: &str) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let edit = strsim::normalized_damerau_levenshtein(a, b);
    // `juggernaut` for `juggernaut_xl_v9`: a fragment is a strong hint.
    let fragment = if a.contains(b) || b.contains(a) {
        0.8
    } else {
        0.0
    };
    edit.max(fragment)
}

/// Lower-cased, `/`-separated, without a model extension.
fn comparable(name: &str) -> String {
    let lower = name.to_lowercase().replace('\\', "/");
    match lower.rsplit_once('.') {
        Some((stem, ext)) if MODEL_EXTENSIONS.contains(&ext) => stem.to_string(),
        _ => lower,
    }
}

fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no {} model named {:?}", self.kind, self.name)?;
        if self.searched.is_empty() && !self.escapes {
            write!(
                f,
                "; no {} folders are configured (pass --models DIR, set {}, \
                 or list roots in weft's config file)",
                self.kind,
                crate::ENV_VAR
            )?;
        } else if !self.searched.is_empty() {
            f.write_str("; searched, in order:")?;
            for s in &self.searched {
                write!(f, "\n  {}", s.path.display())?;
                let note = match (s.place, s.exists) {
                    (Place::AbsolutePath, true) if self.kind.is_folder_model() => " (not a folder)",
                    (Place::AbsolutePath, true) => " (not a file)",
                    (Place::GraphFolder, true) => " (the graph's folder)",
                    (Place::GraphFolder, false) => " (the graph's folder, which does not exist)",
                    (_, false) => " (does not exist)",
                    (Place::KindFolder, true) => "",
                };
                f.write_str(note)?;
            }
        }
        if self.escapes {
            write!(
                f,
                "\n  (not looked for in the {} folders: the name climbs out of them with `..`)",
                self.kind
            )?;
        }
        if !self.suggestions.is_empty() {
            let quoted: Vec<String> = self.suggestions.iter().map(|s| format!("{s:?}")).collect();
            write!(f, "\ndid you mean {}?", quoted.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for NotFound {}
