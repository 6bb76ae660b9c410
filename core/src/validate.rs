//! Whole-graph validation: every error in one pass, before anything runs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::graph::{GraphDoc, InputValue};
use crate::node::Node;
use crate::registry::Registry;
use crate::schema::OutputType;
use crate::source::SourceFile;
use crate::value::Value;
use weft_schema::ValueType;

/// A graph that passed validation: types resolved, links checked, no cycles.
#[derive(Clone)]
pub struct ValidGraph {
    pub source: SourceFile,
    pub title: Option<String>,
    /// In file order.
    pub nodes: Vec<PlannedNode>,
    /// Every node index, dependencies first.
    pub topo_order: Vec<usize>,
    /// The document as validated (overrides applied), for provenance.
    pub doc: Arc<GraphDoc>,
    /// Cache keys that depend on the graph alone, filled on the first run.
    pub(crate) structural: std::sync::OnceLock<Vec<Option<crate::cache::Signature>>>,
}

#[derive(Clone)]
pub struct PlannedNode {
    pub id: String,
    pub node: Arc<dyn Node>,
    /// One binding per schema input, defaults filled in.
    pub inputs: Vec<Binding>,
    pub output_types: Vec<ValueType>,
}

impl std::fmt::Debug for PlannedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedNode")
            .field("id", &self.id)
            .field("type", &self.type_name())
            .field("inputs", &self.inputs)
            .finish()
    }
}

impl std::fmt::Debug for ValidGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidGraph")
            .field("source", &self.source.name())
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl PlannedNode {
    pub fn type_name(&self) -> &str {
        &self.node.schema().type_name
    }
}

#[derive(Clone, Debug)]
pub enum Binding {
    Absent,
    Literal(Value),
    Link { node: usize, output: usize },
}

impl ValidGraph {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Indices of the output nodes, the default targets of a run.
    pub fn output_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.schema().output_node)
            .collect()
    }
}

