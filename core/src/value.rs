//! The typed values that travel along edges.
//!
//! Values are immutable and cheap to clone: scalars by value, tensors through
//! candle's own reference counting (every candle op returns a new tensor), and
//! everything else behind an `Arc`. A node therefore cannot change a value that
//! another node or the cache still holds.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;
use weft_schema::{Literal, ValueType};

/// Which latent space a latent lives in, so a VAE can refuse a foreign one
/// (an SD1.5 VAE must not decode an SDXL or Flux latent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LatentSpace(pub Arc<str>);

impl LatentSpace {
    pub fn new(name: &str) -> Self {
        LatentSpace(name.into())
    }

    /// Pixel-space models (such as weft's MNIST default) work on images directly.
    pub fn pixels() -> Self {
        LatentSpace::new("pixels")
    }
}

/// A batch of latents plus the space they belong to.
#[derive(Clone, Debug)]
pub struct Latent {
    pub samples: Tensor,
    pub space: LatentSpace,
    /// Where img2img/inpainting may change the latent (1 = free).
    pub noise_mask: Option<Tensor>,
}

/// A heavyweight or structured value (model, guider, conditioning, ...)
/// shared behind an `Arc`.
pub trait Object: Any + Send + Sync + fmt::Debug {
    /// Bytes this object keeps alive, for the cache's memory budget.
    fn size_bytes(&self) -> usize {
        0
    }

    /// One line for reports (a failed node's inputs, `Print`): what it
    /// holds in counts and shapes ("100 labels, context [1, 77, 768]"),
    /// not its contents. The default is its `Debug` text, which
    /// [`Value::summary`] cuts to [`SUMMARY_MAX_CHARS`].
    fn summary(&self) -> String {
        format!("{self:?}")
    }
}

/// The longest [`Value::summary`], in characters: a report lists every input
/// of a failed node, and one long prompt or big object must not drown it.
pub const SUMMARY_MAX_CHARS: usize = 120;

#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(Arc<str>),
    /// `[batch, channels, height, width]`, f32 in `[0, 1]`.
    Image(Tensor),
    /// `[batch, height, width]`, f32 in `[0, 1]`.
    Mask(Tensor),
    /// A 1-D decreasing noise schedule ending in the final sigma.
    Sigmas(Tensor),
    Latent(Arc<Latent>),
    /// Conditioning, noise sources, models, guiders, samplers and other handles.
    Object(ValueType, Arc<dyn Object>),
}

impl Value {
    pub fn ty(&self) -> ValueType {
        match self {
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Image(_) => ValueType::Image,
            Value::Mask(_) => ValueType::Mask,
            Value::Sigmas(_) => ValueType::Sigmas,
            Value::Latent(_) => ValueType::Latent,
            Value::Object(ty, _) => *ty,
        }
    }

    /// Bytes this value keeps alive (tensor storage or the object's own estimate).
    pub fn size_bytes(&self) -> usize {
        fn tensor_bytes(t: &Tensor) -> usize {
            t.elem_count() * t.dtype().size_in_bytes()
        }
        match self {
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => 8,
            Value::String(s) => s.len(),
            Value::Image(t) | Value::Mask(t) | Value::Sigmas(t) => tensor_bytes(t),
            Value::Latent(l) => {
                tensor_bytes(&l.samples) + l.noise_mask.as_ref().map_or(0, tensor_bytes)
            }
            Value::Object(_, o) => o.size_bytes(),
        }
    }

    /// Converts an INT to FLOAT where a FLOAT is expected, so `cfg: 7` works.
    pub fn coerce_to(self, ty: ValueType) -> Value {
        match (self, ty) {
            (Value::Int(i), ValueType::Float) => Value::Float(i as f64),
            (v, _) => v,
        }
    }

    /// The object inside, if it is a `T`.
    pub fn downcast<T: Object>(&self) -> Option<&T> {
        match self {
            Value::Object(_, o) => (o.as_ref() as &dyn Any).downcast_ref::<T>(),
            _ => None,
        }
    }

    /// A short human-readable rendering for events and error reports, at
    /// most [`SUMMARY_MAX_CHARS`] characters; a long string keeps its start
    /// and says how long it is.
    pub fn summary(&self) -> String {
        let text = match self {
            Value::Int(i) => i.to_string(),
            Value::Float(x) => format!("{x:?}"),
            Value::Bool(b) => b.to_string(),
            Value::String(s) if s.chars().count() > SUMMARY_MAX_CHARS => {
                let start: String = s.chars().take(SUMMARY_MAX_CHARS / 2).collect();
                format!("{start:?}… ({} chars)", s.chars().count())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Image(t) | Value::Mask(t) | Value::Sigmas(t) => {
                format!("{} {:?} {:?}", self.ty(), t.dims(), t.dtype())
            }
            Value::Latent(l) => format!("LATENT[{}] {:?}", l.space.0, l.samples.dims()),
            Value::Object(ty, o) => format!("{ty} {}", o.summary()),
        };
        shorten(&text, SUMMARY_MAX_CHARS)
    }

    /// Feeds a scalar literal into a signature hash; non-scalars are never
    /// literals, so they hash by type only.
    pub(crate) fn hash_literal(&self, h: &mut blake3::Hasher) {
        match self {
            Value::Int(i) => {
                h.update(b"i");
                h.update(&i.to_le_bytes());
            }
            Value::Float(x) => {
                h.update(b"f");
                h.update(&x.to_bits().to_le_bytes());
            }
            Value::Bool(b) => {
                h.update(if *b { b"b1" } else { b"b0" });
            }
            Value::String(s) => {
                h.update(b"s");
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            other => {
                h.update(other.ty().name().as_bytes());
            }
        }
    }
}

/// `text` cut to `max` characters, the last one an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

impl Value {
    /// The scalar as a [`Literal`]; `None` for tensors and objects.
    pub fn to_literal(&self) -> Option<Literal> {
        Some(match self {
            Value::Int(i) => Literal::Int(*i),
            Value::Float(x) => Literal::Float(*x),
            Value::Bool(b) => Literal::Bool(*b),
            Value::String(s) => Literal::String(s.to_string()),
            _ => return None,
        })
    }
}

impl From<Literal> for Value {
    fn from(v: Literal) -> Self {
        match v {
            Literal::Int(i) => Value::Int(i),
            Literal::Float(x) => Value::Float(x),
            Literal::Bool(b) => Value::Bool(b),
            Literal::String(s) => Value::String(s.into()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.into())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object whose Debug dump is long (its field is read only by Debug).
    #[derive(Debug)]
    struct Big(#[allow(dead_code)] Vec<Option<u32>>);

    impl Object for Big {}

    #[test]
    fn summaries_stay_short_whatever_the_value() {
        let big = Value::Object(ValueType::Conditioning, Arc::new(Big(vec![Some(7); 100])));
        let prompt = Value::from("a photo of a cat, ".repeat(40));
        for value in [big, prompt] {
            let summary = value.summary();
            assert!(
                summary.chars().count() <= SUMMARY_MAX_CHARS,
                "{} chars: {summary}",
                summary.chars().count()
            );
        }
        let prompt = Value::from("a photo of a cat, ".repeat(40)).summary();
        assert!(
            prompt.starts_with("\"a photo of a cat") && prompt.ends_with("… (720 chars)"),
            "{prompt}"
        );
        assert_eq!(Value::from("short").summary(), "\"short\"");
    }
}
