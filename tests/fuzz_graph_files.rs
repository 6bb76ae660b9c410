//! Mutated and truncated graph files must produce errors, never panics.

use proptest::prelude::*;
use weft_core::{GraphDoc, SourceFile};

const SEED_GRAPH: &str = include_str!("../graphs/arithmetic.ron");

/// Loads without panicking; returns whether it validated.
fn load_never_panics(text: &str) -> bool {
    let registry = weft_tests::registry();
    let source = SourceFile::new("fuzz.ron", text);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        weft_core::load(source, &registry, &[]).is_ok()
    }));
    result.unwrap_or_else(|_| panic!("panicked on input:\n{text}"))
}

/// Renders diagnostics too: locations must be computable for any error span.
fn diagnostics_render(text: &str) {
    if let Err(d) = GraphDoc::parse(SourceFile::new("fuzz.ron", text)) {
        assert!(!d.render(false).is_empty());
        assert!(!d.to_string().is_empty());
    }
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "Link(",
    "Link(\"x\", \"value\")",
    "//",
    "/*",
    "*/",
    "r#\"",
    "-",
    "1e999",
    "0x",
    "'",
    "\\",
    "é",
    "\u{0}",
    "IntMath(",
    "nodes",
    "params",
    "true",
    "NaN",
    "-inf",
    "999999999999999999999",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn truncated_files_never_panic(cut in 0usize..SEED_GRAPH.len()) {
        let mut end = cut;
        while !SEED_GRAPH.is_char_boundary(end) { end -= 1; }
        let text = &SEED_GRAPH[..end];
        load_never_panics(text);
        diagnostics_render(text);
    }

    #[test]
    fn byte_mutations_never_panic(edits in prop::collection::vec((0usize..4000, any::<u8>(), 0u8..3), 1..8)) {
        let mut bytes = SEED_GRAPH.as_bytes().to_vec();
        for (pos, byte, kind) in edits {
            let pos = pos % (bytes.len() + 1);
            match kind {
                0 if pos < bytes.len() => bytes[pos] = byte,
                1 => bytes.insert(pos, byte),
                _ if pos < bytes.len() => { bytes.remove(pos); }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        load_never_panics(&text);
        diagnostics_render(&text);
    }

    #[test]
    fn token_splices_never_panic(splices in prop::collection::vec((0usize..4000, 0usize..TOKENS.len()), 1..6)) {
        let mut text = SEED_GRAPH.to_string();
        for (pos, tok) in splices {
            let mut pos = pos % (text.len() + 1);
            while !text.is_char_boundary(pos) { pos -= 1; }
            text.insert_str(pos, TOKENS[tok]);
        }
        load_never_panics(&text);
        diagnostics_render(&text);
    }

    #[test]
    fn command_line_overrides_never_panic(target in "[a-z_.]{0,12}", value in "\\PC{0,12}") {
        let registry = weft_tests::registry();
        let source = SourceFile::new("fuzz.ron", SEED_GRAPH);
        let _ = weft_core::load(source, &registry, &[format!("{target}={value}")]);
    }
}

#[test]
fn the_unmutated_seed_is_valid() {
    assert!(load_never_panics(SEED_GRAPH));
}
