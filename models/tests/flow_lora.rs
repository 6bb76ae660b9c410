//! LoRA on the tiny Flux transformer (`tests/fixtures/flux`): a kohya file
//! naming BFL's fused q/k/v and a PEFT file naming diffusers' separate
//! projections describe the same change, so they must give the same
//! model; and the merged weight is the closed form W + (α/r)·up·down.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::relative;
use weft_kernels::testing::max_diff;
use weft_models::flux::{self, model::unpack, FluxNetwork};
use weft_models::lora::{patch, LoraFile};
use weft_models::packed::WeightMode;
use weft_sampling::{Conditioning, Model};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flux")
}

fn model(mode: WeightMode) -> Model {
    let (cfg, map) = flux::open_transformer(
        &dir().join("dev_original.safetensors"),
        Some(&dir().join("dev")),
    )
    .unwrap();
    FluxNetwork::build(&cfg, &map, mode).unwrap().into_model()
}

fn output(model: &Model) -> Tensor {
    let r =
        candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap();
    let x = unpack(&r["inputs.hidden_states"], 2, 16, 4, 6).unwrap();
    let t = (&r["inputs.timestep"] * 1000.0).unwrap();
    let cond = Conditioning {
        context: Some(r["inputs.encoder_hidden_states"].clone()),
        pooled: Some(r["inputs.pooled_projections"].clone()),
        guidance: vec![Some(3.5), Some(1.0)],
        ..Default::default()
    };
    model.network.forward(&x, &t, &cond).unwrap()
}

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

#[test]
fn kohya_fused_and_peft_split_loras_agree_and_merge_in_closed_form() {
    let dev = Device::Cpu;
    let (d, r) = (32, 2);
    // One rank-2 change per projection, the q/k/v rows of the fused weight.
    let down: Vec<Tensor> = (0..3)
        .map(|_| Tensor::randn(0f32, 0.3, (r, d), &dev).unwrap())
        .collect();
    let up: Vec<Tensor> = (0..3)
        .map(|_| Tensor::randn(0f32, 0.3, (d, r), &dev).unwrap())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    // kohya: one module for the fused qkv; down stacked, up block-diagonal,
    // alpha = 2 per part so α/rank stays 1.
    let mut block = Tensor::zeros((3 * d, 3 * r), candle_core::DType::F32, &dev).unwrap();
    for (i, u) in up.iter().enumerate() {
        block = block
            .slice_assign(&[i * d..(i + 1) * d, i * r..(i + 1) * r], u)
            .unwrap();
    }
    let kohya = tmp.path().join("kohya.safetensors");
    save(
        &kohya,
        &[
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                Tensor::cat(&down, 0).unwrap(),
            ),
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight",
                block,
            ),
            (
                "lora_unet_double_blocks_0_img_attn_qkv.alpha",
                Tensor::new(6f32, &dev).unwrap(),
            ),
        ],
    );
    // PEFT (diffusers' save_lora_weights): separate projections, α = rank.
    let peft = tmp.path().join("peft.safetensors");
    let mut keys = Vec::new();
    for (i, p) in ["to_q", "to_k", "to_v"].iter().enumerate() {
        let m = format!("transformer.transformer_blocks.0.attn.{p}");
        keys.push((format!("{m}.lora_A.weight"), down[i].clone()));
        keys.push((format!("{m}.lora_B.weight"), up[i].clone()));
    }
    let refs: Vec<(&str, Tensor)> = keys.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    save(&peft, &refs);

    let base = model(WeightMode::Stored);
    let plain = output(&base);
    let apply = |file: &Path, strength: f64| {
        let lora = LoraFile::open(file).unwrap();
        let p = patch(&lora, Some(&base), None, strength, 0.0).unwrap();
        assert!(
            p.summary.contains("3 Flux weights patched"),
            "{}",
            p.summary
        );
        output(&p.model.unwrap())
    };
    let (k, p) = (apply(&kohya, 1.0), apply(&peft, 1.0));
    assert!(
        max_diff(&k, &p) < 1e-5,
        "kohya and PEFT: {}",
        max_diff(&k, &p)
    );
    assert!(max_diff(&k, &plain) > 1e-3, "the LoRA changes the output");
    assert!(
        max_diff(&apply(&peft, 0.0), &plain) < 1e-6,
        "strength 0 changes nothing"
    );

    // The merged k projection is W_k + up_k·down_k.
    let lora = LoraFile::open(&peft).unwrap();
    let patched = patch(&lora, Some(&base), None, 0.5, 0.0)
        .unwrap()
        .model
        .unwrap();
    let any: &dyn std::any::Any = &*patched.network;
    let net = any.downcast_ref::<FluxNetwork>().unwrap();
    let name = "transformer_blocks.0.attn.to_k.weight";
    let merged = net.tensors.overridden(name).unwrap();
    let w = Arc::new(base.clone());
    let any: &dyn std::any::Any = &*w.network;
    let original = any
        .downcast_ref::<FluxNetwork>()
        .unwrap()
        .tensors
        .load(name)
        .unwrap();
    let want = (original + (up[1].matmul(&down[1]).unwrap() * 0.5).unwrap()).unwrap();
    assert!(max_diff(merged, &want) < 1e-6);
}

