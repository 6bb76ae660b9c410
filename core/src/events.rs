//! Execution events: what the CLI renders as progress bars or JSON lines,
//! and what the tests count.

use std::sync::Arc;

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    GraphStart {
        /// Nodes the requested outputs need.
        nodes: usize,
    },
    /// Nodes whose results came from the cache and will not run.
    Cached {
        nodes: Vec<String>,
    },
    NodeStart {
        node: String,
        #[serde(rename = "type")]
        ty: String,
    },
    Progress {
        node: String,
        value: u64,
        max: u64,
    },
    NodeDone {
        node: String,
        #[serde(rename = "type")]
        ty: String,
        duration_ms: f64,
    },
    NodeFailed {
        node: String,
        #[serde(rename = "type")]
        ty: String,
        message: String,
        /// `(input, value summary)` for every input the node received.
        inputs: Vec<(String, String)>,
    },
    /// A node that could not run because something it needs failed.
    NodeSkipped {
        node: String,
        because: String,
    },
    /// Free-form output from output nodes such as `Print`.
    Output {
        node: String,
        text: String,
    },
    GraphDone {
        executed: usize,
        cached: usize,
        failed: usize,
        duration_ms: f64,
    },
    Interrupted {
        executed: usize,
    },
    /// The graph failed to load or validate (`weft watch` keeps the last good one).
    GraphInvalid {
        errors: Vec<String>,
    },
}

impl Event {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

/// Where events go; cheap to clone into worker threads.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(&Event) + Send + Sync>);

impl EventSink {
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(f))
    }

    pub fn discard() -> Self {
        EventSink::new(|_| {})
    }

    pub fn emit(&self, event: Event) {
        (self.0)(&event)
    }
}
