//! The set of node types a graph may use.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::node::Node;
use crate::schema::{NodeSchema, OutputType};
use weft_schema::ValueType;

#[derive(Clone, Default)]
pub struct Registry {
    nodes: BTreeMap<String, Arc<dyn Node>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node type after checking its schema is self-consistent, so a
    /// broken plugin is refused at load time instead of failing mid-run.
    pub fn register(&mut self, node: impl Node) -> Result<(), String> {
        self.register_arc(Arc::new(node))
    }

    /// Adds a family's node types (its `nodes()` list).
    pub fn register_all(&mut self, nodes: Vec<crate::NodeDef>) -> Result<(), String> {
        nodes.into_iter().try_for_each(|n| self.register(n))
    }

    pub fn register_arc(&mut self, node: Arc<dyn Node>) -> Result<(), String> {
        let schema = node.schema();
        check_schema(schema)?;
        if self.nodes.contains_key(&schema.type_name) {
            return Err(format!(
                "node type `{}` is already registered",
                schema.type_name
            ));
        }
        self.nodes.insert(schema.type_name.clone(), node);
        Ok(())
    }

    /// Drops a node type, for plugin reloads.
    pub fn unregister(&mut self, type_name: &str) -> Option<Arc<dyn Node>> {
        self.nodes.remove(type_name)
    }

    pub fn get(&self, type_name: &str) -> Option<&Arc<dyn Node>> {
        self.nodes.get(type_name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Schemas sorted by category, then name.
    pub fn schemas(&self) -> Vec<&NodeSchema> {
        let mut all: Vec<&NodeSchema> = self.nodes.values().map(|n| n.schema()).collect();
        all.sort_by(|a, b| (&a.category, &a.type_name).cmp(&(&b.category, &b.type_name)));
        all
    }
}

fn check_schema(schema: &NodeSchema) -> Result<(), String> {
    let ty = &schema.type_name;
    let is_identifier = ty.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_identifier || ty == "Link" {
        return Err(format!(
            "node type name {ty:?} must be an identifier (letters, digits, `_`), and not `Link`"
        ));
    }
    for (i, input) in schema.inputs.iter().enumerate() {
        if schema.inputs[..i].iter().any(|o| o.name == input.name) {
            return Err(format!("{ty}: input `{}` is declared twice", input.name));
        }
        if let Some(default) = &input.default {
            input
                .check_literal(default)
                .map_err(|e| format!("{ty}: default of `{}`: {e}", input.name))?;
        }
        if input.default.is_some() && !input.ty.is_scalar() {
            return Err(format!(
                "{ty}: only scalar inputs can have defaults (`{}`)",
                input.name
            ));
        }
    }
    for (i, output) in schema.outputs.iter().enumerate() {
        if schema.outputs[..i].iter().any(|o| o.name == output.name) {
            return Err(format!("{ty}: output `{}` is declared twice", output.name));
        }
        match &output.ty {
            OutputType::SameAs(input) if schema.input_index(input).is_none() => {
                return Err(format!(
                    "{ty}: output `{}` is typed like input `{input}`, which does not exist",
                    output.name
                ))
            }
            OutputType::Fixed(ValueType::Any) => {
                return Err(format!(
                    "{ty}: output `{}` cannot be `*`; use output_same_as",
                    output.name
                ))
            }
            _ => {}
        }
    }
    Ok(())
}
