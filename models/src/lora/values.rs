//! A LoRA applied to weft's MODEL and CLIP values: the patched layers are
//! merged into copies of the networks that share every other tensor, so a
//! LoRA'd model steps as fast as the plain one and holds one base copy.

use std::sync::Arc;

use weft_sampling::Model;

use super::{apply, dit, LoraFile, Target};
use crate::clip::TextEncoder;
use crate::flux::FluxNetwork;
use crate::sd::config::Family;
use crate::sd::SdUNet;
use crate::sd3::Sd3Network;

/// The models with a LoRA merged in, and what happened.
pub struct Patched {
    pub model: Option<Model>,
    pub clip: Option<TextEncoder>,
    /// One line for the run's output: patch counts and unmatched keys.
    pub summary: String,
}

/// The family a UNet cross-attending to `width`-wide text belongs to.
fn family_of_context(width: usize) -> String {
    match width {
        768 => Family::Sd1.name().into(),
        1024 => Family::Sd2.name().into(),
        2048 => Family::Sdxl.name().into(),
        1280 => Family::SdxlRefiner.name().into(),
        w => format!("a {w}-wide-context"),
    }
}

/// The Stable Diffusion UNet of a MODEL, if it is one.
fn sd_unet(model: &Model) -> Result<&SdUNet, String> {
    let any: &dyn std::any::Any = &*model.network;
    any.downcast_ref::<SdUNet>().ok_or_else(|| {
        format!(
            "LoRA patches Stable Diffusion UNets; this MODEL is {:?}",
            model.network
        )
    })
}

/// `lora` merged into an SD3 or Flux MODEL at `strength`, with its summary
/// and how many weights it patched; `None` for other models. Its
/// text-encoder modules are left to [`patch_text`].
fn transformer_lora(
    lora: &LoraFile,
    model: &Model,
    strength: f64,
) -> Result<Option<(Model, String, usize, &'static str)>, String> {
    let file = lora.path().display();
    let any: &dyn std::any::Any = &*model.network;
    let (family, tensors, table) = if let Some(net) = any.downcast_ref::<Sd3Network>() {
        let cfg = net.transformer.config().clone();
        let originals = crate::sd3::keys::original_linears(&cfg);
        let table = dit::table(&net.tensors, &originals, |k| {
            crate::sd3::keys::diffusers_names(k, cfg.num_layers)
        });
        ("SD3", &net.tensors, table)
    } else if let Some(net) = any.downcast_ref::<FluxNetwork>() {
        let originals = crate::flux::keys::original_linears(net.transformer.config());
        let table = dit::table(&net.tensors, &originals, crate::flux::keys::diffusers_names);
        ("Flux", &net.tensors, table)
    } else {
        return Ok(None);
    };
    let (changed, unmatched) = dit::merge(lora, tensors, &table, strength)?;
    let unmatched: Vec<String> = unmatched.into_iter().filter(|k| !is_text_key(k)).collect();
    if changed.is_empty() {
        let summary = format!("{file}: 0 {family} weights patched");
        return Ok(Some((model.clone(), summary, 0, family)));
    }
    let overridden = tensors.with_overrides(&changed);
    let network: Arc<dyn weft_sampling::Network> =
        if let Some(net) = any.downcast_ref::<Sd3Network>() {
            let mut patched = Sd3Network::build(net.transformer.config(), &overridden, net.mode)?;
            patched.skip = net.skip.clone();
            Arc::new(patched)
        } else {
            let net = any.downcast_ref::<FluxNetwork>().expect("checked above");
            Arc::new(FluxNetwork::build(
                net.transformer.config(),
                &overridden,
                net.mode,
            )?)
        };
    let mut summary = format!("{file}: {} {family} weights patched", changed.len());
    if !unmatched.is_empty() {
        let first: Vec<&String> = unmatched.iter().take(5).collect();
        summary.push_str(&format!(
            "; {} key(s) match no weight of this model and were not applied: {first:?}{}",
            unmatched.len(),
            if unmatched.len() > 5 { " …" } else { "" }
        ));
    }
    Ok(Some((
        Model {
            network,
            ..model.clone()
        },
        summary,
        changed.len(),
        family,
    )))
}

/// Whether a file key is a text-encoder module (skipped silently when only
/// the MODEL is patched, as `LoraLoaderModelOnly` asks).
fn is_text_key(key: &str) -> bool {
    ["lora_te", "text_encoder", "te_", "te1_", "te2_"]
        .iter()
        .any(|p| key.starts_with(p))
}

