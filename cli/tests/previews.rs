//! Live previews through the `weft` binary, on the tiny random-weight SD 1.5
//! of `models/tests/fixtures/sd` and the TAESD decoder of
//! `models/tests/fixtures/taesd`: `preview.png` in the output folder,
//! `preview` events in JSON mode, `--preview none|latent2rgb|taesd`, and
//! previews never changing the saved image.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value as Json;

mod support;
use support::{repo_root, text};
fn sd15() -> String {
    repo_root()
        .join("models/tests/fixtures/sd/tiny_sd15")
        .display()
        .to_string()
}

/// `weft [--models ROOT] run graphs/sd15_txt2img.ron` at 64², 3 steps, in `dir`.
fn run_sd(dir: &Path, models: Option<&Path>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.current_dir(dir).arg("--no-plugins");
    if let Some(root) = models {
        cmd.arg("--models").arg(root);
    }
    cmd.arg("run")
        .arg(repo_root().join("graphs/sd15_txt2img.ron"))
        .args(["--set", &format!("model={}", sd15())])
        .args([
            "--set",
            "width=64",
            "--set",
            "height=64",
            "--set",
            "steps=3",
        ])
        .args(extra);
    let out = cmd.output().expect("weft runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}
/// A PNG's size and 8-bit RGB pixels.
fn decode(png: &[u8]) -> ((u32, u32), Vec<u8>) {
    let image = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .expect("a valid PNG")
        .to_rgb8();
    (image.dimensions(), image.into_raw())
}

/// The image SaveImage wrote (not the preview).
fn saved(dir: &Path) -> Vec<u8> {
    let pngs: Vec<PathBuf> = std::fs::read_dir(dir.join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sd15_")
        })
        .collect();
    assert_eq!(pngs.len(), 1, "{pngs:?}");
    std::fs::read(&pngs[0]).unwrap()
}

/// Standard base64 (with padding), as the events carry PNGs.
fn base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    assert_eq!(s.len() % 4, 0, "padded base64");
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|c| **c == b'=').count();
        let n = chunk[..4 - pad]
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | ((value(*c) as u32) << (18 - 6 * i)));
        out.extend(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

fn json_lines(out: &Output) -> Vec<Json> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn a_run_keeps_the_latest_preview_and_none_writes_none() {
    let with = tempfile::tempdir().unwrap();
    run_sd(with.path(), None, &[]);
    let preview = std::fs::read(with.path().join("output/preview.png")).expect("preview.png");
    // latent2rgb (the default) previews at latent resolution: 64² / 8.
    let ((w, h), pixels) = decode(&preview);
    assert_eq!((w, h), (8, 8));
    assert!(pixels.iter().any(|p| *p != pixels[0]), "not a flat picture");
    // Written atomically: no temp file is left beside it.
    let names: Vec<String> = std::fs::read_dir(with.path().join("output"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    let without = tempfile::tempdir().unwrap();
    run_sd(without.path(), None, &["--preview", "none"]);
    assert!(!without.path().join("output/preview.png").exists());
    // Previews never change what is sampled: the same saved image.
    assert_eq!(
        decode(&saved(with.path())).1,
        decode(&saved(without.path())).1
    );
}

#[test]
fn json_mode_carries_preview_events_that_decode_as_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_sd(dir.path(), None, &["--events", "json"]);
    let events = json_lines(&out);
    let previews: Vec<&Json> = events.iter().filter(|e| e["event"] == "preview").collect();
    assert!(!previews.is_empty(), "no preview events");
    for p in &previews {
        assert_eq!(p["node"], "sample");
        assert_eq!(p["max"], 3);
        let png = base64(p["png"].as_str().unwrap());
        let ((w, h), _) = decode(&png);
        assert_eq!(
            (w as u64, h as u64),
            (p["width"].as_u64().unwrap(), p["height"].as_u64().unwrap())
        );
        assert_eq!((w, h), (8, 8));
    }
    // The first and the last step always show; the file holds the last.
    let last = previews.last().unwrap();
    assert_eq!(previews[0]["step"], 1);
    assert_eq!(last["step"], 3);
    let file = std::fs::read(dir.path().join("output/preview.png")).unwrap();
    assert_eq!(file, base64(last["png"].as_str().unwrap()));
    // Each preview comes after its step's progress event.
    let position = |kind: &str, step: u64| {
        events
            .iter()
            .position(|e| {
                e["event"] == kind
                    && (e["step"] == step || e["value"] == step)
                    && e["node"] == "sample"
            })
            .unwrap()
    };
    assert!(position("progress", 3) < position("preview", 3));
}

/// A model root whose `vae_approx/` holds the tiny TAESD decoder.
fn models_with_taesd(tmp: &Path) -> PathBuf {
    let root = tmp.join("models");
    std::fs::create_dir_all(root.join("vae_approx")).unwrap();
    std::fs::copy(
        repo_root().join("models/tests/fixtures/taesd/taesd_decoder.safetensors"),
        root.join("vae_approx/taesd_decoder.safetensors"),
    )
    .unwrap();
    root
}

#[test]
fn taesd_previews_at_image_size_from_vae_approx() {
    let dir = tempfile::tempdir().unwrap();
    let root = models_with_taesd(dir.path());
    let out = run_sd(dir.path(), Some(&root), &["--preview", "taesd"]);
    assert!(!text(&out.stdout).contains("no TAESD decoder"));
    let preview = std::fs::read(dir.path().join("output/preview.png")).unwrap();
    assert_eq!(decode(&preview).0, (64, 64));
}

#[test]
fn taesd_without_a_decoder_falls_back_to_latent2rgb_with_one_notice() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_sd(dir.path(), None, &["--preview", "taesd"]);
    let said = text(&out.stdout) + &text(&out.stderr);
    let notices: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("no TAESD decoder `taesd_decoder.safetensors`"))
        .collect();
    assert_eq!(notices.len(), 1, "{said}");
    assert!(notices[0].contains("using latent2rgb"), "{}", notices[0]);
    let preview = std::fs::read(dir.path().join("output/preview.png")).unwrap();
    assert_eq!(decode(&preview).0, (8, 8));
}

#[test]
fn watch_keeps_the_latest_preview_too() {
    let dir = tempfile::tempdir().unwrap();
    let graph = dir.path().join("g.ron");
    std::fs::copy(
        repo_root().join("graphs/exact_gaussian_ksampler.ron"),
        &graph,
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["--no-plugins", "watch", graph.to_str().unwrap()])
        .args(["--events", "json", "--out", out_dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Json>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(e) = serde_json::from_str(&line) {
                if tx.send(e).is_err() {
                    break;
                }
            }
        }
    });
    let mut previews = 0;
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("watch ran the graph in time");
        previews += (e["event"] == "preview") as usize;
        if e["event"] == "graph_done" {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(previews >= 2, "the first and last steps: {previews}");
    let preview = std::fs::read(out_dir.join("preview.png")).unwrap();
    // A 1-channel 32² pixel-space model previews as itself.
    assert_eq!(decode(&preview).0, (32, 32));
}