/// Resolves node types and links, type-checks, and rejects cycles.
pub fn validate(
    doc: impl Into<Arc<GraphDoc>>,
    registry: &Registry,
) -> Result<ValidGraph, Diagnostics> {
    let doc: Arc<GraphDoc> = doc.into();
    let mut errors = Vec::new();
    let index: HashMap<&str, usize> = doc
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.value.as_str(), i))
        .collect();

    let types: Vec<Option<Arc<dyn Node>>> = doc
        .nodes
        .iter()
        .map(|decl| {
            let found = registry.get(&decl.ty.value).cloned();
            if found.is_none() {
                errors.push(
                    Diagnostic::new(
                        format!("unknown node type `{}`", decl.ty.value),
                        decl.ty.span,
                    )
                    .node(&decl.id.value)
                    .suggest(&decl.ty.value, registry.names()),
                );
            }
            found
        })
        .collect();

    for param in &doc.params {
        let target = index
            .get(param.node.as_str())
            .map(|&i| (&doc.nodes[i], &types[i]));
        match target {
            None => errors.push(
                Diagnostic::new(
                    format!(
                        "param `{}` targets a missing node `{}`",
                        param.name.value, param.node
                    ),
                    param.span,
                )
                .suggest(&param.node, index.keys().copied()),
            ),
            Some((_, Some(node))) if node.schema().input_index(&param.input).is_none() => errors
                .push(
                    Diagnostic::new(
                        format!(
                            "param `{}` targets `{}.{}`, which is not an input of {}",
                            param.name.value,
                            param.node,
                            param.input,
                            node.schema().type_name
                        ),
                        param.span,
                    )
                    .suggest(
                        &param.input,
                        node.schema().inputs.iter().map(|i| i.name.as_str()),
                    ),
                ),
            _ => {}
        }
    }

    let mut planned: Vec<Option<PlannedNode>> = Vec::with_capacity(doc.nodes.len());
    let mut link_spans = HashMap::new();
    for (i, decl) in doc.nodes.iter().enumerate() {
        let Some(node) = &types[i] else {
            planned.push(None);
            continue;
        };
        let schema = node.schema();
        let id = decl.id.value.as_str();
        let mut bindings = vec![Binding::Absent; schema.inputs.len()];
        for input in &decl.inputs {
            let name = input.name.value.as_str();
            let Some(slot) = schema.input_index(name) else {
                let names: Vec<&str> = schema.inputs.iter().map(|s| s.name.as_str()).collect();
                errors.push(
                    Diagnostic::new(
                        format!("{} has no input `{name}`", schema.type_name),
                        input.name.span,
                    )
                    .node(id)
                    .input(name)
                    .suggest(name, names.iter().copied())
                    .help_if_none(&format!("its inputs are: {}", names.join(", "))),
                );
                continue;
            };
            let spec = &schema.inputs[slot];
            let via = input
                .overridden_by
                .as_ref()
                .map(|o| format!(" (from `{o}`)"))
                .unwrap_or_default();
            match &input.value.value {
                InputValue::Literal(value) => {
                    let checked = if spec.ty.is_scalar() || spec.ty == ValueType::Any {
                        value
                            .to_literal()
                            .ok_or_else(|| format!("expected {}, found {}", spec.ty, value.ty()))
                            .and_then(|literal| spec.check_literal(&literal))
                    } else {
                        Err(format!(
                            "expected a {} from a link `Link(\"node\", \"output\")`, found a literal {}",
                            spec.ty,
                            value.ty()
                        ))
                    };
                    match checked {
                        Ok(()) => {
                            bindings[slot] = Binding::Literal(value.clone().coerce_to(spec.ty))
                        }
                        Err(e) => errors.push(
                            Diagnostic::new(format!("{e}{via}"), input.value.span)
                                .node(id)
                                .input(name),
                        ),
                    }
                }
                InputValue::Link {
                    node: target,
                    output,
                } => {
                    let Some(&src) = index.get(target.value.as_str()) else {
                        errors.push(
                            Diagnostic::new(
                                format!("link to a missing node `{}`", target.value),
                                target.span,
                            )
                            .node(id)
                            .input(name)
                            .suggest(&target.value, index.keys().copied()),
                        );
                        continue;
                    };
                    let Some(src_node) = &types[src] else {
                        continue;
                    };
                    let src_schema = src_node.schema();
                    match src_schema.output_index(&output.value) {
                        Some(out) => {
                            bindings[slot] = Binding::Link {
                                node: src,
                                output: out,
                            };
                            link_spans.insert((i, slot), input.value.span);
                        }
                        None => {
                            let outs: Vec<&str> =
                                src_schema.outputs.iter().map(|o| o.name.as_str()).collect();
                            errors.push(
                                Diagnostic::new(
                                    format!(
                                        "node `{}` ({}) has no output `{}`",
                                        target.value, src_schema.type_name, output.value
                                    ),
                                    output.span,
                                )
                                .node(id)
                                .input(name)
                                .suggest(&output.value, outs.iter().copied())
                                .help_if_none(&format!("its outputs are: {}", outs.join(", "))),
                            );
                        }
                    }
                }
            }
        }
        for (slot, spec) in schema.inputs.iter().enumerate() {
            if matches!(bindings[slot], Binding::Absent) {
                if let Some(default) = &spec.default {
                    bindings[slot] = Binding::Literal(Value::from(default.clone()));
                } else if spec.required && !decl.inputs.iter().any(|d| d.name.value == spec.name) {
                    errors.push(
                        Diagnostic::new(
                            format!("missing required input `{}` ({})", spec.name, spec.ty),
                            decl.ty.span,
                        )
                        .node(id)
                        .input(&spec.name),
                    );
                }
            }
        }
        planned.push(Some(PlannedNode {
            id: id.to_string(),
            node: node.clone(),
            inputs: bindings,
            output_types: Vec::new(),
        }));
    }

    let in_cycle = report_cycles(&doc, &planned, &mut errors);
    let topo_order = topological_order(&planned, &in_cycle);
    check_link_types(&doc, &mut planned, &topo_order, &link_spans, &mut errors);

    let all_known = types.iter().all(Option::is_some);
    let has_output = types.iter().flatten().any(|n| n.schema().output_node);
    if all_known && !has_output {
        errors.push(
            Diagnostic::new(
                "the graph has no output node, so running it would do nothing",
                doc.span,
            )
            .help("add an output node such as `Print`, `SaveText` or `SaveImage`"),
        );
    }

    if !errors.is_empty() {
        errors.sort_by_key(|d| d.span.map_or(0, |s| s.start));
        return Err(Diagnostics {
            source: doc.source.clone(),
            items: errors,
        });
    }
    Ok(ValidGraph {
        source: doc.source.clone(),
        title: doc.title.clone(),
        nodes: planned
            .into_iter()
            .map(|p| p.expect("no errors means every node resolved"))
            .collect(),
        topo_order,
        doc,
        structural: std::sync::OnceLock::new(),
    })
}

fn links(node: &PlannedNode) -> impl Iterator<Item = usize> + '_ {
    node.inputs.iter().filter_map(|b| match b {
        Binding::Link { node, .. } => Some(*node),
        _ => None,
    })
}

