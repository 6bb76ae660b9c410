//! The text encoders of SD3 and Flux with their own prompts, and Flux dev's
//! distilled guidance: `CLIPTextEncodeSD3`, `CLIPTextEncodeFlux`,
//! `FluxGuidance`. Plain `CLIPTextEncode` works for both families too.

use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_models::clip::TextEncoder;
use weft_sampling::Conditioning;

use crate::ModelFiles;

fn guidance_input() -> InputSpec {
    InputSpec::float("guidance")
        .default(3.5)
        .range(0.0, 100.0)
        .step(0.1)
        .doc("The guidance strength Flux dev was distilled to imitate (3.5 is typical; schnell ignores it).")
}

fn text_error(e: candle_core::Error) -> NodeError {
    NodeError::new(format!("text encoding failed: {e}"))
}

/// `CLIPTextEncodeSD3`: a prompt for each of SD3's three encoders.
pub fn clip_text_encode_sd3(files: ModelFiles) -> NodeDef {
    NodeSchema::new(
        "CLIPTextEncodeSD3",
        "advanced/conditioning",
        "Encodes a prompt for SD3 with a text for each encoder: CLIP-L, OpenCLIP bigG and T5-XXL. `empty_padding: none` leaves the CLIP states out (and their pooled output zero) when both CLIP prompts are empty, as ComfyUI does; `empty_prompt` encodes them as empty prompts.",
    )
    .input(InputSpec::of("clip", ValueType::Clip).doc("SD3's text encoders."))
    .input(InputSpec::string("clip_l").default("").doc("The prompt for CLIP-L."))
    .input(InputSpec::string("clip_g").default("").doc("The prompt for bigG."))
    .input(InputSpec::string("t5xxl").default("").doc("The prompt for T5-XXL."))
    .input(InputSpec::choice("empty_padding", &["none", "empty_prompt"]).doc("What an empty CLIP prompt becomes."))
    .output("CONDITIONING", ValueType::Conditioning, "Text states and pooled output.")
    .run(move |cx| {
        let clip = cx.get::<TextEncoder>("clip")?;
        let (l, g, t5) = (cx.str("clip_l")?, cx.str("clip_g")?, cx.str("t5xxl")?);
        let skip = cx.str("empty_padding")? == "none" && l.is_empty() && g.is_empty();
        let cond = clip
            .encode_sd3_prompts(l, g, t5, skip, &super::embeddings(&files, cx.inputs))
            .map_err(|e| NodeError::input("clip", e.to_string()))?;
        Ok(Value::handle(cond))
    })
}

/// `CLIPTextEncodeFlux`: CLIP-L's and T5's prompts, and the guidance.
pub fn clip_text_encode_flux(files: ModelFiles) -> NodeDef {
    NodeSchema::new(
        "CLIPTextEncodeFlux",
        "advanced/conditioning/flux",
        "Encodes a prompt for Flux: `t5xxl` with T5-XXL (the states the transformer reads), `clip_l` with CLIP-L (its pooled output), and the distilled guidance strength dev conditions on.",
    )
    .input(InputSpec::of("clip", ValueType::Clip).doc("Flux's text encoders (CLIP-L and T5-XXL)."))
    .input(InputSpec::string("clip_l").default("").doc("The prompt for CLIP-L."))
    .input(InputSpec::string("t5xxl").default("").doc("The prompt for T5-XXL."))
    .input(guidance_input())
    .output("CONDITIONING", ValueType::Conditioning, "Text states, pooled output and guidance.")
    .run(move |cx| {
        let clip = cx.get::<TextEncoder>("clip")?;
        let texts = vec![cx.str("clip_l")?; clip.towers()];
        let cond = clip
            .encode_with_t5(&texts, cx.str("t5xxl")?, &super::embeddings(&files, cx.inputs))
            .map_err(text_error)?;
        Ok(Value::handle(Conditioning {
            guidance: vec![Some(cx.float("guidance")?)],
            ..cond
        }))
    })
}

/// `FluxGuidance`: sets the distilled guidance of every entry.
pub fn flux_guidance() -> NodeDef {
    NodeSchema::new(
        "FluxGuidance",
        "advanced/conditioning/flux",
        "Sets the guidance strength Flux dev conditions on, for every entry of a conditioning (dev was distilled from classifier-free guidance: this replaces the CFG scale, which stays at 1).",
    )
    .input(InputSpec::of("conditioning", ValueType::Conditioning).doc("The conditioning."))
    .input(guidance_input())
    .output("CONDITIONING", ValueType::Conditioning, "The conditioning with its guidance.")
    .run(|cx| {
        let g = cx.float("guidance")?;
        let cond = cx
            .get::<Conditioning>("conditioning")?
            .map_entries(&mut |mut e| {
                e.guidance = vec![Some(g)];
                Ok(e)
            })
            .map_err(|e| NodeError::input("conditioning", e.to_string()))?;
        Ok(Value::handle(cond))
    })
}
