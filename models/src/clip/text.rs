//! The CLIP value: a text encoder with its tokenizer, turning prompts into
//! the CONDITIONING the UNet cross-attends to.

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use instant_clip_tokenizer::Tokenizer;
use weft_core::Object;

use super::embedding::Embedding;
use super::model::{ClipConfig, ClipText};
use super::prompt::{self, Chunk, Framing};
use crate::sd::checkpoint::ClipParts;
use crate::weights::{build_from, Weights};
use weft_sampling::Conditioning;

/// One text encoder of a CLIP value with its tokenizer.
#[derive(Clone)]
struct Tower {
    model: Arc<ClipText>,
    tokenizer: Arc<Tokenizer>,
    framing: Framing,
    /// The layer (from 1) whose states condition the UNet.
    layer: usize,
    final_norm: bool,
    config: ClipConfig,
    /// The tensors it was built from, shared with patched copies.
    weights: Arc<Weights>,
}

/// A CLIP value: one text encoder (SD 1.x/2.x, the SDXL refiner's bigG) or
/// several whose states are joined feature-wise (SDXL: CLIP-L then bigG).
/// Cloning shares the networks, so CLIPSetLastLayer makes a cheap variant.
#[derive(Clone)]
pub struct TextEncoder {
    towers: Vec<Tower>,
    bytes: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layers: Vec<usize> = self.towers.iter().map(|t| t.layer).collect();
        write!(f, "TextEncoder(layers {layers:?})")
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

/// Finds the embedding file `embedding:name` refers to (the node layer
/// searches the embeddings folders), or says where it looked.
pub type Embeddings<'a> = dyn Fn(&str) -> std::result::Result<Arc<Embedding>, String> + 'a;

/// For prompts encoded with no embeddings folder.
fn no_embeddings(name: &str) -> std::result::Result<Arc<Embedding>, String> {
    prompt::no_embeddings(name).map(|_| unreachable!("never found"))
}

/// The CLIP vocabulary size the tokenizer is built for.
const VOCABULARY: u16 = 49408;

impl Tower {
    fn build(parts: &ClipParts) -> std::result::Result<Tower, String> {
        let with_projection = parts.tensors.contains("text_projection.weight");
        let (model, weights) = parts.tensors.build_keeping("text encoder", |vb| {
            ClipText::new(&parts.config, with_projection, vb)
        })?;
        let tokenizer = match &parts.merges {
            Some(path) => {
                let file =
                    std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Tokenizer::with_vocabulary(std::io::BufReader::new(file), VOCABULARY)
                    .map_err(|e| format!("{}: not a CLIP merges file: {e}", path.display()))?
            }
            // Single files carry no tokenizer; every SD family uses CLIP's.
            None => Tokenizer::new(),
        };
        let framing = Framing::clip(&tokenizer, parts.pad_with_zero);
        Ok(Tower {
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            framing,
            layer: parts.layer,
            final_norm: parts.final_norm,
            config: parts.config.clone(),
            weights: Arc::new(weights),
        })
    }

    /// A copy with the `changed` tensors replaced, the rest shared.
    fn with_weights(&self, changed: &Weights) -> std::result::Result<Tower, String> {
        let mut weights = (*self.weights).clone();
        for (name, t) in changed {
            match weights.get(name) {
                Some(old) if old.shape() == t.shape() => {
                    weights.insert(name.clone(), t.clone());
                }
                _ => {
                    return Err(format!(
                        "the text encoder has no weight `{name}` of shape {:?}",
                        t.dims()
                    ))
                }
            }
        }
        let with_projection = weights.contains_key("text_projection.weight");
        let model = build_from(&weights, |vb| {
            ClipText::new(&self.config, with_projection, vb)
        })
        .map_err(|e| format!("patched text encoder: {e}"))?;
        Ok(Tower {
            model: Arc::new(model),
            weights: Arc::new(weights),
            ..self.clone()
        })
    }

    fn chunks(&self, text: &str, lookup: &mut prompt::Lookup) -> Result<Vec<Chunk>> {
        prompt::chunks(&self.tokenizer, self.framing, text, lookup).map_err(candle_core::Error::Msg)
    }

    fn ids(chunk: &Chunk) -> Result<Tensor> {
        Tensor::new(chunk.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)
    }

    fn run(&self, chunk: &Chunk) -> Result<super::model::Encoded> {
        self.model.encode_with_vectors(
            &Self::ids(chunk)?,
            &chunk.vectors,
            self.layer,
            self.framing.end,
            self.final_norm,
        )
    }

