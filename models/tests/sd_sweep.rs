//! Stable Diffusion components against diffusers / transformers at the
//! libraries' *default* settings (`scripts/make_sd_sweep_fixtures.py`,
//! fixtures and their README in `tests/fixtures/sd_sweep/`): 32 GroupNorm
//! groups (1 and 3 channels per group), `attention_head_dim` read as a head
//! count, the default block types, configs that leave settings out, and the
//! key layout transformers 5 writes. One test per sweep point, so a failure
//! names the point.
//!
//! Every component is loaded the way the nodes load it (`open_unet` for
//! UNETLoader, `open_vae` for VAELoader, `open_clip` for CLIPLoader, `open`
//! for CheckpointLoader on a diffusers folder). Weights are stored as f16
//! and the references were computed in f32 from exactly those weights, so
//! the tolerance measures our arithmetic: 1e-4 of the reference's largest
//! magnitude (at least 1e-4); the errors seen are about 1e-6 relative, a
//! wrong setting gives errors of order 1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tempfile::TempDir;
use weft_kernels::testing::max_diff;
use weft_models::clip::{Activation, ClipText, TextEncoder};
use weft_models::sd::checkpoint::{self, ClipParts};
use weft_models::sd::config;
use weft_models::sd::unet::SdUNet;
use weft_models::vae::Vae;

/// The fixtures' end-of-text id (their vocabulary has 1000 tokens).
const EOS: u32 = 999;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_sweep")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn info() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap()
}

