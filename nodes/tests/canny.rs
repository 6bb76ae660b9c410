//! The Canny node: thin, continuous edges where the image steps, nothing on
//! flat images, hysteresis by connectivity, the threshold scale, shapes,
//! determinism and input errors.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use weft_core::{CancelToken, EventSink, Executor, RunOptions, RunReport, SourceFile, Value};
use weft_nodes::image::canny;

/// The threshold scale's anchor: the raw Sobel magnitude (kornia's scale)
/// that a full-contrast straight step reaches after the 5×5, σ = 1 blur,
/// 4·(k₀ + k₁) ≈ 2.5873. Thresholds below are fractions of it, so a change
/// of scale changes only this.
const STEP: f32 = 2.5873;

/// Just above the largest magnitude any image in [0, 1] reaches after the
/// blur, ≈ 1.051 · STEP (≈ 2.72, a full-contrast step slightly off an axis).
const PEAK: f32 = 1.072 * STEP;

/// A one-channel `[1, 1, h, w]` image from a per-pixel function of (x, y).
fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Tensor {
    let v: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| f(x, y))
        .collect();
    Tensor::from_vec(v, (1, 1, h, w), &Device::Cpu).unwrap()
}

/// A three-channel `[1, 3, h, w]` image from a per-pixel function of (x, y).
fn rgb(w: usize, h: usize, f: impl Fn(usize, usize) -> [f32; 3]) -> Tensor {
    let mut v = vec![0.0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            for (c, value) in f(x, y).into_iter().enumerate() {
                v[(c * h + y) * w + x] = value;
            }
        }
    }
    Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
}

/// Deterministic noise in [0, 1), `n` values.
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// The edge maps of a result, one `h·w` plane per batch item, after checking
/// the result has three identical channels holding only 0 and 1.
fn maps(out: &Tensor) -> Vec<Vec<f32>> {
    let (b, c, h, w) = out.dims4().unwrap();
    assert_eq!(c, 3, "the edge map has three channels");
    let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|&p| p == 0.0 || p == 1.0), "values are 0 or 1");
    (0..b)
        .map(|k| {
            let item = &v[k * 3 * h * w..(k + 1) * 3 * h * w];
            let (first, rest) = item.split_at(h * w);
            assert_eq!(&rest[..h * w], first, "channel 1 equals channel 0");
            assert_eq!(&rest[h * w..], first, "channel 2 equals channel 0");
            first.to_vec()
        })
        .collect()
}

/// The single edge map of a one-image batch.
fn edge_map(image: &Tensor, low: f32, high: f32) -> Vec<f32> {
    let out = canny(image, low, high).unwrap();
    let (_, _, h, w) = image.dims4().unwrap();
    assert_eq!(out.dims4().unwrap(), (1, 3, h, w));
    maps(&out).remove(0)
}

fn count(map: &[f32]) -> usize {
    map.iter().filter(|&&p| p == 1.0).count()
}

/// The columns holding an edge in row `y`.
fn edge_columns(map: &[f32], w: usize, y: usize) -> Vec<usize> {
    (0..w).filter(|&x| map[y * w + x] == 1.0).collect()
}

#[test]
fn a_vertical_step_gives_one_thin_continuous_line_at_the_step() {
    let (w, h) = (32, 24);
    let map = edge_map(
        &gray(w, h, |x, _| (x >= 16) as u8 as f32),
        0.35 * STEP,
        0.7 * STEP,
    );
    let mut previous: Option<Vec<usize>> = None;
    for y in 0..h {
        let cols = edge_columns(&map, w, y);
        assert!(
            (1..=2).contains(&cols.len()) && cols.iter().all(|&x| x == 15 || x == 16),
            "row {y}: edges at {cols:?}, expected 1 or 2 pixels at columns 15–16"
        );
        // 8-connected to the row above: no gaps along the line.
        if let Some(prev) = &previous {
            assert!(
                cols.iter()
                    .any(|&x| prev.iter().any(|&p| p.abs_diff(x) <= 1)),
                "row {y} ({cols:?}) is not connected to row {} ({prev:?})",
                y - 1
            );
        }
        previous = Some(cols);
    }

    // The same for a horizontal step, which uses the other gradient axis;
    // and a dark-to-bright step detects like a bright-to-dark one.
    let map = edge_map(
        &gray(w, h, |_, y| (y < 10) as u8 as f32),
        0.35 * STEP,
        0.7 * STEP,
    );
    for x in 0..w {
        let rows: Vec<usize> = (0..h).filter(|&y| map[y * w + x] == 1.0).collect();
        assert!(
            (1..=2).contains(&rows.len()) && rows.iter().all(|&y| y == 9 || y == 10),
            "column {x}: edges at rows {rows:?}, expected 1 or 2 pixels at rows 9–10"
        );
    }
}

