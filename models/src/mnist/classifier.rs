//! A small convolutional MNIST classifier, plain or noise-conditional.
//!
//! It has two jobs. A plain one (trained on clean images) is the judge of the
//! guidance evaluation: class accuracy of generated digits, and a Fréchet
//! distance in its penultimate features (an FID analogue). A
//! noise-conditional one (trained on noisy images x_s with their level s)
//! supplies ∇ₓ log p(y | x_s) for classifier guidance.
//!
//! Noisy inputs always follow the flow path x_s = (1−s)·x0 + s·ε with
//! timestep input s·1000, whatever model is being guided: a diffusion state
//! x0 + σε has the same signal-to-noise ratio as s = σ/(1+σ) and equals
//! x_s·(1+σ), so one classifier serves flow and diffusion models alike.
//!
//! Shape: per entry of `channels`, a 3×3 convolution, FiLM from the time
//! embedding (noise-conditional only), SiLU and a 2×2 max-pool; then a
//! hidden layer (the features) and the logits.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{silu_linear, timestep_features};
use weft_sampling::guidance::NoisyClassifier;

/// Hyper-parameters of [`Classifier`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub in_channels: usize,
    pub image_size: usize,
    /// Convolution widths, one per level; each level halves the resolution.
    pub channels: Vec<usize>,
    /// Width of the penultimate layer: the features the Fréchet distance uses.
    pub hidden: usize,
    pub num_classes: usize,
    /// Take the noise level as an input (for classifier guidance).
    #[serde(default)]
    pub noise_conditional: bool,
    /// Width of the sinusoidal timestep features.
    #[serde(default = "default_freq_dim")]
    pub freq_dim: usize,
}

fn default_freq_dim() -> usize {
    64
}

impl ClassifierConfig {
    // `is_multiple_of` needs Rust 1.87; the workspace's MSRV is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.in_channels == 0 || self.hidden == 0 || self.num_classes < 2 {
            return Err(
                "classifier in_channels and hidden must be positive, with ≥ 2 classes".into(),
            );
        }
        if self.channels.is_empty() || self.channels.len() > 6 || self.channels.contains(&0) {
            return Err("classifier needs 1 to 6 positive conv widths in `channels`".into());
        }
        let factor = 1usize << self.channels.len();
        if self.image_size == 0 || self.image_size % factor != 0 {
            return Err(format!(
                "classifier with {} levels needs an image size divisible by {factor}, got {}",
                self.channels.len(),
                self.image_size
            ));
        }
        if self.freq_dim == 0 || self.freq_dim % 2 != 0 {
            return Err("classifier freq_dim must be even and positive".into());
        }
        Ok(())
    }

    fn flat_features(&self) -> usize {
        let side = self.image_size >> self.channels.len();
        self.channels.last().copied().unwrap_or(0) * side * side
    }
}

/// One level: conv, optional FiLM, SiLU, max-pool.
#[derive(Debug)]
struct Level {
    conv: Conv2d,
    film: Option<Linear>,
}

/// The classifier; see the module docs.
#[derive(Debug)]
pub struct Classifier {
    /// Sinusoidal features → time embedding (noise-conditional only).
    time: Option<(Linear, Linear)>,
    levels: Vec<Level>,
    hidden: Linear,
    head: Linear,
    cfg: ClassifierConfig,
}

