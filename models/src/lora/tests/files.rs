//! Whole files: opening, resolving, applying, and refusing bad input.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::{keyed, max_diff, patched, rand, scalar, values, write};
use crate::lora::{apply, patch_weight, LoraFile, Target, Weights};

fn open(
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<LoraFile, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "my_lora.safetensors", tensors, metadata);
    LoraFile::open(&path)
}

fn lora_parts(
    module: &str,
    out: usize,
    rank: usize,
    inp: usize,
    seed: u64,
) -> Vec<(String, Tensor)> {
    let (up, down) = (rand(&[out, rank], seed), rand(&[rank, inp], seed + 1));
    keyed(
        module,
        &[("lora_up.weight", &up), ("lora_down.weight", &down)],
    )
}

#[test]
fn resolves_applies_and_reports_unmatched() {
    let q = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k";
    let unet: Weights = [
        (format!("{q}.weight"), rand(&[8, 6], 1)),
        ("conv_in.weight".to_string(), rand(&[8, 4, 3, 3], 2)),
        ("conv_in.bias".to_string(), rand(&[8], 3)),
    ]
    .into();
    let te: Weights = [(
        "text_model.encoder.layers.0.mlp.fc1.weight".to_string(),
        rand(&[5, 3], 4),
    )]
    .into();
    let mut tensors = lora_parts(&format!("lora_unet_{}", q.replace('.', "_")), 8, 2, 6, 10);
    tensors.extend(lora_parts(
        "lora_te1_text_model_encoder_layers_0_mlp_fc1",
        5,
        1,
        3,
        20,
    ));
    tensors.extend(lora_parts(
        "lora_te2_text_model_encoder_layers_0_mlp_fc1",
        5,
        1,
        3,
        30,
    ));
    tensors.extend(lora_parts("lora_unet_nowhere", 2, 1, 2, 40));
    let (diff_b, conv_diff) = (rand(&[8], 50), rand(&[8, 4, 3, 3], 51));
    tensors.extend(keyed(
        "lora_unet_conv_in",
        &[("diff", &conv_diff), ("diff_b", &diff_b)],
    ));
    tensors.push(("lora_unet_conv_in.hada_w9".into(), rand(&[1], 52)));
    let lora = open(&tensors, None).unwrap();
    assert_eq!(lora.context_width(), Some(6));
    assert!(lora.has_second_text_encoder());

    let resolved = lora.resolve(&[(Target::Unet, &unet), (Target::Clip(0), &te)], 2);
    let mut patched: Vec<_> = resolved
        .patches
        .iter()
        .map(|p| (p.target, p.weight.as_str()))
        .collect();
    patched.sort_by_key(|(_, w)| *w);
    let k = format!("{q}.weight");
    let want = [
        (Target::Unet, "conv_in.bias"),
        (Target::Unet, "conv_in.weight"),
        (Target::Unet, k.as_str()),
        (
            Target::Clip(0),
            "text_model.encoder.layers.0.mlp.fc1.weight",
        ),
    ];
    assert_eq!(patched, want);
    assert_eq!(
        resolved.unmatched,
        [
            "lora_te2_text_model_encoder_layers_0_mlp_fc1",
            "lora_unet_conv_in.hada_w9",
            "lora_unet_nowhere",
        ]
    );

    let new = apply(Target::Unet, &unet, &resolved, 0.5).unwrap();
    assert_eq!(new.len(), 3, "only patched weights are returned");
    let want_bias: Vec<f32> = values(&unet["conv_in.bias"])
        .iter()
        .zip(values(&diff_b))
        .map(|(b, d)| b + 0.5 * d)
        .collect();
    assert!(max_diff(&new["conv_in.bias"], &want_bias) < 1e-6);
    let te_new = apply(Target::Clip(0), &te, &resolved, 1.0).unwrap();
    assert_eq!(te_new.len(), 1);

    // A bias change for a layer without a bias is reported, not applied.
    let unbiased: Weights = [("conv_in.weight".to_string(), unet["conv_in.weight"].clone())].into();
    let resolved = lora.resolve(&[(Target::Unet, &unbiased)], 2);
    assert!(resolved
        .unmatched
        .contains(&"lora_unet_conv_in.diff_b".to_string()));
}

