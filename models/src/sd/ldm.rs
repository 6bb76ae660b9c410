//! Tensor names of original LDM single-file checkpoints (the A1111 and
//! ComfyUI layout) translated to the diffusers names weft's networks use.
//!
//! Each function takes a key with its component prefix removed
//! (`model.diffusion_model.`, `first_stage_model.`, `cond_stage_model.`)
//! and returns the diffusers names it supplies, with how to reshape it;
//! an empty list means the key is not a weight (buffers, logit scales).

use crate::weights::Transform;

/// Prefix of the UNet in a single-file checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Prefix of the text encoder (SD 1.x/2.x).
pub const CLIP_PREFIX: &str = "cond_stage_model.";
/// Prefixes of SDXL's text encoders, in the order their states are joined
/// (base: CLIP-L then bigG; refiner: bigG alone).
pub const SDXL_CLIP_PREFIXES: [&str; 2] = ["conditioner.embedders.0.", "conditioner.embedders.1."];

fn same(name: String) -> Vec<(String, Transform)> {
    vec![(name, Transform::Same)]
}

/// Splits `"a.b.rest"` into `("a", "b.rest")`.
fn head(s: &str) -> Option<(&str, &str)> {
    s.split_once('.')
}

fn index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = head(s)?;
    Some((i.parse().ok()?, rest))
}

/// LDM ResBlock parameter names → diffusers ResnetBlock2D names.
fn unet_resnet(rest: &str) -> Option<String> {
    let renamed = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    renamed
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|p| format!("{to}{p}")))
}

/// A UNet key; `layers_per_block` is the ResBlocks per encoder level.
pub fn unet_names(key: &str, layers_per_block: usize) -> Vec<(String, Transform)> {
    unet_name(key, layers_per_block)
        .map(same)
        .unwrap_or_default()
}

fn unet_name(key: &str, lpb: usize) -> Option<String> {
    let (part, rest) = head(key)?;
    match part {
        "time_embed" => {
            let (i, p) = index(rest)?;
            let linear = match i {
                0 => "linear_1",
                2 => "linear_2",
                _ => return None,
            };
            Some(format!("time_embedding.{linear}.{p}"))
        }
        "label_emb" => {
            // SDXL's added-embedding MLP: `label_emb.0.{0,2}`.
            let (0, rest) = index(rest)? else {
                return None;
            };
            let (i, p) = index(rest)?;
            let linear = match i {
                0 => "linear_1",
                2 => "linear_2",
                _ => return None,
            };
            Some(format!("add_embedding.{linear}.{p}"))
        }
        "out" => {
            let (i, p) = index(rest)?;
            match i {
                0 => Some(format!("conv_norm_out.{p}")),
                2 => Some(format!("conv_out.{p}")),
                _ => None,
            }
        }
        "input_blocks" => {
            let (i, rest) = index(rest)?;
            let (j, p) = index(rest)?;
            if i == 0 {
                return (j == 0).then(|| format!("conv_in.{p}"));
            }
            let (block, layer) = ((i - 1) / (lpb + 1), (i - 1) % (lpb + 1));
            match (j, layer == lpb) {
                (0, true) => {
                    let p = p.strip_prefix("op.")?;
                    Some(format!("down_blocks.{block}.downsamplers.0.conv.{p}"))
                }
                (0, false) => Some(format!(
                    "down_blocks.{block}.resnets.{layer}.{}",
                    unet_resnet(p)?
                )),
                (1, false) => Some(format!("down_blocks.{block}.attentions.{layer}.{p}")),
                _ => None,
            }
        }
        "middle_block" => {
            let (j, p) = index(rest)?;
            match j {
                0 | 2 => Some(format!("mid_block.resnets.{}.{}", j / 2, unet_resnet(p)?)),
                1 => Some(format!("mid_block.attentions.0.{p}")),
                _ => None,
            }
        }
        "output_blocks" => {
            let (i, rest) = index(rest)?;
            let (j, p) = index(rest)?;
            let (block, layer) = (i / (lpb + 1), i % (lpb + 1));
            if j == 0 {
                return Some(format!(
                    "up_blocks.{block}.resnets.{layer}.{}",
                    unet_resnet(p)?
                ));
            }
            // The upsampler follows the ResBlock (j = 1) or its attention (j = 2).
            match p.strip_prefix("conv.") {
                Some(p) => Some(format!("up_blocks.{block}.upsamplers.0.conv.{p}")),
                None if j == 1 => Some(format!("up_blocks.{block}.attentions.{layer}.{p}")),
                None => None,
            }
        }
        _ => None,
    }
}

