//! LoRA strengths are cheap to change: a new strength re-patches from the
//! cached checkpoint instead of reloading it, and the LoRA'd model shares
//! the base's unpatched tensors.

use std::path::PathBuf;

use weft_core::Executor;
use weft_tests::{load, run_with, started};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sdxl")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn graph(strength: f64) -> String {
    format!(
        r#"(nodes: {{
            "checkpoint": CheckpointLoaderSimple(ckpt_name: "{model}"),
            "lora": LoraLoader(model: Link("checkpoint", "MODEL"), clip: Link("checkpoint", "CLIP"),
                lora_name: "{lora}", strength_model: {strength}, strength_clip: {strength}),
            "pos": CLIPTextEncode(text: "a horse", clip: Link("lora", "CLIP")),
            "neg": CLIPTextEncode(text: "", clip: Link("lora", "CLIP")),
            "latent": EmptyLatentImage(width: 64, height: 64, batch_size: 1),
            "sample": KSampler(model: Link("lora", "MODEL"), seed: 1, steps: 1, cfg: 5.0,
                sampler_name: "euler", scheduler: "normal", positive: Link("pos", "CONDITIONING"),
                negative: Link("neg", "CONDITIONING"), latent_image: Link("latent", "LATENT")),
            "show": Print(value: Link("sample", "LATENT")),
        }})"#,
        model = fixture("tiny_sdxl"),
        lora = fixture("loras/sdxl_kohya.safetensors"),
    )
}

#[test]
fn a_new_strength_repatches_without_reloading_the_checkpoint() {
    let exec = Executor::new(1 << 32);
    let (report, first) = run_with(&exec, &load(&graph(1.0)).unwrap(), 2);
    assert!(report.success(), "{report:?}");
    assert!(started(&first).contains(&"checkpoint".to_string()));
    let (report, second) = run_with(&exec, &load(&graph(0.5)).unwrap(), 2);
    assert!(report.success(), "{report:?}");
    let ran = started(&second);
    assert!(ran.contains(&"lora".to_string()), "{ran:?}");
    assert!(
        !ran.contains(&"checkpoint".to_string()),
        "reloaded: {ran:?}"
    );
}
