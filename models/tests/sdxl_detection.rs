//! SDXL's family, architecture and schedule read from the tensor shapes of
//! full-size single files (base, refiner, inpainting, v-prediction with
//! zero terminal SNR), as A1111, ComfyUI and Civitai store them.

use std::collections::HashMap;

use weft_models::sd::config::{self, Family, Shapes, TextTime};
use weft_sampling::Prediction;

const P: &str = "model.diffusion_model.";

/// The shapes detection reads of an SGM-layout UNet: `channels` per level,
/// transformer `depths` per level (0: no attention), two ResBlocks per
/// level, `mid` transformer blocks, `context`-wide cross-attention and an
/// added embedding of `adm` inputs.
fn sgm_shapes(
    in_channels: usize,
    channels: &[usize],
    depths: &[usize],
    mid: usize,
    context: usize,
    adm: usize,
) -> Shapes {
    let mut s: Shapes = HashMap::new();
    let mut put = |k: String, v: Vec<usize>| {
        s.insert(format!("{P}{k}"), v);
    };
    let c0 = channels[0];
    put(
        "input_blocks.0.0.weight".into(),
        vec![c0, in_channels, 3, 3],
    );
    put("out.2.weight".into(), vec![4, c0, 3, 3]);
    put("time_embed.0.weight".into(), vec![4 * c0, c0]);
    put("label_emb.0.0.weight".into(), vec![4 * c0, adm]);
    put("label_emb.0.2.weight".into(), vec![4 * c0, 4 * c0]);
    let levels = channels.len();
    for (level, (&c, &depth)) in channels.iter().zip(depths).enumerate() {
        for j in 0..2 {
            let i = 1 + level * 3 + j;
            put(
                format!("input_blocks.{i}.0.out_layers.3.weight"),
                vec![c, c, 3, 3],
            );
            for d in 0..depth {
                let t = format!("input_blocks.{i}.1.transformer_blocks.{d}.");
                put(format!("{t}attn2.to_k.weight"), vec![c, context]);
            }
            if depth > 0 {
                put(format!("input_blocks.{i}.1.proj_in.weight"), vec![c, c]);
            }
        }
        if level + 1 < levels {
            put(
                format!("input_blocks.{}.0.op.weight", 3 + level * 3),
                vec![c, c, 3, 3],
            );
        }
    }
    let last = *channels.last().unwrap();
    for d in 0..mid {
        let t = format!("middle_block.1.transformer_blocks.{d}.");
        put(format!("{t}attn2.to_k.weight"), vec![last, context]);
    }
    s
}

fn sdxl_base() -> Shapes {
    sgm_shapes(4, &[320, 640, 1280], &[0, 2, 10], 10, 2048, 2816)
}

fn sdxl_refiner() -> Shapes {
    sgm_shapes(4, &[384, 768, 1536, 1536], &[0, 4, 4, 0], 4, 1280, 2560)
}

fn blocks(s: &config::UNetSpec) -> Vec<(usize, Option<usize>, usize)> {
    s.config
        .blocks
        .iter()
        .map(|b| (b.out_channels, b.use_cross_attn, b.attention_head_dim))
        .collect()
}

#[test]
fn sdxl_base_is_read_from_its_shapes() {
    let shapes = sdxl_base();
    assert_eq!(config::detect_family(&shapes), Family::Sdxl);
    let u = config::unet_from_shapes(&shapes, Family::Sdxl).unwrap();
    assert_eq!(
        blocks(&u),
        [(320, None, 5), (640, Some(2), 10), (1280, Some(10), 20)]
    );
    assert_eq!(u.mid_depth, 10);
    assert_eq!(u.config.cross_attention_dim, 2048);
    assert!(u.config.use_linear_projection);
    let added = u.added.unwrap();
    assert_eq!(
        added,
        TextTime {
            time_dim: 256,
            input_dim: 2816,
            pooled_dim: 1280
        }
    );
    assert_eq!(added.time_ids(), Some(6));
    assert_eq!(u.family(), Family::Sdxl);
    assert!((Family::Sdxl.latent_scale() - 0.13025).abs() < 1e-12);
}

#[test]
fn sdxl_refiner_is_read_from_its_shapes() {
    let shapes = sdxl_refiner();
    assert_eq!(config::detect_family(&shapes), Family::SdxlRefiner);
    let u = config::unet_from_shapes(&shapes, Family::SdxlRefiner).unwrap();
    assert_eq!(
        blocks(&u),
        [
            (384, None, 6),
            (768, Some(4), 12),
            (1536, Some(4), 24),
            (1536, None, 24)
        ]
    );
    // The middle block has attention although the last level has none.
    assert_eq!(u.mid_depth, 4);
    assert_eq!(u.added.unwrap().time_ids(), Some(5));
    assert_eq!(u.added.unwrap().pooled_dim, 1280);
}

#[test]
fn sdxl_inpainting_and_vprediction_markers() {
    let mut inpaint = sgm_shapes(9, &[320, 640, 1280], &[0, 2, 10], 10, 2048, 2816);
    let u = config::unet_from_shapes(&inpaint, Family::Sdxl).unwrap();
    assert!(u.is_inpainting());
    assert_eq!(config::detect_family(&inpaint), Family::Sdxl);

    // NoobAI-style v-prediction files mark both the prediction and the
    // zero-terminal-SNR schedule.
    inpaint.insert("v_pred".into(), vec![]);
    inpaint.insert("ztsnr".into(), vec![]);
    assert_eq!(
        config::prediction_from_shapes(&inpaint, Family::Sdxl, |_| None),
        Prediction::V
    );
    assert!(config::zero_terminal_snr_from_shapes(&inpaint));
    assert!(!config::zero_terminal_snr_from_shapes(&sdxl_base()));
}

#[test]
fn diffusers_configs_of_sdxl() {
    // SDXL base's unet/config.json keys that matter (diffusers' defaults
    // fill the rest).
    let base = r#"{
      "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
      "projection_class_embeddings_input_dim": 2816, "cross_attention_dim": 2048,
      "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
      "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
      "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": true,
      "sample_size": 128
    }"#;
    let u = config::unet_from_json(base).unwrap();
    assert_eq!(u.family(), Family::Sdxl);
    assert_eq!(u.mid_depth, 10);
    assert_eq!(
        blocks(&u),
        [(320, None, 5), (640, Some(2), 10), (1280, Some(10), 20)]
    );
    let refiner = r#"{
      "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
      "projection_class_embeddings_input_dim": 2560, "cross_attention_dim": 1280,
      "attention_head_dim": [6, 12, 24, 24], "block_out_channels": [384, 768, 1536, 1536],
      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
      "transformer_layers_per_block": 4, "use_linear_projection": true
    }"#;
    let r = config::unet_from_json(refiner).unwrap();
    assert_eq!(r.family(), Family::SdxlRefiner);
    assert_eq!(r.mid_depth, 4);
    let bad = base.replace("\"text_time\"", "\"image\"");
    let e = config::unet_from_json(&bad).unwrap_err();
    assert!(
        e.contains("addition_embed_type") && e.contains("image"),
        "{e}"
    );
    let no_dim = base.replace("\"addition_time_embed_dim\": 256,", "");
    assert!(config::unet_from_json(&no_dim)
        .unwrap_err()
        .contains("addition_time_embed_dim"));
    // zero terminal SNR from the scheduler config.
    let s = config::schedule_from_json(
        r#"{"prediction_type": "v_prediction", "rescale_betas_zero_snr": true}"#,
    )
    .unwrap();
    assert!(s.zero_terminal_snr && s.prediction == Prediction::V);
}
