use std::fs;

use super::{touch, with_roots};
use crate::{ModelKind, ModelPaths, Place};

#[test]
fn graph_folder_beats_roots_and_first_root_beats_second() {
    let tmp = tempfile::tempdir().unwrap();
    let (graph, r1, r2) = (
        tmp.path().join("g"),
        tmp.path().join("r1"),
        tmp.path().join("r2"),
    );
    touch(&graph, "m.safetensors", 1);
    touch(&r1, "checkpoints/m.safetensors", 1);
    touch(&r2, "checkpoints/m.safetensors", 1);
    touch(&r2, "checkpoints/only2.safetensors", 1);
    let paths = with_roots(&[&r1, &r2]);
    let ck = ModelKind::Checkpoints;

    assert_eq!(
        paths.resolve(ck, "m.safetensors", Some(&graph)).unwrap(),
        graph.join("m.safetensors")
    );
    assert_eq!(
        paths.resolve(ck, "m.safetensors", None).unwrap(),
        r1.join("checkpoints/m.safetensors")
    );
    assert_eq!(
        paths
            .resolve(ck, "only2.safetensors", Some(&graph))
            .unwrap(),
        r2.join("checkpoints/only2.safetensors")
    );
    // An existing absolute path is taken as is, whatever the folders.
    let abs = graph.join("m.safetensors");
    assert_eq!(
        paths
            .resolve(ModelKind::Vae, abs.to_str().unwrap(), None)
            .unwrap(),
        abs
    );
}

#[test]
fn subfolder_names_accept_both_separators() {
    let tmp = tempfile::tempdir().unwrap();
    let want = touch(tmp.path(), "loras/sdxl/style/ink.safetensors", 1);
    let paths = with_roots(&[tmp.path()]);
    for name in [
        "sdxl/style/ink.safetensors",
        "sdxl\\style\\ink.safetensors",
        "./sdxl//style/ink.safetensors",
    ] {
        assert_eq!(
            paths.resolve(ModelKind::Loras, name, None).unwrap(),
            want,
            "{name}"
        );
    }
    // A folder is not a model file.
    assert!(paths.resolve(ModelKind::Loras, "sdxl/style", None).is_err());
}

#[test]
fn legacy_folders_are_searched_for_their_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let unet = touch(tmp.path(), "unet/flux1-dev.safetensors", 1);
    let clip = touch(tmp.path(), "clip/t5xxl.safetensors", 1);
    let t2i = touch(tmp.path(), "t2i_adapter/sketch.pth", 1);
    let paths = with_roots(&[tmp.path()]);
    let got = |kind, name| paths.resolve(kind, name, None).unwrap();
    assert_eq!(
        got(ModelKind::DiffusionModels, "flux1-dev.safetensors"),
        unet
    );
    assert_eq!(got(ModelKind::TextEncoders, "t5xxl.safetensors"), clip);
    assert_eq!(got(ModelKind::ControlNet, "sketch.pth"), t2i);
    // ...but only for their kind.
    assert!(paths
        .resolve(ModelKind::Checkpoints, "flux1-dev.safetensors", None)
        .is_err());
    // The canonical folder comes first.
    let canonical = touch(tmp.path(), "diffusion_models/flux1-dev.safetensors", 1);
    assert_eq!(
        got(ModelKind::DiffusionModels, "flux1-dev.safetensors"),
        canonical
    );
}

#[test]
fn dot_dot_cannot_leave_a_kind_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    touch(&root, "checkpoints/inside.safetensors", 1);
    let outside = touch(&root, "loras/secret.safetensors", 1);
    let paths = with_roots(&[&root]);
    let ck = ModelKind::Checkpoints;

    let err = paths
        .resolve(ck, "../loras/secret.safetensors", None)
        .unwrap_err();
    assert!(err.escapes);
    assert!(err.to_string().contains("`..`"), "{err}");
    assert!(paths
        .resolve(ck, "sub\\..\\..\\loras\\secret.safetensors", None)
        .is_err());
    // `..` that stays inside is fine.
    touch(&root, "checkpoints/sub/x.txt", 1);
    assert!(paths.resolve(ck, "sub/../inside.safetensors", None).is_ok());
    // Relative to the graph's folder it is an ordinary path.
    let graph = root.join("graphs");
    fs::create_dir_all(&graph).unwrap();
    assert_eq!(
        paths
            .resolve(ck, "../loras/secret.safetensors", Some(&graph))
            .unwrap(),
        outside
    );
}

#[test]
fn not_found_lists_folders_in_order_and_suggests_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (graph, r1, r2) = (
        tmp.path().join("g"),
        tmp.path().join("r1"),
        tmp.path().join("r2"),
    );
    fs::create_dir_all(&graph).unwrap();
    touch(&r1, "checkpoints/sdxl/juggernaut_v9.safetensors", 1);
    touch(&r1, "checkpoints/sdxl/juggernaut_v8.safetensors", 1);
    touch(&r1, "checkpoints/flux/flux1-dev.safetensors", 1);
    touch(&r1, "checkpoints/sd15/dreamshaper.safetensors", 1);
    touch(&r1, "checkpoints/sd15/notes.txt", 1);
    fs::create_dir_all(&r2).unwrap();
    let paths = with_roots(&[&r1, &r2]);

    let err = paths
        .resolve(
            ModelKind::Checkpoints,
            "Juggernaut_v9.safetensors",
            Some(&graph),
        )
        .unwrap_err();
    let places: Vec<_> = err
        .searched
        .iter()
        .map(|s| (s.path.clone(), s.exists, s.place))
        .collect();
    assert_eq!(
        places,
        [
            (graph.clone(), true, Place::GraphFolder),
            (r1.join("checkpoints"), true, Place::KindFolder),
            (r2.join("checkpoints"), false, Place::KindFolder),
        ]
    );
    assert_eq!(
        err.suggestions,
        [
            "sdxl/juggernaut_v9.safetensors",
            "sdxl/juggernaut_v8.safetensors"
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("no checkpoints model named \"Juggernaut_v9.safetensors\""),
        "{msg}"
    );
    let (i1, i2) = (msg.find("r1").unwrap(), msg.find("r2").unwrap());
    assert!(
        msg.find("(the graph's folder)").unwrap() < i1 && i1 < i2,
        "{msg}"
    );
    assert!(msg.contains("checkpoints (does not exist)"), "{msg}");
    assert!(
        msg.contains("did you mean \"sdxl/juggernaut_v9.safetensors\""),
        "{msg}"
    );
    assert!(!msg.contains("dreamshaper"), "{msg}");
    let _: &dyn std::error::Error = &err;
}

#[test]
fn not_found_without_folders_says_how_to_add_them() {
    let err = ModelPaths::new()
        .resolve(ModelKind::Vae, "ae.safetensors", None)
        .unwrap_err();
    assert!(err.searched.is_empty() && err.suggestions.is_empty());
    assert!(err.to_string().contains("--models"), "{err}");
}
