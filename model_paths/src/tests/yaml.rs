use std::fs;
use std::path::{Path, PathBuf};

use super::{fake_env, touch, with_roots};
use crate::comfy_yaml::{parse, YamlFolder};
use crate::{LoadError, ModelKind, ModelPaths};

/// ComfyUI's `extra_model_paths.yaml.example`, with both sections enabled.
const EXAMPLE: &str = "\
#Rename this to extra_model_paths.yaml and ComfyUI will load it

#config for a1111 ui
#all you have to do is change the base_path to where yours is installed
a1111:
    base_path: path/to/stable-diffusion-webui/

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
                  models/RealESRGAN
                  models/SwinIR
    embeddings: embeddings
    hypernetworks: models/hypernetworks
    controlnet: models/ControlNet

#config for comfyui
comfyui:
     base_path: ~/ComfyUI/
     is_default: true
     checkpoints: models/checkpoints/
     clip: models/clip/
     clip_vision: models/clip_vision/
     configs: models/configs/
     controlnet: models/controlnet/
     unet: models/unet/
     custom_nodes: custom_nodes/

other_ui:
    base_path: $OTHER
    gligen: models/gligen
    custom_nodes: path/custom_nodes
empty_section:
";

fn folders(entries: &[YamlFolder], kind: ModelKind) -> Vec<(PathBuf, bool)> {
    entries
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| (e.folder.clone(), e.is_default))
        .collect()
}

#[test]
fn comfy_example_file_is_read_as_comfy_reads_it() {
    let env = fake_env(&[
        ("HOME", "/home/u"),
        ("USERPROFILE", "/home/u"),
        ("OTHER", "/other"),
    ]);
    let file = Path::new("/srv/comfy/extra_model_paths.yaml");
    let entries = parse(EXAMPLE, file, &env).unwrap();
    let a1111 = Path::new("/srv/comfy/path/to/stable-diffusion-webui");
    let comfy = Path::new("/home/u/ComfyUI");

    assert_eq!(
        folders(&entries, ModelKind::Loras),
        [
            (a1111.join("models/Lora"), false),
            (a1111.join("models/LyCORIS"), false)
        ]
    );
    assert_eq!(folders(&entries, ModelKind::UpscaleModels).len(), 3);
    assert_eq!(
        folders(&entries, ModelKind::Checkpoints),
        [
            (a1111.join("models/Stable-diffusion"), false),
            (comfy.join("models/checkpoints"), true)
        ]
    );
    // Legacy keys map through the aliases.
    assert_eq!(
        folders(&entries, ModelKind::TextEncoders),
        [(comfy.join("models/clip"), true)]
    );
    assert_eq!(
        folders(&entries, ModelKind::DiffusionModels),
        [(comfy.join("models/unet"), true)]
    );
    assert_eq!(
        folders(&entries, ModelKind::Gligen),
        [(PathBuf::from("/other/models/gligen"), false)]
    );
    // `configs` and `custom_nodes` are not model kinds: 16 folders in all.
    assert_eq!(entries.len(), 16, "{entries:#?}");
}

#[test]
fn paths_without_base_path_are_relative_to_the_yaml() {
    let entries = parse(
        "s:\n  vae: vaes\n  loras: /abs/loras\n  clip: [a, b]\n",
        Path::new("/x/y/extra.yaml"),
        &fake_env(&[]),
    )
    .unwrap();
    let got: Vec<(ModelKind, PathBuf)> =
        entries.iter().map(|e| (e.kind, e.folder.clone())).collect();
    assert_eq!(
        got,
        [
            (ModelKind::Vae, PathBuf::from("/x/y/vaes")),
            (ModelKind::Loras, PathBuf::from("/abs/loras")),
            (ModelKind::TextEncoders, PathBuf::from("/x/y/a")),
            (ModelKind::TextEncoders, PathBuf::from("/x/y/b")),
        ]
    );
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("main.py"), "").unwrap();
    let yaml = tmp.path().join("extra_model_paths.yaml");
    fs::write(&yaml, "a1111:\n  vae: models/VAE\n  loras: [unclosed\n").unwrap();
    let err = ModelPaths::new()
        .add_root(tmp.path(), crate::Origin::Flag)
        .unwrap_err();
    match &err {
        LoadError::Yaml { file, line, .. } => {
            assert_eq!(file, &yaml);
            assert_eq!(*line, Some(4), "{err}");
        }
        other => panic!("expected a yaml error, got {other:?}"),
    }
    assert!(err.to_string().contains("extra_model_paths.yaml:"), "{err}");

    let env = fake_env(&[]);
    let bad_shape = parse("- a\n- b\n", &yaml, &env).unwrap_err();
    assert!(
        bad_shape.to_string().contains("extra_model_paths.yaml"),
        "{bad_shape}"
    );
    let bad_value = parse("s:\n  vae: {a: 1}\n", &yaml, &env).unwrap_err();
    assert!(bad_value.to_string().contains("`vae`"), "{bad_value}");
}

