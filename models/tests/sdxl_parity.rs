//! SDXL (base, refiner, ControlNet) against diffusers/transformers on tiny
//! random-weight models of the real classes (`scripts/make_sdxl_fixtures.py`,
//! fixtures in `tests/fixtures/sdxl/`): tokens, both text encoders, the
//! UNets with their micro-conditioning, the ControlNet, the VAE and whole
//! pipelines from fixed latents, including the base → refiner hand-off.
//! Single files are opened with their diffusers folder as the config (the
//! tiny models' vocabulary and head widths are not SDXL's).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;
use common::{floats, ids, sample_cfg};
use weft_kernels::testing::max_diff as max_abs;
use weft_models::clip::TextEncoder;
use weft_models::controlnet::ControlNet;
use weft_models::sd::checkpoint::{self, Checkpoint};
use weft_models::sd::config::Family;
use weft_models::sd::network::sampling_model;
use weft_models::sd::unet::SdUNet;
use weft_models::vae::Vae;
use weft_sampling::{Conditioning, Model, Network, SizeCond};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl")
}

/// The base or refiner in both layouts: the diffusers folder, and the
/// single file with the folder as its config.
fn layouts(name: &str) -> Vec<(String, Checkpoint)> {
    let folder = dir().join(name);
    let file = dir().join(format!("{name}.safetensors"));
    vec![
        (format!("{name}/"), checkpoint::open(&folder, None).unwrap()),
        (
            format!("{name}.safetensors"),
            checkpoint::open(&file, Some(&folder)).unwrap_or_else(|e| panic!("{e}")),
        ),
    ]
}

fn unet(ck: &Checkpoint) -> SdUNet {
    let (spec, tensors) = ck.unet.as_ref().unwrap();
    SdUNet::build(spec, tensors).unwrap_or_else(|e| panic!("{e}"))
}

fn model(ck: &Checkpoint) -> Arc<Model> {
    Arc::new(sampling_model(ck, unet(ck)).unwrap())
}

/// The prompts of the text-encoder references, row by row; parentheses are
/// escaped, since diffusers gives them no weight.
fn text_rows() -> Vec<String> {
    common::json(&dir())["text_rows_text"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().replace('(', "\\(").replace(')', "\\)"))
        .collect()
}

#[test]
fn families_are_detected() {
    for (what, ck) in layouts("tiny_sdxl") {
        assert_eq!(ck.family, Family::Sdxl, "{what}");
        assert_eq!(ck.clip.len(), 2, "{what}: CLIP-L and bigG");
        // SDXL conditions on raw penultimate states.
        assert!(ck.clip.iter().all(|c| !c.final_norm), "{what}");
        assert!(ck.clip[1].pad_with_zero, "{what}: bigG pads with `!`");
        assert!(!ck.clip[0].pad_with_zero, "{what}");
        assert!((ck.vae.as_ref().unwrap().0.scaling_factor - 0.13025).abs() < 1e-9);
    }
    for (what, ck) in layouts("tiny_sdxl_refiner") {
        assert_eq!(ck.family, Family::SdxlRefiner, "{what}");
        assert_eq!(ck.clip.len(), 1, "{what}: bigG alone");
    }
}

#[test]
fn tokenizers_match_transformers() {
    let r = common::tensors(&dir());
    let rows = text_rows();
    for (what, ck) in layouts("tiny_sdxl") {
        for (tower, key) in [(0, "tokens.clip_l"), (1, "tokens.clip_g")] {
            let te = TextEncoder::build(&ck.clip[tower]).unwrap();
            for (row, text) in rows.iter().enumerate() {
                let chunks = te.chunks(text).unwrap();
                assert_eq!(chunks[0].ids, ids(&r[key], row), "{what} {key} row {row}");
            }
        }
    }
}

#[test]
fn text_encoders_match_transformers() {
    let r = common::tensors(&dir());
    for (what, ck) in layouts("tiny_sdxl") {
        let clip = TextEncoder::from_parts(&ck.clip).unwrap();
        for (row, text) in text_rows().iter().enumerate() {
            let cond = clip.encode(text).unwrap();
            let context = cond.context.unwrap().narrow(1, 0, 77).unwrap();
            let want = r["te.context"].narrow(0, row, 1).unwrap();
            let e = max_abs(&context, &want);
            assert!(e < 1e-4, "{what} row {row}: context {e}");
            let pooled = cond.pooled.unwrap();
            let e = max_abs(
                &pooled,
                &r["te.clip_g.text_embeds"].narrow(0, row, 1).unwrap(),
            );
            assert!(e < 1e-4, "{what} row {row}: pooled {e}");
        }
    }
    // The refiner's bigG alone.
    for (what, ck) in layouts("tiny_sdxl_refiner") {
        let clip = TextEncoder::from_parts(&ck.clip).unwrap();
        let cond = clip.encode(&text_rows()[0]).unwrap();
        let e = max_abs(
            cond.context.as_ref().unwrap(),
            &r["te.clip_g.penultimate"].narrow(0, 0, 1).unwrap(),
        );
        assert!(e < 1e-4, "{what}: refiner context {e}");
    }
}

