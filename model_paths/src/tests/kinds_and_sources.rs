use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::{fake_env, touch};
use crate::sources::config_path_from;
use crate::{
    parse_env_list, ConfigFile, LoadError, ModelKind, ModelPaths, Origin, Sources, Warning,
};

#[test]
fn kinds_parse_canonical_names_and_comfy_aliases() {
    for kind in ModelKind::ALL {
        assert_eq!(kind.name().parse::<ModelKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.folder_names()[0]);
    }
    assert_eq!("unet".parse(), Ok(ModelKind::DiffusionModels));
    assert_eq!("clip".parse(), Ok(ModelKind::TextEncoders));
    assert_eq!("t2i_adapter".parse(), Ok(ModelKind::ControlNet));
    assert_eq!("Checkpoints".parse(), Ok(ModelKind::Checkpoints));
    let err = "configs".parse::<ModelKind>().unwrap_err();
    assert!(err.to_string().contains("\"configs\""), "{err}");
    assert_eq!(
        ModelKind::DiffusionModels.folder_names(),
        ["diffusion_models", "unet"]
    );
    assert_eq!(
        ModelKind::TextEncoders.folder_names(),
        ["text_encoders", "clip"]
    );
}

#[test]
fn model_extensions_match_comfy_and_ignore_case() {
    for ok in [
        "a.safetensors",
        "a.SFT",
        "a.ckpt",
        "a.pt",
        "a.pt2",
        "a.pth",
        "a.bin",
        "a.pkl",
        "a.gguf",
    ] {
        assert!(ModelKind::has_model_extension(Path::new(ok)), "{ok}");
    }
    for no in ["a.yaml", "a.json", "a", "safetensors", "a.safetensors.part"] {
        assert!(!ModelKind::has_model_extension(Path::new(no)), "{no}");
    }
}

#[test]
fn env_list_splits_like_path_and_skips_empty_entries() {
    let joined = std::env::join_paths(["/a/models", "", "/b/more models"]).unwrap();
    assert_eq!(
        parse_env_list(&joined),
        [PathBuf::from("/a/models"), PathBuf::from("/b/more models")]
    );
    assert!(parse_env_list(&OsString::new()).is_empty());
}

#[test]
fn config_path_prefers_xdg_then_home() {
    let xdg = fake_env(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")]);
    assert_eq!(
        config_path_from(&xdg),
        Some(PathBuf::from("/xdg/weft/config.ron"))
    );
    if !cfg!(windows) {
        let relative_xdg = fake_env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(
            config_path_from(&relative_xdg),
            Some(PathBuf::from("/home/u/.config/weft/config.ron"))
        );
        assert_eq!(config_path_from(&fake_env(&[])), None);
    }
}

#[test]
fn config_file_fields_are_optional_relative_and_expanded() {
    let file = Path::new("/etc/weft/config.ron");
    let env = fake_env(&[("HOME", "/home/u"), ("DATA", "/data")]);
    let text = r#"(models: ["/abs", "rel/models", "$DATA/m"], extra_model_paths: ["~/ComfyUI/extra_model_paths.yaml"], theme: "dark")"#;
    let config = ConfigFile::parse(text, file, &env).unwrap();
    assert_eq!(
        config.models,
        [
            PathBuf::from("/abs"),
            PathBuf::from("/etc/weft/rel/models"),
            PathBuf::from("/data/m")
        ]
    );
    if !cfg!(windows) {
        assert_eq!(
            config.extra_model_paths,
            [PathBuf::from("/home/u/ComfyUI/extra_model_paths.yaml")]
        );
    }
    assert_eq!(
        ConfigFile::parse("()", file, &env).unwrap(),
        ConfigFile::default()
    );

    let err = ConfigFile::parse("(models: [1,", file, &env).unwrap_err();
    assert!(matches!(err, LoadError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("config.ron"), "{err}");
}

#[test]
fn sources_are_searched_flag_then_env_then_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (flag, env, conf) = (
        tmp.path().join("f"),
        tmp.path().join("e"),
        tmp.path().join("c"),
    );
    for root in [&flag, &env, &conf] {
        touch(root, "vae/v.safetensors", 1);
    }
    let config = tmp.path().join("config.ron");
    let missing_yaml = tmp.path().join("nope.yaml");
    fs::write(
        &config,
        format!(
            "(models: [{:?}, \"gone\"], extra_model_paths: [{:?}])",
            conf, missing_yaml
        ),
    )
    .unwrap();
    let sources = Sources {
        models: vec![flag.clone()],
        env: Some(std::env::join_paths([&env, &tmp.path().join("absent")]).unwrap()),
        config: Some(config.clone()),
    };
    let paths = ModelPaths::load(&sources).unwrap();

    let vae: Vec<PathBuf> = [&flag, &env, &conf].iter().map(|r| r.join("vae")).collect();
    assert_eq!(paths.folders(ModelKind::Vae), vae);
    let origins: Vec<&Origin> = paths.roots().iter().map(|r| &r.origin).collect();
    assert_eq!(
        origins,
        [&Origin::Flag, &Origin::Env, &Origin::Config(config.clone())]
    );
    assert_eq!(
        paths
            .resolve(ModelKind::Vae, "v.safetensors", None)
            .unwrap(),
        flag.join("vae/v.safetensors")
    );
    assert_eq!(
        paths.warnings(),
        [
            Warning::MissingRoot {
                dir: tmp.path().join("absent"),
                origin: Origin::Env
            },
            Warning::MissingRoot {
                dir: tmp.path().join("gone"),
                origin: Origin::Config(config.clone())
            },
            Warning::MissingYaml {
                file: missing_yaml,
                origin: Origin::Config(config)
            },
        ]
    );
}

#[test]
fn missing_flag_root_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("typo");
    let sources = Sources {
        models: vec![missing.clone()],
        ..Sources::default()
    };
    let err = ModelPaths::load(&sources).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingRoot { dir, origin: Origin::Flag } if *dir == missing)
    );
    assert!(err.to_string().contains("typo"), "{err}");

    let file = touch(tmp.path(), "file.txt", 1);
    let err = ModelPaths::new().add_root(&file, Origin::Flag).unwrap_err();
    assert!(matches!(err, LoadError::NotAFolder { .. }), "{err:?}");
}

#[test]
fn absent_config_file_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let sources = Sources {
        config: Some(tmp.path().join("none/config.ron")),
        ..Sources::default()
    };
    let paths = ModelPaths::load(&sources).unwrap();
    assert!(paths.roots().is_empty() && paths.warnings().is_empty());
}
