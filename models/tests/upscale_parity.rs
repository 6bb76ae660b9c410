//! Upscale models against spandrel (what ComfyUI runs them with): tiny
//! RRDBNets in the original ESRGAN, Real-ESRGAN/BasicSR and BSRGAN key
//! layouts, ×4 and ×2, Real-ESRGAN's pixel-unshuffle ×2 and ×1, and
//! SRVGGNetCompact ×4 and ×2 (fixtures from
//! `scripts/make_upscale_fixtures.py`); detection from full-size shapes;
//! tiling; and the errors bad files get.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use weft_kernels::testing::max_diff;
use weft_models::upscale::{
    detect, Architecture, CompactConfig, EsrganConfig, EsrganLayout, Tiling, UpscaleModel,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upscale")
}

fn open(stem: &str) -> UpscaleModel {
    UpscaleModel::open(&fixtures().join(format!("{stem}.safetensors")))
        .unwrap_or_else(|e| panic!("{stem}: {e}"))
}

const STEMS: [&str; 8] = [
    "esrgan_x4_new",
    "esrgan_x4_old",
    "esrgan_x4_bsrgan",
    "esrgan_x2_gc32",
    "realesrgan_x2_unshuffle",
    "realesrgan_x1_unshuffle",
    "compact_x4",
    "compact_x2",
];

#[test]
fn every_fixture_matches_spandrel() {
    let refs = common::tensors(&fixtures());
    let info = common::json(&fixtures());
    let image = &refs["image"];
    for stem in STEMS {
        let model = open(stem);
        let want = &refs[stem];
        let got = model.forward(image).unwrap();
        assert_eq!(got.dims(), want.dims(), "{stem}");
        let d = max_diff(&got, want);
        eprintln!(
            "{stem}: {} max |weft − spandrel| = {d:.2e}",
            model.architecture().describe()
        );
        assert!(d < 1e-4, "{stem}: {d}");
        // What spandrel's loader said of the file (for the gc-32 ones).
        let said = &info["models"][stem];
        if let Some(scale) = said["scale"].as_u64() {
            assert_eq!(model.scale() as u64, scale, "{stem}");
            let a = model.architecture();
            assert_eq!(
                a.image_channels() as u64,
                said["input_channels"].as_u64().unwrap()
            );
            assert_eq!(
                a.out_channels() as u64,
                said["output_channels"].as_u64().unwrap()
            );
            let arch = said["architecture"].as_str().unwrap();
            assert_eq!(
                matches!(a, Architecture::Compact(_)),
                arch == "Compact",
                "{stem}"
            );
        }
        // A tile as large as the image is the whole image, exactly.
        let tiled = model
            .upscale(
                image,
                Tiling {
                    tile: 64,
                    overlap: 8,
                },
                &mut |_, _| true,
            )
            .unwrap();
        assert_eq!(max_diff(&tiled, &got), 0.0, "{stem}");
    }
}

#[test]
fn the_three_esrgan_layouts_are_one_network() {
    let config = |layout| EsrganConfig {
        layout,
        in_channels: 3,
        out_channels: 3,
        features: 8,
        growth: 8,
        blocks: 2,
        upsamples: 2,
        unshuffle: 1,
    };
    for (stem, layout) in [
        ("esrgan_x4_new", EsrganLayout::RealEsrgan),
        ("esrgan_x4_old", EsrganLayout::Esrgan),
        ("esrgan_x4_bsrgan", EsrganLayout::Bsrgan),
    ] {
        assert_eq!(
            open(stem).architecture(),
            &Architecture::Esrgan(config(layout)),
            "{stem}"
        );
    }
    let image = &common::tensors(&fixtures())["image"];
    let new = open("esrgan_x4_new").forward(image).unwrap();
    for stem in ["esrgan_x4_old", "esrgan_x4_bsrgan"] {
        assert_eq!(max_diff(&open(stem).forward(image).unwrap(), &new), 0.0);
    }
}