/// The references' micro-conditioning as weft states it: item 0 takes the
/// defaults (the latent's size × 8, crop 0, score 6); item 1 states them.
fn sizes(refiner: bool) -> Vec<Option<SizeCond>> {
    let stated = SizeCond {
        original: Some((1024.0, 1024.0)),
        crop: (16.0, 32.0),
        target: (!refiner).then_some((64.0, 64.0)),
        aesthetic: refiner.then_some(2.5),
        negative: false,
    };
    vec![None, Some(stated)]
}

fn check_unet(name: &str, prefix: &str, refiner: bool) {
    let r = common::tensors(&dir());
    let cond = Conditioning {
        context: Some(r[&format!("{prefix}.context")].clone()),
        pooled: Some(r[&format!("{prefix}.text_embeds")].clone()),
        sizes: sizes(refiner),
        ..Default::default()
    };
    for (what, ck) in layouts(name) {
        let out = unet(&ck)
            .forward(&r["unet.sample"], &r["unet.timestep"], &cond)
            .unwrap();
        let e = max_abs(&out, &r[&format!("{prefix}.out")]);
        assert!(e < 1e-4, "{what}: {e}");
    }
}

#[test]
fn unets_match_diffusers() {
    check_unet("tiny_sdxl", "unet", false);
    check_unet("tiny_sdxl_refiner", "refiner", true);
}

/// A config.json with only the settings that differ from diffusers'
/// defaults builds the same UNet.
#[test]
fn minimal_unet_config_takes_diffusers_defaults() {
    let text = std::fs::read_to_string(dir().join("unet_sdxl_minimal/config.json")).unwrap();
    let minimal = weft_models::sd::config::unet_from_json(&text).unwrap();
    let ck = checkpoint::open(&dir().join("tiny_sdxl"), None).unwrap();
    let (full, tensors) = ck.unet.as_ref().unwrap();
    assert_eq!(minimal.config.blocks.len(), full.config.blocks.len());
    assert_eq!(minimal.added, full.added);
    assert_eq!(minimal.mid_depth, full.mid_depth);
    let r = common::tensors(&dir());
    let cond = Conditioning {
        context: Some(r["unet.context"].clone()),
        pooled: Some(r["unet.text_embeds"].clone()),
        sizes: sizes(false),
        ..Default::default()
    };
    let out = SdUNet::build(&minimal, tensors)
        .unwrap()
        .forward(&r["unet.sample"], &r["unet.timestep"], &cond)
        .unwrap();
    assert!(max_abs(&out, &r["unet.out"]) < 1e-4);
}

#[test]
fn controlnet_matches_diffusers() {
    let r = common::tensors(&dir());
    let net = ControlNet::load(&dir().join("controlnet_sdxl")).unwrap_or_else(|e| panic!("{e}"));
    let ck = checkpoint::open(&dir().join("tiny_sdxl"), None).unwrap();
    let base = unet(&ck);
    let ts = floats(&serde_json::to_value(r["unet.timestep"].to_vec1::<f32>().unwrap()).unwrap());
    let numbers = [
        vec![64.0, 64.0, 0.0, 0.0, 64.0, 64.0],
        vec![1024.0, 1024.0, 16.0, 32.0, 64.0, 64.0],
    ];
    let mut controlled = Vec::new();
    for (i, &t) in ts.iter().enumerate() {
        let item = |k: &str| r[k].narrow(0, i, 1).unwrap();
        let added = base
            .added_input(&item("unet.text_embeds"), &numbers[i..i + 1])
            .unwrap();
        let res = net
            .residuals(
                &item("unet.sample"),
                t,
                &item("unet.context"),
                Some(&added),
                &item("controlnet.cond"),
                1.0,
            )
            .unwrap();
        for (k, d) in res.down.iter().enumerate() {
            let want = r[&format!("controlnet.down.{k}")].narrow(0, i, 1).unwrap();
            let e = max_abs(d, &want);
            assert!(e < 1e-4, "item {i} down.{k}: {e}");
        }
        let e = max_abs(&res.mid, &r["controlnet.mid"].narrow(0, i, 1).unwrap());
        assert!(e < 1e-4, "item {i} mid: {e}");
        controlled.push(
            base.forward_controlled(
                &item("unet.sample"),
                t,
                &item("unet.context"),
                Some(&added),
                Some(&res),
            )
            .unwrap(),
        );
    }
    let e = max_abs(
        &Tensor::cat(&controlled, 0).unwrap(),
        &r["unet.out_controlled"],
    );
    assert!(e < 1e-4, "controlled UNet: {e}");
}

