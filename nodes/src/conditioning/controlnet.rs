//! `ControlNetApply` and `ControlNetApplyAdvanced`.

use weft_core::{Define, InputSpec, NodeContext, NodeDef, NodeError, NodeSchema, Value, ValueType};
use weft_models::controlnet::apply_control;
use weft_sampling::Conditioning;

use crate::controlnet::ControlNetHandle;

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

/// The apply nodes' shared work: the ControlNet and image inputs, checked,
/// attached to each conditioning with `strength` over `[start, end]`.
fn apply(
    cx: &NodeContext<'_>,
    conds: &[&Conditioning],
    start: f64,
    end: f64,
) -> Result<Vec<Value>, NodeError> {
    let net = &cx.get::<ControlNetHandle>("control_net")?.0;
    let image = crate::image::image_input(cx, "image")?;
    net.check_image(image)
        .map_err(|e| NodeError::input("image", e))?;
    let out = apply_control(conds, net, image, cx.float("strength")?, start, end)
        .map_err(NodeError::new)?;
    Ok(out.into_iter().map(Value::handle).collect())
}

/// `ControlNetApply`: a ControlNet on one conditioning, for the whole
/// schedule.
pub fn control_net_apply() -> NodeDef {
    NodeSchema::new(
        "ControlNetApply",
        "conditioning/controlnet",
        "Applies a ControlNet to a conditioning for the whole schedule: at every step the ControlNet reads the control image and the latent, and the UNet adds its residuals (times strength) to its skip connections. Give the result as the positive conditioning; the negative stays uncontrolled. Applying a second ControlNet to the result stacks them.",
    )
    .input(InputSpec::of("conditioning", ValueType::Conditioning).doc("The text conditioning to control."))
    .input(InputSpec::of("control_net", ValueType::ControlNet).doc("The ControlNet (ControlNetLoader)."))
    .input(image_input_spec())
    .input(strength_input())
    .output("CONDITIONING", ValueType::Conditioning, "The conditioning with the ControlNet attached.")
    .run(|cx| apply(cx, &[cx.get::<Conditioning>("conditioning")?], 0.0, 1.0))
}

/// `ControlNetApplyAdvanced`: a ControlNet on positive and negative, within
/// a part of the schedule.
pub fn control_net_apply_advanced() -> NodeDef {
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
    .output("negative", ValueType::Conditioning, "The negative conditioning with the ControlNet attached.")
    .run(|cx| {
        let (start, end) = (cx.float("start_percent")?, cx.float("end_percent")?);
        if start > end {
            return Err(NodeError::input(
                "start_percent",
                format!("start_percent {start} is after end_percent {end}"),
            ));
        }
        let conds = [
            cx.get::<Conditioning>("positive")?,
            cx.get::<Conditioning>("negative")?,
        ];
        apply(cx, &conds, start, end)
    })
}
