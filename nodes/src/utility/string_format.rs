use weft_core::{Define, InputSpec, NodeDef, NodeError, NodeSchema, Value, ValueType};

const SLOTS: [&str; 4] = ["a", "b", "c", "d"];

/// `StringFormat`: fills `{a}`..`{d}` in a template; `{a:.2}` fixes
/// decimals, `{{` and `}}` escape.
pub fn string_format() -> NodeDef {
    let mut schema = NodeSchema::new(
        "StringFormat",
        "utils",
        "Formats a string: `{a}`..`{d}` are replaced by the inputs, `{a:.2}` rounds to 2 decimals.",
    )
    .input(InputSpec::string("template").doc("Text with `{a}`..`{d}` placeholders."));
    for slot in SLOTS {
        schema = schema.input(
            InputSpec::of(slot, ValueType::Any)
                .optional()
                .doc("A value to insert."),
        );
    }
    schema
        .output("value", ValueType::String, "The formatted text.")
        .run(|cx| {
            let out = format_template(cx.str("template")?, |name| cx.inputs.get(name))?;
            Ok(Value::String(out.into()))
        })
}

fn format_template<'v>(
    template: &str,
    lookup: impl Fn(&str) -> Option<&'v Value>,
) -> Result<String, NodeError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(NodeError::input(
                "template",
                "unmatched `}` (write `}}` for a literal brace)",
            ));
        }
        let end = tail.find('}').ok_or_else(|| {
            NodeError::input("template", "unclosed `{` (write `{{` for a literal brace)")
        })?;
        let field = &tail[1..end];
        let (name, spec) = field.split_once(':').unwrap_or((field, ""));
        if !SLOTS.contains(&name) {
            return Err(NodeError::input(
                "template",
                format!("unknown placeholder `{{{name}}}`; use a, b, c or d"),
            ));
        }
        let value = lookup(name).ok_or_else(|| {
            NodeError::input(
                name,
                format!("`{{{name}}}` is used but `{name}` is not connected"),
            )
        })?;
        out.push_str(&render(value, spec).map_err(|e| NodeError::input("template", e))?);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn render(value: &Value, spec: &str) -> Result<String, String> {
    if spec.is_empty() {
        return Ok(match value {
            Value::String(s) => s.to_string(),
            Value::Float(x) => x.to_string(),
            other => other.summary(),
        });
    }
    let decimals: usize = spec
        .strip_prefix('.')
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("format spec `{spec}` is not `.N`"))?;
    match value {
        Value::Float(x) => Ok(format!("{x:.decimals$}")),
        Value::Int(i) => Ok(format!("{:.decimals$}", *i as f64)),
        other => Err(format!("`.N` needs a number, found {}", other.ty())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(template: &str, a: Value) -> Result<String, NodeError> {
        format_template(template, |name| (name == "a").then_some(&a))
    }

    #[test]
    fn placeholders_precision_and_escapes() {
        assert_eq!(fmt("x={a}", Value::Int(3)).unwrap(), "x=3");
        assert_eq!(fmt("{a:.2}", Value::Float(1.23456)).unwrap(), "1.23");
        assert_eq!(fmt("{{a}} {a}", Value::from("s")).unwrap(), "{a} s");
        assert!(fmt("{b}", Value::Int(1))
            .unwrap_err()
            .message
            .contains("not connected"));
        assert!(fmt("{z}", Value::Int(1))
            .unwrap_err()
            .message
            .contains("unknown placeholder"));
        assert!(fmt("{a", Value::Int(1)).is_err());
        assert!(fmt("a}", Value::Int(1)).is_err());
        assert!(fmt("{a:.x}", Value::Int(1)).is_err());
    }
}
