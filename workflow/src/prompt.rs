//! ComfyUI's API-format prompt as weft reads it, and its translation into a
//! [`GraphDoc`].
//!
//! Both file formats meet here: the API reader produces these nodes
//! directly, and the UI reader produces them after resolving LiteGraph's
//! reroutes, primitives, bypasses and subgraphs. Spans point into the JSON
//! the user has, so `validate` reports `file:line:col` there. One step
//! needs the schemas: ComfyUI numbers outputs where weft names them.

use std::collections::HashMap;

use weft_core::comfy_prompt::weft_input_name;
use weft_core::diagnostic::did_you_mean;
use weft_core::graph::{InputDecl, InputValue, NodeDecl};
use weft_core::{
    Diagnostic, Diagnostics, GraphDoc, Registry, SourceFile, Span, Spanned, Value, ValueType,
};

/// One node of a prompt.
#[derive(Clone, Debug)]
pub struct PromptNode {
    /// ComfyUI's id: `"3"`, or `"10:3"` inside subgraph instance 10.
    pub id: Spanned<String>,
    pub class_type: Spanned<String>,
    /// `_meta.title` (API) or the node's `title` (UI), when given.
    pub title: Option<String>,
    pub inputs: Vec<PromptInput>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct PromptInput {
    /// ComfyUI's input name.
    pub name: Spanned<String>,
    pub value: Spanned<PromptValue>,
}

#[derive(Clone, Debug)]
pub enum PromptValue {
    Literal(Value),
    Link { node: String, output: usize },
}

/// Where a node of the imported graph came from, to name it in errors.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeOrigin {
    pub id: String,
    pub class_type: String,
    pub title: Option<String>,
}

impl NodeOrigin {
    /// `3 “Positive prompt” (CLIPTextEncode)`, or `3 (CLIPTextEncode)`.
    pub fn describe(&self) -> String {
        match self.title.as_deref().filter(|t| *t != self.class_type) {
            Some(title) => format!("{} “{title}” ({})", self.id, self.class_type),
            None => format!("{} ({})", self.id, self.class_type),
        }
    }

    fn from_node(node: &PromptNode) -> Self {
        NodeOrigin {
            id: node.id.value.clone(),
            class_type: node.class_type.value.clone(),
            title: node.title.clone(),
        }
    }
}

/// How many closest weft types an unknown class lists.
const CLOSEST: usize = 3;

