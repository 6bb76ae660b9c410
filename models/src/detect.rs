//! What a model file holds, told from its tensor names and shapes alone.
//!
//! Reads only a safetensors file's header (its first bytes), never the
//! weights, so `weft models` stays fast over a folder of 100 GB.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::sd::config::{detect_family, Family, Shapes};
use crate::sd::ldm::UNET_PREFIX;

/// The largest safetensors header read (real ones are well under 10 MB).
const MAX_HEADER: u64 = 100 << 20;

/// The tensor shapes named in a safetensors file's header, and its metadata.
pub fn header(path: &Path) -> Result<(Shapes, HashMap<String, String>), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| "too short for safetensors".to_string())?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(format!("not safetensors (header length {len})"));
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact(&mut text)
        .map_err(|_| "truncated header".to_string())?;
    let header: safetensors::tensor::Metadata =
        serde_json::from_slice(&text).map_err(|e| format!("not safetensors: {e}"))?;
    let shapes = header
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.shape.clone()))
        .collect();
    let metadata = header.metadata().clone().unwrap_or_default();
    Ok((shapes, metadata))
}

/// A short description of what `path` holds ("SD 1.x checkpoint", "LoRA",
/// "Flux transformer", …), or why it cannot be told.
pub fn describe(path: &Path) -> String {
    if path.is_dir() {
        return if path.join("model_index.json").is_file() {
            "diffusers pipeline folder".into()
        } else {
            "folder".into()
        };
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "safetensors" | "sft" => match header(path) {
            Ok((shapes, metadata)) => family(&shapes, &metadata),
            Err(e) => format!("unreadable: {e}"),
        },
        "gguf" => match weft_kernels::quant::GgufFile::open(path) {
            Ok(g) => {
                let shapes: Shapes = g
                    .tensor_names()
                    .into_iter()
                    .filter_map(|n| Some((n.to_string(), g.shape(n).ok()?.to_vec())))
                    .collect();
                format!("GGUF {}", family(&shapes, &HashMap::new()))
            }
            Err(e) => format!("unreadable: {e}"),
        },
        "ckpt" | "pt" | "pth" | "bin" | "pkl" | "pt2" => "pickle (convert to .safetensors)".into(),
        _ => "unknown".into(),
    }
}

