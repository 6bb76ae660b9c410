//! ComfyUI workflows in both formats, read into weft graphs: node types,
//! links, literals, the LiteGraph features the UI format adds, and errors
//! that point at `file:line:col` in the JSON and name ComfyUI's nodes.

use weft_core::graph::{InputValue, NodeDecl};
use weft_core::{GraphDoc, Registry, SourceFile, Value};
use weft_workflow::{import, Format, Workflow};

fn registry() -> Registry {
    weft_nodes::builtin_registry()
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(name: &str) -> Workflow {
    import(SourceFile::new(name, fixture(name)), &registry())
        .unwrap_or_else(|d| panic!("{}", d.render(false)))
}

fn node<'a>(doc: &'a GraphDoc, id: &str) -> &'a NodeDecl {
    doc.node(id).unwrap_or_else(|| {
        let ids: Vec<_> = doc.nodes.iter().map(|n| &n.id.value).collect();
        panic!("no node {id} in {ids:?}")
    })
}

fn input<'a>(doc: &'a GraphDoc, id: &str, name: &str) -> Option<&'a InputValue> {
    node(doc, id)
        .inputs
        .iter()
        .find(|i| i.name.value == name)
        .map(|i| &i.value.value)
}

fn link(doc: &GraphDoc, id: &str, name: &str) -> (String, String) {
    match input(doc, id, name) {
        Some(InputValue::Link { node, output }) => (node.value.clone(), output.value.clone()),
        other => panic!("{id}.{name} is not a link: {other:?}"),
    }
}

fn literal(doc: &GraphDoc, id: &str, name: &str) -> String {
    match input(doc, id, name) {
        Some(InputValue::Literal(v)) => match v {
            Value::String(s) => format!("{s:?}"),
            Value::Float(x) => format!("{x:?}"),
            other => other.summary(),
        },
        other => panic!("{id}.{name} is not a literal: {other:?}"),
    }
}

fn pair(node: &str, output: &str) -> (String, String) {
    (node.to_string(), output.to_string())
}

/// ComfyUI's default text-to-image graph, whichever format it came in.
fn assert_default_txt2img(doc: &GraphDoc) {
    let mut types: Vec<(&str, &str)> = doc
        .nodes
        .iter()
        .map(|n| (n.id.value.as_str(), n.ty.value.as_str()))
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            ("3", "KSampler"),
            ("4", "CheckpointLoaderSimple"),
            ("5", "EmptyLatentImage"),
            ("6", "CLIPTextEncode"),
            ("7", "CLIPTextEncode"),
            ("8", "VAEDecode"),
            ("9", "SaveImage"),
        ]
    );
    assert_eq!(link(doc, "3", "model"), pair("4", "MODEL"));
    assert_eq!(link(doc, "6", "clip"), pair("4", "CLIP"));
    assert_eq!(link(doc, "8", "vae"), pair("4", "VAE"));
    assert_eq!(link(doc, "3", "positive"), pair("6", "CONDITIONING"));
    assert_eq!(link(doc, "3", "negative"), pair("7", "CONDITIONING"));
    assert_eq!(link(doc, "3", "latent_image"), pair("5", "LATENT"));
    assert_eq!(link(doc, "9", "images"), pair("8", "IMAGE"));
    assert_eq!(literal(doc, "3", "seed"), "156680208700286");
    assert_eq!(literal(doc, "3", "steps"), "20");
    // An integer written for a FLOAT input becomes a float.
    assert_eq!(literal(doc, "3", "cfg"), "8.0");
    assert_eq!(literal(doc, "3", "sampler_name"), "\"euler\"");
    assert_eq!(literal(doc, "3", "scheduler"), "\"normal\"");
    assert_eq!(literal(doc, "3", "denoise"), "1.0");
    assert_eq!(literal(doc, "5", "width"), "512");
    assert_eq!(literal(doc, "7", "text"), "\"text, watermark\"");
    assert_eq!(
        literal(doc, "4", "ckpt_name"),
        "\"v1-5-pruned-emaonly.safetensors\""
    );
    assert_eq!(literal(doc, "9", "filename_prefix"), "\"ComfyUI\"");
    assert_eq!(
        node(doc, "3").inputs.len(),
        10,
        "no control_after_generate input"
    );
}

#[test]
fn the_default_workflow_reads_the_same_from_both_formats() {
    let api = load("txt2img_api.json");
    assert_eq!(api.format, Format::Api);
    assert_default_txt2img(&api.doc);
    let ui = load("txt2img_ui.json");
    assert_eq!(ui.format, Format::Ui);
    assert_default_txt2img(&ui.doc);
    // Both validate against weft's schemas.
    api.validate(&registry()).unwrap();
    ui.validate(&registry()).unwrap();
}