#[test]
fn sizes_come_from_the_weights() {
    let esrgan = |stem| match open(stem).architecture().clone() {
        Architecture::Esrgan(c) => c,
        other => panic!("{stem}: {other:?}"),
    };
    let x2 = esrgan("esrgan_x2_gc32");
    assert_eq!(
        (x2.features, x2.growth, x2.blocks, x2.upsamples),
        (4, 32, 1, 1)
    );
    assert_eq!((x2.scale(), x2.unshuffle), (2, 1));
    let u2 = esrgan("realesrgan_x2_unshuffle");
    assert_eq!(
        (u2.in_channels, u2.unshuffle, u2.upsamples, u2.scale()),
        (12, 2, 2, 2)
    );
    assert_eq!(u2.layout, EsrganLayout::RealEsrgan);
    let u1 = esrgan("realesrgan_x1_unshuffle");
    assert_eq!(
        (
            u1.in_channels,
            u1.unshuffle,
            u1.scale(),
            u1.image_channels()
        ),
        (48, 4, 1, 3)
    );
    assert_eq!(
        open("compact_x4").architecture(),
        &Architecture::Compact(CompactConfig {
            in_channels: 3,
            out_channels: 3,
            features: 8,
            convs: 3,
            scale: 4
        })
    );
    let c2 = open("compact_x2");
    assert_eq!(c2.scale(), 2);
    assert!(c2
        .architecture()
        .describe()
        .contains("2 convolutions, 6 features"));
}

/// A smooth test image with detail at every scale.
fn picture(h: usize, w: usize) -> Tensor {
    let mut v = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f32, x as f32);
                let s = ((fx * 0.31 + c as f32).sin() * (fy * 0.17).cos()
                    + (fx * fy * 0.013).sin() * 0.5)
                    * 0.25
                    + 0.5;
                v.push(s);
            }
        }
    }
    Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
}

/// Largest difference over the output pixels whose input position (y, x)
/// `keep` says.
fn diff_where(a: &Tensor, b: &Tensor, scale: usize, keep: impl Fn(usize, usize) -> bool) -> f32 {
    let (_, c, h, w) = a.dims4().unwrap();
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = 0f32;
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                if keep(y / scale, x / scale) {
                    let i = (ch * h + y) * w + x;
                    worst = worst.max((a[i] - b[i]).abs());
                }
            }
        }
    }
    worst
}

/// Tiles of 80 overlapping by 16 on 144 pixels: tile 0 is [0, 80), tile 1
/// [64, 144). The ×4 fixture sees 34 input pixels around each output
/// (2 blocks × 15 convolutions, the stem, the trunk and the upsampled
/// tail), so pixels 34 and more inside a tile's inner edge, where only
/// that tile counts, are the whole image's exactly; the seam band
/// in between is a blend of two slightly different answers.
#[test]
fn tiles_agree_with_the_whole_image_away_from_seams() {
    let model = open("esrgan_x4_old");
    let image = picture(144, 144);
    let whole = model.forward(&image).unwrap();
    let mut seen = 0;
    let tiled = model
        .upscale(
            &image,
            Tiling {
                tile: 80,
                overlap: 16,
            },
            &mut |done, total| {
                assert_eq!(total, 4);
                seen = done;
                true
            },
        )
        .unwrap();
    assert_eq!(seen, 4);
    assert_eq!(tiled.dims(), whole.dims());
    let far = |p: usize| !(80 - 34..64 + 34).contains(&p);
    let away = diff_where(&tiled, &whole, 4, |y, x| far(y) && far(x));
    let seams = diff_where(&tiled, &whole, 4, |_, _| true);
    let mean = (&tiled - &whole)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let range = whole.max_all().unwrap().to_scalar::<f32>().unwrap()
        - whole.min_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("tiled vs whole: {away:.2e} away from seams, {seams:.2e} at worst, {mean:.2e} on average (output range {range:.2})");
    assert!(away < 1e-4, "{away}");
    assert!(seams > away, "the seams should differ somewhat: {seams}");
    assert!(mean < 1e-2 * range, "{mean}");
}

