//! The T5 v1.1 encoder (T5-XXL conditions SD3 and Flux), with Hugging Face
//! transformers' parameter names, which ComfyUI's `t5xxl_*.safetensors`
//! files use too.
//!
//! What sets T5 apart from CLIP: RMS layer norms without a bias or mean,
//! no 1/√d in the attention, positions as a learned bias per head over
//! log-spaced relative-distance buckets (computed once, in the first
//! block, and shared by all), and a gated-GELU feed-forward.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::Embedding;
use serde::Deserialize;
use weft_kernels::layers::Linear;

use crate::loader::Loader;

/// Hyper-parameters, read from a transformers `T5Config` JSON (settings it
/// leaves out take that class's defaults) or inferred from a file's shapes.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    /// `"gated-gelu"` (v1.1, T5-XXL) or `"relu"` (the original T5).
    pub feed_forward_proj: String,
}

/// transformers' `T5Config` defaults (t5-small).
impl Default for T5Config {
    fn default() -> Self {
        T5Config {
            vocab_size: 32128,
            d_model: 512,
            d_kv: 64,
            d_ff: 2048,
            num_layers: 6,
            num_heads: 8,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".into(),
        }
    }
}

impl T5Config {
    /// T5-XXL v1.1, the encoder SD3 and Flux use.
    pub fn xxl() -> T5Config {
        T5Config {
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            feed_forward_proj: "gated-gelu".into(),
            ..T5Config::default()
        }
    }

    fn gated(&self) -> Result<bool> {
        match self.feed_forward_proj.as_str() {
            "gated-gelu" => Ok(true),
            "relu" => Ok(false),
            other => candle_core::bail!(
                "T5 feed_forward_proj `{other}` is not supported (expected gated-gelu or relu)"
            ),
        }
    }
}

/// T5's layer norm: x / rms(x) · w, no mean, no bias.
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(d: usize, eps: f64, l: Loader) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: l.get(d, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32)
    }
}

#[derive(Debug)]
enum FeedForward {
    /// gelu_tanh(wi_0 x) ⊙ wi_1 x, then wo.
    Gated {
        wi0: Linear,
        wi1: Linear,
        wo: Linear,
    },
    /// relu(wi x), then wo.
    Relu { wi: Linear, wo: Linear },
}

impl FeedForward {
    fn new(cfg: &T5Config, l: Loader) -> Result<FeedForward> {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        let lin = |i, o, name: &str| l.pp(name).linear_no_bias(i, o);
        Ok(if cfg.gated()? {
            FeedForward::Gated {
                wi0: lin(d, f, "wi_0")?,
                wi1: lin(d, f, "wi_1")?,
                wo: lin(f, d, "wo")?,
            }
        } else {
            FeedForward::Relu {
                wi: lin(d, f, "wi")?,
                wo: lin(f, d, "wo")?,
            }
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::Gated { wi0, wi1, wo } => {
                wo.forward(&(wi0.forward(x)?.gelu()? * wi1.forward(x)?)?)
            }
            FeedForward::Relu { wi, wo } => wo.forward(&wi.forward(x)?.relu()?),
        }
    }
}

#[derive(Debug)]
struct Block {
    norm1: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm2: RmsNorm,
    ff: FeedForward,
}

impl Block {
    fn new(cfg: &T5Config, l: Loader) -> Result<Block> {
        let inner = cfg.num_heads * cfg.d_kv;
        let attn = l.pp("layer.0.SelfAttention");
        let lin = |i, o, name: &str| attn.pp(name).linear_no_bias(i, o);
        Ok(Block {
            norm1: RmsNorm::new(
                cfg.d_model,
                cfg.layer_norm_epsilon,
                l.pp("layer.0.layer_norm"),
            )?,
            q: lin(cfg.d_model, inner, "q")?,
            k: lin(cfg.d_model, inner, "k")?,
            v: lin(cfg.d_model, inner, "v")?,
            o: lin(inner, cfg.d_model, "o")?,
            norm2: RmsNorm::new(
                cfg.d_model,
                cfg.layer_norm_epsilon,
                l.pp("layer.1.layer_norm"),
            )?,
            ff: FeedForward::new(cfg, l.pp("layer.1.DenseReluDense"))?,
        })
    }

    /// `bias` is `[1 or B, H, N, N]`: relative positions plus the mask.
    fn forward(&self, x: &Tensor, bias: &Tensor, cfg: &T5Config) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let (heads, dk) = (cfg.num_heads, cfg.d_kv);
        let h = self.norm1.forward(x)?;
        let split = |t: Tensor| t.reshape((b, n, heads, dk))?.transpose(1, 2)?.contiguous();
        let q = split(self.q.forward(&h)?)?;
        let k = split(self.k.forward(&h)?)?;
        let v = split(self.v.forward(&h)?)?;
        // No 1/√d: T5 folds it into the initialisation of q.
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let attn = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let attn = attn.transpose(1, 2)?.reshape((b, n, heads * dk))?;
        let x = (x + self.o.forward(&attn)?)?;
        let h = self.norm2.forward(&x)?;
        x + self.ff.forward(&h)?
    }
}

