//! SDXL's text encoders with their micro-conditioning, as ComfyUI's
//! `CLIPTextEncodeSDXL` and `CLIPTextEncodeSDXLRefiner`. Plain
//! `CLIPTextEncode` works on SDXL too: its sizes then follow the latent.

use weft_core::{Define, InputSpec, Inputs, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_models::clip::TextEncoder;
use weft_sampling::{Conditioning, SizeCond};

use crate::ModelFiles;

/// ComfyUI's largest image side.
const MAX_RESOLUTION: f64 = 16384.0;

fn size(name: &str, default: i64, doc: &str) -> InputSpec {
    InputSpec::int(name)
        .default(default)
        .range(0.0, MAX_RESOLUTION)
        .doc(doc)
}

fn pixels(inputs: &Inputs, height: &str, width: &str) -> Result<(f64, f64), NodeError> {
    Ok((inputs.int(height)? as f64, inputs.int(width)? as f64))
}

fn encode(
    files: &ModelFiles,
    inputs: &Inputs,
    clip: &TextEncoder,
    texts: &[&str],
    size: SizeCond,
) -> Result<Value, NodeError> {
    let cond: Conditioning = clip
        .encode_each(texts, &super::embeddings(files, inputs))
        .map_err(|e| NodeError::new(format!("text encoding failed: {e}")))?;
    Ok(Value::handle(Conditioning {
        sizes: vec![Some(size)],
        ..cond
    }))
}

/// `CLIPTextEncodeSDXL`: separate prompts for CLIP-L and bigG, and the
/// sizes SDXL was trained to condition on.
pub fn clip_text_encode_sdxl(files: ModelFiles) -> NodeDef {
    NodeSchema::new(
        "CLIPTextEncodeSDXL",
        "advanced/conditioning",
        "Encodes a prompt for SDXL: `text_g` with the OpenCLIP bigG encoder, `text_l` with CLIP-L (the shorter is padded with empty 77-token chunks), and the micro-conditioning SDXL was trained with: the original image size, the crop's top-left corner and the target size, in pixels.",
    )
    .input(InputSpec::of("clip", ValueType::Clip).doc("SDXL's text encoders (CLIP-L and bigG)."))
    .input(size("width", 1024, "Original image width the model is told."))
    .input(size("height", 1024, "Original image height the model is told."))
    .input(size("crop_w", 0, "Left edge of the crop, in pixels."))
    .input(size("crop_h", 0, "Top edge of the crop, in pixels."))
    .input(size("target_width", 1024, "Target width."))
    .input(size("target_height", 1024, "Target height."))
    .input(InputSpec::string("text_g").default("").doc("The prompt for bigG."))
    .input(InputSpec::string("text_l").default("").doc("The prompt for CLIP-L."))
    .output("CONDITIONING", ValueType::Conditioning, "Text states, pooled output and sizes.")
    .run(move |cx| {
        let clip = cx.get::<TextEncoder>("clip")?;
        if clip.towers() != 2 {
            return Err(NodeError::input(
                "clip",
                format!(
                    "CLIPTextEncodeSDXL needs SDXL's two text encoders (CLIP-L and bigG); this CLIP has {}",
                    clip.towers()
                ),
            ));
        }
        let size = SizeCond {
            original: Some(pixels(cx.inputs, "height", "width")?),
            crop: pixels(cx.inputs, "crop_h", "crop_w")?,
            target: Some(pixels(cx.inputs, "target_height", "target_width")?),
            ..SizeCond::default()
        };
        let texts = [cx.str("text_l")?, cx.str("text_g")?];
        encode(&files, cx.inputs, clip, &texts, size)
    })
}

/// `CLIPTextEncodeSDXLRefiner`: a prompt with the refiner's aesthetic score.
pub fn clip_text_encode_sdxl_refiner(files: ModelFiles) -> NodeDef {
    NodeSchema::new(
        "CLIPTextEncodeSDXLRefiner",
        "advanced/conditioning",
        "Encodes a prompt for the SDXL refiner with its micro-conditioning: the aesthetic score it was trained on (6 is typical for a positive prompt, 2.5 for a negative) and the original image size.",
    )
    .input(InputSpec::float("ascore").default(6.0).range(0.0, 1000.0).step(0.01).doc("Aesthetic score."))
    .input(size("width", 1024, "Original image width the model is told."))
    .input(size("height", 1024, "Original image height the model is told."))
    .input(InputSpec::string("text").default("").doc("The prompt."))
    .input(InputSpec::of("clip", ValueType::Clip).doc("The refiner's text encoder."))
    .output("CONDITIONING", ValueType::Conditioning, "Text states, pooled output and score.")
    .run(move |cx| {
        let clip = cx.get::<TextEncoder>("clip")?;
        let size = SizeCond {
            original: Some(pixels(cx.inputs, "height", "width")?),
            aesthetic: Some(cx.float("ascore")?),
            ..SizeCond::default()
        };
        let text = cx.str("text")?;
        encode(&files, cx.inputs, clip, &vec![text; clip.towers()], size)
    })
}
