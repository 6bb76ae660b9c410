//! Printing a graph document back as RON in weft's own format.
//!
//! Saved images embed the graph that made them (with seeds and `--set`
//! overrides applied), so the text must read back into the *same* document:
//! strings are escaped for weft's reader and floats are printed with Rust's
//! shortest round-tripping form, always marked as floats (`2.0`, `1e-7`), so
//! an INT never turns into a FLOAT or back.

use std::fmt::Write as _;

use crate::graph::{GraphDoc, InputValue, NodeDecl};
use crate::value::Value;

/// A node printed on one line stays there up to this width; longer ones get
/// one input per line, as people write them.
const LINE_WIDTH: usize = 100;

/// The document as readable RON that [`GraphDoc::parse`] reads back identically.
pub fn to_ron(doc: &GraphDoc) -> String {
    let mut out = String::from("(\n");
    if let Some(title) = &doc.title {
        let _ = writeln!(out, "    title: {},", quote(title));
    }
    if !doc.params.is_empty() {
        out.push_str("    params: {\n");
        for p in &doc.params {
            let target = format!("{}.{}", p.node, p.input);
            let _ = writeln!(out, "        {}: {},", quote(&p.name.value), quote(&target));
        }
        out.push_str("    },\n");
    }
    out.push_str("    nodes: {\n");
    for node in &doc.nodes {
        write_node(&mut out, node);
    }
    out.push_str("    },\n)\n");
    out
}

fn write_node(out: &mut String, node: &NodeDecl) {
    let inputs: Vec<String> = node
        .inputs
        .iter()
        .map(|i| format!("{}: {}", i.name.value, input_value(&i.value.value)))
        .collect();
    let head = format!("        {}: {}(", quote(&node.id.value), node.ty.value);
    let one_line = format!("{head}{}),", inputs.join(", "));
    if one_line.len() <= LINE_WIDTH || inputs.is_empty() {
        out.push_str(&one_line);
        out.push('\n');
        return;
    }
    out.push_str(&head);
    out.push('\n');
    for input in &inputs {
        let _ = writeln!(out, "            {input},");
    }
    out.push_str("        ),\n");
}

fn input_value(value: &InputValue) -> String {
    match value {
        InputValue::Literal(v) => literal(v),
        InputValue::Link { node, output } => {
            format!("Link({}, {})", quote(&node.value), quote(&output.value))
        }
    }
}

/// A scalar literal as RON. Only scalars can be written in a graph file, so
/// anything else (which `GraphDoc::parse` never produces) prints its summary
/// as a string rather than failing.
fn literal(value: &Value) -> String {
    match value {
        Value::Int(i) => i.to_string(),
        Value::Float(x) => float(*x),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => quote(s),
        other => quote(&other.summary()),
    }
}

/// Rust's `{:?}` is the shortest text that parses back to the same bits, and
/// it always carries a `.` or an exponent (or is `inf`/`NaN`, which weft's
/// reader accepts), so the reader sees a FLOAT, never an INT.
fn float(x: f64) -> String {
    let text = format!("{x:?}");
    debug_assert!(
        text.contains(['.', 'e', 'E']) || text.contains("inf") || text.contains("NaN"),
        "{text}"
    );
    text
}

