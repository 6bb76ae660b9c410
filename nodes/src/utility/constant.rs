use weft_core::{Define, InputSpec, NodeDef, NodeSchema, ValueType};

/// `IntConstant`, `FloatConstant`, `BoolConstant`, `StringConstant`: one
/// literal, named once and linked from many places.
pub fn constant(name: &str, ty: ValueType) -> NodeDef {
    NodeSchema::new(
        name,
        "utils",
        &format!("A {ty} value to link from several places."),
    )
    .input(InputSpec::of("value", ty).doc("The value."))
    .output("value", ty, "The same value.")
    .run(|cx| Ok(cx.value("value")?.clone()))
}
