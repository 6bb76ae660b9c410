//! `UpscaleModelLoader`.

use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_model_paths::ModelKind;
use weft_models::upscale::UpscaleModel;

use super::ModelFiles;

pub fn upscale_model_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "UpscaleModelLoader",
        "loaders",
        "Loads an image upscale model from a .safetensors file: ESRGAN-family RRDBNets (ESRGAN and community models such as 4x-UltraSharp in the original `model.N` layout; Real-ESRGAN ×4, and its ×2 / ×1 models that pixel-unshuffle their input, in the BasicSR `conv_first`/`body.N` layout, with or without `params_ema.`; BSRGAN/RealSR) and Real-ESRGAN Compact (SRVGGNetCompact) models. Scale, channels and sizes are read from the weights. Pickled .pth files are refused with the command that converts them; other architectures (SwinIR, HAT, DAT, SPAN, …) are an error naming what was found.",
    )
    .input(InputSpec::model("model_name", "upscale_models").doc("The upscale model: a name in the upscale_models folders, or a path to a .safetensors file."))
    .output("UPSCALE_MODEL", ValueType::UpscaleModel, "The upscale model.")
    .heavy()
    .run(move |cx| {
        let path = files.resolve(cx.inputs, "model_name", ModelKind::UpscaleModels)?;
        let model = UpscaleModel::open(&path).map_err(|e| NodeError::input("model_name", e))?;
        cx.output(model.architecture().describe());
        Ok(Value::handle(model))
    })
    .fingerprint(move |inputs| Ok(keys.fingerprint(inputs, "model_name", ModelKind::UpscaleModels)))
}
