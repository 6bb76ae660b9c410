//! Loader nodes: model files found by name in ComfyUI's model folders (or
//! given as paths), read into MODEL, CLIP, VAE, CONTROL_NET and CLASSIFIER
//! values, and LoRAs merged into MODEL and CLIP.
//!
//! Every loader resolves its file the same way ([`ModelFiles::resolve`]):
//! an absolute path; a path relative to the graph file's folder; a name in
//! the input's model folder (subfolders allowed); a path relative to the
//! working directory. A graph run with confined files (`weft serve`) may
//! only name files in the model folders. Its cache key is the resolved
//! file's size and modification time, so an unchanged file is never
//! reloaded.

mod controlnet;
mod lora;
mod mnist;
mod sd;
mod text_encoders;
mod upscale;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use weft_core::{Inputs, NodeDef, NodeError};
use weft_model_paths::{ModelKind, ModelPaths};

/// Whether `name` is a relative path that cannot climb out of the folder it
/// is looked up in: no root, no drive, no `..`.
pub(crate) fn plain_relative(name: &str) -> bool {
    !name.is_empty()
        && Path::new(name).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
        && !name.contains('\\')
}

/// The model folders the loaders search, shared by every loader node.
#[derive(Clone, Default)]
pub struct ModelFiles(Arc<ModelPaths>);

impl ModelFiles {
    pub fn new(paths: ModelPaths) -> Self {
        ModelFiles(Arc::new(paths))
    }

    pub fn paths(&self) -> &ModelPaths {
        &self.0
    }

    /// The file that input `input` (a name of `kind`) means; the error names
    /// the folders searched and the closest names found.
    pub fn resolve(
        &self,
        inputs: &Inputs,
        input: &str,
        kind: ModelKind,
    ) -> Result<PathBuf, NodeError> {
        let name = inputs.str(input)?;
        if inputs.confined() {
            // A graph from the network names models in the model folders only.
            if !plain_relative(name) {
                return Err(NodeError::input(
                    input,
                    format!(
                        "{name:?}: name a file in the model folders (no absolute path, no `..`)"
                    ),
                ));
            }
            return self
                .0
                .resolve(kind, name, None)
                .map_err(|not_found| NodeError::input(input, not_found.to_string()));
        }
        self.0
            .resolve(kind, name, inputs.base_dir())
            .or_else(|not_found| {
                // A path given on the command line (`--set`) is relative to
                // where weft runs.
                let here = Path::new(name);
                if !name.is_empty() && here.exists() {
                    Ok(here.to_path_buf())
                } else {
                    Err(NodeError::input(input, not_found.to_string()))
                }
            })
    }

    /// The textual-inversion embedding `embedding:name` refers to: `name`
    /// in the embeddings folders (or the graph's folder), with or without
    /// its extension; the error lists the folders searched.
    pub fn embedding(
        &self,
        name: &str,
        base_dir: Option<&Path>,
    ) -> Result<Arc<weft_models::clip::Embedding>, String> {
        let mut first_miss = None;
        for ext in ["", ".safetensors", ".pt", ".bin"] {
            match self
                .0
                .resolve(ModelKind::Embeddings, &format!("{name}{ext}"), base_dir)
            {
                Ok(path) => {
                    return weft_models::clip::Embedding::open(&path)
                        .map(Arc::new)
                        .map_err(|e| format!("`embedding:{name}`: {e}"))
                }
                Err(e) => {
                    first_miss.get_or_insert(e);
                }
            }
        }
        Err(format!(
            "unknown embedding `embedding:{name}`: {}",
            first_miss.map_or_else(String::new, |e| e.to_string())
        ))
    }

    /// The cache key part for input `input`: what it resolves to and that
    /// file's (or diffusers folder's) stamp.
    pub fn fingerprint(&self, inputs: &Inputs, input: &str, kind: ModelKind) -> String {
        match self.resolve(inputs, input, kind) {
            Ok(path) => format!("{}={}", path.display(), path_stamp(&path)),
            Err(e) => format!("unresolved:{}", e.message),
        }
    }
}

/// Every loader node, searching `files`.
pub fn nodes(files: &ModelFiles) -> Vec<NodeDef> {
    vec![
        sd::checkpoint_loader_simple(files.clone()),
        sd::vae_loader(files.clone()),
        sd::unet_loader(files.clone()),
        sd::clip_loader(files.clone()),
        text_encoders::dual_clip_loader(files.clone()),
        text_encoders::triple_clip_loader(files.clone()),
        sd::unet_loader_named(files.clone(), "UnetLoaderGGUF"),
        text_encoders::dual_clip_loader_named(files.clone(), "DualCLIPLoaderGGUF"),
        controlnet::control_net_loader(files.clone()),
        lora::lora_loader(files.clone()),
        lora::lora_loader_model_only(files.clone()),
        mnist::checkpoint_loader(files.clone()),
        mnist::classifier_loader(files.clone()),
        upscale::upscale_model_loader(files.clone()),
    ]
}

/// Size and modification time of a file, or of every file up to two levels
/// into a folder (a diffusers model), so an unchanged model is not reloaded.
pub(crate) fn path_stamp(path: &Path) -> String {
    if !path.is_dir() {
        return file_stamp(path);
    }
    let mut parts = Vec::new();
    let mut walk = |dir: &Path| {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for f in entries.flatten() {
                parts.push(format!("{}={}", f.path().display(), file_stamp(&f.path())));
            }
        }
    };
    walk(path);
    if let Ok(entries) = std::fs::read_dir(path) {
        for sub in entries.flatten().filter(|e| e.path().is_dir()) {
            walk(&sub.path());
        }
    }
    parts.sort();
    parts.join(";")
}

/// Size and modification time of one file (or why it cannot be read).
pub(crate) fn file_stamp(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{mtime}", meta.len())
        }
        Err(e) => format!("unreadable:{:?}", e.kind()),
    }
}
