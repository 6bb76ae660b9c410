//! SIGMAS nodes: σ schedules by name, by formula, and σ list utilities.

use candle_core::{Device, Tensor};
use weft_core::{InputSpec, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

use super::handles::handle;
use super::run::sigma_values;
use weft_sampling::{schedule, Model};

pub fn sigmas_value(sigmas: Vec<f64>) -> Result<Value, NodeError> {
    let n = sigmas.len();
    Ok(Value::Sigmas(Tensor::from_vec(sigmas, n, &Device::Cpu)?))
}

fn steps_input() -> InputSpec {
    InputSpec::int("steps")
        .default(20)
        .range(1.0, 10_000.0)
        .doc("Sampling steps.")
}

/// A model's σ schedule for `steps`, with img2img `denoise` (ComfyUI's rule).
pub fn model_sigmas(
    model: &Model,
    scheduler: &str,
    steps: usize,
    denoise: f64,
) -> Result<Vec<f64>, NodeError> {
    schedule::with_denoise(
        |n| schedule::sigmas_by_name(scheduler, &model.sampling, n),
        steps,
        denoise,
    )
    .map_err(NodeError::new)
}

/// The named scheduler over the model's own σ range.
pub struct BasicScheduler(NodeSchema);

impl BasicScheduler {
    pub fn new() -> Self {
        BasicScheduler(
            NodeSchema::new("BasicScheduler", "sampling/sigmas", "A σ schedule by name, over the model's σ range; `denoise` < 1 keeps the tail of a longer schedule (img2img).")
                .input(InputSpec::of("model", ValueType::Model).doc("Whose noise levels to use."))
                .input(InputSpec::choice("scheduler", schedule::scheduler_names()).doc("The schedule."))
                .input(steps_input())
                .input(InputSpec::float("denoise").default(1.0).range(0.0, 1.0).step(0.01).doc("How much of the schedule to run."))
                .output("SIGMAS", ValueType::Sigmas, "The σ list, ending at 0."),
        )
    }
}

impl Node for BasicScheduler {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        let model = handle::<Model>(i, "model", ValueType::Model)?;
        let sigmas = model_sigmas(
            model,
            i.str("scheduler")?,
            i.int("steps")? as usize,
            i.float("denoise")?,
        )?;
        Ok(vec![sigmas_value(sigmas)?])
    }
}

/// Karras et al. (2022): σ spaced evenly in σ^(1/ρ).
pub struct KarrasScheduler(NodeSchema);

impl KarrasScheduler {
    pub fn new() -> Self {
        KarrasScheduler(
            NodeSchema::new("KarrasScheduler", "sampling/sigmas", "Karras et al.'s schedule: σ evenly spaced in σ^(1/ρ) between σ_max and σ_min, then 0.")
                .input(steps_input())
                .input(InputSpec::float("sigma_max").default(14.614642).min(0.0).doc("Highest σ."))
                .input(InputSpec::float("sigma_min").default(0.0291675).min(0.0).doc("Lowest non-zero σ."))
                .input(InputSpec::float("rho").default(7.0).range(0.01, 100.0).doc("Spacing exponent."))
                .output("SIGMAS", ValueType::Sigmas, "The σ list."),
        )
    }
}

impl Node for KarrasScheduler {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        let s = schedule::karras(
            i.int("steps")? as usize,
            i.float("sigma_min")?,
            i.float("sigma_max")?,
            i.float("rho")?,
        );
        Ok(vec![sigmas_value(s.map_err(NodeError::new)?)?])
    }
}

/// Flow-matching σ from 1 to 0 with SD3's shift, as diffusers' FlowMatchEuler.
pub struct FlowMatchScheduler(NodeSchema);

impl FlowMatchScheduler {
    pub fn new() -> Self {
        FlowMatchScheduler(
            NodeSchema::new("FlowMatchScheduler", "sampling/sigmas", "Flow-matching σ from 1 to 0 with SD3's shift σ' = sσ/(1+(s−1)σ) (s = 3 for SD3), matching diffusers' FlowMatchEulerDiscreteScheduler.")
                .input(steps_input())
                .input(InputSpec::float("shift").default(1.0).range(0.01, 100.0).doc("s > 1 spends more steps at high noise."))
                .output("SIGMAS", ValueType::Sigmas, "The σ list."),
        )
    }
}

impl Node for FlowMatchScheduler {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let s = schedule::flow_sigmas(
            ctx.inputs.int("steps")? as usize,
            ctx.inputs.float("shift")?,
        );
        Ok(vec![sigmas_value(s.map_err(NodeError::new)?)?])
    }
}

/// Flux's resolution-dependent shift.
pub struct FluxScheduler(NodeSchema);

impl FluxScheduler {
    pub fn new() -> Self {
        FluxScheduler(
            NodeSchema::new("FluxScheduler", "sampling/sigmas", "Flow-matching σ with Flux's resolution-dependent shift: μ grows linearly with the number of 16×16 image patches.")
                .input(steps_input())
                .input(InputSpec::int("width").default(1024).range(16.0, 16384.0).doc("Image width in pixels."))
                .input(InputSpec::int("height").default(1024).range(16.0, 16384.0).doc("Image height in pixels."))
                .output("SIGMAS", ValueType::Sigmas, "The σ list."),
        )
    }
}

impl Node for FluxScheduler {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        let patches = (i.int("width")? as usize / 16) * (i.int("height")? as usize / 16);
        let steps = i.int("steps")? as usize;
        let sigmas = schedule::flux_mu(patches).and_then(|mu| schedule::flux_sigmas(steps, mu));
        Ok(vec![sigmas_value(sigmas.map_err(NodeError::new)?)?])
    }
}

/// Splits a schedule in two at a step, for chaining samplers.
pub struct SplitSigmas(NodeSchema);

impl SplitSigmas {
    pub fn new() -> Self {
        SplitSigmas(
            NodeSchema::new("SplitSigmas", "sampling/sigmas", "The first `step` steps and the rest; the σ at the split ends one and starts the other.")
                .input(InputSpec::of("sigmas", ValueType::Sigmas).doc("The schedule."))
                .input(InputSpec::int("step").default(0).min(0.0).doc("Where to split."))
                .output("high_sigmas", ValueType::Sigmas, "Up to the split.")
                .output("low_sigmas", ValueType::Sigmas, "From the split."),
        )
    }
}

impl Node for SplitSigmas {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let sigmas = sigma_values(ctx.inputs.value("sigmas")?)?;
        let (high, low) = schedule::split_sigmas(&sigmas, ctx.inputs.int("step")? as usize)
            .map_err(NodeError::new)?;
        Ok(vec![sigmas_value(high)?, sigmas_value(low)?])
    }
}

/// Reverses a schedule (for inversion).
pub struct FlipSigmas(NodeSchema);

impl FlipSigmas {
    pub fn new() -> Self {
        FlipSigmas(
            NodeSchema::new("FlipSigmas", "sampling/sigmas", "The schedule reversed, for inverting a sample back towards noise; a leading 0 becomes 1e-4.")
                .input(InputSpec::of("sigmas", ValueType::Sigmas).doc("The schedule."))
                .output("SIGMAS", ValueType::Sigmas, "Reversed."),
        )
    }
}

impl Node for FlipSigmas {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let sigmas = sigma_values(ctx.inputs.value("sigmas")?)?;
        Ok(vec![sigmas_value(
            schedule::flip_sigmas(&sigmas).map_err(NodeError::new)?,
        )?])
    }
}
