//! The Stable Diffusion example graphs end to end through the `weft`
//! binary, on the tiny random-weight checkpoints of `models/tests/fixtures/sd`
//! (real SD weights cannot ship): they run, are deterministic, and fail
//! clearly when the model file is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{repo_root, text};
fn fixture(name: &str) -> String {
    repo_root()
        .join("models/tests/fixtures/sd")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn graph(name: &str) -> String {
    repo_root()
        .join("graphs")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Runs `weft run GRAPH --set …` in `dir` (outputs land in `dir/output`).
fn run(dir: &Path, graph_name: &str, sets: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.arg("run").arg(graph(graph_name)).current_dir(dir);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.output().expect("weft runs")
}
fn only_png(dir: &Path) -> Vec<u8> {
    let pngs: Vec<PathBuf> = std::fs::read_dir(dir.join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .filter(|p| !p.ends_with("preview.png")) // the live preview, not an output
        .collect();
    assert_eq!(pngs.len(), 1, "{pngs:?}");
    std::fs::read(&pngs[0]).unwrap()
}

fn small(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["width=64", "height=64", "steps=3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn every_sd_graph_names_the_missing_checkpoint() {
    for g in [
        "sd15_lcm_lora.ron",
        "sdxl_txt2img.ron",
        "sdxl_turbo.ron",
        "sdxl_controlnet_canny.ron",
        "sd15_txt2img.ron",
        "sd15_img2img.ron",
        "sd2_v_txt2img.ron",
        "sd15_controlnet_canny.ron",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), g, &["model=/no/such/model.safetensors".into()]);
        assert_eq!(out.status.code(), Some(1), "{g}");
        let err = text(&out.stderr);
        assert!(
            err.contains("node `checkpoint` (CheckpointLoaderSimple)"),
            "{g}: {err}"
        );
        assert!(err.contains("input `ckpt_name`"), "{g}: {err}");
        assert!(
            err.contains("/no/such/model.safetensors") && err.contains("searched"),
            "{g}: {err}"
        );
        assert!(
            !dir.path().join("output").exists(),
            "{g}: nothing is written"
        );
    }
}

#[test]
fn txt2img_runs_on_both_layouts_and_is_deterministic() {
    let folder = small(&[&format!("model={}", fixture("tiny_sd15"))]);
    let single = small(&[
        &format!("model={}", fixture("tiny_sd15.safetensors")),
        &format!("checkpoint.config={}", fixture("tiny_sd15")),
    ]);
    let mut images = Vec::new();
    for sets in [&folder, &folder, &single] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), "sd15_txt2img.ron", sets);
        assert!(out.status.success(), "{}", text(&out.stderr));
        images.push(only_png(dir.path()));
    }
    // Same graph and seed: the same bytes; the two layouts of one model: the same image.
    assert_eq!(images[0], images[1]);
    let decode = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgb8().into_raw();
    assert_eq!(decode(&images[0]), decode(&images[2]));
    let pixels = decode(&images[0]);
    assert_eq!(pixels.len(), 64 * 64 * 3);
}

