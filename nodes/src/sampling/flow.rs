//! The σ-grid shift of flow-matching models, as ComfyUI's
//! `ModelSamplingSD3` and `ModelSamplingFlux`: a larger shift spends more
//! steps at high noise, which larger images need.

use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_sampling::{FlowShift, Model, NoiseLevels, SkipLayerGuidance};

/// A copy of the model in `cx` with its flow grid shifted by `shift`.
fn shifted(model: &Model, shift: FlowShift) -> Result<Model, NodeError> {
    let mut model = model.clone();
    let NoiseLevels::Flow { multiplier, .. } = model.sampling.levels else {
        return Err(NodeError::input(
            "model",
            "a discrete-time diffusion model has no flow shift (use ModelSamplingDiscrete)",
        ));
    };
    model.sampling.levels = NoiseLevels::Flow { multiplier, shift };
    Ok(model)
}

/// `ModelSamplingSD3`: SD3's shift s of σ' = s·σ / (1 + (s − 1)·σ).
pub fn model_sampling_sd3() -> NodeDef {
    NodeSchema::new(
        "ModelSamplingSD3",
        "advanced/model",
        "Sets an SD3-style flow model's timestep shift: σ' = s·σ / (1 + (s − 1)·σ) over ComfyUI's 1000-level grid that the schedulers pick from (SD3 and SD3.5 use 3.0).",
    )
    .input(InputSpec::of("model", ValueType::Model).doc("A flow-matching model (SD3, SD3.5)."))
    .input(InputSpec::float("shift").default(3.0).range(0.0, 100.0).step(0.01).doc("The shift s; 1 is none."))
    .output("MODEL", ValueType::Model, "The model with the shifted grid.")
    .run(|cx| {
        let s = cx.float("shift")?;
        if !(s > 0.0 && s.is_finite()) {
            return Err(NodeError::input("shift", format!("must be positive, got {s}")));
        }
        Ok(Value::handle(shifted(cx.get::<Model>("model")?, FlowShift::Sd3(s))?))
    })
}

/// Flux's μ for an image of `width`×`height` pixels: linear in its 2×2
/// latent patches, `base_shift` at 256 and `max_shift` at 4096.
pub fn flux_mu(width: f64, height: f64, max_shift: f64, base_shift: f64) -> f64 {
    let slope = (max_shift - base_shift) / (4096.0 - 256.0);
    let intercept = base_shift - slope * 256.0;
    width * height / (8.0 * 8.0 * 2.0 * 2.0) * slope + intercept
}

/// `ModelSamplingFlux`: Flux's resolution-dependent time shift.
pub fn model_sampling_flux() -> NodeDef {
    NodeSchema::new(
        "ModelSamplingFlux",
        "advanced/model",
        "Sets a Flux model's time shift for an image size: μ is linear in the number of 2×2 latent patches (base_shift at 256, max_shift at 4096), and σ' = e^μ / (e^μ + 1/σ − 1) over ComfyUI's 10000-level grid.",
    )
    .input(InputSpec::of("model", ValueType::Model).doc("A Flux model."))
    .input(InputSpec::float("max_shift").default(1.15).range(0.0, 100.0).step(0.01).doc("μ at 4096 patches (1024²)."))
    .input(InputSpec::float("base_shift").default(0.5).range(0.0, 100.0).step(0.01).doc("μ at 256 patches (256²)."))
    .input(InputSpec::int("width").default(1024).range(16.0, 16384.0).step(8.0).doc("Image width in pixels."))
    .input(InputSpec::int("height").default(1024).range(16.0, 16384.0).step(8.0).doc("Image height in pixels."))
    .output("MODEL", ValueType::Model, "The model with the shifted grid.")
    .run(|cx| {
        let mu = flux_mu(
            cx.int("width")? as f64,
            cx.int("height")? as f64,
            cx.float("max_shift")?,
            cx.float("base_shift")?,
        );
        Ok(Value::handle(shifted(cx.get::<Model>("model")?, FlowShift::Flux(mu))?))
    })
}

/// `SkipLayerGuidanceSD3`: SD3.5's skip-layer guidance as a model patch
/// that CFG applies.
pub fn skip_layer_guidance_sd3() -> NodeDef {
    NodeSchema::new(
        "SkipLayerGuidanceSD3",
        "advanced/guidance",
        "Skip-layer guidance (SD3.5 medium's recommended setting): while sampling is between start_percent and end_percent, the guided prediction moves away from the conditional prediction of the model with `layers` left out: guided + scale·(cond − cond_skipping_layers), as ComfyUI's node. Costs one more forward per step in that range.",
    )
    .input(InputSpec::of("model", ValueType::Model).doc("An SD3/SD3.5 model."))
    .input(InputSpec::string("layers").default("7, 8, 9").doc("The blocks to leave out, comma-separated (counted from 0)."))
    .input(InputSpec::float("scale").default(3.0).range(0.0, 10.0).step(0.1).doc("How far to move away from the skipped prediction."))
    .input(InputSpec::float("start_percent").default(0.01).range(0.0, 1.0).step(0.001).doc("Where in sampling it starts."))
    .input(InputSpec::float("end_percent").default(0.15).range(0.0, 1.0).step(0.001).doc("Where in sampling it ends."))
    .output("MODEL", ValueType::Model, "The patched model.")
    .run(|cx| {
        let mut model = cx.get::<Model>("model")?.clone();
        let layers = cx
            .str("layers")?
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse::<usize>()
                    .map_err(|_| NodeError::input("layers", format!("`{l}` is not a block number")))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let skipped = model.network.without_blocks(&layers).ok_or_else(|| {
            NodeError::input("model", "skip-layer guidance needs a transformer made of blocks (SD3, SD3.5)")
        })?;
        let (start, end) = (cx.float("start_percent")?, cx.float("end_percent")?);
        let sampling = &model.sampling;
        model.skip_layer_guidance = Some(SkipLayerGuidance {
            skipped,
            scale: cx.float("scale")?,
            sigmas: (sampling.percent_to_sigma(end), sampling.percent_to_sigma(start)),
        });
        Ok(Value::handle(model))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ComfyUI's defaults give 1.15 at 1024² and 0.5 at 256².
    #[test]
    fn flux_mu_is_linear_in_patches() {
        assert!((flux_mu(1024.0, 1024.0, 1.15, 0.5) - 1.15).abs() < 1e-12);
        assert!((flux_mu(256.0, 256.0, 1.15, 0.5) - 0.5).abs() < 1e-12);
        assert!((flux_mu(512.0, 512.0, 1.15, 0.5) - (0.5 + 0.65 * 768.0 / 3840.0)).abs() < 1e-12);
    }
}