#[test]
fn batches_and_channels() {
    let model = open("compact_x2");
    let a = picture(9, 7);
    let b = (picture(9, 7) * 0.5).unwrap();
    let batch = Tensor::cat(&[&a, &b], 0).unwrap();
    let out = model
        .upscale(&batch, Tiling::default(), &mut |_, _| true)
        .unwrap();
    assert_eq!(out.dims(), [2, 3, 18, 14]);
    let one = model.forward(&b).unwrap();
    assert!(max_diff(&out.narrow(0, 1, 1).unwrap(), &one) < 1e-6);
    // RRDBNets run a batch image by image; each is the image's own.
    let esrgan = open("esrgan_x2_gc32");
    let out = esrgan.forward(&batch).unwrap();
    assert_eq!(out.dims(), [2, 3, 18, 14]);
    for (i, x) in [&a, &b].into_iter().enumerate() {
        let one = esrgan.forward(x).unwrap();
        assert_eq!(max_diff(&out.narrow(0, i, 1).unwrap(), &one), 0.0);
    }
    let gray = a.narrow(1, 0, 1).unwrap();
    let err = model.forward(&gray).unwrap_err().to_string();
    assert!(err.contains("takes 3-channel images, got 1"), "{err}");
    let err = model
        .upscale(
            &a,
            Tiling {
                tile: 8,
                overlap: 4,
            },
            &mut |_, _| true,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("overlap"), "{err}");
}

// ---- detection from full-size shapes (no weights) ----

fn conv(shapes: &mut HashMap<String, Vec<usize>>, name: &str, o: usize, i: usize) {
    shapes.insert(format!("{name}.weight"), vec![o, i, 3, 3]);
    shapes.insert(format!("{name}.bias"), vec![o]);
}

/// The tensors of a full-size RRDBNet in the BasicSR layout.
fn basicsr(
    in_c: usize,
    nf: usize,
    gc: usize,
    blocks: usize,
    ups: usize,
) -> HashMap<String, Vec<usize>> {
    let mut s = HashMap::new();
    conv(&mut s, "conv_first", nf, in_c);
    for b in 0..blocks {
        for r in 1..=3 {
            for k in 1..=5 {
                let out = if k == 5 { nf } else { gc };
                conv(
                    &mut s,
                    &format!("body.{b}.rdb{r}.conv{k}"),
                    out,
                    nf + (k - 1) * gc,
                );
            }
        }
    }
    conv(&mut s, "conv_body", nf, nf);
    for u in 1..=ups {
        conv(&mut s, &format!("conv_up{u}"), nf, nf);
    }
    conv(&mut s, "conv_hr", nf, nf);
    conv(&mut s, "conv_last", 3, nf);
    s
}

/// The same in the original ESRGAN layout.
fn original(
    in_c: usize,
    nf: usize,
    gc: usize,
    blocks: usize,
    ups: usize,
) -> HashMap<String, Vec<usize>> {
    let mut s = HashMap::new();
    conv(&mut s, "model.0", nf, in_c);
    for b in 0..blocks {
        for r in 1..=3 {
            for k in 1..=5 {
                let out = if k == 5 { nf } else { gc };
                conv(
                    &mut s,
                    &format!("model.1.sub.{b}.RDB{r}.conv{k}.0"),
                    out,
                    nf + (k - 1) * gc,
                );
            }
        }
    }
    conv(&mut s, &format!("model.1.sub.{blocks}"), nf, nf);
    for u in 1..=ups {
        conv(&mut s, &format!("model.{}", 3 * u), nf, nf);
    }
    conv(&mut s, &format!("model.{}", 3 * ups + 2), nf, nf);
    conv(&mut s, &format!("model.{}", 3 * ups + 4), 3, nf);
    s
}