#[test]
fn peft_files_scale_by_metadata_alpha() {
    let module = "unet.down_blocks.0.attentions.0.proj_in";
    let (a, b) = (rand(&[4, 6], 1), rand(&[6, 4], 2));
    let tensors = keyed(module, &[("lora_A.weight", &a), ("lora_B.weight", &b)]);
    let w = rand(&[6, 6], 3);
    let unet: Weights = [(
        "down_blocks.0.attentions.0.proj_in.weight".to_string(),
        w.clone(),
    )]
    .into();
    let delta = values(&b.matmul(&a).unwrap());
    let run = |metadata: Option<&str>| {
        let meta = metadata.map(|m| [("lora_adapter_metadata".to_string(), m.to_string())].into());
        let lora = open(&tensors, meta).unwrap();
        let resolved = lora.resolve(&[(Target::Unet, &unet)], 2);
        assert!(resolved.unmatched.is_empty());
        let out = apply(Target::Unet, &unet, &resolved, 1.0).unwrap();
        out["down_blocks.0.attentions.0.proj_in.weight"].clone()
    };
    for (metadata, scale) in [
        (None, 1.0),
        (Some(r#"{"unet.r": 4, "unet.lora_alpha": 2}"#), 0.5),
        (Some(r#"{"r": 4, "lora_alpha": 8}"#), 2.0),
        (
            Some(
                r#"{"unet.r": 4, "unet.lora_alpha": 2, "unet.alpha_pattern": {"attentions.0.proj_in": 1}}"#,
            ),
            0.25,
        ),
        (
            Some(r#"{"unet.r": 16, "unet.lora_alpha": 8, "unet.use_rslora": true}"#),
            2.0,
        ),
    ] {
        let want: Vec<f32> = values(&w)
            .iter()
            .zip(&delta)
            .map(|(w, d)| w + scale * d)
            .collect();
        let got = run(metadata);
        assert!(max_diff(&got, &want) < 1e-5, "{metadata:?}");
    }
    let meta = [("lora_adapter_metadata".to_string(), "[1]".to_string())].into();
    assert!(open(&tensors, Some(meta))
        .unwrap_err()
        .contains("lora_adapter_metadata"));
}

/// The up/down spellings of kohya, PEFT, diffusers' `LoRACompatibleLinear`
/// and its old text-encoder layers all give the same patch, `alpha` too.
#[test]
fn every_lora_spelling_gives_the_same_patch() {
    let (up, down, w) = (rand(&[6, 2], 1), rand(&[2, 5], 2), rand(&[6, 5], 3));
    let name = "text_model.encoder.layers.0.mlp.fc1.weight";
    let te: Weights = [(name.to_string(), w.clone())].into();
    let want: Vec<f32> = values(&w)
        .iter()
        .zip(values(&up.matmul(&down).unwrap()))
        .map(|(w, d)| w + 1.5 * d)
        .collect();
    for (module, up_part, down_part) in [
        (
            "lora_te_text_model_encoder_layers_0_mlp_fc1",
            "lora_up.weight",
            "lora_down.weight",
        ),
        (
            "text_encoder.text_model.encoder.layers.0.mlp.fc1",
            "lora_B.weight",
            "lora_A.weight",
        ),
        (
            "text_encoder.encoder.layers.0.mlp.fc1",
            "lora_B.weight",
            "lora_A.weight",
        ),
        (
            "text_encoder.text_model.encoder.layers.0.mlp.fc1",
            "lora.up.weight",
            "lora.down.weight",
        ),
        (
            "text_encoder.text_model.encoder.layers.0.mlp.fc1",
            "lora_linear_layer.up.weight",
            "lora_linear_layer.down.weight",
        ),
    ] {
        let alpha = scalar(3.0);
        let tensors = keyed(
            module,
            &[(up_part, &up), (down_part, &down), ("alpha", &alpha)],
        );
        let lora = open(&tensors, None).unwrap();
        let resolved = lora.resolve(&[(Target::Clip(0), &te)], 2);
        assert!(
            resolved.unmatched.is_empty(),
            "{module}: {:?}",
            resolved.unmatched
        );
        let out = apply(Target::Clip(0), &te, &resolved, 1.0).unwrap();
        assert!(max_diff(&out[name], &want) < 1e-5, "{module}.{up_part}");
    }
}

#[test]
fn old_diffusers_attention_processor_format() {
    let (down, up) = (rand(&[2, 6], 1), rand(&[6, 2], 2));
    let module = "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out";
    let tensors = vec![
        (format!("{module}_lora.down.weight"), down.clone()),
        (format!("{module}_lora.up.weight"), up.clone()),
    ];
    let name = "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight";
    let w = rand(&[6, 6], 3);
    let unet: Weights = [(name.to_string(), w.clone())].into();
    let lora = open(&tensors, None).unwrap();
    let resolved = lora.resolve(&[(Target::Unet, &unet)], 2);
    assert_eq!(resolved.patches.len(), 1);
    let patches: Vec<_> = resolved.patches.iter().collect();
    let got = patch_weight(&w.to_dtype(DType::F16).unwrap(), &patches, 1.0).unwrap();
    assert_eq!(got.dtype(), DType::F16, "the base's dtype is kept");
    let want: Vec<f32> = values(&w)
        .iter()
        .zip(values(&up.matmul(&down).unwrap()))
        .map(|(w, d)| w + d)
        .collect();
    assert!(max_diff(&got.to_dtype(DType::F32).unwrap(), &want) < 1e-2);
}

#[test]
fn malformed_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        (
            "garbage.safetensors",
            b"not a safetensors file at all".to_vec(),
        ),
        ("empty.safetensors", Vec::new()),
        ("huge_header.safetensors", u64::MAX.to_le_bytes().to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = LoraFile::open(&path).unwrap_err();
        assert!(err.contains(name), "{err}");
    }
    let err = LoraFile::open(&dir.path().join("missing.safetensors")).unwrap_err();
    assert!(err.contains("missing.safetensors"), "{err}");

    // Truncated after the header.
    let good = write(
        dir.path(),
        "good.safetensors",
        &lora_parts("conv_in", 4, 2, 4, 1),
        None,
    );
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 8]).unwrap();
    assert!(LoraFile::open(&cut)
        .unwrap_err()
        .contains("cut.safetensors"));
}

#[test]
fn incomplete_and_inconsistent_modules_are_errors() {
    let up = rand(&[4, 2], 1);
    let cases: Vec<(Vec<(String, Tensor)>, &str)> = vec![
        (
            keyed("lora_unet_a", &[("lora_up.weight", &up)]),
            "only part of a LoRA",
        ),
        (
            keyed("lora_unet_a", &[("hada_w1_a", &up), ("hada_w1_b", &up)]),
            "only part of a LoHa",
        ),
        (
            keyed("lora_unet_a", &[("lokr_w1", &up)]),
            "only part of a LoKr",
        ),
        (
            keyed("lora_unet_a", &[("alpha", &scalar(1.0))]),
            "no adapter",
        ),
        (
            keyed(
                "lora_unet_a",
                &[
                    ("lora_up.weight", &up),
                    ("lora_down.weight", &rand(&[3, 4], 2)),
                ],
            ),
            "disagree on the rank",
        ),
        (
            keyed(
                "lora_unet_a",
                &[
                    ("lora_up.weight", &rand(&[4, 0], 3)),
                    ("lora_down.weight", &rand(&[0, 4], 4)),
                ],
            ),
            "is empty",
        ),
        (
            keyed(
                "lora_unet_a",
                &[
                    ("lora_up.weight", &up),
                    ("lora_down.weight", &rand(&[2], 5)),
                ],
            ),
            "down has shape [2]",
        ),
        (
            keyed(
                "lora_unet_a",
                &[
                    ("lora_up.weight", &up),
                    ("lora_down.weight", &rand(&[2, 4], 6)),
                    ("diff", &up),
                ],
            ),
            "mixes adapter kinds",
        ),
        (
            keyed(
                "lora_unet_a",
                &[
                    ("lora_up.weight", &up),
                    ("lora_down.weight", &rand(&[2, 4], 7)),
                    ("alpha", &up),
                ],
            ),
            "not one finite number",
        ),
        (
            vec![
                ("x.lora_up.weight".into(), up.clone()),
                ("x.lora_B.weight".into(), up.clone()),
                ("x.lora_down.weight".into(), rand(&[2, 4], 8)),
            ],
            "are the same part",
        ),
    ];
    for (tensors, want) in cases {
        let err = open(&tensors, None).unwrap_err();
        assert!(
            err.contains("my_lora.safetensors") && err.contains(want),
            "{want}: {err}"
        );
    }
}

#[test]
fn a_change_that_does_not_fit_names_module_file_and_shapes() {
    let (up, down) = (rand(&[4, 2], 1), rand(&[2, 5], 2));
    let err = patched(
        &[("lora_up.weight", &up), ("lora_down.weight", &down)],
        &rand(&[5, 4], 3),
        1.0,
    )
    .unwrap_err();
    for part in ["conv_in", "lora.safetensors", "[4, 5]", "[5, 4]"] {
        assert!(err.contains(part), "{part}: {err}");
    }
    // DoRA on a vector, and magnitudes of the wrong size.
    let dora = rand(&[1, 7], 4);
    let parts = [
        ("lora_up.weight", &up),
        ("lora_down.weight", &down),
        ("dora_scale", &dora),
    ];
    let err = patched(&parts, &rand(&[4, 5], 5), 1.0).unwrap_err();
    assert!(
        err.contains("dora_scale") && err.contains("conv_in"),
        "{err}"
    );
}
