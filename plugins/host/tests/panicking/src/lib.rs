//! Nodes that panic: in `run`, and inside a guider the host calls while
//! sampling. The host must turn both into node errors and stay up.

use std::sync::Arc;

use weft_plugin_sdk::{
    export_plugin, Context, Guider, InputSpec, Node, NodeContext, NodeSchema, Path, Result, Tensor,
    Value, ValueType,
};

struct Panic(NodeSchema);

impl Node for Panic {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }
    fn run(&self, cx: &NodeContext<'_>) -> Result<Vec<Value>> {
        let value = cx.int("value")?;
        panic!("value {value} is not welcome here");
    }
}

struct PanickingGuider(NodeSchema);

struct Bomb;

impl Guider for Bomb {
    fn denoise(&self, _ctx: &Context, _x: &Tensor, sigma: f64) -> Result<Tensor> {
        panic!("the guider blew up at sigma {sigma}");
    }
    fn path(&self) -> Path {
        Path::Flow
    }
}

impl Node for PanickingGuider {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }
    fn run(&self, _cx: &NodeContext<'_>) -> Result<Vec<Value>> {
        Ok(vec![Value::Guider(Arc::new(Bomb))])
    }
}

export_plugin! {
    name: "panicking",
    version: "0.0.0",
    nodes: [
        Panic(
            NodeSchema::new("Panic", "testing", "Panics in run.")
                .input(InputSpec::int("value"))
                .output("value", ValueType::Int, ""),
        ),
        PanickingGuider(
            NodeSchema::new("PanickingGuider", "testing", "A guider that panics when asked to denoise.")
                .output("GUIDER", ValueType::Guider, ""),
        ),
    ],
}
