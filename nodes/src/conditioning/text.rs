use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_models::clip::TextEncoder;

use crate::ModelFiles;

/// `CLIPTextEncode`: prompt text to conditioning; `embedding:name` is
/// looked up in `files`' embeddings folders.
pub fn clip_text_encode(files: ModelFiles) -> NodeDef {
    NodeSchema::new(
        "CLIPTextEncode",
        "conditioning",
        "Encodes a prompt with CLIP. `(word:1.3)` weights words (bare parentheses ×1.1, nesting multiplies, `\\(` is a literal parenthesis); prompts over 75 tokens are encoded in 77-token chunks placed side by side, as in ComfyUI. With SD3's and Flux's encoders the same prompt goes to T5 too, whole. `embedding:name` inserts a textual-inversion embedding from the embeddings folders (SD 1.x/2.x files, SDXL `clip_l`/`clip_g` pairs).",
    )
    .input(InputSpec::string("text").default("").doc("The prompt."))
    .input(InputSpec::of("clip", ValueType::Clip).doc("The text encoder."))
    .output("CONDITIONING", ValueType::Conditioning, "The text states the UNet attends to, and the pooled output.")
    .run(move |cx| {
        let clip = cx.get::<TextEncoder>("clip")?;
        let text = cx.str("text")?;
        let cond = clip
            .encode_with_t5(&vec![text; clip.towers()], text, &super::embeddings(&files, cx.inputs))
            .map_err(|e| NodeError::input("text", format!("text encoding failed: {e}")))?;
        Ok(Value::handle(cond))
    })
}

/// `CLIPSetLastLayer`: which CLIP layer conditions the UNet ("clip skip").
pub fn clip_set_last_layer() -> NodeDef {
    NodeSchema::new(
        "CLIPSetLastLayer",
        "conditioning",
        "Stops the text encoder at an earlier layer: -1 is the last layer, -2 the one before (A1111's \"clip skip 2\"). SD 2.x single files default to -2, which is what SD 2.x was trained with.",
    )
    .input(InputSpec::of("clip", ValueType::Clip).doc("The text encoder."))
    .input(InputSpec::int("stop_at_clip_layer").default(-1).range(-48.0, -1.0).doc("The layer, counted from the end."))
    .output("CLIP", ValueType::Clip, "The same encoder, stopping at that layer.")
    .run(|cx| {
        let mut clip = cx.get::<TextEncoder>("clip")?.clone();
        clip.set_last_layer(cx.int("stop_at_clip_layer")?)
            .map_err(|e| NodeError::input("stop_at_clip_layer", e))?;
        Ok(Value::handle(clip))
    })
}
