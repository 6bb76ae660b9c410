//! `ControlNetLoader`.

use std::sync::Arc;

use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_model_paths::ModelKind;
use weft_models::controlnet::ControlNet;

use super::ModelFiles;
use crate::controlnet::ControlNetHandle;

pub fn control_net_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "ControlNetLoader",
        "model/loaders",
        "Loads a Stable Diffusion 1.x/2.x ControlNet: a diffusers folder (config.json + diffusion_pytorch_model.safetensors), a diffusers-keyed .safetensors file, or an original ControlNet 1.0/1.1 .safetensors file (`control_model.*` keys, as ComfyUI and A1111 use). A single file's architecture is read from a ControlNetModel config.json beside it, else from its tensor shapes (SD 1.x or 2.x). Pickled .pth/.bin files are not loaded.",
    )
    .input(InputSpec::model("control_net_name", "controlnet").doc("The ControlNet: a name in the controlnet folders, or a path to a .safetensors file or diffusers folder."))
    .output("CONTROL_NET", ValueType::ControlNet, "The ControlNet.")
    .heavy()
    .run(move |cx| {
        let path = files.resolve(cx.inputs, "control_net_name", ModelKind::ControlNet)?;
        let net = ControlNet::load(&path).map_err(|e| NodeError::input("control_net_name", e))?;
        Ok(Value::handle(ControlNetHandle(Arc::new(net))))
    })
    .fingerprint(move |inputs| {
        let mut key = keys.fingerprint(inputs, "control_net_name", ModelKind::ControlNet);
        // A single file's architecture may come from a config.json beside it.
        if let Ok(path) = keys.resolve(inputs, "control_net_name", ModelKind::ControlNet) {
            if path.is_file() {
                key += &super::file_stamp(&path.with_file_name("config.json"));
            }
        }
        Ok(key)
    })
}
