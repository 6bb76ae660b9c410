//! The Stable Diffusion loaders, with ComfyUI's names and inputs:
//! `CheckpointLoaderSimple`, `VAELoader`, `UNETLoader` and `CLIPLoader`.

use std::path::PathBuf;

use weft_core::{Define, InputSpec, Inputs, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_model_paths::ModelKind;
use weft_models::clip::TextEncoder;
use weft_models::dit_checkpoint;
use weft_models::packed::WeightMode;
use weft_models::sd::checkpoint;
use weft_models::sd::network::sampling_model;
use weft_models::sd::SdUNet;
use weft_models::vae::Vae;

use super::ModelFiles;

fn config_input(what: &str) -> InputSpec {
    InputSpec::string("config").default("").doc(&format!(
        "A diffusers folder whose config.json files describe the {what}, for shapes other than SD 1.x/2.x (as diffusers' `from_single_file(config=…)`); empty to read the shapes."
    ))
}

/// The optional `config` folder, resolved like a model name.
fn config(files: &ModelFiles, inputs: &Inputs) -> Result<Option<PathBuf>, NodeError> {
    if inputs.str("config")?.is_empty() {
        return Ok(None);
    }
    files
        .resolve(inputs, "config", ModelKind::Diffusers)
        .map(Some)
}

fn fingerprint_with_config(
    files: &ModelFiles,
    inputs: &Inputs,
    input: &str,
    kind: ModelKind,
) -> String {
    let config = match inputs.str("config") {
        Ok("") | Err(_) => String::new(),
        Ok(_) => files.fingerprint(inputs, "config", ModelKind::Diffusers),
    };
    format!("{}|{config}", files.fingerprint(inputs, input, kind))
}

pub fn checkpoint_loader_simple(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "CheckpointLoaderSimple",
        "model/loaders",
        "Loads a Stable Diffusion 1.x/2.x, SDXL (base or refiner), SD3/SD3.5 or Flux checkpoint: a single .safetensors file in the original layout (A1111, ComfyUI, Civitai downloads; SD3's and Flux's all-in-one files with their text encoders and VAE) or a diffusers folder. The family (SD 1.x, 2.x, SDXL, SDXL refiner, SD3, Flux; ε or v-prediction; inpainting) is read from the tensors; weights are memory-mapped and computed in f32. Files are never fetched: the file must exist.",
    )
    .input(InputSpec::model("ckpt_name", "checkpoints").doc("The checkpoint: a name in the checkpoints folders (subfolders allowed), or a path to a .safetensors file or diffusers folder."))
    .input(config_input("checkpoint"))
    .output("MODEL", ValueType::Model, "The UNet with its noise schedule.")
    .output("CLIP", ValueType::Clip, "The text encoder and tokenizer.")
    .output("VAE", ValueType::Vae, "The autoencoder between images and latents.")
    .heavy()
    .run(move |cx| {
        let path = files.resolve(cx.inputs, "ckpt_name", ModelKind::Checkpoints)?;
        let config = config(&files, cx.inputs)?;
        let err = |e: String| NodeError::input("ckpt_name", e);
        let missing = |what: &str| err(format!("{}: the checkpoint has no {what}", path.display()));
        if let Some(family) = dit_checkpoint::family_of(&path) {
            let model = dit_checkpoint::load_model(family, &path, config.as_deref(), WeightMode::Stored)
                .map_err(err)?;
            cx.check_cancelled()?;
            let parts = dit_checkpoint::companions(family, &path).map_err(err)?;
            let clip = parts.clip.ok_or_else(|| missing("text encoders (load them with DualCLIPLoader or TripleCLIPLoader)"))?;
            let (vspec, vtensors) = parts.vae.ok_or_else(|| missing("VAE (load one with VAELoader)"))?;
            let vae = Vae::build(&vspec, &vtensors).map_err(err)?;
            cx.output(format!("{}: {} checkpoint", path.display(), family.name()));
            return Ok((Value::handle(model), Value::handle(clip), Value::handle(vae)));
        }
        let ck = checkpoint::open(&path, config.as_deref()).map_err(err)?;
        let (uspec, utensors) = ck.unet.as_ref().ok_or_else(|| missing("UNet"))?;
        let unet = SdUNet::build(uspec, utensors).map_err(err)?;
        cx.check_cancelled()?;
        if ck.clip.is_empty() {
            return Err(missing("text encoder"));
        }
        let clip = TextEncoder::from_parts(&ck.clip).map_err(err)?;
        let (vspec, vtensors) = ck.vae.as_ref().ok_or_else(|| missing("VAE"))?;
        let vae = Vae::build(vspec, vtensors).map_err(err)?;
        let model = sampling_model(&ck, unet).map_err(err)?;
        cx.output(format!(
            "{}: {} checkpoint, {:?} prediction",
            path.display(),
            ck.family.name(),
            ck.schedule.prediction
        ));
        Ok((Value::handle(model), Value::handle(clip), Value::handle(vae)))
    })
    .fingerprint(move |inputs| {
        Ok(fingerprint_with_config(&keys, inputs, "ckpt_name", ModelKind::Checkpoints))
    })
}

