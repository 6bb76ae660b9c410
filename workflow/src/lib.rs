//! ComfyUI workflows in weft: reading the API format (`workflow_api.json`,
//! the `/prompt` body) and the UI format (LiteGraph) into weft's
//! [`GraphDoc`], and writing a graph back as an API-format prompt.
//!
//! Spans in the documents point into the JSON, so `validate` reports
//! `file:line:col` there, and errors name the ComfyUI node id and title.
//!
//! ```text
//! json::parse ─┬─ api::read_prompt ─────────────┬─ prompt::to_graph → GraphDoc
//!              └─ ui::read_workflow (litegraph) ┘
//! ```

pub mod api;
pub mod ids;
pub mod json;
pub mod litegraph;
pub mod prompt;
pub mod ui;

use weft_core::{Diagnostic, Diagnostics, GraphDoc, Registry, SourceFile, ValidGraph};

pub use api::RequestFields;
pub use prompt::NodeOrigin;

/// Which ComfyUI format a file was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{id: {class_type, inputs}}`.
    Api,
    /// A `/prompt` body: `{prompt: {...}, client_id, extra_data}`.
    Request,
    /// LiteGraph's `{nodes, links, ...}`, as the UI saves it.
    Ui,
}

/// An imported workflow: weft's document and where each node came from.
#[derive(Clone, Debug)]
pub struct Workflow {
    pub doc: GraphDoc,
    pub nodes: Vec<NodeOrigin>,
    pub format: Format,
    /// The fields of a `/prompt` body besides the prompt (default otherwise).
    pub request: RequestFields,
}

impl Workflow {
    /// Validates the document, naming nodes by their ComfyUI titles in errors.
    pub fn validate(self, registry: &Registry) -> Result<ValidGraph, Diagnostics> {
        let Workflow { doc, nodes, .. } = self;
        weft_core::validate(doc, registry).map_err(|d| prompt::name_nodes(d, &nodes))
    }

    /// Adds ComfyUI titles to errors about this workflow's nodes.
    pub fn name_nodes(&self, diagnostics: Diagnostics) -> Diagnostics {
        prompt::name_nodes(diagnostics, &self.nodes)
    }

    /// Readable RON for `weft convert`: node ids from titles where unique.
    pub fn to_ron(&self) -> String {
        let mut doc = self.doc.clone();
        ids::readable_ids(&mut doc, &self.nodes);
        weft_core::write::to_ron(&doc)
    }
}

/// Whether graph text is JSON (a workflow) rather than weft's RON: JSON
/// starts with `{` and RON graphs with `(` (comments aside).
pub fn is_json(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
}

/// Reads a workflow in any of ComfyUI's formats, told apart by shape.
pub fn import(source: SourceFile, registry: &Registry) -> Result<Workflow, Diagnostics> {
    read(source, registry, None)
}

/// Reads an API-format prompt, bare or as a `/prompt` body, for the
/// server: the document's spans point into `json`, and its node ids are
/// the prompt's.
pub fn prompt_to_graph(json: &str, registry: &Registry) -> Result<GraphDoc, Diagnostics> {
    let source = SourceFile::new("prompt", json);
    read(source, registry, Some(Format::Api)).map(|w| w.doc)
}

/// [`prompt_to_graph`] for a prompt already parsed by serde_json: spans
/// point into its pretty-printed text (named `prompt`).
pub fn value_to_graph(
    prompt: &serde_json::Value,
    registry: &Registry,
) -> Result<GraphDoc, Diagnostics> {
    let text = serde_json::to_string_pretty(prompt).unwrap_or_else(|_| "null".into());
    prompt_to_graph(&text, registry)
}

/// Reads a `POST /prompt` body (a bare prompt is accepted too): the graph
/// and the body's other fields (`client_id`, `front`, `number`, `extra_data`).
pub fn request_to_graph(
    body: &str,
    registry: &Registry,
) -> Result<(Workflow, RequestFields), Diagnostics> {
    let source = SourceFile::new("prompt", body);
    let workflow = read(source, registry, Some(Format::Api))?;
    let fields = workflow.request.clone();
    Ok((workflow, fields))
}

/// The validated graph as an API-format prompt (what weft's PNGs carry).
pub fn graph_to_prompt(graph: &ValidGraph) -> String {
    let schemas: std::collections::HashMap<&str, &weft_core::NodeSchema> = graph
        .nodes
        .iter()
        .map(|n| (n.type_name(), n.node.schema()))
        .collect();
    weft_core::comfy_prompt::to_api_prompt(&graph.doc, |ty| schemas.get(ty).copied())
}

/// Parses, detects the format (or insists on `only`: API accepts a bare
/// prompt or a request), and converts.
fn read(
    source: SourceFile,
    registry: &Registry,
    only: Option<Format>,
) -> Result<Workflow, Diagnostics> {
    let fail = |items| Diagnostics {
        source: source.clone(),
        items,
    };
    let root = json::parse(source.text()).map_err(|e| {
        fail(vec![Diagnostic::new(
            format!("JSON syntax error: {}", e.message),
            e.span,
        )])
    })?;
    let mut errors = Vec::new();
    let is_ui = root
        .value
        .get("nodes")
        .is_some_and(|n| n.value.as_array().is_some());
    let format = if is_ui {
        Format::Ui
    } else if api::is_request(&root.value) {
        Format::Request
    } else {
        Format::Api
    };
    if only == Some(Format::Api) && format == Format::Ui {
        return Err(fail(vec![Diagnostic::new(
            "this is a UI workflow (LiteGraph `nodes` and `links`); the API takes the API format (the UI's \"Export (API)\")",
            root.span,
        )]));
    }
    let mut request = RequestFields::default();
    let nodes = match format {
        Format::Ui => ui::read_workflow(&root, registry, &mut errors),
        Format::Api => api::read_prompt(&root, &mut errors),
        Format::Request => {
            let (prompt, fields) = api::split_request(&root, &mut errors);
            request = fields;
            api::read_prompt(prompt, &mut errors)
        }
    };
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    let (doc, nodes) = prompt::to_graph(&source, root.span, nodes, registry)?;
    Ok(Workflow {
        doc,
        nodes,
        format,
        request,
    })
}
