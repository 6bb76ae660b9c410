//! Attention hooks: selected attention layers modified or replaced while a
//! hooked network runs (perturbed-attention guidance replaces self-attention
//! by the identity; plugins reach this through ABI 1.1's model patches).
//!
//! The hook travels in a thread-local set for the duration of one forward
//! ([`HookedNetwork`]), so layers need no extra argument and a network with
//! no hook pays one thread-local read per attention layer: its fast kernels
//! stay in use.

use std::cell::RefCell;
use std::sync::Arc;

use crate::{Conditioning, Network};
use candle_core::{Result, Tensor};

/// Decides, per attention layer, whether to replace its attention.
pub trait AttentionHook: Send + Sync + std::fmt::Debug {
    /// `name` is the layer's weight prefix in diffusers' naming
    /// (`mid_block.attentions.0.transformer_blocks.0.attn1`); `q`, `k`, `v`
    /// are `[batch, tokens, heads·dim]` after the projections. `Some(out)`
    /// (same shape as `q`, before the output projection) replaces the
    /// attention; `None` keeps weft's own.
    fn attend(
        &self,
        name: &str,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
    ) -> Result<Option<Tensor>>;
}

thread_local! {
    static ACTIVE: RefCell<Option<Arc<dyn AttentionHook>>> = const { RefCell::new(None) };
}

/// Runs `f` with `hook` active on this thread (restoring what was before).
pub fn with_hook<T>(hook: &Arc<dyn AttentionHook>, f: impl FnOnce() -> T) -> T {
    let previous = ACTIVE.with(|a| a.replace(Some(hook.clone())));
    struct Restore(Option<Arc<dyn AttentionHook>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            ACTIVE.with(|a| *a.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

/// The active hook's attention for the layer `name`, when there is a hook
/// and it takes this layer; `None` means the caller's own kernel.
pub fn hooked(
    name: &str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
) -> Result<Option<Tensor>> {
    let hook = ACTIVE.with(|a| a.borrow().clone());
    match hook {
        Some(hook) => hook.attend(name, q, k, v, heads),
        None => Ok(None),
    }
}

/// A network whose forward passes run with `hook` active.
#[derive(Debug)]
pub struct HookedNetwork {
    pub inner: Arc<dyn Network>,
    pub hook: Arc<dyn AttentionHook>,
}

impl Network for HookedNetwork {
    fn forward(&self, x: &Tensor, timesteps: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        with_hook(&self.hook, || self.inner.forward(x, timesteps, cond))
    }

    fn size_bytes(&self) -> usize {
        self.inner.size_bytes()
    }

    fn release_pages(&self) {
        self.inner.release_pages()
    }

    fn without_blocks(&self, blocks: &[usize]) -> Option<Arc<dyn Network>> {
        let inner = self.inner.without_blocks(blocks)?;
        Some(Arc::new(HookedNetwork {
            inner,
            hook: self.hook.clone(),
        }))
    }

    fn with_deltas(
        &self,
        deltas: &[(String, Tensor)],
        strength: f64,
    ) -> Option<std::result::Result<Arc<dyn Network>, String>> {
        let inner = match self.inner.with_deltas(deltas, strength)? {
            Ok(inner) => inner,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(Arc::new(HookedNetwork {
            inner,
            hook: self.hook.clone(),
        })))
    }
}
