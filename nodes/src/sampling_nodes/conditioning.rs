use weft_core::{InputSpec, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

use super::handles::value;
use crate::sampling::Conditioning;

/// Class-label conditioning for class-conditional models.
pub struct ClassLabel(NodeSchema);

impl ClassLabel {
    pub fn new() -> Self {
        ClassLabel(
            NodeSchema::new("ClassLabel", "conditioning", "Conditions on class labels: a comma-separated list, one per batch item (a single label applies to the whole batch); `none` is the null class ∅ used for unconditional passes.")
                .input(InputSpec::string("labels").default("0").doc("e.g. `7`, `0,1,2` or `none`."))
                .output("CONDITIONING", ValueType::Conditioning, "The labels."),
        )
    }
}

impl Node for ClassLabel {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let labels = ctx
            .inputs
            .str("labels")?
            .split(',')
            .map(|l| match l.trim() {
                "none" | "∅" => Ok(None),
                l => l.parse::<u32>().map(Some).map_err(|_| {
                    NodeError::input("labels", format!("{l:?} is not a class number or `none`"))
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vec![value(
            ValueType::Conditioning,
            Conditioning::labels(labels),
        )])
    }
}
