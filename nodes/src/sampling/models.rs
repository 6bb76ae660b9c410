use std::sync::Arc;

use weft_core::{Define, InputSpec, LatentSpace, NodeDef, NodeError, NodeSchema, Value, ValueType};

use weft_sampling::exact::{ExactNetwork, GaussianMixture};
use weft_sampling::{schedule, Model, ModelSampling, NoiseLevels, Prediction};

/// `ExactGaussianModel`'s training β schedules (diffusers' names), with
/// the β range each reads (`squaredcos_cap_v2` reads none).
const BETA_SCHEDULES: [(&str, f64, f64); 3] = [
    ("scaled_linear", 0.00085, 0.012),
    ("linear", 1e-4, 0.02),
    ("squaredcos_cap_v2", 0.0, 0.0),
];

/// `ExactGaussianModel`: the exact denoiser of Gaussian-mixture data as a
/// MODEL, a model with a known answer, for checking samplers and guidance
/// from a graph.
pub fn exact_gaussian_model() -> NodeDef {
    NodeSchema::new("ExactGaussianModel", "model/testing", "A model whose denoiser is exact for 1-D Gaussian-mixture data (applied per element); class label k picks component k. For testing samplers and guidance against closed forms.")
        .input(InputSpec::string("means").default("-2,2").doc("Component means, comma-separated."))
        .input(InputSpec::string("stds").default("0.5,0.5").doc("Component standard deviations."))
        .input(InputSpec::string("weights").default("1,1").doc("Component weights."))
        .input(InputSpec::choice("parameterization", &["epsilon", "v_prediction", "sample", "flow"]).doc("What the network predicts; `flow` uses the linear flow-matching path."))
        .input(InputSpec::choice("beta_schedule", &BETA_SCHEDULES.map(|(name, ..)| name)).doc("The training β schedule, by diffusers' `beta_schedule` name: scaled_linear is Stable Diffusion's (√β evenly spaced, β from 0.00085 to 0.012; ComfyUI's `linear`), linear is DDPM's (β evenly spaced from 1e-4 to 0.02), squaredcos_cap_v2 is Nichol & Dhariwal's cosine ᾱ(t) = cos²((t + 0.008)/1.008 · π/2) with β capped at 0.999 (ComfyUI's `cosine`). `flow` has none."))
        .input(InputSpec::int("channels").default(0).range(0.0, 64.0).doc("Latent channels the model accepts; 0 accepts any."))
        .output("MODEL", ValueType::Model, "The model.")
        .run(|cx| {
            let data = GaussianMixture {
                means: numbers(cx.str("means")?, "means")?,
                stds: numbers(cx.str("stds")?, "stds")?,
                weights: numbers(cx.str("weights")?, "weights")?,
            };
            let k = data.means.len();
            if data.stds.len() != k || data.weights.len() != k {
                return Err(NodeError::new(format!(
                    "means, stds and weights need the same length (got {}, {}, {})",
                    k,
                    data.stds.len(),
                    data.weights.len()
                )));
            }
            if data.stds.iter().any(|s| *s <= 0.0) || data.weights.iter().any(|w| *w <= 0.0) {
                return Err(NodeError::new("stds and weights must be positive"));
            }
            let sampling = match cx.str("parameterization")? {
                "flow" => ModelSampling::flow(1000.0),
                name => {
                    let prediction = Prediction::parse(name).ok_or_else(|| {
                        NodeError::input("parameterization", format!("unknown {name:?}"))
                    })?;
                    let kind = cx.str("beta_schedule")?;
                    let (_, start, end) = BETA_SCHEDULES
                        .into_iter()
                        .find(|(name, ..)| *name == kind)
                        .ok_or_else(|| {
                            NodeError::input("beta_schedule", format!("unknown {kind:?}"))
                        })?;
                    let betas =
                        schedule::betas(kind, 1000, start, end).map_err(NodeError::new)?;
                    ModelSampling::discrete(&schedule::alphas_cumprod(&betas), prediction)
                }
            };
            Ok(Value::handle(Model {
                network: Arc::new(ExactNetwork {
                    data,
                    sampling: sampling.clone(),
                }),
                sampling,
                latent_space: LatentSpace::pixels(),
                latent_format: Default::default(),
                differential_diffusion: false,
                skip_layer_guidance: None,
                wrappers: Default::default(),
                latent_channels: match cx.int("channels")? {
                    0 => None,
                    c => Some(c as usize),
                },
            }))
        })
}

fn numbers(text: &str, input: &str) -> Result<Vec<f64>, NodeError> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| NodeError::input(input, format!("{s:?} is not a finite number")))
        })
        .collect()
}

/// The levels ComfyUI's `lcm` sampling keeps (`original_timesteps`).
const LCM_LEVELS: usize = 50;

/// `ModelSamplingDiscrete`: overrides a discrete model's parameterisation,
/// and optionally rescales its training schedule to zero terminal SNR (for
/// models fine-tuned that way). As in ComfyUI, each patch starts from the
/// model's own schedule, so patches replace rather than stack.
pub fn model_sampling_discrete() -> NodeDef {
    NodeSchema::new("ModelSamplingDiscrete", "model/sampling", "Sets what a discrete-time diffusion model predicts: eps (ε), v_prediction, lcm (ε with latent consistency's boundary condition, on 50 of the 1000 levels: timesteps 19, 39, …, 999) or x0; and optionally rescales its schedule to zero terminal SNR (Lin et al. 2023; the last ᾱ becomes ComfyUI's 4.897e-8, so σ_max ≈ 4519). Always starts from the model's own schedule.")
        .input(InputSpec::of("model", ValueType::Model).doc("A discrete-time diffusion model."))
        .input(InputSpec::choice("sampling", &["eps", "v_prediction", "lcm", "x0"]).doc("What the network predicts."))
        .input(InputSpec::bool("zsnr").default(false).doc("Rescale to zero terminal SNR."))
        .output("MODEL", ValueType::Model, "The patched model.")
        .run(|cx| {
            let mut model = cx.get::<Model>("model")?.clone();
            let NoiseLevels::Discrete { sigmas } = &model.sampling.levels else {
                return Err(NodeError::input(
                    "model",
                    "a flow-matching model has no discrete schedule to patch",
                ));
            };
            let training: Arc<[f64]> = match &model.sampling.training_sigmas {
                Some(t) => t.clone(),
                None => Arc::from(sigmas.as_slice()),
            };
            let name = cx.str("sampling")?;
            let prediction = match name {
                "eps" => Prediction::Epsilon,
                "v_prediction" => Prediction::V,
                "lcm" => Prediction::Lcm,
                "x0" => Prediction::Sample,
                other => {
                    return Err(NodeError::input(
                        "sampling",
                        format!("expected eps, v_prediction, lcm or x0, got {other:?}"),
                    ))
                }
            };
            let table = if cx.bool("zsnr")? {
                schedule::rescale_zero_terminal_snr_sigmas(&training)
                    .map_err(|e| NodeError::input("zsnr", e))?
            } else {
                training.to_vec()
            };
            let levels = table.len();
            let mut sampling = ModelSampling {
                prediction,
                levels: NoiseLevels::Discrete { sigmas: table },
                distilled_stride: None,
                training_sigmas: Some(training),
            };
            if prediction == Prediction::Lcm {
                sampling = sampling.distilled(LCM_LEVELS).ok_or_else(|| {
                    NodeError::input(
                        "model",
                        format!("lcm keeps {LCM_LEVELS} noise levels, the model has only {levels}"),
                    )
                })?;
            }
            model.sampling = sampling;
            Ok(Value::handle(model))
        })
}
