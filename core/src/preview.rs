//! Live previews: how a run wants them ([`Previews`], part of
//! [`crate::RunOptions`]) and the per-node rate limit ([`PreviewLimiter`]).
//! The engine knows no image format or model: a node that can show its work
//! so far (a sampler's denoised estimate) reads the options from its
//! [`crate::NodeContext`], asks it whether a preview is due, and sends a PNG
//! as an [`crate::Event::Preview`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How previews are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PreviewMethod {
    /// None are made (the library default: no cost, no events).
    #[default]
    None,
    /// A linear projection of the latent to RGB at latent resolution
    /// (ComfyUI's `latent2rgb`), or the pixels of a pixel-space model.
    Latent2Rgb,
    /// A tiny learned decoder (TAESD) from the decoder folders, at image
    /// resolution; `Latent2Rgb` when none is found for the model's family.
    Taesd,
}

/// A run's preview settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previews {
    pub method: PreviewMethod,
    /// At most one preview per node this often; the last step always shows.
    pub min_interval: Duration,
    /// Folders searched for decoder files (ComfyUI's `vae_approx`), in order.
    pub decoder_folders: Vec<PathBuf>,
}

impl Default for Previews {
    fn default() -> Self {
        Previews {
            method: PreviewMethod::None,
            min_interval: DEFAULT_INTERVAL,
            decoder_folders: Vec::new(),
        }
    }
}

/// The default rate: four previews a second at most.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// Decides which steps of one node's run get a preview: the first, then
/// one whenever `min_interval` has passed since the last, and always the
/// last step (`step == max`), so the final state is never skipped.
#[derive(Clone, Debug)]
pub struct PreviewLimiter {
    min_interval: Duration,
    last: Option<Instant>,
}

impl PreviewLimiter {
    pub fn new(min_interval: Duration) -> Self {
        PreviewLimiter {
            min_interval,
            last: None,
        }
    }

    /// Whether step `step` of `max` gets a preview now.
    pub fn due(&mut self, step: u64, max: u64) -> bool {
        self.due_at(Instant::now(), step, max)
    }

    /// [`Self::due`] at a given time (tests drive a fake clock with it).
    pub fn due_at(&mut self, now: Instant, step: u64, max: u64) -> bool {
        let elapsed = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval);
        if elapsed || step >= max {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 steps 100 ms apart under a 250 ms limit: the first step, every
    /// third after it (300 ms ≥ 250 ms) and the last.
    #[test]
    fn a_fake_clock_sees_one_preview_per_interval_plus_the_last_step() {
        let start = Instant::now();
        let mut limiter = PreviewLimiter::new(Duration::from_millis(250));
        let shown: Vec<u64> = (1..=20)
            .filter(|&step| {
                let now = start + Duration::from_millis(100 * step);
                limiter.due_at(now, step, 20)
            })
            .collect();
        assert_eq!(shown, [1, 4, 7, 10, 13, 16, 19, 20]);
    }

    #[test]
    fn a_slow_clock_previews_every_step_and_a_zero_interval_too() {
        let start = Instant::now();
        let mut slow = PreviewLimiter::new(Duration::from_millis(250));
        let mut zero = PreviewLimiter::new(Duration::ZERO);
        for step in 1..=20u64 {
            let now = start + Duration::from_millis(300 * step);
            assert!(slow.due_at(now, step, 20), "step {step}");
            assert!(zero.due_at(start, step, 20), "step {step}");
        }
    }

    #[test]
    fn a_fast_run_shows_the_first_and_last_steps_only() {
        let now = Instant::now();
        let mut limiter = PreviewLimiter::new(Duration::from_secs(3600));
        let shown: Vec<u64> = (1..=20).filter(|&s| limiter.due_at(now, s, 20)).collect();
        assert_eq!(shown, [1, 20]);
    }
}
