//! Node schemas: what a node type accepts and produces.
//!
//! Built-in and plugin nodes describe themselves with the same builder, and
//! validation, the CLI's `weft nodes` and the README's node reference all read
//! from it, so the documentation cannot drift from the code.

use serde::Serialize;

use crate::{Literal, ValueType};

#[derive(Clone, Debug, Serialize)]
pub struct InputSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ValueType,
    pub required: bool,
    pub default: Option<Literal>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub step: Option<f64>,
    pub choices: Option<Vec<String>>,
    /// Lazy inputs are computed only when the node asks for them.
    pub lazy: bool,
    /// For a STRING naming a model file: the ComfyUI model folder it is
    /// looked up in (`checkpoints`, `vae`, …). Listings offer that folder's
    /// files as choices; any other name or path is still accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_folder: Option<String>,
    pub doc: String,
}

impl InputSpec {
    fn new(name: &str, ty: ValueType) -> Self {
        InputSpec {
            name: name.into(),
            ty,
            required: true,
            default: None,
            min: None,
            max: None,
            step: None,
            choices: None,
            lazy: false,
            model_folder: None,
            doc: String::new(),
        }
    }

    pub fn int(name: &str) -> Self {
        Self::new(name, ValueType::Int)
    }
    pub fn float(name: &str) -> Self {
        Self::new(name, ValueType::Float)
    }
    pub fn bool(name: &str) -> Self {
        Self::new(name, ValueType::Bool)
    }
    pub fn string(name: &str) -> Self {
        Self::new(name, ValueType::String)
    }
    /// A string restricted to `choices`; the first choice is the default.
    pub fn choice(name: &str, choices: &[&str]) -> Self {
        let mut spec = Self::new(name, ValueType::String);
        spec.choices = Some(choices.iter().map(|c| c.to_string()).collect());
        spec.default = choices.first().map(|c| Literal::from(*c));
        spec.required = false;
        spec
    }
    /// A STRING naming a model file in ComfyUI's `folder` (`checkpoints`,
    /// `vae`, `loras`, …), or a path.
    pub fn model(name: &str, folder: &str) -> Self {
        let mut spec = Self::new(name, ValueType::String);
        spec.model_folder = Some(folder.into());
        spec
    }
    pub fn of(name: &str, ty: ValueType) -> Self {
        Self::new(name, ty)
    }

    /// Sets a default, which also makes the input optional.
    pub fn default(mut self, value: impl Into<Literal>) -> Self {
        self.default = Some(value.into().coerce_to(self.ty));
        self.required = false;
        self
    }
    /// Optional with no default: the node sees it as absent.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    pub fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }
    pub fn max(mut self, max: f64) -> Self {
        self.max = Some(max);
        self
    }
    pub fn range(self, min: f64, max: f64) -> Self {
        self.min(min).max(max)
    }
    pub fn step(mut self, step: f64) -> Self {
        self.step = Some(step);
        self
    }
    pub fn lazy(mut self) -> Self {
        self.lazy = true;
        self
    }
    pub fn doc(mut self, doc: &str) -> Self {
        self.doc = doc.into();
        self
    }

    /// Checks a literal against type, range and choices; the error says what was expected.
    pub fn check_literal(&self, value: &Literal) -> Result<(), String> {
        if !self.ty.accepts(value.ty()) {
            return Err(format!("expected {}, found {}", self.ty, value.ty()));
        }
        let number = match value {
            Literal::Int(i) => Some(*i as f64),
            Literal::Float(x) => Some(*x),
            _ => None,
        };
        if let Some(x) = number {
            if x.is_nan() {
                return Err("expected a number, found NaN".into());
            }
            if let Some(min) = self.min.filter(|min| x < *min) {
                return Err(format!("{value} is below the minimum {min}"));
            }
            if let Some(max) = self.max.filter(|max| x > *max) {
                return Err(format!("{value} is above the maximum {max}"));
            }
        }
        if let (Some(choices), Literal::String(s)) = (&self.choices, value) {
            if !choices.iter().any(|c| c == s) {
                return Err(format!("{s:?} is not one of: {}", choices.join(", ")));
            }
        }
        Ok(())
    }
}

/// An output's type: fixed, or the type of whatever is wired into an input
/// (how `Switch` stays typed without a variant per type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputType {
    Fixed(ValueType),
    SameAs(String),
}

impl Serialize for OutputType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OutputType::Fixed(t) => s.serialize_str(t.name()),
            OutputType::SameAs(input) => s.serialize_str(&format!("same as {input}")),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: OutputType,
    pub doc: String,
}

/// How much of the machine a node uses while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    /// Cheap, single-threaded: runs beside anything.
    Light,
    /// Uses every core (tensor math, model loading): the scheduler runs at
    /// most `heavy_slots` of these at once so they cannot oversubscribe the CPU.
    Heavy,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeSchema {
    #[serde(rename = "type")]
    pub type_name: String,
    pub category: String,
    pub doc: String,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// Output nodes have side effects (saving, printing) and are what a run targets.
    pub output_node: bool,
    /// Non-deterministic nodes re-run every time, and so do their dependents.
    pub deterministic: bool,
    /// The node reads external state (a file, a clock) and implements
    /// the node's `fingerprint` so the cache notices changes.
    pub external_state: bool,
    pub cost: Cost,
    /// Identifies the code behind the node type (for a plugin, its library's
    /// digest; empty for built-ins). Part of every cache key, so results of
    /// an older build of a reloaded plugin are never reused.
    #[serde(skip)]
    pub build: String,
    /// The plugin that provides the node type (`name version`), for listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

impl NodeSchema {
    pub fn new(type_name: &str, category: &str, doc: &str) -> Self {
        NodeSchema {
            type_name: type_name.into(),
            category: category.into(),
            doc: doc.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_node: false,
            deterministic: true,
            external_state: false,
            cost: Cost::Light,
            build: String::new(),
            plugin: None,
        }
    }

    pub fn input(mut self, spec: InputSpec) -> Self {
        self.inputs.push(spec);
        self
    }

    pub fn output(mut self, name: &str, ty: ValueType, doc: &str) -> Self {
        self.outputs.push(OutputSpec {
            name: name.into(),
            ty: OutputType::Fixed(ty),
            doc: doc.into(),
        });
        self
    }

    /// An output typed like whatever is connected to `input`.
    pub fn output_same_as(mut self, name: &str, input: &str, doc: &str) -> Self {
        self.outputs.push(OutputSpec {
            name: name.into(),
            ty: OutputType::SameAs(input.into()),
            doc: doc.into(),
        });
        self
    }

    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }

    pub fn non_deterministic(mut self) -> Self {
        self.deterministic = false;
        self
    }

    pub fn external_state(mut self) -> Self {
        self.external_state = true;
        self
    }

    pub fn heavy(mut self) -> Self {
        self.cost = Cost::Heavy;
        self
    }

    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|i| i.name == name)
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.name == name)
    }
}
