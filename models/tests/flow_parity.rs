//! SD3/SD3.5, Flux and T5 against diffusers/transformers on tiny
//! random-weight models of the real classes (`scripts/make_flow_fixtures.py`,
//! fixtures in `tests/fixtures/{t5,sd3,flux}/`): T5's tokenizer and encoder,
//! every transformer variant in both key layouts (original single files
//! opened with their folder as config: the tiny head widths are not the
//! released ones), the 16-channel VAEs and whole pipelines from fixed
//! latents.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::{floats, relative, sample_cfg, tensors};
use weft_models::dit_checkpoint::{self, DitFamily};
use weft_models::flux::{self, model::pack, model::unpack, FluxNetwork};
use weft_models::packed::WeightMode;
use weft_models::sd::checkpoint;
use weft_models::sd3::{self, Sd3Network};
use weft_models::t5::tower::{self as t5, T5Tower};
use weft_models::t5::T5Tokenizer;
use weft_models::vae::Vae;
use weft_sampling::{Conditioning, Network};

fn fixtures(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn t5_tokenizer_matches_transformers_on_every_prompt() {
    let text = std::fs::read_to_string(fixtures("t5/tokens.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tok = T5Tokenizer::open(&repo().join("assets/t5/tokenizer.json"), 1).unwrap();
    let prompts = json["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 10);
    for p in prompts {
        let want: Vec<u32> = p["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.ids(p["text"].as_str().unwrap()).unwrap();
        assert_eq!(got, want, "prompt {}", p["name"]);
    }
}

#[test]
fn t5_weighting_and_padding_follow_comfyui() {
    let tok = T5Tokenizer::open(&repo().join("assets/t5/tokenizer.json"), 8).unwrap();
    let plain = tok.tokenize("a horse").unwrap();
    let ids = tok.ids("a horse").unwrap();
    assert_eq!(plain.ids.len(), 8, "padded to the minimum length");
    assert_eq!(plain.ids[..ids.len()], ids[..], "the prompt, then `</s>`");
    assert!(
        plain.ids[ids.len()..].iter().all(|&i| i == 0),
        "then `<pad>`"
    );
    let weighted = tok.tokenize("a (horse:1.5)").unwrap();
    assert_eq!(weighted.ids, plain.ids, "weights do not change the tokens");
    assert!(weighted.weights.contains(&1.5) && weighted.weights[0] == 1.0);
    // Long prompts are never truncated.
    let long = vec!["horse"; 300].join(" ");
    assert!(tok.tokenize(&long).unwrap().ids.len() > 300);
}

#[test]
fn t5_encoder_matches_transformers() {
    let dir = fixtures("t5");
    let r = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let parts = t5::open(&dir.join("model.safetensors")).unwrap();
    let folder = t5::open(&dir).unwrap();
    assert_eq!(
        parts.config, folder.config,
        "shapes give the folder's config"
    );
    let tower = T5Tower::build(&parts, 1, WeightMode::Stored).unwrap();
    let ids = r["padded.input_ids"].to_dtype(DType::U32).unwrap();
    let mask = &r["padded.attention_mask"];
    let unmasked = tower.model.encode(&ids, None).unwrap();
    let masked = tower.model.encode(&ids, Some(mask)).unwrap();
    let long = tower
        .model
        .encode(&r["long.input_ids"].to_dtype(DType::U32).unwrap(), None)
        .unwrap();
    let d1 = relative(&unmasked, &r["padded.hidden_unmasked"]);
    // Masked padding rows are garbage in both; compare the real tokens.
    let keep = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let d2 = relative(
        &masked.broadcast_mul(&keep).unwrap(),
        &r["padded.hidden_masked"].broadcast_mul(&keep).unwrap(),
    );
    let d3 = relative(&long, &r["long.hidden"]);
    assert!(d1 < 1e-4 && d2 < 1e-4 && d3 < 1e-4, "{d1} {d2} {d3}");
}

const SD3_VARIANTS: [&str; 3] = ["sd3_medium", "sd35_large", "sd35_medium"];

/// A transformer variant in both layouts.
fn sd3_layouts(variant: &str) -> Vec<(String, Sd3Network)> {
    let dir = fixtures("sd3");
    let folder = dir.join(variant);
    let file = dir.join(format!("{variant}_original.safetensors"));
    let mut out = Vec::new();
    for (label, path, config) in [
        ("folder", folder.clone(), None),
        ("original", file, Some(folder.as_path())),
    ] {
        let (cfg, map) = sd3::open_transformer(&path, config).unwrap_or_else(|e| panic!("{e}"));
        out.push((
            format!("{variant} {label}"),
            Sd3Network::build(&cfg, &map, WeightMode::Stored).unwrap(),
        ));
    }
    out
}

fn text(context: &Tensor, pooled: &Tensor) -> Conditioning {
    Conditioning {
        context: Some(context.clone()),
        pooled: Some(pooled.clone()),
        ..Default::default()
    }
}

#[test]
fn sd3_transformers_match_diffusers_in_both_layouts() {
    let r = tensors(&fixtures("sd3"));
    let cond = text(
        &r["inputs.encoder_hidden_states"],
        &r["inputs.pooled_projections"],
    );
    for variant in SD3_VARIANTS {
        for (label, mut net) in sd3_layouts(variant) {
            let out = net
                .forward(&r["inputs.hidden_states"], &r["inputs.timestep"], &cond)
                .unwrap();
            let d = relative(&out, &r[&format!("{variant}.out")]);
            assert!(d < 1e-4, "{label}: {d}");
            net.skip = vec![1];
            let out = net
                .forward(&r["inputs.hidden_states"], &r["inputs.timestep"], &cond)
                .unwrap();
            let d = relative(&out, &r[&format!("{variant}.out_skip_layer_1")]);
            assert!(d < 1e-4, "{label} skipping block 1: {d}");
        }
    }
}

#[test]
fn sd3_config_is_read_from_an_original_files_shapes() {
    // SD3.5's q/k norms give the head width; the rest is in the shapes.
    let dir = fixtures("sd3");
    for variant in ["sd35_large", "sd35_medium"] {
        let file = dir.join(format!("{variant}_original.safetensors"));
        let (from_shapes, _) = sd3::open_transformer(&file, None).unwrap();
        let (from_folder, _) = sd3::open_transformer(&dir.join(variant), None).unwrap();
        assert_eq!(
            from_shapes.inner_dim(),
            from_folder.inner_dim(),
            "{variant}"
        );
        assert_eq!(from_shapes.num_layers, from_folder.num_layers);
        assert_eq!(
            from_shapes.dual_attention_layers,
            from_folder.dual_attention_layers
        );
        assert_eq!(from_shapes.qk_norm, from_folder.qk_norm);
        assert_eq!(
            from_shapes.pos_embed_max_size,
            from_folder.pos_embed_max_size
        );
    }
    assert_eq!(
        dit_checkpoint::family_of(&dir.join("sd3_medium_original.safetensors")),
        Some(DitFamily::Sd3)
    );
    assert_eq!(
        dit_checkpoint::family_of(&dir.join("pipeline")),
        Some(DitFamily::Sd3)
    );
}

/// Whole pipelines from fixed latents with diffusers' text states and σs
/// (the text encoders are checked on their own).
#[test]
fn sd3_pipelines_match_diffusers() {
    let dir = fixtures("sd3");
    let r = tensors(&dir);
    let json = common::json(&dir);
    for variant in SD3_VARIANTS {
        let sigmas = floats(&json["pipelines"]["runs"][variant]["sigmas"]);
        let (_, net) = sd3_layouts(variant).remove(0);
        let model = Arc::new(net.into_model());
        let out = sample_cfg(
            model,
            text(&r["pipe.prompt_embeds"], &r["pipe.pooled_prompt_embeds"]),
            text(
                &r["pipe.negative_prompt_embeds"],
                &r["pipe.negative_pooled_prompt_embeds"],
            ),
            5.0,
            &sigmas,
            r["pipe.latents_in"].clone(),
            "euler",
        );
        let d = relative(&out, &r[&format!("pipe.{variant}.latents_out")]);
        assert!(d < 1e-4, "{variant}: {d}");
    }
}

/// SD3's text encoders from the pipeline folder, with diffusers' T5
/// length (256; ComfyUI pads to 77): CLIP-L and bigG states side by side,
/// zero-padded, then T5's; bigG's projected pooled output.
#[test]
fn sd3_text_encoders_match_diffusers() {
    let dir = fixtures("sd3");
    let r = tensors(&dir);
    let parts = dit_checkpoint::companions(DitFamily::Sd3, &dir.join("pipeline")).unwrap();
    let clip = parts.clip.unwrap().with_t5_min_length(256);
    let cond = clip
        .encode("a photograph of an astronaut riding a horse")
        .unwrap();
    let context = cond.context.unwrap();
    let want = &r["pipe.prompt_embeds"];
    assert_eq!(context.dims(), want.dims());
    let d = relative(&context, want);
    assert!(d < 1e-4, "states: {d}");
    // bigG's part of the pooled output (ComfyUI takes CLIP-L's unprojected,
    // diffusers projected; the released CLIP-L's projection is the identity).
    let pooled = cond.pooled.unwrap();
    let g = |t: &Tensor| t.narrow(1, 16, 24).unwrap();
    assert!(relative(&g(&pooled), &g(&r["pipe.pooled_prompt_embeds"])) < 1e-4);
}

fn flux_layouts(variant: &str) -> Vec<(String, FluxNetwork)> {
    let dir = fixtures("flux");
    let folder = dir.join(variant);
    let file = dir.join(format!("{variant}_original.safetensors"));
    [
        ("folder", folder.clone(), None),
        ("original", file, Some(folder.as_path())),
    ]
    .into_iter()
    .map(|(label, path, config)| {
        let (cfg, map) = flux::open_transformer(&path, config).unwrap_or_else(|e| panic!("{e}"));
        (
            format!("{variant} {label}"),
            FluxNetwork::build(&cfg, &map, WeightMode::Stored).unwrap(),
        )
    })
    .collect()
}

#[test]
fn flux_transformers_match_diffusers_in_both_layouts() {
    let r = tensors(&fixtures("flux"));
    let x = unpack(&r["inputs.hidden_states"], 2, 16, 4, 6).unwrap();
    let t = (&r["inputs.timestep"] * 1000.0).unwrap();
    let guidance: Vec<f32> = r["inputs.guidance"].to_vec1().unwrap();
    for variant in ["dev", "schnell"] {
        for (label, net) in flux_layouts(variant) {
            let cond = Conditioning {
                guidance: guidance.iter().map(|&g| Some(g as f64)).collect(),
                ..text(
                    &r["inputs.encoder_hidden_states"],
                    &r["inputs.pooled_projections"],
                )
            };
            let out = pack(&net.forward(&x, &t, &cond).unwrap()).unwrap();
            let d = relative(&out, &r[&format!("{variant}.out")]);
            assert!(d < 1e-4, "{label}: {d}");
        }
    }
}

#[test]
fn flux_pipelines_match_diffusers() {
    let dir = fixtures("flux");
    let r = tensors(&dir);
    let json = common::json(&dir);
    for variant in ["dev", "schnell"] {
        let sigmas = floats(&json["pipelines"]["runs"][variant]["sigmas"]);
        let (_, net) = flux_layouts(variant).remove(0);
        let model = Arc::new(net.into_model());
        let cond = Conditioning {
            guidance: vec![Some(3.5)],
            ..text(&r["pipe.prompt_embeds"], &r["pipe.pooled_prompt_embeds"])
        };
        // No classifier-free guidance: a scale of 1 is the positive alone.
        let out = sample_cfg(
            model,
            cond.clone(),
            cond,
            1.0,
            &sigmas,
            r["pipe.latents_in"].clone(),
            "euler",
        );
        let d = relative(&out, &r[&format!("pipe.{variant}.latents_out")]);
        assert!(d < 1e-4, "{variant}: {d}");
    }
}

/// Flux's text encoders from the pipeline folder at diffusers' T5 length
/// (512; ComfyUI pads to 256): T5's states, CLIP-L's pooled output.
#[test]
fn flux_text_encoders_match_diffusers() {
    let dir = fixtures("flux");
    let r = tensors(&dir);
    let parts = dit_checkpoint::companions(DitFamily::Flux, &dir.join("pipeline")).unwrap();
    let clip = parts.clip.unwrap().with_t5_min_length(512);
    let cond = clip
        .encode("a photograph of an astronaut riding a horse")
        .unwrap();
    assert!(relative(&cond.context.unwrap(), &r["pipe.prompt_embeds"]) < 1e-4);
    assert!(relative(&cond.pooled.unwrap(), &r["pipe.pooled_prompt_embeds"]) < 1e-4);
}

fn vae(dir: &Path) -> Vae {
    let (spec, map) = checkpoint::open_vae(dir).unwrap();
    Vae::build(&spec, &map).unwrap()
}

#[test]
fn sixteen_channel_vaes_match_diffusers() {
    for (family, scale, shift) in [("sd3", 1.5305, 0.0609), ("flux", 0.3611, 0.1159)] {
        let dir = fixtures(family);
        let r = tensors(&dir);
        let vae = vae(&dir.join("vae"));
        let z = r["vae.latent"].affine(1.0 / scale, shift).unwrap();
        let d = relative(&vae.decode_raw(&z).unwrap(), &r["vae.decoded"]);
        assert!(d < 1e-4, "{family} decode: {d}");
        let pixels = r["vae.decoded"].clamp(-1f32, 1f32).unwrap();
        let (mean, _) = vae.posterior(&pixels).unwrap();
        let d = relative(&mean, &r["vae.encoded_mean"]);
        assert!(d < 1e-4, "{family} encode: {d}");
    }
}

/// Skip-layer guidance through CFG: at scale 1 the result is the
/// conditional velocity moved away from diffusers' output with block 1
/// skipped, v + s·(v − v_skip), as ComfyUI's post-CFG function does.
#[test]
fn skip_layer_guidance_moves_away_from_the_skipped_prediction() {
    use weft_sampling::guidance::Cfg;
    use weft_sampling::{Denoiser, SkipLayerGuidance};
    let r = tensors(&fixtures("sd3"));
    let (_, net) = sd3_layouts("sd35_medium").remove(0);
    let skipped = net.without_blocks(&[1]).unwrap();
    let mut model = net.into_model();
    let scale = 2.8;
    model.skip_layer_guidance = Some(SkipLayerGuidance {
        skipped,
        scale,
        sigmas: (0.0, 1.0),
    });
    let item = |name: &str| r[name].narrow(0, 0, 1).unwrap();
    let positive = text(
        &item("inputs.encoder_hidden_states"),
        &item("inputs.pooled_projections"),
    );
    let cfg = Cfg {
        model: Arc::new(model),
        negative: positive.clone(),
        positive,
        scale: 1.0,
        rescale: 0.0,
        norm_rescale: false,
        interval: None,
    };
    let sigma = f64::from(r["inputs.timestep"].to_vec1::<f32>().unwrap()[0]) / 1000.0;
    let x = item("inputs.hidden_states");
    let got = cfg.denoise(&x, sigma).unwrap();
    let (v, v_skip) = (
        item("sd35_medium.out"),
        item("sd35_medium.out_skip_layer_1"),
    );
    let v_guided = (&v + ((&v - &v_skip).unwrap() * scale).unwrap()).unwrap();
    let want = (&x - (v_guided * sigma).unwrap()).unwrap();
    let d = relative(&got, &want);
    assert!(d < 1e-4, "{d}");
    assert!(
        relative(&got, &(&x - (v * sigma).unwrap()).unwrap()) > 1e-3,
        "guidance did something"
    );
}

/// Flux Fill's input layout: the latent, the masked image's latent and the
/// mask folded 8×8 into 64 channels, packed as diffusers' FluxFillPipeline
/// packs them (`scripts/make_flux_fill_fixtures.py`), from weft's
/// conditioning (`concat_latent`, `concat_mask` at pixel size).
#[test]
fn flux_fill_takes_the_masked_image_and_mask_as_diffusers_lays_them_out() {
    let dir = fixtures("flux_fill");
    let r =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let (cfg, map) = flux::open_transformer(&dir, None).unwrap();
    assert_eq!((cfg.input_channels(), cfg.latent_channels()), (96, 16));
    let net = FluxNetwork::build(&cfg, &map, WeightMode::Stored).unwrap();
    let t = (&r["inputs.timestep"] * 1000.0).unwrap();
    let guidance: Vec<f32> = r["inputs.guidance"].to_vec1().unwrap();
    let mut cond = Conditioning {
        context: Some(r["inputs.encoder_hidden_states"].clone()),
        pooled: Some(r["inputs.pooled_projections"].clone()),
        guidance: guidance.iter().map(|&g| Some(g as f64)).collect(),
        concat_latent: Some(r["inputs.masked_image_latents"].clone()),
        concat_mask: Some(r["inputs.mask"].clone()),
        ..Default::default()
    };
    let out = net.forward(&r["inputs.latents"], &t, &cond).unwrap();
    let d = relative(&out, &r["expected.velocity"]);
    assert!(d < 1e-4, "Flux Fill: {d}");
    // Without its image the model says what it needs.
    cond.concat_latent = None;
    let err = net
        .forward(&r["inputs.latents"], &t, &cond)
        .unwrap_err()
        .to_string();
    assert!(err.contains("InpaintModelConditioning"), "{err}");
}
