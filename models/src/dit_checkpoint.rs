//! SD3 and Flux as users have them: which family a file or folder holds,
//! and every component of an all-in-one checkpoint or diffusers pipeline
//! folder (transformer, CLIP-L / bigG / T5 text encoders, VAE).

use std::path::Path;
use std::sync::Arc;

use weft_sampling::Model;

use crate::clip::{TextEncoder, TextFamily};
use crate::flux::{self, FluxNetwork};
use crate::memory;
use crate::packed::{self, WeightMode};
use crate::sd::checkpoint::{self, ClipParts};
use crate::sd::config::{self, VaeSpec};
use crate::sd::ldm::{self, VAE_PREFIX};
use crate::sd3::{self, Sd3Network};
use crate::t5::tower::{self as t5, T5Parts};
use crate::weights::{TensorMap, WeightFile};

/// The transformer families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DitFamily {
    Sd3,
    Flux,
}

impl DitFamily {
    pub fn name(self) -> &'static str {
        match self {
            DitFamily::Sd3 => "SD3",
            DitFamily::Flux => "Flux",
        }
    }

    fn text(self) -> TextFamily {
        match self {
            DitFamily::Sd3 => TextFamily::Sd3,
            DitFamily::Flux => TextFamily::Flux,
        }
    }
}

/// The transformer family `path` holds, if any: from a diffusers folder's
/// class names, or a file's keys (original or diffusers names).
pub fn family_of(path: &Path) -> Option<DitFamily> {
    if path.is_dir() {
        let text = ["model_index.json", "transformer/config.json", "config.json"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(path.join(f)).ok())
            .collect::<String>();
        return if text.contains("SD3Transformer2DModel") || text.contains("StableDiffusion3") {
            Some(DitFamily::Sd3)
        } else if text.contains("FluxTransformer2DModel") || text.contains("FluxPipeline") {
            Some(DitFamily::Flux)
        } else {
            None
        };
    }
    let keys: Vec<String> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        let gguf = weft_kernels::quant::GgufFile::open(path).ok()?;
        gguf.tensor_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    } else {
        crate::detect::header(path).ok()?.0.into_keys().collect()
    };
    let has = |part: &str| keys.iter().any(|k| k.contains(part));
    if has("joint_blocks.") {
        Some(DitFamily::Sd3)
    } else if has("double_blocks.") || has("single_transformer_blocks.") {
        Some(DitFamily::Flux)
    } else if has("transformer_blocks.0.attn.add_q_proj") && has("pos_embed.proj") {
        Some(DitFamily::Sd3)
    } else {
        None
    }
}

/// Builds the MODEL of a transformer file or folder of `family`, its
/// linears held as `mode` says.
pub fn load_model(
    family: DitFamily,
    path: &Path,
    config_dir: Option<&Path>,
    mode: WeightMode,
) -> Result<Model, String> {
    let fits = |tensors: &TensorMap| {
        let what = format!("{}: the {} transformer", path.display(), family.name());
        memory::check_fits(&what, packed::resident_bytes(tensors, mode), None)
    };
    Ok(match family {
        DitFamily::Sd3 => {
            let (config, tensors) = sd3::open_transformer(path, config_dir)?;
            fits(&tensors)?;
            Sd3Network::build(&config, &tensors, mode)?.into_model()
        }
        DitFamily::Flux => {
            let (config, tensors) = flux::open_transformer(path, config_dir)?;
            fits(&tensors)?;
            FluxNetwork::build(&config, &tensors, mode)?.into_model()
        }
    })
}

/// The text encoders and VAE beside the transformer in an all-in-one file
/// or pipeline folder.
pub struct Companions {
    pub clip: Option<TextEncoder>,
    pub vae: Option<(VaeSpec, TensorMap)>,
}

/// The CLIP value and VAE of `path` (an all-in-one file or a pipeline
/// folder) for `family`; each `None` where the file has none.
pub fn companions(family: DitFamily, path: &Path) -> Result<Companions, String> {
    let (clip, t5, vae) = if path.is_dir() {
        folder_parts(family, path)?
    } else {
        file_parts(path)?
    };
    let clip = if clip.is_empty() && t5.is_none() {
        None
    } else {
        Some(TextEncoder::with_t5(family.text(), clip, t5.as_ref())?)
    };
    Ok(Companions { clip, vae })
}

type Parts = (
    Vec<ClipParts>,
    Option<T5Parts>,
    Option<(VaeSpec, TensorMap)>,
);

/// A diffusers pipeline folder: CLIP encoders in `text_encoder`,
/// `text_encoder_2` (SD3), T5 in the last (`text_encoder_3` for SD3,
/// `text_encoder_2` for Flux).
fn folder_parts(family: DitFamily, dir: &Path) -> Result<Parts, String> {
    let t5_folder = match family {
        DitFamily::Sd3 => "text_encoder_3",
        DitFamily::Flux => "text_encoder_2",
    };
    let mut clip = Vec::new();
    for sub in ["text_encoder", "text_encoder_2"] {
        let d = dir.join(sub);
        if sub != t5_folder && d.join("config.json").is_file() {
            clip.extend(checkpoint::open_clip(&d)?);
        }
    }
    let t5 = dir
        .join(t5_folder)
        .join("config.json")
        .is_file()
        .then(|| t5::open(&dir.join(t5_folder)))
        .transpose()?;
    let vae = dir
        .join("vae")
        .is_dir()
        .then(|| checkpoint::open_vae(&dir.join("vae")))
        .transpose()?;
    Ok((clip, t5, vae))
}

/// CLIP encoders under `text_encoders.clip_l.` / `clip_g.`, T5 under
/// `text_encoders.t5xxl.`, the VAE under `first_stage_model.` or `vae.`.
fn file_parts(path: &Path) -> Result<Parts, String> {
    let file = WeightFile::open(path)?;
    let shapes = file.shapes();
    let has = |prefix: &str| shapes.keys().any(|k| k.starts_with(prefix));
    let err = |e: String| format!("{}: {e}", path.display());
    let mut clip = Vec::new();
    for name in ["clip_l", "clip_g"] {
        let prefix = format!("text_encoders.{name}.transformer.");
        if has(&prefix) {
            clip.push(checkpoint::transformers_clip(&file, &prefix).map_err(err)?);
        }
    }
    let t5 = if has(t5::PREFIXES[0]) {
        Some(t5::open(path)?)
    } else {
        None
    };
    let vae = match ["first_stage_model.", "vae."]
        .into_iter()
        .find(|p| has(&format!("{p}decoder.")))
    {
        Some(prefix) => Some(vae_at(&file, prefix).map_err(err)?),
        None => None,
    };
    Ok((clip, t5, vae))
}

/// An LDM-layout VAE under `prefix`.
fn vae_at(file: &Arc<WeightFile>, prefix: &str) -> Result<(VaeSpec, TensorMap), String> {
    let shapes: config::Shapes = file
        .shapes()
        .into_iter()
        .filter_map(|(k, v)| Some((format!("{VAE_PREFIX}{}", k.strip_prefix(prefix)?), v)))
        .collect();
    let spec = config::vae_from_shapes(&shapes)?;
    let levels = spec.config.block_out_channels.len();
    let mut map = TensorMap::default();
    map.add_file(file, prefix, |k| ldm::vae_names(k, levels));
    Ok((spec, map))
}
