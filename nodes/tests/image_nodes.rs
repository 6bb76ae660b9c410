//! The image nodes: PNG output (atomic, exact pixels, embedded graph),
//! loading, grids, scaling and pixel-space latents.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use weft_core::graph::InputValue;
use weft_core::{
    CancelToken, EventSink, Executor, GraphDoc, RunOptions, RunReport, SourceFile, Value,
};
use weft_nodes::image::{embedded_graph, grid, load_image, read_png, scale, GRAPH_KEY, NODE_KEY};

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-image-nodes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(text: &str, overrides: &[&str], out_dir: &Path) -> RunReport {
    let registry = weft_nodes::builtin_registry();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let graph = weft_core::load(SourceFile::new("test.ron", text), &registry, &overrides)
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        out_dir: out_dir.to_path_buf(),
        workers: 2,
        ..RunOptions::default()
    };
    Executor::new(64 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap()
}

fn saved_paths(report: &RunReport, node: &str) -> Vec<PathBuf> {
    let outputs = report
        .output(node)
        .unwrap_or_else(|| panic!("{node} did not finish: {:?}", report.failed));
    let Value::String(paths) = &outputs[0] else {
        panic!("paths is not a STRING");
    };
    paths.lines().map(PathBuf::from).collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An RGB test pattern with every channel different at every pixel.
fn write_rgb_source(path: &Path, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 40 + y) as u8,
            (y * 50 + 3) as u8,
            (255 - x * 7 - y * 11) as u8,
        ])
    });
    img.save(path).unwrap();
    img.into_raw()
}

#[test]
fn save_image_writes_exact_pixels_atomically_with_the_graph_embedded() {
    let dir = scratch("save-rgb");
    let src = dir.join("source.png");
    let raw = write_rgb_source(&src, 5, 4);
    let out = dir.join("out");
    let graph = format!(
        r#"(
            params: {{ "prefix": "save.filename_prefix" }},
            nodes: {{
                "load": LoadImage(image_path: {src:?}),
                "save": SaveImage(images: Link("load", "IMAGE")),
            }},
        )"#
    );
    let report = run(&graph, &["prefix=shot"], &out);
    assert!(report.success(), "{:?}", report.failed);
    let paths = saved_paths(&report, "save");
    assert_eq!(paths, vec![out.join("shot_00001_.png")]);
    // Written by rename: no temp file is left beside it.
    assert_eq!(files_in(&out), vec!["shot_00001_.png"]);

    let back = image::open(&paths[0]).unwrap();
    assert_eq!(back.color(), image::ColorType::Rgb8);
    assert_eq!(back.to_rgb8().into_raw(), raw);

    // The graph is in a tEXt chunk (Latin-1 text), with the override applied.
    let file = std::fs::File::open(&paths[0]).unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let chunk = |key: &str| {
        reader
            .info()
            .uncompressed_latin1_text
            .iter()
            .find(|c| c.keyword == key)
            .map(|c| c.text.clone())
            .unwrap_or_else(|| panic!("no tEXt chunk {key}"))
    };
    assert_eq!(chunk(NODE_KEY), "save");
    let text = chunk(GRAPH_KEY);
    let doc = GraphDoc::parse(SourceFile::new("embedded", text.clone())).unwrap();
    let save = doc.node("save").unwrap();
    assert_eq!(save.ty.value, "SaveImage");
    let prefix = save
        .inputs
        .iter()
        .find(|i| i.name.value == "filename_prefix")
        .expect("the override is recorded");
    assert!(
        matches!(&prefix.value.value, InputValue::Literal(Value::String(s)) if &**s == "shot"),
        "{text}"
    );
    assert_eq!(
        embedded_graph(&paths[0]).unwrap().as_deref(),
        Some(text.as_str())
    );

    // The same graph again takes the next number.
    let again = run(&graph, &["prefix=shot"], &out);
    assert!(again.success(), "{:?}", again.failed);
    assert!(out.join("shot_00002_.png").exists());
}