/// The encoder stack; `encode` returns the final layer-normed states.
#[derive(Debug)]
pub struct T5Encoder {
    embed: Embedding,
    relative_bias: Embedding,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    cfg: T5Config,
}

impl T5Encoder {
    /// Builds from `l` rooted where transformers' `T5EncoderModel` puts
    /// `shared.weight` and `encoder.*`.
    pub fn new(cfg: &T5Config, l: Loader) -> Result<T5Encoder> {
        cfg.gated()?;
        let enc = l.pp("encoder");
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, enc.pp(format!("block.{i}"))))
            .collect::<Result<_>>()?;
        Ok(T5Encoder {
            embed: candle_nn::embedding(cfg.vocab_size, cfg.d_model, l.vb().pp("shared"))?,
            relative_bias: candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                enc.vb()
                    .pp("block.0.layer.0.SelfAttention.relative_attention_bias"),
            )?,
            blocks,
            final_norm: RmsNorm::new(
                cfg.d_model,
                cfg.layer_norm_epsilon,
                enc.pp("final_layer_norm"),
            )?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// Encodes token ids `[B, N]`; `mask` (`[B, N]`, 1 for tokens, 0 for
    /// padding) hides padding from attention, as transformers does when
    /// given an attention mask. ComfyUI and diffusers' SD3/Flux pipelines
    /// pass none, so padding tokens take part.
    pub fn encode(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (_, n) = ids.dims2()?;
        let x = self.embed.forward(ids)?;
        self.encode_embeddings(x, n, mask)
    }

    /// [`Self::encode`] from input embeddings `[B, N, D]` (prompt weighting
    /// scales them).
    pub fn encode_embeddings(
        &self,
        mut x: Tensor,
        n: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let dev = x.device().clone();
        let mut bias = self.position_bias(n, &dev)?;
        if let Some(mask) = mask {
            // 0 → −∞ (in practice f32::MIN, as transformers), broadcast over heads and queries.
            let hide = ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?;
            bias = bias.broadcast_add(&hide.unsqueeze(1)?.unsqueeze(1)?)?;
        }
        for block in &self.blocks {
            x = block.forward(&x, &bias, &self.cfg)?;
        }
        self.final_norm.forward(&x)
    }

    /// `[1, H, N, N]`: each head's learned bias for key j seen from query i.
    fn position_bias(&self, n: usize, dev: &Device) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..n)
            .flat_map(|i| {
                (0..n).map(move |j| {
                    relative_bucket(
                        j as i64 - i as i64,
                        self.cfg.relative_attention_num_buckets,
                        self.cfg.relative_attention_max_distance,
                    ) as u32
                })
            })
            .collect();
        let ids = Tensor::from_vec(buckets, (n, n), dev)?;
        self.relative_bias
            .forward(&ids)? // [N, N, H]
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()
    }

    /// The input embedding table's rows for `ids` (for prompt weighting).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.forward(ids)
    }

    /// The embedding width.
    pub fn width(&self) -> usize {
        self.embed
            .embeddings()
            .dim(D::Minus1)
            .unwrap_or(self.cfg.d_model)
    }
}

/// T5's bidirectional relative-position bucket of distance `rel` (key −
/// query): half the buckets per direction; within each, the first half are
/// exact distances and the rest log-spaced up to `max_distance`.
pub fn relative_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let mut bucket = if rel > 0 { half } else { 0 };
    let dist = rel.unsigned_abs() as usize;
    let exact = half / 2;
    bucket += if dist < exact {
        dist
    } else {
        // As torch: the log in f32 over Python's f64 log, truncated towards zero.
        let span = (max_distance as f64 / exact as f64).ln() as f32;
        let ratio = (dist as f32 / exact as f32).ln() / span;
        let large = exact + (ratio * (half - exact) as f32) as usize;
        large.min(half - 1)
    };
    bucket
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of transformers' `_relative_position_bucket` (32 buckets,
    /// max distance 128, bidirectional), worked by hand from its formula
    /// and checked against it for every distance in ±600.
    #[test]
    fn buckets_follow_the_t5_formula() {
        // Exact region: distances 0..8 map to themselves; keys after the query add 16.
        assert_eq!(relative_bucket(0, 32, 128), 0);
        assert_eq!(relative_bucket(-7, 32, 128), 7);
        assert_eq!(relative_bucket(7, 32, 128), 23);
        // Log region: 8 + floor(ln(d/8)/ln(16)·8).
        assert_eq!(relative_bucket(-8, 32, 128), 8);
        assert_eq!(relative_bucket(-16, 32, 128), 10); // ln2/ln16·8 = 2
        assert_eq!(relative_bucket(-64, 32, 128), 14); // ln8/ln16·8 = 6
        assert_eq!(relative_bucket(16, 32, 128), 26);
        assert_eq!(relative_bucket(-127, 32, 128), 15);
        assert_eq!(relative_bucket(-1000, 32, 128), 15);
        assert_eq!(relative_bucket(1000, 32, 128), 31);
    }

    #[test]
    fn an_unknown_feed_forward_is_refused() {
        let cfg = T5Config {
            feed_forward_proj: "gated-silu".into(),
            ..T5Config::xxl()
        };
        let err = cfg.gated().unwrap_err().to_string();
        assert!(err.contains("gated-silu"), "{err}");
    }
}
