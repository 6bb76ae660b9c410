//! Opening a Stable Diffusion checkpoint, in either layout users have: a
//! single `.safetensors` file (LDM / A1111 / ComfyUI) or a diffusers folder.
//! The result says what each component is and where its tensors are; the
//! networks are built from it by [`super::unet`], [`super::vae`] and
//! [`super::text`].

use std::path::{Path, PathBuf};

use super::config::{self, ClipLayout, Family, ScheduleSpec, UNetSpec, VaeSpec};
use super::ldm::{self, CLIP_PREFIX, SDXL_CLIP_PREFIXES, UNET_PREFIX, VAE_PREFIX};
use crate::clip::{Activation, ClipConfig};
use crate::weights::{self, TensorMap, Transform, WeightFile};

/// The text encoder's part of a checkpoint.
#[derive(Clone, Debug)]
pub struct ClipParts {
    pub config: ClipConfig,
    pub tensors: TensorMap,
    /// Layer whose states condition the UNet (counted from 1): the last,
    /// except for full OpenCLIP towers in SD 2.x single files, where SD 2.x
    /// uses the penultimate (diffusers' converted encoders already end there).
    pub layer: usize,
    /// SD 2.x's tokenizer pads with `!` (id 0) instead of the end token.
    pub pad_with_zero: bool,
    /// The BPE merges of the checkpoint's own tokenizer, when it has one.
    pub merges: Option<PathBuf>,
    /// Whether the chosen layer's states go through the final layer norm:
    /// SD 1.x/2.x's do, SDXL conditions on raw penultimate states.
    pub final_norm: bool,
}

impl ClipParts {
    /// A text encoder from a single file, which carries no tokenizer: a
    /// full OpenCLIP tower conditions on its penultimate layer and pads
    /// with `!`, as SD 2.x was trained; one converted to transformers' names
    /// (diffusers' SD 2.x encoder, already cut to the penultimate layer)
    /// conditions on its last layer and pads with `!` too.
    fn single_file(config: ClipConfig, layout: ClipLayout, tensors: TensorMap) -> ClipParts {
        let n = config.num_hidden_layers;
        let open_clip = layout == ClipLayout::OpenClip;
        ClipParts {
            layer: if open_clip && n > 1 { n - 1 } else { n },
            pad_with_zero: open_clip || config.hidden_act == Activation::Gelu,
            merges: None,
            final_norm: true,
            config,
            tensors,
        }
    }

    /// From a diffusers/transformers text-encoder folder's config: the last
    /// layer, through the final norm (diffusers' SD 2.x encoder is already
    /// cut to the penultimate layer).
    fn folder(config: ClipConfig, tensors: TensorMap, tokenizer: &Tokenizer) -> ClipParts {
        ClipParts {
            layer: config.num_hidden_layers,
            pad_with_zero: tokenizer
                .pad_with_zero
                .unwrap_or(config.hidden_act == Activation::Gelu),
            merges: tokenizer.merges.clone(),
            final_norm: true,
            config,
            tensors,
        }
    }

    /// As SDXL conditions on this encoder: its penultimate layer's states,
    /// without the final norm (ComfyUI's and diffusers' `hidden_states[-2]`).
    pub fn for_sdxl(self) -> ClipParts {
        let n = self.config.num_hidden_layers;
        ClipParts {
            layer: n.saturating_sub(1).max(1),
            final_norm: false,
            ..self
        }
    }
}

/// A folder's tokenizer: its merges and whether it pads with `!`.
#[derive(Clone, Debug, Default)]
struct Tokenizer {
    merges: Option<PathBuf>,
    pad_with_zero: Option<bool>,
}

impl Tokenizer {
    fn read(dir: &Path) -> Result<Tokenizer, String> {
        let merges = dir.join("merges.txt");
        let special = dir.join("special_tokens_map.json");
        Ok(Tokenizer {
            merges: merges.is_file().then_some(merges),
            pad_with_zero: special
                .is_file()
                .then(|| read(&special))
                .transpose()?
                .map(|text| text.contains("\"!\"")),
        })
    }
}

