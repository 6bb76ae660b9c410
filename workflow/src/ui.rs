//! ComfyUI's UI workflow (LiteGraph) as prompt nodes: what the frontend's
//! "queue prompt" sends, computed offline.
//!
//! - `widgets_values` are positional over the widget inputs, which for weft
//!   are the schema's literal-typed (INT, FLOAT, BOOLEAN, STRING) inputs in
//!   order. A seed's "control after generate" value (`"randomize"`, …)
//!   follows it in the list and is not an input. Values past weft's widget
//!   inputs (UI-only widgets such as LoadImage's upload button) are ignored.
//! - Frontend-only nodes never reach the server: a Reroute passes its input
//!   on, a PrimitiveNode's value flows into the inputs it feeds, Notes are
//!   dropped.
//! - A muted node (mode 2) is dropped, and inputs it fed are left unset.
//!   A bypassed node (mode 4) is dropped too, and each of its outputs is
//!   fed by its input of the same type, as the frontend does.
//! - Groups are layout only and ignored; subgraphs are expanded by
//!   [`crate::litegraph`].

use std::collections::HashMap;

use weft_core::comfy_prompt::weft_input_name;
use weft_core::{Diagnostic, NodeSchema, Registry, Spanned, Value, ValueType};

use crate::json::Json;
use crate::litegraph::{self, LinkSource, UiNode};
use crate::prompt::{PromptInput, PromptNode, PromptValue};

/// Node types that exist only in the frontend.
const FRONTEND_ONLY: [&str; 4] = ["Note", "MarkdownNote", "Reroute", "PrimitiveNode"];
/// What follows a seed in `widgets_values`: the frontend's own setting.
const CONTROL_AFTER_GENERATE: [&str; 4] = ["fixed", "increment", "decrement", "randomize"];
const MUTED: i64 = 2;
const BYPASSED: i64 = 4;
/// Chains of reroutes and bypasses longer than this are cycles.
const MAX_HOPS: usize = 10_000;

/// Converts a UI workflow to prompt nodes; `registry` names the widgets.
pub fn read_workflow(
    root: &Spanned<Json>,
    registry: &Registry,
    errors: &mut Vec<Diagnostic>,
) -> Vec<PromptNode> {
    let flat = litegraph::flatten(root, errors);
    let resolver = Resolver {
        links: &flat.links,
        instance_outputs: &flat.instance_outputs,
        by_id: flat
            .nodes
            .iter()
            .map(|n| (n.id.value.as_str(), n))
            .collect(),
    };
    let mut nodes = Vec::new();
    for node in &flat.nodes {
        let class = node.ty.value.as_str();
        if node.mode == MUTED || node.mode == BYPASSED || FRONTEND_ONLY.contains(&class) {
            continue;
        }
        let schema = registry.get(class).map(|n| n.schema());
        let mut inputs = match schema {
            Some(schema) => widget_inputs(node, schema, errors),
            None => Vec::new(),
        };
        for slot in &node.inputs {
            let Some(key) = &slot.link else { continue };
            let value = match resolver.resolve(key) {
                Some(Source::Output { id, slot }) => PromptValue::Link {
                    node: id.to_string(),
                    output: slot,
                },
                Some(Source::Value(json)) => match literal(json, &slot.name, node) {
                    Ok(Some(v)) => PromptValue::Literal(v),
                    Ok(None) => continue,
                    Err(d) => {
                        errors.push(d);
                        continue;
                    }
                },
                None => continue,
            };
            let name = weft_input_name(class, &slot.name);
            inputs.retain(|i| weft_input_name(class, &i.name.value) != name);
            inputs.push(PromptInput {
                name: Spanned::new(slot.name.clone(), slot.span),
                value: Spanned::new(value, slot.span),
            });
        }
        nodes.push(PromptNode {
            id: node.id.clone(),
            class_type: node.ty.clone(),
            title: node.title.clone(),
            inputs,
            span: node.span,
        });
    }
    nodes
}

/// What feeds an input once frontend-only nodes are seen through.
enum Source<'a> {
    Output {
        id: &'a str,
        slot: usize,
    },
    /// A PrimitiveNode's value.
    Value(&'a Spanned<Json>),
}

struct Resolver<'a> {
    links: &'a HashMap<String, LinkSource>,
    instance_outputs: &'a HashMap<(String, usize), String>,
    by_id: HashMap<&'a str, &'a UiNode<'a>>,
}

