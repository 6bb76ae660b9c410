//! `graphs/sd15_hires_fix.ron` end to end through the `weft` binary on the
//! tiny random-weight SD 1.5 of `models/tests/fixtures/sd`: txt2img, the
//! latent upscaled by `LatentUpscaleBy`, a second KSampler pass at denoise
//! 0.5, decoded and saved at the bigger size, deterministically.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{repo_root, text};
fn tiny_sd15() -> String {
    repo_root()
        .join("models/tests/fixtures/sd/tiny_sd15")
        .to_string_lossy()
        .into_owned()
}

/// Runs `weft run graphs/sd15_hires_fix.ron --set …` in `dir`.
fn run(dir: &Path, sets: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.arg("run")
        .arg(repo_root().join("graphs/sd15_hires_fix.ron"))
        .current_dir(dir);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.output().expect("weft runs")
}
/// The one image the graph's SaveImage wrote: its bytes and its decoded
/// size and pixels.
fn saved(dir: &Path) -> (Vec<u8>, (u32, u32), Vec<u8>) {
    let pngs: Vec<PathBuf> = std::fs::read_dir(dir.join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("sd15_hires_fix_") && name.ends_with(".png")
        })
        .collect();
    assert_eq!(pngs.len(), 1, "{pngs:?}");
    let bytes = std::fs::read(&pngs[0]).unwrap();
    let image = image::load_from_memory(&bytes).unwrap().to_rgb8();
    (bytes, image.dimensions(), image.into_raw())
}

/// A small, quick run: 64² first pass (8×8 latent cells), 3 + 3 steps.
fn small(extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        format!("model={}", tiny_sd15()),
        "width=64".into(),
        "height=64".into(),
        "steps=3".into(),
        "hires_steps=3".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets
}

#[test]
fn hires_fix_samples_again_at_one_and_a_half_times_the_size() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &small(&[]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        runs.push(saved(dir.path()));
    }
    // 8×8 cells × 1.5 = 12×12 cells, decoded to 96×96 pixels.
    assert_eq!(runs[0].1, (96, 96));
    assert_eq!(
        runs[0].0, runs[1].0,
        "the same graph and seeds give the same bytes"
    );

    // Another factor and method: 8 × 2 = 16 cells → 128 pixels, and a
    // different picture.
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &small(&["scale_by=2.0", "upscale_method=bislerp"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(saved(dir.path()).1, (128, 128));

    // The second pass's seed matters: it samples at denoise 0.5.
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &small(&["hires_seed=1"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let other = saved(dir.path());
    assert_eq!(other.1, (96, 96));
    assert_ne!(
        other.2, runs[0].2,
        "a new seed for the second pass changes the image"
    );
}

#[test]
fn hires_fix_names_the_missing_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["model=/no/such/model.safetensors".into()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("node `checkpoint` (CheckpointLoaderSimple)")
            && err.contains("input `ckpt_name`"),
        "{err}"
    );
    assert!(!dir.path().join("output").exists(), "nothing is written");
}