#[test]
fn img2img_and_sd2_graphs_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo_root().join("docs/mnist_flow_cfg.png");
    let out = run(
        dir.path(),
        "sd15_img2img.ron",
        &small(&[
            &format!("model={}", fixture("tiny_sd15")),
            &format!("image={}", input.display()),
        ]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!only_png(dir.path()).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "sd2_v_txt2img.ron",
        &small(&[
            &format!("model={}", fixture("tiny_sd2v.safetensors")),
            &format!("checkpoint.config={}", fixture("tiny_sd2v")),
        ]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!only_png(dir.path()).is_empty());
}

#[test]
fn controlnet_graph_runs_and_the_hint_changes_the_image() {
    let input = repo_root().join("docs/mnist_flow_cfg.png");
    let mut images = Vec::new();
    for strength in ["1.0", "0.0"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            dir.path(),
            "sd15_controlnet_canny.ron",
            &small(&[
                &format!("model={}", fixture("tiny_sd15")),
                &format!("controlnet={}", fixture("controlnet")),
                &format!("image={}", input.display()),
                &format!("strength={strength}"),
            ]),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        images.push(only_png(dir.path()));
    }
    let decode = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgb8().into_raw();
    assert_ne!(decode(&images[0]), decode(&images[1]));
}

/// A kohya-format LoRA for the tiny SD 1.5 UNet (diffusers-style module
/// names): rank-2 changes of every attention projection whose input is
/// `width` wide (the self-attention `to_q` and, with `cross`, the
/// cross-attention `to_k`), with alpha 1.
fn write_lora(path: &Path, cross_width: Option<usize>) {
    use candle_core::{DType, Device, Tensor};
    let unet = repo_root()
        .join("models/tests/fixtures/sd/tiny_sd15/unet/diffusion_pytorch_model.safetensors");
    let weights = candle_core::safetensors::load(unet, &Device::Cpu).unwrap();
    let mut lora = std::collections::HashMap::new();
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    for name in names {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        let (out, input) = weights[name].dims2().unwrap_or((0, 0));
        let input = match (
            module.ends_with("attn1.to_q"),
            module.ends_with("attn2.to_k"),
        ) {
            (true, _) => input,
            (_, true) => cross_width.unwrap_or(input),
            _ => continue,
        };
        let key = format!("lora_unet_{}", module.replace('.', "_"));
        let down = Tensor::randn(0f32, 0.5, (2, input), &Device::Cpu).unwrap();
        let up = Tensor::randn(0f32, 0.5, (out, 2), &Device::Cpu).unwrap();
        lora.insert(
            format!("{key}.lora_down.weight"),
            down.to_dtype(DType::F16).unwrap(),
        );
        lora.insert(
            format!("{key}.lora_up.weight"),
            up.to_dtype(DType::F16).unwrap(),
        );
        lora.insert(
            format!("{key}.alpha"),
            Tensor::new(1f32, &Device::Cpu).unwrap(),
        );
    }
    assert!(!lora.is_empty());
    candle_core::safetensors::save(&lora, path).unwrap();
}

#[test]
fn lcm_lora_graph_runs_and_the_lora_changes_the_image() {
    let loras = tempfile::tempdir().unwrap();
    let lora = loras.path().join("tiny_lora.safetensors");
    write_lora(&lora, None);
    let mut images = Vec::new();
    for strength in ["1.0", "1.0", "0.0"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            dir.path(),
            "sd15_lcm_lora.ron",
            &[
                "width=64".into(),
                "height=64".into(),
                format!("model={}", fixture("tiny_sd15")),
                format!("lora={}", lora.display()),
                format!("strength={strength}"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(log.contains("UNet patches"), "{log}");
        images.push(only_png(dir.path()));
    }
    assert_eq!(images[0], images[1], "deterministic");
    let decode = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgb8().into_raw();
    assert_ne!(
        decode(&images[0]),
        decode(&images[2]),
        "the LoRA changes the image"
    );

    // An SDXL LoRA (2048-wide cross-attention) on SD 1.5: one error naming both.
    let xl = loras.path().join("xl_lora.safetensors");
    write_lora(&xl, Some(2048));
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "sd15_lcm_lora.ron",
        &[
            "width=64".into(),
            "height=64".into(),
            format!("model={}", fixture("tiny_sd15")),
            format!("lora={}", xl.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("SDXL") && err.contains("lora_name") && err.contains("xl_lora.safetensors"),
        "{err}"
    );
}

fn sdxl(name: &str) -> String {
    repo_root()
        .join("models/tests/fixtures/sdxl")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn decode(b: &[u8]) -> Vec<u8> {
    image::load_from_memory(b).unwrap().to_rgb8().into_raw()
}

/// The tiny SDXL's single file with its folder as the config (its
/// vocabulary is not SDXL's), as `--set` arguments.
fn sdxl_single_file() -> [String; 2] {
    [
        format!("model={}", sdxl("tiny_sdxl.safetensors")),
        format!("checkpoint.config={}", sdxl("tiny_sdxl")),
    ]
}

#[test]
fn sdxl_txt2img_runs_on_both_layouts_and_is_deterministic() {
    let sizes = [
        "size_width=64",
        "size_height=64",
        "target_width=64",
        "target_height=64",
    ];
    let model = format!("model={}", sdxl("tiny_sdxl"));
    let folder = small(&[&[model.as_str()], &sizes[..]].concat());
    let [m, c] = sdxl_single_file();
    let single = small(&[&[m.as_str(), c.as_str()], &sizes[..]].concat());
    let mut images = Vec::new();
    for sets in [&folder, &folder, &single] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), "sdxl_txt2img.ron", sets);
        assert!(out.status.success(), "{}", text(&out.stderr));
        images.push(only_png(dir.path()));
    }
    assert_eq!(images[0], images[1]);
    assert_eq!(decode(&images[0]), decode(&images[2]));
    // The stated size is conditioning: another original size, another image.
    let dir = tempfile::tempdir().unwrap();
    let mut other = folder.clone();
    other.push("size_width=1024".into());
    let out = run(dir.path(), "sdxl_txt2img.ron", &other);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(decode(&only_png(dir.path())), decode(&images[0]));
}

#[test]
fn sdxl_base_refiner_turbo_and_controlnet_graphs_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "sdxl_base_refiner.ron",
        &[
            format!("model={}", sdxl("tiny_sdxl")),
            format!("refiner={}", sdxl("tiny_sdxl_refiner")),
            "width=64".into(),
            "height=64".into(),
            "steps=5".into(),
            "refiner_steps=5".into(),
            "switch_at=4".into(),
            "refine_from=4".into(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!only_png(dir.path()).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        "sdxl_turbo.ron",
        &[
            format!("model={}", sdxl("tiny_sdxl")),
            "width=64".into(),
            "height=64".into(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!only_png(dir.path()).is_empty());

    let input = repo_root().join("docs/mnist_flow_cfg.png");
    let mut images = Vec::new();
    for strength in ["0.8", "0.0"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            dir.path(),
            "sdxl_controlnet_canny.ron",
            &small(&[
                &format!("model={}", sdxl("tiny_sdxl")),
                &format!("controlnet={}", sdxl("controlnet_sdxl")),
                &format!("image={}", input.display()),
                &format!("strength={strength}"),
            ]),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        images.push(decode(&only_png(dir.path())));
    }
    assert_ne!(
        images[0], images[1],
        "the SDXL ControlNet changes the image"
    );
}

/// `embedding:name` is found in the embeddings folder of `--models`; an
/// unknown name stops the run naming the folders searched.
#[test]
fn sdxl_prompt_embeddings_come_from_the_models_folder() {
    let run_prompt = |prompt: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["--models", &sdxl(""), "run", &graph("sdxl_txt2img.ron")])
            .args(["--set", &format!("model={}", sdxl("tiny_sdxl"))])
            .args(["--set", &format!("prompt={prompt}")])
            .args([
                "--set",
                "width=64",
                "--set",
                "height=64",
                "--set",
                "steps=2",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let png = out.status.success().then(|| decode(&only_png(dir.path())));
        (out, png)
    };
    let (out, with) = run_prompt("a photo of embedding:tiny_sdxl_emb");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, without) = run_prompt("a photo of");
    assert_ne!(with, without, "the embedding is part of the prompt");
    let (out, _) = run_prompt("a photo of embedding:no_such_emb");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no_such_emb") && err.contains("embeddings"),
        "{err}"
    );
}

/// `DualCLIPLoader(type: sdxl)` joins separate CLIP-L and bigG files (given
/// in either order) into the checkpoint's own CLIP: the same image.
#[test]
fn dual_clip_loader_joins_sdxl_text_encoders() {
    let graph_with = |clip: &str| {
        format!(
            r#"(
    nodes: {{
        "ck": CheckpointLoaderSimple(ckpt_name: "{model}"),
        "dual": DualCLIPLoader(clip_name1: "{g}", clip_name2: "{l}", type: "sdxl"),
        "pos": CLIPTextEncode(text: "a photograph of a horse", clip: {clip}),
        "neg": CLIPTextEncode(text: "", clip: {clip}),
        "latent": EmptyLatentImage(width: 64, height: 64, batch_size: 1),
        "sample": KSampler(model: Link("ck", "MODEL"), seed: 3, steps: 2, cfg: 5.0,
            sampler_name: "euler", scheduler: "normal", positive: Link("pos", "CONDITIONING"),
            negative: Link("neg", "CONDITIONING"), latent_image: Link("latent", "LATENT")),
        "decode": VAEDecode(samples: Link("sample", "LATENT"), vae: Link("ck", "VAE")),
        "save": SaveImage(images: Link("decode", "IMAGE"), filename_prefix: "dual"),
    }},
)"#,
            model = sdxl("tiny_sdxl"),
            g = sdxl("tiny_sdxl/text_encoder_2"),
            l = sdxl("tiny_sdxl/text_encoder"),
        )
    };
    let mut images = Vec::new();
    for clip in [r#"Link("dual", "CLIP")"#, r#"Link("ck", "CLIP")"#] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dual.ron");
        std::fs::write(&path, graph_with(clip)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("run")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        images.push(decode(&only_png(dir.path())));
    }
    assert_eq!(images[0], images[1]);
}
