//! Writes a Flux.1-dev model set of the real shapes with random weights,
//! for the end-to-end memory run (`scripts/bench_flux_e2e.sh`):
//!
//! - `flux1-dev-Q8_0.gguf`: the 12 B-parameter transformer in BFL's names,
//!   its matrices Q8_0 and vectors f32, written by the rules and code of
//!   `weft quantize` (`quantize::quantize_packed`) one tensor at a time, so
//!   no 24–48 GB f16/f32 intermediate file is needed;
//! - `t5xxl-Q8_0.gguf`: T5-XXL v1.1's encoder (4.7 B) in transformers' names;
//! - `clip_l.safetensors`, `ae.safetensors`: CLIP-L and the 16-channel VAE,
//!   f32, built by weft's own networks (diffusers/transformers names).
//!
//!   cargo bench -p weft-models --bench flux_files -- DIR
//!
//! Weights are N(0, 1/fan_in), norms 1, so activations stay finite.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use weft_kernels::quant::{write_gguf, GgufValue, PackedWeight, StoredType};
use weft_models::clip::{ClipConfig, ClipText};
use weft_models::quantize::quantize_packed;
use weft_models::sd::config::vae_from_json;
use weft_models::vae::Vae;

/// A random tensor of `shape`: vectors of norms are 1, biases small.
fn random(name: &str, shape: &[usize]) -> Tensor {
    let dev = Device::Cpu;
    if name.ends_with("scale") || name.contains("norm") {
        return Tensor::ones(shape, DType::F32, &dev).unwrap();
    }
    let fan_in = shape.last().copied().unwrap_or(1).max(1);
    let std = if shape.len() == 1 {
        0.02
    } else {
        (1.0 / fan_in as f64).sqrt()
    };
    Tensor::randn(0f32, std as f32, shape, &dev).unwrap()
}

/// Flux.1-dev's transformer tensors, BFL names and shapes.
fn flux_tensors() -> Vec<(String, Vec<usize>)> {
    let d = 3072;
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut linear = |name: &str, out: usize, inp: usize| {
        t.push((format!("{name}.weight"), vec![out, inp]));
        t.push((format!("{name}.bias"), vec![out]));
    };
    linear("img_in", d, 64);
    linear("txt_in", d, 4096);
    for e in ["time_in", "guidance_in"] {
        linear(&format!("{e}.in_layer"), d, 256);
        linear(&format!("{e}.out_layer"), d, d);
    }
    linear("vector_in.in_layer", d, 768);
    linear("vector_in.out_layer", d, d);
    for i in 0..19 {
        for s in ["img", "txt"] {
            let b = format!("double_blocks.{i}.{s}");
            linear(&format!("{b}_mod.lin"), 6 * d, d);
            linear(&format!("{b}_attn.qkv"), 3 * d, d);
            linear(&format!("{b}_attn.proj"), d, d);
            linear(&format!("{b}_mlp.0"), 4 * d, d);
            linear(&format!("{b}_mlp.2"), d, 4 * d);
        }
    }
    for i in 0..38 {
        let b = format!("single_blocks.{i}");
        linear(&format!("{b}.linear1"), 3 * d + 4 * d, d);
        linear(&format!("{b}.linear2"), d, 5 * d);
        linear(&format!("{b}.modulation.lin"), 3 * d, d);
    }
    linear("final_layer.linear", 64, d);
    linear("final_layer.adaLN_modulation.1", 2 * d, d);
    for i in 0..19 {
        for s in ["img", "txt"] {
            for n in ["query_norm", "key_norm"] {
                t.push((
                    format!("double_blocks.{i}.{s}_attn.norm.{n}.scale"),
                    vec![128],
                ));
            }
        }
    }
    for i in 0..38 {
        for n in ["query_norm", "key_norm"] {
            t.push((format!("single_blocks.{i}.norm.{n}.scale"), vec![128]));
        }
    }
    t
}

/// T5-XXL v1.1's encoder tensors, transformers names and shapes.
fn t5_tensors() -> Vec<(String, Vec<usize>)> {
    let (d, ff) = (4096, 10240);
    let mut t = vec![
        ("shared.weight".to_string(), vec![32128, d]),
        ("encoder.final_layer_norm.weight".to_string(), vec![d]),
        (
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".to_string(),
            vec![32, 64],
        ),
    ];
    for i in 0..24 {
        let b = format!("encoder.block.{i}.layer");
        for p in ["q", "k", "v", "o"] {
            t.push((format!("{b}.0.SelfAttention.{p}.weight"), vec![d, d]));
        }
        t.push((format!("{b}.0.layer_norm.weight"), vec![d]));
        t.push((format!("{b}.1.DenseReluDense.wi_0.weight"), vec![ff, d]));
        t.push((format!("{b}.1.DenseReluDense.wi_1.weight"), vec![ff, d]));
        t.push((format!("{b}.1.DenseReluDense.wo.weight"), vec![d, ff]));
        t.push((format!("{b}.1.layer_norm.weight"), vec![d]));
    }
    t
}

/// Random tensors of `tensors` as a Q8_0 GGUF, one tensor at a time.
fn write_q8(path: &Path, arch: &str, tensors: &[(String, Vec<usize>)]) {
    let packed: Vec<(String, PackedWeight)> = tensors
        .iter()
        .map(|(name, shape)| {
            let p = quantize_packed(&random(name, shape), StoredType::Q8_0).unwrap();
            (name.clone(), p)
        })
        .collect();
    let refs: Vec<(&str, &PackedWeight)> = packed.iter().map(|(n, p)| (n.as_str(), p)).collect();
    let arch = GgufValue::String(arch.into());
    write_gguf(path, &[("general.architecture", &arch)], &refs).unwrap();
}

/// A network built by weft with random weights, saved under its names.
fn save_random<T>(path: &Path, build: impl FnOnce(VarBuilder) -> candle_core::Result<T>) {
    let vm = VarMap::new();
    drop(build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap());
    vm.save(path).unwrap();
}

fn main() {
    let Some(dir) = std::env::args().skip(1).find(|a| a != "--bench") else {
        eprintln!("usage: cargo bench -p weft-models --bench flux_files -- DIR");
        return;
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    write_q8(&dir.join("flux1-dev-Q8_0.gguf"), "flux", &flux_tensors());
    eprintln!("wrote the transformer");
    write_q8(&dir.join("t5xxl-Q8_0.gguf"), "t5encoder", &t5_tensors());
    eprintln!("wrote T5-XXL");
    let clip: ClipConfig = serde_json::from_str(
        r#"{"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "projection_dim": 768}"#,
    )
    .unwrap();
    save_random(&dir.join("clip_l.safetensors"), |vb| {
        ClipText::new(&clip, true, vb)
    });
    let vae = vae_from_json(
        r#"{"in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 16, "use_quant_conv": false,
            "use_post_quant_conv": false, "scaling_factor": 0.3611, "shift_factor": 0.1159}"#,
    )
    .unwrap();
    save_random(&dir.join("ae.safetensors"), |vb| Vae::new(&vae, vb));
    eprintln!("wrote CLIP-L and the VAE to {}", dir.display());
}
