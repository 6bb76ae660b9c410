//! The one trait every node type implements, built-in or plugin.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::events::{Event, EventSink, PreviewPng};
use crate::graph::GraphDoc;
use crate::preview::{PreviewLimiter, PreviewMethod, Previews};
use crate::schema::NodeSchema;
use crate::value::Value;

/// A node type. One instance serves every node of that type in every graph,
/// so implementations keep no per-run state.
pub trait Node: Send + Sync + 'static {
    fn schema(&self) -> &NodeSchema;

    /// Computes the outputs, in the schema's output order.
    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError>;

    /// Which lazy inputs this node needs, given its eager inputs. Unrequested
    /// lazy inputs are never computed and never affect the cache key.
    fn needed_lazy(&self, inputs: &Inputs) -> Result<Vec<String>, NodeError> {
        Ok(crate::define::all_lazy(inputs))
    }

    /// A digest of external state (a file's size and mtime, say), mixed into
    /// the cache key of nodes whose schema sets `external_state`.
    fn fingerprint(&self, _inputs: &Inputs) -> Result<String, NodeError> {
        Ok(String::new())
    }
}

/// Why a node did not produce outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeError {
    pub message: String,
    /// The input the problem is about, when there is one.
    pub input: Option<String>,
    pub cancelled: bool,
}

impl NodeError {
    pub fn new(message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
            input: None,
            cancelled: false,
        }
    }

    pub fn input(name: &str, message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
            input: Some(name.into()),
            cancelled: false,
        }
    }

    pub fn cancelled() -> Self {
        NodeError {
            message: "interrupted".into(),
            input: None,
            cancelled: true,
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.input {
            Some(input) => write!(f, "input `{input}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<candle_core::Error> for NodeError {
    fn from(e: candle_core::Error) -> Self {
        NodeError::new(e.to_string())
    }
}

/// Cooperative interruption, shared by the CLI's Ctrl-C handler and every node.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Resets after an interrupted run, so `weft watch` can go on.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A node's resolved inputs, indexed like its schema; defaults already applied.
pub struct Inputs {
    /// The node these inputs belong to; its schema names the slots.
    schema: Arc<dyn Node>,
    values: Vec<Option<Value>>,
    base_dir: Option<Arc<Path>>,
    confined: bool,
}

impl Inputs {
    pub(crate) fn new(
        node: Arc<dyn Node>,
        values: Vec<Option<Value>>,
        base_dir: Option<&Path>,
        confined: bool,
    ) -> Self {
        Inputs {
            schema: node,
            values,
            base_dir: base_dir.map(Arc::from),
            confined,
        }
    }

    /// Whether file inputs must stay inside [`Inputs::base_dir`] and model
    /// names inside the model folders ([`crate::RunOptions::confine_files`]).
    pub fn confined(&self) -> bool {
        self.confined
    }

    /// The graph file's folder, where relative paths in inputs resolve
    /// first; `None` for a graph that did not come from a file.
    pub fn base_dir(&self) -> Option<&Path> {
        self.base_dir.as_deref()
    }

    pub fn schema(&self) -> &NodeSchema {
        self.schema.schema()
    }

    pub(crate) fn node(&self) -> &Arc<dyn Node> {
        &self.schema
    }

    /// The value of an input, or `None` for an absent optional or an unrequested lazy input.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let idx = self.schema().input_index(name)?;
        self.values.get(idx)?.as_ref()
    }

    pub fn value(&self, name: &str) -> Result<&Value, NodeError> {
        self.get(name)
            .ok_or_else(|| NodeError::input(name, "missing value"))
    }

    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.value(name)? {
            Value::Int(i) => Ok(*i),
            other => Err(type_error(name, "INT", other)),
        }
    }

    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.value(name)? {
            Value::Float(x) => Ok(*x),
            Value::Int(i) => Ok(*i as f64),
            other => Err(type_error(name, "FLOAT", other)),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        match self.value(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(type_error(name, "BOOLEAN", other)),
        }
    }

    pub fn str(&self, name: &str) -> Result<&str, NodeError> {
        match self.value(name)? {
            Value::String(s) => Ok(s),
            other => Err(type_error(name, "STRING", other)),
        }
    }

    /// Name and summary of every present input, for failure reports.
    pub fn summaries(&self) -> Vec<(String, String)> {
        self.schema()
            .inputs
            .iter()
            .zip(&self.values)
            .filter_map(|(spec, v)| v.as_ref().map(|v| (spec.name.clone(), v.summary())))
            .collect()
    }
}

fn type_error(name: &str, expected: &str, found: &Value) -> NodeError {
    NodeError::input(name, format!("expected {expected}, found {}", found.ty()))
}

/// What a running node can see and do besides its inputs.
pub struct NodeContext<'a> {
    pub inputs: &'a Inputs,
    pub node_id: &'a str,
    pub out_dir: &'a Path,
    /// Threads this node may use without oversubscribing the machine.
    pub threads: usize,
    pub(crate) cancel: &'a CancelToken,
    pub(crate) events: &'a EventSink,
    pub(crate) graph: &'a GraphText,
    pub(crate) previews: &'a Previews,
    pub(crate) preview_limiter: Mutex<PreviewLimiter>,
}

