//! Reading LiteGraph's UI workflow into one flat list of nodes and links,
//! with subgraphs expanded.
//!
//! A UI workflow is `{nodes: [...], links: [[id, src, src_slot, dst,
//! dst_slot, type], ...], definitions: {subgraphs: [...]}}`. A subgraph
//! instance is a node whose `type` is a subgraph's id; inside a definition,
//! links are objects and the pseudo-nodes -10 and -20 stand for the
//! instance's inputs and outputs. Expanding an instance gives its inner
//! nodes the ids ComfyUI executes them under (`"10:3"`), turns a link from
//! -10 into a forward to whatever feeds the instance, and records which
//! inner output each instance output is, so every link still resolves by
//! following keys. Muted and bypassed instances stay whole: the UI
//! converter drops or bypasses them like any node.

use std::collections::HashMap;

use weft_core::{Diagnostic, Span, Spanned};

use crate::json::Json;

/// Subgraphs nested deeper than this are refused (a definition that
/// contains itself would otherwise expand forever).
const MAX_NESTING: usize = 16;
/// Expansion stops past this many nodes: nested instances multiply.
pub const MAX_NODES: usize = 100_000;

/// The pseudo-node ids of a subgraph's input and output boxes.
const SUBGRAPH_INPUT: i64 = -10;
const SUBGRAPH_OUTPUT: i64 = -20;

#[derive(Clone, Debug)]
pub struct UiNode<'a> {
    /// The full id: `"3"`, or `"10:3"` inside instance 10.
    pub id: Spanned<String>,
    pub ty: Spanned<String>,
    /// 0 always, 2 muted ("never"), 4 bypassed.
    pub mode: i64,
    pub title: Option<String>,
    pub inputs: Vec<UiSlot>,
    /// Output types, by slot.
    pub outputs: Vec<String>,
    pub widgets: Option<&'a Spanned<Json>>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct UiSlot {
    pub name: String,
    pub ty: String,
    /// The key of the link feeding this input (see [`Flat::links`]).
    pub link: Option<String>,
    pub span: Span,
}

/// Where a link's value comes from.
#[derive(Clone, Debug)]
pub enum LinkSource {
    Node {
        id: String,
        slot: usize,
    },
    /// A link from a subgraph's input box: whatever feeds the instance's
    /// input (the key of that link), if anything does.
    Forward(Option<String>),
}

/// The whole workflow, flattened.
#[derive(Debug, Default)]
pub struct Flat<'a> {
    /// In file order, each instance's inner nodes where the instance was.
    pub nodes: Vec<UiNode<'a>>,
    /// Link key (the link id, prefixed by the instance id inside a
    /// subgraph: `"10:7"`) → source.
    pub links: HashMap<String, LinkSource>,
    /// `(instance id, output slot)` → the key of the inner link that
    /// feeds that output.
    pub instance_outputs: HashMap<(String, usize), String>,
    /// Set when expansion stopped (too deep, too many nodes), so a hostile
    /// file gets one error, not one per instance.
    stopped: bool,
}

/// Flattens `root` (a UI workflow object).
pub fn flatten<'a>(root: &'a Spanned<Json>, errors: &mut Vec<Diagnostic>) -> Flat<'a> {
    let defs: HashMap<&str, &Spanned<Json>> = root
        .value
        .get("definitions")
        .and_then(|d| d.value.get("subgraphs"))
        .and_then(|s| s.value.as_array())
        .unwrap_or_default()
        .iter()
        .filter_map(|def| Some((def.value.get("id")?.value.as_str()?, def)))
        .collect();
    let mut flat = Flat::default();
    let scope = Scope {
        prefix: String::new(),
        instance: None,
        depth: 0,
    };
    add_scope(root, &scope, &defs, &mut flat, errors);
    flat
}

/// The subgraph being expanded: its instance's id and what feeds each of
/// the definition's inputs.
struct Scope {
    /// `""` at the top, `"10:"` inside instance 10.
    prefix: String,
    instance: Option<Instance>,
    depth: usize,
}

struct Instance {
    /// Definition input index → key of the link feeding the instance there.
    inputs: Vec<Option<String>>,
}

fn add_scope<'a>(
    graph: &'a Spanned<Json>,
    scope: &Scope,
    defs: &HashMap<&str, &'a Spanned<Json>>,
    flat: &mut Flat<'a>,
    errors: &mut Vec<Diagnostic>,
) {
    match graph.value.get("links") {
        None => {}
        Some(links) => match links.value.as_array() {
            Some(links) => {
                for link in links {
                    add_link(link, scope, flat);
                }
            }
            None => errors.push(Diagnostic::new(
                format!("`links` must be an array, found {}", links.value.kind()),
                links.span,
            )),
        },
    }
    let Some(nodes) = graph.value.get("nodes") else {
        errors.push(Diagnostic::new("a workflow has `nodes`", graph.span));
        return;
    };
    let Some(nodes) = nodes.value.as_array() else {
        errors.push(Diagnostic::new(
            format!("`nodes` must be an array, found {}", nodes.value.kind()),
            nodes.span,
        ));
        return;
    };
    for node in nodes {
        if flat.stopped {
            return;
        }
        if flat.nodes.len() >= MAX_NODES {
            errors.push(Diagnostic::new(
                format!("the workflow expands to more than {MAX_NODES} nodes"),
                node.span,
            ));
            flat.stopped = true;
            return;
        }
        let Some(node) = read_node(node, &scope.prefix, errors) else {
            continue;
        };
        let def = defs.get(node.ty.value.as_str());
        match def {
            Some(def) if node.mode != 2 && node.mode != 4 => {
                if scope.depth >= MAX_NESTING {
                    errors.push(Diagnostic::new(
                        format!("subgraphs nest deeper than {MAX_NESTING} levels"),
                        node.ty.span,
                    ));
                    flat.stopped = true;
                    return;
                }
                expand(&node, def, scope, defs, flat, errors);
            }
            _ => flat.nodes.push(node),
        }
    }
}