/// Translates the nodes into a graph document over `source`. Unknown
/// classes are reported together, in one error, with the closest weft types.
pub fn to_graph(
    source: &SourceFile,
    span: Span,
    nodes: Vec<PromptNode>,
    registry: &Registry,
) -> Result<(GraphDoc, Vec<NodeOrigin>), Diagnostics> {
    let fail = |items| Diagnostics {
        source: source.clone(),
        items,
    };
    if let Some(error) = unknown_classes(&nodes, registry) {
        return Err(fail(vec![error]));
    }
    let class_of: HashMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.id.value.as_str(), n.class_type.value.as_str()))
        .collect();
    let mut errors = Vec::new();
    let mut decls = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let class = node.class_type.value.as_str();
        let schema = registry.get(class).map(|n| n.schema());
        let origin = NodeOrigin::from_node(node);
        let mut inputs: Vec<InputDecl> = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            let name = weft_input_name(class, &input.name.value).to_string();
            let spec = schema.and_then(|s| s.inputs.iter().find(|i| i.name == name));
            let value = match &input.value.value {
                PromptValue::Literal(Value::Int(i))
                    if spec.is_some_and(|s| s.ty == ValueType::Float) =>
                {
                    InputValue::Literal(Value::Float(*i as f64))
                }
                PromptValue::Literal(v) => InputValue::Literal(v.clone()),
                PromptValue::Link { node: from, output } => {
                    let outputs = class_of
                        .get(from.as_str())
                        .and_then(|c| registry.get(c))
                        .map(|n| &n.schema().outputs);
                    let output_name = match outputs {
                        Some(outputs) => match outputs.get(*output) {
                            Some(o) => o.name.clone(),
                            None => {
                                errors.push(
                                    Diagnostic::new(
                                        format!(
                                            "{}: links to output {output} of node {}, which has {} output{}",
                                            origin.describe(),
                                            from,
                                            outputs.len(),
                                            if outputs.len() == 1 { "" } else { "s" }
                                        ),
                                        input.value.span,
                                    )
                                    .node(&origin.id)
                                    .input(&name),
                                );
                                continue;
                            }
                        },
                        // No such node: `validate` says so, at this span.
                        None => output.to_string(),
                    };
                    InputValue::Link {
                        node: Spanned::new(from.clone(), input.value.span),
                        output: Spanned::new(output_name, input.value.span),
                    }
                }
            };
            if inputs.iter().any(|i| i.name.value == name) {
                errors.push(
                    Diagnostic::new(
                        format!("{}: input `{name}` is given twice", origin.describe()),
                        input.name.span,
                    )
                    .node(&origin.id),
                );
                continue;
            }
            inputs.push(InputDecl {
                name: Spanned::new(name, input.name.span),
                value: Spanned::new(value, input.value.span),
                overridden_by: None,
            });
        }
        // Schema order reads best (widgets and links arrive apart).
        if let Some(schema) = schema {
            inputs.sort_by_key(|i| schema.input_index(&i.name.value).unwrap_or(usize::MAX));
        }
        decls.push(NodeDecl {
            id: node.id.clone(),
            ty: node.class_type.clone(),
            inputs,
            span: node.span,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for node in &nodes {
        if !seen.insert(node.id.value.as_str()) {
            errors.push(
                Diagnostic::new(
                    format!("node id `{}` is used twice", node.id.value),
                    node.id.span,
                )
                .node(&node.id.value),
            );
        }
    }
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    let origins = nodes.iter().map(NodeOrigin::from_node).collect();
    let doc = GraphDoc {
        source: source.clone(),
        title: None,
        params: Vec::new(),
        nodes: decls,
        span,
    };
    Ok((doc, origins))
}

/// One error naming every unknown class, the nodes using it, and the
/// closest weft types; `None` when all are known.
fn unknown_classes(nodes: &[PromptNode], registry: &Registry) -> Option<Diagnostic> {
    let mut unknown: Vec<(&str, Vec<&PromptNode>)> = Vec::new();
    for node in nodes {
        let class = node.class_type.value.as_str();
        if registry.get(class).is_some() {
            continue;
        }
        match unknown.iter_mut().find(|(c, _)| *c == class) {
            Some((_, users)) => users.push(node),
            None => unknown.push((class, vec![node])),
        }
    }
    let first_span = unknown.first()?.1[0].class_type.span;
    let lines: Vec<String> = unknown
        .iter()
        .map(|(class, users)| {
            let used_by: Vec<String> = users
                .iter()
                .take(5)
                .map(|n| NodeOrigin::from_node(n).describe())
                .collect();
            let more = users.len().saturating_sub(5);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let closest = closest_types(class, registry);
            let closest = if closest.is_empty() {
                "no close weft type".to_string()
            } else {
                format!(
                    "closest: {}",
                    closest
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            format!("`{class}` (node {}{more}; {closest})", used_by.join(", "))
        })
        .collect();
    let n = unknown.len();
    Some(
        Diagnostic::new(
            format!(
                "{n} node type{} that weft does not have: {}",
                if n == 1 { "" } else { "s" },
                lines.join("; ")
            ),
            first_span,
        )
        .help("`weft nodes` lists weft's node types; custom ComfyUI nodes need a weft plugin"),
    )
}

/// Up to [`CLOSEST`] weft types by similarity, best first; the best by
/// core's `did_you_mean` (the same measure and threshold as every other
/// suggestion) always leads when there is one.
fn closest_types<'a>(class: &str, registry: &'a Registry) -> Vec<&'a str> {
    let lower = class.to_lowercase();
    let mut scored: Vec<(f64, &str)> = registry
        .names()
        .map(|name| (strsim::jaro_winkler(&lower, &name.to_lowercase()), name))
        .filter(|(score, _)| *score > 0.7)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let mut out: Vec<&str> = did_you_mean(class, registry.names()).into_iter().collect();
    for (_, name) in scored {
        if out.len() == CLOSEST {
            break;
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Adds the ComfyUI title to errors about imported nodes, so a message
/// names the node the way the user's UI shows it.
pub fn name_nodes(mut diagnostics: Diagnostics, origins: &[NodeOrigin]) -> Diagnostics {
    let by_id: HashMap<&str, &NodeOrigin> = origins.iter().map(|o| (o.id.as_str(), o)).collect();
    for d in &mut diagnostics.items {
        let Some(origin) = d.node.as_deref().and_then(|id| by_id.get(id)) else {
            continue;
        };
        let name = origin.title.as_deref().unwrap_or(&origin.class_type);
        d.message = format!("“{name}”: {}", d.message);
    }
    diagnostics
}
