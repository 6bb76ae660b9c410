//! `LoraLoader` and `LoraLoaderModelOnly`: LoRA and LyCORIS files merged
//! into a MODEL (and CLIP), stackable any number of times.

use weft_core::{Define, InputSpec, Inputs, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_model_paths::ModelKind;
use weft_models::clip::TextEncoder;
use weft_models::lora::{self, LoraFile};
use weft_sampling::Model;

use super::ModelFiles;

const FORMATS: &str = "kohya/A1111 (`lora_unet_…`, `lora_te1_…`, `lora_te2_…` with `lora_up`/`lora_down`/`alpha`), diffusers/PEFT (`lora_A`/`lora_B`), LyCORIS LoCon, LoHa and LoKr, full `diff` patches and DoRA's `dora_scale`";

fn strength(name: &str, doc: &str) -> InputSpec {
    InputSpec::float(name)
        .default(1.0)
        .range(-100.0, 100.0)
        .step(0.01)
        .doc(doc)
}

fn open(files: &ModelFiles, inputs: &Inputs) -> Result<LoraFile, NodeError> {
    let path = files.resolve(inputs, "lora_name", ModelKind::Loras)?;
    LoraFile::open(&path).map_err(|e| NodeError::input("lora_name", e))
}

pub fn lora_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "LoraLoader",
        "loaders",
        &format!("Merges a LoRA into the model and its text encoders: {FORMATS}. The patched layers are merged, not evaluated at run time, so a step costs the same as without; every other tensor is shared with the input model. Keys that match no weight are listed in the output; a LoRA for another model family is an error."),
    )
    .input(InputSpec::of("model", ValueType::Model).doc("The diffusion model."))
    .input(InputSpec::of("clip", ValueType::Clip).doc("The text encoders."))
    .input(InputSpec::model("lora_name", "loras").doc("The LoRA file: a name in the loras folders, or a path."))
    .input(strength("strength_model", "How strongly the UNet is patched (0: not at all; negative inverts)."))
    .input(strength("strength_clip", "How strongly the text encoders are patched."))
    .output("MODEL", ValueType::Model, "The patched model.")
    .output("CLIP", ValueType::Clip, "The patched text encoders.")
    .run(move |cx| {
        let lora = open(&files, cx.inputs)?;
        let patched = lora::patch(
            &lora,
            Some(cx.get::<Model>("model")?),
            Some(cx.get::<TextEncoder>("clip")?),
            cx.float("strength_model")?,
            cx.float("strength_clip")?,
        )
        .map_err(|e| NodeError::input("lora_name", e))?;
        cx.output(patched.summary);
        let (model, clip) = (patched.model, patched.clip);
        Ok((
            Value::handle(model.expect("a model was given")),
            Value::handle(clip.expect("a CLIP was given")),
        ))
    })
    .fingerprint(move |inputs| Ok(keys.fingerprint(inputs, "lora_name", ModelKind::Loras)))
}

pub fn lora_loader_model_only(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "LoraLoaderModelOnly",
        "loaders",
        &format!("Merges a LoRA into the diffusion model only (its text-encoder keys are skipped): {FORMATS}."),
    )
    .input(InputSpec::of("model", ValueType::Model).doc("The diffusion model."))
    .input(InputSpec::model("lora_name", "loras").doc("The LoRA file: a name in the loras folders, or a path."))
    .input(strength("strength_model", "How strongly the UNet is patched (0: not at all; negative inverts)."))
    .output("MODEL", ValueType::Model, "The patched model.")
    .run(move |cx| {
        let lora = open(&files, cx.inputs)?;
        let patched = lora::patch(
            &lora,
            Some(cx.get::<Model>("model")?),
            None,
            cx.float("strength_model")?,
            0.0,
        )
        .map_err(|e| NodeError::input("lora_name", e))?;
        cx.output(patched.summary);
        Ok(Value::handle(patched.model.expect("a model was given")))
    })
    .fingerprint(move |inputs| Ok(keys.fingerprint(inputs, "lora_name", ModelKind::Loras)))
}
