//! The SD3.5 and Flux example graphs end to end through the `weft` binary,
//! on the tiny random-weight models of `models/tests/fixtures/{sd3,flux}`:
//! they run, are deterministic, and the GGUF graph runs on a file written
//! by `weft quantize`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::repo_root;
fn fixture(path: &str) -> String {
    repo_root()
        .join("models/tests/fixtures")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

fn weft(dir: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("weft runs")
}

/// `weft run graphs/NAME --set …` in `dir`; the one output PNG's pixels.
fn run(dir: &Path, name: &str, sets: &[String]) -> Vec<u8> {
    let mut args = vec![
        "run".to_string(),
        repo_root()
            .join("graphs")
            .join(name)
            .to_string_lossy()
            .into_owned(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    let out = weft(dir, &args);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pngs: Vec<PathBuf> = std::fs::read_dir(dir.join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png") && !p.ends_with("preview.png"))
        .collect();
    assert_eq!(pngs.len(), 1, "{pngs:?}");
    image::open(&pngs[0]).unwrap().to_rgb8().into_raw()
}

fn sets(list: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["width=64", "height=64", "steps=2"]
        .map(String::from)
        .to_vec();
    v.extend_from_slice(list);
    v
}

#[test]
fn sd35_graph_runs_on_a_diffusers_pipeline_folder_deterministically() {
    let model = [format!("model={}", fixture("sd3/pipeline"))];
    let images: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            run(dir.path(), "sd35_txt2img.ron", &sets(&model))
        })
        .collect();
    assert_eq!(images[0], images[1]);
    assert!(
        images[0].iter().any(|&p| p != images[0][0]),
        "not a flat image"
    );
}

/// Flux's files as a ComfyUI user has them: a transformer file, CLIP-L and
/// T5 text encoders, the VAE.
fn flux_files(model: &str, variant: &str) -> Vec<String> {
    vec![
        format!("model={model}"),
        format!("unet.config={}", fixture(&format!("flux/{variant}"))),
        format!("clip_l={}", fixture("flux/pipeline/text_encoder")),
        format!("t5={}", fixture("flux/pipeline/text_encoder_2")),
        format!("vae={}", fixture("flux/vae")),
    ]
}

#[test]
fn flux_graphs_run_from_original_and_gguf_files() {
    let dev = fixture("flux/dev_original.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let a = run(
        dir.path(),
        "flux_dev_txt2img.ron",
        &sets(&flux_files(&dev, "dev")),
    );
    let dir = tempfile::tempdir().unwrap();
    let b = run(
        dir.path(),
        "flux_dev_txt2img.ron",
        &sets(&flux_files(&dev, "dev")),
    );
    assert_eq!(a, b, "deterministic");
    // The guidance is an input of dev: another strength, another image.
    let dir = tempfile::tempdir().unwrap();
    let mut other = sets(&flux_files(&dev, "dev"));
    other.push("guidance=8.0".into());
    assert_ne!(run(dir.path(), "flux_dev_txt2img.ron", &other), a);

    let dir = tempfile::tempdir().unwrap();
    let schnell = fixture("flux/schnell_original.safetensors");
    run(
        dir.path(),
        "flux_schnell_txt2img.ron",
        &sets(&flux_files(&schnell, "schnell")),
    );

    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny-flux-dev-Q8_0.gguf");
    let out = weft(
        dir.path(),
        &[
            "quantize".into(),
            dev.clone(),
            gguf.to_string_lossy().into_owned(),
            "--type".into(),
            "q8_0".into(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("as q8_0"));
    let q = run(
        dir.path(),
        "flux_dev_gguf_txt2img.ron",
        &sets(&flux_files(&gguf.to_string_lossy(), "dev")),
    );
    assert_ne!(q, a, "Q8_0 is an approximation");
    let close = q
        .iter()
        .zip(&a)
        .filter(|(x, y)| x.abs_diff(**y) <= 8)
        .count();
    assert!(
        close * 10 >= a.len() * 9,
        "Q8_0 stays close to f16: {close} of {}",
        a.len()
    );
}

#[test]
fn quantize_refuses_a_type_gguf_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let out = weft(
        dir.path(),
        &[
            "quantize".into(),
            fixture("flux/dev_original.safetensors"),
            "x.gguf".into(),
            "--type".into(),
            "f8_e4m3".into(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF type"));
    assert!(!dir.path().join("x.gguf").exists());
}
