//! Every validation error, with its exact location, node and input.

use weft_core::{Diagnostic, Diagnostics};
use weft_tests::load;

struct Found {
    line: usize,
    col: usize,
    node: Option<String>,
    input: Option<String>,
    message: String,
    help: Option<String>,
}

fn errors(text: &str) -> Vec<Found> {
    let diags: Diagnostics = match load(text) {
        Ok(_) => panic!("expected validation errors"),
        Err(d) => d,
    };
    diags
        .items
        .iter()
        .map(|d: &Diagnostic| {
            let at = diags.location(d).expect("every error has a location");
            Found {
                line: at.line,
                col: at.col,
                node: d.node.clone(),
                input: d.input.clone(),
                message: d.message.clone(),
                help: d.help.clone(),
            }
        })
        .collect()
}

fn only(text: &str) -> Found {
    let mut all = errors(text);
    assert_eq!(
        all.len(),
        1,
        "expected exactly one error, got: {:?}",
        all.iter().map(|f| &f.message).collect::<Vec<_>>()
    );
    all.remove(0)
}

/// A graph with one output node, the node under test on line 4.
fn with_node(node: &str) -> String {
    format!("(\n  nodes: {{\n    \"five\": IntConstant(value: 5),\n    {node}\n    \"out\": Print(value: 1),\n  }},\n)\n")
}

#[test]
fn syntax_error_points_at_the_byte() {
    let e = only("(\n  nodes: {\n    \"a\": IntConstant(value: 5\n  },\n)");
    assert_eq!((e.line, e.col), (4, 3));
    assert!(e.message.contains("syntax error"), "{}", e.message);
    assert!(e.message.contains("expected `,` or `)`"), "{}", e.message);
}

#[test]
fn unknown_node_type_suggests_the_closest() {
    let e = only(&with_node("\"m\": IntMaht(a: 1, b: 2),"));
    assert_eq!((e.line, e.col), (4, 10));
    assert_eq!(e.node.as_deref(), Some("m"));
    assert!(e.message.contains("unknown node type `IntMaht`"));
    assert_eq!(e.help.as_deref(), Some("did you mean `IntMath`?"));
}

