//! Conditioning edits written as a plugin, through ABI 1.1's CONDITIONING
//! view: the two kinds most of ComfyUI's custom conditioning nodes are,
//! arithmetic on an entry's tensors and setting an entry's options. They
//! compute what weft's built-in `ConditioningAverage` and
//! `ConditioningSetTimestepRange` do, so the tests can compare them. A
//! latent edit beside them shows a LATENT keeping its noise mask through a
//! plugin.

use weft_plugin_sdk::{
    export_plugin, Conditioning, Context, Define, Field, InputSpec, NodeDef, NodeSchema, Result,
    Tensor, Value, ValueType,
};

/// `to`'s tokens blended with `from`'s: `to·s + from·(1 − s)`, `from` cut
/// or zero-padded to `to`'s token count (ComfyUI's rule).
fn blend(to: &Tensor, from: &Tensor, s: f64) -> Result<Tensor> {
    let (tokens, from_tokens) = (to.dim(1)?, from.dim(1)?);
    let from = if from_tokens >= tokens {
        from.narrow(1, 0, tokens)?
    } else {
        let pad = Tensor::zeros(
            (from.dim(0)?, tokens - from_tokens, from.dim(2)?),
            from.dtype(),
            from.device(),
        )?;
        Tensor::cat(&[from, &pad], 1)?
    };
    let from = from.broadcast_as(to.shape())?;
    Ok(((to * s)? + (from * (1.0 - s))?)?)
}

fn average(cx: &Context, to: &Conditioning, from: &Conditioning, s: f64) -> Result<Conditioning> {
    let from_context = from.tensor(cx, 0, "context")?;
    let from_pooled = from.tensor(cx, 0, "pooled")?;
    let mut out: Option<Conditioning> = None;
    for i in 0..to.len() {
        let mut entry = to.entry(cx, i)?;
        if let (Some(t), Some(f)) = (entry.tensor(cx, 0, "context")?, &from_context) {
            entry = entry.with(cx, 0, "context", Field::Tensor(&blend(&t, f, s)?))?;
        }
        if let (Some(t), Some(f)) = (entry.tensor(cx, 0, "pooled")?, &from_pooled) {
            let f = f.broadcast_as(t.shape())?;
            let mixed = ((&t * s)? + (f * (1.0 - s))?)?;
            entry = entry.with(cx, 0, "pooled", Field::Tensor(&mixed))?;
        }
        out = Some(match out {
            None => entry,
            Some(acc) => acc.combine(cx, &entry)?,
        });
    }
    Ok(out.expect("a conditioning has an entry"))
}

fn average_node() -> NodeDef {
    NodeSchema::new(
        "ExampleConditioningAverage",
        "plugins/conditioning",
        "Each entry of `conditioning_to` blended with the first of `conditioning_from` (tokens and pooled): to·s + from·(1 − s).",
    )
    .input(InputSpec::of("conditioning_to", ValueType::Conditioning).doc("The entries to blend."))
    .input(InputSpec::of("conditioning_from", ValueType::Conditioning).doc("What to blend in (its first entry)."))
    .input(InputSpec::float("conditioning_to_strength").default(1.0).range(0.0, 1.0).step(0.01).doc("s: the weight of `conditioning_to`."))
    .output("CONDITIONING", ValueType::Conditioning, "The blended conditioning.")
    .run(|cx| {
        let to = cx.conditioning("conditioning_to")?;
        let from = cx.conditioning("conditioning_from")?;
        let s = cx.float("conditioning_to_strength")?;
        Ok(Value::from(average(cx, &to, &from, s)?))
    })
}

fn timestep_range_node() -> NodeDef {
    NodeSchema::new(
        "ExampleConditioningTimestepRange",
        "plugins/conditioning",
        "Limits every entry to part of sampling: from `start` to `end`, as fractions of the schedule.",
    )
    .input(InputSpec::of("conditioning", ValueType::Conditioning).doc("The conditioning to limit."))
    .input(InputSpec::float("start").default(0.0).range(0.0, 1.0).step(0.001).doc("Where it starts (0 = the first step)."))
    .input(InputSpec::float("end").default(1.0).range(0.0, 1.0).step(0.001).doc("Where it ends (1 = the last step)."))
    .output("CONDITIONING", ValueType::Conditioning, "The limited conditioning.")
    .run(|cx| {
        let mut cond = cx.conditioning("conditioning")?;
        let (start, end) = (cx.float("start")?, cx.float("end")?);
        for i in 0..cond.len() {
            // The host refuses a range whose start passes its end, so the
            // old start goes first.
            cond = cond.with(cx, i, "start_percent", Field::Float(0.0))?;
            cond = cond.with(cx, i, "end_percent", Field::Float(end))?;
            cond = cond.with(cx, i, "start_percent", Field::Float(start))?;
        }
        Ok(Value::from(cond))
    })
}

fn latent_multiply_node() -> NodeDef {
    NodeSchema::new(
        "ExampleLatentMultiply",
        "plugins/latent",
        "The latent times `multiplier` (ComfyUI's LatentMultiply); its noise mask goes with it.",
    )
    .input(InputSpec::of("samples", ValueType::Latent).doc("The latent."))
    .input(
        InputSpec::float("multiplier")
            .default(1.0)
            .range(-10.0, 10.0)
            .step(0.01)
            .doc("The factor."),
    )
    .output("LATENT", ValueType::Latent, "The scaled latent.")
    .run(|cx| {
        let samples = (cx.tensor("samples")? * cx.float("multiplier")?)?;
        let space = cx.latent_space("samples")?.to_string();
        Ok(Value::Latent { samples, space })
    })
}

export_plugin! {
    name: "conditioning-examples",
    version: "0.1.0",
    nodes: [average_node(), timestep_range_node(), latent_multiply_node()],
}