/// Everything a checkpoint holds, not yet built.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub family: Family,
    pub unet: Option<(UNetSpec, TensorMap)>,
    pub vae: Option<(VaeSpec, TensorMap)>,
    /// The text encoders, in the order their states are joined: one for
    /// SD 1.x/2.x, CLIP-L and bigG for SDXL, bigG for its refiner.
    pub clip: Vec<ClipParts>,
    pub schedule: ScheduleSpec,
}

/// Opens `path` (a single file or a diffusers folder). `config_dir`, a
/// diffusers folder, supplies the configs of a single file whose family the
/// shapes cannot tell (diffusers' `from_single_file(config=…)`).
pub fn open(path: &Path, config_dir: Option<&Path>) -> Result<Checkpoint, String> {
    if path.is_dir() {
        return open_diffusers(path);
    }
    if !path.exists() {
        return Err(format!(
            "{}: no such model file or folder (weft never downloads models: point it at a local checkpoint)",
            path.display()
        ));
    }
    open_single_file(path, config_dir)
}

pub(crate) fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse<T>(path: &Path, f: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
    f(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// The configs a diffusers folder declares for each component it has.
struct FolderConfigs {
    unet: Option<UNetSpec>,
    vae: Option<VaeSpec>,
    /// `text_encoder/` and `text_encoder_2/` with their tokenizers, where present.
    clip: [Option<(ClipConfig, Tokenizer)>; 2],
    schedule: Option<ScheduleSpec>,
}

/// A diffusers folder's text encoders and their tokenizers, in order.
const TEXT_ENCODERS: [(&str, &str); 2] = [
    ("text_encoder", "tokenizer"),
    ("text_encoder_2", "tokenizer_2"),
];

fn folder_configs(dir: &Path) -> Result<FolderConfigs, String> {
    let opt = |sub: &str| {
        let p = dir.join(sub);
        p.exists().then_some(p)
    };
    let [te1, te2] = TEXT_ENCODERS.map(|(te, tok)| {
        opt(&format!("{te}/config.json"))
            .map(|p| {
                Ok::<_, String>((
                    parse(&p, config::clip_from_json)?,
                    Tokenizer::read(&dir.join(tok))?,
                ))
            })
            .transpose()
    });
    Ok(FolderConfigs {
        unet: opt("unet/config.json")
            .map(|p| parse(&p, config::unet_from_json))
            .transpose()?,
        vae: opt("vae/config.json")
            .map(|p| parse(&p, config::vae_from_json))
            .transpose()?,
        clip: [te1?, te2?],
        schedule: opt("scheduler/scheduler_config.json")
            .map(|p| parse(&p, config::schedule_from_json))
            .transpose()?,
    })
}

/// Weight file names of diffusers UNet and VAE folders.
const MODEL_FILES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];
/// Weight file names of transformers text-encoder folders.
const TEXT_FILES: [&str; 2] = ["model.safetensors", "model.fp16.safetensors"];

/// How a component's stored keys become the names its network is built with.
type Names = fn(&str) -> Vec<(String, Transform)>;

/// The weights file of a diffusers component, refusing pickles.
fn component_file(dir: &Path, sub: &str, names: &[&str]) -> Result<Option<PathBuf>, String> {
    let folder = dir.join(sub);
    if !folder.is_dir() {
        return Ok(None);
    }
    for name in names {
        let p = folder.join(name);
        if p.is_file() {
            return Ok(Some(p));
        }
    }
    Err(format!(
        "{}: no safetensors weights (looked for {}); pickled .bin weights are not loaded, convert them to safetensors",
        folder.display(),
        names.join(", ")
    ))
}

fn open_diffusers(dir: &Path) -> Result<Checkpoint, String> {
    let cfg = folder_configs(dir)?;
    let load = |sub: &str, files: &[&str], names: Names| -> Result<Option<TensorMap>, String> {
        let Some(file) = component_file(dir, sub, files)? else {
            return Ok(None);
        };
        let file = WeightFile::open(&file)?;
        let mut map = TensorMap::default();
        map.add_file(&file, "", names);
        Ok(Some(map))
    };
    fn pair<S>(
        dir: &Path,
        spec: Option<S>,
        map: Option<TensorMap>,
        what: &str,
    ) -> Result<Option<(S, TensorMap)>, String> {
        match (spec, map) {
            (Some(s), Some(m)) => Ok(Some((s, m))),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(format!(
                "{}: {what} has weights but no config.json",
                dir.display()
            )),
            (Some(_), None) => Err(format!(
                "{}: {what} has a config.json but no weights",
                dir.display()
            )),
        }
    }
    let unet = pair(
        dir,
        cfg.unet,
        load("unet", &MODEL_FILES, weights::diffusers_names)?,
        "unet/",
    )?;
    let vae = pair(
        dir,
        cfg.vae,
        load("vae", &MODEL_FILES, weights::diffusers_names)?,
        "vae/",
    )?;
    let mut clip = Vec::new();
    for (given, (te, _)) in cfg.clip.into_iter().zip(TEXT_ENCODERS) {
        let tensors = load(te, &TEXT_FILES, weights::transformers_text_names)?;
        let (config, tokenizer) = given.unzip();
        if let Some((config, tensors)) = pair(dir, config, tensors, te)? {
            clip.push(ClipParts::folder(
                config,
                tensors,
                &tokenizer.unwrap_or_default(),
            ));
        }
    }
    if unet.is_none() && vae.is_none() && clip.is_empty() {
        return Err(format!(
            "{}: not a diffusers model folder (no unet/, vae/ or text_encoder/ with config.json and safetensors weights)",
            dir.display()
        ));
    }
    let family = unet.as_ref().map_or(Family::Other, |(u, _)| u.family());
    let clip = sdxl_text(family, clip);
    Ok(Checkpoint {
        path: dir.to_path_buf(),
        family,
        unet,
        vae,
        clip,
        schedule: cfg
            .schedule
            .unwrap_or_else(|| ScheduleSpec::stable_diffusion(weft_sampling::Prediction::Epsilon)),
    })
}

fn open_single_file(path: &Path, config_dir: Option<&Path>) -> Result<Checkpoint, String> {
    let file = WeightFile::open(path)?;
    let shapes = file.shapes();
    let has = |prefix: &str| shapes.keys().any(|k| k.starts_with(prefix));
    let clip_prefixes: Vec<&str> = std::iter::once(CLIP_PREFIX)
        .chain(SDXL_CLIP_PREFIXES)
        .filter(|p| has(p))
        .collect();
    if !has(UNET_PREFIX) && !has(VAE_PREFIX) && clip_prefixes.is_empty() {
        let mut sample: Vec<&String> = shapes.keys().collect();
        sample.sort();
        sample.truncate(3);
        return Err(format!(
            "{}: not a Stable Diffusion checkpoint: no `{UNET_PREFIX}`, `{VAE_PREFIX}` or `{CLIP_PREFIX}` tensors (first keys: {sample:?})",
            path.display()
        ));
    }
    let family = config::detect_family(&shapes);
    let given = config_dir.map(folder_configs).transpose()?;
    let ctx = |e: String| format!("{}: {e}", path.display());

    let unet = if has(UNET_PREFIX) {
        let spec = match given.as_ref().and_then(|g| g.unet.clone()) {
            Some(s) => s,
            None => config::unet_from_shapes(&shapes, family).map_err(ctx)?,
        };
        let lpb = spec.config.layers_per_block;
        let mut map = TensorMap::default();
        map.add_file(&file, UNET_PREFIX, |k| ldm::unet_names(k, lpb));
        Some((spec, map))
    } else {
        None
    };
    let vae = if has(VAE_PREFIX) {
        let spec = match given.as_ref().and_then(|g| g.vae.clone()) {
            Some(s) => s,
            None => VaeSpec {
                scaling_factor: family.latent_scale(),
                ..config::vae_from_shapes(&shapes).map_err(ctx)?
            },
        };
        let levels = spec.config.block_out_channels.len();
        let mut map = TensorMap::default();
        map.add_file(&file, VAE_PREFIX, |k| ldm::vae_names(k, levels));
        Some((spec, map))
    } else {
        None
    };
    // The given folder's encoders, matched to the file's by width (an
    // SDXL refiner's one bigG is a base's second encoder).
    let mut given_clip: Vec<(ClipConfig, Tokenizer)> = given
        .as_ref()
        .map(|g| g.clip.iter().flatten().cloned().collect())
        .unwrap_or_default();
    let mut clip = Vec::with_capacity(clip_prefixes.len());
    for prefix in clip_prefixes {
        let (inferred, layout) = config::clip_from_shapes(&shapes, prefix).map_err(ctx)?;
        let mut map = TensorMap::default();
        map.add_file(&file, prefix, ldm::clip_names);
        let folder = given_clip
            .iter()
            .position(|(c, _)| c.hidden_size == inferred.hidden_size)
            .map(|i| given_clip.remove(i));
        let parts = match folder {
            None => ClipParts::single_file(inferred, layout, map),
            Some((c, tokenizer)) => {
                let config = ClipConfig {
                    // The file's own depth: a full OpenCLIP tower has one
                    // layer more than diffusers' converted encoder.
                    num_hidden_layers: inferred.num_hidden_layers,
                    projection_dim: inferred.projection_dim.or(c.projection_dim),
                    ..c
                };
                let mut parts = ClipParts::single_file(config, layout, map);
                // The file carries no tokenizer; a config folder's is the
                // model's (diffusers' `from_single_file(config=…)`).
                parts.merges = tokenizer.merges;
                parts.pad_with_zero = tokenizer.pad_with_zero.unwrap_or(parts.pad_with_zero);
                parts
            }
        };
        clip.push(parts);
    }
    let clip = sdxl_text(family, clip);
    let schedule = match given.as_ref().and_then(|g| g.schedule.clone()) {
        Some(s) => s,
        None => {
            let prediction = config::prediction_from_shapes(&shapes, family, |key| {
                let t = file.load_f32(key).ok()?;
                let mean = t.mean_all().ok()?.to_scalar::<f32>().ok()?;
                let var = t
                    .broadcast_sub(&candle_core::Tensor::new(mean, t.device()).ok()?)
                    .ok()?
                    .sqr()
                    .ok()?
                    .mean_all()
                    .ok()?
                    .to_scalar::<f32>()
                    .ok()?;
                Some(var.sqrt() as f64)
            });
            ScheduleSpec {
                zero_terminal_snr: config::zero_terminal_snr_from_shapes(&shapes),
                ..ScheduleSpec::stable_diffusion(prediction)
            }
        }
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        family,
        unet,
        vae,
        clip,
        schedule,
    })
}

