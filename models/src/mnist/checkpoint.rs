//! weft's checkpoint format: a safetensors file whose metadata carries the
//! full [`ModelConfig`] as JSON under `weft.config` (and `weft.format` = "1"),
//! so a file alone is enough to rebuild the model.
//!
//! Loading checks everything before building anything — header, metadata,
//! config, then every expected tensor's presence, dtype and shape against a
//! freshly constructed reference network — so a bad file gives one message
//! that names the file and the first offending keys, never a panic.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use safetensors::SafeTensors;
use weft_core::LatentSpace;

use super::{label_tensor, Classifier, ModelConfig, Net, Objective, Preconditioner};
use weft_sampling::{Conditioning, Model, Network};

/// Metadata key holding the JSON [`ModelConfig`].
pub const CONFIG_KEY: &str = "weft.config";
/// Metadata key holding the format version.
pub const FORMAT_KEY: &str = "weft.format";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: &str = "1";

/// The `net.arch` tags this version reads.
const ARCHS: [&str; 3] = ["UNet", "DiT", "Classifier"];

/// How many offending keys an error lists before summarising.
const LIST: usize = 5;

/// Writes `varmap`'s weights with `config` to `path` atomically (a crash
/// mid-save never leaves a truncated checkpoint where a good one was).
pub fn save(path: &Path, config: &ModelConfig, varmap: &VarMap) -> Result<(), String> {
    let json = serde_json::to_string(config)
        .map_err(|e| format!("{}: cannot encode config: {e}", path.display()))?;
    let metadata = HashMap::from([
        (CONFIG_KEY.to_string(), json),
        (FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
    ]);
    let tensors: BTreeMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| format!("{}: the VarMap lock is poisoned", path.display()))?;
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    let bytes = safetensors::serialize(tensors.iter(), Some(metadata))
        .map_err(|e| format!("{}: cannot serialise weights: {e}", path.display()))?;
    weft_core::atomic::write_atomic(path, &bytes)
        .map_err(|e| format!("{}: cannot write checkpoint: {e}", path.display()))
}

/// Reads a checkpoint's config without building its network.
pub fn read_config(path: &Path) -> Result<ModelConfig, String> {
    let bytes = read(path)?;
    config_of(path, &bytes)
}

/// Loads a checkpoint as its config and network (on the CPU, in f32).
pub fn load_net(path: &Path) -> Result<(ModelConfig, Net), String> {
    load_net_bytes(&path.display().to_string(), &read(path)?)
}

/// [`load_net`] from a checkpoint's bytes; `file` names it in errors.
pub fn load_net_bytes(file: &str, bytes: &[u8]) -> Result<(ModelConfig, Net), String> {
    let config = config_of(Path::new(file), bytes)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| format!("{file}: cannot read tensors: {e}"))?;

    // A reference build tells which names and shapes the config implies.
    let reference = VarMap::new();
    config
        .build(VarBuilder::from_varmap(
            &reference,
            DType::F32,
            &Device::Cpu,
        ))
        .map_err(|e| format!("{file}: cannot build the configured network: {e}"))?;
    let expected: BTreeMap<String, Vec<usize>> = reference
        .data()
        .lock()
        .map_err(|_| format!("{file}: internal lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();

    let missing: Vec<&str> = expected
        .keys()
        .filter(|k| !tensors.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{file}: {} tensor(s) the {} needs are missing: {}",
            missing.len(),
            config.net.arch(),
            list(&missing)
        ));
    }
    let mut misshapen = Vec::new();
    let mut weights = HashMap::with_capacity(expected.len());
    for (name, want) in &expected {
        let t = &tensors[name];
        if t.dims() != want.as_slice() {
            misshapen.push(format!("{name} is {:?}, expected {want:?}", t.dims()));
            continue;
        }
        let t = match t.dtype() {
            DType::F32 => t.clone(),
            DType::F16 | DType::BF16 | DType::F64 => t
                .to_dtype(DType::F32)
                .map_err(|e| format!("{file}: cannot convert {name} to f32: {e}"))?,
            other => {
                return Err(format!(
                    "{file}: tensor {name} has dtype {other:?}, expected a float type"
                ))
            }
        };
        weights.insert(name.clone(), t);
    }
    if !misshapen.is_empty() {
        return Err(format!(
            "{file}: {} tensor(s) have the wrong shape: {}",
            misshapen.len(),
            list(&misshapen)
        ));
    }
    let net = config
        .build(VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu))
        .map_err(|e| format!("{file}: cannot build the network from its weights: {e}"))?;
    Ok((config, net))
}

/// Loads a checkpoint as a MODEL: pixel-space latents with the checkpoint's
/// channel count, and the sampling parameterisation of its objective.
pub fn load_model(path: &Path) -> Result<Model, String> {
    load_model_bytes(&path.display().to_string(), &read(path)?)
}

