//! ComfyUI's `.latent` files: `SaveLatent` and `LoadLatent`.
//!
//! A `.latent` file is a safetensors file holding the latents (the VAE's
//! own values, as on weft's edges) as `latent_tensor`, and an empty
//! `latent_format_version_0` tensor marking the format. Files from before
//! that marker held latents already multiplied by SD's 0.18215, so ComfyUI
//! (and weft) multiply those by 1/0.18215 when reading. weft also records
//! the latent space and the graph in the file's metadata; other readers
//! ignore them.

use std::sync::{Arc, Mutex};

use candle_core::safetensors::SliceSafetensors;
use candle_core::{DType, Device, Tensor};
use weft_core::atomic::{next_numbered_path, write_atomic};
use weft_core::{
    Define, InputSpec, Latent, LatentSpace, NodeDef, NodeError, NodeSchema, Value, ValueType,
};

use crate::image::{file_stamp, input_path, GRAPH_KEY, NODE_KEY};

/// The tensor holding the latents.
pub const LATENT_KEY: &str = "latent_tensor";
/// The empty tensor marking files whose latents are not pre-scaled.
pub const VERSION_KEY: &str = "latent_format_version_0";
/// Metadata key of the latent space (weft's addition).
pub const SPACE_KEY: &str = "weft.latent_space";
/// What ComfyUI multiplies unmarked (old) files by: 1/0.18215.
pub const OLD_FORMAT_SCALE: f64 = 1.0 / 0.18215;

/// Picking a free number and writing must not interleave between saves.
static NUMBERING: Mutex<()> = Mutex::new(());

/// The bytes of a `.latent` file: `samples` as f32 `latent_tensor`, the
/// version marker, and `metadata` as safetensors' string metadata.
pub fn encode_latent_file(samples: &Tensor, metadata: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let values = samples
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| e.to_string())?;
    let n = values.len() * 4;
    let meta: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let header = serde_json::json!({
        "__metadata__": meta,
        LATENT_KEY: { "dtype": "F32", "shape": samples.dims(), "data_offsets": [0, n] },
        VERSION_KEY: { "dtype": "F32", "shape": [0], "data_offsets": [n, n] },
    });
    let mut header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // safetensors writers pad the header with spaces to 8-byte alignment.
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + n);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(bytes)
}

/// The string metadata of a safetensors file (empty when it has none).
fn metadata(bytes: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let header = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .and_then(|len| bytes.get(8..8usize.checked_add(len)?))
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(h).ok());
    match header {
        Some(serde_json::Value::Object(mut map)) => match map.remove("__metadata__") {
            Some(serde_json::Value::Object(meta)) => meta,
            _ => Default::default(),
        },
        _ => Default::default(),
    }
}

/// Reads a `.latent` file: the latents as f32 (old, unmarked files ×
/// 1/0.18215) and the space weft recorded, if any.
pub fn decode_latent_file(bytes: &[u8]) -> Result<(Tensor, Option<String>), String> {
    let file = SliceSafetensors::new(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    if file.get(LATENT_KEY).is_err() {
        let mut names: Vec<String> = file.tensors().into_iter().map(|(name, _)| name).collect();
        names.sort();
        return Err(format!(
            "no `{LATENT_KEY}` tensor (found: {})",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        ));
    }
    let samples = file
        .load(LATENT_KEY, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(|e| format!("cannot read `{LATENT_KEY}`: {e}"))?;
    if samples.rank() != 4 {
        return Err(format!(
            "`{LATENT_KEY}` has shape {:?}; a latent is [batch, channels, height, width]",
            samples.dims()
        ));
    }
    let samples = if file.get(VERSION_KEY).is_ok() {
        samples
    } else {
        (samples * OLD_FORMAT_SCALE).map_err(|e| e.to_string())?
    };
    let space = match metadata(bytes).get(SPACE_KEY) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok((samples, space))
}

/// `SaveLatent`: latents to a numbered `.latent` file.
pub fn save_latent() -> NodeDef {
    NodeSchema::new(
        "SaveLatent",
        "latent",
        "Saves latents as ComfyUI's `.latent` file (`{prefix}_{counter:05}_.latent` in the output folder): safetensors with `latent_tensor` and the `latent_format_version_0` marker, plus the latent space and the graph as metadata.",
    )
    .input(InputSpec::of("samples", ValueType::Latent).doc("The latents."))
    .input(
        InputSpec::string("filename_prefix")
            .default("latents/weft")
            .doc("File name before the counter; may include subfolders."),
    )
    .output("path", ValueType::String, "The file written.")
    .output_node()
    .run(|cx| {
        let latent = cx.latent("samples")?;
        let prefix = crate::utility::output_prefix(cx)?;
        let bytes = encode_latent_file(
            &latent.samples,
            &[
                (SPACE_KEY, &latent.space.0),
                (GRAPH_KEY, cx.graph_ron()),
                (NODE_KEY, cx.node_id),
            ],
        )
        .map_err(|e| NodeError::input("samples", e))?;
        let _numbering = NUMBERING.lock().unwrap_or_else(|e| e.into_inner());
        let path = next_numbered_path(cx.out_dir, prefix, "latent");
        write_atomic(&path, &bytes)
            .map_err(|e| NodeError::new(format!("cannot write {}: {e}", path.display())))?;
        cx.output(format!("saved {}", path.display()));
        Ok(Value::String(path.display().to_string().into()))
    })
}

/// `LoadLatent`: latents from a `.latent` file.
pub fn load_latent() -> NodeDef {
    NodeSchema::new(
        "LoadLatent",
        "latent",
        "Loads latents from ComfyUI's `.latent` file (as SaveLatent writes it). Files without the `latent_format_version_0` marker are ComfyUI's old format and are multiplied by 1/0.18215, as ComfyUI does. The space is the one weft recorded, else SD's for 4-channel latents.",
    )
    .input(InputSpec::string("latent").doc("The file: absolute, relative to the graph's folder, or to the working directory."))
    .output("LATENT", ValueType::Latent, "The latents.")
    .run(|cx| {
        let path = input_path(cx.inputs, "latent")?;
        let bytes = std::fs::read(&path).map_err(|e| {
            NodeError::input("latent", format!("cannot read {}: {e}", path.display()))
        })?;
        let (samples, space) = decode_latent_file(&bytes)
            .map_err(|e| NodeError::input("latent", format!("{}: {e}", path.display())))?;
        let space = match space {
            Some(name) => LatentSpace::new(&name),
            None if samples.dim(1)? == 4 => weft_models::vae::sd_latent_space(),
            None => LatentSpace::new("unknown"),
        };
        Ok(Value::Latent(Arc::new(Latent {
            samples,
            space,
            noise_mask: None,
        })))
    })
    .fingerprint(|inputs| file_stamp(inputs, "latent"))
}