#[test]
fn vae_matches_diffusers() {
    let r = common::tensors(&dir());
    for (what, ck) in layouts("tiny_sdxl") {
        let (spec, tensors) = ck.vae.as_ref().unwrap();
        let vae = Vae::build(spec, tensors).unwrap();
        let (mean, logvar) = vae.posterior(&r["vae.image"]).unwrap();
        assert!(max_abs(&mean, &r["vae.mean"]) < 1e-4, "{what} mean");
        assert!(max_abs(&logvar, &r["vae.logvar"]) < 1e-4, "{what} logvar");
        // diffusers decodes latent / 0.13025; weft's VAE takes that directly.
        let unscaled = (&r["vae.latent"] / spec.scaling_factor).unwrap();
        let e = max_abs(&vae.decode_raw(&unscaled).unwrap(), &r["vae.decoded"]);
        assert!(e < 1e-4, "{what} decode {e}");
    }
}

/// One of the reference pipelines: its settings from reference.json.
struct Run {
    json: serde_json::Value,
    steps: Tensor,
}

impl Run {
    fn new(name: &str) -> Run {
        let r = common::tensors(&dir());
        Run {
            json: common::json(&dir())["pipelines"][name].clone(),
            steps: r[&format!("pipe.{name}.steps")].clone(),
        }
    }

    /// The σs this run stepped through (a window of the scheduler's list).
    fn sigmas(&self) -> Vec<f64> {
        let all = floats(&self.json["sigmas"]);
        let begin = self.json["begin_index"].as_u64().unwrap_or(0) as usize;
        let n = self.json["steps_run"].as_u64().unwrap() as usize;
        all[begin..=begin + n].to_vec()
    }

    fn last(&self) -> Tensor {
        let n = self.steps.dim(0).unwrap();
        self.steps.get(n - 1).unwrap()
    }

    fn check(&self, what: &str, out: &Tensor) {
        let want = self.last();
        let largest: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        let e = max_abs(out, &want) / largest.max(1.0);
        eprintln!("{what}: max error {e:e} (relative to the largest |latent| {largest})");
        assert!(e <= 1e-4, "{what}: {e}");
    }
}

/// The prompt and negative conditionings of a run, with `size` stated on
/// both when given.
fn prompts(clip: &TextEncoder, run: &Run, size: Option<SizeCond>) -> (Conditioning, Conditioning) {
    let with = |c: Conditioning| Conditioning {
        sizes: size.map(|s| vec![Some(s)]).unwrap_or_default(),
        ..c
    };
    let text = |k: &str| run.json[k].as_str().unwrap().to_string();
    (
        with(clip.encode(&text("prompt")).unwrap()),
        with(clip.encode(&text("negative_prompt")).unwrap()),
    )
}

fn start(run: &Run) -> Tensor {
    let r = common::tensors(&dir());
    (&r["pipe.latents"] * run.json["init_noise_sigma"].as_f64().unwrap()).unwrap()
}

#[test]
fn txt2img_pipelines_match_diffusers() {
    for (what, ck) in layouts("tiny_sdxl") {
        let clip = TextEncoder::from_parts(&ck.clip).unwrap();
        let model = model(&ck);
        // Plain CLIPTextEncode: sizes follow the latent (64×64 pixels).
        let run = Run::new("txt2img");
        let (pos, neg) = prompts(&clip, &run, None);
        let out = sample_cfg(
            model.clone(),
            pos,
            neg,
            5.0,
            &run.sigmas(),
            start(&run),
            "euler",
        );
        run.check(&format!("{what} txt2img"), &out);
        // CLIPTextEncodeSDXL's stated sizes.
        let run = Run::new("micro");
        let size = SizeCond {
            original: Some((1024.0, 1024.0)),
            crop: (16.0, 32.0),
            target: Some((64.0, 64.0)),
            ..SizeCond::default()
        };
        let (pos, neg) = prompts(&clip, &run, Some(size));
        let out = sample_cfg(
            model.clone(),
            pos,
            neg,
            5.0,
            &run.sigmas(),
            start(&run),
            "euler",
        );
        run.check(&format!("{what} micro-conditioning"), &out);
    }
}

/// diffusers' `denoising_end=0.8` → `denoising_start=0.8` hand-off:
/// KSamplerAdvanced's split of one σ list between base and refiner.
#[test]
fn base_to_refiner_matches_diffusers() {
    let base = checkpoint::open(&dir().join("tiny_sdxl"), None).unwrap();
    let refiner = checkpoint::open(&dir().join("tiny_sdxl_refiner"), None).unwrap();
    let run = Run::new("base_split");
    let clip = TextEncoder::from_parts(&base.clip).unwrap();
    let (pos, neg) = prompts(&clip, &run, None);
    let noisy = sample_cfg(
        model(&base),
        pos,
        neg,
        5.0,
        &run.sigmas(),
        start(&run),
        "euler",
    );
    run.check("base, steps 0–8 with leftover noise", &noisy);

    let run = Run::new("refiner_split");
    let clip = TextEncoder::from_parts(&refiner.clip).unwrap();
    // Scores 6 and 2.5: CLIPTextEncode's defaults on the refiner.
    let (pos, neg) = prompts(&clip, &run, None);
    let out = sample_cfg(
        model(&refiner),
        pos,
        neg,
        5.0,
        &run.sigmas(),
        noisy,
        "euler",
    );
    run.check("refiner, steps 8–10", &out);
}