impl<'a> Resolver<'a> {
    /// Follows link `key` through forwards, subgraph outputs, reroutes and
    /// bypassed nodes; `None` when nothing real feeds it (a muted node, a
    /// dangling link, a cycle).
    fn resolve(&self, key: &str) -> Option<Source<'a>> {
        let mut key = key.to_string();
        for _ in 0..MAX_HOPS {
            let (id, slot) = match self.links.get(&key)? {
                LinkSource::Forward(next) => {
                    key = next.clone()?;
                    continue;
                }
                LinkSource::Node { id, slot } => (id, *slot),
            };
            if let Some(next) = self.instance_outputs.get(&(id.clone(), slot)) {
                key = next.clone();
                continue;
            }
            let node = *self.by_id.get(id.as_str())?;
            match node.ty.value.as_str() {
                _ if node.mode == MUTED => return None,
                "Reroute" => key = node.inputs.first()?.link.clone()?,
                "PrimitiveNode" => {
                    let first = node.widgets?.value.as_array()?.first()?;
                    return Some(Source::Value(first));
                }
                "Note" | "MarkdownNote" => return None,
                _ if node.mode == BYPASSED => key = bypass_input(node, slot)?,
                _ => {
                    return Some(Source::Output {
                        id: &node.id.value,
                        slot,
                    })
                }
            }
        }
        None
    }
}

/// The link a bypassed node passes through to output `slot`: the input
/// in the same position if its type fits, else the first input of the
/// output's type, else the first whose type is compatible.
fn bypass_input(node: &UiNode<'_>, slot: usize) -> Option<String> {
    let out_ty = node.outputs.get(slot).map_or("*", String::as_str);
    let linked = || node.inputs.iter().filter(|i| i.link.is_some());
    node.inputs
        .get(slot)
        .filter(|i| i.link.is_some() && compatible(&i.ty, out_ty))
        .or_else(|| linked().find(|i| i.ty == out_ty))
        .or_else(|| linked().find(|i| compatible(&i.ty, out_ty)))
        .and_then(|i| i.link.clone())
}

/// LiteGraph's rule: equal, a wildcard, or sharing one of comma-separated types.
fn compatible(a: &str, b: &str) -> bool {
    let wild = |t: &str| t.is_empty() || t == "*";
    wild(a)
        || wild(b)
        || a.eq_ignore_ascii_case(b)
        || a.split(',')
            .any(|x| b.split(',').any(|y| x.trim() == y.trim()))
}

/// The node's widget values as inputs named by weft's schema.
fn widget_inputs(
    node: &UiNode<'_>,
    schema: &NodeSchema,
    errors: &mut Vec<Diagnostic>,
) -> Vec<PromptInput> {
    let Some(widgets) = node.widgets else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |name: &str, json: &Spanned<Json>, errors: &mut Vec<Diagnostic>| match literal(
        json, name, node,
    ) {
        Ok(Some(value)) => out.push(PromptInput {
            name: Spanned::new(name.to_string(), json.span),
            value: Spanned::new(PromptValue::Literal(value), json.span),
        }),
        Ok(None) => {}
        Err(d) => errors.push(d),
    };
    match &widgets.value {
        Json::Array(values) => {
            let mut values = values.iter().peekable();
            for spec in schema.inputs.iter().filter(|s| s.ty.is_scalar()) {
                let Some(value) = values.next() else { break };
                push(&spec.name, value, errors);
                let seed = spec.ty == ValueType::Int && spec.name.contains("seed");
                if seed
                    && values.peek().is_some_and(|next| {
                        next.value
                            .as_str()
                            .is_some_and(|s| CONTROL_AFTER_GENERATE.contains(&s))
                    })
                {
                    values.next();
                }
            }
        }
        // Some frontends save widgets by name.
        Json::Object(_) => {
            for (name, value) in widgets.value.entries() {
                let weft = weft_input_name(&schema.type_name, &name.value);
                if schema
                    .inputs
                    .iter()
                    .any(|s| s.name == weft && s.ty.is_scalar())
                {
                    push(weft, value, errors);
                }
            }
        }
        Json::Null => {}
        other => errors.push(
            Diagnostic::new(
                format!("`widgets_values` must be an array, found {}", other.kind()),
                widgets.span,
            )
            .node(&node.id.value),
        ),
    }
    out
}

/// A widget value as a literal; `None` for `null` (left to the default).
fn literal(
    json: &Spanned<Json>,
    input: &str,
    node: &UiNode<'_>,
) -> Result<Option<Value>, Diagnostic> {
    Ok(Some(match &json.value {
        Json::Null => return Ok(None),
        Json::Bool(b) => Value::Bool(*b),
        Json::Int(i) => Value::Int(*i),
        Json::Float(x) => Value::Float(*x),
        Json::Str(s) => Value::String(s.as_str().into()),
        other => {
            let name = node.title.as_deref().unwrap_or(&node.ty.value);
            return Err(Diagnostic::new(
                format!(
                    "node {} “{name}”: the widget value for `{input}` is {}; weft takes numbers, strings and booleans",
                    node.id.value,
                    other.kind()
                ),
                json.span,
            )
            .node(&node.id.value)
            .input(input));
        }
    }))
}
