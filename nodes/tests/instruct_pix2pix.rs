//! `InstructPixToPixConditioning` (Flux Canny/Depth's image input): both
//! conditionings carry the image's VAE latent, and the latent to sample is
//! an empty one of its size.

use std::path::PathBuf;

use candle_core::Tensor;
use weft_core::{CancelToken, EventSink, Executor, RunOptions, SourceFile, Value};
use weft_sampling::Conditioning;

#[test]
fn both_conditionings_carry_the_images_latent_and_the_latent_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("edges.png");
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
    })
    .save(&png)
    .unwrap();
    let ckpt = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sd/tiny_sd15")
        .canonicalize()
        .unwrap();
    let text = format!(
        r#"(nodes: {{
        "ckpt": CheckpointLoaderSimple(ckpt_name: "{}"),
        "img": LoadImage(image_path: "{}"),
        "text": CLIPTextEncode(clip: Link("ckpt", "CLIP"), text: "a house"),
        "ip2p": InstructPixToPixConditioning(positive: Link("text", "CONDITIONING"), negative: Link("text", "CONDITIONING"),
            vae: Link("ckpt", "VAE"), pixels: Link("img", "IMAGE")),
        "enc": VAEEncode(pixels: Link("img", "IMAGE"), vae: Link("ckpt", "VAE")),
        "out": Print(value: 0),
    }})"#,
        ckpt.display(),
        png.display()
    );
    let registry = weft_nodes::builtin_registry();
    let graph = weft_core::load(SourceFile::new("ip2p.ron", text), &registry, &[])
        .unwrap_or_else(|d| panic!("{d}"));
    let opts = RunOptions {
        targets: Some(vec!["ip2p".into(), "enc".into()]),
        ..RunOptions::default()
    };
    let report = Executor::new(1 << 30)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap();
    assert!(report.success(), "{:?}", report.failed);
    let ip2p = report.output("ip2p").unwrap();
    let encoded = match &report.output("enc").unwrap()[0] {
        Value::Latent(l) => l.samples.clone(),
        other => panic!("{}", other.summary()),
    };
    for i in 0..2 {
        let c = ip2p[i].downcast::<Conditioning>().unwrap();
        let concat: &Tensor = c.concat_latent.as_ref().expect("the image's latent");
        assert_eq!(weft_kernels::testing::max_diff(concat, &encoded), 0.0);
        assert!(c.concat_mask.is_none());
    }
    match &ip2p[2] {
        Value::Latent(l) => {
            assert_eq!(l.samples.dims(), encoded.dims());
            assert_eq!(
                l.samples
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                0.0
            );
        }
        other => panic!("{}", other.summary()),
    }
}
