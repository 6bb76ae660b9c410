//! Textual-inversion embeddings: learned input vectors a prompt names as
//! `embedding:name` (ComfyUI's syntax), read from safetensors files in the
//! layouts users have:
//! - A1111's `emb_params` `[n, d]` (SD 1.x 768-d, SD 2.x 1024-d);
//! - SDXL's pair `clip_l` `[n, 768]` and `clip_g` `[n, 1280]`;
//! - diffusers' `learned_embeds` (one key named after the token, `[d]` or
//!   `[n, d]`), and any other file of `[n, d]` tensors.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::weights::WeightFile;

/// An embedding's vectors, one `[n, d]` tensor per stored key.
#[derive(Debug)]
pub struct Embedding {
    pub path: PathBuf,
    vectors: Vec<(String, Tensor)>,
}

impl Embedding {
    /// Reads every `[d]` / `[n, d]` tensor of a safetensors file.
    pub fn open(path: &Path) -> Result<Embedding, String> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "pt" | "bin" | "ckpt" | "pth") {
            return Err(format!(
                "{}: a pickled embedding; weft reads only .safetensors (convert it, e.g. with A1111's or kohya's tools)",
                path.display()
            ));
        }
        let file = WeightFile::open(path)?;
        let mut keys: Vec<(String, Vec<usize>)> = file.shapes().into_iter().collect();
        keys.sort();
        let mut vectors = Vec::new();
        for (key, shape) in keys {
            let t = file
                .load_f32(&key)
                .map_err(|e| format!("{}: `{key}`: {e}", path.display()))?;
            let t = match shape.as_slice() {
                [d] => t.reshape((1, *d)),
                [_, _] => Ok(t),
                _ => continue,
            }
            .map_err(|e| e.to_string())?;
            vectors.push((key, t.to_dtype(DType::F32).map_err(|e| e.to_string())?));
        }
        if vectors.is_empty() {
            return Err(format!("{}: no embedding vectors in it", path.display()));
        }
        Ok(Embedding {
            path: path.to_path_buf(),
            vectors,
        })
    }

    /// The vectors `[n, width]` for text encoder `tower` of `towers` (SDXL's
    /// CLIP-L is tower 0 of 2, bigG tower 1): the one tensor of that width,
    /// or, when several fit, SDXL's `clip_l` / `clip_g` by position.
    pub fn vectors(&self, width: usize, tower: usize, towers: usize) -> Result<Tensor, String> {
        let fits: Vec<&(String, Tensor)> = self
            .vectors
            .iter()
            .filter(|(_, t)| t.dim(1).ok() == Some(width))
            .collect();
        let named = match (towers, tower) {
            (2, 0) => Some("clip_l"),
            (2, 1) => Some("clip_g"),
            _ => None,
        };
        let pick = match fits.as_slice() {
            [one] => Some(*one),
            many => named.and_then(|n| many.iter().copied().find(|(k, _)| k == n)),
        };
        pick.map(|(_, t)| t.clone()).ok_or_else(|| {
            let have: Vec<String> = self
                .vectors
                .iter()
                .map(|(k, t)| format!("`{k}` {:?}", t.dims()))
                .collect();
            format!(
                "{}: no single {width}-wide embedding for this text encoder (the file has {})",
                self.path.display(),
                have.join(", ")
            )
        })
    }
}
