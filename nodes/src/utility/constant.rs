use weft_core::{InputSpec, Node, NodeContext, NodeError, NodeSchema, Value, ValueType};

/// `IntConstant`, `FloatConstant`, `BoolConstant`, `StringConstant`: one
/// literal, named once and linked from many places.
pub struct Constant {
    schema: NodeSchema,
}

impl Constant {
    pub fn new(ty: ValueType) -> Self {
        let name = match ty {
            ValueType::Int => "IntConstant",
            ValueType::Float => "FloatConstant",
            ValueType::Bool => "BoolConstant",
            ValueType::String => "StringConstant",
            other => panic!("no constant node for {other}"),
        };
        let schema = NodeSchema::new(
            name,
            "utils",
            &format!("A {ty} value to link from several places."),
        )
        .input(InputSpec::of("value", ty).doc("The value."))
        .output("value", ty, "The same value.");
        Constant { schema }
    }
}

impl Node for Constant {
    fn schema(&self) -> &NodeSchema {
        &self.schema
    }

    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        Ok(vec![ctx.inputs.value("value")?.clone()])
    }
}
