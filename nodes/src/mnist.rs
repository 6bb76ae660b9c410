//! `CheckpointLoader` and `ClassifierLoader`: weft checkpoint files as values.

use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use weft_core::{InputSpec, Inputs, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

/// Loads a weft checkpoint (safetensors with its config in the metadata).
/// Marked external-state so the cache keys on the file's size and mtime:
/// an unchanged file is not reloaded, a retrained one is.
pub struct CheckpointLoader(NodeSchema);

impl CheckpointLoader {
    pub fn new() -> Self {
        CheckpointLoader(
            NodeSchema::new(
                "CheckpointLoader",
                "model/loaders",
                "Loads a weft checkpoint: a safetensors file whose metadata holds the model's config (architecture, objective, image size, classes), as saved by `weft train`.",
            )
            .input(InputSpec::string("ckpt_path").doc("Path to the .safetensors checkpoint."))
            .output("MODEL", ValueType::Model, "The model, in pixel space.")
            .external_state()
            .heavy(),
        )
    }
}

impl Default for CheckpointLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for CheckpointLoader {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let path = ctx.inputs.str("ckpt_path")?;
        let model = weft_models::mnist::load_model(Path::new(path))
            .map_err(|e| NodeError::input("ckpt_path", e))?;
        Ok(vec![Value::Object(ValueType::Model, Arc::new(model))])
    }

    fn fingerprint(&self, inputs: &Inputs) -> Result<String, NodeError> {
        file_fingerprint(inputs.str("ckpt_path")?)
    }
}

/// Size and modification time; a missing or unreadable file gets a
/// fingerprint of its own, and `run` then reports the real problem.
fn file_fingerprint(path: &str) -> Result<String, NodeError> {
    Ok(file_stamp(Path::new(path)))
}

/// Size and modification time of one file (or why it cannot be read), the
/// cache key part of every loader that reads a file.
pub(crate) fn file_stamp(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{mtime}", meta.len())
        }
        Err(e) => format!("unreadable:{:?}", e.kind()),
    }
}

/// Loads a classifier checkpoint trained by `weft train` (objective `classify`).
pub struct ClassifierLoader(NodeSchema);

impl ClassifierLoader {
    pub fn new() -> Self {
        ClassifierLoader(
            NodeSchema::new(
                "ClassifierLoader",
                "model/loaders",
                "Loads a weft classifier checkpoint: a noise-conditional one drives ClassifierGuidance; a plain one judges `weft eval`.",
            )
            .input(InputSpec::string("ckpt_path").doc("Path to the classifier's .safetensors checkpoint."))
            .output("CLASSIFIER", ValueType::Classifier, "The classifier.")
            .external_state()
            .heavy(),
        )
    }
}

impl Default for ClassifierLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ClassifierLoader {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let path = ctx.inputs.str("ckpt_path")?;
        let classifier = weft_models::mnist::load_classifier(Path::new(path))
            .map_err(|e| NodeError::input("ckpt_path", e))?;
        Ok(vec![Value::Object(
            ValueType::Classifier,
            Arc::new(weft_models::mnist::classifier::ClassifierHandle(Arc::new(
                classifier,
            ))),
        )])
    }

    fn fingerprint(&self, inputs: &Inputs) -> Result<String, NodeError> {
        file_fingerprint(inputs.str("ckpt_path")?)
    }
}

/// Registers the loaders of weft's own checkpoints.
pub fn register(registry: &mut weft_core::Registry) -> std::result::Result<(), String> {
    registry.register(CheckpointLoader::new())?;
    registry.register(ClassifierLoader::new())?;
    Ok(())
}
