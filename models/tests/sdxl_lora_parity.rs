//! LoRA, LyCORIS and textual-inversion embeddings on the tiny SDXL against
//! diffusers/peft (`scripts/make_sdxl_fixtures.py`): kohya and PEFT LoRAs
//! applied by diffusers' `load_lora_weights`, LoHa/LoKr/diff/DoRA against
//! their closed forms, and embeddings loaded with `load_textual_inversion`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{floats, sample_cfg};
use weft_kernels::testing::max_diff as max_abs;
use weft_models::clip::{Embedding, TextEncoder};
use weft_models::lora::{self, LoraFile, Target};
use weft_models::sd::checkpoint::{self, Checkpoint};
use weft_models::sd::network::sampling_model;
use weft_models::sd::unet::SdUNet;
use weft_sampling::{Conditioning, Model, SizeCond};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl")
}

fn base() -> (Checkpoint, Model, TextEncoder) {
    let ck = checkpoint::open(&dir().join("tiny_sdxl"), None).unwrap();
    let (spec, tensors) = ck.unet.as_ref().unwrap();
    let model = sampling_model(&ck, SdUNet::build(spec, tensors).unwrap()).unwrap();
    let clip = TextEncoder::from_parts(&ck.clip).unwrap();
    (ck, model, clip)
}

