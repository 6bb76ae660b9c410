use std::sync::Arc;

use weft_core::{Define, InputSpec, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType};

use weft_models::mnist::classifier::ClassifierHandle;
use weft_sampling::guidance::{Cfg, CfgConvention, ClassifierGuided, Unguided};
use weft_sampling::handles::GuiderHandle;
use weft_sampling::{Conditioning, Model};

fn model(cx: &NodeContext<'_>) -> Result<Arc<Model>, NodeError> {
    Ok(Arc::new(cx.get::<Model>("model")?.clone()))
}

fn conditioning(cx: &NodeContext<'_>, name: &str) -> Result<Conditioning, NodeError> {
    Ok(cx.get::<Conditioning>(name)?.clone())
}

/// `CFGGuider`: classifier-free guidance, with rescale, norm rescale and a
/// σ interval.
pub fn cfg_guider() -> NodeDef {
    NodeSchema::new("CFGGuider", "sampling/guiders", "Classifier-free guidance in one batched forward (the unconditional pass is skipped when guidance is off). `convention` picks how cfg is read: interpolate (1−w)·u(∅)+w·u(y), w = 1 is unguided; extrapolate (1+w)·ε(y)−w·ε(∅), w = 0 is unguided.")
        .input(InputSpec::of("model", ValueType::Model).doc("The model."))
        .input(InputSpec::of("positive", ValueType::Conditioning).doc("What to generate."))
        .input(InputSpec::of("negative", ValueType::Conditioning).doc("What to steer away from (∅ for plain CFG)."))
        .input(InputSpec::float("cfg").default(7.5).range(-100.0, 100.0).step(0.1).doc("Guidance weight w."))
        .input(InputSpec::choice("convention", &CfgConvention::NAMES).doc("How `cfg` is read."))
        .input(InputSpec::float("guidance_rescale").default(0.0).range(0.0, 1.0).doc("φ: blend towards the prediction rescaled to the conditional's std (Lin et al.)."))
        .input(InputSpec::bool("norm_rescale").default(false).doc("Scale the guided prediction to the conditional prediction's norm."))
        .input(InputSpec::float("sigma_low").default(0.0).min(0.0).doc("Guide only at σ ≥ this."))
        .input(InputSpec::float("sigma_high").default(1e9).min(0.0).doc("Guide only at σ ≤ this."))
        .output("GUIDER", ValueType::Guider, "The guided denoiser.")
        .run(|cx| {
            let w = cx.float("cfg")?;
            if !w.is_finite() {
                return Err(NodeError::input("cfg", "guidance weight must be finite"));
            }
            let convention = CfgConvention::parse(cx.str("convention")?)
                .ok_or_else(|| NodeError::input("convention", "unknown convention"))?;
            let (low, high) = (cx.float("sigma_low")?, cx.float("sigma_high")?);
            if low > high {
                return Err(NodeError::input(
                    "sigma_low",
                    format!("sigma_low {low} is above sigma_high {high}"),
                ));
            }
            let model = model(cx)?;
            let cfg = Cfg {
                model: model.clone(),
                positive: conditioning(cx, "positive")?,
                negative: conditioning(cx, "negative")?,
                scale: convention.scale(w),
                rescale: cx.float("guidance_rescale")?,
                norm_rescale: cx.bool("norm_rescale")?,
                interval: (low > 0.0 || high < 1e9).then_some((low, high)),
            };
            Ok(Value::handle(GuiderHandle {
                name: format!("CFG(w={w})"),
                denoiser: Arc::new(cfg),
                model: Some(model),
            }))
        })
}

/// `BasicGuider`: the model under one conditioning, unguided.
pub fn basic_guider() -> NodeDef {
    NodeSchema::new(
        "BasicGuider",
        "sampling/guiders",
        "No guidance: the model under one conditioning (one forward per step).",
    )
    .input(InputSpec::of("model", ValueType::Model).doc("The model."))
    .input(InputSpec::of("conditioning", ValueType::Conditioning).doc("The conditioning."))
    .output("GUIDER", ValueType::Guider, "The denoiser.")
    .run(|cx| {
        let model = model(cx)?;
        let guider = Unguided {
            model: model.clone(),
            conditioning: conditioning(cx, "conditioning")?,
        };
        Ok(Value::handle(GuiderHandle {
            name: "unguided".into(),
            denoiser: Arc::new(guider),
            model: Some(model),
        }))
    })
}

/// `ClassifierGuidance`'s `model_conditioning` choices.
const MODEL_CONDITIONING: [&str; 2] = ["unconditional", "positive"];

/// `ClassifierGuidance`: classifier guidance with a noise-conditional
/// classifier.
pub fn classifier_guidance() -> NodeDef {
    NodeSchema::new("ClassifierGuidance", "sampling/guiders", "Classifier guidance (Dhariwal & Nichol): the score gains scale·∇ₓ log p(y | x_σ), the gradient of a noise-conditional classifier taken with autograd at every step. On the unconditional model, scale s is the explicit-classifier counterpart of CFG at scale s.")
        .input(InputSpec::of("model", ValueType::Model).doc("The model."))
        .input(InputSpec::of("classifier", ValueType::Classifier).doc("A noise-conditional classifier (ClassifierLoader)."))
        .input(InputSpec::of("positive", ValueType::Conditioning).doc("Class labels to steer towards."))
        .input(InputSpec::float("scale").default(3.0).range(0.0, 100.0).step(0.1).doc("Guidance scale (0 = none)."))
        .input(InputSpec::choice("model_conditioning", &MODEL_CONDITIONING).doc("Run the model unconditionally (∅, the textbook form) or on `positive` too."))
        .output("GUIDER", ValueType::Guider, "The guided denoiser.")
        .run(|cx| {
            let classifier = cx.get::<ClassifierHandle>("classifier")?.0.clone();
            if !classifier.config().noise_conditional {
                return Err(NodeError::input(
                    "classifier",
                    "needs a noise-conditional classifier (trained with `noise_conditional: true`); \
                     this one only knows clean images",
                ));
            }
            let positive = conditioning(cx, "positive")?;
            let classes = classifier.config().num_classes as u32;
            let labels = positive
                .labels
                .as_ref()
                .ok_or_else(|| NodeError::input("positive", "needs class labels (ClassLabel)"))?
                .iter()
                .map(|l| match l {
                    Some(k) if *k < classes => Ok(*k),
                    Some(k) => Err(NodeError::input(
                        "positive",
                        format!("label {k} is out of range for a {classes}-class classifier"),
                    )),
                    None => Err(NodeError::input(
                        "positive",
                        "the null class ∅ cannot be a classifier-guidance target",
                    )),
                })
                .collect::<Result<Vec<u32>, NodeError>>()?;
            let model_conditioning = match cx.str("model_conditioning")? {
                "positive" => positive.clone(),
                _ => Conditioning::labels(vec![None]),
            };
            let scale = cx.float("scale")?;
            let model = model(cx)?;
            let guider = ClassifierGuided {
                model: model.clone(),
                conditioning: model_conditioning,
                classifier,
                labels,
                scale,
            };
            Ok(Value::handle(GuiderHandle {
                name: format!("classifier guidance (scale {scale})"),
                denoiser: Arc::new(guider),
                model: Some(model),
            }))
        })
}