/// Replaces instance `node` of subgraph `def` by its inner nodes.
fn expand<'a>(
    node: &UiNode<'a>,
    def: &'a Spanned<Json>,
    scope: &Scope,
    defs: &HashMap<&str, &'a Spanned<Json>>,
    flat: &mut Flat<'a>,
    errors: &mut Vec<Diagnostic>,
) {
    let def_inputs = def
        .value
        .get("inputs")
        .and_then(|i| i.value.as_array())
        .unwrap_or_default();
    // The instance's slots follow the definition's inputs; match by name
    // first, as the frontend does, then by position.
    let inputs = def_inputs
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let name = input.value.get("name").and_then(|n| n.value.as_str());
            let slot = node
                .inputs
                .iter()
                .find(|s| Some(s.name.as_str()) == name)
                .or_else(|| node.inputs.get(k));
            slot.and_then(|s| s.link.clone())
        })
        .collect();
    let inner = Scope {
        prefix: format!("{}:", node.id.value),
        instance: Some(Instance { inputs }),
        depth: scope.depth + 1,
    };
    add_scope(def, &inner, defs, flat, errors);
}

/// Records one link: `[id, src, src_slot, dst, dst_slot, type]` or
/// `{id, origin_id, origin_slot, target_id, target_slot, type}`.
fn add_link(link: &Spanned<Json>, scope: &Scope, flat: &mut Flat<'_>) {
    let field = |index: usize, name: &str| match &link.value {
        Json::Array(items) => items.get(index).map(|i| &i.value),
        Json::Object(_) => link.value.get(name).map(|v| &v.value),
        _ => None,
    };
    let (Some(id), Some(src), Some(src_slot)) = (
        field(0, "id").and_then(id_text),
        field(1, "origin_id").and_then(id_text),
        field(2, "origin_slot").and_then(Json::as_i64),
    ) else {
        return; // A malformed link feeds nothing; its input is then missing.
    };
    let key = format!("{}{id}", scope.prefix);
    let dst = field(3, "target_id").and_then(Json::as_i64);
    let Ok(src_slot) = usize::try_from(src_slot) else {
        return;
    };
    if let Some(instance) = &scope.instance {
        if dst == Some(SUBGRAPH_OUTPUT) {
            if let Some(out_slot) = field(4, "target_slot")
                .and_then(Json::as_i64)
                .and_then(|s| usize::try_from(s).ok())
            {
                let instance_id = scope.prefix.trim_end_matches(':').to_string();
                flat.instance_outputs
                    .insert((instance_id, out_slot), key.clone());
            }
        }
        if src == SUBGRAPH_INPUT.to_string() {
            let fed = instance.inputs.get(src_slot).cloned().flatten();
            flat.links.insert(key, LinkSource::Forward(fed));
            return;
        }
    }
    flat.links.insert(
        key,
        LinkSource::Node {
            id: format!("{}{src}", scope.prefix),
            slot: src_slot,
        },
    );
}

/// Node and link ids are numbers in LiteGraph (strings in some tools).
fn id_text(json: &Json) -> Option<String> {
    match json {
        Json::Int(i) => Some(i.to_string()),
        Json::Str(s) => Some(s.clone()),
        _ => json.as_i64().map(|i| i.to_string()),
    }
}

fn read_node<'a>(
    node: &'a Spanned<Json>,
    prefix: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<UiNode<'a>> {
    let Json::Object(_) = node.value else {
        errors.push(Diagnostic::new(
            format!("a workflow node is an object, found {}", node.value.kind()),
            node.span,
        ));
        return None;
    };
    let Some(id) = node.value.get("id") else {
        errors.push(Diagnostic::new("this node has no `id`", node.span));
        return None;
    };
    let Some(id_str) = id_text(&id.value) else {
        errors.push(Diagnostic::new(
            format!("a node `id` is a number, found {}", id.value.kind()),
            id.span,
        ));
        return None;
    };
    let full_id = format!("{prefix}{id_str}");
    let ty = match node.value.get("type") {
        Some(Spanned {
            value: Json::Str(s),
            span,
        }) => Spanned::new(s.clone(), *span),
        _ => {
            errors.push(
                Diagnostic::new(format!("node {full_id} has no `type` string"), node.span)
                    .node(&full_id),
            );
            return None;
        }
    };
    let slots = |name: &str| {
        node.value
            .get(name)
            .and_then(|s| s.value.as_array())
            .unwrap_or_default()
    };
    let text = |json: &Spanned<Json>, key: &str| {
        json.value
            .get(key)
            .and_then(|v| v.value.as_str())
            .map(str::to_string)
    };
    let inputs = slots("inputs")
        .iter()
        .map(|slot| UiSlot {
            name: text(slot, "name").unwrap_or_default(),
            ty: text(slot, "type").unwrap_or_default(),
            link: slot
                .value
                .get("link")
                .and_then(|l| id_text(&l.value))
                .map(|l| format!("{prefix}{l}")),
            span: slot.span,
        })
        .collect();
    let outputs = slots("outputs")
        .iter()
        .map(|slot| text(slot, "type").unwrap_or_default())
        .collect();
    Some(UiNode {
        id: Spanned::new(full_id, id.span),
        ty,
        mode: node
            .value
            .get("mode")
            .and_then(|m| m.value.as_i64())
            .unwrap_or(0),
        title: text(node, "title"),
        inputs,
        outputs,
        widgets: node.value.get("widgets_values"),
        span: node.span,
    })
}
