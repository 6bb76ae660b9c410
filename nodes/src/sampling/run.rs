use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use weft_core::{
    Define, InputSpec, Latent, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType,
};

use super::preview::Previewer;
use weft_sampling::handles::{GuiderHandle, NoiseHandle, SamplerHandle};
use weft_sampling::inpaint::Masked;
use weft_sampling::{seeded_noise, Denoiser, Path, SampleContext, SeededSteps};

/// Checks a σ schedule before any model time is spent on it.
pub fn check_sigmas(sigmas: &[f64]) -> Result<(), NodeError> {
    let fail = |m: String| Err(NodeError::input("sigmas", m));
    if sigmas.len() < 2 {
        return fail(format!(
            "needs at least one step (two sigmas), got {}",
            sigmas.len()
        ));
    }
    if let Some(i) = sigmas.iter().position(|s| !s.is_finite() || *s < 0.0) {
        return fail(format!(
            "sigma {i} is {}, expected a finite value ≥ 0",
            sigmas[i]
        ));
    }
    if let Some(i) = sigmas.windows(2).position(|w| w[1] > w[0]) {
        return fail(format!(
            "sigmas must not increase, but sigma {} ({}) > sigma {i} ({})",
            i + 1,
            sigmas[i + 1],
            sigmas[i]
        ));
    }
    if sigmas[0] == sigmas[sigmas.len() - 1] {
        return fail("sigmas do not decrease at all".into());
    }
    Ok(())
}

/// Remembers the last denoised estimate, for the `denoised_output`.
struct Recording<'a> {
    inner: &'a dyn Denoiser,
    last: Mutex<Option<Tensor>>,
}

impl Denoiser for Recording<'_> {
    fn denoise(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let d = self.inner.denoise(x, sigma)?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(d.clone());
        Ok(d)
    }

    fn path(&self) -> Path {
        self.inner.path()
    }
}

/// `message` without a leading "`name`: " of one of `names`: a plugin's
/// guider or sampler starts its errors with its own name, which the
/// "sampler with guider:" context already gives, so it is said once.
fn unprefixed<'a>(message: &'a str, names: &[&str]) -> &'a str {
    names
        .iter()
        .find_map(|name| message.strip_prefix(name)?.strip_prefix(": "))
        .unwrap_or(message)
}

/// Noises `latent` to `sigmas[0]`, runs the sampler, and returns the sample
/// and the last denoised estimate. Without a noise seed, the stochastic
/// samplers' step noise uses seed 0 (ComfyUI's `DisableNoise`).
pub fn sample(
    ctx: &NodeContext<'_>,
    noise: &NoiseHandle,
    guider: &GuiderHandle,
    sampler: &SamplerHandle,
    sigmas: &[f64],
    latent: &Latent,
) -> Result<(Latent, Latent), NodeError> {
    let seeds = Seeds {
        initial: noise.seed,
        steps: noise.seed.unwrap_or(0),
    };
    sample_seeded(ctx, seeds, guider, sampler, sigmas, latent)
}

/// The seeds of one sampling run.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    /// The noise added at σ[0]; `None` starts from the latent as it is.
    pub initial: Option<u64>,
    /// The fresh noise of stochastic steps, seeded apart from the initial
    /// noise: ComfyUI's KSamplers seed it with their seed even when they
    /// add no initial noise.
    pub steps: u64,
}

