//! Mutated workflow files and `/prompt` bodies give errors, never panics:
//! 1,000 seeded, deterministic mutations of the fixtures, each imported,
//! validated when it imports, and its errors rendered.

use std::panic::{catch_unwind, AssertUnwindSafe};

use weft_core::{Registry, SourceFile};

const FIXTURES: [&str; 3] = [
    include_str!("fixtures/txt2img_api.json"),
    include_str!("fixtures/txt2img_ui.json"),
    include_str!("fixtures/features_ui.json"),
];

/// Pieces that hit the importer's cases: links, ids, modes, subgraph ids,
/// wrappers, bad numbers and escapes.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "-1",
    "0.5",
    "1e999",
    "18446744073709551616",
    "\"class_type\"",
    "\"inputs\"",
    "\"_meta\"",
    "[\"3\", 0]",
    "[\"3\", 99]",
    "[\"999\", 0]",
    "[3, -1]",
    "\"nodes\"",
    "\"links\"",
    "[1, 4, 0, 3, 0, \"MODEL\"]",
    "[99, 3, 0, 3, 0, \"LATENT\"]",
    "-10",
    "-20",
    "\"mode\": 4, ",
    "\"mode\": 2, ",
    "\"Reroute\"",
    "\"PrimitiveNode\"",
    "\"3f2b8a9e-1c4d-4e5f-9a0b-1c2d3e4f5a6b\"",
    "{\"prompt\": ",
    "\\u",
    "\\ud800",
    "é",
    "\u{0}",
    "[[[[[[[[[[[[[[[[",
];

/// SplitMix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that structural mutations put in place of others.
fn replacement(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    let values = [
        json!(null),
        json!(-1),
        json!(0.5),
        json!(2),
        json!(4),
        json!(-10),
        json!(-20),
        json!(true),
        json!("x"),
        json!(["3", 0]),
        json!(["3", 99]),
        json!(["999", 0]),
        json!([3, -1]),
        json!({}),
        json!([]),
        json!("Reroute"),
        json!("PrimitiveNode"),
        json!("KSampler"),
        json!("3f2b8a9e-1c4d-4e5f-9a0b-1c2d3e4f5a6b"),
        json!([1, 4, 0, 3, 0, "MODEL"]),
        json!({"__value__": [1, 2]}),
        json!({"class_type": "IntConstant", "inputs": {"value": 1}}),
    ];
    values[rng.below(values.len())].clone()
}

