//! T5 as one text encoder of a CLIP value: finding its weights and
//! tokenizer, and encoding weighted prompts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};

use super::model::{T5Config, T5Encoder};
use super::tokenizer::{T5Tokenizer, WeightedTokens};
use crate::dit_files::{self, count_blocks};
use crate::packed::WeightMode;
use crate::sd::config::Shapes;
use crate::weights::{TensorMap, Transform, WeightFile};

/// Key prefixes a T5 encoder is found under: bare (transformers, ComfyUI's
/// `t5xxl_*.safetensors`) or inside an SD3 all-in-one checkpoint.
pub const PREFIXES: [&str; 2] = ["text_encoders.t5xxl.transformer.", ""];

/// A T5 encoder's parts, not yet built.
#[derive(Clone, Debug)]
pub struct T5Parts {
    pub config: T5Config,
    pub tensors: TensorMap,
    /// The folder's `tokenizer.json`; `None`: weft's bundled one.
    pub tokenizer: Option<PathBuf>,
}

/// transformers' names for a stored key: the encoder's and the shared
/// embedding (which transformers 5 may store as `encoder.embed_tokens`).
fn names(key: &str) -> Vec<(String, Transform)> {
    if key == "encoder.embed_tokens.weight" {
        return vec![("shared.weight".into(), Transform::Same)];
    }
    if key.starts_with("encoder.") || key == "shared.weight" {
        return vec![(key.to_string(), Transform::Same)];
    }
    Vec::new()
}

/// The encoder's config from its shapes (keys without prefix).
pub fn config_from_shapes(shapes: &Shapes) -> std::result::Result<T5Config, String> {
    let get = |key: &str, i: usize| shapes.get(key).and_then(|s| s.get(i).copied());
    let embed = shapes
        .get("shared.weight")
        .or_else(|| shapes.get("encoder.embed_tokens.weight"))
        .ok_or("no `shared.weight` (T5's token embedding)")?;
    let block = "encoder.block.0.layer.";
    let bias = get(
        &format!("{block}0.SelfAttention.relative_attention_bias.weight"),
        0,
    )
    .zip(get(
        &format!("{block}0.SelfAttention.relative_attention_bias.weight"),
        1,
    ))
    .ok_or("no relative attention bias in the first T5 block")?;
    let inner =
        get(&format!("{block}0.SelfAttention.q.weight"), 0).ok_or("no T5 query projection")?;
    let gated = shapes.contains_key(&format!("{block}1.DenseReluDense.wi_0.weight"));
    let ff = if gated { "wi_0" } else { "wi" };
    let keys: Vec<String> = shapes.keys().cloned().collect();
    Ok(T5Config {
        vocab_size: embed[0],
        d_model: embed[1],
        d_kv: inner / bias.1.max(1),
        d_ff: get(&format!("{block}1.DenseReluDense.{ff}.weight"), 0)
            .ok_or("no T5 feed-forward")?,
        num_layers: count_blocks(&keys, "encoder.block."),
        num_heads: bias.1,
        relative_attention_num_buckets: bias.0,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
        feed_forward_proj: if gated { "gated-gelu" } else { "relu" }.into(),
    })
}

/// Whether `shapes` hold a T5 encoder under one of [`PREFIXES`]; the prefix.
pub fn find(shapes: &Shapes) -> Option<&'static str> {
    PREFIXES.into_iter().find(|p| {
        shapes.contains_key(&format!("{p}encoder.final_layer_norm.weight"))
            && shapes.contains_key(&format!(
                "{p}encoder.block.0.layer.0.SelfAttention.q.weight"
            ))
    })
}