/// A double-quoted string with the escapes weft's reader understands; other
/// characters, Unicode included, stay readable as they are.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;

    fn parse(name: &str, text: &str) -> GraphDoc {
        GraphDoc::parse(SourceFile::new(name.to_string(), text.to_string()))
            .unwrap_or_else(|e| panic!("{name} does not parse: {e}\n{text}"))
    }

    /// Literals compared bit-for-bit, so `2` vs `2.0` or a lost ulp fails.
    fn same_literal(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::String(x), Value::String(y)) => x == y,
            _ => false,
        }
    }

    fn assert_same(a: &GraphDoc, b: &GraphDoc) {
        assert_eq!(a.title, b.title);
        let params = |d: &GraphDoc| -> Vec<(String, String, String)> {
            d.params
                .iter()
                .map(|p| (p.name.value.clone(), p.node.clone(), p.input.clone()))
                .collect()
        };
        assert_eq!(params(a), params(b));
        assert_eq!(a.nodes.len(), b.nodes.len());
        for (x, y) in a.nodes.iter().zip(&b.nodes) {
            assert_eq!(x.id.value, y.id.value);
            assert_eq!(x.ty.value, y.ty.value);
            assert_eq!(x.inputs.len(), y.inputs.len(), "node {}", x.id.value);
            for (i, j) in x.inputs.iter().zip(&y.inputs) {
                assert_eq!(i.name.value, j.name.value);
                match (&i.value.value, &j.value.value) {
                    (InputValue::Literal(u), InputValue::Literal(v)) => {
                        assert!(
                            same_literal(u, v),
                            "{}.{}: {u:?} vs {v:?}",
                            x.id.value,
                            i.name.value
                        )
                    }
                    (
                        InputValue::Link { node, output },
                        InputValue::Link {
                            node: node2,
                            output: output2,
                        },
                    ) => {
                        assert_eq!(node.value, node2.value);
                        assert_eq!(output.value, output2.value);
                    }
                    (u, v) => panic!("{}.{}: {u:?} vs {v:?}", x.id.value, i.name.value),
                }
            }
        }
    }

    fn round_trip(name: &str, text: &str) -> String {
        let first = parse(name, text);
        let printed = to_ron(&first);
        let second = parse(&format!("{name} (printed)"), &printed);
        assert_same(&first, &second);
        // Printing is a fixed point: the printed form prints the same again.
        assert_eq!(printed, to_ron(&second));
        printed
    }

    #[test]
    fn every_example_graph_round_trips() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "ron") {
                let text = std::fs::read_to_string(&path).unwrap();
                round_trip(&path.display().to_string(), &text);
                count += 1;
            }
        }
        assert!(count >= 1, "no graphs in {}", dir.display());
    }

    #[test]
    fn strings_with_quotes_backslashes_and_unicode_round_trip() {
        let text = r#"(
            title: "a \"quoted\" title with \\ and\nnewline",
            params: { "sé\"ed": "a.value" },
            nodes: {
                "a": StringConstant(value: "C:\\path\\to \"x\" — ünïcødé 🎨 \t\u{1}\0 end"),
                "b": Print(value: Link("a", "value"), label: r"raw \ back"),
                "c": Print(value: 'c', label: '\''),
            },
        )"#;
        let printed = round_trip("strings", text);
        assert!(printed.contains("🎨"), "unicode stays readable: {printed}");
    }

    #[test]
    fn floats_keep_every_bit_and_stay_floats() {
        let values = [
            2.0,
            -0.0,
            0.1,
            1.0 / 3.0,
            1e-7,
            6.02214076e23,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let nodes: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(k, x)| format!("\"n{k}\": FloatConstant(value: {})", float(*x)))
            .collect();
        let text = format!(
            "(nodes: {{ {}, \"i\": IntConstant(value: -9223372036854775808) }})",
            nodes.join(", ")
        );
        let printed = round_trip("floats", &text);
        assert!(printed.contains("FloatConstant(value: 2.0)"), "{printed}");
        let doc = parse("floats", &printed);
        for (k, x) in values.iter().enumerate() {
            let InputValue::Literal(Value::Float(y)) = &doc.nodes[k].inputs[0].value.value else {
                panic!("n{k} is not a float: {printed}");
            };
            assert_eq!(x.to_bits(), y.to_bits(), "n{k}");
        }
        let nan = parse(
            "nan",
            &format!(
                "(nodes: {{ \"n\": FloatConstant(value: {}) }})",
                float(f64::NAN)
            ),
        );
        let InputValue::Literal(Value::Float(y)) = &nan.nodes[0].inputs[0].value.value else {
            panic!("NaN did not read back as a float");
        };
        assert!(y.is_nan());
    }

    #[test]
    fn overrides_are_printed_as_applied() {
        let mut doc = parse(
            "set",
            r#"(params: { "seed": "k.seed" }, nodes: { "k": IntConstant(value: 1) })"#,
        );
        doc.set("seed=42").unwrap();
        doc.set("k.extra=\"a b\"").unwrap();
        let printed = to_ron(&doc);
        let back = parse("printed", &printed);
        assert_same(&doc, &back);
        assert!(printed.contains("seed: 42"), "{printed}");
        assert!(printed.contains(r#"extra: "a b""#), "{printed}");
    }

    #[test]
    fn long_nodes_break_one_input_per_line() {
        let text = r#"(nodes: { "s": StringFormat(template: "a fairly long template string {a} {b}", a: Link("x", "value"), b: Link("y", "value")) })"#;
        let printed = round_trip("long", text);
        assert!(printed.contains("StringFormat(\n"), "{printed}");
        assert!(printed.lines().all(|l| l.len() <= LINE_WIDTH), "{printed}");
    }
}