/// The family a set of tensor names and shapes belongs to.
pub fn family(shapes: &Shapes, metadata: &HashMap<String, String>) -> String {
    let has = |prefix: &str| shapes.keys().any(|k| k.starts_with(prefix));
    let contains = |part: &str| shapes.keys().any(|k| k.contains(part));
    if let Some(config) = metadata.get(crate::mnist::checkpoint::CONFIG_KEY) {
        let arch = serde_json::from_str::<serde_json::Value>(config)
            .ok()
            .and_then(|c| c["net"]["arch"].as_str().map(str::to_string))
            .unwrap_or_default();
        return format!("weft checkpoint {arch}").trim_end().into();
    }
    if contains("lora_up")
        || contains("lora_down")
        || contains("lora_A")
        || contains("lora_B")
        || contains(".hada_w1")
        || contains(".lokr_w1")
    {
        return "LoRA / LyCORIS".into();
    }
    if has("control_model.") || has("controlnet_cond_embedding") || has("input_hint_block") {
        return "ControlNet".into();
    }
    for prefix in ["model.diffusion_model.", ""] {
        let key = |k: &str| format!("{prefix}{k}");
        if has(&key("double_blocks.")) {
            return "Flux transformer".into();
        }
        if has(&key("joint_blocks.")) {
            return "SD3 MM-DiT".into();
        }
        let in_conv = shapes.get(&key("input_blocks.0.0.weight"));
        if let Some(shape) = in_conv {
            let whole = prefix.is_empty() || has("first_stage_model.");
            let unet: Shapes = if prefix.is_empty() {
                shapes
                    .iter()
                    .map(|(k, v)| (format!("{UNET_PREFIX}{k}"), v.clone()))
                    .collect()
            } else {
                shapes.clone()
            };
            let what = match detect_family(&unet) {
                Family::Other => "SD-family",
                family => family.name(),
            };
            let inpaint = if shape.get(1) == Some(&9) {
                " inpainting"
            } else {
                ""
            };
            let vpred = if shapes.contains_key("v_pred") {
                " v-prediction"
            } else {
                ""
            };
            let part = if whole { "checkpoint" } else { "UNet" };
            return format!("{what}{inpaint}{vpred} {part}");
        }
    }
    if has("encoder.down.") || has("decoder.up.") || has("encoder.down_blocks.") {
        return "VAE".into();
    }
    if has("text_model.") || has("encoder.layers.") || has("transformer.resblocks.") {
        let width = shapes
            .iter()
            .find(|(k, _)| k.ends_with("token_embedding.weight"))
            .and_then(|(_, s)| s.get(1).copied());
        return match width {
            Some(768) => "CLIP-L text encoder".into(),
            Some(1024) => "OpenCLIP-H text encoder".into(),
            Some(1280) => "OpenCLIP-bigG text encoder".into(),
            _ => "CLIP text encoder".into(),
        };
    }
    if has("encoder.block.") && has("shared.") {
        return "T5 text encoder".into();
    }
    "unknown safetensors".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(entries: &[(&str, &[usize])]) -> HashMap<String, Vec<usize>> {
        entries
            .iter()
            .map(|(k, s)| (k.to_string(), s.to_vec()))
            .collect()
    }

    fn unet(context: usize, in_channels: usize) -> Vec<(String, Vec<usize>)> {
        vec![
            (
                "model.diffusion_model.input_blocks.0.0.weight".into(),
                vec![320, in_channels, 3, 3],
            ),
            (
                "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
                    .into(),
                vec![320, context],
            ),
            (
                "first_stage_model.encoder.down.0.block.0.conv1.weight".into(),
                vec![128, 128, 3, 3],
            ),
        ]
    }

    fn describe_shapes(entries: Vec<(String, Vec<usize>)>) -> String {
        family(&entries.into_iter().collect(), &HashMap::new())
    }

    #[test]
    fn families_from_names_and_shapes() {
        assert_eq!(describe_shapes(unet(768, 4)), "SD 1.x checkpoint");
        assert_eq!(describe_shapes(unet(1024, 4)), "SD 2.x checkpoint");
        assert_eq!(
            describe_shapes(unet(768, 9)),
            "SD 1.x inpainting checkpoint"
        );
        let mut xl = unet(2048, 4);
        xl.push((
            "model.diffusion_model.label_emb.0.0.weight".into(),
            vec![1280, 2816],
        ));
        xl.push((
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight".into(),
            vec![768],
        ));
        assert_eq!(describe_shapes(xl), "SDXL checkpoint");
        // The refiner has a conditioner too (bigG alone); its added
        // embedding takes 5 size numbers, not 6.
        let mut refiner = unet(1280, 4);
        refiner.push((
            "model.diffusion_model.label_emb.0.0.weight".into(),
            vec![1536, 2560],
        ));
        refiner.push((
            "conditioner.embedders.0.model.ln_final.weight".into(),
            vec![1280],
        ));
        assert_eq!(describe_shapes(refiner), "SDXL refiner checkpoint");
        let flux = shapes(&[("double_blocks.0.img_attn.qkv.weight", &[9216, 3072])]);
        assert_eq!(family(&flux, &HashMap::new()), "Flux transformer");
        let lora = shapes(&[(
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
            &[320, 4],
        )]);
        assert_eq!(family(&lora, &HashMap::new()), "LoRA / LyCORIS");
        let clip = shapes(&[(
            "text_model.embeddings.token_embedding.weight",
            &[49408, 768],
        )]);
        assert_eq!(family(&clip, &HashMap::new()), "CLIP-L text encoder");
        let vae = shapes(&[("encoder.down.0.block.0.conv1.weight", &[128, 128, 3, 3])]);
        assert_eq!(family(&vae, &HashMap::new()), "VAE");
    }

    #[test]
    fn a_truncated_header_is_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.safetensors");
        std::fs::write(&path, [255u8, 255, 255, 255, 255, 255, 255, 255, 1]).unwrap();
        assert!(describe(&path).starts_with("unreadable"));
        std::fs::write(&path, [4u8, 0, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
        assert!(describe(&path).starts_with("unreadable"));
    }
}
