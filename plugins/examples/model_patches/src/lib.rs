//! MODEL patches written as a plugin, through ABI 1.1.
//!
//! `PerturbedAttentionGuidance` (Ahn et al. 2024, "Self-Rectifying
//! Diffusion Sampling with Perturbed-Attention Guidance") as a MODEL patch,
//! through ABI 1.1: an attention hook makes a copy of the model whose
//! chosen self-attention layers attend each token to itself only (the
//! attention map becomes the identity, so the layer returns `v`), and a
//! denoiser wrapper moves every prediction away from that copy's:
//! D'(x) = D(x) + scale·(D(x) − D_perturbed(x)).
//!
//! ComfyUI's node applies the term to the conditional prediction after CFG;
//! this one applies it to each prediction the guider asks for, which is
//! the same under a BasicGuider or cfg 1.
//!
//! `ExampleWeightDelta` adds a patterned delta to one named weight: the
//! shape of a LoRA loader, with the file replaced by a formula the tests
//! can reproduce.

use weft_plugin_sdk::{
    export_plugin, AttentionHook, Conditioning, Context, Define, DenoiserWrapper, InputSpec, Model,
    NodeDef, NodeSchema, Result, Tensor, Value, ValueType,
};

/// Self-attention replaced by the identity map in layers whose name starts
/// with `prefix`.
struct IdentityAttention {
    prefix: String,
}

impl AttentionHook for IdentityAttention {
    fn attend(
        &self,
        _ctx: &Context,
        name: &str,
        _q: &Tensor,
        _k: &Tensor,
        v: &Tensor,
        _heads: usize,
    ) -> Result<Option<Tensor>> {
        let self_attention = name.ends_with(".attn1");
        Ok((self_attention && name.starts_with(&self.prefix)).then(|| v.clone()))
    }
}

struct Pag {
    perturbed: Model,
    scale: f64,
}

impl DenoiserWrapper for Pag {
    fn denoise(
        &self,
        ctx: &Context,
        inner: &Model,
        x: &Tensor,
        sigma: f64,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        let d = inner.denoise(ctx, x, sigma, cond)?;
        if self.scale == 0.0 {
            return Ok(d);
        }
        let perturbed = self.perturbed.denoise(ctx, x, sigma, cond)?;
        Ok((&d + ((&d - perturbed)? * self.scale)?)?)
    }
}

fn pag_node() -> NodeDef {
    NodeSchema::new(
        "PerturbedAttentionGuidance",
        "plugins/model_patches",
        "Perturbed-attention guidance (Ahn et al. 2024): each prediction moves away from the model's prediction with the chosen self-attention layers made the identity. Stable Diffusion UNets.",
    )
    .input(InputSpec::of("model", ValueType::Model).doc("The model to patch."))
    .input(InputSpec::float("scale").default(3.0).range(0.0, 100.0).step(0.01).doc("How far to move away from the perturbed prediction."))
    .input(InputSpec::string("layers").default("mid_block").doc("Self-attention layers whose name starts with this (diffusers naming) are perturbed; SD's middle block by default, as in the paper."))
    .output("MODEL", ValueType::Model, "The patched model.")
    .run(|cx| {
        let model = cx.model("model")?;
        let prefix = cx.str("layers")?.to_string();
        let perturbed = model.with_attention_hook(cx, IdentityAttention { prefix })?;
        let scale = cx.float("scale")?;
        Ok(Value::from(model.wrap(cx, Pag { perturbed, scale })?))
    })
}

/// The delta's pattern: entry `i` (row-major) is `amount·((i mod 7) − 3)/3`.
fn pattern(dims: &[usize], amount: f64) -> Result<Tensor> {
    let count: usize = dims.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|i| (amount * ((i % 7) as f64 - 3.0) / 3.0) as f32)
        .collect();
    Ok(Tensor::from_vec(
        values,
        dims,
        &weft_plugin_sdk::Device::Cpu,
    )?)
}

fn weight_delta_node() -> NodeDef {
    NodeSchema::new(
        "ExampleWeightDelta",
        "plugins/model_patches",
        "Adds amount·((i mod 7) − 3)/3 to entry i of one weight (diffusers name, its shape given): a LoRA loader's shape, with a formula for the file.",
    )
    .input(InputSpec::of("model", ValueType::Model).doc("The model to patch."))
    .input(InputSpec::string("weight").doc("The weight's diffusers name, e.g. `conv_out.bias`."))
    .input(InputSpec::string("shape").doc("Its shape, comma-separated, e.g. `4` or `320,320,1,1`."))
    .input(InputSpec::float("amount").default(0.1).range(-10.0, 10.0).doc("The pattern's scale."))
    .output("MODEL", ValueType::Model, "The patched model.")
    .run(|cx| {
        let model = cx.model("model")?;
        let dims = cx
            .str("shape")?
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| weft_plugin_sdk::Error(format!("input `shape`: {e}")))?;
        let delta = pattern(&dims, cx.float("amount")?)?;
        let weight = cx.str("weight")?;
        Ok(Value::from(model.add_deltas(cx, &[(weight, delta)], 1.0)?))
    })
}

export_plugin! {
    name: "model-patches",
    version: "0.1.0",
    nodes: [pag_node(), weight_delta_node()],
}
