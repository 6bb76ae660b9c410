//! Stable Diffusion components against diffusers/transformers on tiny
//! random-weight models of the real architectures
//! (`scripts/make_sd_fixtures.py`, fixtures in `tests/fixtures/sd/`).
//! The weights are stored as f16 and the references were computed in f32
//! from exactly those weights, so the tolerances measure our arithmetic.

mod common;

use common::{floats, ids, sample_cfg};
use weft_kernels::testing::max_diff as max_abs;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor};
use weft_models::clip::TextEncoder;
use weft_models::sd::checkpoint::{self, Checkpoint};
use weft_models::sd::unet::SdUNet;
use weft_models::vae::Vae;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn reference() -> HashMap<String, Tensor> {
    common::tensors(&dir())
}

fn open(name: &str, config: Option<&str>) -> Checkpoint {
    let config = config.map(|c| dir().join(c));
    checkpoint::open(&dir().join(name), config.as_deref()).unwrap()
}

#[test]
fn tokenizer_matches_transformers() {
    let r = reference();
    let ck = open("tiny_sd15", None);
    let clip = TextEncoder::build(ck.clip.first().unwrap()).unwrap();
    let prompt = "a photograph of an astronaut riding a horse";
    assert_eq!(
        clip.chunks(prompt).unwrap()[0].ids,
        ids(&r["tokens.ids"], 0)
    );
    assert_eq!(clip.chunks("").unwrap()[0].ids, ids(&r["tokens.ids"], 1));

    let sd2_file = open("tiny_sd2v.safetensors", Some("tiny_sd2v"));
    let sd2 = TextEncoder::build(sd2_file.clip.first().unwrap()).unwrap();
    assert_eq!(
        sd2.chunks(prompt).unwrap()[0].ids,
        ids(&r["tokens.ids_sd2"], 0)
    );
    assert_eq!(sd2.chunks("").unwrap()[0].ids, ids(&r["tokens.ids_sd2"], 1));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap())
            .unwrap();
    // Escaped, so the parentheses are text rather than weighting.
    let long = json["long_prompt"]
        .as_str()
        .unwrap()
        .replace('(', "\\(")
        .replace(')', "\\)");
    let want: Vec<u32> = r["tokens.long_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let got: Vec<u32> = clip
        .chunks(&long)
        .unwrap()
        .iter()
        .flat_map(|c| {
            c.ids[1..]
                .iter()
                .copied()
                .take_while(|&t| t != 49407)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn text_encoders_match_transformers() {
    let r = reference();
    for (name, config) in [
        ("tiny_sd15", None),
        ("tiny_sd15.safetensors", Some("tiny_sd15")),
    ] {
        let ck = open(name, config);
        let parts = ck.clip.first().unwrap();
        let model = parts
            .tensors
            .build("clip", |vb| {
                weft_models::clip::ClipText::new(&parts.config, false, vb)
            })
            .unwrap();
        let t = r["tokens.ids"].to_dtype(DType::U32).unwrap();
        let n = parts.config.num_hidden_layers;
        let last = model.encode(&t, n, 49407, true).unwrap();
        assert!(
            max_abs(&last.hidden, &r["clip.last_hidden"]) < 1e-4,
            "{name}"
        );
        assert!(max_abs(&last.pooled, &r["clip.pooled"]) < 1e-4, "{name}");
        let skip = model.encode(&t, n - 1, 49407, true).unwrap();
        assert!(
            max_abs(&skip.hidden, &r["clip.penultimate"]) < 1e-4,
            "{name}"
        );
    }
    // SD 2.x: the diffusers encoder's last layer, and the single file's full
    // OpenCLIP tower at its default (penultimate) layer, give the same states.
    let t = r["tokens.ids_sd2"].to_dtype(DType::U32).unwrap();
    for (name, config) in [
        ("tiny_sd2v", None),
        ("tiny_sd2v.safetensors", Some("tiny_sd2v")),
    ] {
        let ck = open(name, config);
        let parts = ck.clip.first().unwrap();
        let projection = parts.tensors.contains("text_projection.weight");
        assert_eq!(projection, name.ends_with(".safetensors"));
        let build = |config: &weft_models::clip::ClipConfig| {
            parts
                .tensors
                .build("clip", |vb| {
                    weft_models::clip::ClipText::new(config, projection, vb)
                })
                .unwrap()
        };
        let out = build(&parts.config)
            .encode(&t, parts.layer, 49407, parts.final_norm)
            .unwrap();
        let e = max_abs(&out.hidden, &r["clip_sd2.hidden"]);
        assert!(e < 1e-4, "{name}: {e}");
        if projection {
            // transformers' pooled output comes from the converted tower's
            // last layer (the file's penultimate): truncate to compare.
            let mut short = parts.config.clone();
            short.num_hidden_layers -= 1;
            let out = build(&short)
                .encode(&t, short.num_hidden_layers, 49407, true)
                .unwrap();
            let e = max_abs(out.projected.as_ref().unwrap(), &r["clip_sd2.text_embeds"]);
            assert!(e < 1e-4, "{name}: projected {e}");
        }
    }
}

#[test]
fn unets_match_diffusers() {
    let r = reference();
    let (x, ctx) = (&r["unet.sample"], &r["unet.context"]);
    let ts: Vec<f32> = r["unet.timestep"].to_vec1().unwrap();
    for (name, config, key) in [
        ("tiny_sd15", None, "unet.out"),
        ("tiny_sd15.safetensors", Some("tiny_sd15"), "unet.out"),
        ("tiny_sd2v", None, "unet_sd2.out"),
        ("tiny_sd2v.safetensors", Some("tiny_sd2v"), "unet_sd2.out"),
    ] {
        let ck = open(name, config);
        let (spec, tensors) = ck.unet.as_ref().unwrap();
        let unet = SdUNet::build(spec, tensors).unwrap();
        let outs: Vec<Tensor> = (0..2)
            .map(|i| {
                unet.forward_at(
                    &x.narrow(0, i, 1).unwrap(),
                    ts[i] as f64,
                    &ctx.narrow(0, i, 1).unwrap(),
                )
                .unwrap()
            })
            .collect();
        let out = Tensor::cat(&outs, 0).unwrap();
        let e = max_abs(&out, &r[key]);
        assert!(e < 1e-4, "{name}: max error {e}");
    }
}

#[test]
fn vaes_match_diffusers() {
    let r = reference();
    for (name, config) in [
        ("tiny_sd15", None),
        ("tiny_sd15.safetensors", Some("tiny_sd15")),
    ] {
        let ck = open(name, config);
        let (spec, tensors) = ck.vae.as_ref().unwrap();
        let vae = Vae::build(spec, tensors).unwrap();
        let (mean, logvar) = vae.posterior(&r["vae.image"]).unwrap();
        assert!(max_abs(&mean, &r["vae.mean"]) < 1e-4, "{name} mean");
        assert!(max_abs(&logvar, &r["vae.logvar"]) < 1e-4, "{name} logvar");
        // diffusers' decode takes unscaled latents, as weft's VAE.
        let unscaled = &r["vae.latent"];
        let e = max_abs(&vae.decode_raw(unscaled).unwrap(), &r["vae.decoded"]);
        assert!(e < 1e-4, "{name} decode {e}");
    }
}

fn pipeline_json(name: &str) -> serde_json::Value {
    common::json(&dir())["pipelines"][name].clone()
}

/// diffusers' StableDiffusionPipeline (CFG 7.5, 10 steps, fixed latents)
/// against weft's model, CFG guider and samplers on diffusers' σ lists:
/// the final latents (up to ±64 with random weights) agree to 1e-4.
#[test]
fn pipelines_match_diffusers() {
    use std::sync::Arc;

    let r = reference();
    let prompt = "a photograph of an astronaut riding a horse";
    let cases = [
        ("tiny_sd15.safetensors", "pipeline.euler", "euler"),
        ("tiny_sd15.safetensors", "pipeline.dpmpp_2m", "dpmpp_2m"),
        ("tiny_sd15.safetensors", "pipeline.ddim", "ddim"),
        ("tiny_sd2v.safetensors", "pipeline_sd2v.euler", "euler"),
    ];
    for (file, key, sampler) in cases {
        let config = file.trim_end_matches(".safetensors");
        let ck = open(file, Some(config));
        let (spec, tensors) = ck.unet.as_ref().unwrap();
        let model = Arc::new(
            weft_models::sd::network::sampling_model(&ck, SdUNet::build(spec, tensors).unwrap())
                .unwrap(),
        );
        let clip = TextEncoder::build(ck.clip.first().unwrap()).unwrap();
        let (positive, negative) = (clip.encode(prompt).unwrap(), clip.encode("").unwrap());
        let embeds = key
            .replace(".euler", "")
            .replace(".dpmpp_2m", "")
            .replace(".ddim", "")
            + ".prompt_embeds";
        let both = Tensor::cat(
            &[
                negative.context.as_ref().unwrap(),
                positive.context.as_ref().unwrap(),
            ],
            0,
        )
        .unwrap();
        assert!(
            max_abs(&both, &r[&embeds]) < 1e-4,
            "{key}: prompt embeddings"
        );

        let p = pipeline_json(key);
        let sigmas = match p.get("sigmas") {
            Some(s) if !s.is_null() => floats(s),
            // DDIM: σ at its timesteps, ending at the σ of ᾱ_0 (set_alpha_to_one false).
            _ => {
                let table = model.sampling.clone();
                let mut s: Vec<f64> = floats(&p["timesteps"])
                    .iter()
                    .map(|&t| table.sigma_at(t))
                    .collect();
                s.push(table.sigma_at(0.0));
                s
            }
        };
        // diffusers starts from latents·init_noise_sigma in its own space;
        // weft's samplers work on x = latent·√(1+σ²) for VP schedulers.
        let init = p["init_noise_sigma"].as_f64().unwrap();
        let vp = init == 1.0;
        let s0 = sigmas[0];
        let x = if vp {
            (&r["pipeline.latents"] * (1.0 + s0 * s0).sqrt()).unwrap()
        } else {
            (&r["pipeline.latents"] * init).unwrap()
        };
        let out = sample_cfg(model.clone(), positive, negative, 7.5, &sigmas, x, sampler);
        let last = *sigmas.last().unwrap();
        let out = (out / (1.0 + last * last).sqrt()).unwrap();
        let e = max_abs(&out, &r[key]);
        eprintln!("{key}: max abs error {e:e}");
        assert!(e <= 1e-4, "{key}: max error {e}");
        if key == "pipeline.euler" {
            let (vspec, vtensors) = ck.vae.as_ref().unwrap();
            let vae = Vae::build(vspec, vtensors).unwrap();
            // The pipeline's latents are in the UNet's scale.
            let unscaled = (&out / vspec.scaling_factor).unwrap();
            let e = max_abs(
                &vae.decode_raw(&unscaled).unwrap(),
                &r["pipeline.euler_image_raw"],
            );
            assert!(e <= 1e-4, "decoded image: max error {e}");
        }
    }
}
