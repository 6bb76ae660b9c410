//! ComfyUI workflows through the `weft` binary: the default text-to-image
//! workflow in both formats and inside PNGs runs on the tiny SD 1.5
//! fixture, weft's own PNGs carry a ComfyUI prompt that converts back to the
//! same graph, `weft convert` writes RON that checks, and errors on
//! one-line files stay short.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{repo_root, text};
fn fixture(name: &str) -> PathBuf {
    repo_root().join("workflow/tests/fixtures").join(name)
}
/// A model root as ComfyUI keeps one, with the tiny SD 1.5 checkpoint
/// (a diffusers folder) under `checkpoints/`.
fn model_root(dir: &Path) -> PathBuf {
    let root = dir.join("models");
    std::fs::create_dir_all(root.join("checkpoints")).unwrap();
    std::os::unix::fs::symlink(
        repo_root().join("models/tests/fixtures/sd/tiny_sd15"),
        root.join("checkpoints/tiny_sd15"),
    )
    .unwrap();
    root
}

/// `weft --models ROOT <args>` in `dir`.
fn weft(dir: &Path, args: &[&str]) -> Output {
    let root = dir.join("models");
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("--no-plugins")
        .arg("--models")
        .arg(&root)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("weft runs")
}

/// Small and quick, by ComfyUI's node ids (the default workflow's).
const SMALL: [&str; 10] = [
    "--set",
    "4.ckpt_name=tiny_sd15",
    "--set",
    "5.width=64",
    "--set",
    "5.height=64",
    "--set",
    "3.steps=2",
    "--preview",
    "none",
];

