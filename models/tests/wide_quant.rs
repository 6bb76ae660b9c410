//! GGUF block types on a whole model. The tiny fixtures' rows are not whole
//! 256-element K-quant blocks, so there Q4_K falls back to f16 (as
//! ComfyUI-GGUF's converter does); this Flux transformer is wide enough
//! (inner width 256) that every matrix but the 64-wide input embedding is
//! quantised. Its random weights are made here, written as an f32
//! diffusers folder, turned into GGUF by `weft quantize`'s code, and the
//! quantised model is run against the f32 one.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use common::relative;
use weft_kernels::quant::{GgufFile, StoredType};
use weft_models::flux::model::{FluxConfig, FluxTransformer};
use weft_models::flux::{self, FluxNetwork};
use weft_models::loader::Loader;
use weft_models::packed::WeightMode;
use weft_models::quantize::quantize_file;
use weft_sampling::{Conditioning, Network};

/// Weights N(0, 1/fan_in) (norm scales 1, vectors small) from a per-name
/// seed, recorded as the model asks for them.
#[derive(Default)]
struct RandomWeights {
    made: Mutex<HashMap<String, Tensor>>,
}

/// A deterministic N(0, 1) sequence (xorshift and Box–Muller).
fn normals(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed | 1;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

struct Shared(Arc<RandomWeights>);

impl SimpleBackend for Shared {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let dims = s.dims().to_vec();
        let count: usize = dims.iter().product();
        let t = if name.contains("norm") && dims.len() == 1 {
            Tensor::ones(dims.as_slice(), dtype, dev)?
        } else {
            let std = if dims.len() == 1 {
                0.02
            } else {
                1.0 / (*dims.last().unwrap() as f32).sqrt()
            };
            let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            let values: Vec<f32> = normals(seed, count).into_iter().map(|x| x * std).collect();
            Tensor::from_vec(values, dims.as_slice(), dev)?.to_dtype(dtype)?
        };
        self.0
            .made
            .lock()
            .unwrap()
            .insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("{name}: shapes are needed to make random weights")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn config() -> FluxConfig {
    FluxConfig {
        num_layers: 1,
        num_single_layers: 1,
        attention_head_dim: 128,
        num_attention_heads: 2,
        joint_attention_dim: 256,
        pooled_projection_dim: 256,
        guidance_embeds: true,
        ..FluxConfig::default()
    }
}

/// The f32 diffusers folder `dir/transformer`.
fn write_folder(dir: &std::path::Path) -> std::path::PathBuf {
    let weights = Arc::new(RandomWeights::default());
    let vb = VarBuilder::from_backend(Box::new(Shared(weights.clone())), DType::F32, Device::Cpu);
    FluxTransformer::new(&config(), Loader::new(vb)).unwrap();
    let folder = dir.join("transformer");
    std::fs::create_dir_all(&folder).unwrap();
    let made = weights.made.lock().unwrap();
    candle_core::safetensors::save(&made, folder.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    let c = config();
    let json = serde_json::json!({
        "_class_name": "FluxTransformer2DModel",
        "num_layers": c.num_layers, "num_single_layers": c.num_single_layers,
        "attention_head_dim": c.attention_head_dim, "num_attention_heads": c.num_attention_heads,
        "joint_attention_dim": c.joint_attention_dim, "pooled_projection_dim": c.pooled_projection_dim,
        "guidance_embeds": c.guidance_embeds, "in_channels": c.in_channels,
    });
    std::fs::write(folder.join("config.json"), json.to_string()).unwrap();
    folder.join("diffusion_pytorch_model.safetensors")
}

/// ‖a − b‖ / ‖b‖ over every element.
fn rms_relative(a: &Tensor, b: &Tensor) -> f32 {
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    norm(&(a - b).unwrap()) / norm(b)
}

fn run(net: &FluxNetwork) -> Tensor {
    let x = Tensor::from_vec(normals(1, 2 * 16 * 8 * 8), (2, 16, 8, 8), &Device::Cpu).unwrap();
    let t = Tensor::new(&[700f32, 300.0], &Device::Cpu).unwrap();
    let context = Tensor::from_vec(normals(2, 2 * 7 * 256), (2, 7, 256), &Device::Cpu).unwrap();
    let pooled = Tensor::from_vec(normals(3, 2 * 256), (2, 256), &Device::Cpu).unwrap();
    let cond = Conditioning {
        context: Some(context),
        pooled: Some(pooled),
        guidance: vec![Some(3.5), Some(2.0)],
        ..Default::default()
    };
    net.forward(&x, &t, &cond).unwrap()
}

#[test]
fn q8_0_q6_k_and_q4_k_gguf_models_stay_within_their_tolerances_of_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_folder(tmp.path());
    let (cfg, map) = flux::open_transformer(tmp.path(), None).unwrap();
    assert_eq!(cfg, config());
    let reference = run(&FluxNetwork::build(&cfg, &map, WeightMode::Dense).unwrap());
    // Tolerances on ‖out − f32‖ / ‖f32‖, per block type: measured 0.021
    // (Q8_0), 0.050 (Q6_K) and 0.174 (Q4_K) on these deterministic random
    // weights, whose untrained modulation amplifies weight error about
    // fivefold; the bounds leave room, not slack.
    for (ty, tolerance) in [
        (StoredType::Q8_0, 0.03),
        (StoredType::Q6K, 0.07),
        (StoredType::Q4K, 0.25),
    ] {
        let gguf = tmp.path().join(format!("wide-{ty:?}.gguf"));
        let report = quantize_file(&file, &gguf, ty).unwrap();
        let g = GgufFile::open(&gguf).unwrap();
        let of_type = g
            .tensor_names()
            .iter()
            .filter(|n| g.stored_type(n).unwrap() == ty)
            .count();
        assert!(
            of_type >= 20 && report.quantized == of_type,
            "{ty:?}: {of_type} tensors, {report:?}"
        );
        let (cfg, map) = flux::open_transformer(&gguf, Some(tmp.path())).unwrap();
        let out = run(&FluxNetwork::build(&cfg, &map, WeightMode::Stored).unwrap());
        let error = rms_relative(&out, &reference);
        eprintln!(
            "{ty:?}: {of_type} tensors, error {error:.5} (norm), {:.5} (largest, of the largest value)",
            relative(&out, &reference)
        );
        assert!(error < tolerance, "{ty:?}: {error} ≥ {tolerance}");
        assert!(error > 0.0, "{ty:?} changed nothing: was it quantised?");
    }
}
