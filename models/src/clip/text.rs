//! The CLIP value: a text encoder with its tokenizer, turning prompts into
//! the CONDITIONING the UNet cross-attends to.

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use instant_clip_tokenizer::Tokenizer;
use weft_core::Object;

use super::embedding::Embedding;
use super::model::{ClipConfig, ClipText};
use super::prompt::{self, Chunk, Framing};
use crate::packed::WeightMode;
use crate::sd::checkpoint::ClipParts;
use crate::t5::tower::{T5Parts, T5Tower};
use crate::weights::{build_from, Weights};
use weft_sampling::Conditioning;

/// One text encoder of a CLIP value with its tokenizer.
#[derive(Clone)]
struct Tower {
    /// Whether the pooled output goes through `text_projection` (SD 2.x,
    /// SDXL's bigG, SD3's bigG) or not (SD3's and Flux's CLIP-L, as ComfyUI).
    project_pooled: bool,
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

/// How a CLIP value's encoders make one conditioning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TextFamily {
    /// SD 1.x/2.x and SDXL: the CLIP encoders' states side by side.
    Sd,
    /// SD3: CLIP-L and bigG side by side, zero-padded to T5's width, then
    /// T5's tokens after them; pooled: CLIP-L's then bigG's.
    Sd3,
    /// Flux: T5's states; pooled: CLIP-L's.
    Flux,
}