pub fn vae_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "VAELoader",
        "model/loaders",
        "Loads a Stable Diffusion VAE: a standalone VAE file in the LDM layout (`encoder.…`, `decoder.…`, such as `vae-ft-mse-840000-ema-pruned.safetensors`), a full checkpoint (its `first_stage_model.…`), or a diffusers folder with a vae/ subfolder.",
    )
    .input(InputSpec::model("vae_name", "vae").doc("The VAE: a name in the vae folders, or a path to a .safetensors file or diffusers folder."))
    .output("VAE", ValueType::Vae, "The autoencoder.")
    .heavy()
    .run(move |cx| {
        let path = files.resolve(cx.inputs, "vae_name", ModelKind::Vae)?;
        let err = |e: String| NodeError::input("vae_name", e);
        let (spec, tensors) = checkpoint::open_vae(&path).map_err(err)?;
        Ok(Value::handle(Vae::build(&spec, &tensors).map_err(err)?))
    })
    .fingerprint(move |inputs| Ok(keys.fingerprint(inputs, "vae_name", ModelKind::Vae)))
}

pub fn unet_loader(files: ModelFiles) -> NodeDef {
    unet_loader_named(files, "UNETLoader")
}

/// `UNETLoader` under another name: ComfyUI-GGUF's `UnetLoaderGGUF`, so
/// its workflows run unchanged (weft's loader reads GGUF files itself).
pub fn unet_loader_named(files: ModelFiles, name: &str) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        name,
        "model/loaders",
        "Loads a diffusion model on its own: a Stable Diffusion 1.x/2.x/SDXL UNet-only file in the LDM layout (`input_blocks.…`, as in ComfyUI's diffusion_models folder), an SD3/SD3.5 MM-DiT in Stability's layout (`joint_blocks.…`), a Flux transformer in Black Forest Labs' layout (`double_blocks.…`), a full checkpoint, or a diffusers folder or its unet/ or transformer/ subfolder.",
    )
    .input(InputSpec::model("unet_name", "diffusion_models").doc("The UNet: a name in the diffusion_models (or unet) folders, or a path to a .safetensors file or diffusers folder."))
    .input(config_input("UNet"))
    .input(InputSpec::choice("weight_dtype", &WeightMode::CHOICES).doc("How an SD3 or Flux transformer's linear weights are held in memory: `default` as stored (f16, bf16, fp8 and GGUF stay compressed; f32 stays f32), quantised on load to fp8 or a GGUF type (`q8_0` …), or `f32`. Compute is f32 layer by layer either way. SD 1.x/2.x/SDXL UNets are always f32."))
    .output("MODEL", ValueType::Model, "The UNet with its noise schedule.")
    .heavy()
    .run(move |cx| {
        let path = files.resolve(cx.inputs, "unet_name", ModelKind::DiffusionModels)?;
        let config = config(&files, cx.inputs)?;
        let err = |e: String| NodeError::input("unet_name", e);
        let mode = WeightMode::parse(cx.str("weight_dtype")?)
            .map_err(|e| NodeError::input("weight_dtype", e))?;
        if let Some(family) = dit_checkpoint::family_of(&path) {
            let model = dit_checkpoint::load_model(family, &path, config.as_deref(), mode)
                .map_err(err)?;
            return Ok(Value::handle(model));
        }
        let ck = checkpoint::open_unet(&path, config.as_deref()).map_err(err)?;
        let (spec, tensors) = ck
            .unet
            .as_ref()
            .ok_or_else(|| err(format!("{}: no UNet", path.display())))?;
        let unet = SdUNet::build(spec, tensors).map_err(err)?;
        Ok(Value::handle(sampling_model(&ck, unet).map_err(err)?))
    })
    .fingerprint(move |inputs| {
        Ok(format!(
            "{}|{}",
            fingerprint_with_config(&keys, inputs, "unet_name", ModelKind::DiffusionModels),
            inputs.str("weight_dtype").unwrap_or("default")
        ))
    })
}

pub fn clip_loader(files: ModelFiles) -> NodeDef {
    let keys = files.clone();
    NodeSchema::new(
        "CLIPLoader",
        "model/loaders",
        "Loads a Stable Diffusion text encoder on its own: a transformers CLIP file (`text_model.…` or, as transformers 5 saves it, unprefixed; SD 1.x), an OpenCLIP file (`transformer.resblocks.…`, SD 2.x), a full checkpoint, or a diffusers folder or its text_encoder/ subfolder.",
    )
    .input(InputSpec::model("clip_name", "text_encoders").doc("The text encoder: a name in the text_encoders (or clip) folders, or a path to a .safetensors file or diffusers folder."))
    .input(InputSpec::choice("type", &["stable_diffusion", "sd3"]).doc("The family it conditions: `stable_diffusion` (SD 1.x/2.x) or `sd3` (one of SD3's encoders, CLIP-L, bigG or T5-XXL, the others left out as ComfyUI does)."))
    .output("CLIP", ValueType::Clip, "The text encoder and tokenizer.")
    .heavy()
    .run(move |cx| {
        if cx.str("type")? == "sd3" {
            let clip = super::text_encoders::join(&files, cx.inputs, &["clip_name"], "sd3")?;
            return Ok(Value::handle(clip));
        }
        let path = files.resolve(cx.inputs, "clip_name", ModelKind::TextEncoders)?;
        let err = |e: String| NodeError::input("clip_name", e);
        let parts = checkpoint::open_clip(&path).map_err(err)?;
        Ok(Value::handle(TextEncoder::from_parts(&parts).map_err(err)?))
    })
    .fingerprint(move |inputs| {
        Ok(format!(
            "{}|{}",
            keys.fingerprint(inputs, "clip_name", ModelKind::TextEncoders),
            inputs.str("type").unwrap_or("stable_diffusion")
        ))
    })
}
