//! The inpainting graph end to end on the tiny SD 1.5 fixture: an opaque
//! image (an empty mask) comes back exactly as a plain VAE round trip, and a
//! transparent hole is repainted by the prompt.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::repo_root;
fn model() -> String {
    repo_root()
        .join("models/tests/fixtures/sd/tiny_sd15")
        .display()
        .to_string()
}

/// A 64×64 picture, transparent inside `hole` (x0, y0, x1, y1) if given.
fn picture(dir: &Path, hole: Option<(u32, u32, u32, u32)>) -> PathBuf {
    let img = image::RgbaImage::from_fn(64, 64, |x, y| {
        let inside = hole.is_some_and(|(x0, y0, x1, y1)| x >= x0 && x < x1 && y >= y0 && y < y1);
        image::Rgba([
            (x * 4) as u8,
            (y * 4) as u8,
            128,
            if inside { 0 } else { 255 },
        ])
    });
    let path = dir.join("input.png");
    img.save(&path).unwrap();
    path
}

/// Runs a graph file with `--set`s in `dir`; the decoded output image.
fn run(dir: &Path, graph: &Path, sets: &[String]) -> image::RgbImage {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.arg("run").arg(graph).current_dir(dir);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read_dir(dir.join("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png") && !p.ends_with("preview.png"))
        .unwrap();
    image::open(png).unwrap().to_rgb8()
}

fn inpaint(hole: Option<(u32, u32, u32, u32)>, prompt: &str) -> image::RgbImage {
    let dir = tempfile::tempdir().unwrap();
    let input = picture(dir.path(), hole);
    run(
        dir.path(),
        &repo_root().join("graphs/sd15_inpaint.ron"),
        &[
            format!("model={}", model()),
            format!("image={}", input.display()),
            format!("prompt={prompt}"),
            "steps=3".into(),
        ],
    )
}

#[test]
fn an_empty_mask_keeps_the_image_and_a_hole_is_repainted() {
    // The plain VAE round trip of the same picture.
    let dir = tempfile::tempdir().unwrap();
    let input = picture(dir.path(), None);
    let graph = dir.path().join("roundtrip.ron");
    std::fs::write(
        &graph,
        format!(
            r#"(nodes: {{
                "ck": CheckpointLoaderSimple(ckpt_name: "{}"),
                "input": LoadImage(image_path: "{}"),
                "enc": VAEEncode(pixels: Link("input", "IMAGE"), vae: Link("ck", "VAE")),
                "dec": VAEDecode(samples: Link("enc", "LATENT"), vae: Link("ck", "VAE")),
                "save": SaveImage(images: Link("dec", "IMAGE"), filename_prefix: "rt"),
            }})"#,
            model(),
            input.display()
        ),
    )
    .unwrap();
    let roundtrip = run(dir.path(), &graph, &[]);
    let kept = inpaint(None, "a red barn");
    let worst = kept
        .as_raw()
        .iter()
        .zip(roundtrip.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "nothing outside the mask changes: off by {worst}/255"
    );

    let hole = Some((16, 16, 48, 48));
    let (a, b) = (inpaint(hole, "a red barn"), inpaint(hole, "an oak tree"));
    assert!(a == inpaint(hole, "a red barn"), "deterministic");
    assert!(a != b, "the prompt repaints the hole");
}

/// Outpainting: the picture grows by the padding, and the prompt paints the
/// new border.
#[test]
fn outpainting_extends_the_picture() {
    let out = |prompt: &str| {
        let dir = tempfile::tempdir().unwrap();
        let input = picture(dir.path(), None);
        run(
            dir.path(),
            &repo_root().join("graphs/sd15_outpaint.ron"),
            &[
                format!("model={}", model()),
                format!("image={}", input.display()),
                format!("prompt={prompt}"),
                "right=32".into(),
                "feathering=8".into(),
                "steps=3".into(),
            ],
        )
    };
    let (a, b) = (out("a red barn"), out("an oak tree"));
    assert_eq!(a.dimensions(), (96, 64));
    let border = |img: &image::RgbImage| -> Vec<u8> {
        (0..64)
            .flat_map(|y| (72..96).flat_map(move |x| img.get_pixel(x, y).0))
            .collect()
    };
    assert_ne!(border(&a), border(&b), "the prompt paints the new border");
}
