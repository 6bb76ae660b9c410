//! A training run's configuration, read from RON.
//!
//! Unknown fields are refused (a misspelt `ema_decay` must not silently train
//! with the default), and every check names the field and the file, because
//! a run that fails after ten minutes on a bad value wastes the ten minutes.
//!
//! Relative data and output paths are resolved against the working directory,
//! like any other command-line path: the configs in `assets/mnist/` are written for
//! `weft train assets/mnist/….ron` run from the repository root.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weft_models::mnist::{ModelConfig, Objective};

/// Where the training set lives (IDX files, gzipped or raw).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub images: PathBuf,
    pub labels: PathBuf,
}

/// The learning rate after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Half a cosine from `lr` down to 0 at the last step.
    Cosine,
}

/// How flow training draws σ. Ignored by DDPM, whose t is always uniform
/// over the training steps (that is what its loss weighting assumes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SigmaSampling {
    /// σ ~ U(0, 1): plain conditional flow matching.
    #[default]
    Uniform,
    /// σ = sigmoid(mean + std·z), z ~ N(0, 1) (SD3's logit-normal): spends
    /// more steps on middle noise levels, where the velocity is hardest.
    LogitNormal { mean: f64, std: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    /// Optimizer steps in the whole run.
    pub steps: u64,
    pub batch_size: usize,
    /// Splits each batch into this many equal parts whose gradients are
    /// computed on their own threads (one core each) and averaged in a
    /// fixed order. Small networks train faster this way than with candle's
    /// per-op threading, and the result depends on `shards`, never on the
    /// machine's core count.
    #[serde(default = "one_shard")]
    pub shards: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// AdamW's decoupled weight decay (matrices only).
    #[serde(default)]
    pub weight_decay: f64,
    /// Decay of the parameter EMA (warmed up, see `Ema::decay_at`).
    pub ema_decay: f64,
    /// Probability of replacing a label by the null class ∅, so the one
    /// network also learns the unconditional model that CFG needs.
    pub cfg_dropout: f64,
    #[serde(default)]
    pub sigma_sampling: SigmaSampling,
    pub seed: u64,
    /// Steps between checkpoints; 0 writes one only at the end.
    #[serde(default)]
    pub checkpoint_every: u64,
    /// The shipped (EMA) checkpoint. Raw weights and the resume state go
    /// next to it, see [`TrainConfig::raw_path`] and [`TrainConfig::resume_path`].
    pub output: PathBuf,
}

fn one_shard() -> usize {
    1
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.{suffix}"))
}

/// Reads a RON file; errors carry file:line:col.
pub fn read_ron<T: DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read config: {e}", path.display()))?;
    parse_ron(&text, path)
}

/// Parses RON text; `path` only names the file in errors.
pub fn parse_ron<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, String> {
    ron::Options::default()
        .from_str(text)
        .map_err(|e: ron::error::SpannedError| {
            format!(
                "{}:{}:{}: {}",
                path.display(),
                e.span.start.line,
                e.span.start.col,
                e.code
            )
        })
}

impl TrainConfig {
    /// Parses and validates a config file.
    pub fn load(path: &Path) -> Result<TrainConfig, String> {
        let config: TrainConfig = read_ron(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses RON text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<TrainConfig, String> {
        parse_ron(text, path)
    }

    /// Checks every value; the error names the file and the field.
    pub fn validate(&self, path: &Path) -> Result<(), String> {
        let bad = |field: &str, msg: String| Err(format!("{}: `{field}`: {msg}", path.display()));
        if self.steps == 0 {
            return bad("steps", "must be at least 1, got 0".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1, got 0".into());
        }
        if self.shards == 0 || self.batch_size / self.shards * self.shards != self.batch_size {
            return bad(
                "shards",
                format!(
                    "must divide batch_size ({}) into equal parts, got {}",
                    self.batch_size, self.shards
                ),
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("must be a positive number, got {}", self.lr));
        }
        if self.warmup_steps >= self.steps {
            return bad(
                "warmup_steps",
                format!(
                    "must be less than `steps` ({}), got {}",
                    self.steps, self.warmup_steps
                ),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("must be ≥ 0, got {}", self.weight_decay),
            );
        }
        if self.lr * self.weight_decay >= 1.0 {
            return bad(
                "weight_decay",
                format!(
                    "lr·weight_decay = {} would flip the weights' sign each step; must be < 1",
                    self.lr * self.weight_decay
                ),
            );
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad(
                "ema_decay",
                format!("must be in [0, 1), got {}", self.ema_decay),
            );
        }
        if !(0.0..=1.0).contains(&self.cfg_dropout) {
            return bad(
                "cfg_dropout",
                format!(
                    "is a probability, must be in [0, 1], got {}",
                    self.cfg_dropout
                ),
            );
        }
        if let SigmaSampling::LogitNormal { mean, std } = self.sigma_sampling {
            if !(mean.is_finite() && std.is_finite() && std > 0.0) {
                return bad(
                    "sigma_sampling",
                    format!(
                        "LogitNormal needs a finite mean and std > 0, got mean {mean}, std {std}"
                    ),
                );
            }
            if matches!(self.model.objective, Objective::Ddpm { .. }) {
                return bad(
                    "sigma_sampling",
                    "LogitNormal applies to flow-path training only; DDPM draws t uniformly".into(),
                );
            }
        }
        if let Err(e) = self.model.validate() {
            return bad("model", e);
        }
        if self.model.objective == Objective::Classify && self.cfg_dropout != 0.0 {
            return bad(
                "cfg_dropout",
                format!(
                    "must be 0 for a classifier, which learns every label (got {})",
                    self.cfg_dropout
                ),
            );
        }
        if self.model.channels != 1 {
            return bad(
                "model.channels",
                format!(
                    "IDX datasets are greyscale, so it must be 1, got {}",
                    self.model.channels
                ),
            );
        }
        for (field, p) in [
            ("data.images", &self.data.images),
            ("data.labels", &self.data.labels),
        ] {
            if !p.is_file() {
                let cwd = std::env::current_dir()
                    .map(|d| format!(" (relative paths are resolved against {})", d.display()))
                    .unwrap_or_default();
                return bad(field, format!("no such file {}{cwd}", p.display()));
            }
        }
        if self.output.file_name().is_none() {
            return bad(
                "output",
                format!("must name a file, got {}", self.output.display()),
            );
        }
        Ok(())
    }

    /// The raw (non-averaged) weights, e.g. `mnist_flow.raw.safetensors`.
    pub fn raw_path(&self) -> PathBuf {
        with_suffix(&self.output, "raw.safetensors")
    }

    /// The resume state, e.g. `mnist_flow.resume.safetensors`.
    pub fn resume_path(&self) -> PathBuf {
        with_suffix(&self.output, "resume.safetensors")
    }

    /// The learning rate for optimizer step `step` (0-based): linear warm-up
    /// to `lr`, then the schedule. Warm-up starts above zero so step 0 moves.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let span = (self.steps - self.warmup_steps) as f64;
                let done = (step - self.warmup_steps) as f64 / span;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
            }
        }
    }
}
