//! The kinds of model file, named as ComfyUI names their folders.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// File extensions ComfyUI accepts for model files (compared without case).
/// `.gguf` is not in ComfyUI core but is what its GGUF custom nodes load.
pub const MODEL_EXTENSIONS: &[&str] = &[
    "safetensors",
    "sft",
    "ckpt",
    "pt",
    "pt2",
    "pth",
    "bin",
    "pkl",
    "gguf",
];

/// A kind of model, i.e. which folder family a workflow's file name lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelKind {
    Checkpoints,
    DiffusionModels,
    TextEncoders,
    Vae,
    Loras,
    ControlNet,
    UpscaleModels,
    Embeddings,
    ClipVision,
    StyleModels,
    VaeApprox,
    Gligen,
    Hypernetworks,
    Photomaker,
    /// Diffusers-format models are folders (holding `model_index.json`), not files.
    Diffusers,
}

impl ModelKind {
    /// Every kind, in a stable order (the order roots lay out their folders in).
    pub const ALL: [ModelKind; 15] = [
        ModelKind::Checkpoints,
        ModelKind::DiffusionModels,
        ModelKind::TextEncoders,
        ModelKind::Vae,
        ModelKind::Loras,
        ModelKind::ControlNet,
        ModelKind::UpscaleModels,
        ModelKind::Embeddings,
        ModelKind::ClipVision,
        ModelKind::StyleModels,
        ModelKind::VaeApprox,
        ModelKind::Gligen,
        ModelKind::Hypernetworks,
        ModelKind::Photomaker,
        ModelKind::Diffusers,
    ];

    /// Folder names for this kind under a models root: the canonical name
    /// first, then the legacy names ComfyUI still reads, so old layouts work.
    pub fn folder_names(self) -> &'static [&'static str] {
        match self {
            ModelKind::Checkpoints => &["checkpoints"],
            ModelKind::DiffusionModels => &["diffusion_models", "unet"],
            ModelKind::TextEncoders => &["text_encoders", "clip"],
            ModelKind::Vae => &["vae"],
            ModelKind::Loras => &["loras"],
            ModelKind::ControlNet => &["controlnet", "t2i_adapter"],
            ModelKind::UpscaleModels => &["upscale_models"],
            ModelKind::Embeddings => &["embeddings"],
            ModelKind::ClipVision => &["clip_vision"],
            ModelKind::StyleModels => &["style_models"],
            ModelKind::VaeApprox => &["vae_approx"],
            ModelKind::Gligen => &["gligen"],
            ModelKind::Hypernetworks => &["hypernetworks"],
            ModelKind::Photomaker => &["photomaker"],
            ModelKind::Diffusers => &["diffusers"],
        }
    }

    /// The canonical name, as used in folder names and messages.
    pub fn name(self) -> &'static str {
        self.folder_names()[0]
    }

    /// Whether models of this kind are folders rather than single files.
    pub fn is_folder_model(self) -> bool {
        self == ModelKind::Diffusers
    }

    /// Whether `path` has one of [`MODEL_EXTENSIONS`] (case-insensitively).
    pub fn has_model_extension(path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MODEL_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(e)))
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind name that is neither canonical nor a ComfyUI alias.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown model kind {0:?} (known: {known})", known = known_names())]
pub struct UnknownKind(pub String);

fn known_names() -> String {
    let names: Vec<&str> = ModelKind::ALL.iter().map(|k| k.name()).collect();
    names.join(", ")
}

impl FromStr for ModelKind {
    type Err = UnknownKind;

    /// Accepts canonical names and ComfyUI's aliases (`unet`, `clip`,
    /// `t2i_adapter`), ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.folder_names().iter().any(|n| n.eq_ignore_ascii_case(s)))
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}