/// [`sample`] with the initial and step noise seeded separately.
pub fn sample_seeded(
    ctx: &NodeContext<'_>,
    seeds: Seeds,
    guider: &GuiderHandle,
    sampler: &SamplerHandle,
    sigmas: &[f64],
    latent: &Latent,
) -> Result<(Latent, Latent), NodeError> {
    check_sigmas(sigmas)?;
    if let Some(model) = &guider.model {
        if model.latent_space != latent.space {
            return Err(NodeError::input(
                "latent_image",
                format!(
                    "the latent is in space `{}`, the model works in `{}`",
                    latent.space.0, model.latent_space.0
                ),
            ));
        }
        let channels = latent
            .samples
            .dim(1)
            .map_err(|e| NodeError::input("latent_image", e.to_string()))?;
        if let Some(expected) = model.latent_channels.filter(|c| *c != channels) {
            return Err(NodeError::input(
                "latent_image",
                format!(
                    "the latent has {channels} channels, the model expects {expected} (shape {:?})",
                    latent.samples.dims()
                ),
            ));
        }
    }
    let path = guider.denoiser.path();
    let format = guider
        .model
        .as_ref()
        .map(|m| m.latent_format)
        .unwrap_or_default();
    let samples = format.process_in(&latent.samples.to_dtype(candle_core::DType::F32)?)?;
    let noise = match seeds.initial {
        Some(seed) => seeded_noise(seed, samples.dims())?,
        None => samples.zeros_like()?,
    };
    let previewer = match samples.dims() {
        [_, channels, _, _] => Previewer::new(ctx, &format, *channels),
        _ => None,
    };
    let x = match seeds.initial {
        Some(_) => path.noise(sigmas[0], &noise, &samples)?,
        None => samples.clone(),
    };
    // Under a noise mask, cells outside it keep the latent (ComfyUI's
    // KSamplerX0Inpaint), with differential diffusion if the model asks.
    let masked = match &latent.noise_mask {
        Some(mask) => {
            let differential = guider
                .model
                .as_ref()
                .filter(|m| m.differential_diffusion)
                .map(|m| (&m.sampling, sigmas));
            let inner = guider.denoiser.as_ref();
            Some(
                Masked::new(inner, mask, samples, noise, differential)
                    .map_err(|e| NodeError::input("latent_image", e.to_string()))?,
            )
        }
        None => None,
    };
    let mut steps = SeededSteps::new(seeds.steps);
    let recording = Recording {
        inner: match &masked {
            Some(m) => m,
            None => guider.denoiser.as_ref(),
        },
        last: Mutex::new(None),
    };
    // Previews read the last denoised estimate after a step; they never
    // touch what the sampler computes.
    let mut progress = |done: usize, total: usize| {
        ctx.progress(done as u64, total as u64);
        if let Some(previewer) = &previewer {
            let last = recording
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            previewer.step(ctx, last, done as u64, total as u64);
        }
        ctx.check_cancelled()
            .map_err(|e| candle_core::Error::Msg(e.message))
    };
    let mut sample_ctx = SampleContext {
        noise: &mut steps,
        progress: &mut progress,
    };
    let out = sampler
        .sampler
        .sample(&recording, x, sigmas, &mut sample_ctx)
        .map_err(|e| {
            if ctx.cancel_token().is_cancelled() {
                NodeError::cancelled()
            } else {
                NodeError::new(format!(
                    "{} with {}: {}",
                    sampler.name,
                    guider.name,
                    unprefixed(&e.to_string(), &[&sampler.name, &guider.name])
                ))
            }
        })?;
    if let Some(model) = &guider.model {
        model.network.release_pages();
    }
    let denoised = recording
        .last
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(|| out.clone());
    let wrap = |samples: Tensor| -> Result<Latent, NodeError> {
        Ok(Latent {
            samples: format.process_out(&samples)?,
            space: latent.space.clone(),
            noise_mask: latent.noise_mask.clone(),
        })
    };
    Ok((wrap(out)?, wrap(denoised)?))
}

/// `SamplerCustomAdvanced`: NOISE + GUIDER + SAMPLER + SIGMAS → a sampled
/// latent.
pub fn sampler_custom_advanced() -> NodeDef {
    NodeSchema::new(
        "SamplerCustomAdvanced",
        "sampling",
        "Samples a latent with any noise, guider, sampler and σ schedule.",
    )
    .input(InputSpec::of("noise", ValueType::Noise).doc("Initial noise."))
    .input(InputSpec::of("guider", ValueType::Guider).doc("The guided model."))
    .input(InputSpec::of("sampler", ValueType::Sampler).doc("The algorithm."))
    .input(InputSpec::of("sigmas", ValueType::Sigmas).doc("The σ schedule, high to low."))
    .input(
        InputSpec::of("latent_image", ValueType::Latent)
            .doc("The starting latent (zeros for text-to-image)."),
    )
    .output("output", ValueType::Latent, "The sample at the last σ.")
    .output(
        "denoised_output",
        ValueType::Latent,
        "The last denoised estimate.",
    )
    .heavy()
    .run(|cx| {
        let (out, denoised) = sample(
            cx,
            cx.get::<NoiseHandle>("noise")?,
            cx.get::<GuiderHandle>("guider")?,
            cx.get::<SamplerHandle>("sampler")?,
            &sigma_values(cx.value("sigmas")?)?,
            cx.latent("latent_image")?,
        )?;
        Ok((
            Value::Latent(Arc::new(out)),
            Value::Latent(Arc::new(denoised)),
        ))
    })
}

/// A SIGMAS tensor as f64 values.
pub fn sigma_values(value: &Value) -> Result<Vec<f64>, NodeError> {
    match value {
        Value::Sigmas(t) => Ok(t
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1()?),
        other => Err(NodeError::input(
            "sigmas",
            format!("expected SIGMAS, found {}", other.ty()),
        )),
    }
}
