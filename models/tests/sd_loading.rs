//! Stable Diffusion checkpoints that are damaged, foreign or of another
//! family get one clear error naming the file and what is wrong; the
//! family and architecture of real checkpoints are read from their shapes.

use weft_kernels::testing::max_diff as max_abs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use weft_models::sd::checkpoint;
use weft_models::sd::config::{self, Family, Shapes};
use weft_models::sd::unet::SdUNet;
use weft_models::vae::Vae;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sd")
        .join(name)
}

fn tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("tiny_sd15.safetensors"), &Device::Cpu).unwrap()
}

fn save(dir: &Path, name: &str, t: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.join(name);
    candle_core::safetensors::save(t, &path).unwrap();
    path
}

fn open_err(path: &Path, config: Option<&Path>) -> String {
    checkpoint::open(path, config).unwrap_err()
}

#[test]
fn damaged_and_foreign_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("tiny_sd15.safetensors")).unwrap();
    let cut = dir.path().join("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = open_err(&cut, None);
    assert!(
        e.contains("truncated.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );

    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, "these are not weights").unwrap();
    assert!(open_err(&text, None).contains("not a valid safetensors file"));

    let missing = open_err(&dir.path().join("absent.safetensors"), None);
    assert!(missing.contains("no such model file"), "{missing}");

    // weft's own MNIST model is a valid safetensors file, but not SD.
    let mnist =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/mnist/mnist_flow.safetensors");
    let e = open_err(&mnist, None);
    assert!(e.contains("not a Stable Diffusion checkpoint"), "{e}");

    // A diffusers folder with only pickled weights.
    let folder = dir.path().join("pickled");
    std::fs::create_dir_all(folder.join("unet")).unwrap();
    std::fs::copy(
        fixture("tiny_sd15/unet/config.json"),
        folder.join("unet/config.json"),
    )
    .unwrap();
    std::fs::write(folder.join("unet/diffusion_pytorch_model.bin"), b"PK").unwrap();
    let e = open_err(&folder, None);
    assert!(e.contains("pickled") && e.contains("safetensors"), "{e}");
}

#[test]
fn missing_and_misshapen_tensors_are_listed_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = tensors();
    let gone = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight";
    assert!(t.remove(gone).is_some());
    let bent = "model.diffusion_model.out.2.bias";
    t.insert(
        bent.into(),
        Tensor::zeros(7, DType::F16, &Device::Cpu).unwrap(),
    );
    let path = save(dir.path(), "broken.safetensors", &t);
    let ck = checkpoint::open(&path, Some(&fixture("tiny_sd15"))).unwrap();
    let (spec, map) = ck.unet.as_ref().unwrap();
    let e = SdUNet::build(spec, map).unwrap_err();
    assert!(e.contains("broken.safetensors"), "{e}");
    assert!(e.contains("2 tensor problem(s)"), "{e}");
    assert!(
        e.contains("missing `down_blocks.0.resnets.0.conv1.weight`"),
        "{e}"
    );
    assert!(
        e.contains(&format!("`{bent}` has shape [7], expected [4]")),
        "{e}"
    );
    // The other components of the same file are intact.
    let (vspec, vmap) = ck.vae.as_ref().unwrap();
    assert!(Vae::build(vspec, vmap).is_ok());
}

#[test]
fn foreign_families_are_refused_or_need_a_config() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny model's shapes are neither SD 1.x nor 2.x.
    let e = open_err(&fixture("tiny_sd15.safetensors"), None);
    assert!(
        e.contains("cannot be read from its shapes") && e.contains("diffusers folder"),
        "{e}"
    );

    let mut t = tensors();
    t.insert(
        "model.diffusion_model.label_emb.0.0.weight".into(),
        Tensor::zeros((4, 4), DType::F16, &Device::Cpu).unwrap(),
    );
    // An added embedding of no SDXL layout (4 inputs: neither 6 nor 5
    // size numbers of 256 features) is no known family either.
    let path = save(dir.path(), "xl.safetensors", &t);
    let e = open_err(&path, None);
    assert!(
        e.contains("xl.safetensors") && e.contains("cannot be read from its shapes"),
        "{e}"
    );
}