#[test]
fn a_lora_for_another_family_names_both() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sdxl.safetensors");
    let dev = Device::Cpu;
    save(
        &path,
        &[
            (
                "lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight",
                Tensor::zeros((2, 8), candle_core::DType::F32, &dev).unwrap(),
            ),
            (
                "lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight",
                Tensor::zeros((8, 2), candle_core::DType::F32, &dev).unwrap(),
            ),
        ],
    );
    let lora = LoraFile::open(&path).unwrap();
    let err = patch(&lora, Some(&model(WeightMode::Stored)), None, 1.0, 0.0)
        .err()
        .unwrap();
    assert!(
        err.contains("Stable Diffusion") && err.contains("Flux"),
        "{err}"
    );
}

/// The LoRA fixtures of `scripts/make_flow_lora_fixtures.py` against
/// diffusers' `load_lora_weights` (strength 1 and 0.7 by `set_adapters`).
#[test]
fn loras_in_every_format_match_diffusers() {
    use weft_models::sd3::{self, Sd3Network};
    let lora_dir = dir().join("../flow_lora");
    let r = candle_core::safetensors::load(lora_dir.join("reference.safetensors"), &Device::Cpu)
        .unwrap();
    let flux_model = model(WeightMode::Stored);
    for file in ["flux_peft", "flux_kohya", "flux_aitoolkit"] {
        let lora = LoraFile::open(&lora_dir.join(format!("{file}.safetensors"))).unwrap();
        for (strength, name) in [(1.0, "flux.lora_1.0"), (0.7, "flux.lora_0.7")] {
            let p = patch(&lora, Some(&flux_model), None, strength, 0.0).unwrap();
            assert!(
                !p.summary.contains("match no weight"),
                "{file}: {}",
                p.summary
            );
            let out = flux::model::pack(&output(&p.model.unwrap())).unwrap();
            let d = relative(&out, &r[name]);
            assert!(d < 1e-4, "{file} at {strength}: {d}");
        }
    }
    let sd3_dir = dir().join("../sd3");
    let (cfg, map) = sd3::open_transformer(&sd3_dir.join("sd35_large"), None).unwrap();
    let sd3_model = Sd3Network::build(&cfg, &map, WeightMode::Stored)
        .unwrap()
        .into_model();
    let inputs =
        candle_core::safetensors::load(sd3_dir.join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let cond = Conditioning {
        context: Some(inputs["inputs.encoder_hidden_states"].clone()),
        pooled: Some(inputs["inputs.pooled_projections"].clone()),
        ..Default::default()
    };
    let lora = LoraFile::open(&lora_dir.join("sd35_large_peft.safetensors")).unwrap();
    for (strength, name) in [(1.0, "sd35_large.lora_1.0"), (0.7, "sd35_large.lora_0.7")] {
        let p = patch(&lora, Some(&sd3_model), None, strength, 0.0).unwrap();
        let out = p
            .model
            .unwrap()
            .network
            .forward(
                &inputs["inputs.hidden_states"],
                &inputs["inputs.timestep"],
                &cond,
            )
            .unwrap();
        let d = relative(&out, &r[name]);
        assert!(d < 1e-4, "SD3.5 PEFT at {strength}: {d}");
    }
}

/// A kohya Flux LoRA's `lora_te1_` module patches CLIP-L (the Flux text
/// encoder's first tower) in closed form: W + strength·(alpha/rank)·up·down;
/// a LoRA with only text-encoder modules still applies, and its T5
/// (`lora_te2_`) keys, which no tower takes, are reported.
#[test]
fn text_encoder_modules_of_a_flux_lora_patch_clip_l() {
    let parts = weft_models::dit_checkpoint::companions(
        weft_models::dit_checkpoint::DitFamily::Flux,
        &dir().join("pipeline"),
    )
    .unwrap();
    let clip = parts.clip.unwrap();
    let name = "text_model.encoder.layers.0.self_attn.q_proj.weight";
    let base = clip.weights(0).unwrap()[name].clone();
    let (out, inp) = base.dims2().unwrap();
    let (r, alpha, strength) = (2usize, 1.0f32, 0.8f64);
    let dev = Device::Cpu;
    let down = Tensor::randn(0f32, 0.5, (r, inp), &dev).unwrap();
    let up = Tensor::randn(0f32, 0.5, (out, r), &dev).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("flux_te.safetensors");
    let key = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj";
    save(
        &file,
        &[
            (&format!("{key}.lora_down.weight"), down.clone()),
            (&format!("{key}.lora_up.weight"), up.clone()),
            (&format!("{key}.alpha"), Tensor::new(alpha, &dev).unwrap()),
            (
                "lora_te2_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight",
                down.clone(),
            ),
            (
                "lora_te2_encoder_block_0_layer_0_SelfAttention_q.lora_up.weight",
                up.clone(),
            ),
        ],
    );
    let lora = LoraFile::open(&file).unwrap();
    let p = patch(
        &lora,
        Some(&model(WeightMode::Stored)),
        Some(&clip),
        1.0,
        strength,
    )
    .unwrap();
    let patched = p.clip.unwrap().weights(0).unwrap()[name].clone();
    let delta = (up.matmul(&down).unwrap() * (strength * alpha as f64 / r as f64)).unwrap();
    let expected = (&base + delta).unwrap();
    assert!(
        max_diff(&patched, &expected) < 1e-5,
        "{}",
        max_diff(&patched, &expected)
    );
    assert!(
        p.summary.contains("1 text encoder 1 patches"),
        "{}",
        p.summary
    );
    assert!(
        p.summary.contains("lora_te2_"),
        "T5 keys not reported: {}",
        p.summary
    );
}