fn largest(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

/// Asserts `got` is within 1e-4 × max(1, max |want|) of `want`.
fn check(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let scale = largest(want).max(1.0);
    let tolerance = 1e-4 * scale;
    let e = max_diff(got, want);
    eprintln!("{what}: max abs error {e:.2e} (tolerance {tolerance:.2e})");
    assert!(
        e <= tolerance,
        "{what}: max abs error {e:e} exceeds {tolerance:e} (1e-4 × {scale})"
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

// ---------------------------------------------------------------------------
// UNets

/// A diffusers model folder holding only `unet/`, as the README says to
/// assemble it: the point's `config.json` and its weight set (for
/// `groups32_linear` with `proj_in`/`proj_out` squeezed to `[C, C]`).
fn unet_folder(point: &str) -> TempDir {
    let meta = &info()["unets"][point];
    let tmp = tempfile::tempdir().unwrap();
    let unet = tmp.path().join("unet");
    copy(
        &dir().join(format!("unet_{point}/config.json")),
        &unet.join("config.json"),
    );
    let weights = dir().join(meta["weights"].as_str().unwrap());
    let target = unet.join("diffusion_pytorch_model.safetensors");
    match meta["weights_transform"].as_str() {
        None => copy(&weights, &target),
        Some("squeeze_projections") => {
            let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
            for (key, t) in tensors.iter_mut() {
                if key.ends_with("proj_in.weight") || key.ends_with("proj_out.weight") {
                    let (o, i, _, _) = t.dims4().unwrap();
                    *t = t.reshape((o, i)).unwrap();
                }
            }
            candle_core::safetensors::save(&tensors, &target).unwrap();
        }
        Some(other) => panic!("{point}: unknown weights transform {other}"),
    }
    tmp
}

/// The point's UNet, loaded as UNETLoader loads the `unet/` folder and as
/// CheckpointLoader loads the model folder, against diffusers on both
/// latents (each batch item at its own timestep).
fn check_unet(point: &str) {
    let r = reference();
    let tmp = unet_folder(point);
    let ts: Vec<f32> = r["unet.timestep"].to_vec1().unwrap();
    let context = &r["unet.context"];
    for path in [tmp.path().join("unet"), tmp.path().to_path_buf()] {
        let ck = checkpoint::open_unet(&path, None).unwrap_or_else(|e| panic!("{point}: {e}"));
        let (spec, tensors) = ck.unet.as_ref().unwrap();
        let unet = SdUNet::build(spec, tensors).unwrap_or_else(|e| panic!("{point}: {e}"));
        for (input, output) in [("latent", "sample"), ("latent16", "sample16")] {
            let x = &r[&format!("unet.{input}")];
            let outs: Vec<Tensor> = (0..ts.len())
                .map(|i| {
                    unet.forward_at(
                        &x.narrow(0, i, 1).unwrap(),
                        ts[i] as f64,
                        &context.narrow(0, i, 1).unwrap(),
                    )
                    .unwrap()
                })
                .collect();
            let out = Tensor::cat(&outs, 0).unwrap();
            let what = format!("{point} ({}) {output}", path.display());
            check(&what, &out, &r[&format!("unet_{point}.{output}")]);
        }
    }
}

/// The reported bug: SD 1.5's architecture at the default 32 groups.
#[test]
fn unet_groups32_2lvl() {
    check_unet("groups32_2lvl");
}

#[test]
fn unet_groups16_2lvl() {
    check_unet("groups16_2lvl");
}

#[test]
fn unet_heads_2_8_2lvl() {
    check_unet("heads_2_8_2lvl");
}

#[test]
fn unet_groups32_linear() {
    check_unet("groups32_linear");
}

#[test]
fn unet_default_4lvl() {
    check_unet("default_4lvl");
}

/// A config.json with only `block_out_channels` and `cross_attention_dim`.
#[test]
fn unet_default_4lvl_minimal_config() {
    check_unet("default_4lvl_minimal_config");
    let read = |point: &str| {
        let path = dir().join(format!("unet_{point}/config.json"));
        config::unet_from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    assert_eq!(
        format!("{:?}", read("default_4lvl_minimal_config")),
        format!("{:?}", read("default_4lvl")),
        "the defaults differ from the fully written config"
    );
}

/// The points share weights, so they only test their setting if their
/// outputs differ by far more than the tolerance.
#[test]
fn unet_points_differ() {
    let r = reference();
    for (a, b) in [
        ("groups32_2lvl", "groups16_2lvl"),
        ("groups32_2lvl", "heads_2_8_2lvl"),
        ("heads_2_8_2lvl", "groups32_linear"),
    ] {
        let (a, b) = (
            &r[&format!("unet_{a}.sample")],
            &r[&format!("unet_{b}.sample")],
        );
        assert!(max_diff(a, b) > 100.0 * 1e-4 * largest(a).max(1.0));
    }
}

// ---------------------------------------------------------------------------
// VAE

/// The VAE as VAELoader loads its folder, as CheckpointLoader loads a model
/// folder holding it, and with a config.json stating only its levels.
#[test]
fn vae_default() {
    let r = reference();
    let folder = dir().join("vae_default");
    let weights = folder.join("diffusion_pytorch_model.safetensors");
    let model = tempfile::tempdir().unwrap();
    copy(
        &folder.join("config.json"),
        &model.path().join("vae/config.json"),
    );
    copy(
        &weights,
        &model.path().join("vae/diffusion_pytorch_model.safetensors"),
    );
    let minimal = tempfile::tempdir().unwrap();
    std::fs::write(
        minimal.path().join("config.json"),
        r#"{"block_out_channels": [32, 32],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#,
    )
    .unwrap();
    copy(
        &weights,
        &minimal.path().join("diffusion_pytorch_model.safetensors"),
    );
    let sources = [
        ("vae/ folder", checkpoint::open_vae(&folder)),
        (
            "model folder",
            checkpoint::open(model.path(), None).map(|ck| ck.vae.unwrap()),
        ),
        ("minimal config", checkpoint::open_vae(minimal.path())),
    ];
    for (what, source) in sources {
        let (spec, tensors) = source.unwrap_or_else(|e| panic!("{what}: {e}"));
        let vae = Vae::build(&spec, &tensors).unwrap_or_else(|e| panic!("{what}: {e}"));
        let (mean, logvar) = vae.posterior(&r["vae_default.image"]).unwrap();
        check(&format!("{what} mean"), &mean, &r["vae_default.mean"]);
        check(&format!("{what} logvar"), &logvar, &r["vae_default.logvar"]);
        // diffusers decoded the unscaled mean, as weft's VAE takes it.
        let decoded = vae.decode_raw(&r["vae_default.mean"]).unwrap();
        check(
            &format!("{what} decode"),
            &decoded,
            &r["vae_default.decoded"],
        );
    }
}

// ---------------------------------------------------------------------------
// CLIP text encoders

/// Writes `folder`'s config.json and weights (keys renamed by `rename`) as
/// `text_encoder/` of a diffusers model folder.
fn text_encoder_copy(folder: &Path, rename: impl Fn(&str) -> String) -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let te = tmp.path().join("text_encoder");
    copy(&folder.join("config.json"), &te.join("config.json"));
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(folder.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (rename(&k), v))
            .collect();
    candle_core::safetensors::save(&tensors, te.join("model.safetensors")).unwrap();
    tmp
}

/// transformers 4's key layout: `CLIPTextModel`'s tower under `text_model.`
/// (transformers 5 writes it bare); `text_projection.` stays top-level.
fn transformers4_key(key: &str) -> String {
    if key.starts_with("text_model.") || key.starts_with("text_projection.") {
        key.to_string()
    } else {
        format!("text_model.{key}")
    }
}

/// A transformers text-encoder folder (`…/text_encoder` of `model`) through
/// every loader: CLIPLoader on the folder and on its weights file alone
/// (which carries no config, so the folder's is used), and CheckpointLoader
/// on the model folder.
fn clip_sources(model: &Path) -> Vec<(String, Result<ClipParts, String>)> {
    let folder = model.join("text_encoder");
    let folder_config =
        config::clip_from_json(&std::fs::read_to_string(folder.join("config.json")).unwrap())
            .unwrap();
    let file =
        checkpoint::open_clip(&folder.join("model.safetensors")).map(|mut parts| ClipParts {
            config: folder_config,
            ..parts.remove(0)
        });
    vec![
        (
            "text_encoder/ folder",
            checkpoint::open_clip(&folder).map(|mut p| p.remove(0)),
        ),
        ("weights file", file),
        (
            "model folder",
            checkpoint::open(model, None).map(|mut ck| ck.clip.remove(0)),
        ),
    ]
    .into_iter()
    .map(|(what, parts)| (format!("{what} ({})", model.display()), parts))
    .collect()
}

/// Checks every source of [`clip_sources`] with [`check_clip`].
fn check_clip_sources(model: &Path, prefix: &str) {
    for (what, parts) in clip_sources(model) {
        let parts = parts.unwrap_or_else(|e| panic!("{what}: {e}"));
        check_clip(&what, &parts, prefix);
    }
}

/// The encoder's last states, clip-skip-2 states, pooled and (with a
/// projection) projected output against transformers.
fn check_clip(what: &str, parts: &ClipParts, prefix: &str) {
    let r = reference();
    // The node's path (where a key-layout problem shows as missing tensors).
    TextEncoder::build(parts).unwrap_or_else(|e| panic!("{what}: {e}"));
    let projection = parts.tensors.contains("text_projection.weight");
    assert_eq!(projection, prefix == "text_encoder_2", "{what}: projection");
    let model = parts
        .tensors
        .build("text encoder", |vb| {
            ClipText::new(&parts.config, projection, vb)
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let ids = r[&format!("{prefix}.ids")].to_dtype(DType::U32).unwrap();
    let n = parts.config.num_hidden_layers;
    assert_eq!(parts.layer, n, "{what}: conditioning layer");
    let out = model.encode(&ids, n, EOS, true).unwrap();
    let want = |k: &str| &r[&format!("{prefix}.{k}")];
    check(&format!("{what} last"), &out.hidden, want("last"));
    check(&format!("{what} pooled"), &out.pooled, want("pooled"));
    if projection {
        check(
            &format!("{what} text_embeds"),
            out.projected.as_ref().unwrap(),
            want("text_embeds"),
        );
    }
    // weft returns a chosen layer's states through the final layer norm
    // (SD 1.x's "clip skip 2").
    let skip = model.encode(&ids, n - 1, EOS, true).unwrap();
    check(
        &format!("{what} penultimate"),
        &skip.hidden,
        want("penultimate_normed"),
    );
}

/// `CLIPTextModel` as transformers 5 saves it (bare `embeddings.…` keys):
/// the reported "36 tensor problem(s): missing text_model.…" failure.
#[test]
fn text_encoder_transformers5_layout() {
    let model = text_encoder_copy(&dir().join("text_encoder_t5"), str::to_string);
    check_clip_sources(model.path(), "text_encoder");
}

/// The same tensors in transformers 4's layout (`text_model.…`).
#[test]
fn text_encoder_transformers4_layout() {
    let model = text_encoder_copy(&dir().join("text_encoder_t5"), transformers4_key);
    check_clip_sources(model.path(), "text_encoder");
}

/// `CLIPTextModelWithProjection` (SDXL's second encoder: gelu, top-level
/// `text_projection.weight`, written alike by transformers 4 and 5) with a
/// legacy `eos_token_id` 2, for which transformers pools at the largest id.
#[test]
fn text_encoder_2_with_projection() {
    let model = text_encoder_copy(&dir().join("text_encoder_2"), str::to_string);
    check_clip_sources(model.path(), "text_encoder_2");
}

/// A CLIP file in transformers' names (either layout) carries no config:
/// the tower's width tells OpenAI's CLIP (quick GELU) from OpenCLIP's
/// converted towers (exact GELU), as the OpenCLIP layout always says.
#[test]
fn transformers_clip_files_are_read_from_shapes() {
    let shapes = |hidden: usize, tower: &str| -> config::Shapes {
        let p = format!("cond_stage_model.transformer.{tower}");
        [
            ("embeddings.token_embedding.weight", vec![49408, hidden]),
            ("embeddings.position_embedding.weight", vec![77, hidden]),
            ("encoder.layers.0.mlp.fc1.weight", vec![4 * hidden, hidden]),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v))
        .collect()
    };
    for tower in ["text_model.", ""] {
        for (hidden, act) in [
            (768, Activation::QuickGelu),
            (1024, Activation::Gelu),
            (1280, Activation::Gelu),
        ] {
            let (cfg, layout) =
                config::clip_from_shapes(&shapes(hidden, tower), "cond_stage_model.").unwrap();
            assert_eq!(layout, config::ClipLayout::HuggingFace);
            assert_eq!(
                (cfg.hidden_act, cfg.num_hidden_layers),
                (act, 1),
                "{tower}{hidden}"
            );
            assert_eq!(cfg.num_attention_heads, hidden / 64);
        }
    }
}

// ---------------------------------------------------------------------------
// config.json settings left out or unsupported

#[test]
fn left_out_settings_take_the_library_defaults() {
    // UNet2DConditionModel's: SD 1.x's layout with 1280-wide context.
    let unet = config::unet_from_json("{}").unwrap();
    assert_eq!((unet.in_channels, unet.out_channels), (4, 4));
    let c = &unet.config;
    let levels: Vec<_> = c
        .blocks
        .iter()
        .map(|b| (b.out_channels, b.use_cross_attn, b.attention_head_dim))
        .collect();
    assert_eq!(
        levels,
        [
            (320, Some(1), 8),
            (640, Some(1), 8),
            (1280, Some(1), 8),
            (1280, None, 8)
        ]
    );
    assert_eq!(c.layers_per_block, 2);
    assert_eq!((c.norm_num_groups, c.norm_eps), (32, 1e-5));
    assert_eq!(c.cross_attention_dim, 1280);
    assert!(!c.use_linear_projection && c.flip_sin_to_cos);

    // AutoencoderKL's: one 64-channel level.
    let vae = config::vae_from_json("{}").unwrap();
    assert_eq!(vae.config.block_out_channels, [64]);
    assert_eq!(
        (
            vae.config.layers_per_block,
            vae.config.latent_channels,
            vae.config.norm_num_groups
        ),
        (1, 4, 32)
    );
    assert_eq!(vae.scaling_factor, 0.18215);

    // CLIPTextConfig's.
    let clip = config::clip_from_json("{}").unwrap();
    assert_eq!(
        (
            clip.vocab_size,
            clip.hidden_size,
            clip.intermediate_size,
            clip.num_hidden_layers,
            clip.num_attention_heads,
            clip.max_position_embeddings
        ),
        (49408, 512, 2048, 12, 8, 77)
    );
    assert_eq!(clip.hidden_act, Activation::QuickGelu);
    assert_eq!(clip.projection_dim, Some(512));
}

/// Settings weft does not implement are refused, not run wrongly.
#[test]
fn unsupported_settings_are_refused() {
    for (json, says) in [
        (
            r#"{"resnet_time_scale_shift": "scale_shift"}"#,
            "resnet_time_scale_shift",
        ),
        (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
        (r#"{"mid_block_type": null}"#, "mid_block_type"),
        (
            r#"{"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                "block_out_channels": [32, 64]}"#,
            "up_block_types",
        ),
        (
            r#"{"down_block_types": ["SimpleCrossAttnDownBlock2D"], "block_out_channels": [32]}"#,
            "SimpleCrossAttnDownBlock2D",
        ),
        (r#"{"layers_per_block": [1, 2, 2, 2]}"#, "layers_per_block"),
    ] {
        let e = config::unet_from_json(json).unwrap_err();
        assert!(e.contains(says), "{json}: {e}");
    }
    // The values diffusers writes for SD 1.x/2.x pass.
    let sd2 = r#"{"act_fn": "silu", "only_cross_attention": false, "dual_cross_attention": false,
        "class_embed_type": null, "resnet_time_scale_shift": "default", "upcast_attention": true,
        "use_linear_projection": true, "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024, "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "resnet_out_scale_factor": 1, "conv_in_kernel": 3, "layers_per_block": [2, 2, 2, 2]}"#;
    config::unet_from_json(sd2).unwrap();
    let e = config::vae_from_json(r#"{"mid_block_add_attention": false}"#).unwrap_err();
    assert!(e.contains("mid_block_add_attention"), "{e}");
}