/// [`load_model`] from a checkpoint's bytes; `file` names it in errors.
pub fn load_model_bytes(file: &str, bytes: &[u8]) -> Result<Model, String> {
    let (config, net) = load_net_bytes(file, bytes)?;
    if config.objective == Objective::Classify {
        return Err(format!(
            "{file}: is a classifier, not a generative model; load it with ClassifierLoader"
        ));
    }
    // The file's size approximates the f32 weights for the cache budget.
    let size_bytes = bytes.len();
    let sampling = config.sampling();
    Ok(Model {
        network: Arc::new(CheckpointNetwork {
            net,
            preconditioner: config.preconditioner(),
            num_classes: config.num_classes,
            arch: config.net.arch(),
            size_bytes,
        }),
        sampling,
        latent_space: LatentSpace::pixels(),
        latent_format: Default::default(),
        differential_diffusion: false,
        skip_layer_guidance: None,
        wrappers: Default::default(),
        latent_channels: Some(config.channels),
    })
}

/// Loads a classifier checkpoint (see [`super::classifier`]).
pub fn load_classifier(path: &Path) -> Result<Classifier, String> {
    load_classifier_bytes(&path.display().to_string(), &read(path)?)
}

/// [`load_classifier`] from a checkpoint's bytes; `file` names it in errors.
pub fn load_classifier_bytes(file: &str, bytes: &[u8]) -> Result<Classifier, String> {
    match load_net_bytes(file, bytes)? {
        (_, Net::Classifier(c)) => Ok(*c),
        (config, _) => Err(format!(
            "{file}: holds a {} generative model, not a classifier",
            config.net.arch()
        )),
    }
}

/// A loaded [`Net`] as a sampling [`Network`]: conditioning labels become
/// the u32 label tensor the net expects.
pub struct CheckpointNetwork {
    pub net: Net,
    pub preconditioner: Option<Preconditioner>,
    pub num_classes: usize,
    arch: &'static str,
    size_bytes: usize,
}

impl fmt::Debug for CheckpointNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} classes)", self.arch, self.num_classes)
    }
}

impl Network for CheckpointNetwork {
    fn forward(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
    ) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        // No labels at all means an unconditional pass: every item gets ∅.
        let labels = match &cond.labels {
            Some(l) if l.len() == batch => label_tensor(l, self.num_classes, x.device())?,
            Some(l) => candle_core::bail!("{} labels for a batch of {batch}", l.len()),
            None => label_tensor(&vec![None; batch], self.num_classes, x.device())?,
        };
        let (x, t) = (x.to_dtype(DType::F32)?, timesteps.to_dtype(DType::F32)?);
        let raw = self.net.forward(&x, &t, &labels)?;
        match &self.preconditioner {
            Some(p) => p.apply(&x, &t, &raw),
            None => Ok(raw),
        }
    }

    fn size_bytes(&self) -> usize {
        self.size_bytes
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{}: no such checkpoint file", path.display()),
        _ => format!("{}: cannot read checkpoint: {e}", path.display()),
    })
}

/// Validates the safetensors structure (so truncation is caught here) and
/// parses the config from its metadata.
fn config_of(path: &Path, bytes: &[u8]) -> Result<ModelConfig, String> {
    let file = path.display();
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        format!("{file}: not a valid safetensors file (truncated or corrupt?): {e}")
    })?;
    drop(st);
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("{file}: not a valid safetensors file: {e}"))?;
    let Some(meta) = meta.metadata() else {
        return Err(format!(
            "{file}: the safetensors file has no metadata; a weft checkpoint needs `{CONFIG_KEY}` (was it saved by weft?)"
        ));
    };
    let Some(json) = meta.get(CONFIG_KEY) else {
        return Err(format!(
            "{file}: the metadata has no `{CONFIG_KEY}` entry (was it saved by weft?)"
        ));
    };
    match meta.get(FORMAT_KEY).map(String::as_str) {
        Some(FORMAT_VERSION) | None => {}
        Some(v) => {
            return Err(format!(
            "{file}: checkpoint format {v:?} is not supported (this weft reads {FORMAT_VERSION:?})"
        ))
        }
    }
    let config = parse_config(json).map_err(|e| format!("{file}: bad `{CONFIG_KEY}`: {e}"))?;
    config.validate().map_err(|e| format!("{file}: {e}"))?;
    Ok(config)
}

/// Parses the config JSON, naming an unknown architecture plainly rather
/// than with serde's tagged-enum wording.
fn parse_config(json: &str) -> Result<ModelConfig, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("net").and_then(|n| n.get("arch")) {
        Some(serde_json::Value::String(a)) if ARCHS.contains(&a.as_str()) => {}
        Some(other) => {
            return Err(format!(
                "unknown arch {other} (expected one of {})",
                ARCHS.join(", ")
            ))
        }
        None => return Err("no `net.arch` field".into()),
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(LIST).map(|s| s.to_string()).collect();
    if items.len() > LIST {
        format!("{}, … ({} more)", shown.join(", "), items.len() - LIST)
    } else {
        shown.join(", ")
    }
}
