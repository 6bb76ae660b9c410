//! The Stable Diffusion example graphs end to end through the `weft`
//! binary, on the tiny random-weight checkpoints of `models/tests/fixtures/sd`
//! (real SD weights cannot ship): they run, are deterministic, and fail
//! clearly when the model file is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn only_png(dir: &Path) -> Vec<u8> {
    let pngs: Vec<PathBuf> = std::fs::read_dir(dir.join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
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
