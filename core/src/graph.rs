//! The graph file format: what a person writes, before any node type is looked up.
//!
//! ```ron
//! // Comments are allowed anywhere.
//! (
//!     title: "Arithmetic",
//!     params: { "x": "two.value" },        // `--set x=5` overrides two.value
//!     nodes: {
//!         "two": IntConstant(value: 2),
//!         "sum": IntMath(a: Link("two", "value"), b: 3, op: "add"),
//!         "show": Print(value: Link("sum", "value")),
//!     },
//! )
//! ```
//!
//! A node is `Type(input: value, ...)`. A link is always `Link("node", "output")`
//! and a literal is always a number, bool or string, so the two cannot be confused.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source::{SourceFile, Span, Spanned};
use crate::syntax::{self, Ron};
use crate::value::Value;

#[derive(Clone, Debug)]
pub struct GraphDoc {
    pub source: SourceFile,
    pub title: Option<String>,
    pub params: Vec<ParamDecl>,
    pub nodes: Vec<NodeDecl>,
    /// The whole top-level value, for errors about the graph as a whole.
    pub span: Span,
}

/// A graph-level name for one node input, overridable from the command line.
#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: Spanned<String>,
    pub node: String,
    pub input: String,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct NodeDecl {
    pub id: Spanned<String>,
    pub ty: Spanned<String>,
    pub inputs: Vec<InputDecl>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct InputDecl {
    pub name: Spanned<String>,
    pub value: Spanned<InputValue>,
    /// Set when the value came from `--set`, so errors can say so.
    pub overridden_by: Option<String>,
}

#[derive(Clone, Debug)]
pub enum InputValue {
    Literal(Value),
    Link {
        node: Spanned<String>,
        output: Spanned<String>,
    },
}

const TOP_FIELDS: [&str; 3] = ["title", "params", "nodes"];

/// Whether a node id can be used in `--set node.input=...` unambiguously.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl GraphDoc {
    /// Reads a graph file, reporting every structural problem at once.
    pub fn parse(source: SourceFile) -> Result<GraphDoc, Diagnostics> {
        let fail = |items| Diagnostics {
            source: source.clone(),
            items,
        };
        let root = syntax::parse(source.text()).map_err(|e| {
            fail(vec![Diagnostic::new(
                format!("syntax error: {}", e.message),
                e.span,
            )])
        })?;
        let mut errors = Vec::new();
        let mut doc = GraphDoc {
            source: source.clone(),
            title: None,
            params: Vec::new(),
            nodes: Vec::new(),
            span: root.span,
        };
        let fields = match root.value {
            Ron::Struct { fields, .. } => fields,
            Ron::Tuple { items, .. } if items.is_empty() => Vec::new(),
            other => {
                return Err(fail(vec![Diagnostic::new(
                    format!(
                        "a graph file is a struct `(title: .., params: {{..}}, nodes: {{..}})`, found {}",
                        other.kind()
                    ),
                    root.span,
                )]))
            }
        };
        let mut seen_nodes = false;
        for (name, value) in fields {
            match name.value.as_str() {
                "title" => match value.value {
                    Ron::Str(s) => doc.title = Some(s),
                    other => errors.push(Diagnostic::new(
                        format!("`title` must be a string, found {}", other.kind()),
                        value.span,
                    )),
                },
                "params" => doc.params = parse_params(value, &mut errors),
                "nodes" => {
                    seen_nodes = true;
                    doc.nodes = parse_nodes(value, &mut errors);
                }
                other => errors.push(
                    Diagnostic::new(format!("unknown graph field `{other}`"), name.span)
                        .suggest(other, TOP_FIELDS)
                        .help_if_none("graph fields are: title, params, nodes"),
                ),
            }
        }
        if !seen_nodes {
            errors.push(Diagnostic::new(
                "the graph has no `nodes: { .. }` field",
                root.span,
            ));
        }
        if errors.is_empty() {
            Ok(doc)
        } else {
            Err(fail(errors))
        }
    }

    pub fn node(&self, id: &str) -> Option<&NodeDecl> {
        self.nodes.iter().find(|n| n.id.value == id)
    }

    /// Applies `--set target=value`, where target is a param name or
    /// `node.input`, and value is a RON literal (bare words read as strings).
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (target, raw) = assignment
            .split_once('=')
            .ok_or_else(|| format!("`--set {assignment}`: expected TARGET=VALUE"))?;
        let (node_id, input) = match self.params.iter().find(|p| p.name.value == target) {
            Some(p) => (p.node.clone(), p.input.clone()),
            None => {
                let (n, i) = target.split_once('.').ok_or_else(|| {
                    let names: Vec<&str> =
                        self.params.iter().map(|p| p.name.value.as_str()).collect();
                    format!(
                        "`--set {assignment}`: `{target}` is neither a graph param ({}) nor `node.input`",
                        if names.is_empty() { "none declared".into() } else { names.join(", ") }
                    )
                })?;
                (n.to_string(), i.to_string())
            }
        };
        let value = parse_literal(raw);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id.value == node_id)
            .ok_or_else(|| format!("`--set {assignment}`: there is no node `{node_id}`"))?;
        let span = node.ty.span;
        let decl = InputDecl {
            name: Spanned::new(input.clone(), span),
            value: Spanned::new(InputValue::Literal(value), span),
            overridden_by: Some(format!("--set {assignment}")),
        };
        match node.inputs.iter_mut().find(|i| i.name.value == input) {
            Some(existing) => {
                let span = existing.value.span;
                existing.value = Spanned::new(decl.value.value, span);
                existing.overridden_by = decl.overridden_by;
            }
            None => node.inputs.push(decl),
        }
        Ok(())
    }
}

