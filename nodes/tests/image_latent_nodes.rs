//! ComfyUI's everyday latent, image and mask nodes against closed forms and
//! ComfyUI's stated semantics on small hand-made tensors: the resampling
//! filters of `common_upscale` (PyTorch's formulas, ComfyUI's bislerp,
//! Pillow's Lanczos), the scale nodes' size rules, latent batches,
//! compositing and blending, `.latent` files, masks, blur and sharpen,
//! outpainting pads, and bad inputs as errors naming the input.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use weft_core::{
    CancelToken, EventSink, Executor, Latent, LatentSpace, RunOptions, RunReport, SourceFile, Value,
};
use weft_nodes::image::resample::{center_crop_box, common_upscale, python_round, UpscaleMethod};
use weft_nodes::image::{
    feather_mask, gaussian_kernel, grow_mask, image_batch, image_blur, image_composite_masked,
    image_crop, image_pad_for_outpaint, image_sharpen, image_to_mask, mask_to_image,
};
use weft_nodes::latent::{
    decode_latent_file, encode_latent_file, latent_blend, latent_composite, latent_from_batch,
    repeat_latent_batch, OLD_FORMAT_SCALE,
};

// ---------------------------------------------------------------- helpers

fn t4(data: &[f32], dims: (usize, usize, usize, usize)) -> Tensor {
    Tensor::from_vec(data.to_vec(), dims, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "lengths: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "item {i}: got {g}, want {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

fn resize(
    data: &[f32],
    dims: (usize, usize, usize, usize),
    w: usize,
    h: usize,
    m: UpscaleMethod,
) -> Vec<f32> {
    values(&common_upscale(&t4(data, dims), w, h, m, false).unwrap())
}

/// The 2-D result of separable per-axis weights `ws` (rows) and `wx`
/// (columns) applied to a `h`×`w` plane: Σ wy·wx·v.
fn separable(
    plane: &[f32],
    w: usize,
    wy: &[Vec<(usize, f32)>],
    wx: &[Vec<(usize, f32)>],
) -> Vec<f32> {
    let mut out = Vec::new();
    for ty in wy {
        for tx in wx {
            let mut s = 0.0;
            for &(y, ky) in ty {
                for &(x, kx) in tx {
                    s += ky * kx * plane[y * w + x];
                }
            }
            out.push(s);
        }
    }
    out
}

fn latent(data: &[f32], dims: (usize, usize, usize, usize)) -> Latent {
    Latent {
        samples: t4(data, dims),
        space: LatentSpace::new("sd15"),
        noise_mask: None,
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-image-latent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(text: &str, out_dir: &Path) -> RunReport {
    let registry = weft_nodes::builtin_registry();
    let graph = weft_core::load(SourceFile::new("test.ron", text), &registry, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        out_dir: out_dir.to_path_buf(),
        workers: 1,
        ..RunOptions::default()
    };
    Executor::new(64 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap()
}

/// Runs `nodes` (RON node entries) up to `target` and returns that node's
/// output number `index`.
fn eval(nodes: &str, target: &str, index: usize) -> Value {
    let text = format!(r#"( nodes: {{ {nodes} "unused_output": Print(value: 0), }} )"#);
    let graph = weft_core::load(
        SourceFile::new("test.ron", &text),
        &weft_nodes::builtin_registry(),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        out_dir: scratch("eval"),
        workers: 1,
        targets: Some(vec![target.into()]),
        ..RunOptions::default()
    };
    let report = Executor::new(64 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap();
    assert!(report.success(), "{:?}", report.failed);
    report.output(target).expect("target ran")[index].clone()
}

/// The failure message of the one node that failed in `nodes`, run with
/// `target` as the target.
fn failure(nodes: &str, target: &str) -> String {
    let dir = scratch("failure");
    let text = format!(r#"( nodes: {{ {nodes} "unused_output": Print(value: 0), }} )"#);
    let graph = weft_core::load(
        SourceFile::new("test.ron", &text),
        &weft_nodes::builtin_registry(),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        out_dir: dir,
        workers: 1,
        targets: Some(vec![target.into()]),
        ..RunOptions::default()
    };
    let report = Executor::new(64 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    report.failed[0].message.clone()
}

fn dims(v: &Value) -> Vec<usize> {
    match v {
        Value::Image(t) | Value::Mask(t) => t.dims().to_vec(),
        Value::Latent(l) => l.samples.dims().to_vec(),
        other => panic!("not a tensor: {other:?}"),
    }
}

// ------------------------------------------------------- resampling filters

#[test]
fn nearest_exact_picks_the_pixel_under_each_centre() {
    // 2×2 → 4×4: every pixel doubles.
    let out = resize(
        &[1., 2., 3., 4.],
        (1, 1, 2, 2),
        4,
        4,
        UpscaleMethod::NearestExact,
    );
    #[rustfmt::skip]
    let want = [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.];
    assert_eq!(out, want);
    // 3 → 2: source ⌊(x + ½)·1.5⌋ = 0, 2 (PyTorch's "nearest" would take 0, 1).
    let out = resize(
        &[10., 20., 30.],
        (1, 1, 1, 3),
        2,
        1,
        UpscaleMethod::NearestExact,
    );
    assert_eq!(out, [10., 30.]);
}

#[test]
fn bilinear_2x2_to_4x4_is_torchs_align_corners_false() {
    // Positions (x + ½)/2 − ½ = −¼ (clamped to 0), ¼, ¾, 1¼ (past the last
    // pixel): per-axis weights [1, 0], [¾, ¼], [¼, ¾], [0, 1].
    let w = vec![
        vec![(0, 1.0), (1, 0.0)],
        vec![(0, 0.75), (1, 0.25)],
        vec![(0, 0.25), (1, 0.75)],
        vec![(0, 0.0), (1, 1.0)],
    ];
    let src = [0., 1., 2., 3.];
    let out = resize(&src, (1, 1, 2, 2), 4, 4, UpscaleMethod::Bilinear);
    assert_close(&out, &separable(&src, 2, &w, &w), 1e-6);
    assert_close(&out[..4], &[0., 0.25, 0.75, 1.], 1e-6);
    // Downscaling 4 → 2 samples at 0.5 and 2.5: the pair means.
    let out = resize(
        &[0., 1., 2., 3.],
        (1, 1, 1, 4),
        2,
        1,
        UpscaleMethod::Bilinear,
    );
    assert_close(&out, &[0.5, 2.5], 1e-6);
}

#[test]
fn bicubic_2x2_to_4x4_uses_keys_a_minus_075_with_edge_taps() {
    // Keys' cubic with a = −0.75: for t = ¾ the four weights are
    // W(1.75) = −0.03515625, W(0.75) = 0.26171875, W(0.25) = 0.87890625,
    // W(1.25) = −0.10546875. Output x = 0 sits at −¼ (t = ¾ past tap −1;
    // taps −2, −1, 0, 1 clamp to 0, 0, 0, 1); x = 1 at ¼ (t = ¼; taps
    // −1, 0, 1, 2 → 0, 0, 1, 1); x = 2, 3 mirror them.
    let (a, b, c, d) = (-0.03515625f32, 0.26171875f32, 0.87890625f32, -0.10546875f32);
    let w = vec![
        vec![(0, a + b + c), (1, d)],
        vec![(0, d + c), (1, b + a)],
        vec![(0, a + b), (1, c + d)],
        vec![(0, d), (1, c + b + a)],
    ];
    let src = [0., 1., 2., 3.];
    let out = resize(&src, (1, 1, 2, 2), 4, 4, UpscaleMethod::Bicubic);
    assert_close(&out, &separable(&src, 2, &w, &w), 1e-6);
    // A 0 → 1 step overshoots on both sides, as PyTorch's bicubic does.
    let out = resize(&[0., 1.], (1, 1, 1, 2), 4, 1, UpscaleMethod::Bicubic);
    // −0.10546875, 0.2265625, 0.7734375, 1.10546875:
    let want = [-27.0, 58.0, 198.0, 283.0].map(|n: f32| n / 256.0);
    assert_close(&out, &want, 1e-6);
}

#[test]
fn area_is_adaptive_average_pooling() {
    // 2×2 → 4×4: windows ⌊i/2⌋ .. ⌈(i+1)/2⌉ hold one pixel each: doubling.
    let out = resize(&[1., 2., 3., 4.], (1, 1, 2, 2), 4, 4, UpscaleMethod::Area);
    #[rustfmt::skip]
    let want = [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.];
    assert_close(&out, &want, 1e-6);
    // 4×4 → 2×2: block means.
    let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let out = resize(&src, (1, 1, 4, 4), 2, 2, UpscaleMethod::Area);
    assert_close(&out, &[2.5, 4.5, 10.5, 12.5], 1e-6);
    // 3 → 2: overlapping windows [0, 2) and [1, 3).
    let out = resize(&[1., 2., 6.], (1, 1, 1, 3), 2, 1, UpscaleMethod::Area);
    assert_close(&out, &[1.5, 4.0], 1e-6);
}

#[test]
fn bislerp_slerps_directions_and_interpolates_norms() {
    // Two cells with channel vectors (3, 0) and (0, 4), 2 → 4 wide: the
    // second output sits a quarter of the way (bilinear position ¼), so its
    // direction is 22.5° and its norm 3·¾ + 4·¼ = 3.25.
    let data = [3., 0., 0., 4.]; // [1, 2, 1, 2]: channel 0 = (3, 0), channel 1 = (0, 4)
    let out = resize(&data, (1, 2, 1, 2), 4, 1, UpscaleMethod::Bislerp);
    let angle = std::f32::consts::FRAC_PI_8;
    let v = |x: usize| (out[x], out[4 + x]);
    assert_close(&[v(0).0, v(0).1], &[3.0, 0.0], 1e-5);
    assert_close(
        &[v(1).0, v(1).1],
        &[3.25 * angle.cos(), 3.25 * angle.sin()],
        1e-5,
    );
    assert_close(&[v(3).0, v(3).1], &[0.0, 4.0], 1e-5);

    // Unit vectors stay unit vectors: a 3×3 field of 4-channel directions
    // upscaled to 7×5 keeps every norm at 1.
    let (h, w, c) = (3, 3, 4);
    let mut field = vec![0f32; c * h * w];
    for p in 0..h * w {
        let dir: Vec<f32> = (0..c).map(|k| ((p * 7 + k * 3) % 5) as f32 + 0.5).collect();
        let n = dir.iter().map(|v| v * v).sum::<f32>().sqrt();
        for k in 0..c {
            field[k * h * w + p] = dir[k] / n;
        }
    }
    let out = resize(&field, (1, c, h, w), 7, 5, UpscaleMethod::Bislerp);
    for p in 0..35 {
        let n: f32 = (0..c).map(|k| out[k * 35 + p].powi(2)).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "pixel {p}: norm {n}");
    }

    // ComfyUI's edge rule: parallel vectors give the first one unchanged.
    let out = resize(
        &[1., 2., 0., 0.],
        (1, 2, 1, 2),
        4,
        1,
        UpscaleMethod::Bislerp,
    );
    assert_close(&out[..4], &[1., 1., 1., 2.], 1e-6);
}

#[test]
fn lanczos_matches_pillow_on_8_bit_values() {
    // A 6×4 8-bit plane, given as (n + ½)/255 so the 8-bit truncation is
    // unambiguous; expectations from Pillow 13.0 `Image.resize(LANCZOS)`.
    let src: [u8; 24] = [
        11, 64, 117, 170, 223, 20, 108, 161, 214, 11, 64, 117, 205, 2, 55, 108, 161, 214, 46, 99,
        152, 205, 2, 55,
    ];
    let plane: Vec<f32> = src.iter().map(|&n| (n as f32 + 0.5) / 255.0).collect();
    let cases: [((usize, usize), &[u8]); 5] = [
        (
            (9, 7),
            &[
                1, 20, 56, 90, 139, 214, 255, 120, 0, 25, 58, 122, 160, 133, 125, 172, 102, 26, 92,
                116, 184, 228, 117, 8, 50, 98, 107, 205, 135, 91, 134, 80, 21, 86, 173, 207, 217,
                106, 0, 34, 95, 126, 149, 186, 210, 105, 77, 61, 92, 170, 172, 73, 71, 116, 18, 61,
                128, 156, 222, 183, 7, 0, 45,
            ],
        ),
        ((3, 2), &[96, 125, 116, 100, 110, 110]),
        (
            (8, 4),
            &[
                8, 38, 87, 122, 159, 239, 145, 4, 105, 128, 208, 196, 29, 17, 97, 120, 221, 80, 0,
                66, 103, 138, 187, 217, 43, 73, 118, 165, 216, 71, 0, 63,
            ],
        ),
        (
            (6, 3),
            &[
                22, 105, 158, 123, 172, 31, 173, 82, 135, 44, 113, 182, 93, 58, 111, 194, 53, 102,
            ],
        ),
        (
            (13, 5),
            &[
                3, 12, 34, 62, 87, 111, 138, 176, 235, 249, 157, 48, 0, 53, 72, 108, 164, 211, 199,
                127, 57, 56, 94, 98, 78, 69, 211, 175, 114, 87, 116, 133, 80, 25, 33, 95, 158, 194,
                209, 185, 140, 65, 12, 16, 71, 123, 152, 145, 126, 138, 164, 179, 27, 43, 76, 115,
                136, 164, 214, 213, 120, 6, 0, 27, 60,
            ],
        ),
    ];
    for ((w, h), want) in cases {
        let out = resize(&plane, (1, 1, 4, 6), w, h, UpscaleMethod::Lanczos);
        let got: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(got, want, "{w}×{h}");
        assert!(out
            .iter()
            .all(|v| (v * 255.0 - (v * 255.0).round()).abs() < 1e-3));
    }
    // Same size: only the 8-bit quantisation.
    let out = resize(&plane, (1, 1, 4, 6), 6, 4, UpscaleMethod::Lanczos);
    let want: Vec<f32> = src.iter().map(|&n| n as f32 / 255.0).collect();
    assert_close(&out, &want, 1e-7);
}

#[test]
fn center_crop_follows_comfyuis_rule_and_pythons_rounding() {
    // 6×4 to a square: round((6 − 6·(1/1.5))/2) = 1 column off each side.
    assert_eq!(center_crop_box(6, 4, 2, 2), (1, 0, 4, 4));
    // 5×2 to a square: round(1.5) = 2 (half to even), one column left.
    assert_eq!(center_crop_box(5, 2, 2, 2), (2, 0, 1, 2));
    // Taller than the target: rows go.
    assert_eq!(center_crop_box(4, 8, 4, 4), (0, 2, 4, 4));
    assert_eq!(center_crop_box(4, 4, 8, 8), (0, 0, 4, 4));
    assert_eq!(
        (python_round(2.5), python_round(3.5), python_round(-0.5)),
        (2, 4, 0)
    );
    // The crop happens before resizing: a 6×4 ramp to 2×2 nearest-exact
    // reads columns 1 + {1, 3} of the kept 4×4.
    let src: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let out = common_upscale(
        &t4(&src, (1, 1, 4, 6)),
        2,
        2,
        UpscaleMethod::NearestExact,
        true,
    )
    .unwrap();
    assert_eq!(values(&out), [8., 10., 20., 22.]);
}

#[test]
fn resizing_to_nothing_is_an_error_not_a_panic() {
    let x = t4(&[1., 2., 3., 4.], (1, 1, 2, 2));
    assert!(common_upscale(&x, 0, 4, UpscaleMethod::Bilinear, false).is_err());
    assert!(common_upscale(&x, 4, 0, UpscaleMethod::Lanczos, false).is_err());
    let empty = Tensor::zeros((1, 1, 0, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(common_upscale(&empty, 4, 4, UpscaleMethod::Bislerp, false).is_err());
}

// ------------------------------------------------------------- scale nodes

#[test]
fn image_scale_nodes_compute_sizes_as_comfyui() {
    let image = r#""mask": SolidMask(value: 0.5, width: 5, height: 3), "img": MaskToImage(mask: Link("mask", "MASK")),"#;
    // Height 6 with width 0: the width follows, round(5·6/3) = 10.
    let v = eval(
        &format!(
            r#"{image} "s": ImageScale(image: Link("img", "IMAGE"), upscale_method: "bicubic", width: 0, height: 6, crop: "disabled"),"#
        ),
        "s",
        0,
    );
    assert_eq!(dims(&v), [1, 3, 6, 10]);
    // Both 0: unchanged.
    let v = eval(
        &format!(r#"{image} "s": ImageScale(image: Link("img", "IMAGE"), width: 0, height: 0),"#),
        "s",
        0,
    );
    assert_eq!(dims(&v), [1, 3, 3, 5]);
    // round(5·1.5) = round(7.5) = 8 and round(3·1.5) = round(4.5) = 4.
    let v = eval(
        &format!(
            r#"{image} "s": ImageScaleBy(image: Link("img", "IMAGE"), upscale_method: "lanczos", scale_by: 1.5),"#
        ),
        "s",
        0,
    );
    assert_eq!(dims(&v), [1, 3, 4, 8]);
    let Value::Image(t) = &v else { unreachable!() };
    assert!(
        values(t).iter().all(|&p| (p - 127.0 / 255.0).abs() < 1e-6),
        "lanczos keeps a flat 8-bit field"
    );
    // 100×50 to 0.01 MP: s = √(10485.76/5000); 144.8 → 145, 72.4 → 72;
    // with steps of 8: round(18.1)·8 = 144, round(9.05)·8 = 72.
    let wide = r#""mask": SolidMask(value: 1.0, width: 100, height: 50), "img": MaskToImage(mask: Link("mask", "MASK")),"#;
    let v = eval(
        &format!(
            r#"{wide} "s": ImageScaleToTotalPixels(image: Link("img", "IMAGE"), upscale_method: "area", megapixels: 0.01),"#
        ),
        "s",
        0,
    );
    assert_eq!(dims(&v), [1, 3, 72, 145]);
    let v = eval(
        &format!(
            r#"{wide} "s": ImageScaleToTotalPixels(image: Link("img", "IMAGE"), megapixels: 0.01, resolution_steps: 8),"#
        ),
        "s",
        0,
    );
    assert_eq!(dims(&v), [1, 3, 72, 144]);
}

#[test]
fn latent_upscale_nodes_compute_sizes_as_comfyui() {
    let empty = r#""e": EmptyLatentImage(width: 512, height: 256, batch_size: 2),"#;
    // Width 0: round(64·768/32) = 1536 pixels wide, ÷ 8 = 192 cells.
    let v = eval(
        &format!(
            r#"{empty} "u": LatentUpscale(samples: Link("e", "LATENT"), upscale_method: "bislerp", width: 0, height: 768, crop: "disabled"),"#
        ),
        "u",
        0,
    );
    assert_eq!(dims(&v), [2, 4, 96, 192]);
    // At least 64 pixels a side: 8 → 64.
    let v = eval(
        &format!(
            r#"{empty} "u": LatentUpscale(samples: Link("e", "LATENT"), width: 8, height: 128, crop: "center"),"#
        ),
        "u",
        0,
    );
    assert_eq!(dims(&v), [2, 4, 16, 8]);
    // 5 × 1.5 = 7.5 → 8 cells, 3 × 1.5 = 4.5 → 4 (Python's round).
    let small = r#""e": EmptyLatentImage(width: 40, height: 24),"#;
    let v = eval(
        &format!(
            r#"{small} "u": LatentUpscaleBy(samples: Link("e", "LATENT"), upscale_method: "area", scale_by: 1.5),"#
        ),
        "u",
        0,
    );
    assert_eq!(dims(&v), [1, 4, 4, 8]);
    let Value::Latent(l) = &v else { unreachable!() };
    assert_eq!(l.space, LatentSpace::new("sd15"), "the space is kept");
}

#[test]
fn scaling_to_zero_is_an_error_naming_the_input() {
    let msg = failure(
        r#""e": EmptyLatentImage(width: 40, height: 24), "u": LatentUpscaleBy(samples: Link("e", "LATENT"), scale_by: 0.1),"#,
        "u",
    );
    assert!(msg.contains("input `scale_by`"), "{msg}");
    let msg = failure(
        r#""m": SolidMask(width: 5, height: 3), "i": MaskToImage(mask: Link("m", "MASK")), "s": ImageScaleBy(image: Link("i", "IMAGE"), scale_by: 0.1),"#,
        "s",
    );
    assert!(msg.contains("input `scale_by`"), "{msg}");
}

// ----------------------------------------------------------- latent batches

#[test]
fn latent_from_batch_and_repeat_follow_comfyui() {
    let l = latent(&[0., 1., 2., 3.], (4, 1, 1, 1));
    let got = latent_from_batch(&l, 1, 2).unwrap();
    assert_eq!(values(&got.samples), [1., 2.]);
    // A length past the end is cut, as in ComfyUI.
    assert_eq!(values(&latent_from_batch(&l, 3, 5).unwrap().samples), [3.]);
    // An index past the batch is an error (ComfyUI would clamp it).
    let err = latent_from_batch(&l, 4, 1).unwrap_err();
    assert_eq!(err.input.as_deref(), Some("batch_index"), "{err}");

    // Per-item noise masks follow the items; a single mask stays single.
    let masked = Latent {
        noise_mask: Some(t4(&[10., 11., 12., 13.], (4, 1, 1, 1))),
        ..l.clone()
    };
    let got = latent_from_batch(&masked, 2, 2).unwrap();
    assert_eq!(values(got.noise_mask.as_ref().unwrap()), [12., 13.]);
    let single = Latent {
        noise_mask: Some(t4(&[7.], (1, 1, 1, 1))),
        ..l.clone()
    };
    assert_eq!(
        values(
            latent_from_batch(&single, 2, 2)
                .unwrap()
                .noise_mask
                .as_ref()
                .unwrap()
        ),
        [7.]
    );

    let two = Latent {
        noise_mask: Some(t4(&[5., 6.], (2, 1, 1, 1))),
        ..latent(&[0., 1.], (2, 1, 1, 1))
    };
    let rep = repeat_latent_batch(&two, 3).unwrap();
    assert_eq!(values(&rep.samples), [0., 1., 0., 1., 0., 1.]);
    assert_eq!(
        values(rep.noise_mask.as_ref().unwrap()),
        [5., 6., 5., 6., 5., 6.]
    );
    assert_eq!(
        repeat_latent_batch(&two, 0).unwrap_err().input.as_deref(),
        Some("amount")
    );

    let msg = failure(
        r#""e": EmptyLatentImage(width: 64, height: 64, batch_size: 2), "f": LatentFromBatch(samples: Link("e", "LATENT"), batch_index: 5),"#,
        "f",
    );
    assert!(
        msg.contains("input `batch_index`") && msg.contains("batch of 2"),
        "{msg}"
    );
}

#[test]
fn latent_composite_feathers_the_inner_edges() {
    // A 4×4 block of ones pasted into 8×8 zeros at cell (2, 2) with a
    // feather of 16 px = 2 cells: every side lies inside, so rows and
    // columns ramp (k + 1)/2 from each edge: ½, 1, 1, ½.
    let to = latent(&[0.0; 64], (1, 1, 8, 8));
    let from = latent(&[1.0; 16], (1, 1, 4, 4));
    let out = values(&latent_composite(&to, &from, 16, 16, 16).unwrap().samples);
    let ramp = [0.5, 1.0, 1.0, 0.5];
    for y in 0..8 {
        for x in 0..8 {
            let want = if (2..6).contains(&y) && (2..6).contains(&x) {
                ramp[y - 2] * ramp[x - 2]
            } else {
                0.0
            };
            assert_eq!(out[y * 8 + x], want, "({x}, {y})");
        }
    }
    // At x = 0 the left side touches samples_to's edge: no ramp there.
    let out = values(&latent_composite(&to, &from, 0, 16, 16).unwrap().samples);
    assert_eq!(&out[2 * 8..2 * 8 + 5], &[0.5, 0.5, 0.5, 0.25, 0.0]);
    // Feather 0 pastes hard and cuts at the edge: at cell 6 two columns fit.
    let out = values(&latent_composite(&to, &from, 48, 0, 0).unwrap().samples);
    assert_eq!(&out[..8], &[0., 0., 0., 0., 0., 0., 1., 1.]);
    assert_eq!(out.iter().sum::<f32>(), 8.0);
    // Blending with what was there: ½·from + ½·to at the ramp's ½ cells.
    let twos = latent(&[2.0; 64], (1, 1, 8, 8));
    let out = values(&latent_composite(&twos, &from, 16, 16, 16).unwrap().samples);
    assert_eq!(out[2 * 8 + 3], 1.5);
    // Outside samples_to: an error naming x.
    let err = latent_composite(&to, &from, 64, 0, 0).unwrap_err();
    assert_eq!(err.input.as_deref(), Some("x"));
}

#[test]
fn latent_blend_weights_and_resizes_the_second() {
    let a = latent(&[1., 2., 3., 4.], (1, 1, 2, 2));
    let b = latent(&[5., 6., 7., 8.], (1, 1, 2, 2));
    let out = latent_blend(&a, &b, 0.25).unwrap();
    assert_close(&values(&out.samples), &[4., 5., 6., 7.], 1e-6);
    // A different size: bicubic with a centre crop to samples1's size; a
    // constant stays constant.
    let big = latent(&[3.0; 48], (1, 1, 6, 8));
    let out = latent_blend(&a, &big, 0.5).unwrap();
    assert_close(&values(&out.samples), &[2., 2.5, 3., 3.5], 1e-6);
    let wrong = latent(&[0.0; 8], (1, 2, 2, 2));
    assert_eq!(
        latent_blend(&a, &wrong, 0.5).unwrap_err().input.as_deref(),
        Some("samples2")
    );
}

// ------------------------------------------------------------ .latent files

/// A `.latent` file laid out as Python's safetensors writes ComfyUI's:
/// tensors ordered by name (the empty marker first, at offsets [0, 0]),
/// `prompt` metadata, `dtype` as given.
fn comfy_file(dims: &[usize], dtype: &str, data: &[u8], marker: bool) -> Vec<u8> {
    let mut header = String::from(r#"{"__metadata__":{"prompt":"{}"},"#);
    if marker {
        header.push_str(
            r#""latent_format_version_0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"#,
        );
    }
    header.push_str(&format!(
        r#""latent_tensor":{{"dtype":"{dtype}","shape":{dims:?},"data_offsets":[0,{}]}}}}"#,
        data.len()
    ));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn load_latent_reads_comfyuis_files_old_and_new() {
    let dir = scratch("load-latent");
    let data = [0.5f32, -1.25, 3.0, 0.0, 7.5, -0.125, 2.0, 1.0];
    let new = dir.join("new.latent");
    std::fs::write(
        &new,
        comfy_file(&[1, 4, 1, 2], "F32", &f32_bytes(&data), true),
    )
    .unwrap();
    // Old files (no marker) held latents × 0.18215; here in f16.
    let halves: Vec<u8> = data
        .iter()
        .flat_map(|&x| half_bits(x).to_le_bytes())
        .collect();
    let old = dir.join("old.latent");
    std::fs::write(&old, comfy_file(&[1, 4, 1, 2], "F16", &halves, false)).unwrap();

    let load = |path: &Path| {
        eval(
            &format!(
                r#""l": LoadLatent(latent: {:?}),"#,
                path.display().to_string()
            ),
            "l",
            0,
        )
    };
    let Value::Latent(l) = load(&new) else {
        unreachable!()
    };
    assert_eq!(l.samples.dims(), [1, 4, 1, 2]);
    assert_eq!(values(&l.samples), data, "new files are read as they are");
    assert_eq!(
        l.space,
        LatentSpace::new("sd15"),
        "4 channels without weft's record: SD's space"
    );
    let Value::Latent(l) = load(&old) else {
        unreachable!()
    };
    let want: Vec<f32> = data
        .iter()
        .map(|&x| (x as f64 * OLD_FORMAT_SCALE) as f32)
        .collect();
    assert_close(&values(&l.samples), &want, 1e-5);

    // Bad files are errors naming the input.
    let junk = dir.join("junk.latent");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let no_tensor = dir.join("other.latent");
    let mut other = comfy_file(&[2], "F32", &f32_bytes(&[1., 2.]), false);
    let at = other
        .windows(13)
        .position(|w| w == b"latent_tensor")
        .unwrap();
    other[at..at + 13].copy_from_slice(b"something_els");
    std::fs::write(&no_tensor, other).unwrap();
    for (path, why) in [
        (junk, "not a safetensors file"),
        (
            no_tensor,
            "no `latent_tensor` tensor (found: something_els)",
        ),
        (dir.join("missing.latent"), "cannot read"),
    ] {
        let msg = failure(
            &format!(
                r#""l": LoadLatent(latent: {:?}),"#,
                path.display().to_string()
            ),
            "l",
        );
        assert!(msg.contains("input `latent`") && msg.contains(why), "{msg}");
    }
}

/// f32 → IEEE half bits (round to nearest even), for values exact in f16.
fn half_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    if x == 0.0 {
        return sign;
    }
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = (bits >> 13) & 0x3ff;
    sign | ((exp as u16) << 10) | mant as u16
}

#[test]
fn save_latent_then_load_latent_is_bit_exact() {
    let dir = scratch("save-latent");
    // Values with full f32 mantissas, negative zero and a subnormal.
    let data: Vec<f32> = (0..2 * 4 * 3 * 5)
        .map(|i| match i {
            0 => -0.0,
            1 => f32::from_bits(1),
            _ => ((i as f32) * 0.7371).sin() * 13.37 + 1e-7 * i as f32,
        })
        .collect();
    let source = dir.join("source.latent");
    std::fs::write(
        &source,
        encode_latent_file(&t4(&data, (2, 4, 3, 5)), &[("weft.latent_space", "sd15")]).unwrap(),
    )
    .unwrap();
    let graph = format!(
        r#"( nodes: {{
            "load": LoadLatent(latent: {:?}),
            "up": LatentUpscaleBy(samples: Link("load", "LATENT"), scale_by: 1.0),
            "save": SaveLatent(samples: Link("up", "LATENT")),
            "again": SaveLatent(samples: Link("load", "LATENT"), filename_prefix: "latents/weft"),
        }} )"#,
        source.display().to_string()
    );
    let out = dir.join("out");
    let report = run(&graph, &out);
    assert!(report.success(), "{:?}", report.failed);
    let written: Vec<PathBuf> = ["save", "again"]
        .iter()
        .map(|n| match &report.output(n).unwrap()[0] {
            Value::String(s) => PathBuf::from(s.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    let mut names: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(&out).unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["latents/weft_00001_.latent", "latents/weft_00002_.latent"]
    );
    for path in &written {
        let bytes = std::fs::read(path).unwrap();
        let (samples, space) = decode_latent_file(&bytes).unwrap();
        assert_eq!(samples.dims(), [2, 4, 3, 5]);
        let bits: Vec<u32> = values(&samples).iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = data.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, want, "{}", path.display());
        assert_eq!(space.as_deref(), Some("sd15"));
        // ComfyUI's keys, with the marker, and the graph as metadata.
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        assert_eq!(header["latent_tensor"]["dtype"], "F32");
        assert_eq!(
            header["latent_tensor"]["shape"],
            serde_json::json!([2, 4, 3, 5])
        );
        assert_eq!(
            header["latent_format_version_0"]["shape"],
            serde_json::json!([0])
        );
        assert!(header["__metadata__"]["weft.graph"]
            .as_str()
            .unwrap()
            .contains("SaveLatent"));
    }
    // And back through LoadLatent: the same bits, shape and space.
    let v = eval(
        &format!(
            r#""l": LoadLatent(latent: {:?}),"#,
            written[0].display().to_string()
        ),
        "l",
        0,
    );
    let Value::Latent(l) = v else { unreachable!() };
    assert_eq!(l.samples.dims(), [2, 4, 3, 5]);
    let bits: Vec<u32> = values(&l.samples).iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, data.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert_eq!(l.space, LatentSpace::new("sd15"));
    // No temporary files are left beside them.
    let left: Vec<_> = std::fs::read_dir(out.join("latents")).unwrap().collect();
    assert_eq!(left.len(), 2);
    // The space travels in the metadata: a 1-channel pixel-space latent
    // comes back in the `pixels` space.
    let report = run(
        r#"( nodes: {
            "e": EmptyLatent(width: 4, height: 4, channels: 1, space: "pixels"),
            "s": SaveLatent(samples: Link("e", "LATENT"), filename_prefix: "pixels"),
        } )"#,
        &out,
    );
    assert!(report.success(), "{:?}", report.failed);
    let v = eval(
        &format!(
            r#""l": LoadLatent(latent: {:?}),"#,
            out.join("pixels_00001_.latent").display().to_string()
        ),
        "l",
        0,
    );
    let Value::Latent(l) = v else { unreachable!() };
    assert_eq!(
        (l.samples.dims(), &l.space),
        (&[1, 1, 4, 4][..], &LatentSpace::pixels())
    );
    // A prefix leaving the output folder is refused.
    let msg = failure(
        r#""e": EmptyLatentImage(width: 64, height: 64), "s": SaveLatent(samples: Link("e", "LATENT"), filename_prefix: "../up"),"#,
        "s",
    );
    assert!(msg.contains("input `filename_prefix`"), "{msg}");
}

// ---------------------------------------------------------------- masks

#[test]
fn grow_mask_on_a_single_pixel_square_and_tapered() {
    let mut px = vec![0f32; 25];
    px[12] = 1.0;
    let mask = Tensor::from_vec(px, (1, 5, 5), &Device::Cpu).unwrap();
    let ok = || Ok(());
    let ones = |t: &Tensor| -> Vec<usize> {
        values(t)
            .iter()
            .enumerate()
            .filter(|(_, v)| **v == 1.0)
            .map(|(i, _)| i)
            .collect()
    };
    // Tapered: the 4-neighbour cross; twice: the diamond of radius 2.
    assert_eq!(
        ones(&grow_mask(&mask, 1, true, &ok).unwrap()),
        [7, 11, 12, 13, 17]
    );
    let diamond = ones(&grow_mask(&mask, 2, true, &ok).unwrap());
    assert_eq!(diamond.len(), 13);
    assert!(!diamond.contains(&0) && diamond.contains(&2) && diamond.contains(&6));
    // Square: the 3×3 block; eroding it again leaves the centre.
    let square = grow_mask(&mask, 1, false, &ok).unwrap();
    assert_eq!(ones(&square), [6, 7, 8, 11, 12, 13, 16, 17, 18]);
    assert_eq!(ones(&grow_mask(&square, -1, false, &ok).unwrap()), [12]);
    // At a corner the window is cut: a 2×2 block.
    let mut corner = vec![0f32; 9];
    corner[0] = 1.0;
    let corner = Tensor::from_vec(corner, (1, 3, 3), &Device::Cpu).unwrap();
    assert_eq!(
        ones(&grow_mask(&corner, 1, false, &ok).unwrap()),
        [0, 1, 3, 4]
    );
    // Soft values: the maximum over the window.
    let soft = Tensor::from_vec(vec![0.2f32, 0.7, 0.1], (1, 1, 3), &Device::Cpu).unwrap();
    assert_eq!(
        values(&grow_mask(&soft, 1, true, &ok).unwrap()),
        [0.7, 0.7, 0.7]
    );
    assert_eq!(
        values(&grow_mask(&soft, -1, true, &ok).unwrap()),
        [0.2, 0.1, 0.1]
    );
}

#[test]
fn feather_mask_ramps_from_each_edge() {
    let mask = Tensor::ones((1, 4, 6), DType::F32, &Device::Cpu).unwrap();
    let out = values(&feather_mask(&mask, 3, 0, 2, 4).unwrap());
    let cols = [1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0, 1.0, 0.5];
    let rows = [1.0, 0.75, 0.5, 0.25];
    for y in 0..4 {
        for x in 0..6 {
            assert!(
                (out[y * 6 + x] - cols[x] * rows[y]).abs() < 1e-6,
                "({x}, {y}): {}",
                out[y * 6 + x]
            );
        }
    }
    // Ramps longer than the mask are cut to it.
    let out = values(&feather_mask(&mask, 100, 0, 0, 0).unwrap());
    assert_close(
        &out[..6],
        &[1. / 6., 2. / 6., 3. / 6., 4. / 6., 5. / 6., 1.],
        1e-6,
    );
}

#[test]
fn mask_and_image_conversions() {
    let rgb = t4(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], (1, 3, 1, 2));
    assert_eq!(values(&image_to_mask(&rgb, "green").unwrap()), [0.3, 0.4]);
    let err = image_to_mask(&rgb, "alpha").unwrap_err();
    assert_eq!(err.input.as_deref(), Some("channel"));
    let gray = t4(&[0.25, 0.75], (1, 1, 1, 2));
    assert_eq!(values(&image_to_mask(&gray, "blue").unwrap()), [0.25, 0.75]);
    let m = Tensor::from_vec(vec![0.0f32, 1.0], (1, 1, 2), &Device::Cpu).unwrap();
    let img = mask_to_image(&m).unwrap();
    assert_eq!(img.dims(), [1, 3, 1, 2]);
    assert_eq!(values(&img), [0., 1., 0., 1., 0., 1.]);

    let v = eval(
        r#""m": SolidMask(value: 0.25, width: 3, height: 2), "i": InvertMask(mask: Link("m", "MASK")),"#,
        "i",
        0,
    );
    let Value::Mask(t) = v else { unreachable!() };
    assert_eq!(t.dims(), [1, 2, 3]);
    assert_eq!(values(&t), [0.75; 6]);
    let v = eval(
        r#""m": SolidMask(value: 0.25, width: 3, height: 2), "i": MaskToImage(mask: Link("m", "MASK")), "n": ImageInvert(image: Link("i", "IMAGE")),"#,
        "n",
        0,
    );
    let Value::Image(t) = v else { unreachable!() };
    assert_eq!(values(&t), [0.75; 18]);
}

#[test]
fn load_image_mask_reads_a_channel_and_inverts_alpha() {
    let dir = scratch("load-mask");
    let path = dir.join("rgba.png");
    image::RgbaImage::from_fn(2, 1, |x, _| {
        image::Rgba([51 * (x as u8 + 1), 17, 0, if x == 0 { 255 } else { 0 }])
    })
    .save(&path)
    .unwrap();
    let load = |channel: &str| {
        let v = eval(
            &format!(
                r#""m": LoadImageMask(image: {:?}, channel: "{channel}"),"#,
                path.display().to_string()
            ),
            "m",
            0,
        );
        let Value::Mask(t) = v else { unreachable!() };
        assert_eq!(t.dims(), [1, 1, 2]);
        values(&t)
    };
    assert_eq!(load("alpha"), [0.0, 1.0], "1 − alpha: 1 where transparent");
    assert_close(&load("red"), &[0.2, 0.4], 1e-6);
    assert_close(&load("green"), &[17.0 / 255.0; 2], 1e-6);
    let msg = failure(r#""m": LoadImageMask(image: "/no/such/file.png"),"#, "m");
    assert!(msg.contains("input `image`"), "{msg}");
}

// ----------------------------------------------------------- image nodes

#[test]
fn blur_uses_comfyuis_gaussian_over_minus_one_to_one() {
    // Radius 1, σ = 1: taps at −1, 0, 1, weights e^(−d²/2) normalised.
    let k = gaussian_kernel(3, 1.0);
    let (c, e, d) = (1.0f32, (-0.5f32).exp(), (-1.0f32).exp());
    let s = c + 4.0 * e + 4.0 * d;
    assert_close(
        &k,
        &[
            d / s,
            e / s,
            d / s,
            e / s,
            c / s,
            e / s,
            d / s,
            e / s,
            d / s,
        ],
        1e-7,
    );
    // An impulse in a 5×5 image spreads into the kernel; the total stays.
    let mut px = vec![0f32; 25];
    px[12] = 1.0;
    let out = values(&image_blur(&t4(&px, (1, 1, 5, 5)), 1, 1.0).unwrap());
    assert_close(&out[6..9], &k[0..3], 1e-7);
    assert_close(&out[11..14], &k[3..6], 1e-7);
    assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    // Reflected borders (PyTorch's `reflect`: −1 reads 1): an impulse in the
    // corner against the direct sum over reflected indices.
    let mut corner = vec![0f32; 25];
    corner[0] = 1.0;
    let out = values(&image_blur(&t4(&corner, (1, 1, 5, 5)), 1, 1.0).unwrap());
    let reflect = |i: i64| {
        if i < 0 {
            -i
        } else if i > 4 {
            8 - i
        } else {
            i
        }
    };
    for y in 0..5i64 {
        for x in 0..5i64 {
            let mut want = 0.0;
            for ky in 0..3i64 {
                for kx in 0..3i64 {
                    if reflect(y + ky - 1) == 0 && reflect(x + kx - 1) == 0 {
                        want += k[(ky * 3 + kx) as usize];
                    }
                }
            }
            assert!(
                (out[(y * 5 + x) as usize] - want).abs() < 1e-7,
                "({x}, {y})"
            );
        }
    }
    // A flat image stays flat; a radius as large as the image is refused.
    let flat = t4(&[0.4; 12], (1, 3, 2, 2));
    assert_close(
        &values(&image_blur(&flat, 1, 2.0).unwrap()),
        &[0.4; 12],
        1e-6,
    );
    let err = image_blur(&flat, 2, 1.0).unwrap_err();
    assert_eq!(err.input.as_deref(), Some("blur_radius"), "{err}");
}

#[test]
fn sharpen_raises_the_centre_so_the_kernel_sums_to_one() {
    // 0.5 gray with a 0.6 centre, radius 1, σ = 1, alpha 0.1: the kernel is
    // −g elsewhere and 2 − g_c at the centre (−10·alpha = −1), so the centre
    // becomes 0.5 + 0.1·(2 − g_c) and its 4-neighbours 0.5 − 0.1·g_e.
    let mut px = vec![0.5f32; 25];
    px[12] = 0.6;
    let out = values(&image_sharpen(&t4(&px, (1, 1, 5, 5)), 1, 1.0, 0.1).unwrap());
    let k = gaussian_kernel(3, 1.0);
    assert!(
        (out[12] - (0.5 + 0.1 * (2.0 - k[4]))).abs() < 1e-6,
        "{}",
        out[12]
    );
    assert!((out[7] - (0.5 - 0.1 * k[1])).abs() < 1e-6, "{}", out[7]);
    // Results are clamped to [0, 1]; alpha 0 is the identity.
    let hard = t4(&[0., 0., 0., 1., 0., 0., 0., 0., 0.], (1, 1, 3, 3));
    let out = values(&image_sharpen(&hard, 1, 1.0, 5.0).unwrap());
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_close(
        &values(&image_sharpen(&hard, 1, 1.0, 0.0).unwrap()),
        &values(&hard),
        1e-6,
    );
}

#[test]
fn image_pad_for_outpaint_mask_follows_comfyuis_formula() {
    // 20×20 padded 8 left and 8 below, feathering 4. Inside the original,
    // d = min(20 − i (bottom padded), j (left padded)); mask ((4 − d)/4)².
    let image = t4(&[0.2; 400], (1, 1, 20, 20));
    let (img, mask) = image_pad_for_outpaint(&image, [8, 0, 0, 8], 4).unwrap();
    assert_eq!(img.dims(), [1, 1, 28, 28]);
    assert_eq!(mask.dims(), [1, 28, 28]);
    let (img, mask) = (values(&img), values(&mask));
    let at = |v: &[f32], y: usize, x: usize| v[y * 28 + x];
    assert_eq!(at(&img, 0, 0), 0.5, "the new border is gray");
    assert_eq!(at(&img, 27, 27), 0.5);
    assert_eq!(at(&img, 0, 8), 0.2, "the original is kept");
    assert_eq!(at(&mask, 0, 7), 1.0, "padding is masked");
    assert_eq!(at(&mask, 20, 15), 1.0);
    // Row 0 of the original, from its left edge: d = 0, 1, 2, 3, 4.
    let row: Vec<f32> = (8..13).map(|x| at(&mask, 0, x)).collect();
    assert_eq!(row, [1.0, 0.5625, 0.25, 0.0625, 0.0]);
    // Up from the bottom edge d counts from 1: rows 19, 18, 17, 16.
    let col: Vec<f32> = (16..20).rev().map(|y| at(&mask, y, 15)).collect();
    assert_eq!(col, [0.5625, 0.25, 0.0625, 0.0]);
    assert_eq!(
        at(&mask, 0, 27),
        0.0,
        "the unpadded top and right do not fade"
    );
    // No fade unless 2·feathering is less than both sides.
    let (_, mask) = image_pad_for_outpaint(&image, [8, 0, 0, 8], 10).unwrap();
    assert_eq!(values(&mask)[8], 0.0);
}

#[test]
fn crop_batch_and_composite() {
    let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let image = t4(&src, (1, 1, 3, 4));
    // A rectangle past the edge is cut; x, y past it move to the last pixel.
    assert_eq!(values(&image_crop(&image, 2, 2, 3, 1).unwrap()), [7., 11.]);
    assert_eq!(values(&image_crop(&image, 5, 5, 9, 9).unwrap()), [11.]);
    assert_eq!(
        image_crop(&image, 0, 1, 0, 0).unwrap_err().input.as_deref(),
        Some("width")
    );

    // ImageBatch: a gray 2×2 joins an RGB 4×4 as colour, resized with
    // bilinear + centre crop (a constant stays constant).
    let rgb = t4(&[0.1; 48], (1, 3, 4, 4));
    let gray = t4(&[0.9; 6], (1, 1, 2, 3));
    let both = image_batch(&rgb, &gray).unwrap();
    assert_eq!(both.dims(), [2, 3, 4, 4]);
    assert_close(&values(&both)[48..], &[0.9; 48], 1e-6);

    // ImageCompositeMasked: a 2×2 white source at (3, 3) of a 4×4 black
    // destination shows one pixel; through a 0.5 mask, half.
    let dest = t4(&[0.0; 48], (1, 3, 4, 4));
    let source = t4(&[1.0; 12], (1, 3, 2, 2));
    let out = values(&image_composite_masked(&dest, &source, 3, 3, false, None).unwrap());
    assert_eq!(out.iter().sum::<f32>(), 3.0);
    assert_eq!(out[15], 1.0);
    let half = Tensor::full(0.5f32, (1, 8, 8), &Device::Cpu).unwrap();
    let out = values(&image_composite_masked(&dest, &source, 1, 0, false, Some(&half)).unwrap());
    assert_eq!(&out[..4], &[0.0, 0.5, 0.5, 0.0]);
    // resize_source fills the destination.
    let out = values(&image_composite_masked(&dest, &source, 0, 0, true, None).unwrap());
    assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    // A source batch of 1 is repeated to the destination's.
    let dest2 = t4(&[0.0; 32], (2, 1, 4, 4));
    let one = t4(&[1.0; 4], (1, 1, 2, 2));
    let out = values(&image_composite_masked(&dest2, &one, 0, 0, false, None).unwrap());
    assert_eq!(out[0], 1.0);
    assert_eq!(out[16], 1.0);
}

#[test]
fn preview_image_writes_to_the_temporary_folder() {
    let out = scratch("preview");
    let report = run(
        r#"( nodes: {
            "m": SolidMask(value: 0.5, width: 4, height: 3),
            "i": MaskToImage(mask: Link("m", "MASK")),
            "weft_test_preview": PreviewImage(images: Link("i", "IMAGE")),
        } )"#,
        &out,
    );
    assert!(report.success(), "{:?}", report.failed);
    let Value::String(paths) = &report.output("weft_test_preview").unwrap()[0] else {
        panic!()
    };
    let path = PathBuf::from(paths.to_string());
    assert!(
        path.starts_with(weft_nodes::image::preview_dir()),
        "{}",
        path.display()
    );
    let decoded = image::open(&path).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (4, 3));
    assert_eq!(decoded.get_pixel(0, 0).0, [128, 128, 128]);
    assert!(
        std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none()),
        "nothing in the output folder"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn node_inputs_are_checked_before_running() {
    // Zero sizes and unknown methods never reach a node.
    let registry = weft_nodes::builtin_registry();
    for bad in [
        r#""m": SolidMask(width: 0, height: 4),"#,
        r#""e": EmptyLatentImage(), "u": LatentUpscale(samples: Link("e", "LATENT"), upscale_method: "lanczos"),"#,
        r#""m": SolidMask(), "i": MaskToImage(mask: Link("m", "MASK")), "s": ImageScale(image: Link("i", "IMAGE"), upscale_method: "bislerp"),"#,
    ] {
        let text = format!("( nodes: {{ {bad} }} )");
        assert!(
            weft_core::load(SourceFile::new("bad.ron", &text), &registry, &[]).is_err(),
            "{bad}"
        );
    }
}