/// Merges `lora` into `model` at `strength_model` and `clip` at
/// `strength_clip` (either may be absent; strength 0 leaves it as it is).
/// Keys that match no weight are reported in the summary, never dropped
/// silently; a LoRA for another family is an error naming both.
pub fn patch(
    lora: &LoraFile,
    model: Option<&Model>,
    clip: Option<&TextEncoder>,
    strength_model: f64,
    strength_clip: f64,
) -> Result<Patched, String> {
    let file = lora.path().display();
    if let Some(m) = model {
        if let Some((model, mut summary, n, family)) = transformer_lora(lora, m, strength_model)? {
            let (clip, text_patches) = match clip {
                Some(c) => {
                    let towers: Vec<(Target, &crate::weights::Weights)> = (0..c.towers())
                        .filter_map(|i| c.weights(i).map(|w| (Target::Clip(i), w)))
                        .collect();
                    let resolved = lora.resolve(&towers, 2);
                    let patched = patch_text(c, &resolved, strength_clip, &mut summary)?;
                    let text_keys: Vec<&String> = resolved
                        .unmatched
                        .iter()
                        .filter(|k| is_text_key(k))
                        .collect();
                    report_unmatched(&mut summary, &text_keys);
                    (Some(patched), resolved.patches.len())
                }
                None => (None, 0),
            };
            if n == 0 && text_patches == 0 {
                let theirs = lora.family_hint().unwrap_or("another model");
                return Err(format!(
                    "{file}: a LoRA for {theirs}, but the model is {family}: no module matches its weights"
                ));
            }
            return Ok(Patched {
                model: Some(model),
                clip,
                summary,
            });
        }
    }
    let unet = model.map(sd_unet).transpose()?;
    if let (Some(unet), Some(width)) = (unet, lora.context_width()) {
        let ours = unet.spec().config.cross_attention_dim;
        if width != ours {
            return Err(format!(
                "{file}: a LoRA for {} models (its UNet layers take {width}-wide text), but the model is {} ({ours}-wide)",
                family_of_context(width),
                unet.spec().family().name()
            ));
        }
    }
    let mut networks = Vec::new();
    if let Some(u) = unet {
        networks.push((Target::Unet, u.weights()));
    }
    if let Some(c) = clip {
        for i in 0..c.towers() {
            networks.extend(c.weights(i).map(|w| (Target::Clip(i), w)));
        }
    }
    let layers_per_block = unet.map_or(2, |u| u.spec().config.layers_per_block);
    let resolved = lora.resolve(&networks, layers_per_block);
    let unmatched: Vec<&String> = resolved
        .unmatched
        .iter()
        .filter(|k| clip.is_some() || !is_text_key(k))
        .collect();
    if resolved.patches.is_empty() {
        let first: Vec<&String> = unmatched.iter().take(5).copied().collect();
        return Err(format!(
            "{file}: no key matches a weight of this model (not a LoRA for it? first keys: {first:?})"
        ));
    }
    let count = |t: Target| resolved.patches.iter().filter(|p| p.target == t).count();
    let mut summary = format!("{file}: {} UNet patches", count(Target::Unet));
    let model = match (model, unet) {
        (Some(m), Some(u)) if strength_model != 0.0 && count(Target::Unet) > 0 => {
            let changed = apply(Target::Unet, u.weights(), &resolved, strength_model)?;
            Some(Model {
                network: Arc::new(u.with_weights(&changed)?),
                ..m.clone()
            })
        }
        (m, _) => m.cloned(),
    };
    let clip = clip
        .map(|c| patch_text(c, &resolved, strength_clip, &mut summary))
        .transpose()?;
    report_unmatched(&mut summary, &unmatched);
    Ok(Patched {
        model,
        clip,
        summary,
    })
}

/// `clip` with `resolved`'s text-encoder patches merged at `strength`,
/// counting them per encoder in `summary`.
fn patch_text(
    clip: &TextEncoder,
    resolved: &super::Resolved,
    strength: f64,
    summary: &mut String,
) -> Result<TextEncoder, String> {
    let mut out = clip.clone();
    for i in 0..clip.towers() {
        let n = resolved
            .patches
            .iter()
            .filter(|p| p.target == Target::Clip(i))
            .count();
        summary.push_str(&format!(", {n} text encoder {} patches", i + 1));
        if n > 0 && strength != 0.0 {
            let base = clip.weights(i).expect("a tower per index");
            let changed = apply(Target::Clip(i), base, resolved, strength)?;
            out = out.with_weights(i, &changed)?;
        }
    }
    Ok(out)
}

/// Appends the keys no weight took, never dropping them silently.
fn report_unmatched(summary: &mut String, unmatched: &[&String]) {
    if unmatched.is_empty() {
        return;
    }
    let first: Vec<&String> = unmatched.iter().take(5).copied().collect();
    summary.push_str(&format!(
        "; {} key(s) match no weight of this model and were not applied: {first:?}{}",
        unmatched.len(),
        if unmatched.len() > 5 { " …" } else { "" }
    ));
}