/// Reads a command-line literal: RON number, bool or quoted string, else the raw text.
pub fn parse_literal(raw: &str) -> Value {
    match syntax::parse(raw).map(|v| v.value) {
        Ok(Ron::Int(i)) => Value::Int(i),
        Ok(Ron::Float(x)) => Value::Float(x),
        Ok(Ron::Bool(b)) => Value::Bool(b),
        Ok(Ron::Str(s)) => Value::String(s.into()),
        _ => Value::String(raw.into()),
    }
}

fn parse_params(value: Spanned<Ron>, errors: &mut Vec<Diagnostic>) -> Vec<ParamDecl> {
    let Ron::Map(entries) = value.value else {
        errors.push(Diagnostic::new(
            format!(
                "`params` must be a map like {{ \"seed\": \"noise.seed\" }}, found {}",
                value.value.kind()
            ),
            value.span,
        ));
        return Vec::new();
    };
    let mut params = Vec::new();
    for (key, target) in entries {
        let span = key.span.to(target.span);
        let (Ron::Str(name), Ron::Str(target_text)) = (&key.value, &target.value) else {
            errors.push(Diagnostic::new(
                "a param maps a name to \"node.input\", both strings",
                span,
            ));
            continue;
        };
        let Some((node, input)) = target_text.split_once('.') else {
            errors.push(Diagnostic::new(
                format!("param target `{target_text}` must be \"node.input\""),
                target.span,
            ));
            continue;
        };
        if params.iter().any(|p: &ParamDecl| &p.name.value == name) {
            errors.push(Diagnostic::new(
                format!("param `{name}` is declared twice"),
                key.span,
            ));
            continue;
        }
        params.push(ParamDecl {
            name: Spanned::new(name.clone(), key.span),
            node: node.into(),
            input: input.into(),
            span: target.span,
        });
    }
    params
}