/// Runs a graph file in a fresh folder; returns the saved image's path.
fn run_saving(dir: &Path, graph: &Path) -> PathBuf {
    let mut args = vec!["run", graph.to_str().unwrap()];
    args.extend(SMALL);
    let out = weft(dir, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let saved = dir.join("output/ComfyUI_00001_.png");
    assert!(saved.exists(), "{}", text(&out.stderr));
    saved
}

fn pixels(path: &Path) -> Vec<u8> {
    weft_nodes::image::read_png(path).unwrap().pixels
}

fn chunk(path: &Path, key: &str) -> Option<String> {
    weft_nodes::image::text_chunks(path)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn the_default_workflow_runs_from_api_json_ui_json_and_comfyui_pngs() {
    let api_dir = tempfile::tempdir().unwrap();
    model_root(api_dir.path());
    let api_image = run_saving(api_dir.path(), &fixture("txt2img_api.json"));
    assert_eq!(weft_nodes::image::read_png(&api_image).unwrap().width, 64);

    let ui_dir = tempfile::tempdir().unwrap();
    model_root(ui_dir.path());
    let ui_image = run_saving(ui_dir.path(), &fixture("txt2img_ui.json"));
    assert_eq!(pixels(&api_image), pixels(&ui_image), "the same workflow");

    // PNGs as ComfyUI writes them: `prompt` preferred, `workflow` alone works.
    let api = std::fs::read_to_string(fixture("txt2img_api.json")).unwrap();
    let ui = std::fs::read_to_string(fixture("txt2img_ui.json")).unwrap();
    for chunks in [
        vec![
            ("prompt", api.as_str()),
            ("workflow", "{\"not\": \"read\"}"),
        ],
        vec![("workflow", ui.as_str())],
    ] {
        let dir = tempfile::tempdir().unwrap();
        model_root(dir.path());
        let png = dir.path().join("comfy.png");
        std::fs::write(
            &png,
            weft_nodes::image::encode_png(1, 1, 1, &[0], &chunks).unwrap(),
        )
        .unwrap();
        let image = run_saving(dir.path(), &png);
        assert_eq!(pixels(&api_image), pixels(&image));
    }
}

#[test]
fn a_weft_png_carries_a_comfyui_prompt_of_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    model_root(dir.path());
    let saved = run_saving(dir.path(), &fixture("txt2img_api.json"));
    let registry = weft_nodes::builtin_registry();
    let ron = chunk(&saved, "weft.graph").expect("weft's own graph");
    let prompt = chunk(&saved, "prompt").expect("ComfyUI's prompt");
    assert!(prompt.is_ascii(), "fits a tEXt chunk");
    let ran = weft_core::load(weft_core::SourceFile::new("g.ron", ron), &registry, &[]).unwrap();
    let back = weft_workflow::prompt_to_graph(&prompt, &registry).unwrap();
    let back = weft_core::validate(back, &registry).unwrap();
    assert_eq!(ran.nodes.len(), back.nodes.len());
    for (a, b) in ran.nodes.iter().zip(&back.nodes) {
        assert_eq!((&a.id, a.type_name()), (&b.id, b.type_name()));
        assert_eq!(
            format!("{:?}", a.inputs),
            format!("{:?}", b.inputs),
            "{}",
            a.id
        );
    }
    // The overrides of the run are in it.
    let json: serde_json::Value = serde_json::from_str(&prompt).unwrap();
    assert_eq!(json["5"]["inputs"]["width"], 64);
    assert_eq!(json["3"]["inputs"]["model"], serde_json::json!(["4", 0]));

    // Without weft's chunk, the prompt alone re-runs to the same image.
    let only_prompt = dir.path().join("only_prompt.png");
    std::fs::write(
        &only_prompt,
        weft_nodes::image::encode_png(1, 1, 1, &[0], &[("prompt", &prompt)]).unwrap(),
    )
    .unwrap();
    let again = tempfile::tempdir().unwrap();
    model_root(again.path());
    let out = weft(
        again.path(),
        &["run", only_prompt.to_str().unwrap(), "--preview", "none"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        pixels(&saved),
        pixels(&again.path().join("output/ComfyUI_00001_.png"))
    );
}

#[test]
fn convert_writes_ron_that_checks_and_check_reads_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    model_root(dir.path());
    let ron = dir.path().join("graph.ron");
    for name in ["txt2img_ui.json", "features_ui.json", "txt2img_api.json"] {
        let input = fixture(name);
        let out = weft(dir.path(), &["check", input.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("ok (7 nodes)"),
            "{}",
            text(&out.stdout)
        );
        let out = weft(
            dir.path(),
            &[
                "convert",
                input.to_str().unwrap(),
                "-o",
                ron.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let out = weft(dir.path(), &["check", ron.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
    let written = std::fs::read_to_string(&ron).unwrap();
    assert!(
        written.contains("\"load_checkpoint\": CheckpointLoaderSimple("),
        "{written}"
    );
}

#[test]
fn unknown_classes_fail_check_with_one_error() {
    let dir = tempfile::tempdir().unwrap();
    model_root(dir.path());
    let wf = dir.path().join("wf.json");
    let text_in = std::fs::read_to_string(fixture("txt2img_api.json"))
        .unwrap()
        .replace("\"VAEDecode\"", "\"VAEDecodeHyper\"")
        .replace("\"SaveImage\"", "\"ImageSaverPro\"");
    std::fs::write(&wf, text_in).unwrap();
    let out = weft(dir.path(), &["check", wf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("2 node types that weft does not have"),
        "{err}"
    );
    assert!(
        err.contains(
            "`VAEDecodeHyper` (node 8 “VAE Decode” (VAEDecodeHyper); closest: `VAEDecode`"
        ),
        "{err}"
    );
    assert!(
        err.contains("`ImageSaverPro` (node 9 “Save Image” (ImageSaverPro)"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

/// An error near the end of a 2 MB one-line file, in RON and in JSON:
/// the report is short and its location exact.
#[test]
fn errors_in_one_line_files_show_a_window() {
    let dir = tempfile::tempdir().unwrap();
    model_root(dir.path());
    let padding = "x".repeat(2_000_000);
    let ron = format!("(title: \"{padding}\", nodes: {{ \"a\": IntConstant(value: \"oops\") }})");
    let api = std::fs::read_to_string(fixture("txt2img_api.json")).unwrap();
    let json = api
        .replace('\n', " ")
        .replace("\"ComfyUI\"", &format!("\"{padding}\""))
        .replace("\"steps\": 20", "\"steps\": \"oops\"");
    // The JSON error comes before the padding; put padding before it too.
    let json = json.replacen("\"seed\"", &format!("\"_pad\": \"{padding}\", \"seed\""), 1);
    for (name, body, needle) in [("big.ron", ron, "\"oops\""), ("big.json", json, "\"oops\"")] {
        let path = dir.path().join(name);
        std::fs::write(&path, &body).unwrap();
        let out = weft(dir.path(), &["check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = text(&out.stderr);
        assert!(err.len() < 3_000, "{name}: {} bytes of errors", err.len());
        let col = body[..body.find(needle).unwrap()].chars().count() + 1;
        assert!(err.contains(&format!("{name}:1:{col}")), "{name}: {err}");
        assert!(err.contains("\"oops\""), "{name}: {err}");
    }
}