#[test]
fn a_constant_image_has_no_edges() {
    for value in [0.0, 0.3, 0.7, 1.0] {
        let map = edge_map(&gray(20, 15, |_, _| value), 0.02 * STEP, 0.04 * STEP);
        assert_eq!(count(&map), 0, "gray {value}");
        let map = edge_map(
            &rgb(20, 15, |_, _| [value, 1.0 - value, 0.5]),
            0.02 * STEP,
            0.04 * STEP,
        );
        assert_eq!(count(&map), 0, "colour {value}");
    }
}

#[test]
fn colour_is_reduced_to_bt601_luma() {
    // A step in one channel only has contrast 0.299, 0.587 or 0.114 in luma,
    // so with thresholds between 0.114·STEP and 0.299·STEP the red and green
    // steps are found and the blue one is not (a plain channel mean, 1/3,
    // would find all three).
    let (low, high) = (0.15 * STEP, 0.2 * STEP);
    for (channel, expected) in [(0, true), (1, true), (2, false)] {
        let map = edge_map(
            &rgb(24, 12, |x, _| {
                let mut p = [0.2f32; 3];
                p[channel] = if x >= 12 { 1.0 } else { 0.0 };
                p
            }),
            low,
            high,
        );
        assert_eq!(count(&map) > 0, expected, "channel {channel}");
    }
}

#[test]
fn hysteresis_keeps_weak_edges_connected_to_strong_ones_and_drops_isolated_ones() {
    let (w, h) = (48, 40);
    // Right: a vertical edge at x = 27.5 that is strong (contrast 1) in the
    // top half and weak (contrast 0.4) in the bottom half, one continuous
    // line. Left, far away: a rectangle whose edges are all weak.
    let image = gray(w, h, |x, y| {
        if x >= 28 {
            if y < 20 {
                1.0
            } else {
                0.4
            }
        } else if (6..14).contains(&x) && (8..32).contains(&y) {
            0.4
        } else {
            0.0
        }
    });
    // Weak edges measure 0.4 · STEP, and no contrast-0.4 edge exceeds 0.4 · PEAK.
    let (low, high) = (0.25 * STEP, 0.7 * STEP);

    let left_half = |map: &[f32]| -> usize {
        (0..h)
            .map(|y| edge_columns(map, w, y).iter().filter(|&&x| x < 20).count())
            .sum()
    };
    let weak_segment_rows = |map: &[f32]| -> Vec<usize> {
        (24..h)
            .filter(|&y| edge_columns(map, w, y).iter().any(|&x| x == 27 || x == 28))
            .collect()
    };

    let map = edge_map(&image, low, high);
    assert_eq!(
        weak_segment_rows(&map),
        (24..h).collect::<Vec<_>>(),
        "the weak lower half of the line, connected to the strong upper half, is kept in every row"
    );
    assert_eq!(
        left_half(&map),
        0,
        "the isolated weak rectangle has no strong pixel, so it is dropped"
    );

    // Controls: both effects come from the double threshold, not from the
    // edges being missed. With `high` below the weak contrast the rectangle
    // is found; with `low` above it the weak segment is gone.
    assert!(left_half(&edge_map(&image, low, 0.35 * STEP)) > 40);
    assert!(weak_segment_rows(&edge_map(&image, 0.5 * STEP, high)).is_empty());
}

#[test]
fn thresholds_above_the_largest_gradient_give_an_empty_map() {
    // A full step measures STEP: just below it is an edge, just above none.
    let step = gray(24, 16, |x, _| (x >= 12) as u8 as f32);
    assert!(count(&edge_map(&step, 0.9 * STEP, 0.993 * STEP)) > 0);
    assert_eq!(count(&edge_map(&step, 1.004 * STEP, 1.02 * STEP)), 0);

    // After the blur no image in [0, 1] measures more than PEAK, so even
    // dense noise has no edge above that, though plenty below it.
    let (w, h) = (40, 30);
    let v = noise(3 * w * h, 7);
    let image = Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap();
    assert!(count(&edge_map(&image, 0.09 * STEP, 0.17 * STEP)) > 50);
    assert_eq!(count(&edge_map(&image, PEAK, 1.7 * STEP)), 0);
    let checker = gray(w, h, |x, y| ((x / 2 + y / 2) % 2) as f32);
    assert_eq!(count(&edge_map(&checker, PEAK, 1.7 * STEP)), 0);
}