#[test]
fn a_prompt_request_body_is_unwrapped() {
    let body = format!(
        r#"{{"prompt": {}, "client_id": "abc", "front": true, "extra_data": {{"extra_pnginfo": {{"workflow": {{}}}}}}}}"#,
        fixture("txt2img_api.json")
    );
    let (workflow, fields) = weft_workflow::request_to_graph(&body, &registry())
        .unwrap_or_else(|d| panic!("{}", d.render(false)));
    assert_eq!(workflow.format, Format::Request);
    assert_default_txt2img(&workflow.doc);
    assert_eq!(fields.client_id.as_deref(), Some("abc"));
    assert!(fields.front);
    assert_eq!(
        fields.extra_data,
        Some(serde_json::json!({"extra_pnginfo": {"workflow": {}}}))
    );
    let doc = weft_workflow::prompt_to_graph(&fixture("txt2img_api.json"), &registry()).unwrap();
    assert_default_txt2img(&doc);
    let value: serde_json::Value = serde_json::from_str(&fixture("txt2img_api.json")).unwrap();
    let doc = weft_workflow::value_to_graph(&value, &registry()).unwrap();
    assert_default_txt2img(&doc);
    // The server's entry point takes the API format only.
    let e = weft_workflow::prompt_to_graph(&fixture("txt2img_ui.json"), &registry()).unwrap_err();
    assert!(e.to_string().contains("Export (API)"), "{e}");
}

#[test]
fn reroutes_primitives_muted_bypassed_and_subgraphs_resolve() {
    let w = load("features_ui.json");
    let doc = &w.doc;
    let mut ids: Vec<&str> = doc.nodes.iter().map(|n| n.id.value.as_str()).collect();
    ids.sort();
    // The Reroute, PrimitiveNode, Note, muted LoraLoader and SaveImage,
    // bypassed LatentUpscale and the subgraph instance are gone; the
    // subgraph's node is there under ComfyUI's execution id.
    assert_eq!(ids, ["20:1", "3", "4", "5", "6", "7", "9"]);
    assert_eq!(node(doc, "20:1").ty.value, "VAEDecode");
    // Through the Reroute.
    assert_eq!(link(doc, "6", "clip"), pair("4", "CLIP"));
    assert_eq!(link(doc, "7", "clip"), pair("4", "CLIP"));
    // The primitive's value, not the sampler's own stale widget value.
    assert_eq!(literal(doc, "3", "seed"), "42");
    assert_eq!(literal(doc, "3", "steps"), "3");
    assert_eq!(literal(doc, "3", "scheduler"), "\"karras\"");
    // Through the bypassed LatentUpscale, to its LATENT input.
    assert_eq!(link(doc, "3", "latent_image"), pair("5", "LATENT"));
    // Into the subgraph and out of it.
    assert_eq!(link(doc, "20:1", "samples"), pair("3", "LATENT"));
    assert_eq!(link(doc, "20:1", "vae"), pair("4", "VAE"));
    assert_eq!(link(doc, "9", "images"), pair("20:1", "IMAGE"));
    assert_eq!(
        w.nodes
            .iter()
            .find(|o| o.id == "4")
            .unwrap()
            .title
            .as_deref(),
        Some("Base model")
    );
    w.validate(&registry())
        .unwrap_or_else(|d| panic!("{}", d.render(false)));
}

#[test]
fn convert_writes_readable_ron_that_reads_back() {
    let w = load("txt2img_api.json");
    let ron = w.to_ron();
    for expected in [
        "\"load_checkpoint\": CheckpointLoaderSimple(ckpt_name: \"v1-5-pruned-emaonly.safetensors\")",
        // Two nodes share a title: class and number instead.
        "\"cliptextencode_6\": CLIPTextEncode(",
        "\"cliptextencode_7\": CLIPTextEncode(",
        "model: Link(\"load_checkpoint\", \"MODEL\")",
        "positive: Link(\"cliptextencode_6\", \"CONDITIONING\")",
        "\"ksampler\": KSampler(",
    ] {
        assert!(ron.contains(expected), "missing {expected} in\n{ron}");
    }
    weft_core::load(SourceFile::new("converted.ron", ron), &registry(), &[]).unwrap();
}

