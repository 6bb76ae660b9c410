//! The CLIP value: a text encoder with its tokenizer, turning prompts into
//! the CONDITIONING the UNet cross-attends to.

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use instant_clip_tokenizer::Tokenizer;
use weft_core::Object;

use super::model::ClipText;
use super::prompt::{self, Chunk, Framing};
use crate::sd::checkpoint::ClipParts;
use weft_sampling::Conditioning;

/// A CLIP value. Cloning shares the network; `layer` is per value so
/// CLIPSetLastLayer makes a cheap variant.
#[derive(Clone)]
pub struct TextEncoder {
    model: Arc<ClipText>,
    tokenizer: Arc<Tokenizer>,
    framing: Framing,
    /// The layer (from 1) whose states condition the UNet.
    pub layer: usize,
    bytes: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextEncoder(layer {})", self.layer)
    }
}

impl Object for TextEncoder {
    fn size_bytes(&self) -> usize {
        self.bytes
    }
}

impl weft_core::Handle for TextEncoder {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Clip;
}

/// The CLIP vocabulary size the tokenizer is built for.
const VOCABULARY: u16 = 49408;

impl TextEncoder {
    pub fn build(parts: &ClipParts) -> std::result::Result<TextEncoder, String> {
        let with_projection = parts.tensors.contains("text_projection.weight");
        let model = parts.tensors.build("text encoder", |vb| {
            ClipText::new(&parts.config, with_projection, vb)
        })?;
        let tokenizer = match &parts.merges {
            Some(path) => {
                let file =
                    std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Tokenizer::with_vocabulary(std::io::BufReader::new(file), VOCABULARY)
                    .map_err(|e| format!("{}: not a CLIP merges file: {e}", path.display()))?
            }
            // Single files carry no tokenizer; SD 1.x and 2.x both use CLIP's.
            None => Tokenizer::new(),
        };
        let framing = Framing::clip(&tokenizer, parts.pad_with_zero);
        Ok(TextEncoder {
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            framing,
            layer: parts.layer,
            bytes: parts.tensors.f32_bytes(),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.model.config().num_hidden_layers
    }

    /// The 77-token chunks of `text`.
    pub fn chunks(&self, text: &str) -> Vec<Chunk> {
        prompt::chunks(&self.tokenizer, self.framing, text)
    }

    fn ids(chunk: &Chunk) -> Result<Tensor> {
        Tensor::new(chunk.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)
    }

    /// Encodes `text` (weights and long prompts included) as conditioning:
    /// the chunks' states side by side `[1, 77·chunks, D]`, and the first
    /// chunk's pooled output (projected when the encoder has a projection).
    ///
    /// Weighted tokens move away from the empty prompt's states at the same
    /// position: z = z∅ + w·(z − z∅), ComfyUI's rule.
    pub fn encode(&self, text: &str) -> Result<Conditioning> {
        let eos = self.framing.end;
        let chunks = self.chunks(text);
        let empty = if chunks.iter().any(|c| c.weights.iter().any(|&w| w != 1.0)) {
            let blank = prompt::chunks(&self.tokenizer, self.framing, "");
            Some(
                self.model
                    .encode(&Self::ids(&blank[0])?, self.layer, eos)?
                    .hidden,
            )
        } else {
            None
        };
        let mut states = Vec::with_capacity(chunks.len());
        let mut pooled = None;
        for chunk in &chunks {
            let out = self.model.encode(&Self::ids(chunk)?, self.layer, eos)?;
            let mut z = out.hidden;
            if let Some(z0) = &empty {
                let w = Tensor::new(
                    chunk.weights.iter().map(|&w| w as f32).collect::<Vec<_>>(),
                    &Device::Cpu,
                )?
                .reshape((1, chunk.weights.len(), 1))?;
                z = (z0 + (z - z0)?.broadcast_mul(&w)?)?;
            }
            states.push(z);
            if pooled.is_none() {
                pooled = Some(out.projected.unwrap_or(out.pooled));
            }
        }
        Ok(Conditioning {
            labels: None,
            context: Some(Tensor::cat(&states, 1)?),
            pooled,
            hints: Vec::new(),
        })
    }
}