/// Reports each cycle once, as the path `a -> b -> a`, and marks its nodes.
fn report_cycles(
    doc: &GraphDoc,
    planned: &[Option<PlannedNode>],
    errors: &mut Vec<Diagnostic>,
) -> Vec<bool> {
    let mut graph = DiGraph::<usize, ()>::with_capacity(planned.len(), planned.len());
    let ids: Vec<NodeIndex> = (0..planned.len()).map(|i| graph.add_node(i)).collect();
    for (dst, p) in planned.iter().enumerate() {
        for src in p.iter().flat_map(links) {
            graph.add_edge(ids[src], ids[dst], ());
        }
    }
    let mut in_cycle = vec![false; planned.len()];
    for scc in petgraph::algo::kosaraju_scc(&graph) {
        let start = scc
            .iter()
            .map(|n| graph[*n])
            .min()
            .expect("sccs are non-empty");
        let self_loop = graph.contains_edge(ids[start], ids[start]);
        if scc.len() == 1 && !self_loop {
            continue;
        }
        let members: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
        for &m in &members {
            in_cycle[m] = true;
        }
        let path = cycle_path(&graph, &ids, start, &members);
        let text: Vec<&str> = path
            .iter()
            .map(|&i| doc.nodes[i].id.value.as_str())
            .collect();
        errors.push(
            Diagnostic::new(
                format!("dependency cycle: {}", text.join(" -> ")),
                doc.nodes[start].id.span,
            )
            .node(&doc.nodes[start].id.value),
        );
    }
    in_cycle
}

/// Shortest path from `start` back to itself inside one strongly connected component.
fn cycle_path(
    graph: &DiGraph<usize, ()>,
    ids: &[NodeIndex],
    start: usize,
    members: &[usize],
) -> Vec<usize> {
    let member: std::collections::HashSet<usize> = members.iter().copied().collect();
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for next in graph.neighbors(ids[at]).map(|n| graph[n]) {
            if next == start {
                let mut path = Vec::new();
                let mut cur = at;
                while cur != start {
                    path.push(cur);
                    cur = parent[&cur];
                }
                path.push(start);
                path.reverse();
                path.push(start);
                return path;
            }
            if member.contains(&next) && !parent.contains_key(&next) && next != start {
                parent.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

/// Kahn's algorithm over the acyclic part; iterative, so long chains are fine.
fn topological_order(planned: &[Option<PlannedNode>], in_cycle: &[bool]) -> Vec<usize> {
    let n = planned.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (dst, p) in planned.iter().enumerate() {
        for src in p.iter().flat_map(links) {
            indegree[dst] += 1;
            dependents[src].push(dst);
        }
    }
    let mut ready: VecDeque<usize> = (0..n)
        .filter(|&i| indegree[i] == 0 && !in_cycle[i])
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 && !in_cycle[d] {
                ready.push_back(d);
            }
        }
    }
    order
}

fn check_link_types(
    doc: &GraphDoc,
    planned: &mut [Option<PlannedNode>],
    topo_order: &[usize],
    link_spans: &HashMap<(usize, usize), crate::source::Span>,
    errors: &mut Vec<Diagnostic>,
) {
    for &i in topo_order {
        let Some(p) = &planned[i] else { continue };
        let schema = p.node.schema();
        let mut mismatches = Vec::new();
        let source_type = |b: &Binding| -> ValueType {
            match b {
                Binding::Absent => ValueType::Any,
                Binding::Literal(v) => v.ty(),
                Binding::Link { node, output } => planned[*node]
                    .as_ref()
                    .and_then(|s| s.output_types.get(*output).copied())
                    .unwrap_or(ValueType::Any),
            }
        };
        for (slot, binding) in p.inputs.iter().enumerate() {
            if let Binding::Link { node, output } = binding {
                let found = source_type(binding);
                let expected = schema.inputs[slot].ty;
                if !expected.accepts(found) {
                    let src = &doc.nodes[*node];
                    let out_name = planned[*node]
                        .as_ref()
                        .map_or("?", |s| s.node.schema().outputs[*output].name.as_str());
                    mismatches.push(
                        Diagnostic::new(
                            format!(
                                "type mismatch: expected {expected}, found {found} (output `{out_name}` of node `{}`)",
                                src.id.value
                            ),
                            link_spans[&(i, slot)],
                        )
                        .node(&p.id)
                        .input(&schema.inputs[slot].name),
                    );
                }
            }
        }
        let output_types = schema
            .outputs
            .iter()
            .map(|o| match &o.ty {
                OutputType::Fixed(t) => *t,
                OutputType::SameAs(input) => schema
                    .input_index(input)
                    .map_or(ValueType::Any, |slot| source_type(&p.inputs[slot])),
            })
            .collect();
        errors.extend(mismatches);
        if let Some(p) = &mut planned[i] {
            p.output_types = output_types;
        }
    }
}
