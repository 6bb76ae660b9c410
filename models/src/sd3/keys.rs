//! Stability's original MM-DiT key names (single-file SD3/SD3.5
//! checkpoints, under `model.diffusion_model.`, and bare transformer files
//! in `diffusion_models/`) as the diffusers names the transformer is built
//! with: fused q/k/v split in three, and the (shift, scale) halves of the
//! final and last-context modulations swapped to diffusers' (scale, shift).

use crate::weights::Transform;

/// `(original suffix, diffusers suffix)` inside one joint block.
const BLOCK: [(&str, &str); 18] = [
    ("x_block.attn.ln_q.weight", "attn.norm_q.weight"),
    ("x_block.attn.ln_k.weight", "attn.norm_k.weight"),
    ("context_block.attn.ln_q.weight", "attn.norm_added_q.weight"),
    ("context_block.attn.ln_k.weight", "attn.norm_added_k.weight"),
    ("x_block.attn.proj.weight", "attn.to_out.0.weight"),
    ("x_block.attn.proj.bias", "attn.to_out.0.bias"),
    ("context_block.attn.proj.weight", "attn.to_add_out.weight"),
    ("context_block.attn.proj.bias", "attn.to_add_out.bias"),
    ("x_block.attn2.ln_q.weight", "attn2.norm_q.weight"),
    ("x_block.attn2.ln_k.weight", "attn2.norm_k.weight"),
    ("x_block.attn2.proj.weight", "attn2.to_out.0.weight"),
    ("x_block.attn2.proj.bias", "attn2.to_out.0.bias"),
    ("x_block.mlp.fc1.weight", "ff.net.0.proj.weight"),
    ("x_block.mlp.fc1.bias", "ff.net.0.proj.bias"),
    ("x_block.mlp.fc2.weight", "ff.net.2.weight"),
    ("x_block.mlp.fc2.bias", "ff.net.2.bias"),
    ("x_block.adaLN_modulation.1.weight", "norm1.linear.weight"),
    ("x_block.adaLN_modulation.1.bias", "norm1.linear.bias"),
];

/// Fused projections: `(original prefix, diffusers q, k, v)`.
const FUSED: [(&str, [&str; 3]); 3] = [
    ("x_block.attn.qkv", ["attn.to_q", "attn.to_k", "attn.to_v"]),
    (
        "context_block.attn.qkv",
        ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    ),
    (
        "x_block.attn2.qkv",
        ["attn2.to_q", "attn2.to_k", "attn2.to_v"],
    ),
];

/// Outside the blocks.
const TOP: [(&str, &str); 12] = [
    ("pos_embed", "pos_embed.pos_embed"),
    ("x_embedder.proj.weight", "pos_embed.proj.weight"),
    ("x_embedder.proj.bias", "pos_embed.proj.bias"),
    ("context_embedder.weight", "context_embedder.weight"),
    ("context_embedder.bias", "context_embedder.bias"),
    (
        "t_embedder.mlp.0.weight",
        "time_text_embed.timestep_embedder.linear_1.weight",
    ),
    (
        "t_embedder.mlp.0.bias",
        "time_text_embed.timestep_embedder.linear_1.bias",
    ),
    (
        "t_embedder.mlp.2.weight",
        "time_text_embed.timestep_embedder.linear_2.weight",
    ),
    (
        "t_embedder.mlp.2.bias",
        "time_text_embed.timestep_embedder.linear_2.bias",
    ),
    (
        "y_embedder.mlp.0.weight",
        "time_text_embed.text_embedder.linear_1.weight",
    ),
    (
        "y_embedder.mlp.0.bias",
        "time_text_embed.text_embedder.linear_1.bias",
    ),
    ("final_layer.linear.weight", "proj_out.weight"),
];