#[test]
fn comfy_install_root_uses_models_dir_and_its_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let install = tmp.path().join("ComfyUI");
    let shared = tmp.path().join("shared");
    let early = tmp.path().join("early");
    touch(&install, "models/checkpoints/sd15/base.safetensors", 1);
    touch(&install, "main.py", 1);
    touch(&shared, "ckpts/extra.safetensors", 1);
    touch(&early, "ckpts/base.ckpt", 1);
    fs::write(
        install.join("extra_model_paths.yaml"),
        "shared:\n  base_path: ../shared\n  checkpoints: ckpts\n\
         early:\n  base_path: ../early\n  is_default: true\n  checkpoints: ckpts\n",
    )
    .unwrap();

    let paths = with_roots(&[&install]);
    let root = &paths.roots()[0];
    assert_eq!(root.models_dir, install.join("models"));
    assert_eq!(
        root.extra_model_paths,
        Some(install.join("extra_model_paths.yaml"))
    );
    // is_default comes before the install's own folder, others after it.
    assert_eq!(
        paths.folders(ModelKind::Checkpoints),
        [
            early.join("ckpts"),
            install.join("models/checkpoints"),
            shared.join("ckpts")
        ]
    );
    let found = paths.resolve(ModelKind::Checkpoints, "extra.safetensors", None);
    assert_eq!(found.unwrap(), shared.join("ckpts/extra.safetensors"));
    let found = paths.resolve(ModelKind::Checkpoints, "sd15/base.safetensors", None);
    assert_eq!(
        found.unwrap(),
        install.join("models/checkpoints/sd15/base.safetensors")
    );
    assert_eq!(
        paths.extra_model_paths(),
        [install.join("extra_model_paths.yaml")]
    );
}

#[test]
fn plain_root_is_not_mistaken_for_an_install() {
    let tmp = tempfile::tempdir().unwrap();
    touch(tmp.path(), "checkpoints/a.safetensors", 1);
    let paths = with_roots(&[tmp.path()]);
    assert_eq!(paths.roots()[0].models_dir, tmp.path());
    assert_eq!(
        paths.folders(ModelKind::Checkpoints),
        [tmp.path().join("checkpoints")]
    );
}

#[test]
fn yaml_listed_in_config_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    touch(tmp.path(), "m/VAE/x.safetensors", 1);
    let yaml = tmp.path().join("extra.yaml");
    fs::write(&yaml, "a1111:\n  base_path: m\n  vae: VAE\n").unwrap();
    let config = tmp.path().join("config.ron");
    fs::write(&config, "(extra_model_paths: [\"extra.yaml\"])").unwrap();
    let sources = crate::Sources {
        config: Some(config),
        ..Default::default()
    };
    let paths = ModelPaths::load(&sources).unwrap();
    assert_eq!(
        paths
            .resolve(ModelKind::Vae, "x.safetensors", None)
            .unwrap(),
        tmp.path().join("m/VAE/x.safetensors")
    );
    assert_eq!(paths.extra_model_paths(), [yaml]);
}

#[test]
fn base_path_expands_home_and_variables() {
    let env = fake_env(&[("HOME", "/home/u"), ("USERPROFILE", "/home/u"), ("D", "/d")]);
    let expand = |s: &str| crate::pathutil::expand(s, &env);
    assert_eq!(expand("~/ComfyUI"), PathBuf::from("/home/u/ComfyUI"));
    assert_eq!(expand("~"), PathBuf::from("/home/u"));
    assert_eq!(expand("${D}/x/$D"), PathBuf::from("/d/x//d"));
    assert_eq!(expand("$UNSET/x"), PathBuf::from("$UNSET/x"));
    assert_eq!(expand("a~b$"), PathBuf::from("a~b$"));
}
