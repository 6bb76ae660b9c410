use std::sync::Arc;

use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

use super::run::sample;
use super::schedules::model_sigmas;
use weft_sampling::guidance::{Cfg, CfgConvention};
use weft_sampling::handles::{GuiderHandle, NoiseHandle, SamplerHandle};
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
            let model = Arc::new(cx.get::<Model>("model")?.clone());
            let w = cx.float("cfg")?;
            if !w.is_finite() {
                return Err(NodeError::input("cfg", "guidance scale must be finite"));
            }
            let sigmas = model_sigmas(
                &model,
                cx.str("scheduler")?,
                cx.int("steps")? as usize,
                cx.float("denoise")?,
            )?;
            let name = cx.str("sampler_name")?;
            let sampler = sampler_by_name(name, SamplerOptions::default()).ok_or_else(|| {
                NodeError::input("sampler_name", format!("unknown sampler {name:?}"))
            })?;
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
            let noise = NoiseHandle {
                seed: Some(cx.int("seed")? as u64),
            };
            let (out, _) = sample(
                cx,
                &noise,
                &guider,
                &sampler,
                &sigmas,
                cx.latent("latent_image")?,
            )?;
            Ok(Value::Latent(Arc::new(out)))
        })
}
