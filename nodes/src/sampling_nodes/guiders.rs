use std::sync::Arc;

use weft_core::{InputSpec, Inputs, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

use super::handles::{handle, value, GuiderHandle};
use weft_models::mnist::classifier::ClassifierHandle;
use weft_sampling::guidance::{Cfg, CfgConvention, ClassifierGuided, Unguided};
use weft_sampling::{Conditioning, Model};

fn model(inputs: &Inputs) -> Result<Arc<Model>, NodeError> {
    Ok(Arc::new(
        handle::<Model>(inputs, "model", ValueType::Model)?.clone(),
    ))
}

fn conditioning(inputs: &Inputs, name: &str) -> Result<Conditioning, NodeError> {
    Ok(handle::<Conditioning>(inputs, name, ValueType::Conditioning)?.clone())
}

/// Classifier-free guidance, with rescale, norm rescale and a σ interval.
pub struct CfgGuider(NodeSchema);

impl CfgGuider {
    pub fn new() -> Self {
        CfgGuider(
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
                .output("GUIDER", ValueType::Guider, "The guided denoiser."),
        )
    }
}

impl Node for CfgGuider {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        let w = i.float("cfg")?;
        if !w.is_finite() {
            return Err(NodeError::input("cfg", "guidance weight must be finite"));
        }
        let convention = CfgConvention::parse(i.str("convention")?)
            .ok_or_else(|| NodeError::input("convention", "unknown convention"))?;
        let (low, high) = (i.float("sigma_low")?, i.float("sigma_high")?);
        if low > high {
            return Err(NodeError::input(
                "sigma_low",
                format!("sigma_low {low} is above sigma_high {high}"),
            ));
        }
        let model = model(i)?;
        let cfg = Cfg {
            model: model.clone(),
            positive: conditioning(i, "positive")?,
            negative: conditioning(i, "negative")?,
            scale: convention.scale(w),
            rescale: i.float("guidance_rescale")?,
            norm_rescale: i.bool("norm_rescale")?,
            interval: (low > 0.0 || high < 1e9).then_some((low, high)),
        };
        Ok(vec![value(
            ValueType::Guider,
            GuiderHandle {
                name: format!("CFG(w={w})"),
                denoiser: Arc::new(cfg),
                model: Some(model),
            },
        )])
    }
}

/// The model under one conditioning, unguided.
pub struct BasicGuider(NodeSchema);

impl BasicGuider {
    pub fn new() -> Self {
        BasicGuider(
            NodeSchema::new(
                "BasicGuider",
                "sampling/guiders",
                "No guidance: the model under one conditioning (one forward per step).",
            )
            .input(InputSpec::of("model", ValueType::Model).doc("The model."))
            .input(InputSpec::of("conditioning", ValueType::Conditioning).doc("The conditioning."))
            .output("GUIDER", ValueType::Guider, "The denoiser."),
        )
    }
}

impl Node for BasicGuider {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let model = model(ctx.inputs)?;
        let guider = Unguided {
            model: model.clone(),
            conditioning: conditioning(ctx.inputs, "conditioning")?,
        };
        Ok(vec![value(
            ValueType::Guider,
            GuiderHandle {
                name: "unguided".into(),
                denoiser: Arc::new(guider),
                model: Some(model),
            },
        )])
    }
}

/// Classifier guidance with a noise-conditional classifier.
pub struct ClassifierGuidance(NodeSchema);

impl ClassifierGuidance {
    pub const MODEL_CONDITIONING: [&'static str; 2] = ["unconditional", "positive"];

    pub fn new() -> Self {
        ClassifierGuidance(
            NodeSchema::new("ClassifierGuidance", "sampling/guiders", "Classifier guidance (Dhariwal & Nichol): the score gains scale·∇ₓ log p(y | x_σ), the gradient of a noise-conditional classifier taken with autograd at every step. On the unconditional model, scale s is the explicit-classifier counterpart of CFG at scale s.")
                .input(InputSpec::of("model", ValueType::Model).doc("The model."))
                .input(InputSpec::of("classifier", ValueType::Classifier).doc("A noise-conditional classifier (ClassifierLoader)."))
                .input(InputSpec::of("positive", ValueType::Conditioning).doc("Class labels to steer towards."))
                .input(InputSpec::float("scale").default(3.0).range(0.0, 100.0).step(0.1).doc("Guidance scale (0 = none)."))
                .input(InputSpec::choice("model_conditioning", &Self::MODEL_CONDITIONING).doc("Run the model unconditionally (∅, the textbook form) or on `positive` too."))
                .output("GUIDER", ValueType::Guider, "The guided denoiser."),
        )
    }
}

impl Node for ClassifierGuidance {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        let classifier = handle::<ClassifierHandle>(i, "classifier", ValueType::Classifier)?
            .0
            .clone();
        if !classifier.config().noise_conditional {
            return Err(NodeError::input(
                "classifier",
                "needs a noise-conditional classifier (trained with `noise_conditional: true`); \
                 this one only knows clean images",
            ));
        }
        let positive = conditioning(i, "positive")?;
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
        let model_conditioning = match i.str("model_conditioning")? {
            "positive" => positive.clone(),
            _ => Conditioning::labels(vec![None]),
        };
        let scale = i.float("scale")?;
        let model = model(i)?;
        let guider = ClassifierGuided {
            model: model.clone(),
            conditioning: model_conditioning,
            classifier,
            labels,
            scale,
        };
        Ok(vec![value(
            ValueType::Guider,
            GuiderHandle {
                name: format!("classifier guidance (scale {scale})"),
                denoiser: Arc::new(guider),
                model: Some(model),
            },
        )])
    }
}
