//! A 9-channel SD 1.5 inpainting UNet against diffusers'
//! StableDiffusionInpaintPipeline (`scripts/make_inpaint_fixtures.py`):
//! the UNet, the masked image's latent as ComfyUI's
//! InpaintModelConditioning prepares it, and the whole pipeline from fixed
//! latents, in both file layouts.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{floats, sample_cfg};
use weft_kernels::testing::max_diff as max_abs;
use weft_models::clip::TextEncoder;
use weft_models::inpaint;
use weft_models::sd::checkpoint::{self, Checkpoint};
use weft_models::sd::network::sampling_model;
use weft_models::sd::unet::SdUNet;
use weft_models::vae::Vae;
use weft_sampling::{Conditioning, Network};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inpaint")
}

fn layouts() -> Vec<(&'static str, Checkpoint)> {
    let folder = dir().join("tiny_sd15_inpaint");
    vec![
        ("folder", checkpoint::open(&folder, None).unwrap()),
        (
            "single file",
            checkpoint::open(&dir().join("tiny_sd15_inpaint.safetensors"), Some(&folder))
                .unwrap_or_else(|e| panic!("{e}")),
        ),
    ]
}

fn unet(ck: &Checkpoint) -> SdUNet {
    let (spec, tensors) = ck.unet.as_ref().unwrap();
    SdUNet::build(spec, tensors).unwrap()
}

#[test]
fn inpainting_unet_matches_diffusers() {
    let r = common::tensors(&dir());
    for (what, ck) in layouts() {
        let u = unet(&ck);
        assert!(u.spec().is_inpainting(), "{what}");
        let cond = Conditioning {
            context: Some(r["unet.context"].clone()),
            ..Default::default()
        };
        let out = u
            .forward(&r["unet.sample"], &r["unet.timestep"], &cond)
            .unwrap();
        let e = max_abs(&out, &r["unet.out"]);
        assert!(e < 1e-4, "{what}: {e}");
    }
}

/// ComfyUI's preparation (grey fill in [0, 1]) encodes to diffusers'
/// masked-image latent (zero fill in [-1, 1]).
#[test]
fn masked_image_latent_matches_diffusers() {
    let r = common::tensors(&dir());
    let ck = checkpoint::open(&dir().join("tiny_sd15_inpaint"), None).unwrap();
    let (spec, tensors) = ck.vae.as_ref().unwrap();
    let vae = Vae::build(spec, tensors).unwrap();
    let mask = r["pipeline.mask_image"].squeeze(1).unwrap();
    let p = inpaint::prepare(&r["pipeline.init_image"], &mask, 8).unwrap();
    let e = max_abs(
        &p.greyed.affine(2.0, -1.0).unwrap(),
        &r["pipeline.masked_image"],
    );
    assert!(e < 1e-6, "masked pixels: {e}");
    let e = max_abs(
        &vae.encode(&p.greyed).unwrap(),
        &r["pipeline.masked_image_mean"],
    );
    assert!(e < 1e-4, "masked image latent: {e}");
    let e = max_abs(
        &vae.encode(&p.pixels).unwrap(),
        &r["pipeline.init_image_mean"],
    );
    assert!(e < 1e-4, "image latent: {e}");
}

#[test]
fn inpainting_pipeline_matches_diffusers() {
    let r = common::tensors(&dir());
    let json = common::json(&dir());
    let p = &json["pipelines"]["pipeline.euler"];
    let prompt = json["prompt"].as_str().unwrap();
    let sigmas = floats(&p["sigmas"]);
    let init = p["init_noise_sigma"].as_f64().unwrap();
    let mask = r["pipeline.mask_image"].squeeze(1).unwrap();
    for (what, ck) in layouts() {
        let model = Arc::new(sampling_model(&ck, unet(&ck)).unwrap());
        let clip = TextEncoder::from_parts(&ck.clip).unwrap();
        // InpaintModelConditioning's entries: the unscaled masked-image
        // latent and the pixel mask (the model scales and resizes them).
        let with = |c: Conditioning| Conditioning {
            concat_latent: Some(r["pipeline.masked_image_mean"].clone()),
            concat_mask: Some(mask.clone()),
            ..c
        };
        let (pos, neg) = (
            with(clip.encode(prompt).unwrap()),
            with(clip.encode("").unwrap()),
        );
        let x = (&r["pipeline.latents"] * init).unwrap();
        let out = sample_cfg(model, pos, neg, 7.5, &sigmas, x, "euler");
        let want = &r["pipeline.euler"];
        let largest: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        let e = max_abs(&out, want);
        eprintln!("{what}: max error {e:e} (largest |latent| {largest})");
        assert!(e / largest.max(1.0) < 1e-5, "{what}: {e}");
    }
}
