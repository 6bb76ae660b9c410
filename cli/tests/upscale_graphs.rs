//! `graphs/esrgan_upscale.ron` end to end through the `weft` binary, on the
//! tiny spandrel-made upscale models of `models/tests/fixtures/upscale`:
//! the output is the model's scale times the input, matches the model run
//! directly, is deterministic; models resolve by name in `upscale_models`;
//! pickles and missing files stop the run with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use weft_models::upscale::UpscaleModel;

mod support;
use support::{repo_root, text};
fn fixture(name: &str) -> PathBuf {
    repo_root().join("models/tests/fixtures/upscale").join(name)
}

/// Runs `weft [pre…] run graphs/esrgan_upscale.ron --set …` in `dir`.
fn run(dir: &Path, pre: &[&str], sets: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(pre)
        .arg("run")
        .arg(repo_root().join("graphs/esrgan_upscale.ron"))
        .current_dir(dir);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.output().expect("weft runs")
}
/// A small picture with colour and detail, written as a PNG.
fn write_input(dir: &Path, gray: bool) -> PathBuf {
    let (w, h) = (23u32, 17u32);
    let value = |x: u32, y: u32, c: u32| {
        let v = ((x * 37 + y * 11 + c * 50) % 97) as f32 / 96.0;
        (v * 200.0 + 20.0) as u8
    };
    let path = dir.join(if gray { "gray.png" } else { "input.png" });
    if gray {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([value(x, y, 0)]))
            .save(&path)
            .unwrap();
    } else {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([value(x, y, 0), value(x, y, 1), value(x, y, 2)])
        })
        .save(&path)
        .unwrap();
    }
    path
}

fn only_png(dir: &Path) -> PathBuf {
    let pngs: Vec<PathBuf> = std::fs::read_dir(dir.join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(pngs.len(), 1, "{pngs:?}");
    pngs[0].clone()
}

/// The model run directly on the input PNG, clamped and as 8-bit RGB.
fn direct(model: &Path, input: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(input).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let mut planar = vec![0f32; 3 * (w * h) as usize];
    for (p, px) in img.pixels().enumerate() {
        for c in 0..3 {
            planar[c * (w * h) as usize + p] = px[c] as f32 / 255.0;
        }
    }
    let x = Tensor::from_vec(planar, (1, 3, h as usize, w as usize), &Device::Cpu).unwrap();
    let model = UpscaleModel::open(model).unwrap();
    let y = model.forward(&x).unwrap().clamp(0f32, 1f32).unwrap();
    let (_, _, oh, ow) = y.dims4().unwrap();
    let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    let area = oh * ow;
    let mut rgb = Vec::with_capacity(3 * area);
    for p in 0..area {
        for c in 0..3 {
            rgb.push((v[c * area + p] * 255.0).round() as u8);
        }
    }
    (ow as u32, oh as u32, rgb)
}

#[test]
fn upscale_graph_matches_the_model_and_is_deterministic() {
    for (stem, scale) in [
        ("esrgan_x4_old", 4),
        ("realesrgan_x2_unshuffle", 2),
        ("compact_x4", 4),
    ] {
        let model = fixture(&format!("{stem}.safetensors"));
        let mut outputs = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let input = write_input(dir.path(), false);
            let out = run(
                dir.path(),
                &[],
                &[
                    format!("model={}", model.display()),
                    format!("image={}", input.display()),
                ],
            );
            assert!(out.status.success(), "{stem}: {}", text(&out.stderr));
            let png = only_png(dir.path());
            let got = image::open(&png).unwrap().to_rgb8();
            assert_eq!(got.dimensions(), (23 * scale, 17 * scale), "{stem}");
            let (w, h, want) = direct(&model, &input);
            assert_eq!((w, h), got.dimensions());
            let worst = got
                .as_raw()
                .iter()
                .zip(&want)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 1, "{stem}: off by {worst} levels");
            outputs.push(got.into_raw());
        }
        // (The files differ: each embeds its graph, with its own input path.)
        assert!(outputs[0] == outputs[1], "{stem}: runs differ");
    }
}

#[test]
fn models_resolve_in_upscale_models_and_gray_images_come_out_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("models/upscale_models/sub");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(
        fixture("compact_x2.safetensors"),
        folder.join("tiny.safetensors"),
    )
    .unwrap();
    let input = write_input(dir.path(), true);
    let out = run(
        dir.path(),
        &["--models", dir.path().join("models").to_str().unwrap()],
        &[
            "model=sub/tiny.safetensors".into(),
            format!("image={}", input.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let png = image::open(only_png(dir.path())).unwrap();
    assert_eq!((png.width(), png.height()), (46, 34));
    assert!(png.color().has_color(), "{:?}", png.color());
}

#[test]
fn pickles_and_missing_models_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), false);
    let pth = dir.path().join("4x-UltraSharp.pth");
    std::fs::write(&pth, b"PK\x03\x04 not really a zip").unwrap();
    let out = run(
        dir.path(),
        &[],
        &[
            format!("model={}", pth.display()),
            format!("image={}", input.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("node `loader` (UpscaleModelLoader)"), "{err}");
    assert!(
        err.contains("pickled") && err.contains("st.save_file"),
        "{err}"
    );
    assert!(!dir.path().join("output").exists());

    let out = run(
        dir.path(),
        &[],
        &[
            "model=no_such_upscaler.safetensors".into(),
            format!("image={}", input.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no_such_upscaler") && err.contains("upscale_models"),
        "{err}"
    );
}
