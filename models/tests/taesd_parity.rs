//! TAESD's decoder against diffusers' `AutoencoderTiny.decode` on a tiny
//! random-weight model with the released layout (fixtures made by
//! `scripts/make_taesd_fixtures.py`), loaded from both key layouts.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use weft_models::taesd::TinyDecoder;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/taesd")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn check(file: &str) -> f32 {
    let refs =
        candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let decoder = TinyDecoder::load(&fixtures().join(file)).unwrap();
    assert_eq!((decoder.latent_channels(), decoder.scale()), (4, 8));
    let got = decoder.decode(&refs["latents"]).unwrap();
    let diff = max_abs_diff(&got, &refs["decoded"]);
    eprintln!("{file}: max |weft − diffusers| = {diff:.2e}");
    assert!(diff < 1e-4, "{file}: {diff}");
    diff
}

#[test]
fn the_original_layout_matches_diffusers() {
    check("taesd_decoder.safetensors");
}

#[test]
fn the_diffusers_layout_matches_diffusers_and_ignores_the_encoder() {
    check("autoencoder_tiny.safetensors");
}

#[test]
fn a_file_that_is_not_a_decoder_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not_taesd.safetensors");
    let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("first_stage_model.x".to_string(), t)].into(), &path)
        .unwrap();
    let e = TinyDecoder::load(&path).unwrap_err();
    assert!(
        e.contains("not_taesd.safetensors") && e.contains("no TAESD decoder"),
        "{e}"
    );
    let e = TinyDecoder::load(&dir.path().join("absent.safetensors")).unwrap_err();
    assert!(e.contains("absent.safetensors"), "{e}");
}