#[test]
fn grayscale_stays_one_channel_and_values_are_clamped_and_rounded() {
    let dir = scratch("save-gray");
    // EmptyLatent is zeros; as pixels that is mid-gray 0.5, which rounds to 128.
    let graph = r#"(nodes: {
        "latent": EmptyLatent(width: 3, height: 2, channels: 1, batch_size: 2),
        "image": LatentToImage(latent: Link("latent", "LATENT")),
        "save": SaveImage(images: Link("image", "IMAGE"), filename_prefix: "sub/gray"),
    })"#;
    let report = run(graph, &[], &dir);
    let paths = saved_paths(&report, "save");
    // One file per batch item, each with its own ComfyUI number.
    assert_eq!(
        paths,
        vec![
            dir.join("sub/gray_00001_.png"),
            dir.join("sub/gray_00002_.png")
        ]
    );
    for path in &paths {
        let png = read_png(path).unwrap();
        assert_eq!((png.width, png.height, png.channels), (3, 2, 1));
        assert_eq!(png.pixels, vec![128; 6]);
    }
}

#[test]
fn labels_and_individual_number_the_batch_under_one_counter() {
    let dir = scratch("save-labels");
    let graph = r#"(nodes: {
        "latent": EmptyLatent(width: 2, height: 2, channels: 3, batch_size: 3),
        "image": LatentToImage(latent: Link("latent", "LATENT")),
        "save": SaveImage(images: Link("image", "IMAGE"), filename_prefix: "b", labels: "cat, dog,a/b"),
    })"#;
    let paths = saved_paths(&run(graph, &[], &dir), "save");
    let names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "b_00001_000_labelcat.png",
            "b_00001_001_labeldog.png",
            "b_00001_002_labela_b.png"
        ]
    );
    let individual = graph.replace(r#"labels: "cat, dog,a/b""#, "individual: true");
    let names: Vec<_> = saved_paths(&run(&individual, &[], &dir), "save")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["b_00002_000_.png", "b_00002_001_.png", "b_00002_002_.png"]
    );

    let wrong = graph.replace("cat, dog,a/b", "one,two");
    let report = run(&wrong, &[], &dir);
    assert_eq!(report.failed.len(), 1);
    assert!(
        report.failed[0]
            .message
            .contains("2 labels for a batch of 3"),
        "{:?}",
        report.failed
    );
}

#[test]
fn graphs_beyond_latin1_are_embedded_as_utf8() {
    let dir = scratch("save-unicode");
    let graph = r#"(title: "🎨 ünïcødé", nodes: {
        "latent": EmptyLatent(width: 1, height: 1),
        "image": LatentToImage(latent: Link("latent", "LATENT")),
        "save": SaveImage(images: Link("image", "IMAGE")),
    })"#;
    let paths = saved_paths(&run(graph, &[], &dir), "save");
    let text = embedded_graph(&paths[0]).unwrap().unwrap();
    let doc = GraphDoc::parse(SourceFile::new("embedded", text)).unwrap();
    assert_eq!(doc.title.as_deref(), Some("🎨 ünïcødé"));
}

#[test]
fn load_image_reads_colour_gray_and_alpha() {
    let dir = scratch("load");
    let rgb = dir.join("rgb.png");
    let raw = write_rgb_source(&rgb, 3, 2);
    let (image, mask) = load_image(&rgb).unwrap();
    assert_eq!(image.dims(), &[1, 3, 2, 3]);
    assert_eq!(mask.dims(), &[1, 2, 3]);
    assert_eq!(
        mask.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![0.0; 6]
    );
    let planar: Vec<f32> = image.flatten_all().unwrap().to_vec1().unwrap();
    // Pixel (x=2, y=1) channel 1 (green) is planar [1][1][2].
    assert_eq!(
        (planar[6 + 3 + 2] * 255.0).round() as u8,
        raw[(3 + 2) * 3 + 1]
    );

    let gray = dir.join("gray.png");
    image::GrayImage::from_raw(2, 1, vec![0, 255])
        .unwrap()
        .save(&gray)
        .unwrap();
    let (image, _) = load_image(&gray).unwrap();
    assert_eq!(image.dims(), &[1, 1, 1, 2]);
    assert_eq!(
        image.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![0.0, 1.0]
    );

    let rgba = dir.join("rgba.png");
    image::RgbaImage::from_raw(2, 1, vec![10, 20, 30, 255, 40, 50, 60, 0])
        .unwrap()
        .save(&rgba)
        .unwrap();
    let (image, mask) = load_image(&rgba).unwrap();
    assert_eq!(image.dims(), &[1, 3, 1, 2]);
    assert_eq!(
        mask.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![0.0, 1.0]
    );
}

