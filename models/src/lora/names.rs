//! Which network weight a LoRA module patches.
//!
//! LoRA files name modules after the network they were trained on, in one of
//! several spellings (kohya's `lora_unet_…` with `.` turned into `_`, either
//! from diffusers or from LDM names; diffusers' `unet.…`; ComfyUI's
//! `diffusion_model.…`). Underscored names cannot be parsed back (`to_q`,
//! `down_blocks`), so the table goes the other way: every spelling of every
//! weight the networks have is generated and looked up.

use std::collections::{HashMap, HashSet};

use super::{Target, Weights};

/// LDM (single-file) names of a UNet's weights: the inverse of
/// [`crate::sd::ldm::unet_names`].
pub struct UnetLayout {
    layers_per_block: usize,
    /// Up blocks with attention: their upsampler follows it (`.2.conv`)
    /// rather than the ResBlock (`.1.conv`).
    up_attention: HashSet<usize>,
}

impl UnetLayout {
    /// The layout of the UNet whose diffusers weight names are `names`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, layers_per_block: usize) -> Self {
        let up_attention = names
            .into_iter()
            .filter_map(|n| n.strip_prefix("up_blocks.")?.split_once(".attentions."))
            .filter_map(|(b, _)| b.parse().ok())
            .collect();
        UnetLayout {
            layers_per_block,
            up_attention,
        }
    }

    /// The LDM name of a diffusers UNet weight (`down_blocks.1.attentions.0.proj_in.weight`
    /// → `input_blocks.4.1.proj_in.weight`), if it has one.
    pub fn ldm_name(&self, name: &str) -> Option<String> {
        let stride = self.layers_per_block + 1;
        let (part, rest) = name.split_once('.')?;
        match part {
            "conv_in" => Some(format!("input_blocks.0.0.{rest}")),
            "conv_norm_out" => Some(format!("out.0.{rest}")),
            "conv_out" => Some(format!("out.2.{rest}")),
            "time_embedding" => Some(format!("time_embed.{}", linear(rest)?)),
            "add_embedding" => Some(format!("label_emb.0.{}", linear(rest)?)),
            "down_blocks" => {
                let (b, rest) = index(rest)?;
                let first = 1 + b * stride;
                let (kind, rest) = rest.split_once('.')?;
                let (l, p) = index(rest)?;
                match kind {
                    "resnets" => Some(format!("input_blocks.{}.0.{}", first + l, resnet(p)?)),
                    "attentions" => Some(format!("input_blocks.{}.1.{p}", first + l)),
                    "downsamplers" if l == 0 => {
                        let p = p.strip_prefix("conv.")?;
                        Some(format!("input_blocks.{}.0.op.{p}", first + stride - 1))
                    }
                    _ => None,
                }
            }
            "mid_block" => {
                let (kind, rest) = rest.split_once('.')?;
                let (l, p) = index(rest)?;
                match (kind, l) {
                    ("resnets", 0 | 1) => Some(format!("middle_block.{}.{}", 2 * l, resnet(p)?)),
                    ("attentions", 0) => Some(format!("middle_block.1.{p}")),
                    _ => None,
                }
            }
            "up_blocks" => {
                let (b, rest) = index(rest)?;
                let (kind, rest) = rest.split_once('.')?;
                let (l, p) = index(rest)?;
                match kind {
                    "resnets" => Some(format!("output_blocks.{}.0.{}", b * stride + l, resnet(p)?)),
                    "attentions" => Some(format!("output_blocks.{}.1.{p}", b * stride + l)),
                    "upsamplers" if l == 0 => {
                        let at = 1 + usize::from(self.up_attention.contains(&b));
                        let p = p.strip_prefix("conv.")?;
                        Some(format!(
                            "output_blocks.{}.{at}.conv.{p}",
                            b * stride + stride - 1
                        ))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

fn index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// `linear_1.P` / `linear_2.P` of an embedding MLP → LDM's `0.P` / `2.P`.
fn linear(rest: &str) -> Option<String> {
    if let Some(p) = rest.strip_prefix("linear_1.") {
        Some(format!("0.{p}"))
    } else {
        rest.strip_prefix("linear_2.").map(|p| format!("2.{p}"))
    }
}

/// diffusers ResnetBlock2D parameter names → LDM ResBlock names.
fn resnet(rest: &str) -> Option<String> {
    const RENAMED: [(&str, &str); 6] = [
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ];
    RENAMED
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|p| format!("{to}{p}")))
}

/// A file's module name in the spelling the table uses: diffusers text-encoder
/// modules saved from transformers 5 lack the `text_model.` wrapper.
pub(super) fn normalise(module: &str) -> String {
    for prefix in ["text_encoder.", "text_encoder_2."] {
        if let Some(rest) = module.strip_prefix(prefix) {
            if let Some((name, _)) = crate::weights::transformers_text_names(rest).pop() {
                return format!("{prefix}{name}");
            }
        }
    }
    module.to_string()
}

/// diffusers' old attention-processor spelling of an attention projection
/// (`attn1.to_q` → `attn1.processor.to_q`, `attn1.to_out.0` → `attn1.processor.to_out`).
fn processor_name(base: &str) -> Option<String> {
    let (parent, last) = match base.strip_suffix(".to_out.0") {
        Some(parent) => (parent, "to_out"),
        None => {
            let (parent, last) = base.rsplit_once('.')?;
            (parent, last)
        }
    };
    ["to_q", "to_k", "to_v", "to_out"]
        .contains(&last)
        .then(|| format!("{parent}.processor.{last}"))
}

fn kohya(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", name.replace('.', "_"))
}

/// Module names a file may use for the weight `base` (its name without
/// `.weight`) of `target`.
fn spellings(target: Target, base: &str, layout: &UnetLayout) -> Vec<String> {
    match target {
        Target::Unet => {
            let mut names = vec![kohya("lora_unet_", base), format!("unet.{base}")];
            names.push(base.to_string());
            if let Some(p) = processor_name(base) {
                names.push(format!("unet.{p}"));
                names.push(p);
            }
            if let Some(ldm) = layout.ldm_name(&format!("{base}.weight")) {
                let ldm = ldm.strip_suffix(".weight").unwrap_or(&ldm);
                names.push(kohya("lora_unet_", ldm));
                names.push(format!("diffusion_model.{ldm}"));
            }
            names
        }
        Target::Clip(0) => vec![
            kohya("lora_te_", base),
            kohya("lora_te1_", base),
            format!("text_encoder.{base}"),
        ],
        Target::Clip(n) => vec![
            kohya(&format!("lora_te{}_", n + 1), base),
            format!("text_encoder_{}.{base}", n + 1),
        ],
    }
}

/// Every spelling of every weight of the networks → (network, weight base
/// name). A spelling two weights share is dropped rather than guessed.
pub(super) struct KeyTable {
    map: HashMap<String, Option<(Target, String)>>,
}

impl KeyTable {
    pub(super) fn new(networks: &[(Target, &Weights)], unet_layers_per_block: usize) -> Self {
        let mut map: HashMap<String, Option<(Target, String)>> = HashMap::new();
        for &(target, weights) in networks {
            let layout = UnetLayout::new(weights.keys().map(String::as_str), unet_layers_per_block);
            for name in weights.keys() {
                let Some(base) = name.strip_suffix(".weight") else {
                    continue;
                };
                for spelling in spellings(target, base, &layout) {
                    let entry = Some((target, base.to_string()));
                    map.entry(spelling)
                        .and_modify(|e| {
                            if *e != entry {
                                *e = None;
                            }
                        })
                        .or_insert(entry);
                }
            }
        }
        KeyTable { map }
    }

    /// The network and weight base name (without `.weight`) a file module patches.
    pub(super) fn get(&self, module: &str) -> Option<(Target, &str)> {
        let found = self.map.get(&normalise(module))?.as_ref()?;
        Some((found.0, found.1.as_str()))
    }
}