/// A VAE key; `levels` is the number of resolution levels (4 for SD).
pub fn vae_names(key: &str, levels: usize) -> Vec<(String, Transform)> {
    let Some((coder, rest)) = head(key) else {
        return Vec::new();
    };
    if coder == "quant_conv" || coder == "post_quant_conv" {
        return same(key.to_string());
    }
    if coder != "encoder" && coder != "decoder" {
        return Vec::new();
    }
    let resnet = |p: &str| match p.strip_prefix("nin_shortcut.") {
        Some(p) => format!("conv_shortcut.{p}"),
        None => p.to_string(),
    };
    let Some((part, rest)) = head(rest) else {
        return Vec::new();
    };
    let name = match part {
        "conv_in" | "conv_out" => format!("{coder}.{part}.{rest}"),
        "norm_out" => format!("{coder}.conv_norm_out.{rest}"),
        "down" | "up" => {
            let Some((i, rest)) = index(rest) else {
                return Vec::new();
            };
            // LDM numbers decoder levels from the lowest resolution up.
            let (blocks, level) = if part == "down" {
                ("down_blocks", i)
            } else if i < levels {
                ("up_blocks", levels - 1 - i)
            } else {
                return Vec::new();
            };
            match head(rest) {
                Some(("block", rest)) => match index(rest) {
                    Some((j, p)) => format!("{coder}.{blocks}.{level}.resnets.{j}.{}", resnet(p)),
                    None => return Vec::new(),
                },
                Some(("downsample", p)) => format!("{coder}.{blocks}.{level}.downsamplers.0.{p}"),
                Some(("upsample", p)) => format!("{coder}.{blocks}.{level}.upsamplers.0.{p}"),
                _ => return Vec::new(),
            }
        }
        "mid" => match head(rest) {
            Some(("block_1", p)) => format!("{coder}.mid_block.resnets.0.{}", resnet(p)),
            Some(("block_2", p)) => format!("{coder}.mid_block.resnets.1.{}", resnet(p)),
            Some(("attn_1", p)) => {
                let Some((layer, param)) = head(p) else {
                    return Vec::new();
                };
                let to = match layer {
                    "norm" => "group_norm",
                    "q" => "to_q",
                    "k" => "to_k",
                    "v" => "to_v",
                    "proj_out" => "to_out.0",
                    _ => return Vec::new(),
                };
                let transform = if layer != "norm" && param == "weight" {
                    Transform::Squeeze
                } else {
                    Transform::Same
                };
                return vec![(
                    format!("{coder}.mid_block.attentions.0.{to}.{param}"),
                    transform,
                )];
            }
            _ => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    same(name)
}

/// A text-encoder key: Hugging Face CLIP (`transformer.…`, SD 1.x) or
/// OpenCLIP (`model.…`, SD 2.x, with fused attention projections).
pub fn clip_names(key: &str) -> Vec<(String, Transform)> {
    if key.ends_with("position_ids") {
        return Vec::new();
    }
    if let Some(rest) = key.strip_prefix("transformer.") {
        // transformers' own names, in either of its layouts.
        return crate::weights::transformers_text_names(rest);
    }
    let Some(rest) = key.strip_prefix("model.") else {
        return Vec::new();
    };
    let name = match rest {
        "token_embedding.weight" => "text_model.embeddings.token_embedding.weight".to_string(),
        "positional_embedding" => "text_model.embeddings.position_embedding.weight".to_string(),
        "text_projection" => {
            return vec![("text_projection.weight".to_string(), Transform::Transpose)];
        }
        _ => {
            if let Some(p) = rest.strip_prefix("ln_final.") {
                format!("text_model.final_layer_norm.{p}")
            } else if let Some(rest) = rest.strip_prefix("transformer.resblocks.") {
                let Some((i, p)) = index(rest) else {
                    return Vec::new();
                };
                let layer = format!("text_model.encoder.layers.{i}");
                if let Some(param) = p.strip_prefix("attn.in_proj_") {
                    return ["q_proj", "k_proj", "v_proj"]
                        .iter()
                        .enumerate()
                        .map(|(index, proj)| {
                            (
                                format!("{layer}.self_attn.{proj}.{param}"),
                                Transform::Chunk {
                                    index,
                                    count: 1,
                                    parts: 3,
                                },
                            )
                        })
                        .collect();
                }
                let renamed = [
                    ("ln_1.", "layer_norm1."),
                    ("ln_2.", "layer_norm2."),
                    ("attn.out_proj.", "self_attn.out_proj."),
                    ("mlp.c_fc.", "mlp.fc1."),
                    ("mlp.c_proj.", "mlp.fc2."),
                ];
                match renamed
                    .iter()
                    .find_map(|(from, to)| p.strip_prefix(from).map(|q| format!("{to}{q}")))
                {
                    Some(p) => format!("{layer}.{p}"),
                    None => return Vec::new(),
                }
            } else {
                return Vec::new();
            }
        }
    };
    same(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: Vec<(String, Transform)>) -> String {
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].0.clone()
    }

    /// Known names from SD 1.5's original checkpoint and its diffusers
    /// conversion (two ResBlocks per level).
    #[test]
    fn unet_names_match_sd15() {
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("input_blocks.0.0.bias", "conv_in.bias"),
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
                "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "input_blocks.11.0.emb_layers.1.bias",
                "down_blocks.3.resnets.1.time_emb_proj.bias",
            ),
            (
                "middle_block.2.out_layers.3.weight",
                "mid_block.resnets.1.conv2.weight",
            ),
            (
                "middle_block.1.proj_in.weight",
                "mid_block.attentions.0.proj_in.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.0.bias",
                "up_blocks.3.resnets.2.norm2.bias",
            ),
            ("out.2.weight", "conv_out.weight"),
            ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
            ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(one(unet_names(ldm, 2)), diffusers, "{ldm}");
        }
        assert!(unet_names("input_blocks.3.1.foo", 2).is_empty());
    }

    #[test]
    fn vae_names_match_sd15() {
        let cases = [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                Transform::Same,
            ),
            (
                "encoder.down.0.downsample.conv.bias",
                "encoder.down_blocks.0.downsamplers.0.conv.bias",
                Transform::Same,
            ),
            (
                "decoder.up.3.block.2.conv1.weight",
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                Transform::Same,
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
                Transform::Same,
            ),
            (
                "decoder.mid.attn_1.proj_out.weight",
                "decoder.mid_block.attentions.0.to_out.0.weight",
                Transform::Squeeze,
            ),
            (
                "encoder.mid.attn_1.q.bias",
                "encoder.mid_block.attentions.0.to_q.bias",
                Transform::Same,
            ),
            (
                "encoder.norm_out.weight",
                "encoder.conv_norm_out.weight",
                Transform::Same,
            ),
            (
                "post_quant_conv.bias",
                "post_quant_conv.bias",
                Transform::Same,
            ),
        ];
        for (ldm, diffusers, transform) in cases {
            assert_eq!(
                vae_names(ldm, 4),
                vec![(diffusers.to_string(), transform)],
                "{ldm}"
            );
        }
    }

    #[test]
    fn openclip_names_split_fused_attention() {
        let names = clip_names("model.transformer.resblocks.7.attn.in_proj_weight");
        assert_eq!(
            names,
            vec![
                (
                    "text_model.encoder.layers.7.self_attn.q_proj.weight".into(),
                    Transform::Chunk {
                        index: 0,
                        count: 1,
                        parts: 3
                    }
                ),
                (
                    "text_model.encoder.layers.7.self_attn.k_proj.weight".into(),
                    Transform::Chunk {
                        index: 1,
                        count: 1,
                        parts: 3
                    }
                ),
                (
                    "text_model.encoder.layers.7.self_attn.v_proj.weight".into(),
                    Transform::Chunk {
                        index: 2,
                        count: 1,
                        parts: 3
                    }
                ),
            ]
        );
        assert_eq!(
            clip_names("model.text_projection"),
            vec![("text_projection.weight".into(), Transform::Transpose)]
        );
        assert_eq!(
            one(clip_names("model.transformer.resblocks.0.mlp.c_fc.bias")),
            "text_model.encoder.layers.0.mlp.fc1.bias"
        );
        assert_eq!(
            one(clip_names(
                "transformer.text_model.encoder.layers.3.self_attn.out_proj.weight"
            )),
            "text_model.encoder.layers.3.self_attn.out_proj.weight"
        );
        assert!(clip_names("transformer.text_model.embeddings.position_ids").is_empty());
        assert!(clip_names("model.logit_scale").is_empty());
    }
}