#[test]
fn unknown_input_suggests_the_closest() {
    let e = only(&with_node("\"m\": IntMath(a: 1, b: 2, opp: \"add\"),"));
    assert_eq!((e.line, e.col), (4, 30));
    assert_eq!(
        (e.node.as_deref(), e.input.as_deref()),
        (Some("m"), Some("opp"))
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `op`?"));
}

#[test]
fn missing_required_input_names_it_and_its_type() {
    let e = only(&with_node("\"m\": IntMath(a: 1),"));
    assert_eq!((e.line, e.col), (4, 10));
    assert_eq!(e.input.as_deref(), Some("b"));
    assert!(
        e.message.contains("missing required input `b` (INT)"),
        "{}",
        e.message
    );
}

#[test]
fn link_to_missing_node_or_output() {
    let e = only(&with_node(
        "\"m\": IntMath(a: Link(\"fiv\", \"value\"), b: 1),",
    ));
    assert_eq!((e.line, e.col), (4, 26));
    assert!(e.message.contains("missing node `fiv`"));
    assert_eq!(e.help.as_deref(), Some("did you mean `five`?"));

    let e = only(&with_node(
        "\"m\": IntMath(a: Link(\"five\", \"vlaue\"), b: 1),",
    ));
    assert_eq!((e.line, e.col), (4, 34));
    assert!(e.message.contains("has no output `vlaue`"));
    assert_eq!(e.help.as_deref(), Some("did you mean `value`?"));
}

#[test]
fn type_mismatch_shows_expected_and_found() {
    let e = only(&with_node(
        "\"s\": StringConstant(value: \"x\"), \"m\": IntMath(a: Link(\"s\", \"value\"), b: 1),",
    ));
    assert_eq!((e.line, e.col), (4, 54));
    assert_eq!(
        (e.node.as_deref(), e.input.as_deref()),
        (Some("m"), Some("a"))
    );
    assert!(
        e.message.contains("expected INT, found STRING"),
        "{}",
        e.message
    );
}

#[test]
fn int_links_widen_to_float_but_not_back() {
    assert!(load(&with_node(
        "\"f\": FloatMath(a: Link(\"five\", \"value\"), b: 1),"
    ))
    .is_ok());
    let e = only(&with_node(
        "\"f\": FloatConstant(value: 1.5), \"m\": IntMath(a: Link(\"f\", \"value\"), b: 1),",
    ));
    assert!(e.message.contains("expected INT, found FLOAT"));
}

#[test]
fn literal_of_wrong_type_out_of_range_or_not_a_choice() {
    let e = only(&with_node("\"m\": IntMath(a: \"one\", b: 1),"));
    assert_eq!((e.line, e.col, e.input.as_deref()), (4, 21, Some("a")));
    assert!(e.message.contains("expected INT, found STRING"));

    let e = only(&with_node("\"m\": IntMath(a: 1, b: 1, op: \"plus\"),"));
    assert_eq!((e.line, e.col, e.input.as_deref()), (4, 34, Some("op")));
    assert!(e.message.contains("not one of: add, sub"), "{}", e.message);

    let e = only(&with_node("\"w\": Sleep(value: 1, ms: -5),"));
    assert_eq!((e.line, e.col, e.input.as_deref()), (4, 30, Some("ms")));
    assert!(
        e.message.contains("-5 is below the minimum 0"),
        "{}",
        e.message
    );
    let e = only(&with_node("\"t\": Print(value: 1, label: 5),"));
    assert!(e.message.contains("expected STRING, found INT"));
}

#[test]
fn range_checks_use_the_schema() {
    use weft_core::InputSpec;
    let spec = InputSpec::int("steps").range(1.0, 100.0);
    assert!(spec
        .check_literal(&0i64.into())
        .unwrap_err()
        .contains("below the minimum 1"));
    assert!(spec
        .check_literal(&101i64.into())
        .unwrap_err()
        .contains("above the maximum 100"));
    assert!(spec.check_literal(&50i64.into()).is_ok());
    assert!(InputSpec::float("cfg")
        .check_literal(&f64::NAN.into())
        .unwrap_err()
        .contains("NaN"));
}

#[test]
fn cycle_is_printed_as_its_path() {
    let e = only(&with_node(
        "\"a\": IntMath(a: Link(\"c\", \"value\"), b: 1), \"b\": IntMath(a: Link(\"a\", \"value\"), b: 1), \"c\": IntMath(a: Link(\"b\", \"value\"), b: 1),",
    ));
    assert_eq!((e.line, e.col), (4, 5));
    assert_eq!(e.message, "dependency cycle: a -> b -> c -> a");
}

#[test]
fn self_loop_is_a_cycle() {
    let e = only(&with_node(
        "\"a\": IntMath(a: Link(\"a\", \"value\"), b: 1),",
    ));
    assert_eq!(e.message, "dependency cycle: a -> a");
}

#[test]
fn graph_without_output_node() {
    let e = only("(\n  nodes: { \"a\": IntConstant(value: 1) },\n)");
    assert_eq!((e.line, e.col), (1, 1));
    assert!(e.message.contains("no output node"));
}

#[test]
fn all_errors_are_reported_in_one_pass_in_file_order() {
    let found = errors(&with_node(
        "\"m\": IntMaht(a: 1),\n \"n\": IntMath(a: \"x\", b: 1, op: \"nope\"),\n \"p\": Print(value: Link(\"zzz\", \"value\")),",
    ));
    let lines: Vec<usize> = found.iter().map(|f| f.line).collect();
    assert_eq!(
        found.len(),
        4,
        "{:?}",
        found.iter().map(|f| &f.message).collect::<Vec<_>>()
    );
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "sorted by position: {lines:?}"
    );
}

#[test]
fn duplicate_ids_and_inputs_are_errors() {
    let found = errors("(nodes: { \"a\": Print(value: 1, value: 2), \"a\": Print(value: 3) })");
    assert_eq!(found.len(), 2);
    assert!(found[0].message.contains("given twice"));
    assert!(found[1].message.contains("defined twice"));
}

#[test]
fn a_5000_node_chain_validates_without_overflowing_the_stack() {
    let mut text = String::from("(nodes: {\n\"n0\": IntConstant(value: 0),\n");
    for i in 1..5000 {
        text.push_str(&format!(
            "\"n{i}\": IntMath(a: Link(\"n{}\", \"value\"), b: 1),\n",
            i - 1
        ));
    }
    text.push_str("\"out\": Print(value: Link(\"n4999\", \"value\")),\n})");
    // Run on a small stack to prove nothing recurses per node.
    let graph = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            load(&text)
                .map(|g| g.nodes.len())
                .map_err(|d| d.to_string())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(graph.unwrap(), 5001);
}

#[test]
fn overrides_are_validated_like_file_values() {
    let text = "(params: { \"n\": \"m.b\" }, nodes: { \"m\": IntMath(a: 1, b: 2), \"o\": Print(value: Link(\"m\", \"value\")) })";
    let src = || weft_core::SourceFile::new("t.ron", text);
    let reg = weft_tests::registry();
    let g = weft_core::load(src(), &reg, &["n=40".into()]).unwrap();
    let m = g.index_of("m").unwrap();
    assert!(matches!(
        g.nodes[m].inputs[1],
        weft_core::Binding::Literal(weft_core::Value::Int(40))
    ));
    let err = weft_core::load(src(), &reg, &["m.b=\"text\"".into()]).unwrap_err();
    assert!(
        err.items[0].message.contains("from `--set m.b=\"text\"`"),
        "{}",
        err.items[0].message
    );
    let err = weft_core::load(src(), &reg, &["nope=1".into()]).unwrap_err();
    assert!(
        err.items[0].message.contains("neither a graph param"),
        "{}",
        err.items[0].message
    );
}