fn open_lora(name: &str) -> LoraFile {
    LoraFile::open(&dir().join(format!("loras/sdxl_{name}.safetensors")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The base UNet's output on the reference inputs.
fn unet_out(model: &Model) -> candle_core::Tensor {
    let r = common::tensors(&dir());
    let stated = SizeCond {
        original: Some((1024.0, 1024.0)),
        crop: (16.0, 32.0),
        target: Some((64.0, 64.0)),
        ..SizeCond::default()
    };
    let cond = Conditioning {
        context: Some(r["unet.context"].clone()),
        pooled: Some(r["unet.text_embeds"].clone()),
        sizes: vec![None, Some(stated)],
        ..Default::default()
    };
    model
        .network
        .forward(&r["unet.sample"], &r["unet.timestep"], &cond)
        .unwrap()
}

#[test]
fn kohya_and_peft_loras_match_diffusers() {
    let r = common::tensors(&dir());
    let (_, model, clip) = base();
    let plain = unet_out(&model);
    for name in ["kohya", "peft"] {
        let file = open_lora(name);
        for scale in [1.0, 0.7] {
            let patched = lora::patch(&file, Some(&model), Some(&clip), scale, scale)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                !patched.summary.contains("match no weight"),
                "{name}: {}",
                patched.summary
            );
            let out = unet_out(patched.model.as_ref().unwrap());
            let want = &r[&format!("lora.{name}.unet.scale_{scale:.1}")];
            let e = max_abs(&out, want);
            assert!(e < 1e-4, "{name} at {scale}: UNet {e}");
            assert!(
                max_abs(&plain, want) > 1e-2,
                "{name}: the LoRA changes the UNet"
            );
            if scale == 1.0 {
                let clip = patched.clip.unwrap();
                for (row, text) in ["prompt", "negative_prompt"].iter().enumerate() {
                    let text = common::json(&dir())[text].as_str().unwrap().to_string();
                    let cond = clip.encode(&text).unwrap();
                    let want = r[&format!("lora.{name}.te.context")]
                        .narrow(0, row, 1)
                        .unwrap();
                    let e = max_abs(cond.context.as_ref().unwrap(), &want);
                    assert!(e < 1e-4, "{name} row {row}: text states {e}");
                    let want = r[&format!("lora.{name}.te.clip_g.text_embeds")]
                        .narrow(0, row, 1)
                        .unwrap();
                    let e = max_abs(cond.pooled.as_ref().unwrap(), &want);
                    assert!(e < 1e-4, "{name} row {row}: pooled {e}");
                }
            }
        }
    }
    // The base model is untouched: patching made copies, and only of the
    // patched layers; every other tensor is the base's own.
    assert_eq!(max_abs(&unet_out(&model), &plain), 0.0);
    let patched = lora::patch(&open_lora("kohya"), Some(&model), None, 1.0, 0.0).unwrap();
    let weights_of = |m: &Model| {
        let any: &dyn std::any::Any = &*m.network;
        any.downcast_ref::<SdUNet>().unwrap().weights().clone()
    };
    let (a, b) = (
        weights_of(&model),
        weights_of(patched.model.as_ref().unwrap()),
    );
    let (mut shared, mut copied) = (0, 0);
    for (name, t) in &a {
        if b[name].id() == t.id() {
            shared += 1;
        } else {
            copied += 1;
        }
    }
    let n_patches = json_lora_params("kohya", "unet.");
    assert_eq!(copied, n_patches, "only the patched layers are copied");
    assert!(shared > copied, "{shared} shared, {copied} copied");
}

/// How many weights of `prefix` (`unet.`, `text_encoder.`) the fixture's
/// LoRA patches, as diffusers reported them.
fn json_lora_params(name: &str, prefix: &str) -> usize {
    common::json(&dir())["loras"][name]["patched_params"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.as_str().unwrap().starts_with(prefix))
        .count()
}

/// LoHa, LoKr, full diffs and DoRA against their closed forms, computed by
/// the fixture script in torch, at strengths 1 and 0.5.
#[test]
fn lycoris_patches_match_their_closed_forms() {
    let r = common::tensors(&dir());
    let json = common::json(&dir());
    let (ck, _, _) = base();
    let (spec, tensors) = ck.unet.as_ref().unwrap();
    let unet = SdUNet::build(spec, tensors).unwrap();
    let weights = unet.weights();
    for kind in ["loha", "lokr", "diff", "dora"] {
        let p = &json["patches"][kind];
        let file = LoraFile::open(&dir().join(p["file"].as_str().unwrap())).unwrap();
        let resolved = file.resolve(&[(Target::Unet, weights)], 2);
        assert!(
            resolved.unmatched.is_empty(),
            "{kind}: {:?}",
            resolved.unmatched
        );
        for strength in floats(&p["strengths"]) {
            let changed = lora::apply(Target::Unet, weights, &resolved, strength).unwrap();
            for m in p["modules"].as_array().unwrap() {
                let name = m["diffusers_param"].as_str().unwrap();
                let i = m["index"].as_u64().unwrap();
                let orig = &r[&format!("patch.{kind}.{i}.orig")];
                assert_eq!(max_abs(&weights[name], orig), 0.0, "{kind} {name}: base");
                let want = &r[&format!("patch.{kind}.{i}.strength_{strength:.1}")];
                let got = changed
                    .get(name)
                    .unwrap_or_else(|| panic!("{kind}: {name} not patched"));
                let e = max_abs(got, want);
                assert!(e < 1e-5, "{kind} {name} at {strength}: {e}");
            }
        }
    }
}

#[test]
fn lora_pipeline_matches_diffusers() {
    let r = common::tensors(&dir());
    let (_, model, clip) = base();
    let patched = lora::patch(&open_lora("kohya"), Some(&model), Some(&clip), 1.0, 1.0).unwrap();
    let (model, clip) = (patched.model.unwrap(), patched.clip.unwrap());
    let p = &common::json(&dir())["pipelines"]["lora_kohya"];
    let text = |k: &str| clip.encode(p[k].as_str().unwrap()).unwrap();
    let sigmas = floats(&p["sigmas"]);
    let x = (&r["pipe.latents"] * p["init_noise_sigma"].as_f64().unwrap()).unwrap();
    let out = sample_cfg(
        Arc::new(model),
        text("prompt"),
        text("negative_prompt"),
        p["guidance_scale"].as_f64().unwrap(),
        &sigmas,
        x,
        "euler",
    );
    let steps = &r["pipe.lora_kohya.steps"];
    let want = steps.get(steps.dim(0).unwrap() - 1).unwrap();
    let largest: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    let e = max_abs(&out, &want) / largest.max(1.0);
    eprintln!("LoRA pipeline: max error {e:e} relative to {largest}");
    assert!(e < 1e-4, "{e}");
}

fn embeddings(name: &str) -> Result<Arc<Embedding>, String> {
    let path = dir().join(format!("embeddings/{name}.safetensors"));
    if !path.is_file() {
        return Err(format!("unknown embedding `{name}` in {}", dir().display()));
    }
    Embedding::open(&path).map(Arc::new)
}

#[test]
fn textual_inversion_matches_diffusers() {
    let r = common::tensors(&dir());
    let ti = &common::json(&dir())["textual_inversion"];
    let (_, _, clip) = base();
    let prompt = ti["weft_prompt"].as_str().unwrap();
    let cond = clip.encode_each(&[prompt, prompt], &embeddings).unwrap();
    let e = max_abs(cond.context.as_ref().unwrap(), &r["ti.context"]);
    assert!(e < 1e-4, "SDXL embedding: text states {e}");
    // Pooled at the end token, as ComfyUI (transformers pools SDXL's legacy
    // configs at the largest id, here an added token).
    let e = max_abs(
        cond.pooled.as_ref().unwrap(),
        &r["ti.clip_g.text_embeds_at_eos"],
    );
    assert!(e < 1e-4, "SDXL embedding: pooled {e}");
    // An unknown name is an error naming it and where it was looked for.
    let e = clip
        .encode_each(&["embedding:nope", "embedding:nope"], &embeddings)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("fixtures/sdxl"), "{e}");

    // SD 1.x's A1111 layout (`emb_params`) on the tiny SD 1.5.
    let sd = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny_sd15");
    let sd15 = checkpoint::open(&sd, None).unwrap();
    let clip = TextEncoder::from_parts(&sd15.clip).unwrap();
    let cond = clip
        .encode_each(
            &[prompt.replace("tiny_sdxl_emb", "tiny_sd15_emb").as_str()],
            &embeddings,
        )
        .unwrap();
    let e = max_abs(cond.context.as_ref().unwrap(), &r["sd15_ti.hidden"]);
    assert!(e < 1e-4, "SD 1.5 embedding: {e}");
}
