//! Shared helpers for the end-to-end tests: an event recorder and a few
//! instrumented node types that only tests need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_core::{
    CancelToken, Event, EventSink, Executor, InputSpec, Node, NodeContext, NodeError, NodeSchema,
    Registry, RunOptions, RunReport, SourceFile, ValidGraph, Value, ValueType,
};

/// Records every event of a run.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    pub fn sink(&self) -> EventSink {
        let log = self.0.clone();
        EventSink::new(move |e| log.lock().unwrap().push(e.clone()))
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// Ids of the nodes that started, in order.
pub fn started(events: &[Event]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::NodeStart { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

/// The built-ins plus the test nodes below.
pub fn registry() -> Registry {
    let mut r = weft_nodes::builtin_registry();
    r.register(Sleep::new(false)).unwrap();
    r.register(Sleep::new(true)).unwrap();
    r.register(Explode::new()).unwrap();
    r.register(Random::new()).unwrap();
    r
}

pub fn load(text: &str) -> Result<ValidGraph, weft_core::Diagnostics> {
    weft_core::load(SourceFile::new("test.ron", text), &registry(), &[])
}

pub fn run_with(exec: &Executor, graph: &ValidGraph, workers: usize) -> (RunReport, Vec<Event>) {
    let rec = Recorder::default();
    let opts = RunOptions {
        workers,
        ..RunOptions::default()
    };
    let report = exec
        .run(graph, &opts, &rec.sink(), &CancelToken::new())
        .unwrap();
    (report, rec.take())
}

/// Passes `value` through after `ms` milliseconds, checking for cancellation.
/// `HeavySleep` is the same, declared heavy.
pub struct Sleep(NodeSchema);

impl Sleep {
    pub fn new(heavy: bool) -> Self {
        let schema = NodeSchema::new(
            if heavy { "HeavySleep" } else { "Sleep" },
            "test",
            "Waits, then passes the value on.",
        )
        .input(InputSpec::int("value"))
        .input(InputSpec::int("ms").default(0).min(0.0))
        .output("value", ValueType::Int, "");
        Sleep(if heavy { schema.heavy() } else { schema })
    }
}

impl Node for Sleep {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }
    fn run(&self, ctx: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        let ms = ctx.inputs.int("ms")? as u64;
        for step in 0..ms.div_ceil(5) {
            ctx.check_cancelled()?;
            ctx.progress(step + 1, ms.div_ceil(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(vec![ctx.inputs.value("value")?.clone()])
    }
}

/// Panics: stands in for a buggy third-party node.
pub struct Explode(NodeSchema);

impl Explode {
    pub fn new() -> Self {
        Explode(
            NodeSchema::new("Explode", "test", "Panics.")
                .input(InputSpec::int("value"))
                .output("value", ValueType::Int, ""),
        )
    }
}

impl Default for Explode {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for Explode {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }
    fn run(&self, _: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        panic!("boom")
    }
}

/// A different integer every run: non-deterministic.
pub struct Random(NodeSchema);

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Random {
    pub fn new() -> Self {
        Random(
            NodeSchema::new("Random", "test", "A fresh integer each run.")
                .output("value", ValueType::Int, "")
                .non_deterministic(),
        )
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}

impl Node for Random {
    fn schema(&self) -> &NodeSchema {
        &self.0
    }
    fn run(&self, _: &NodeContext<'_>) -> Result<Vec<Value>, NodeError> {
        Ok(vec![Value::Int(
            COUNTER.fetch_add(1, Ordering::Relaxed) as i64
        )])
    }
}
