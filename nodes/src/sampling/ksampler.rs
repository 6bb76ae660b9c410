use std::sync::Arc;

use weft_core::{Define, InputSpec, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::run::{sample_seeded, Seeds};
use super::schedules::model_sigmas;
use weft_sampling::guidance::{Cfg, CfgConvention};
use weft_sampling::handles::{GuiderHandle, SamplerHandle};
use weft_sampling::{
    sampler_by_name, sampler_names, schedule, Conditioning, Model, SamplerOptions,
};

/// `KSampler`: noise, CFG guidance, a named sampler and a named schedule in
/// one node.
pub fn ksampler() -> NodeDef {
    NodeSchema::new("KSampler", "sampling", "The all-in-one sampler: seeded noise, CFG (ComfyUI's convention: cfg 1 is unguided), a sampler and a schedule by name.")
        .input(InputSpec::of("model", ValueType::Model).doc("The model."))
        .input(InputSpec::int("seed").default(0).min(0.0).doc("Noise seed."))
        .input(InputSpec::int("steps").default(20).range(1.0, 10_000.0).doc("Sampling steps."))
        .input(InputSpec::float("cfg").default(7.5).range(-100.0, 100.0).step(0.1).doc("Guidance scale; 1 is unguided."))
        .input(InputSpec::choice("sampler_name", &sampler_names()).doc("The algorithm."))
        .input(InputSpec::choice("scheduler", schedule::scheduler_names()).doc("The σ schedule."))
        .input(InputSpec::of("positive", ValueType::Conditioning).doc("What to generate."))
        .input(InputSpec::of("negative", ValueType::Conditioning).doc("What to steer away from."))
        .input(InputSpec::of("latent_image", ValueType::Latent).doc("The starting latent."))
        .input(InputSpec::float("denoise").default(1.0).range(0.0, 1.0).step(0.01).doc("How much to change the latent (img2img)."))
        .output("LATENT", ValueType::Latent, "The sampled latent.")
        .heavy()
        .run(|cx| {
            common_ksampler(
                cx,
                Steps {
                    seed_input: "seed",
                    add_noise: true,
                    denoise: cx.float("denoise")?,
                    range: None,
                },
            )
        })
}

/// `KSamplerAdvanced`: KSampler over a step range of its schedule, with the
/// initial noise optional, so one schedule can be split between models
/// (SDXL base → refiner) without re-noising at the hand-off.
pub fn ksampler_advanced() -> NodeDef {
    NodeSchema::new("KSamplerAdvanced", "sampling", "KSampler over steps [start_at_step, end_at_step) of a `steps`-step schedule. A run that stops early ends at σ = 0 unless return_with_leftover_noise is enabled; a later run continues with add_noise disabled. No step in range: the latent is returned unchanged.")
        .input(InputSpec::of("model", ValueType::Model).doc("The model."))
        .input(InputSpec::choice("add_noise", &["enable", "disable"]).doc("Noise the latent to the first σ; disable to continue a run that returned its leftover noise."))
        .input(InputSpec::int("noise_seed").default(0).min(0.0).doc("Seed of the initial noise and of stochastic samplers' step noise."))
        .input(InputSpec::int("steps").default(20).range(1.0, 10_000.0).doc("Steps of the whole schedule."))
        .input(InputSpec::float("cfg").default(8.0).range(0.0, 100.0).step(0.1).doc("Guidance scale; 1 is unguided."))
        .input(InputSpec::choice("sampler_name", &sampler_names()).doc("The algorithm."))
        .input(InputSpec::choice("scheduler", schedule::scheduler_names()).doc("The σ schedule."))
        .input(InputSpec::of("positive", ValueType::Conditioning).doc("What to generate."))
        .input(InputSpec::of("negative", ValueType::Conditioning).doc("What to steer away from."))
        .input(InputSpec::of("latent_image", ValueType::Latent).doc("The starting latent."))
        .input(InputSpec::int("start_at_step").default(0).range(0.0, 10_000.0).doc("First step to run."))
        .input(InputSpec::int("end_at_step").default(10_000).range(0.0, 10_000.0).doc("Step to stop at; past `steps` runs to the end."))
        .input(InputSpec::choice("return_with_leftover_noise", &["disable", "enable"]).doc("When stopping early, keep the noise of the last σ instead of ending at σ = 0."))
        .output("LATENT", ValueType::Latent, "The sampled latent.")
        .heavy()
        .run(|cx| {
            let add_noise = enabled(cx, "add_noise")?;
            let leftover = enabled(cx, "return_with_leftover_noise")?;
            common_ksampler(
                cx,
                Steps {
                    seed_input: "noise_seed",
                    add_noise,
                    denoise: 1.0,
                    range: Some(StepRange {
                        start: step_input(cx, "start_at_step")?,
                        end: step_input(cx, "end_at_step")?,
                        force_full_denoise: !leftover,
                    }),
                },
            )
        })
}

/// An "enable"/"disable" choice.
fn enabled(cx: &NodeContext<'_>, name: &str) -> Result<bool, NodeError> {
    match cx.str(name)? {
        "enable" => Ok(true),
        "disable" => Ok(false),
        other => Err(NodeError::input(
            name,
            format!("expected \"enable\" or \"disable\", got {other:?}"),
        )),
    }
}

fn step_input(cx: &NodeContext<'_>, name: &str) -> Result<usize, NodeError> {
    let v = cx.int(name)?;
    usize::try_from(v).map_err(|_| NodeError::input(name, format!("expected a step ≥ 0, got {v}")))
}

/// How the KSamplers differ: ComfyUI's `common_ksampler` arguments.
struct Steps {
    seed_input: &'static str,
    add_noise: bool,
    denoise: f64,
    range: Option<StepRange>,
}

struct StepRange {
    start: usize,
    end: usize,
    force_full_denoise: bool,
}

/// ComfyUI's `common_ksampler`: the schedule for `steps` (and `denoise`),
/// cut to the step range, then CFG sampling from the seeded (or unnoised)
/// latent.
fn common_ksampler(cx: &NodeContext<'_>, how: Steps) -> Result<Value, NodeError> {
    let model = Arc::new(cx.get::<Model>("model")?.clone());
    let w = cx.float("cfg")?;
    if !w.is_finite() {
        return Err(NodeError::input("cfg", "guidance scale must be finite"));
    }
    let name = cx.str("sampler_name")?;
    let sampler = sampler_by_name(name, SamplerOptions::default())
        .ok_or_else(|| NodeError::input("sampler_name", format!("unknown sampler {name:?}")))?;
    let steps = cx.int("steps")?;
    let steps = usize::try_from(steps)
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| NodeError::input("steps", format!("expected at least 1, got {steps}")))?;
    let seed = cx.int(how.seed_input)?;
    let seed = u64::try_from(seed).map_err(|_| {
        NodeError::input(how.seed_input, format!("expected a seed ≥ 0, got {seed}"))
    })?;
    let latent = cx.latent("latent_image")?;
    let mut sigmas = model_sigmas(&model, cx.str("scheduler")?, steps, how.denoise)?;
    if let Some(r) = &how.range {
        match schedule::step_range(&sigmas, r.start, r.end, r.force_full_denoise) {
            Some(cut) => sigmas = cut,
            None => return Ok(cx.value("latent_image")?.clone()),
        }
    }
    let cfg = Cfg {
        model: model.clone(),
        positive: cx.get::<Conditioning>("positive")?.clone(),
        negative: cx.get::<Conditioning>("negative")?.clone(),
        scale: CfgConvention::Interpolate.scale(w),
        rescale: 0.0,
        norm_rescale: false,
        interval: None,
    };
    let guider = GuiderHandle {
        name: format!("CFG(w={w})"),
        denoiser: Arc::new(cfg),
        model: Some(model),
    };
    let sampler = SamplerHandle {
        name: name.into(),
        sampler: Arc::from(sampler),
    };
    let seeds = Seeds {
        initial: how.add_noise.then_some(seed),
        steps: seed,
    };
    let (out, _) = sample_seeded(cx, seeds, &guider, &sampler, &sigmas, latent)?;
    Ok(Value::Latent(Arc::new(out)))
}
