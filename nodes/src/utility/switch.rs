use weft_core::{Define, InputSpec, Inputs, NodeDef, NodeError, NodeSchema, ValueType};

/// `Switch`: chooses between two branches. Both are lazy: only the chosen
/// one is computed, and the other neither runs nor affects the cache key.
pub fn switch() -> NodeDef {
    NodeSchema::new(
        "Switch",
        "utils",
        "Passes on_true or on_false through; the unused branch is never computed.",
    )
    .input(InputSpec::bool("condition").doc("Which branch to use."))
    .input(
        InputSpec::of("on_true", ValueType::Any)
            .lazy()
            .doc("Used when condition is true."),
    )
    .input(
        InputSpec::of("on_false", ValueType::Any)
            .lazy()
            .doc("Used when condition is false."),
    )
    .output_same_as("value", "on_true", "The chosen value.")
    .run(|cx| Ok(cx.value(branch(cx.inputs)?)?.clone()))
    .lazy(|inputs| Ok(vec![branch(inputs)?.to_string()]))
}

fn branch(inputs: &Inputs) -> Result<&'static str, NodeError> {
    Ok(if inputs.bool("condition")? {
        "on_true"
    } else {
        "on_false"
    })
}