fn parse_nodes(value: Spanned<Ron>, errors: &mut Vec<Diagnostic>) -> Vec<NodeDecl> {
    let Ron::Map(entries) = value.value else {
        errors.push(Diagnostic::new(
            format!(
                "`nodes` must be a map of node id to `Type(..)`, found {}",
                value.value.kind()
            ),
            value.span,
        ));
        return Vec::new();
    };
    let mut nodes: Vec<NodeDecl> = Vec::with_capacity(entries.len());
    let mut ids = std::collections::HashSet::with_capacity(entries.len());
    for (key, body) in entries {
        let Ron::Str(id) = key.value else {
            errors.push(Diagnostic::new(
                format!("a node id must be a string, found {}", key.value.kind()),
                key.span,
            ));
            continue;
        };
        if !valid_node_id(&id) {
            errors.push(
                Diagnostic::new(format!("invalid node id {id:?}"), key.span)
                    .help("node ids use letters, digits, `_` and `-`"),
            );
            continue;
        }
        if !ids.insert(id.clone()) {
            errors
                .push(Diagnostic::new(format!("node `{id}` is defined twice"), key.span).node(&id));
            continue;
        }
        let id = Spanned::new(id, key.span);
        if let Some(node) = parse_node(id, body, errors) {
            nodes.push(node);
        }
    }
    nodes
}

fn parse_node(
    id: Spanned<String>,
    body: Spanned<Ron>,
    errors: &mut Vec<Diagnostic>,
) -> Option<NodeDecl> {
    let span = body.span;
    let (ty, fields) = match body.value {
        Ron::Struct {
            name: Some(name),
            fields,
        } => (name, fields),
        Ron::Tuple {
            name: Some(name),
            items,
        } if items.is_empty() => (name, Vec::new()),
        Ron::Ident(name) => (Spanned::new(name, span), Vec::new()),
        other => {
            errors.push(
                Diagnostic::new(
                    format!(
                        "expected a node `Type(input: value, ..)`, found {}",
                        other.kind()
                    ),
                    span,
                )
                .node(&id.value),
            );
            return None;
        }
    };
    let mut inputs: Vec<InputDecl> = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        if inputs.iter().any(|i| i.name.value == name.value) {
            errors.push(
                Diagnostic::new(format!("input `{}` is given twice", name.value), name.span)
                    .node(&id.value)
                    .input(&name.value),
            );
            continue;
        }
        match input_value(value) {
            Ok(value) => inputs.push(InputDecl {
                name,
                value,
                overridden_by: None,
            }),
            Err(d) => errors.push(d.node(&id.value).input(&name.value)),
        }
    }
    Some(NodeDecl {
        id,
        ty,
        inputs,
        span,
    })
}

fn input_value(value: Spanned<Ron>) -> Result<Spanned<InputValue>, Diagnostic> {
    let span = value.span;
    let literal = |v: Value| Ok(Spanned::new(InputValue::Literal(v), span));
    match value.value {
        Ron::Int(i) => literal(Value::Int(i)),
        Ron::Float(x) => literal(Value::Float(x)),
        Ron::Bool(b) => literal(Value::Bool(b)),
        Ron::Str(s) => literal(Value::String(s.into())),
        Ron::Char(c) => literal(Value::String(c.to_string().into())),
        Ron::Tuple {
            name: Some(name),
            items,
        } if name.value == "Link" => {
            let strings: Vec<_> = items
                .into_iter()
                .filter_map(|i| match i.value {
                    Ron::Str(s) => Some(Spanned::new(s, i.span)),
                    _ => None,
                })
                .collect();
            match <[Spanned<String>; 2]>::try_from(strings) {
                Ok([node, output]) => Ok(Spanned::new(InputValue::Link { node, output }, span)),
                Err(_) => Err(Diagnostic::new(
                    "a link is written `Link(\"node\", \"output\")`",
                    span,
                )),
            }
        }
        other => Err(Diagnostic::new(
            format!(
                "expected a literal (number, bool, string) or `Link(\"node\", \"output\")`, found {}",
                other.kind()
            ),
            span,
        )),
    }
}