/// `(line, col)` of the first occurrence of `needle`.
fn line_col(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn validation_errors_point_into_the_json_and_name_the_node() {
    let text = fixture("txt2img_api.json").replace("\"steps\": 20", "\"steps\": -4");
    let w = import(SourceFile::new("wf.json", text.clone()), &registry()).unwrap();
    let e = w.validate(&registry()).unwrap_err();
    let (line, col) = line_col(&text, "-4");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "wf.json:{line}:{col}: node `3`: input `steps`: “KSampler”: "
        )),
        "{shown}"
    );
    // A link to an output the class does not have.
    let text = fixture("txt2img_api.json").replace("\"vae\": [\"4\", 2]", "\"vae\": [\"4\", 7]");
    let e = import(SourceFile::new("wf.json", text.clone()), &registry()).unwrap_err();
    let (line, col) = line_col(&text, "[\"4\", 7]");
    assert_eq!(
        e.to_string(),
        format!(
            "wf.json:{line}:{col}: node `8`: input `vae`: 8 “VAE Decode” (VAEDecode): links to output 7 of node 4, which has 3 outputs\n"
        )
    );
}

#[test]
fn ui_errors_point_at_the_widget_value() {
    let text = fixture("txt2img_ui.json").replace("\"normal\"", "\"sideways\"");
    let w = import(SourceFile::new("ui.json", text.clone()), &registry()).unwrap();
    let e = w.validate(&registry()).unwrap_err();
    let (line, col) = line_col(&text, "\"sideways\"");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "ui.json:{line}:{col}: node `3`: input `scheduler`: “KSampler”: "
        )),
        "{shown}"
    );
}

#[test]
fn unknown_classes_are_one_error_with_the_closest_types() {
    let text = fixture("txt2img_api.json")
        .replace("\"KSampler\"", "\"KSamplerr\"")
        .replace(
            "\"class_type\": \"VAEDecode\"",
            "\"class_type\": \"FancyCustomNode\"",
        )
        .replace(
            "\"class_type\": \"SaveImage\"",
            "\"class_type\": \"FancyCustomNode\"",
        );
    let e = import(SourceFile::new("wf.json", text.clone()), &registry()).unwrap_err();
    assert_eq!(e.items.len(), 1, "{e}");
    let message = &e.items[0].message;
    assert!(
        message.starts_with("2 node types that weft does not have: "),
        "{message}"
    );
    assert!(
        message.contains("`KSamplerr` (node 3 (KSamplerr); closest: `KSampler`, `KSamplerSelect`"),
        "{message}"
    );
    assert!(
        message.contains("`FancyCustomNode` (node 8 “VAE Decode” (FancyCustomNode), 9 “Save Image” (FancyCustomNode); "),
        "{message}"
    );
    let (line, col) = line_col(&text, "\"KSamplerr\"");
    assert!(
        e.to_string()
            .starts_with(&format!("wf.json:{line}:{col}: ")),
        "{e}"
    );
}

#[test]
fn structural_errors_name_the_node_and_point_at_the_value() {
    let cases = [
        (
            r#"{"1": {"inputs": {}}}"#,
            "node 1 has no `class_type`",
            "{\"inputs\"",
        ),
        (
            r#"{"1": {"class_type": 5}}"#,
            "`class_type` must be a string",
            "5",
        ),
        (
            r#"{"1": {"class_type": "IntConstant", "inputs": {"value": [1, 2, 3]}, "_meta": {"title": "T"}}}"#,
            "node 1 “T”: a list is a link",
            "[1, 2, 3]",
        ),
        (
            r#"[1, 2]"#,
            "a ComfyUI prompt is an object of nodes",
            "[1, 2]",
        ),
        (
            "{\"1\": {\"class_type\": \"X\",}}",
            "JSON syntax error: expected a string key",
            "}}",
        ),
    ];
    for (text, message, at) in cases {
        let e = import(SourceFile::new("t.json", text), &registry()).unwrap_err();
        let shown = e.to_string();
        let col = text.find(at).unwrap() + 1;
        assert!(
            shown.starts_with(&format!("t.json:1:{col}: ")),
            "{text}: {shown}"
        );
        assert!(shown.contains(message), "{text}: {shown}");
    }
}

#[test]
fn a_weft_graph_written_as_a_prompt_reads_back_the_same() {
    let registry = registry();
    let graph = weft_core::load(
        SourceFile::new(
            "g.ron",
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../graphs/sd15_txt2img.ron"
            ))
            .unwrap(),
        ),
        &registry,
        &[],
    )
    .unwrap();
    let prompt = weft_workflow::graph_to_prompt(&graph);
    let back = weft_workflow::prompt_to_graph(&prompt, &registry)
        .unwrap_or_else(|d| panic!("{}\n{prompt}", d.render(false)));
    let back = weft_core::validate(back, &registry).unwrap();
    assert_eq!(back.nodes.len(), graph.nodes.len());
    for (a, b) in graph.nodes.iter().zip(&back.nodes) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.type_name(), b.type_name());
        assert_eq!(
            format!("{:?}", a.inputs),
            format!("{:?}", b.inputs),
            "node {}",
            a.id
        );
    }
}