/// The diffusers names of original key `key` (prefix removed) in a model of
/// `layers` joint blocks; none for keys the transformer does not use.
pub fn diffusers_names(key: &str, layers: usize) -> Vec<(String, Transform)> {
    let same = |name: &str| vec![(name.to_string(), Transform::Same)];
    if let Some(&(_, to)) = TOP.iter().find(|(from, _)| *from == key) {
        return same(to);
    }
    match key {
        "y_embedder.mlp.2.weight" => return same("time_text_embed.text_embedder.linear_2.weight"),
        "y_embedder.mlp.2.bias" => return same("time_text_embed.text_embedder.linear_2.bias"),
        "final_layer.linear.bias" => return same("proj_out.bias"),
        "final_layer.adaLN_modulation.1.weight" => {
            return vec![("norm_out.linear.weight".into(), Transform::SwapHalves)]
        }
        "final_layer.adaLN_modulation.1.bias" => {
            return vec![("norm_out.linear.bias".into(), Transform::SwapHalves)]
        }
        _ => {}
    }
    let Some(rest) = key.strip_prefix("joint_blocks.") else {
        return Vec::new();
    };
    let Some((i, inner)) = rest.split_once('.') else {
        return Vec::new();
    };
    let Ok(index) = i.parse::<usize>() else {
        return Vec::new();
    };
    let block = |name: &str| format!("transformer_blocks.{index}.{name}");
    if let Some(&(_, to)) = BLOCK.iter().find(|(from, _)| *from == inner) {
        return vec![(block(to), Transform::Same)];
    }
    for (from, names) in FUSED {
        for suffix in ["weight", "bias"] {
            if inner == format!("{from}.{suffix}") {
                return names
                    .iter()
                    .enumerate()
                    .map(|(part, n)| {
                        (
                            block(&format!("{n}.{suffix}")),
                            Transform::Chunk {
                                index: part,
                                count: 1,
                                parts: 3,
                            },
                        )
                    })
                    .collect();
            }
        }
    }
    // The last block's text stream only feeds attention: its modulation
    // is AdaLayerNormContinuous (scale, shift) in diffusers.
    let last = index + 1 == layers;
    for (from, to) in [
        ("context_block.adaLN_modulation.1", "norm1_context.linear"),
        ("context_block.mlp.fc1", "ff_context.net.0.proj"),
        ("context_block.mlp.fc2", "ff_context.net.2"),
    ] {
        for suffix in ["weight", "bias"] {
            if inner == format!("{from}.{suffix}") {
                let t = if last && from.contains("adaLN") {
                    Transform::SwapHalves
                } else {
                    Transform::Same
                };
                return vec![(block(&format!("{to}.{suffix}")), t)];
            }
        }
    }
    Vec::new()
}

/// Every linear module of a transformer of `cfg` in Stability's names
/// (what kohya-style LoRAs name, with `_` for `.`).
pub fn original_linears(cfg: &super::Sd3Config) -> Vec<String> {
    let mut m: Vec<String> = [
        "context_embedder",
        "t_embedder.mlp.0",
        "t_embedder.mlp.2",
        "y_embedder.mlp.0",
        "y_embedder.mlp.2",
        "final_layer.linear",
        "final_layer.adaLN_modulation.1",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..cfg.num_layers {
        for stream in ["x_block", "context_block"] {
            for part in [
                "attn.qkv",
                "attn.proj",
                "mlp.fc1",
                "mlp.fc2",
                "adaLN_modulation.1",
            ] {
                m.push(format!("joint_blocks.{i}.{stream}.{part}"));
            }
        }
        for part in ["attn2.qkv", "attn2.proj"] {
            m.push(format!("joint_blocks.{i}.x_block.{part}"));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_projections_split_in_three() {
        let names = diffusers_names("joint_blocks.3.context_block.attn.qkv.bias", 24);
        assert_eq!(names.len(), 3);
        assert_eq!(names[1].0, "transformer_blocks.3.attn.add_k_proj.bias");
        assert_eq!(
            names[1].1,
            Transform::Chunk {
                index: 1,
                count: 1,
                parts: 3
            }
        );
    }

    #[test]
    fn the_last_context_modulation_is_swapped() {
        let key = "joint_blocks.23.context_block.adaLN_modulation.1.weight";
        assert_eq!(diffusers_names(key, 24)[0].1, Transform::SwapHalves);
        assert_eq!(diffusers_names(key, 25)[0].1, Transform::Same);
        assert_eq!(
            diffusers_names("final_layer.adaLN_modulation.1.bias", 24)[0],
            ("norm_out.linear.bias".to_string(), Transform::SwapHalves)
        );
    }

    #[test]
    fn unknown_keys_map_to_nothing() {
        assert!(diffusers_names("joint_blocks.x.foo", 2).is_empty());
        assert!(diffusers_names("something_else", 2).is_empty());
    }
}