/// The tensor shapes of a full-size SD 1.x or 2.x UNet, by their LDM names
/// (only the ones the detection reads, plus one irrelevant key).
fn sd_shapes(context: usize, linear: bool) -> Shapes {
    let p = "model.diffusion_model.";
    let mut s: Shapes = HashMap::new();
    let mut put = |k: String, v: Vec<usize>| {
        s.insert(format!("{p}{k}"), v);
    };
    put("input_blocks.0.0.weight".into(), vec![320, 4, 3, 3]);
    put("out.2.weight".into(), vec![4, 320, 3, 3]);
    put("time_embed.0.weight".into(), vec![1280, 320]);
    let channels = [320, 640, 1280, 1280];
    for (level, &c) in channels.iter().enumerate() {
        for j in 0..2 {
            let i = 1 + level * 3 + j;
            put(
                format!("input_blocks.{i}.0.out_layers.3.weight"),
                vec![c, c, 3, 3],
            );
            if level < 3 {
                let proj = if linear { vec![c, c] } else { vec![c, c, 1, 1] };
                put(format!("input_blocks.{i}.1.proj_in.weight"), proj);
                put(
                    format!("input_blocks.{i}.1.transformer_blocks.0.attn2.to_k.weight"),
                    vec![c, context],
                );
            }
        }
        if level < 3 {
            put(
                format!("input_blocks.{}.0.op.weight", 3 + level * 3),
                vec![c, c, 3, 3],
            );
        }
    }
    s
}

#[test]
fn real_architectures_are_read_from_shapes() {
    let sd1 = sd_shapes(768, false);
    assert_eq!(config::detect_family(&sd1), Family::Sd1);
    let u = config::unet_from_shapes(&sd1, Family::Sd1).unwrap();
    let blocks: Vec<_> = u
        .config
        .blocks
        .iter()
        .map(|b| (b.out_channels, b.use_cross_attn, b.attention_head_dim))
        .collect();
    assert_eq!(
        blocks,
        [
            (320, Some(1), 8),
            (640, Some(1), 8),
            (1280, Some(1), 8),
            (1280, None, 8)
        ]
    );
    assert_eq!(
        (u.config.layers_per_block, u.config.cross_attention_dim),
        (2, 768)
    );
    assert!(!u.config.use_linear_projection && !u.is_inpainting());

    let sd2 = sd_shapes(1024, true);
    assert_eq!(config::detect_family(&sd2), Family::Sd2);
    let u = config::unet_from_shapes(&sd2, Family::Sd2).unwrap();
    let heads: Vec<usize> = u
        .config
        .blocks
        .iter()
        .map(|b| b.attention_head_dim)
        .collect();
    assert_eq!(heads, [5, 10, 20, 20], "64 channels per head");
    assert!(u.config.use_linear_projection);

    let mut inpaint = sd_shapes(768, false);
    inpaint.insert(
        "model.diffusion_model.input_blocks.0.0.weight".into(),
        vec![320, 9, 3, 3],
    );
    assert!(config::unet_from_shapes(&inpaint, Family::Sd1)
        .unwrap()
        .is_inpainting());

    // v-prediction: a marker key, or (SD 2.x only) a wide late LayerNorm bias.
    use weft_sampling::Prediction;
    let std = |v: f64| move |_: &str| Some(v);
    assert_eq!(
        config::prediction_from_shapes(&sd1, Family::Sd1, std(0.5)),
        Prediction::Epsilon
    );
    let mut marked = sd1.clone();
    marked.insert("v_pred".into(), vec![]);
    assert_eq!(
        config::prediction_from_shapes(&marked, Family::Sd1, std(0.0)),
        Prediction::V
    );
    let mut late = sd2.clone();
    late.insert(
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias".into(),
        vec![320],
    );
    assert_eq!(
        config::prediction_from_shapes(&late, Family::Sd2, std(0.2)),
        Prediction::V
    );
    assert_eq!(
        config::prediction_from_shapes(&late, Family::Sd2, std(0.05)),
        Prediction::Epsilon
    );
}

#[test]
fn tiled_vae_decode_matches_the_whole_image() {
    let ck = checkpoint::open(&fixture("tiny_sd15"), None).unwrap();
    let (spec, map) = ck.vae.as_ref().unwrap();
    let vae = Vae::build(spec, map).unwrap();
    // Latents of the VAE's own scale (a unit-variance UNet latent / 0.18215).
    let z = Tensor::randn(0f32, 1.0 / 0.18215, (1, 4, 16, 12), &Device::Cpu).unwrap();
    let whole = vae.decode(&z).unwrap();
    // One tile covering everything is exactly the whole decode.
    let one = vae.decode_tiled(&z, 16, 4).unwrap();
    let diff = |a: &Tensor| max_abs(a, &whole);
    assert!(diff(&one) < 1e-6);
    // Overlapping tiles differ only by GroupNorm's per-tile statistics.
    let tiled = vae.decode_tiled(&z, 8, 3).unwrap();
    assert_eq!(tiled.dims(), whole.dims());
    let mean_err: f32 = (&tiled - &whole)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(mean_err < 0.05, "mean |tiled − whole| = {mean_err}");
}