fn compact_shapes(nf: usize, convs: usize, scale: usize) -> HashMap<String, Vec<usize>> {
    let mut s = HashMap::new();
    conv(&mut s, "body.0", nf, 3);
    for i in 0..=convs {
        s.insert(format!("body.{}.weight", 2 * i + 1), vec![nf]);
        if i < convs {
            conv(&mut s, &format!("body.{}", 2 * i + 2), nf, nf);
        }
    }
    conv(
        &mut s,
        &format!("body.{}", 2 * convs + 2),
        3 * scale * scale,
        nf,
    );
    s
}

fn wrapped(prefix: &str, s: HashMap<String, Vec<usize>>) -> HashMap<String, Vec<usize>> {
    s.into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v))
        .collect()
}

#[test]
fn real_models_are_told_from_their_shapes() {
    let esrgan = |s: &HashMap<String, Vec<usize>>| match detect(s).unwrap() {
        Architecture::Esrgan(c) => c,
        other => panic!("{other:?}"),
    };
    // 4x-UltraSharp, Remacri, …: original layout, 23 blocks.
    let c = esrgan(&original(3, 64, 32, 23, 2));
    assert_eq!(
        (c.layout, c.features, c.growth, c.blocks, c.scale()),
        (EsrganLayout::Esrgan, 64, 32, 23, 4)
    );
    // 8x and 1x ESRGANs.
    assert_eq!(esrgan(&original(3, 64, 32, 23, 3)).scale(), 8);
    assert_eq!(esrgan(&original(3, 64, 32, 23, 0)).scale(), 1);
    // RealESRGAN_x4plus as converted from its .pth: params_ema inside.
    let c = esrgan(&wrapped("params_ema.", basicsr(3, 64, 32, 23, 2)));
    assert_eq!(
        (c.layout, c.scale(), c.blocks),
        (EsrganLayout::RealEsrgan, 4, 23)
    );
    // params (no EMA) and DataParallel's module.
    assert_eq!(
        esrgan(&wrapped("params.", basicsr(3, 64, 32, 23, 2))).scale(),
        4
    );
    assert_eq!(
        esrgan(&wrapped("module.", basicsr(3, 64, 32, 23, 2))).scale(),
        4
    );
    // Both wrappers: the EMA weights win, whatever the other holds.
    let mut both = wrapped("params_ema.", basicsr(3, 64, 32, 23, 2));
    both.extend(wrapped("params.", basicsr(3, 32, 32, 6, 2)));
    assert_eq!(esrgan(&both).features, 64);
    // RealESRGAN_x2plus: 12 input channels; a ×1 model: 48.
    let c = esrgan(&basicsr(12, 64, 32, 23, 2));
    assert_eq!((c.unshuffle, c.scale(), c.image_channels()), (2, 2, 3));
    let c = esrgan(&basicsr(48, 64, 32, 23, 2));
    assert_eq!((c.unshuffle, c.scale(), c.image_channels()), (4, 1, 3));
    // RealESRGAN_x4plus_anime_6B: 6 blocks.
    assert_eq!(esrgan(&basicsr(3, 64, 32, 6, 2)).blocks, 6);
    // realesr-general-x4v3 (32 convolutions) and realesr-animevideov3 (16).
    for (convs, scale) in [(32, 4), (16, 4), (16, 2)] {
        match detect(&compact_shapes(64, convs, scale)).unwrap() {
            Architecture::Compact(c) => {
                assert_eq!(
                    (c.features, c.convs, c.scale, c.out_channels),
                    (64, convs, scale, 3)
                )
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn other_files_are_named_not_run() {
    let err = |s: HashMap<String, Vec<usize>>| detect(&s).unwrap_err();
    let mut swin = HashMap::new();
    swin.insert(
        "layers.0.residual_group.blocks.0.attn.qkv.weight".into(),
        vec![180, 60],
    );
    swin.insert("conv_first.weight".into(), vec![60, 3, 3, 3]);
    let e = err(swin);
    assert!(
        e.contains("SwinIR") && e.contains("weft runs ESRGAN"),
        "{e}"
    );
    let mut plus = original(3, 64, 32, 2, 2);
    plus.insert(
        "model.1.sub.0.RDB1.conv1x1.weight".into(),
        vec![32, 64, 1, 1],
    );
    assert!(err(plus).contains("ESRGAN+"));
    let mut sd = HashMap::new();
    sd.insert(
        "model.diffusion_model.input_blocks.0.0.weight".into(),
        vec![320, 4, 3, 3],
    );
    assert!(err(sd).contains("Stable Diffusion"));
    let mut odd = HashMap::new();
    odd.insert("foo.weight".into(), vec![3]);
    odd.insert("bar.baz".into(), vec![3]);
    let e = err(odd);
    assert!(e.contains("`bar.…`") && e.contains("`foo.…`"), "{e}");
    assert!(err(HashMap::new()).contains("no tensors"));
    // An ESRGAN with a normalisation layer is not silently run without it.
    let mut norm = basicsr(3, 64, 32, 2, 2);
    norm.insert("body.0.rdb1.conv1.norm.weight".into(), vec![32]);
    let e = err(norm);
    assert!(e.contains("body.0.rdb1.conv1.norm.weight"), "{e}");
    // Misshapen tensors, as a header could state them: errors, not panics.
    let mut bad = basicsr(3, 64, 32, 2, 2);
    bad.insert("conv_first.weight".into(), vec![64]);
    assert!(err(bad).contains("conv_first"));
    let mut bad = compact_shapes(64, 4, 4);
    bad.insert("body.10.bias".into(), vec![7]);
    assert!(err(bad).contains("7 channels"));
    let mut bad = original(3, 64, 32, 2, 2);
    bad.insert("model.12.weight".into(), vec![3, 64, 3, 3]);
    assert!(!err(bad).is_empty());
    let mut relu = compact_shapes(64, 4, 4);
    relu.retain(|k, _| {
        !k.ends_with(".weight") || k.split('.').nth(1).unwrap().parse::<usize>().unwrap() % 2 == 0
    });
    assert!(err(relu).contains("PReLU"));
}

// ---- files ----

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixtures().join("compact_x2.safetensors")).unwrap();
    // Pickles, by extension and by content.
    let e = UpscaleModel::open(&write(dir.path(), "4x.pth", b"PK\x03\x04rest")).unwrap_err();
    assert!(
        e.contains("4x.pth") && e.contains("pickled") && e.contains("safetensors"),
        "{e}"
    );
    let e = UpscaleModel::open(&write(
        dir.path(),
        "renamed.safetensors",
        b"PK\x03\x04rest....",
    ))
    .unwrap_err();
    assert!(e.contains("pickled"), "{e}");
    // Truncated.
    let e = UpscaleModel::open(&write(
        dir.path(),
        "cut.safetensors",
        &good[..good.len() / 2],
    ))
    .unwrap_err();
    assert!(e.contains("cut.safetensors"), "{e}");
    let e = UpscaleModel::open(&dir.path().join("missing.safetensors")).unwrap_err();
    assert!(e.contains("missing.safetensors"), "{e}");
    // A file whose stated sizes disagree: one error listing the tensor.
    let weights =
        candle_core::safetensors::load(fixtures().join("compact_x2.safetensors"), &Device::Cpu)
            .unwrap();
    let mut broken = weights.clone();
    broken.insert(
        "body.2.weight".into(),
        Tensor::zeros((6, 5, 3, 3), DType::F16, &Device::Cpu).unwrap(),
    );
    let p = dir.path().join("broken.safetensors");
    candle_core::safetensors::save(&broken, &p).unwrap();
    let e = UpscaleModel::open(&p).unwrap_err();
    assert!(
        e.contains("body.2.weight") && e.contains("[6, 5, 3, 3]"),
        "{e}"
    );
    // Some other model altogether.
    let mut other = HashMap::new();
    other.insert(
        "lora_unet_down.lora_up.weight".to_string(),
        Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.path().join("lora.safetensors");
    candle_core::safetensors::save(&other, &p).unwrap();
    let e = UpscaleModel::open(&p).unwrap_err();
    assert!(e.contains("lora.safetensors") && e.contains("LoRA"), "{e}");
}
