use weft_core::{InputSpec, Inputs, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

/// Chooses between two branches. Both are lazy: only the chosen one is
/// computed, and the other neither runs nor affects the cache key.
pub struct Switch {
    schema: NodeSchema,
}

impl Switch {
    pub fn new() -> Self {
        let schema = NodeSchema::new(
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
        .output_same_as("value", "on_true", "The chosen value.");
        Switch { schema }
    }

    fn branch(inputs: &Inputs) -> Result<&'static str, NodeError> {
        Ok(if inputs.bool("condition")? {
            "on_true"
        } else {
            "on_false"
        })
    }
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for Switch {
    fn schema(&self) -> &NodeSchema {
        &self.schema
    }

    fn needed_lazy(&self, inputs: &Inputs) -> Result<Vec<String>, NodeError> {
        Ok(vec![Self::branch(inputs)?.to_string()])
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let branch = Self::branch(ctx.inputs)?;
        Ok(vec![ctx.inputs.value(branch)?.clone()])
    }
}
