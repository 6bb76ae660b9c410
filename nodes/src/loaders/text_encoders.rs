//! Loaders that pair text encoders as a model family uses them:
//! `DualCLIPLoader` (SDXL, SD3, Flux) and `TripleCLIPLoader` (SD3).

use std::path::Path;

use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_model_paths::ModelKind;
use weft_models::clip::{TextEncoder, TextFamily};
use weft_models::sd::checkpoint::{self, ClipParts};
use weft_models::t5::tower::{self as t5, T5Parts};

use super::ModelFiles;

/// The encoders of one text-encoder file: CLIP towers, or a T5.
enum Encoders {
    Clip(Vec<ClipParts>),
    T5(T5Parts),
}

/// Opens a text-encoder file or folder, telling T5 from CLIP by its keys
/// (or a folder's `model_type`).
fn open(path: &Path) -> Result<Encoders, String> {
    let is_t5 = if path.is_dir() {
        std::fs::read_to_string(path.join("config.json"))
            .is_ok_and(|c| c.contains("\"t5\"") || c.contains("T5EncoderModel"))
    } else {
        // safetensors or GGUF (city96's T5 conversions keep transformers' names).
        weft_models::weights::WeightFile::open(path).is_ok_and(|f| t5::find(&f.shapes()).is_some())
    };
    if is_t5 {
        t5::open(path).map(Encoders::T5)
    } else {
        checkpoint::open_clip(path).map(Encoders::Clip)
    }
}

/// The CLIP value of `inputs`' files for `family`.
pub(super) fn join(
    files: &ModelFiles,
    inputs: &weft_core::Inputs,
    names: &[&str],
    family: &str,
) -> Result<TextEncoder, NodeError> {
    let mut clip = Vec::new();
    let mut t5 = None;
    for &input in names {
        let path = files.resolve(inputs, input, ModelKind::TextEncoders)?;
        match open(&path).map_err(|e| NodeError::input(input, e))? {
            Encoders::Clip(parts) => clip.extend(parts),
            Encoders::T5(_) if t5.is_some() => {
                return Err(NodeError::input(
                    input,
                    "a second T5 encoder; pair T5 with CLIP encoders",
                ))
            }
            Encoders::T5(parts) => t5 = Some(parts),
        }
    }
    let err = |e: String| NodeError::input(names[0], e);
    match family {
        "sdxl" => {
            if t5.is_some() || clip.len() != 2 {
                return Err(err(format!(
                    "SDXL pairs two CLIP encoders (CLIP-L and bigG); these files hold {} CLIP and {} T5",
                    clip.len(),
                    usize::from(t5.is_some())
                )));
            }
            // SDXL joins CLIP-L's states before bigG's, whichever file came first.
            let mut parts: Vec<ClipParts> = clip.into_iter().map(ClipParts::for_sdxl).collect();
            parts.sort_by_key(|p| p.config.hidden_size);
            TextEncoder::from_parts(&parts).map_err(err)
        }
        "sd3" => TextEncoder::with_t5(TextFamily::Sd3, clip, t5.as_ref()).map_err(err),
        "flux" => TextEncoder::with_t5(TextFamily::Flux, clip, t5.as_ref()).map_err(err),
        other => Err(NodeError::input("type", format!("unknown type {other:?}"))),
    }
}

pub fn dual_clip_loader(files: ModelFiles) -> NodeDef {
    dual_clip_loader_named(files, "DualCLIPLoader")
}

/// `DualCLIPLoader` under another name: ComfyUI-GGUF's
/// `DualCLIPLoaderGGUF` (weft reads GGUF text encoders itself).
pub fn dual_clip_loader_named(files: ModelFiles, name: &str) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        name,
        "advanced/loaders",
        "Loads two text encoders as one CLIP, as a model family pairs them, in either order. `sdxl`: CLIP-L and OpenCLIP bigG (`clip_l.safetensors`, `clip_g.safetensors`), conditioning on their penultimate layers side by side with bigG's pooled output. `flux`: CLIP-L and T5-XXL (`t5xxl_fp16.safetensors`): T5's states, CLIP-L's pooled output. `sd3`: two of CLIP-L, bigG and T5-XXL.",
    )
    .input(InputSpec::model("clip_name1", "text_encoders").doc("The first text encoder."))
    .input(InputSpec::model("clip_name2", "text_encoders").doc("The second text encoder."))
    .input(InputSpec::choice("type", &["sdxl", "sd3", "flux"]).doc("The model family the pair is for."))
    .output("CLIP", ValueType::Clip, "The joined text encoders.")
    .heavy()
    .run(move |cx| {
        let family = cx.str("type")?;
        let clip = join(&files, cx.inputs, &["clip_name1", "clip_name2"], family)?;
        Ok(Value::handle(clip))
    })
    .fingerprint(move |inputs| {
        Ok(format!(
            "{}|{}|{}",
            keys.fingerprint(inputs, "clip_name1", ModelKind::TextEncoders),
            keys.fingerprint(inputs, "clip_name2", ModelKind::TextEncoders),
            inputs.str("type")?
        ))
    })
}

pub fn triple_clip_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "TripleCLIPLoader",
        "advanced/loaders",
        "Loads SD3's three text encoders as one CLIP, in any order: CLIP-L, OpenCLIP bigG and T5-XXL (`clip_l.safetensors`, `clip_g.safetensors`, `t5xxl_fp16.safetensors`).",
    )
    .input(InputSpec::model("clip_name1", "text_encoders").doc("The first text encoder."))
    .input(InputSpec::model("clip_name2", "text_encoders").doc("The second text encoder."))
    .input(InputSpec::model("clip_name3", "text_encoders").doc("The third text encoder."))
    .output("CLIP", ValueType::Clip, "SD3's joined text encoders.")
    .heavy()
    .run(move |cx| {
        let clip = join(&files, cx.inputs, &["clip_name1", "clip_name2", "clip_name3"], "sd3")?;
        Ok(Value::handle(clip))
    })
    .fingerprint(move |inputs| {
        Ok(["clip_name1", "clip_name2", "clip_name3"]
            .iter()
            .map(|n| keys.fingerprint(inputs, n, ModelKind::TextEncoders))
            .collect::<Vec<_>>()
            .join("|"))
    })
}