/// Component-only files (UNet, text encoder, VAE) in the layouts users
/// download them in give the same networks as the full checkpoint.
#[test]
fn component_files_load_like_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let all = tensors();
    let split = |prefix: &str| -> HashMap<String, Tensor> {
        all.iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect()
    };
    let unet_file = save(
        dir.path(),
        "unet.safetensors",
        &split("model.diffusion_model."),
    );
    let clip_file = save(
        dir.path(),
        "clip.safetensors",
        &split("cond_stage_model.transformer."),
    );
    let vae_file = save(dir.path(), "vae.safetensors", &split("first_stage_model."));

    let config = fixture("tiny_sd15");
    let full = checkpoint::open(&fixture("tiny_sd15.safetensors"), Some(&config)).unwrap();
    let alone = checkpoint::open_unet(&unet_file, Some(&config)).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let ctx = Tensor::randn(0f32, 1.0, (1, 77, 16), &Device::Cpu).unwrap();
    let run = |ck: &checkpoint::Checkpoint| {
        let (s, m) = ck.unet.as_ref().unwrap();
        SdUNet::build(s, m)
            .unwrap()
            .forward_at(&x, 500.0, &ctx)
            .unwrap()
    };
    let same = |a: &Tensor, b: &Tensor| {
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert!(same(&run(&full), &run(&alone)));
    assert!(alone.vae.is_none() && alone.clip.is_empty());

    let mut clip = checkpoint::open_clip(&clip_file).unwrap().remove(0);
    // Read from shapes, the head count is CLIP's 64 channels per head
    // (rounded up to one for this 16-wide model); the fixture has two.
    assert_eq!(clip.config.num_attention_heads, 1);
    clip.config.num_attention_heads = 2;
    // (The folder's config names a projection width the file has no tensor for.)
    let want = &full.clip.first().unwrap().config;
    assert_eq!(clip.config.num_hidden_layers, want.num_hidden_layers);
    assert_eq!(clip.config.intermediate_size, want.intermediate_size);
    let te = weft_models::clip::TextEncoder::build(&clip).unwrap();
    let te_full = weft_models::clip::TextEncoder::build(full.clip.first().unwrap()).unwrap();
    let (a, b) = (
        te.encode("a red fox").unwrap(),
        te_full.encode("a red fox").unwrap(),
    );
    assert!(same(
        a.context.as_ref().unwrap(),
        b.context.as_ref().unwrap()
    ));

    // The tiny VAE has 4 groups; the standalone reader assumes SD's 32, so
    // it must refuse these weights clearly rather than build garbage.
    let (spec, map) = checkpoint::open_vae(&vae_file).unwrap();
    assert_eq!(spec.config.block_out_channels, [8, 8, 16, 16]);
    assert!(Vae::build(&spec, &map).is_err());
}

/// A diffusers-named VAE weights file without its config.json (as
/// sdxl-vae-fp16-fix's `diffusion_pytorch_model.safetensors` is often
/// downloaded) loads as the folder does.
#[test]
fn diffusers_named_vae_file_loads_without_its_config() {
    // The sweep's VAE has diffusers' default settings (32 groups).
    let folder = fixture("../sd_sweep/vae_default");
    let (fspec, fmap) = checkpoint::open_vae(&folder).unwrap();
    let (spec, map) =
        checkpoint::open_vae(&folder.join("diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(
        spec.config.block_out_channels,
        fspec.config.block_out_channels
    );
    assert_eq!(spec.config.layers_per_block, fspec.config.layers_per_block);
    assert_eq!(spec.config.norm_num_groups, fspec.config.norm_num_groups);
    let z = Tensor::ones(
        (1, spec.config.latent_channels, 4, 4),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let a = Vae::build(&spec, &map).unwrap().decode(&z).unwrap();
    let b = Vae::build(&fspec, &fmap).unwrap().decode(&z).unwrap();
    assert_eq!(max_abs(&a, &b), 0.0);
}
