//! The types of edges and inputs.

use std::fmt;

use serde::Serialize;

/// The type of an edge or input, checked when the graph loads.
///
/// Names follow ComfyUI's vocabulary so users read them at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    Int,
    Float,
    Bool,
    String,
    Image,
    Latent,
    Conditioning,
    Noise,
    Sigmas,
    Mask,
    Model,
    Clip,
    Vae,
    ControlNet,
    Guider,
    Sampler,
    /// An image classifier (for classifier guidance and evaluation).
    Classifier,
    /// Accepts anything; used by generic nodes such as `Switch`.
    Any,
    /// An image-to-image upscale model (ESRGAN, Real-ESRGAN, Compact).
    /// Appended after `Any`: variants keep their positions, so nothing that
    /// stored an older type's discriminant sees a different type.
    UpscaleModel,
}

impl ValueType {
    /// Every type, `Any` last (the plugin host lists the others as the
    /// types a plugin may name).
    pub const ALL: [ValueType; 19] = [
        ValueType::Int,
        ValueType::Float,
        ValueType::Bool,
        ValueType::String,
        ValueType::Image,
        ValueType::Latent,
        ValueType::Conditioning,
        ValueType::Noise,
        ValueType::Sigmas,
        ValueType::Mask,
        ValueType::Model,
        ValueType::Clip,
        ValueType::Vae,
        ValueType::ControlNet,
        ValueType::Guider,
        ValueType::Sampler,
        ValueType::Classifier,
        ValueType::UpscaleModel,
        ValueType::Any,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ValueType::Int => "INT",
            ValueType::Float => "FLOAT",
            ValueType::Bool => "BOOLEAN",
            ValueType::String => "STRING",
            ValueType::Image => "IMAGE",
            ValueType::Latent => "LATENT",
            ValueType::Conditioning => "CONDITIONING",
            ValueType::Noise => "NOISE",
            ValueType::Sigmas => "SIGMAS",
            ValueType::Mask => "MASK",
            ValueType::Model => "MODEL",
            ValueType::Clip => "CLIP",
            ValueType::Vae => "VAE",
            ValueType::ControlNet => "CONTROL_NET",
            ValueType::Guider => "GUIDER",
            ValueType::Sampler => "SAMPLER",
            ValueType::Classifier => "CLASSIFIER",
            ValueType::Any => "*",
            ValueType::UpscaleModel => "UPSCALE_MODEL",
        }
    }

    /// Whether a literal can be written for this type in a graph file.
    pub fn is_scalar(self) -> bool {
        matches!(
            self,
            ValueType::Int | ValueType::Float | ValueType::Bool | ValueType::String
        )
    }

    /// Whether a value of type `found` may flow into an input of this type.
    /// INT widens to FLOAT; `*` accepts everything.
    pub fn accepts(self, found: ValueType) -> bool {
        self == found
            || self == ValueType::Any
            || found == ValueType::Any
            || (self == ValueType::Float && found == ValueType::Int)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