/// The run's validated document and its texts (weft's RON, ComfyUI's API
/// prompt), each printed on first request and then shared, so a run that
/// saves many images prints the graph once and a run that saves none never
/// prints it.
pub(crate) struct GraphText {
    doc: Arc<GraphDoc>,
    /// The node types of the run, which number outputs for ComfyUI.
    types: Vec<Arc<dyn Node>>,
    text: OnceLock<String>,
    comfy_prompt: OnceLock<String>,
}

impl GraphText {
    pub(crate) fn new(graph: &crate::ValidGraph) -> Self {
        GraphText {
            doc: graph.doc.clone(),
            types: graph.nodes.iter().map(|n| n.node.clone()).collect(),
            text: OnceLock::new(),
            comfy_prompt: OnceLock::new(),
        }
    }
}

impl NodeContext<'_> {
    /// Reports step progress (`value` of `max`).
    pub fn progress(&self, value: u64, max: u64) {
        self.events.emit(Event::Progress {
            node: self.node_id.into(),
            value,
            max,
        });
    }

    /// The run's preview settings.
    pub fn previews(&self) -> &Previews {
        self.previews
    }

    /// Whether step `step` of `max` should get a preview: never when
    /// previews are off, else at most one per the run's interval, and
    /// always the last step. Ask before making the picture, which costs.
    pub fn preview_due(&self, step: u64, max: u64) -> bool {
        self.previews.method != PreviewMethod::None
            && self
                .preview_limiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .due(step, max)
    }

    /// Sends a preview of this node's work after `step` of `max` steps: a
    /// PNG of `width`×`height` pixels.
    pub fn preview(&self, step: u64, max: u64, width: u32, height: u32, png: Vec<u8>) {
        self.events.emit(Event::Preview {
            node: self.node_id.into(),
            step,
            max,
            width,
            height,
            png: PreviewPng(png.into()),
        });
    }

    /// Shows text to the user (printed by the CLI, an `output` event in JSON mode).
    pub fn output(&self, text: impl Into<String>) {
        self.events.emit(Event::Output {
            node: self.node_id.into(),
            text: text.into(),
        });
    }

    /// Returns an error once the run has been interrupted; long loops call this each step.
    pub fn check_cancelled(&self) -> Result<(), NodeError> {
        if self.cancel.is_cancelled() {
            Err(NodeError::cancelled())
        } else {
            Ok(())
        }
    }

    pub fn cancel_token(&self) -> &CancelToken {
        self.cancel
    }

    /// The graph being run, as RON with seeds and `--set` overrides applied
    /// ([`crate::write::to_ron`] of the validated document), so an output can
    /// record exactly how it was made and be re-run from that record.
    pub fn graph_ron(&self) -> &str {
        self.graph
            .text
            .get_or_init(|| crate::write::to_ron(&self.graph.doc))
    }

    /// The same graph as a ComfyUI API-format prompt
    /// ([`crate::comfy_prompt::to_api_prompt`]), the `prompt` text chunk
    /// ComfyUI's UI loads from a dropped PNG.
    pub fn graph_comfy_prompt(&self) -> &str {
        self.graph.comfy_prompt.get_or_init(|| {
            let schemas: std::collections::HashMap<&str, &NodeSchema> = self
                .graph
                .types
                .iter()
                .map(|n| (n.schema().type_name.as_str(), n.schema()))
                .collect();
            crate::comfy_prompt::to_api_prompt(&self.graph.doc, |ty| schemas.get(ty).copied())
        })
    }
}