/// SDXL's text encoders condition on raw penultimate states.
fn sdxl_text(family: Family, clip: Vec<ClipParts>) -> Vec<ClipParts> {
    match family {
        Family::Sdxl | Family::SdxlRefiner => clip.into_iter().map(ClipParts::for_sdxl).collect(),
        _ => clip,
    }
}

/// A VAE on its own: a standalone LDM-layout VAE file (`encoder.…`), a
/// diffusers-named VAE file, a full single-file checkpoint, or a diffusers
/// folder (the model's or its `vae/`).
pub fn open_vae(path: &Path) -> Result<(VaeSpec, TensorMap), String> {
    if path.is_dir() {
        if path.join("config.json").is_file() {
            // A diffusers vae/ folder itself.
            let parent = path.parent().unwrap_or(path);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("vae");
            let cfg = parse(&path.join("config.json"), config::vae_from_json)?;
            let file = component_file(parent, name, &MODEL_FILES)?
                .ok_or_else(|| format!("{}: no VAE weights", path.display()))?;
            let file = WeightFile::open(&file)?;
            let mut map = TensorMap::default();
            map.add_file(&file, "", weights::diffusers_names);
            return Ok((cfg, map));
        }
        return open_diffusers(path)?
            .vae
            .ok_or_else(|| format!("{}: the folder has no vae/", path.display()));
    }
    if !path.exists() {
        return Err(format!("{}: no such VAE file or folder", path.display()));
    }
    let file = WeightFile::open(path)?;
    let shapes = file.shapes();
    if shapes.keys().any(|k| k.starts_with(VAE_PREFIX)) {
        let ck = open_single_file(path, None)?;
        return ck
            .vae
            .ok_or_else(|| format!("{}: the checkpoint has no VAE", path.display()));
    }
    if shapes.keys().any(|k| k.starts_with("encoder.down.")) {
        // A standalone LDM VAE: the same names without the prefix.
        let prefixed: config::Shapes = shapes
            .into_iter()
            .map(|(k, v)| (format!("{VAE_PREFIX}{k}"), v))
            .collect();
        let spec =
            config::vae_from_shapes(&prefixed).map_err(|e| format!("{}: {e}", path.display()))?;
        let levels = spec.config.block_out_channels.len();
        let mut map = TensorMap::default();
        map.add_file(&file, "", |k| ldm::vae_names(k, levels));
        return Ok((spec, map));
    }
    if shapes.keys().any(|k| k.starts_with("encoder.down_blocks.")) {
        let spec = config::vae_from_diffusers_shapes(&shapes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut map = TensorMap::default();
        map.add_file(&file, "", weights::diffusers_names);
        return Ok((spec, map));
    }
    Err(format!(
        "{}: not a VAE (no `encoder.down.…`, `encoder.down_blocks.…` or `{VAE_PREFIX}…` tensors)",
        path.display()
    ))
}

/// Keys of a component-only file, as if it carried its checkpoint prefix,
/// so the single-file shape readers apply (`None` if it has other keys).
fn as_prefixed(shapes: config::Shapes, prefix: &str, marker: &str) -> Option<config::Shapes> {
    shapes.keys().any(|k| k.starts_with(marker)).then(|| {
        shapes
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect()
    })
}

/// A diffusers component folder itself (`unet/`, `text_encoder/`): its
/// config and its one weights file.
fn component_folder<S>(
    dir: &Path,
    files: &[&str],
    parse_config: impl Fn(&str) -> Result<S, String>,
    names: Names,
) -> Result<(S, TensorMap), String> {
    let cfg = parse(&dir.join("config.json"), parse_config)?;
    let parent = dir.parent().unwrap_or(dir);
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let file = component_file(parent, name, files)?
        .ok_or_else(|| format!("{}: no weights", dir.display()))?;
    let file = WeightFile::open(&file)?;
    let mut map = TensorMap::default();
    map.add_file(&file, "", names);
    Ok((cfg, map))
}

/// A UNet on its own: a checkpoint's, a diffusers folder's (or its
/// `unet/`), or a UNet-only file in the LDM layout (`input_blocks.…`, as
/// ComfyUI's `diffusion_models/`). Returns the checkpoint view with only
/// the UNet and the schedule filled in.
pub fn open_unet(path: &Path, config_dir: Option<&Path>) -> Result<Checkpoint, String> {
    let only_unet = |ck: Checkpoint| -> Result<Checkpoint, String> {
        if ck.unet.is_none() {
            return Err(format!("{}: no UNet in it", path.display()));
        }
        Ok(Checkpoint {
            vae: None,
            clip: Vec::new(),
            ..ck
        })
    };
    if path.is_dir() && path.join("config.json").is_file() {
        let (spec, map) = component_folder(
            path,
            &MODEL_FILES,
            config::unet_from_json,
            weights::diffusers_names,
        )?;
        let family = spec.family();
        let schedule = path
            .parent()
            .map(|p| p.join("scheduler/scheduler_config.json"))
            .filter(|p| p.is_file())
            .map(|p| parse(&p, config::schedule_from_json))
            .transpose()?
            .unwrap_or_else(|| ScheduleSpec::stable_diffusion(weft_sampling::Prediction::Epsilon));
        return Ok(Checkpoint {
            path: path.to_path_buf(),
            family,
            unet: Some((spec, map)),
            vae: None,
            clip: Vec::new(),
            schedule,
        });
    }
    if path.is_dir() || !path.exists() {
        return only_unet(open(path, config_dir)?);
    }
    let file = WeightFile::open(path)?;
    match as_prefixed(file.shapes(), UNET_PREFIX, "input_blocks.") {
        Some(shapes) => {
            let family = config::detect_family(&shapes);
            let given = config_dir.map(folder_configs).transpose()?;
            let spec = match given.as_ref().and_then(|g| g.unet.clone()) {
                Some(s) => s,
                None => config::unet_from_shapes(&shapes, family)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            };
            let lpb = spec.config.layers_per_block;
            let mut map = TensorMap::default();
            map.add_file(&file, "", |k| ldm::unet_names(k, lpb));
            let prediction = config::prediction_from_shapes(&shapes, family, |_| None);
            Ok(Checkpoint {
                path: path.to_path_buf(),
                family,
                unet: Some((spec, map)),
                vae: None,
                clip: Vec::new(),
                schedule: given
                    .and_then(|g| g.schedule)
                    .unwrap_or_else(|| ScheduleSpec {
                        zero_terminal_snr: config::zero_terminal_snr_from_shapes(&shapes),
                        ..ScheduleSpec::stable_diffusion(prediction)
                    }),
            })
        }
        None => only_unet(open_single_file(path, config_dir)?),
    }
}

/// A text encoder on its own: a checkpoint's, a diffusers folder's (or its
/// `text_encoder/`), or a transformers CLIP file (SD 1.x's CLIP-L:
/// `text_model.…`, or bare `embeddings.…` as transformers 5 saves it) or
/// OpenCLIP file (`transformer.resblocks.…`, SD 2.x's).
pub fn open_clip(path: &Path) -> Result<Vec<ClipParts>, String> {
    if path.is_dir() && path.join("config.json").is_file() {
        let (config, tensors) = component_folder(
            path,
            &TEXT_FILES,
            config::clip_from_json,
            weights::transformers_text_names,
        )?;
        // `text_encoder_2/` pairs with `tokenizer_2/`.
        let tokenizer = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.replacen("text_encoder", "tokenizer", 1));
        let tokenizer = match (path.parent(), tokenizer) {
            (Some(parent), Some(t)) => Tokenizer::read(&parent.join(t))?,
            _ => Tokenizer::default(),
        };
        return Ok(vec![ClipParts::folder(config, tensors, &tokenizer)]);
    }
    let any = |clip: Vec<ClipParts>| {
        if clip.is_empty() {
            Err(format!("{}: no text encoder in it", path.display()))
        } else {
            Ok(clip)
        }
    };
    if path.is_dir() || !path.exists() {
        return any(open(path, None)?.clip);
    }
    let file = WeightFile::open(path)?;
    let shapes = file.shapes();
    if shapes
        .keys()
        .any(|k| k.starts_with("text_model.") || k.starts_with("embeddings.token_embedding."))
    {
        return Ok(vec![
            transformers_clip(&file, "").map_err(|e| format!("{}: {e}", path.display()))?
        ]);
    }
    let Some(prefixed) = as_prefixed(
        shapes,
        &format!("{CLIP_PREFIX}model."),
        "transformer.resblocks.",
    ) else {
        return any(open_single_file(path, None)?.clip);
    };
    let (config, layout) = config::clip_from_shapes(&prefixed, CLIP_PREFIX)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tensors = TensorMap::default();
    tensors.add_file(&file, "", |k| ldm::clip_names(&format!("model.{k}")));
    Ok(vec![ClipParts::single_file(config, layout, tensors)])
}

/// A transformers CLIP text model stored under `prefix` in `file` (either
/// key layout; SD3's and Flux's all-in-one checkpoints keep theirs under
/// `text_encoders.clip_l.transformer.`).
pub fn transformers_clip(
    file: &std::sync::Arc<WeightFile>,
    prefix: &str,
) -> Result<ClipParts, String> {
    // transformers' names under the single file's prefix, so the shape reader applies.
    let mut prefixed = config::Shapes::new();
    for (key, shape) in file.shapes() {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        for (name, _) in weights::transformers_text_names(rest) {
            prefixed.insert(format!("{CLIP_PREFIX}transformer.{name}"), shape.clone());
        }
    }
    let (config, layout) = config::clip_from_shapes(&prefixed, CLIP_PREFIX)?;
    let mut tensors = TensorMap::default();
    tensors.add_file(file, prefix, weights::transformers_text_names);
    Ok(ClipParts::single_file(config, layout, tensors))
}