/// A CLIP value: one text encoder (SD 1.x/2.x, the SDXL refiner's bigG) or
/// several whose states are joined feature-wise (SDXL: CLIP-L then bigG),
/// or joined with T5 as SD3 and Flux do.
/// Cloning shares the networks, so CLIPSetLastLayer makes a cheap variant.
#[derive(Clone)]
pub struct TextEncoder {
    towers: Vec<Tower>,
    t5: Option<T5Tower>,
    family: TextFamily,
    bytes: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let layers: Vec<usize> = self.towers.iter().map(|t| t.layer).collect();
        write!(
            f,
            "TextEncoder({:?}, layers {layers:?}, T5 {})",
            self.family,
            self.t5.is_some()
        )
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
            project_pooled: true,
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
                pooled = Some(match out.projected {
                    Some(p) if self.project_pooled => p,
                    _ => out.pooled,
                });
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
            t5: None,
            family: TextFamily::Sd,
            bytes: parts.iter().map(|p| p.tensors.f32_bytes()).sum(),
        })
    }

    /// An SD3 or Flux CLIP value: CLIP encoders (SD3: CLIP-L and/or bigG,
    /// narrowest first; Flux: CLIP-L) conditioning on raw penultimate
    /// states, and T5, padded to ComfyUI's minimum length for the family.
    pub fn with_t5(
        family: TextFamily,
        clip: Vec<ClipParts>,
        t5: Option<&T5Parts>,
    ) -> std::result::Result<TextEncoder, String> {
        let mut clip: Vec<ClipParts> = clip.into_iter().map(ClipParts::for_sdxl).collect();
        clip.sort_by_key(|p| p.config.hidden_size);
        let min_length = match family {
            TextFamily::Flux => 256,
            _ => 77,
        };
        match family {
            TextFamily::Flux if clip.len() != 1 || t5.is_none() => {
                return Err(format!(
                    "Flux conditions on CLIP-L and T5-XXL; got {} CLIP encoder(s) and {} T5",
                    clip.len(),
                    if t5.is_some() { "a" } else { "no" }
                ))
            }
            TextFamily::Sd3 if clip.len() > 2 || (clip.is_empty() && t5.is_none()) => {
                return Err(format!(
                    "SD3 conditions on CLIP-L, bigG and T5-XXL; got {} CLIP encoder(s)",
                    clip.len()
                ))
            }
            _ => {}
        }
        let mut towers = clip
            .iter()
            .map(Tower::build)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // CLIP-L's pooled output is taken unprojected by SD3 and Flux; bigG
        // (the wider of SD3's two, or a lone one wider than CLIP-L) projected.
        let n = towers.len();
        for (i, t) in towers.iter_mut().enumerate() {
            let is_g = if n == 2 {
                i == 1
            } else {
                t.config.hidden_size > 768
            };
            t.project_pooled = family == TextFamily::Sd3 && is_g;
        }
        let t5_tower = t5
            .map(|p| T5Tower::build(p, min_length, WeightMode::Stored))
            .transpose()?;
        Ok(TextEncoder {
            towers,
            t5: t5_tower,
            family,
            bytes: clip.iter().map(|p| p.tensors.f32_bytes()).sum::<usize>()
                + t5.map_or(0, |p| {
                    crate::packed::resident_bytes(&p.tensors, WeightMode::Stored)
                }),
        })
    }

    /// How this value's encoders make a conditioning.
    pub fn family(&self) -> TextFamily {
        self.family
    }

    /// The same encoders with T5 padding prompts to at least `min_length`
    /// tokens (diffusers pads to 256 for SD3 and 512 for Flux).
    pub fn with_t5_min_length(&self, min_length: usize) -> TextEncoder {
        TextEncoder {
            t5: self.t5.as_ref().map(|t| t.with_min_length(min_length)),
            ..self.clone()
        }
    }

    /// Whether a T5 encoder is part of this value.
    pub fn has_t5(&self) -> bool {
        self.t5.is_some()
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
        self.encode_with_t5(&vec![text; self.towers.len()], text, &no_embeddings)
    }

    /// Encodes one text per CLIP encoder and `t5_text` with T5, joined as
    /// the value's family joins them.
    pub fn encode_with_t5(
        &self,
        texts: &[&str],
        t5_text: &str,
        embeddings: &Embeddings<'_>,
    ) -> Result<Conditioning> {
        match self.family {
            TextFamily::Sd => self.encode_each(texts, embeddings),
            TextFamily::Sd3 => self.encode_sd3(texts, t5_text, false, embeddings),
            TextFamily::Flux => {
                let t5 = self.t5.as_ref().ok_or_else(|| {
                    candle_core::Error::Msg("Flux's text encoder has no T5".into())
                })?;
                let (_, pooled) = self.clip_states(texts, embeddings)?;
                Ok(Conditioning {
                    context: Some(t5.encode(t5_text)?),
                    pooled: Some(pooled),
                    ..Default::default()
                })
            }
        }
    }

    /// SD3: CLIP-L and bigG states side by side (cut to the shorter), zero
    /// padded to T5's width, then T5's tokens; pooled CLIP-L then bigG,
    /// zeros for a missing one (ComfyUI's `SD3ClipModel`).
    fn encode_sd3(
        &self,
        texts: &[&str],
        t5_text: &str,
        skip_clip: bool,
        embeddings: &Embeddings<'_>,
    ) -> Result<Conditioning> {
        const L_WIDTH: usize = 768;
        const G_WIDTH: usize = 1280;
        let dev = Device::Cpu;
        let width = self.t5.as_ref().map_or(4096, |t| t.model.config().d_model);
        let mut lg = None;
        let mut pooled = None;
        if !self.towers.is_empty() && !skip_clip {
            let states = self.each_tower(texts, embeddings)?;
            let cut = states
                .iter()
                .map(|(z, _)| z.dim(1))
                .collect::<Result<Vec<_>>>()?;
            let cut = cut.into_iter().min().unwrap_or(0);
            let mut zs = Vec::new();
            let mut ps = Vec::new();
            if self.towers.len() == 1 {
                // One CLIP: the other's part of the states and pooled output is zero.
                let (z, p) = &states[0];
                let is_l = self.towers[0].config.hidden_size <= L_WIDTH;
                let (zl, zg) = if is_l {
                    (None, Some(G_WIDTH))
                } else {
                    (Some(L_WIDTH), None)
                };
                if let Some(w) = zl {
                    zs.push(Tensor::zeros((1, cut, w), z.dtype(), &dev)?);
                    ps.push(Tensor::zeros((1, w), p.dtype(), &dev)?);
                }
                zs.push(z.narrow(1, 0, cut)?);
                ps.push(p.clone());
                if let Some(w) = zg {
                    ps.push(Tensor::zeros((1, w), p.dtype(), &dev)?);
                }
            } else {
                for (z, p) in &states {
                    zs.push(z.narrow(1, 0, cut)?);
                    ps.push(p.clone());
                }
            }
            let z = Tensor::cat(&zs, 2)?;
            let have = z.dim(2)?;
            lg = Some(if have < width {
                z.pad_with_zeros(2, 0, width - have)?
            } else {
                z
            });
            pooled = Some(Tensor::cat(&ps, 1)?);
        }
        let t5 = self.t5.as_ref().map(|t| t.encode(t5_text)).transpose()?;
        let context = match (lg, t5) {
            (Some(lg), Some(t5)) => Tensor::cat(&[lg, t5], 1)?,
            (Some(lg), None) => lg,
            (None, Some(t5)) => t5,
            (None, None) => Tensor::zeros((1, 77, width), candle_core::DType::F32, &dev)?,
        };
        let pooled = match pooled {
            Some(p) => p,
            None => Tensor::zeros((1, L_WIDTH + G_WIDTH), candle_core::DType::F32, &dev)?,
        };
        Ok(Conditioning {
            context: Some(context),
            pooled: Some(pooled),
            ..Default::default()
        })
    }

    /// SD3's `CLIPTextEncodeSD3`: a prompt each for CLIP-L, bigG and T5;
    /// `skip_clip` leaves the CLIP states out and their pooled output zero
    /// (ComfyUI's `empty_padding: none` with both CLIP prompts empty).
    pub fn encode_sd3_prompts(
        &self,
        clip_l: &str,
        clip_g: &str,
        t5xxl: &str,
        skip_clip: bool,
        embeddings: &Embeddings<'_>,
    ) -> Result<Conditioning> {
        if self.family != TextFamily::Sd3 {
            candle_core::bail!("not SD3's text encoders ({:?})", self.family);
        }
        let texts: Vec<&str> = self
            .towers
            .iter()
            .map(|t| {
                if t.config.hidden_size <= 768 {
                    clip_l
                } else {
                    clip_g
                }
            })
            .collect();
        self.encode_sd3(&texts, t5xxl, skip_clip, embeddings)
    }

    /// The CLIP encoders' (states, pooled) for one text each; the shorter
    /// prompt padded with empty chunks as ComfyUI does.
    fn each_tower(
        &self,
        texts: &[&str],
        embeddings: &Embeddings<'_>,
    ) -> Result<Vec<(Tensor, Tensor)>> {
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
        self.towers
            .iter()
            .zip(&chunks)
            .map(|(tower, c)| tower.encode(c))
            .collect()
    }

    /// The CLIP encoders' states joined feature-wise, and the last one's
    /// pooled output.
    fn clip_states(&self, texts: &[&str], embeddings: &Embeddings<'_>) -> Result<(Tensor, Tensor)> {
        let states = self.each_tower(texts, embeddings)?;
        let pooled = states
            .last()
            .map(|(_, p)| p.clone())
            .ok_or_else(|| candle_core::Error::Msg("no CLIP text encoder".into()))?;
        let zs: Vec<Tensor> = states.into_iter().map(|(z, _)| z).collect();
        Ok((Tensor::cat(&zs, 2)?, pooled))
    }

    /// Encodes one text per encoder (SDXL's `text_l`, `text_g`): each
    /// encoder's chunk states side by side, the encoders' joined along the
    /// features; the shorter prompt is padded with empty chunks, as
    /// ComfyUI does. The pooled output is the last encoder's.
    /// `embeddings` finds the files `embedding:name` refers to.
    pub fn encode_each(&self, texts: &[&str], embeddings: &Embeddings<'_>) -> Result<Conditioning> {
        let (context, pooled) = self.clip_states(texts, embeddings)?;
        Ok(Conditioning {
            labels: None,
            context: Some(context),
            pooled: Some(pooled),
            ..Default::default()
        })
    }
}