#[test]
fn missing_and_corrupt_files_are_errors_that_name_the_path() {
    let dir = scratch("load-errors");
    let missing = dir.join("missing.png");
    let err = load_image(&missing).unwrap_err();
    assert!(err.contains("missing.png"), "{err}");

    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let err = load_image(&corrupt).unwrap_err();
    assert!(
        err.contains("cannot decode image") && err.contains("corrupt.png"),
        "{err}"
    );
    assert!(read_png(&corrupt).unwrap_err().contains("corrupt.png"));

    // Through a graph, the failure is the node's, naming the file.
    for path in [&missing, &corrupt] {
        let graph = format!(
            r#"(nodes: {{
                "load": LoadImage(image_path: {path:?}),
                "save": SaveImage(images: Link("load", "IMAGE")),
            }})"#
        );
        let report = run(&graph, &[], &dir);
        assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
        assert_eq!(report.failed[0].node, "load");
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            report.failed[0].message.contains(&*name),
            "{:?}",
            report.failed
        );
    }
}

#[test]
fn grid_places_tiles_row_major_with_padding() {
    // Five 2×3 one-channel tiles whose value is their index + 1.
    let tiles: Vec<f32> = (0..5).flat_map(|k| vec![(k + 1) as f32; 6]).collect();
    let images = Tensor::from_vec(tiles, (5, 1, 2, 3), &Device::Cpu).unwrap();
    let out = grid(&images, 2, 1, 0.5).unwrap();
    // 2 columns, 3 rows: width 2·3 + 1, height 3·2 + 2.
    assert_eq!(out.dims(), &[1, 1, 8, 7]);
    let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    let at = |x: usize, y: usize| v[y * 7 + x];
    assert_eq!(at(0, 0), 1.0);
    assert_eq!(at(2, 1), 1.0);
    assert_eq!(at(3, 0), 0.5, "padding column");
    assert_eq!(at(4, 0), 2.0);
    assert_eq!(at(6, 1), 2.0);
    assert_eq!(at(0, 2), 0.5, "padding row");
    assert_eq!(at(0, 3), 3.0);
    assert_eq!(at(4, 4), 4.0);
    assert_eq!(at(0, 6), 5.0);
    assert_eq!(at(4, 6), 0.5, "the empty last cell");

    // Fewer images than columns: one row, as wide as the batch.
    let out = grid(&images, 10, 2, 0.0).unwrap();
    assert_eq!(out.dims(), &[1, 1, 2, 5 * 3 + 4 * 2]);
}

#[test]
fn scale_nearest_and_bilinear() {
    let image = Tensor::from_vec(vec![0f32, 1.0], (1, 1, 1, 2), &Device::Cpu).unwrap();
    let nearest: Vec<f32> = scale(&image, 4, 1, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(nearest, vec![0.0, 0.0, 1.0, 1.0]);
    let bilinear: Vec<f32> = scale(&image, 4, 2, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Sample points -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    assert_eq!(bilinear, vec![0.0, 0.25, 0.75, 1.0, 0.0, 0.25, 0.75, 1.0]);
}

#[test]
fn pixel_latents_round_trip_and_other_spaces_are_refused() {
    let dir = scratch("latents");
    let src = dir.join("source.png");
    let raw = write_rgb_source(&src, 4, 3);
    let graph = format!(
        r#"(nodes: {{
            "load": LoadImage(image_path: {src:?}),
            "latent": ImageToLatent(image: Link("load", "IMAGE")),
            "image": LatentToImage(latent: Link("latent", "LATENT")),
            "save": SaveImage(images: Link("image", "IMAGE")),
        }})"#
    );
    let paths = saved_paths(&run(&graph, &[], &dir), "save");
    assert_eq!(image::open(&paths[0]).unwrap().to_rgb8().into_raw(), raw);

    let foreign = r#"(nodes: {
        "latent": EmptyLatent(width: 8, height: 8, channels: 4, downscale: 8, space: "sd15"),
        "image": LatentToImage(latent: Link("latent", "LATENT")),
        "save": SaveImage(images: Link("image", "IMAGE")),
    })"#;
    let report = run(foreign, &[], &dir);
    assert_eq!(report.failed.len(), 1);
    let message = &report.failed[0].message;
    assert!(
        message.contains("`sd15`") && message.contains("VAE"),
        "{message}"
    );
}
