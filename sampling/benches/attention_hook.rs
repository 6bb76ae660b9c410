//! What attention hooks cost a model that has none:
//! `cargo bench -p weft-sampling --bench attention_hook`.
//!
//! One SD 1.5 self-attention at 512² (batch 2, 4,096 tokens, 320 channels,
//! 8 heads), as the UNet now runs it (ask for a hook, then weft's fused
//! kernel), against the kernel called directly, alternating, in this
//! process; and with a hook active that declines the layer.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use weft_sampling::attention_hook::{hooked, with_hook, AttentionHook};

#[derive(Debug)]
struct Declines;

impl AttentionHook for Declines {
    fn attend(
        &self,
        _: &str,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: usize,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(None)
    }
}

fn as_the_unet_does(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    match hooked(
        "mid_block.attentions.0.transformer_blocks.0.attn1",
        q,
        k,
        v,
        8,
    )
    .unwrap()
    {
        Some(t) => t,
        None => weft_kernels::attention::attention(q, k, v, 8).unwrap(),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let shape = (2, 4096, 320);
    let q = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    let k = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    let v = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    let hook: Arc<dyn AttentionHook> = Arc::new(Declines);
    let time = |f: &dyn Fn() -> Tensor| {
        let start = Instant::now();
        std::hint::black_box(f());
        start.elapsed().as_secs_f64()
    };
    let _ = as_the_unet_does(&q, &k, &v);
    let (mut direct, mut unhooked, mut declined) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        direct.push(time(&|| {
            weft_kernels::attention::attention(&q, &k, &v, 8).unwrap()
        }));
        unhooked.push(time(&|| as_the_unet_does(&q, &k, &v)));
        declined.push(time(&|| with_hook(&hook, || as_the_unet_does(&q, &k, &v))));
    }
    let (d, u, h) = (median(direct), median(unhooked), median(declined));
    println!(
        "attention [2, 4096, 320] x 8 heads, medians of 15: kernel {:.2} ms; no hook {:.2} ms ({:.3}x); declining hook {:.2} ms ({:.3}x)",
        d * 1e3,
        u * 1e3,
        u / d,
        h * 1e3,
        h / d
    );
}