impl Classifier {
    pub fn new(cfg: &ClassifierConfig, vb: VarBuilder) -> Result<Classifier> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let td = cfg.hidden;
        let time = if cfg.noise_conditional {
            Some((
                candle_nn::linear(cfg.freq_dim, td, vb.pp("time.0"))?,
                candle_nn::linear(td, td, vb.pp("time.1"))?,
            ))
        } else {
            None
        };
        let mut levels = Vec::with_capacity(cfg.channels.len());
        let mut cur = cfg.in_channels;
        for (i, &c) in cfg.channels.iter().enumerate() {
            let vbl = vb.pp(format!("levels.{i}"));
            let conv_cfg = candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            levels.push(Level {
                conv: candle_nn::conv2d(cur, c, 3, conv_cfg, vbl.pp("conv"))?,
                film: if cfg.noise_conditional {
                    Some(super::zero_linear(td, 2 * c, vbl.pp("film"))?)
                } else {
                    None
                },
            });
            cur = c;
        }
        Ok(Classifier {
            time,
            levels,
            hidden: candle_nn::linear(cfg.flat_features(), cfg.hidden, vb.pp("hidden"))?,
            head: candle_nn::linear(cfg.hidden, cfg.num_classes, vb.pp("head"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    /// Penultimate features `[B, hidden]` of `x` `[B, C, H, W]` at timestep
    /// `t` `[B]` (s·1000; ignored unless noise-conditional).
    pub fn features(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let s = self.cfg.image_size;
        if c != self.cfg.in_channels || h != s || w != s {
            candle_core::bail!(
                "classifier built for {}×{s}×{s} inputs, got {c}×{h}×{w}",
                self.cfg.in_channels
            );
        }
        let emb = match &self.time {
            Some((t0, t1)) => {
                let f = timestep_features(t, self.cfg.freq_dim)?;
                Some(t1.forward(&t0.forward(&f)?.silu()?)?)
            }
            None => None,
        };
        let mut h = x.clone();
        for level in &self.levels {
            h = level.conv.forward(&h)?;
            if let (Some(film), Some(emb)) = (&level.film, &emb) {
                let ss = silu_linear(emb, film)?.unsqueeze(2)?.unsqueeze(3)?;
                let c = h.dim(1)?;
                h = h
                    .broadcast_mul(&(ss.narrow(1, 0, c)? + 1.0)?)?
                    .broadcast_add(&ss.narrow(1, c, c)?)?;
            }
            h = h.silu()?.max_pool2d(2)?;
        }
        self.hidden.forward(&h.flatten_from(1)?)?.silu()
    }

    /// Class logits `[B, num_classes]`.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.features(x, t)?)
    }

    /// Logits from [`Self::features`]' output, so one pass yields both.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        self.head.forward(features)
    }

    /// Features (`[N·hidden]`, row-major) and predicted classes of clean
    /// images in [−1, 1], in chunks of 500 so memory stays bounded.
    pub fn classify(&self, images: &Tensor) -> Result<(Vec<f32>, Vec<u32>)> {
        let n = images.dim(0)?;
        let (mut features, mut predicted) = (Vec::new(), Vec::with_capacity(n));
        for start in (0..n).step_by(500) {
            let chunk = images.narrow(0, start, 500.min(n - start))?;
            let t = Tensor::zeros(chunk.dim(0)?, candle_core::DType::F32, chunk.device())?;
            let f = self.features(&chunk, &t)?;
            predicted.extend(self.logits(&f)?.argmax(1)?.to_vec1::<u32>()?);
            features.extend(f.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((features, predicted))
    }
}

/// Samples in [−1, 1] rounded to the 8-bit levels a saved PNG holds, so
/// generated digits are judged like the 8-bit test digits.
pub fn as_saved(x: &Tensor) -> Result<Tensor> {
    ((x.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .round()?
        .affine(1.0 / 127.5, -1.0)
}

impl NoisyClassifier for Classifier {
    fn logits(&self, x_s: &Tensor, s: f64) -> Result<Tensor> {
        let t = Tensor::full((s * 1000.0) as f32, x_s.dim(0)?, x_s.device())?;
        self.forward(x_s, &t)
    }
}

/// A CLASSIFIER value: shared, so guiders can hold it past the node's run.
#[derive(Clone, Debug)]
pub struct ClassifierHandle(pub std::sync::Arc<Classifier>);

impl weft_core::Object for ClassifierHandle {}

impl weft_core::Handle for ClassifierHandle {
    const TYPE: weft_core::ValueType = weft_core::ValueType::Classifier;
}