/// Changes one place in the parsed tree, so the file stays JSON and the
/// change reaches conversion and validation.
fn mutate_tree(rng: &mut Rng, value: &mut serde_json::Value) {
    use serde_json::Value;
    let len = match value {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    };
    if len > 0 && rng.below(10) < 8 {
        let i = rng.below(len);
        match value {
            Value::Array(a) => match rng.below(8) {
                0 => drop(a.remove(i)),
                1 => a.push(a[i].clone()),
                _ => mutate_tree(rng, &mut a[i]),
            },
            Value::Object(o) => {
                let key = o.keys().nth(i).unwrap().clone();
                match rng.below(8) {
                    0 => drop(o.remove(&key)),
                    _ => mutate_tree(rng, o.get_mut(&key).unwrap()),
                }
            }
            _ => unreachable!(),
        }
    } else {
        *value = replacement(rng);
    }
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    if rng.below(2) == 0 {
        let mut tree: serde_json::Value = serde_json::from_str(text).unwrap();
        for _ in 0..1 + rng.below(3) {
            mutate_tree(rng, &mut tree);
        }
        return serde_json::to_string_pretty(&tree).unwrap();
    }
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        let at = rng.below(len + 1);
        match rng.below(6) {
            0 => {
                let end = (at + 1 + rng.below(40)).min(len);
                bytes.drain(at..end);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + 1 + rng.below(200)).min(len);
                let copy = bytes[at..end].to_vec();
                let to = rng.below(bytes.len() + 1);
                bytes.splice(to..to, copy);
            }
            3 => bytes.truncate(at),
            4 => {
                // Replace a number's digits or a string's letters.
                if at < len {
                    bytes[at] = b"0123456789\"-,.[]{}"[rng.below(18)];
                }
            }
            _ => {
                let end = (at + rng.below(30)).min(len);
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..end, token.iter().copied());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How far a mutated file got.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Outcome {
    ImportError,
    Invalid,
    Valid,
}

/// Imports, validates and renders; panics are the only failure.
fn exercise(text: &str, registry: &Registry) -> Outcome {
    let source = SourceFile::new("fuzz.json", text);
    let _ = weft_workflow::request_to_graph(text, registry);
    match weft_workflow::import(source, registry) {
        Ok(workflow) => {
            let _ = workflow.to_ron();
            match workflow.validate(registry) {
                Ok(_) => Outcome::Valid,
                Err(d) => {
                    assert!(!d.render(false).is_empty());
                    Outcome::Invalid
                }
            }
        }
        Err(d) => {
            assert!(!d.render(false).is_empty());
            assert!(!d.to_string().is_empty());
            Outcome::ImportError
        }
    }
}

#[test]
fn a_thousand_mutated_workflows_never_panic() {
    let registry = weft_nodes::builtin_registry();
    let mut rng = Rng(0x5EED_F00D);
    let mut panics = Vec::new();
    let mut outcomes = std::collections::HashMap::new();
    for case in 0..1000 {
        let base = FIXTURES[case % FIXTURES.len()];
        let text = mutate(&mut rng, base);
        match catch_unwind(AssertUnwindSafe(|| exercise(&text, &registry))) {
            Ok(outcome) => *outcomes.entry(outcome).or_insert(0) += 1,
            Err(_) => panics.push(text),
        }
    }
    // The mutations reach past the JSON reader, into conversion and validation.
    for outcome in [Outcome::ImportError, Outcome::Invalid, Outcome::Valid] {
        assert!(
            outcomes.get(&outcome).copied().unwrap_or(0) >= 20,
            "{outcomes:?}"
        );
    }
    assert!(
        panics.is_empty(),
        "{} panics; first input:\n{}",
        panics.len(),
        panics[0]
    );
}

#[test]
fn a_subgraph_that_contains_itself_is_one_error() {
    let id = "3f2b8a9e-1c4d-4e5f-9a0b-1c2d3e4f5a6b";
    let instance = |n: u32| {
        format!(r#"{{"id": {n}, "type": "{id}", "mode": 0, "inputs": [], "outputs": []}}"#)
    };
    let text = format!(
        r#"{{"nodes": [{}], "links": [], "definitions": {{"subgraphs": [{{"id": "{id}", "nodes": [{}, {}, {}], "links": []}}]}}}}"#,
        instance(1),
        instance(1),
        instance(2),
        instance(3)
    );
    let started = std::time::Instant::now();
    let e = weft_workflow::import(
        SourceFile::new("self.json", text),
        &weft_nodes::builtin_registry(),
    )
    .unwrap_err();
    assert_eq!(e.items.len(), 1, "{e}");
    assert!(e.items[0].message.contains("nest deeper"), "{e}");
    assert!(started.elapsed().as_secs() < 10);
}

#[test]
fn reroute_cycles_and_deep_json_are_errors() {
    let registry = weft_nodes::builtin_registry();
    let cycle = r#"{"nodes": [
        {"id": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2}], "outputs": [{"type": "*"}]},
        {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"type": "*"}]},
        {"id": 3, "type": "VAEDecode", "inputs": [{"name": "samples", "type": "LATENT", "link": 3}], "outputs": []}
    ], "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 1, 0, 3, 0, "LATENT"]]}"#;
    let w = weft_workflow::import(SourceFile::new("cycle.json", cycle), &registry).unwrap();
    // The cycle feeds nothing: the input is missing, which validation says.
    let e = w.validate(&registry).unwrap_err();
    assert!(e.to_string().contains("samples"), "{e}");
    let deep = format!("{{\"1\": {}", "[".repeat(100_000));
    let e = weft_workflow::import(SourceFile::new("deep.json", deep), &registry).unwrap_err();
    assert!(
        e.to_string().contains("nested deeper than 128 levels"),
        "{e}"
    );
}
