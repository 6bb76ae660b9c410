//! Declaring a node type in one place, as weft's built-ins do: its schema
//! and its `run`, as one [`NodeDef`] value.
//!
//! ```
//! use weft_plugin_sdk::{Define, InputSpec, NodeDef, NodeSchema, Value, ValueType};
//!
//! fn double() -> NodeDef {
//!     NodeSchema::new("Double", "utils", "Twice the input.")
//!         .input(InputSpec::int("x").doc("The number."))
//!         .output("value", ValueType::Int, "2·x.")
//!         .run(|cx| Ok(Value::Int(2 * cx.int("x")?)))
//! }
//! # let _ = double();
//! ```
//!
//! Depends on `node` and `value`.

use weft_schema::{IntoOutputs, NodeSchema};

use crate::error::Result;
use crate::node::{Node, NodeContext};
use crate::value::Value;

type RunFn = dyn Fn(&NodeContext<'_>) -> Result<Vec<Value>> + Send + Sync;

/// A node type made of a schema and a closure; see [`Define`].
pub struct NodeDef {
    schema: NodeSchema,
    run: Box<RunFn>,
}

/// Turns a finished [`NodeSchema`] into a [`NodeDef`] with its `run`: the
/// closure reads its inputs from the context (`cx.float("amount")?`), may
/// use the host's services on it (`cx.progress(..)`), and returns what
/// [`IntoOutputs`] takes.
pub trait Define {
    fn run<O: IntoOutputs<Value>>(
        self,
        f: impl Fn(&NodeContext<'_>) -> Result<O> + Send + Sync + 'static,
    ) -> NodeDef;
}

impl Define for NodeSchema {
    fn run<O: IntoOutputs<Value>>(
        self,
        f: impl Fn(&NodeContext<'_>) -> Result<O> + Send + Sync + 'static,
    ) -> NodeDef {
        NodeDef {
            schema: self,
            run: Box::new(move |cx| f(cx).map(IntoOutputs::into_outputs)),
        }
    }
}

impl Node for NodeDef {
    fn schema(&self) -> &NodeSchema {
        &self.schema
    }

    fn run(&self, cx: &NodeContext<'_>) -> Result<Vec<Value>> {
        (self.run)(cx)
    }
}

/// A single value is one output (tuples and `Vec`s are covered in
/// `weft-schema`).
impl IntoOutputs<Value> for Value {
    fn into_outputs(self) -> Vec<Value> {
        vec![self]
    }
}

#[cfg(test)]
mod tests {
    use weft_plugin_abi as abi;
    use weft_schema::{InputSpec, ValueType};

    use super::*;
    use crate::context::Context;
    use crate::value::Inputs;

    fn int(i: i64) -> abi::Value {
        let mut v = abi::Value::NONE;
        v.tag = abi::VALUE_INT;
        v.int = i;
        v
    }

    /// Runs `node` on `values` without a host: the input readers and the
    /// output conversion need none.
    fn run(node: &dyn Node, values: &[abi::Value]) -> Result<Vec<Value>> {
        let cx = NodeContext::new(
            Context::new(std::ptr::null()),
            Inputs::new(node.schema(), values),
        );
        node.run(&cx)
    }

    fn divmod() -> NodeDef {
        NodeSchema::new("DivMod", "utils", "Quotient and remainder.")
            .input(InputSpec::int("a"))
            .input(InputSpec::int("b").optional())
            .output("quotient", ValueType::Int, "")
            .output("remainder", ValueType::Int, "")
            .run(|cx| {
                let b = if cx.has("b") { cx.int("b")? } else { 1 };
                if b == 0 {
                    return Err("division by zero".into());
                }
                let a = cx.int("a")?;
                Ok((Value::Int(a / b), Value::Int(a % b)))
            })
    }

    fn ints(values: Vec<Value>) -> Vec<i64> {
        values
            .into_iter()
            .map(|v| match v {
                Value::Int(i) => i,
                _ => panic!("not an INT"),
            })
            .collect()
    }

    #[test]
    fn a_defined_node_reads_its_inputs_from_the_context_and_returns_a_tuple() {
        let node = divmod();
        assert_eq!(node.schema().type_name, "DivMod");
        assert_eq!(ints(run(&node, &[int(7), int(2)]).unwrap()), [3, 1]);
        assert_eq!(
            ints(run(&node, &[int(7), abi::Value::NONE]).unwrap()),
            [7, 0]
        );
        let e = run(&node, &[int(7), int(0)]).err().unwrap();
        assert_eq!(e.0, "division by zero");
    }

    #[test]
    fn a_missing_or_mistyped_input_is_an_error_naming_it() {
        let node = divmod();
        let e = run(&node, &[abi::Value::NONE, int(1)]).err().unwrap();
        assert_eq!(e.0, "input `a` is absent");
        let mut float = abi::Value::NONE;
        float.tag = abi::VALUE_FLOAT;
        let e = run(&node, &[float, int(1)]).err().unwrap();
        assert_eq!(e.0, "input `a`: expected INT");
    }

    #[test]
    fn every_output_shape_becomes_a_list() {
        assert!(IntoOutputs::<Value>::into_outputs(()).is_empty());
        assert_eq!(ints(Value::Int(1).into_outputs()), [1]);
        assert_eq!(
            ints(vec![Value::Int(1), Value::Int(2)].into_outputs()),
            [1, 2]
        );
        let three = (Value::Int(1), Value::Int(2), Value::Int(3)).into_outputs();
        assert_eq!(ints(three), [1, 2, 3]);
    }
}
