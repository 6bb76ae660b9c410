//! `CheckpointLoader` and `ClassifierLoader`: weft's own checkpoints, from
//! the checkpoints folders or built into weft.

use std::sync::Arc;

use weft_core::{Define, InputSpec, Inputs, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_model_paths::ModelKind;
use weft_models::mnist::{self, classifier::ClassifierHandle, embedded};

use super::ModelFiles;

/// A file found by name, or else the built-in checkpoint of that name.
enum Source {
    File(std::path::PathBuf),
    Embedded(&'static [u8]),
}

fn source(files: &ModelFiles, inputs: &Inputs) -> Result<Source, NodeError> {
    match files.resolve(inputs, "ckpt_name", ModelKind::Checkpoints) {
        Ok(path) => Ok(Source::File(path)),
        Err(e) => embedded::get(inputs.str("ckpt_name")?)
            .map(Source::Embedded)
            .ok_or(e),
    }
}

fn fingerprint(files: &ModelFiles, inputs: &Inputs) -> Result<String, NodeError> {
    Ok(match source(files, inputs)? {
        Source::File(_) => files.fingerprint(inputs, "ckpt_name", ModelKind::Checkpoints),
        Source::Embedded(_) => format!("built-in:{}", inputs.str("ckpt_name")?),
    })
}

fn ckpt_name(what: &str) -> InputSpec {
    InputSpec::model("ckpt_name", "checkpoints").doc(&format!(
        "The {what}: a name in the checkpoints folders, a path, or one of weft's built-in checkpoints ({}).",
        embedded::names().collect::<Vec<_>>().join(", ")
    ))
}

pub fn checkpoint_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "CheckpointLoader",
        "model/loaders",
        "Loads a weft checkpoint: a safetensors file whose metadata holds the model's config (architecture, objective, image size, classes), as saved by `weft train`.",
    )
    .input(ckpt_name("checkpoint"))
    .output("MODEL", ValueType::Model, "The model, in pixel space.")
    .heavy()
    .run(move |cx| {
        let err = |e: String| NodeError::input("ckpt_name", e);
        let model = match source(&files, cx.inputs)? {
            Source::File(path) => mnist::load_model(&path).map_err(err)?,
            Source::Embedded(bytes) => {
                mnist::load_model_bytes(cx.str("ckpt_name")?, bytes).map_err(err)?
            }
        };
        Ok(Value::handle(model))
    })
    .fingerprint(move |inputs| fingerprint(&keys, inputs))
}

pub fn classifier_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "ClassifierLoader",
        "model/loaders",
        "Loads a weft classifier checkpoint: a noise-conditional one drives ClassifierGuidance; a plain one judges `weft eval`.",
    )
    .input(ckpt_name("classifier checkpoint"))
    .output("CLASSIFIER", ValueType::Classifier, "The classifier.")
    .heavy()
    .run(move |cx| {
        let err = |e: String| NodeError::input("ckpt_name", e);
        let classifier = match source(&files, cx.inputs)? {
            Source::File(path) => mnist::load_classifier(&path).map_err(err)?,
            Source::Embedded(bytes) => {
                mnist::load_classifier_bytes(cx.str("ckpt_name")?, bytes).map_err(err)?
            }
        };
        Ok(Value::handle(ClassifierHandle(Arc::new(classifier))))
    })
    .fingerprint(move |inputs| fingerprint(&keys, inputs))
}
