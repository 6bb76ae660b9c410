//! Models by name from folders, as ComfyUI keeps them: `--models`, the graph
//! file's folder, the built-in checkpoints, `weft models` and the choices
//! `weft nodes --json` offers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{repo_root, text};
/// The weft binary in `cwd`, blind to the user's plugins and model folders.
fn weft_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .env_remove("WEFT_PLUGINS")
        .env_remove("WEFT_MODELS")
        .env("XDG_DATA_HOME", "/nonexistent/weft-tests")
        .env("XDG_CONFIG_HOME", "/nonexistent/weft-tests")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("weft runs")
}
fn default_graph() -> String {
    repo_root()
        .join("graphs/mnist_flow_cfg.ron")
        .display()
        .to_string()
}

/// A small, fast version of the default graph's run.
const SMALL: [&str; 4] = ["--set", "per_digit=1", "--set", "steps=2"];

#[test]
fn the_default_graph_runs_from_any_folder() {
    // Regression: run outside the repository root, the default graph failed
    // with `models/mnist_flow.safetensors: no such checkpoint file`.
    let tmp = tempfile::tempdir().unwrap();
    let graph = default_graph();
    let out_dir = tmp.path().join("out");
    let mut args = vec!["run", graph.as_str(), "--out", out_dir.to_str().unwrap()];
    args.extend(SMALL);
    let out = weft_in(tmp.path(), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Besides the grid, the output folder holds the sampler's live preview.
    let saved: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "preview.png")
        .collect();
    assert_eq!(saved.len(), 1, "one grid image is saved: {saved:?}");
}

/// A model root holding the flow checkpoint under a subfolder of
/// `checkpoints/`, as ComfyUI users keep them.
fn model_root(tmp: &Path) -> PathBuf {
    let root = tmp.join("models");
    std::fs::create_dir_all(root.join("checkpoints/mnist")).unwrap();
    std::fs::copy(
        repo_root().join("assets/mnist/mnist_flow.safetensors"),
        root.join("checkpoints/mnist/flow_v2.safetensors"),
    )
    .unwrap();
    root
}

#[test]
fn a_name_resolves_in_the_models_folders_with_subfolders() {
    let tmp = tempfile::tempdir().unwrap();
    let root = model_root(tmp.path());
    let graph = default_graph();
    let out_dir = tmp.path().join("out");
    let mut args = vec![
        "--models",
        root.to_str().unwrap(),
        "run",
        graph.as_str(),
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "model=mnist/flow_v2.safetensors",
    ];
    args.extend(SMALL);
    let out = weft_in(tmp.path(), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_missing_name_lists_the_folders_searched_and_the_closest_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = model_root(tmp.path());
    let graph = default_graph();
    let mut args = vec![
        "--models",
        root.to_str().unwrap(),
        "run",
        graph.as_str(),
        "--set",
        "model=mnist/flow_v3.safetensors",
    ];
    args.extend(SMALL);
    let out = weft_in(tmp.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ckpt_name"), "names the input: {err}");
    assert!(
        err.contains(&root.join("checkpoints").display().to_string()),
        "names the folder searched: {err}"
    );
    assert!(
        err.contains("mnist/flow_v2.safetensors"),
        "suggests the close name: {err}"
    );
}

#[test]
fn relative_paths_resolve_against_the_graph_files_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join("weights")).unwrap();
    std::fs::copy(
        repo_root().join("assets/mnist/mnist_flow.safetensors"),
        project.join("weights/digits.safetensors"),
    )
    .unwrap();
    let graph = std::fs::read_to_string(default_graph()).unwrap().replace(
        "\"mnist_flow.safetensors\"",
        "\"weights/digits.safetensors\"",
    );
    std::fs::write(project.join("graph.ron"), graph).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let graph_path = project.join("graph.ron");
    let mut args = vec!["run", graph_path.to_str().unwrap()];
    args.extend(SMALL);
    let out = weft_in(&elsewhere, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn weft_models_lists_files_with_their_family() {
    let tmp = tempfile::tempdir().unwrap();
    let root = model_root(tmp.path());
    std::fs::create_dir_all(root.join("vae")).unwrap();
    std::fs::copy(
        repo_root().join("models/tests/fixtures/sd/tiny_sd15.safetensors"),
        root.join("vae/whole_checkpoint.safetensors"),
    )
    .unwrap();
    let out = weft_in(tmp.path(), &["--models", root.to_str().unwrap(), "models"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.contains("mnist/flow_v2.safetensors"), "{listing}");
    assert!(listing.contains("weft checkpoint DiT"), "{listing}");
    // The tiny fixture has SD 1.x's layout with a 16-wide context.
    assert!(listing.contains("SD-family checkpoint"), "{listing}");
    let only_vae = weft_in(
        tmp.path(),
        &["--models", root.to_str().unwrap(), "models", "vae"],
    );
    assert!(!text(&only_vae.stdout).contains("flow_v2"));
    let bad = weft_in(tmp.path(), &["models", "nonsense"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn weft_nodes_offers_found_files_as_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let root = model_root(tmp.path());
    let out = weft_in(
        tmp.path(),
        &[
            "--models",
            root.to_str().unwrap(),
            "nodes",
            "CheckpointLoader",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let schemas: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let input = &schemas[0]["inputs"][0];
    assert_eq!(input["name"], "ckpt_name");
    assert_eq!(input["model_folder"], "checkpoints");
    assert_eq!(
        input["choices"],
        serde_json::json!(["mnist/flow_v2.safetensors"])
    );
}
