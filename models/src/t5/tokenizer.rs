//! T5's SentencePiece tokenizer, read offline from a `tokenizer.json`
//! (ComfyUI ships one; diffusers folders carry one beside `spiece.model`),
//! with ComfyUI's prompt weighting and padding.
//!
//! ComfyUI and diffusers differ in how they frame T5's tokens, and the
//! encoder's output depends on it because neither masks the padding:
//! - ComfyUI: the prompt's tokens and `</s>`, padded with `<pad>` to at
//!   least 256 tokens for Flux and 77 for SD3, never truncated.
//! - diffusers: padded or truncated to `max_sequence_length`, 512 for Flux
//!   and 256 for SD3.
//!
//! weft follows ComfyUI, so its workflows give ComfyUI's pictures.

use std::path::Path;

use crate::clip::prompt::parse_weights;

/// T5's `</s>` and `<pad>` ids (the same in every T5 v1.1 vocabulary).
pub const END: u32 = 1;
pub const PAD: u32 = 0;

/// Token ids with a weight each, framed for the encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedTokens {
    pub ids: Vec<u32>,
    pub weights: Vec<f64>,
}

impl WeightedTokens {
    /// Whether any token is weighted (then the empty prompt is encoded too).
    pub fn is_weighted(&self) -> bool {
        self.weights.iter().any(|&w| w != 1.0)
    }
}

/// A T5 tokenizer and the minimum length prompts are padded to.
pub struct T5Tokenizer {
    inner: tokenizers::Tokenizer,
    min_length: usize,
}

impl std::fmt::Debug for T5Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "T5Tokenizer(min_length {})", self.min_length)
    }
}

impl T5Tokenizer {
    /// Reads `tokenizer.json`; `min_length` is the family's padding (256
    /// for Flux, 77 for SD3, as ComfyUI).
    pub fn open(path: &Path, min_length: usize) -> Result<T5Tokenizer, String> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| format!("{}: not a tokenizer.json: {e}", path.display()))?;
        Self::checked(inner, min_length).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// T5 v1.1's tokenizer, built into weft (`assets/t5/tokenizer.json`,
    /// ComfyUI's), for encoders that come without one.
    pub fn bundled(min_length: usize) -> Result<T5Tokenizer, String> {
        const JSON: &[u8] = include_bytes!("../../../assets/t5/tokenizer.json");
        let inner = tokenizers::Tokenizer::from_bytes(JSON).map_err(|e| e.to_string())?;
        Self::checked(inner, min_length)
    }

    fn checked(inner: tokenizers::Tokenizer, min_length: usize) -> Result<T5Tokenizer, String> {
        match inner.token_to_id("</s>") {
            Some(END) => Ok(T5Tokenizer { inner, min_length }),
            other => Err(format!(
                "not a T5 tokenizer (`</s>` is {other:?}, expected {END})"
            )),
        }
    }

    /// The same vocabulary with another minimum length.
    pub fn with_min_length(&self, min_length: usize) -> T5Tokenizer {
        T5Tokenizer {
            inner: self.inner.clone(),
            min_length,
        }
    }

    /// The plain ids of `text` with `</s>`, as transformers' T5 tokenizer
    /// gives them (no padding, no weighting).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| format!("T5 tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `prompt` with ComfyUI's weighting syntax: each weighted segment's
    /// tokens carry its weight; then `</s>` and padding to the minimum
    /// length (weight 1).
    pub fn tokenize(&self, prompt: &str) -> Result<WeightedTokens, String> {
        let mut ids = Vec::new();
        let mut weights = Vec::new();
        for segment in parse_weights(prompt) {
            let enc = self
                .inner
                .encode(segment.text.as_str(), false)
                .map_err(|e| format!("T5 tokenizer: {e}"))?;
            ids.extend_from_slice(enc.get_ids());
            weights.resize(ids.len(), segment.weight);
        }
        ids.push(END);
        weights.push(1.0);
        if ids.len() < self.min_length {
            weights.resize(self.min_length, 1.0);
            ids.resize(self.min_length, PAD);
        }
        Ok(WeightedTokens { ids, weights })
    }

    /// The empty prompt, framed as [`Self::tokenize`] frames `len` tokens.
    pub fn empty(&self, len: usize) -> WeightedTokens {
        let mut ids = vec![PAD; len.max(1)];
        ids[0] = END;
        WeightedTokens {
            weights: vec![1.0; ids.len()],
            ids,
        }
    }
}
