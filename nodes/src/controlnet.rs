//! The ControlNet nodes: `ControlNetLoader`, `ControlNetApply` and
//! `ControlNetApplyAdvanced`.

use std::sync::Arc;

use candle_core::Tensor;

use weft_core::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeSchema, Object, Value, ValueType,
};

use crate::sampling_nodes::handles::{handle, value};
use weft_models::controlnet::apply_control;
use weft_models::controlnet::ControlNet;
use weft_sampling::Conditioning;

/// CONTROL_NET: a loaded ControlNet.
#[derive(Clone, Debug)]
pub struct ControlNetHandle(pub Arc<ControlNet>);

impl Object for ControlNetHandle {
    fn size_bytes(&self) -> usize {
        self.0.size_bytes()
    }
}

impl weft_core::Handle for ControlNetHandle {
    const TYPE: weft_core::ValueType = weft_core::ValueType::ControlNet;
}

fn image_input(inputs: &Inputs) -> std::result::Result<Tensor, NodeError> {
    match inputs.value("image")? {
        Value::Image(t) => Ok(t.clone()),
        other => Err(NodeError::input(
            "image",
            format!("expected IMAGE, found {}", other.ty()),
        )),
    }
}

fn conditioning<'a>(
    inputs: &'a Inputs,
    name: &str,
) -> std::result::Result<&'a Conditioning, NodeError> {
    handle::<Conditioning>(inputs, name, ValueType::Conditioning)
}

fn strength_input() -> InputSpec {
    InputSpec::float("strength")
        .default(1.0)
        .range(0.0, 10.0)
        .step(0.01)
        .doc("Multiplier of the ControlNet's residuals; 0 leaves the conditioning unchanged.")
}

fn image_input_spec() -> InputSpec {
    InputSpec::of("image", ValueType::Image).doc(
        "The control image (an edge map, depth map, pose…) in [0, 1], already preprocessed. It is centre-cropped and resized (nearest-exact) to 8× the latent size if it is not that size; a batch of images is spread over the latent batch (item i uses image i mod count).",
    )
}

/// Applies a ControlNet to one conditioning.
/// The apply nodes' shared work: the ControlNet and image inputs, checked,
/// attached to each conditioning with `strength` over `[start, end]`.
fn apply_node(
    i: &Inputs,
    conds: &[&Conditioning],
    start: f64,
    end: f64,
) -> std::result::Result<Vec<Value>, NodeError> {
    let net = handle::<ControlNetHandle>(i, "control_net", ValueType::ControlNet)?
        .0
        .clone();
    let image = image_input(i)?;
    net.check_image(&image)
        .map_err(|e| NodeError::input("image", e))?;
    let out = apply_control(conds, &net, &image, i.float("strength")?, start, end)
        .map_err(NodeError::new)?;
    Ok(out
        .into_iter()
        .map(|c| value(ValueType::Conditioning, c))
        .collect())
}

pub struct ControlNetApply(NodeSchema);

impl ControlNetApply {
    pub fn new() -> Self {
        ControlNetApply(
            NodeSchema::new(
                "ControlNetApply",
                "conditioning/controlnet",
                "Applies a ControlNet to a conditioning for the whole schedule: at every step the ControlNet reads the control image and the latent, and the UNet adds its residuals (times strength) to its skip connections. Give the result as the positive conditioning; the negative stays uncontrolled. Applying a second ControlNet to the result stacks them.",
            )
            .input(InputSpec::of("conditioning", ValueType::Conditioning).doc("The text conditioning to control."))
            .input(InputSpec::of("control_net", ValueType::ControlNet).doc("The ControlNet (ControlNetLoader)."))
            .input(image_input_spec())
            .input(strength_input())
            .output("CONDITIONING", ValueType::Conditioning, "The conditioning with the ControlNet attached."),
        )
    }
}

impl Default for ControlNetApply {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ControlNetApply {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> std::result::Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        apply_node(i, &[conditioning(i, "conditioning")?], 0.0, 1.0)
    }
}

/// Applies a ControlNet to positive and negative, within a part of the schedule.
pub struct ControlNetApplyAdvanced(NodeSchema);

impl ControlNetApplyAdvanced {
    pub fn new() -> Self {
        ControlNetApplyAdvanced(
            NodeSchema::new(
                "ControlNetApplyAdvanced",
                "conditioning/controlnet",
                "Applies a ControlNet to both the positive and the negative conditioning (as ComfyUI and diffusers do), only between start_percent and end_percent of the schedule: at model timestep t control is on when (1 − end)·999 ≤ t ≤ (1 − start)·999. Positive and negative share one ControlNet pass per step. Applying a second ControlNet to the results stacks them.",
            )
            .input(InputSpec::of("positive", ValueType::Conditioning).doc("The positive conditioning."))
            .input(InputSpec::of("negative", ValueType::Conditioning).doc("The negative conditioning."))
            .input(InputSpec::of("control_net", ValueType::ControlNet).doc("The ControlNet (ControlNetLoader)."))
            .input(image_input_spec())
            .input(strength_input())
            .input(
                InputSpec::float("start_percent")
                    .default(0.0)
                    .range(0.0, 1.0)
                    .step(0.001)
                    .doc("Where control starts, as a fraction of the schedule from the noisiest end (0 = from the first step)."),
            )
            .input(
                InputSpec::float("end_percent")
                    .default(1.0)
                    .range(0.0, 1.0)
                    .step(0.001)
                    .doc("Where control ends (1 = to the last step)."),
            )
            .output("positive", ValueType::Conditioning, "The positive conditioning with the ControlNet attached.")
            .output("negative", ValueType::Conditioning, "The negative conditioning with the ControlNet attached."),
        )
    }
}

impl Default for ControlNetApplyAdvanced {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for ControlNetApplyAdvanced {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> std::result::Result<Vec<Value>, NodeError> {
        let i = ctx.inputs;
        let (start, end) = (i.float("start_percent")?, i.float("end_percent")?);
        if start > end {
            return Err(NodeError::input(
                "start_percent",
                format!("start_percent {start} is after end_percent {end}"),
            ));
        }
        let conds = [conditioning(i, "positive")?, conditioning(i, "negative")?];
        apply_node(i, &conds, start, end)
    }
}

/// Registers the ControlNet nodes.
pub fn register(registry: &mut weft_core::Registry) -> std::result::Result<(), String> {
    registry.register(ControlNetApply::new())?;
    registry.register(ControlNetApplyAdvanced::new())?;
    Ok(())
}
