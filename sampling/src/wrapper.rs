//! Code around a model's denoiser: what a plugin's MODEL patch runs before
//! and after D(x, σ) (ComfyUI's model function wrapper).

use std::sync::Arc;

use candle_core::{Result, Tensor};

use crate::conditioning::Conditioning;

/// D(x, σ) of the wrapped model for one conditioning.
pub type Inner<'a> = &'a dyn Fn(&Tensor, f64, &Conditioning) -> Result<Tensor>;

/// Replaces a model's D(x, σ, c): `inner` is the model's own (or the next
/// wrapper's), and the result is a denoised estimate like it.
pub trait DenoiserWrapper: Send + Sync + std::fmt::Debug {
    fn denoise(
        &self,
        inner: Inner<'_>,
        x: &Tensor,
        sigma: f64,
        cond: &Conditioning,
    ) -> Result<Tensor>;
}

/// Wrappers in the order they were applied: the last one applied is the
/// outermost, as when ComfyUI stacks model patches.
#[derive(Clone, Debug, Default)]
pub struct Wrappers(pub Vec<Arc<dyn DenoiserWrapper>>);

impl Wrappers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These wrappers plus `outer` around them.
    pub fn with(&self, outer: Arc<dyn DenoiserWrapper>) -> Wrappers {
        let mut all = self.0.clone();
        all.push(outer);
        Wrappers(all)
    }

    /// D through every wrapper, innermost first, around `base`.
    pub fn denoise(
        &self,
        base: Inner<'_>,
        x: &Tensor,
        sigma: f64,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        match self.0.split_last() {
            None => base(x, sigma, cond),
            Some((outer, rest)) => {
                let rest = Wrappers(rest.to_vec());
                let inner = |x: &Tensor, s: f64, c: &Conditioning| rest.denoise(base, x, s, c);
                outer.denoise(&inner, x, sigma, cond)
            }
        }
    }
}
