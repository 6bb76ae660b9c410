//! Black Forest Labs' original Flux key names (the released
//! `flux1-dev.safetensors`, ComfyUI's `diffusion_models/` files, GGUF
//! conversions) as the diffusers names the transformer is built with:
//! fused q/k/v split in three, a single block's `linear1` split into q, k,
//! v and the MLP input (3 + 4 parts of seven), and the final modulation's
//! (shift, scale) halves swapped to diffusers' (scale, shift).

use crate::weights::Transform;

/// `(original, diffusers)` module names outside the blocks.
const TOP: [(&str, &str); 10] = [
    ("img_in", "x_embedder"),
    ("txt_in", "context_embedder"),
    (
        "time_in.in_layer",
        "time_text_embed.timestep_embedder.linear_1",
    ),
    (
        "time_in.out_layer",
        "time_text_embed.timestep_embedder.linear_2",
    ),
    (
        "vector_in.in_layer",
        "time_text_embed.text_embedder.linear_1",
    ),
    (
        "vector_in.out_layer",
        "time_text_embed.text_embedder.linear_2",
    ),
    (
        "guidance_in.in_layer",
        "time_text_embed.guidance_embedder.linear_1",
    ),
    (
        "guidance_in.out_layer",
        "time_text_embed.guidance_embedder.linear_2",
    ),
    ("final_layer.linear", "proj_out"),
    ("final_layer.adaLN_modulation.1", "norm_out.linear"),
];

/// Inside a double block.
const DOUBLE: [(&str, &str); 10] = [
    ("img_mod.lin", "norm1.linear"),
    ("txt_mod.lin", "norm1_context.linear"),
    ("img_attn.proj", "attn.to_out.0"),
    ("txt_attn.proj", "attn.to_add_out"),
    ("img_mlp.0", "ff.net.0.proj"),
    ("img_mlp.2", "ff.net.2"),
    ("txt_mlp.0", "ff_context.net.0.proj"),
    ("txt_mlp.2", "ff_context.net.2"),
    ("img_attn.qkv", "attn.to_q attn.to_k attn.to_v"),
    (
        "txt_attn.qkv",
        "attn.add_q_proj attn.add_k_proj attn.add_v_proj",
    ),
];

/// Per-head norms: `(original, diffusers)`, `scale` → `weight`.
const NORMS: [(&str, &str); 6] = [
    ("img_attn.norm.query_norm", "attn.norm_q"),
    ("img_attn.norm.key_norm", "attn.norm_k"),
    ("txt_attn.norm.query_norm", "attn.norm_added_q"),
    ("txt_attn.norm.key_norm", "attn.norm_added_k"),
    ("norm.query_norm", "attn.norm_q"),
    ("norm.key_norm", "attn.norm_k"),
];

/// The diffusers names of original key `key` (any prefix removed); none
/// for keys the transformer does not use.
pub fn diffusers_names(key: &str) -> Vec<(String, Transform)> {
    let Some((module, suffix)) = key.rsplit_once('.') else {
        return Vec::new();
    };
    if let Some(&(_, to)) = TOP.iter().find(|(from, _)| *from == module) {
        let t = if module.starts_with("final_layer.adaLN") {
            Transform::SwapHalves
        } else {
            Transform::Same
        };
        return vec![(format!("{to}.{suffix}"), t)];
    }
    let (group, rest) = if let Some(r) = key.strip_prefix("double_blocks.") {
        ("transformer_blocks", r)
    } else if let Some(r) = key.strip_prefix("single_blocks.") {
        ("single_transformer_blocks", r)
    } else {
        return Vec::new();
    };
    let Some((i, inner)) = rest.split_once('.') else {
        return Vec::new();
    };
    if i.parse::<usize>().is_err() {
        return Vec::new();
    }
    let Some((module, suffix)) = inner.rsplit_once('.') else {
        return Vec::new();
    };
    let name = |n: &str, s: &str| format!("{group}.{i}.{n}.{s}");
    let chunk = |index, count, parts| Transform::Chunk {
        index,
        count,
        parts,
    };
    if suffix == "scale" {
        return NORMS
            .iter()
            .find(|(from, _)| *from == module)
            .map(|(_, to)| vec![(name(to, "weight"), Transform::Same)])
            .unwrap_or_default();
    }
    if group == "single_transformer_blocks" {
        return match module {
            "linear1" => ["attn.to_q", "attn.to_k", "attn.to_v"]
                .iter()
                .enumerate()
                .map(|(p, n)| (name(n, suffix), chunk(p, 1, 7)))
                .chain([(name("proj_mlp", suffix), chunk(3, 4, 7))])
                .collect(),
            "linear2" => vec![(name("proj_out", suffix), Transform::Same)],
            "modulation.lin" => vec![(name("norm.linear", suffix), Transform::Same)],
            _ => Vec::new(),
        };
    }
    let Some(&(_, to)) = DOUBLE.iter().find(|(from, _)| *from == module) else {
        return Vec::new();
    };
    let parts: Vec<&str> = to.split(' ').collect();
    if parts.len() == 3 {
        return parts
            .iter()
            .enumerate()
            .map(|(p, n)| (name(n, suffix), chunk(p, 1, 3)))
            .collect();
    }
    vec![(name(to, suffix), Transform::Same)]
}

/// Every linear module of a transformer of `cfg` in BFL's names (what
/// kohya-style LoRAs name, with `_` for `.`).
pub fn original_linears(cfg: &super::FluxConfig) -> Vec<String> {
    let mut m: Vec<String> = TOP
        .iter()
        .map(|(from, _)| from.to_string())
        .filter(|n| cfg.guidance_embeds || !n.starts_with("guidance_in"))
        .collect();
    for i in 0..cfg.num_layers {
        for (from, _) in DOUBLE {
            m.push(format!("double_blocks.{i}.{from}"));
        }
    }
    for i in 0..cfg.num_single_layers {
        for part in ["linear1", "linear2", "modulation.lin"] {
            m.push(format!("single_blocks.{i}.{part}"));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_blocks_linear1_splits_three_and_four_sevenths() {
        let names = diffusers_names("single_blocks.5.linear1.weight");
        let got: Vec<(&str, Transform)> = names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[2].0, "single_transformer_blocks.5.attn.to_v.weight");
        assert_eq!(
            got[3],
            (
                "single_transformer_blocks.5.proj_mlp.weight",
                Transform::Chunk {
                    index: 3,
                    count: 4,
                    parts: 7
                }
            )
        );
    }

    #[test]
    fn norms_and_modulations_are_renamed() {
        assert_eq!(
            diffusers_names("double_blocks.0.txt_attn.norm.key_norm.scale"),
            vec![(
                "transformer_blocks.0.attn.norm_added_k.weight".to_string(),
                Transform::Same
            )]
        );
        assert_eq!(
            diffusers_names("final_layer.adaLN_modulation.1.weight")[0].1,
            Transform::SwapHalves
        );
        assert_eq!(
            diffusers_names("double_blocks.2.img_attn.qkv.bias")[0].0,
            "transformer_blocks.2.attn.to_q.bias"
        );
        assert!(diffusers_names("double_blocks.2.img_norm1.weight").is_empty());
    }
}
