//! A graph document as a ComfyUI API-format prompt.
//!
//! ComfyUI reads a PNG's `prompt` text chunk as `{id: {inputs, class_type,
//! _meta: {title}}}`, where a link is `[source_id, output_index]`. weft's
//! saved images carry one beside weft's own RON, so a ComfyUI user can drop
//! a weft image into their UI. weft names outputs and ComfyUI numbers them,
//! so the writer needs the node schemas; it lives here, beside
//! [`crate::write::to_ron`], because `SaveImage` reaches it through the
//! run's [`crate::NodeContext`].
//!
//! Unset inputs with defaults are written out: ComfyUI requires every
//! widget input, and weft's defaults may differ from ComfyUI's.

use std::fmt::Write as _;

use crate::graph::{GraphDoc, InputValue, NodeDecl};
use crate::schema::{Literal, NodeSchema};
use crate::value::Value;

/// Inputs that ComfyUI names differently from weft:
/// `(class_type, ComfyUI's name, weft's name)`. Importers and this writer
/// both read it, so the two directions cannot disagree.
pub const INPUT_RENAMES: &[(&str, &str, &str)] = &[("LoadImage", "image", "image_path")];

/// weft's name for ComfyUI input `name` of `class_type`.
pub fn weft_input_name<'a>(class_type: &str, name: &'a str) -> &'a str {
    INPUT_RENAMES
        .iter()
        .find(|(class, comfy, _)| *class == class_type && *comfy == name)
        .map_or(name, |(_, _, weft)| weft)
}

/// ComfyUI's name for weft input `name` of `class_type`.
pub fn comfy_input_name<'a>(class_type: &str, name: &'a str) -> &'a str {
    INPUT_RENAMES
        .iter()
        .find(|(class, _, weft)| *class == class_type && *weft == name)
        .map_or(name, |(_, comfy, _)| comfy)
}

/// The document as compact ComfyUI API-format JSON, nodes in file order.
/// `schema_of` finds a node type's schema; links to a node whose type or
/// output it cannot resolve are left out (ComfyUI then reports the input
/// missing, which is the truth).
pub fn to_api_prompt<'a>(
    doc: &GraphDoc,
    schema_of: impl Fn(&str) -> Option<&'a NodeSchema>,
) -> String {
    let mut out = String::from("{");
    for (i, node) in doc.nodes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}: {{\"inputs\": {{", json_str(&node.id.value));
        let inputs = node_inputs(doc, node, &schema_of);
        for (j, (name, value)) in inputs.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}: {value}", json_str(name));
        }
        let _ = write!(
            out,
            "}}, \"class_type\": {}, \"_meta\": {{\"title\": {}}}}}",
            json_str(&node.ty.value),
            json_str(&node.id.value)
        );
    }
    out.push('}');
    out
}

/// `(ComfyUI input name, JSON value)` in schema order, then inputs the
/// schema does not know (kept, so nothing is silently lost).
fn node_inputs<'a>(
    doc: &GraphDoc,
    node: &NodeDecl,
    schema_of: &impl Fn(&str) -> Option<&'a NodeSchema>,
) -> Vec<(String, String)> {
    let class = node.ty.value.as_str();
    let written = |name: &str| node.inputs.iter().find(|i| i.name.value == name);
    let mut out = Vec::with_capacity(node.inputs.len());
    let mut push = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            out.push((comfy_input_name(class, name).to_string(), value));
        }
    };
    let schema = schema_of(class);
    if let Some(schema) = schema {
        for spec in &schema.inputs {
            match written(&spec.name) {
                Some(decl) => push(&spec.name, input_json(doc, &decl.value.value, &schema_of)),
                None => push(&spec.name, spec.default.as_ref().map(literal_json)),
            }
        }
    }
    for decl in &node.inputs {
        if schema.is_none_or(|s| s.input_index(&decl.name.value).is_none()) {
            push(
                &decl.name.value,
                input_json(doc, &decl.value.value, &schema_of),
            );
        }
    }
    out
}

