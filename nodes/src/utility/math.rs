use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

const INT_OPS: [&str; 8] = ["add", "sub", "mul", "div", "mod", "min", "max", "pow"];
const FLOAT_OPS: [&str; 7] = ["add", "sub", "mul", "div", "min", "max", "pow"];
const COMPARISONS: [&str; 6] = ["eq", "ne", "lt", "le", "gt", "ge"];

/// `IntMath`: integer arithmetic. Overflow and division by zero are node
/// errors, never wraps.
pub fn int_math() -> NodeDef {
    NodeSchema::new(
        "IntMath",
        "utils",
        "Integer arithmetic: a <op> b. `div` rounds toward zero.",
    )
    .input(InputSpec::int("a").doc("Left operand."))
    .input(InputSpec::int("b").doc("Right operand."))
    .input(InputSpec::choice("op", &INT_OPS).doc("The operation."))
    .output("value", ValueType::Int, "The result.")
    .run(|cx| {
        let (a, b) = (cx.int("a")?, cx.int("b")?);
        let op = cx.str("op")?;
        let result = match op {
            "add" => a.checked_add(b),
            "sub" => a.checked_sub(b),
            "mul" => a.checked_mul(b),
            "div" | "mod" if b == 0 => return Err(NodeError::input("b", format!("{op} by zero"))),
            "div" => a.checked_div(b),
            "mod" => a.checked_rem_euclid(b),
            "min" => Some(a.min(b)),
            "max" => Some(a.max(b)),
            "pow" => u32::try_from(b).ok().and_then(|e| a.checked_pow(e)),
            other => return Err(NodeError::input("op", format!("unknown op {other:?}"))),
        };
        result.map(Value::Int).ok_or_else(|| {
            NodeError::new(format!(
                "{a} {op} {b} overflows or is undefined for integers"
            ))
        })
    })
}

/// `FloatMath`: floating-point arithmetic. A non-finite result is a node
/// error, so NaN cannot silently flow into a sampler.
pub fn float_math() -> NodeDef {
    NodeSchema::new("FloatMath", "utils", "Float arithmetic: a <op> b.")
        .input(InputSpec::float("a").doc("Left operand."))
        .input(InputSpec::float("b").doc("Right operand."))
        .input(InputSpec::choice("op", &FLOAT_OPS).doc("The operation."))
        .output("value", ValueType::Float, "The result.")
        .run(|cx| {
            let (a, b) = (cx.float("a")?, cx.float("b")?);
            let op = cx.str("op")?;
            let v = match op {
                "add" => a + b,
                "sub" => a - b,
                "mul" => a * b,
                "div" => a / b,
                "min" => a.min(b),
                "max" => a.max(b),
                "pow" => a.powf(b),
                other => return Err(NodeError::input("op", format!("unknown op {other:?}"))),
            };
            if !v.is_finite() {
                return Err(NodeError::new(format!("{a} {op} {b} is not finite")));
            }
            Ok(Value::Float(v))
        })
}

/// `Compare`: compares two numbers, giving the BOOLEAN a `Switch` needs.
pub fn compare() -> NodeDef {
    NodeSchema::new("Compare", "utils", "Compares two numbers: a <op> b.")
        .input(InputSpec::float("a").doc("Left operand."))
        .input(InputSpec::float("b").doc("Right operand."))
        .input(InputSpec::choice("op", &COMPARISONS).doc("eq, ne, lt, le, gt or ge."))
        .output("value", ValueType::Bool, "Whether the comparison holds.")
        .run(|cx| {
            let (a, b) = (cx.float("a")?, cx.float("b")?);
            let holds = match cx.str("op")? {
                "eq" => a == b,
                "ne" => a != b,
                "lt" => a < b,
                "le" => a <= b,
                "gt" => a > b,
                "ge" => a >= b,
                other => return Err(NodeError::input("op", format!("unknown op {other:?}"))),
            };
            Ok(Value::Bool(holds))
        })
}