/// Opens a T5 encoder: a transformers folder (`config.json`, weights, and
/// the tokenizer beside it in `../tokenizer_N/` as diffusers lays it out,
/// or in the folder itself) or a file holding one (bare or in an SD3
/// checkpoint), whose tokenizer is weft's bundled one.
pub fn open(path: &Path) -> std::result::Result<T5Parts, String> {
    if path.is_dir() {
        let config: T5Config = dit_files::component_config(path)?;
        let files = dit_files::component_files(path)?;
        let tensors = dit_files::tensor_map(&files, "", names)?;
        let sibling = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.replacen("text_encoder", "tokenizer", 1));
        let tokenizer = [
            sibling.and_then(|s| path.parent().map(|p| p.join(s).join("tokenizer.json"))),
            Some(path.join("tokenizer.json")),
        ]
        .into_iter()
        .flatten()
        .find(|p| p.is_file());
        return Ok(T5Parts {
            config,
            tensors,
            tokenizer,
        });
    }
    let file = WeightFile::open(path)?;
    let shapes = file.shapes();
    let prefix = find(&shapes).ok_or_else(|| format!("{}: no T5 encoder in it", path.display()))?;
    let inner: Shapes = shapes
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
        .collect();
    let config = config_from_shapes(&inner).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tensors = TensorMap::default();
    tensors.add_file(&file, prefix, names);
    Ok(T5Parts {
        config,
        tensors,
        tokenizer: None,
    })
}

/// A built T5 encoder with its tokenizer.
#[derive(Clone)]
pub struct T5Tower {
    pub model: Arc<T5Encoder>,
    pub tokenizer: Arc<T5Tokenizer>,
    /// The files its weights are mapped from, whose pages are released
    /// after each prompt: T5-XXL is 5 GB even in Q8_0, and the transformer
    /// that samples next needs the memory (Flux-dev on 24 GB).
    files: Arc<[Arc<WeightFile>]>,
}

impl T5Tower {
    /// Builds `parts`, padding prompts to `min_length` tokens; `mode` says
    /// how its linears are held.
    pub fn build(
        parts: &T5Parts,
        min_length: usize,
        mode: WeightMode,
    ) -> std::result::Result<T5Tower, String> {
        crate::memory::check_fits(
            "the T5 text encoder",
            crate::packed::resident_bytes(&parts.tensors, mode),
            None,
        )?;
        let model = parts.tensors.build("T5 text encoder", |vb| {
            T5Encoder::new(&parts.config, parts.tensors.loader(vb, mode))
        })?;
        let tokenizer = match &parts.tokenizer {
            Some(path) => T5Tokenizer::open(path, min_length)?,
            None => T5Tokenizer::bundled(min_length)?,
        };
        Ok(T5Tower {
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            files: parts.tensors.files().into(),
        })
    }

    /// The same encoder padding to another minimum length.
    pub fn with_min_length(&self, min_length: usize) -> T5Tower {
        T5Tower {
            model: self.model.clone(),
            tokenizer: Arc::new(self.tokenizer.with_min_length(min_length)),
            files: self.files.clone(),
        }
    }

    fn run(&self, tokens: &WeightedTokens) -> Result<Tensor> {
        let ids = Tensor::new(tokens.ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        self.model.encode(&ids, None)
    }

    /// The states `[1, N, D]` of `prompt`; weighted tokens move away from
    /// the empty prompt's states, z = z∅ + w·(z − z∅), as ComfyUI.
    pub fn encode(&self, prompt: &str) -> Result<Tensor> {
        let z = self.encode_mapped(prompt);
        for file in self.files.iter() {
            file.release_pages();
        }
        z
    }

    fn encode_mapped(&self, prompt: &str) -> Result<Tensor> {
        let tokens = self
            .tokenizer
            .tokenize(prompt)
            .map_err(candle_core::Error::Msg)?;
        let z = self.run(&tokens)?;
        if !tokens.is_weighted() {
            return Ok(z);
        }
        let z0 = self.run(&self.tokenizer.empty(tokens.ids.len()))?;
        let w: Vec<f32> = tokens.weights.iter().map(|&w| w as f32).collect();
        let w = Tensor::from_vec(w, (1, tokens.ids.len(), 1), &Device::Cpu)?;
        &z0 + (z - &z0)?.broadcast_mul(&w)?
    }
}