fn input_json<'a>(
    doc: &GraphDoc,
    value: &InputValue,
    schema_of: &impl Fn(&str) -> Option<&'a NodeSchema>,
) -> Option<String> {
    match value {
        InputValue::Literal(v) => value_json(v),
        InputValue::Link { node, output } => {
            let source = doc.node(&node.value)?;
            let index = schema_of(&source.ty.value)?.output_index(&output.value)?;
            Some(format!("[{}, {index}]", json_str(&node.value)))
        }
    }
}

fn value_json(value: &Value) -> Option<String> {
    match value {
        Value::Int(i) => Some(i.to_string()),
        Value::Float(x) => Some(float_json(*x)),
        Value::Bool(b) => Some(b.to_string()),
        Value::String(s) => Some(json_str(s)),
        _ => None,
    }
}

fn literal_json(value: &Literal) -> String {
    match value {
        Literal::Int(i) => i.to_string(),
        Literal::Float(x) => float_json(*x),
        Literal::Bool(b) => b.to_string(),
        Literal::String(s) => json_str(s),
    }
}

/// JSON has no NaN or infinity; `null` is what Python's strict encoders
/// write and what ComfyUI reports as a bad value.
fn float_json(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| "null".into(), |n| n.to_string())
}

/// A JSON string in ASCII: other characters as `\u` escapes, so the
/// prompt always fits a PNG tEXt chunk (Latin-1), the text chunk every
/// ComfyUI frontend reads.
fn json_str(s: &str) -> String {
    let quoted = serde_json::Value::from(s).to_string();
    if quoted.is_ascii() {
        return quoted;
    }
    let mut out = String::with_capacity(quoted.len() + 16);
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{InputSpec, ValueType};
    use crate::SourceFile;

    fn schemas() -> Vec<NodeSchema> {
        vec![
            NodeSchema::new("Pair", "test", "")
                .input(InputSpec::int("n").default(3))
                .output("A", ValueType::Int, "")
                .output("B", ValueType::Int, ""),
            NodeSchema::new("Take", "test", "")
                .input(InputSpec::of("x", ValueType::Int))
                .input(InputSpec::float("scale").default(1.5)),
            NodeSchema::new("LoadImage", "test", "").input(InputSpec::string("image_path")),
        ]
    }

    #[test]
    fn links_become_output_indices_and_defaults_are_written() {
        let doc = GraphDoc::parse(SourceFile::new(
            "t.ron",
            r#"(nodes: {
                "p": Pair(),
                "t": Take(x: Link("p", "B")),
                "img": LoadImage(image_path: "a \"b\".png"),
            })"#,
        ))
        .unwrap();
        let all = schemas();
        let text = to_api_prompt(&doc, |t| all.iter().find(|s| s.type_name == t));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["p"]["inputs"]["n"], 3);
        assert_eq!(json["t"]["inputs"]["x"], serde_json::json!(["p", 1]));
        assert_eq!(json["t"]["inputs"]["scale"], 1.5);
        assert_eq!(json["t"]["class_type"], "Take");
        assert_eq!(json["t"]["_meta"]["title"], "t");
        assert_eq!(json["img"]["inputs"]["image"], "a \"b\".png");
        assert!(json["img"]["inputs"].get("image_path").is_none());
    }

    #[test]
    fn the_prompt_is_ascii_and_reads_back_unicode() {
        let doc = GraphDoc::parse(SourceFile::new(
            "t.ron",
            r#"(nodes: { "fox": LoadImage(image_path: "é🦊\n") })"#,
        ))
        .unwrap();
        let all = schemas();
        let text = to_api_prompt(&doc, |t| all.iter().find(|s| s.type_name == t));
        assert!(text.is_ascii(), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["fox"]["inputs"]["image"], "é🦊\n");
    }

    #[test]
    fn a_link_to_an_unknown_output_is_left_out() {
        let doc = GraphDoc::parse(SourceFile::new(
            "t.ron",
            r#"(nodes: { "p": Pair(), "t": Take(x: Link("p", "C")) })"#,
        ))
        .unwrap();
        let all = schemas();
        let text = to_api_prompt(&doc, |t| all.iter().find(|s| s.type_name == t));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json["t"]["inputs"].get("x").is_none(), "{text}");
    }
}
