//! SIGMAS nodes: σ schedules by name, by formula, and σ list utilities.

use candle_core::{Device, Tensor};
use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

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

/// `BasicScheduler`: the named scheduler over the model's own σ range.
pub fn basic_scheduler() -> NodeDef {
    NodeSchema::new("BasicScheduler", "sampling/sigmas", "A σ schedule by name, over the model's σ range; `denoise` < 1 keeps the tail of a longer schedule (img2img).")
        .input(InputSpec::of("model", ValueType::Model).doc("Whose noise levels to use."))
        .input(InputSpec::choice("scheduler", schedule::scheduler_names()).doc("The schedule."))
        .input(steps_input())
        .input(InputSpec::float("denoise").default(1.0).range(0.0, 1.0).step(0.01).doc("How much of the schedule to run."))
        .output("SIGMAS", ValueType::Sigmas, "The σ list, ending at 0.")
        .run(|cx| {
            sigmas_value(model_sigmas(
                cx.get::<Model>("model")?,
                cx.str("scheduler")?,
                cx.int("steps")? as usize,
                cx.float("denoise")?,
            )?)
        })
}

/// `KarrasScheduler`: Karras et al. (2022), σ spaced evenly in σ^(1/ρ).
pub fn karras_scheduler() -> NodeDef {
    NodeSchema::new(
        "KarrasScheduler",
        "sampling/sigmas",
        "Karras et al.'s schedule: σ evenly spaced in σ^(1/ρ) between σ_max and σ_min, then 0.",
    )
    .input(steps_input())
    .input(
        InputSpec::float("sigma_max")
            .default(14.614642)
            .min(0.0)
            .doc("Highest σ."),
    )
    .input(
        InputSpec::float("sigma_min")
            .default(0.0291675)
            .min(0.0)
            .doc("Lowest non-zero σ."),
    )
    .input(
        InputSpec::float("rho")
            .default(7.0)
            .range(0.01, 100.0)
            .doc("Spacing exponent."),
    )
    .output("SIGMAS", ValueType::Sigmas, "The σ list.")
    .run(|cx| {
        let s = schedule::karras(
            cx.int("steps")? as usize,
            cx.float("sigma_min")?,
            cx.float("sigma_max")?,
            cx.float("rho")?,
        );
        sigmas_value(s.map_err(NodeError::new)?)
    })
}

/// `FlowMatchScheduler`: flow-matching σ from 1 to 0 with SD3's shift, as
/// diffusers' FlowMatchEuler.
pub fn flow_match_scheduler() -> NodeDef {
    NodeSchema::new("FlowMatchScheduler", "sampling/sigmas", "Flow-matching σ from 1 to 0 with SD3's shift σ' = sσ/(1+(s−1)σ) (s = 3 for SD3), matching diffusers' FlowMatchEulerDiscreteScheduler.")
        .input(steps_input())
        .input(InputSpec::float("shift").default(1.0).range(0.01, 100.0).doc("s > 1 spends more steps at high noise."))
        .output("SIGMAS", ValueType::Sigmas, "The σ list.")
        .run(|cx| {
            let s = schedule::flow_sigmas(cx.int("steps")? as usize, cx.float("shift")?);
            sigmas_value(s.map_err(NodeError::new)?)
        })
}

/// `FluxScheduler`: Flux's resolution-dependent shift.
pub fn flux_scheduler() -> NodeDef {
    NodeSchema::new("FluxScheduler", "sampling/sigmas", "Flow-matching σ with Flux's resolution-dependent shift: μ grows linearly with the number of 16×16 image patches.")
        .input(steps_input())
        .input(InputSpec::int("width").default(1024).range(16.0, 16384.0).doc("Image width in pixels."))
        .input(InputSpec::int("height").default(1024).range(16.0, 16384.0).doc("Image height in pixels."))
        .output("SIGMAS", ValueType::Sigmas, "The σ list.")
        .run(|cx| {
            let patches = (cx.int("width")? as usize / 16) * (cx.int("height")? as usize / 16);
            let steps = cx.int("steps")? as usize;
            let sigmas = schedule::flux_mu(patches).and_then(|mu| schedule::flux_sigmas(steps, mu));
            sigmas_value(sigmas.map_err(NodeError::new)?)
        })
}

/// `SDTurboScheduler`: SD-Turbo's ten distilled timesteps (ComfyUI's
/// custom-sampler node), for 1–4 step sampling of Turbo models.
pub fn sd_turbo_scheduler() -> NodeDef {
    NodeSchema::new("SDTurboScheduler", "sampling/sigmas", "σ at SD-Turbo's distilled timesteps 999, 899, …, 99: `steps` of them, starting 10 − ⌊10·denoise⌋ in, then 0.")
        .input(InputSpec::of("model", ValueType::Model).doc("Whose noise levels to use."))
        .input(InputSpec::int("steps").default(1).range(1.0, 10.0).doc("Sampling steps."))
        .input(InputSpec::float("denoise").default(1.0).range(0.0, 1.0).step(0.01).doc("How much of the schedule to run; 0 gives just [0]."))
        .output("SIGMAS", ValueType::Sigmas, "The σ list, ending at 0.")
        .run(|cx| {
            let steps = cx.int("steps")?;
            let steps = usize::try_from(steps)
                .ok()
                .filter(|s| (1..=10).contains(s))
                .ok_or_else(|| NodeError::input("steps", format!("expected 1 to 10, got {steps}")))?;
            let denoise = cx.float("denoise")?;
            if !(0.0..=1.0).contains(&denoise) {
                return Err(NodeError::input("denoise", format!("expected 0 to 1, got {denoise}")));
            }
            let sigmas = schedule::sd_turbo(&cx.get::<Model>("model")?.sampling, steps, denoise);
            sigmas_value(sigmas.map_err(|e| NodeError::input("model", e))?)
        })
}

/// `SplitSigmas`: splits a schedule in two at a step, for chaining samplers.
pub fn split_sigmas() -> NodeDef {
    NodeSchema::new(
        "SplitSigmas",
        "sampling/sigmas",
        "The first `step` steps and the rest; the σ at the split ends one and starts the other.",
    )
    .input(InputSpec::of("sigmas", ValueType::Sigmas).doc("The schedule."))
    .input(
        InputSpec::int("step")
            .default(0)
            .min(0.0)
            .doc("Where to split."),
    )
    .output("high_sigmas", ValueType::Sigmas, "Up to the split.")
    .output("low_sigmas", ValueType::Sigmas, "From the split.")
    .run(|cx| {
        let sigmas = sigma_values(cx.value("sigmas")?)?;
        let (high, low) =
            schedule::split_sigmas(&sigmas, cx.int("step")? as usize).map_err(NodeError::new)?;
        Ok((sigmas_value(high)?, sigmas_value(low)?))
    })
}

/// `FlipSigmas`: reverses a schedule (for inversion).
pub fn flip_sigmas() -> NodeDef {
    NodeSchema::new("FlipSigmas", "sampling/sigmas", "The schedule reversed, for inverting a sample back towards noise; a leading 0 becomes 1e-4.")
        .input(InputSpec::of("sigmas", ValueType::Sigmas).doc("The schedule."))
        .output("SIGMAS", ValueType::Sigmas, "Reversed.")
        .run(|cx| {
            let sigmas = sigma_values(cx.value("sigmas")?)?;
            sigmas_value(schedule::flip_sigmas(&sigmas).map_err(NodeError::new)?)
        })
}