    /// The states of `chunks` side by side `[1, 77·chunks, D]`, and the
    /// first chunk's pooled output (projected when the encoder has a
    /// projection). Weighted tokens move away from the empty prompt's
    /// states at the same position: z = z∅ + w·(z − z∅), ComfyUI's rule.
    fn encode(&self, chunks: &[Chunk]) -> Result<(Tensor, Tensor)> {
        let empty = if chunks.iter().any(|c| c.weights.iter().any(|&w| w != 1.0)) {
            Some(self.run(&self.framing.empty())?.hidden)
        } else {
            None
        };
        let mut states = Vec::with_capacity(chunks.len());
        let mut pooled = None;
        for chunk in chunks {
            let out = self.run(chunk)?;
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
        let pooled = pooled.ok_or_else(|| candle_core::Error::Msg("no text chunks".into()))?;
        Ok((Tensor::cat(&states, 1)?, pooled))
    }
}

impl TextEncoder {
    /// A CLIP value of one text encoder.
    pub fn build(parts: &ClipParts) -> std::result::Result<TextEncoder, String> {
        Self::from_parts(std::slice::from_ref(parts))
    }

    /// A CLIP value of several text encoders, in the order their states
    /// are joined; the pooled output is the last one's (SDXL's bigG).
    pub fn from_parts(parts: &[ClipParts]) -> std::result::Result<TextEncoder, String> {
        if parts.is_empty() {
            return Err("no text encoder".into());
        }
        Ok(TextEncoder {
            towers: parts
                .iter()
                .map(Tower::build)
                .collect::<std::result::Result<_, _>>()?,
            bytes: parts.iter().map(|p| p.tensors.f32_bytes()).sum(),
        })
    }

    /// How many text encoders this value joins.
    pub fn towers(&self) -> usize {
        self.towers.len()
    }

    /// Encoder `i`'s tensors by transformers name (what LoRA patches target).
    pub fn weights(&self, i: usize) -> Option<&Weights> {
        self.towers.get(i).map(|t| &*t.weights)
    }

    /// A copy whose encoder `i` has the `changed` tensors replaced; all
    /// other tensors are shared.
    pub fn with_weights(
        &self,
        i: usize,
        changed: &Weights,
    ) -> std::result::Result<TextEncoder, String> {
        let mut out = self.clone();
        let tower = out
            .towers
            .get_mut(i)
            .ok_or_else(|| format!("no text encoder {i}"))?;
        *tower = tower.with_weights(changed)?;
        Ok(out)
    }

    /// Stops every encoder `back` layers from its end (−1: the last), as
    /// ComfyUI's CLIPSetLastLayer.
    pub fn set_last_layer(&mut self, back: i64) -> std::result::Result<(), String> {
        for t in &mut self.towers {
            let n = t.model.config().num_hidden_layers as i64;
            if back >= 0 || -back > n {
                return Err(format!(
                    "the text encoder has {n} layers; {back} is not one of -1…-{n}"
                ));
            }
            t.layer = (n + 1 + back) as usize;
        }
        Ok(())
    }

    /// The layer (from 1) each encoder's states are taken from.
    pub fn layers(&self) -> Vec<usize> {
        self.towers.iter().map(|t| t.layer).collect()
    }

    /// The 77-token chunks of `text` for the first encoder.
    pub fn chunks(&self, text: &str) -> Result<Vec<Chunk>> {
        self.towers[0].chunks(text, &mut prompt::no_embeddings)
    }

    /// Encodes `text` (weights and long prompts included) with every
    /// encoder: see [`Self::encode_each`].
    pub fn encode(&self, text: &str) -> Result<Conditioning> {
        self.encode_each(&vec![text; self.towers.len()], &no_embeddings)
    }

    /// Encodes one text per encoder (SDXL's `text_l`, `text_g`): each
    /// encoder's chunk states side by side, the encoders' joined along the
    /// features; the shorter prompt is padded with empty chunks, as
    /// ComfyUI does. The pooled output is the last encoder's.
    /// `embeddings` finds the files `embedding:name` refers to.
    pub fn encode_each(&self, texts: &[&str], embeddings: &Embeddings<'_>) -> Result<Conditioning> {
        if texts.len() != self.towers.len() {
            candle_core::bail!(
                "{} prompts for {} text encoders",
                texts.len(),
                self.towers.len()
            );
        }
        let towers = self.towers.len();
        let mut chunks: Vec<Vec<Chunk>> = self
            .towers
            .iter()
            .zip(texts)
            .enumerate()
            .map(|(i, (t, text))| {
                let width = t.config.hidden_size;
                t.chunks(text, &mut |name| {
                    embeddings(name)?.vectors(width, i, towers)
                })
            })
            .collect::<Result<_>>()?;
        let most = chunks.iter().map(Vec::len).max().unwrap_or(1);
        for (tower, c) in self.towers.iter().zip(&mut chunks) {
            c.resize(most, tower.framing.empty());
        }
        let mut states = Vec::with_capacity(self.towers.len());
        let mut pooled = None;
        for (tower, c) in self.towers.iter().zip(&chunks) {
            let (z, p) = tower.encode(c)?;
            states.push(z);
            pooled = Some(p);
        }
        Ok(Conditioning {
            labels: None,
            context: Some(Tensor::cat(&states, 2)?),
            pooled,
            ..Default::default()
        })
    }
}