#[test]
fn output_is_three_channels_of_the_input_size_per_batch_item() {
    let step = gray(13, 9, |x, _| (x >= 6) as u8 as f32);
    let flat = gray(13, 9, |_, _| 0.5);
    let batch = Tensor::cat(&[&step, &flat], 0).unwrap();
    let out = canny(&batch, 0.17 * STEP, 0.35 * STEP).unwrap();
    assert_eq!(out.dims(), &[2, 3, 9, 13]);
    let got = maps(&out);
    assert_eq!(
        got[0],
        edge_map(&step, 0.17 * STEP, 0.35 * STEP),
        "items are independent"
    );
    assert!(count(&got[0]) > 0);
    assert_eq!(count(&got[1]), 0);

    let colour = Tensor::cat(&[&step, &step, &step], 1).unwrap();
    let out = canny(&colour, 0.17 * STEP, 0.35 * STEP).unwrap();
    assert_eq!(out.dims(), &[1, 3, 9, 13]);
    assert_eq!(maps(&out)[0], got[0], "grey as RGB matches grey");

    // Tiny and empty images work.
    for (w, h) in [(1, 1), (2, 1), (1, 3), (2, 2), (0, 4)] {
        let out = canny(&gray(w, h, |x, y| ((x + y) % 2) as f32), 0.1, 0.2).unwrap();
        assert_eq!(out.dims(), &[1, 3, h, w]);
    }
}

#[test]
fn the_result_is_deterministic() {
    let (w, h) = (37, 29);
    let v = noise(2 * 3 * w * h, 11);
    let image = Tensor::from_vec(v, (2, 3, h, w), &Device::Cpu).unwrap();
    let a = canny(&image, 0.14 * STEP, 0.28 * STEP).unwrap();
    let b = canny(&image, 0.14 * STEP, 0.28 * STEP).unwrap();
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert!(count(&a) > 0, "the test image has edges");
    assert_eq!(a, b);
}

#[test]
fn bad_inputs_are_errors_naming_the_input() {
    let image = gray(8, 8, |x, _| (x >= 4) as u8 as f32);
    let err = canny(&image, 0.5, 0.3).unwrap_err();
    assert_eq!(err.input.as_deref(), Some("low_threshold"), "{err}");
    assert!(err.to_string().contains("high_threshold"), "{err}");
    assert!(canny(&image, 0.3, 0.3).is_ok(), "equal thresholds are fine");

    let rank3 = Tensor::zeros((1, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = canny(&rank3, 0.1, 0.2).unwrap_err();
    assert_eq!(err.input.as_deref(), Some("image"), "{err}");

    let rgba = Tensor::zeros((1, 4, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = canny(&rgba, 0.1, 0.2).unwrap_err();
    assert_eq!(err.input.as_deref(), Some("image"), "{err}");
    assert!(err.message.contains("found 4"), "{err}");
}

// Through the registry: ComfyUI's name, inputs and defaults, and the node's
// errors reach the run report.

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-canny-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_canny(src: &Path, low: f64, high: f64, dir: &Path) -> RunReport {
    let text = format!(
        r#"(nodes: {{
            "load": LoadImage(image_path: {src:?}),
            "edges": Canny(image: Link("load", "IMAGE"), low_threshold: {low:?}, high_threshold: {high:?}),
            "save": SaveImage(images: Link("edges", "IMAGE")),
        }})"#
    );
    let registry = weft_nodes::builtin_registry();
    let graph = weft_core::load(SourceFile::new("test.ron", &text), &registry, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        out_dir: dir.to_path_buf(),
        workers: 1,
        targets: Some(vec!["edges".into()]),
        ..RunOptions::default()
    };
    Executor::new(16 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap()
}

#[test]
fn the_node_is_registered_with_comfyui_inputs_and_runs_in_a_graph() {
    let registry = weft_nodes::builtin_registry();
    let schema = registry.get("Canny").expect("Canny is registered").schema();
    let names: Vec<&str> = schema.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["image", "low_threshold", "high_threshold"]);
    for (spec, default) in schema.inputs[1..].iter().zip([0.4, 0.8]) {
        assert!(matches!(spec.default, Some(weft_core::Literal::Float(d)) if d == default));
        assert_eq!(
            (spec.min, spec.max),
            (Some(0.01), Some(0.99)),
            "{}",
            spec.name
        );
    }

    let dir = scratch("graph");
    let src = dir.join("step.png");
    image::GrayImage::from_fn(20, 10, |x, _| image::Luma([if x >= 10 { 255 } else { 0 }]))
        .save(&src)
        .unwrap();

    let report = run_canny(&src, 0.2, 0.4, &dir);
    assert!(report.success(), "{:?}", report.failed);
    let Value::Image(out) = &report.output("edges").unwrap()[0] else {
        panic!("the output is not an IMAGE");
    };
    assert_eq!(out.dims(), &[1, 3, 10, 20]);
    let map = maps(out).remove(0);
    for y in 0..10 {
        let cols = edge_columns(&map, 20, y);
        assert!(
            !cols.is_empty() && cols.iter().all(|&x| x == 9 || x == 10),
            "row {y}: {cols:?}"
        );
    }

    let report = run_canny(&src, 0.5, 0.3, &dir);
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].node, "edges");
    assert!(
        report.failed[0].message.contains("low_threshold"),
        "{:?}",
        report.failed
    );
}
