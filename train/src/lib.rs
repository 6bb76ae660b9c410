//! weft's trainer: trains the embedded class-conditional MNIST models
//! (`weft_models::mnist`) with candle's autograd, deterministically from a
//! seed and resumable bit for bit.

pub mod adamw;
pub mod config;
pub mod ema;
pub mod eval;
pub mod idx;
pub mod metrics;
pub mod plot;
pub mod rng;
pub mod trainer;

use std::path::Path;

pub use config::TrainConfig;
pub use trainer::{TrainReport, Trainer};

/// Trains the model described by the RON config at `config_path`.
///
/// With `resume`, continues from the config's resume file (written next to
/// `output` at every checkpoint) and ends bit-identical to an uninterrupted
/// run. `progress` shows a progress bar on stderr when it is a terminal.
/// Writes the EMA checkpoint to `output`, the raw weights and resume state
/// beside it.
pub fn train(config_path: &Path, resume: bool, progress: bool) -> Result<TrainReport, String> {
    let config = TrainConfig::load(config_path)?;
    if let Some(dir) = config.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create output directory: {e}", dir.display()))?;
    }
    let mut trainer = Trainer::new(config, config_path)?;
    if resume {
        trainer.resume()?;
    }
    trainer.run(progress)
}
