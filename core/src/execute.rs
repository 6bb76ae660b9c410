//! Running a validated graph: only what the targets need, independent nodes
//! in parallel, cached results reused, failures contained to their dependents.
//!
//! A run has three phases:
//! 1. **Signatures.** Walking dependencies first, each node's signature is
//!    computed from its type, literals, fingerprint and inputs' signatures.
//!    A node whose signature depends on a runtime value (a lazy node whose
//!    choice is not memoised yet, or a fingerprint over a linked input) gets
//!    its signature later, when its inputs exist.
//! 2. **Demand.** Walking back from the targets, a node found in the cache
//!    stops the walk: its ancestors are not needed, even if they were evicted.
//! 3. **Execution.** Ready nodes go to a crossbeam worker pool; the calling
//!    thread owns all state, so there is no locking on the hot path.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel as channel;

use crate::cache::{Cache, Outputs, Signature};
use crate::events::{Event, EventSink};
use crate::node::{CancelToken, GraphText, Inputs, NodeContext, NodeError};
use crate::preview::{PreviewLimiter, Previews};
use crate::schema::Cost;
use crate::validate::{Binding, PlannedNode, ValidGraph};
use weft_schema::ValueType;

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Worker threads for independent nodes (1 runs everything inline).
    pub workers: usize,
    /// How many `Heavy` nodes may run at once; 1 keeps them from fighting
    /// over the cores.
    pub heavy_slots: usize,
    /// Threads a heavy node may use for its own math.
    pub threads: usize,
    pub out_dir: PathBuf,
    /// Node ids to compute; `None` means every output node.
    pub targets: Option<Vec<String>>,
    /// The graph file's folder: relative paths in inputs resolve here first
    /// ([`crate::Inputs::base_dir`]), wherever weft is run from.
    pub base_dir: Option<PathBuf>,
    /// Live previews from nodes that can show their work so far (samplers);
    /// none by default.
    pub previews: Previews,
    /// Files named by inputs must lie inside `base_dir`, and model names
    /// inside the model folders: for graphs sent over the network
    /// (`weft serve`), which must not read the machine's other files.
    pub confine_files: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        RunOptions {
            workers: cores,
            heavy_slots: 1,
            threads: cores,
            out_dir: PathBuf::from("."),
            targets: None,
            base_dir: None,
            previews: Previews::default(),
            confine_files: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeFailure {
    pub node: String,
    pub type_name: String,
    pub message: String,
    pub inputs: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub executed: Vec<String>,
    pub cached: Vec<String>,
    pub failed: Vec<NodeFailure>,
    pub skipped: Vec<String>,
    pub interrupted: bool,
    /// The outputs of each target that finished, by node id.
    pub outputs: Vec<(String, Outputs)>,
    pub duration: Duration,
}

impl RunReport {
    pub fn success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }

    pub fn output(&self, node: &str) -> Option<&Outputs> {
        self.outputs
            .iter()
            .find(|(id, _)| id == node)
            .map(|(_, o)| o)
    }
}

/// Owns the cache, so successive runs (and `weft watch` reloads) reuse results
/// and keep loaded models in memory.
pub struct Executor {
    cache: Mutex<Cache>,
    runs: AtomicU64,
}

impl Executor {
    pub fn new(cache_budget_bytes: usize) -> Self {
        Executor {
            cache: Mutex::new(Cache::new(cache_budget_bytes)),
            runs: AtomicU64::new(0),
        }
    }

    pub fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn run(
        &self,
        graph: &ValidGraph,
        opts: &RunOptions,
        events: &EventSink,
        cancel: &CancelToken,
    ) -> Result<RunReport, String> {
        let targets = match &opts.targets {
            None => graph.output_nodes(),
            Some(ids) => ids
                .iter()
                .map(|id| {
                    graph
                        .index_of(id)
                        .ok_or_else(|| format!("no node `{id}` to run"))
                })
                .collect::<Result<_, _>>()?,
        };
        let nonce = self.runs.fetch_add(1, Ordering::Relaxed);
        let mut run = Run::new(graph, opts, events, cancel, nonce);
        let mut cache = self.cache();
        run.static_signatures(&mut cache);
        for &t in &targets {
            run.demand(t, &mut cache);
        }
        drop(cache);
        events.emit(Event::GraphStart {
            nodes: run.needed_count(),
        });
        if !run.report.cached.is_empty() {
            events.emit(Event::Cached {
                nodes: run.report.cached.clone(),
            });
        }
        run.execute(self);
        for &t in &targets {
            if let State::Done(outputs) = &run.state[t] {
                run.report
                    .outputs
                    .push((graph.nodes[t].id.clone(), outputs.clone()));
            }
        }
        run.report.duration = run.started.elapsed();
        let r = &run.report;
        events.emit(if r.interrupted {
            Event::Interrupted {
                executed: r.executed.len(),
            }
        } else {
            Event::GraphDone {
                executed: r.executed.len(),
                cached: r.cached.len(),
                failed: r.failed.len(),
                duration_ms: r.duration.as_secs_f64() * 1e3,
            }
        });
        Ok(run.report)
    }
}

#[derive(Clone)]
enum State {
    /// Not needed by this run.
    Idle,
    /// Needed, waiting for `pending` dependencies.
    Waiting,
    Running,
    Done(Outputs),
    /// Failed, skipped or interrupted; carries the reason for dependents.
    Dead(String),
}

struct Run<'g> {
    graph: &'g ValidGraph,
    opts: &'g RunOptions,
    events: &'g EventSink,
    cancel: &'g CancelToken,
    nonce: u64,
    started: Instant,
    state: Vec<State>,
    sig: Vec<Option<Signature>>,
    /// Results that must not enter the cache (non-deterministic ancestry).
    volatile: Vec<bool>,
    /// For nodes with lazy inputs: which ones were asked for, once known.
    selection: Vec<Option<Arc<[bool]>>>,
    pending: Vec<usize>,
    waiters: Vec<Vec<usize>>,
    /// Nodes waiting on an identical node (same signature) that is running.
    inflight: std::collections::HashMap<Signature, Vec<usize>>,
    /// Demanded but not yet counted into `pending`/`waiters`.
    fresh: Vec<usize>,
    ready: VecDeque<usize>,
    report: RunReport,
    /// The graph's RON text for nodes that record it, printed at most once.
    graph_text: Arc<GraphText>,
}

enum Dep {
    Eager,
    Lazy,
}

impl<'g> Run<'g> {
    fn new(
        graph: &'g ValidGraph,
        opts: &'g RunOptions,
        events: &'g EventSink,
        cancel: &'g CancelToken,
        nonce: u64,
    ) -> Self {
        let n = graph.nodes.len();
        Run {
            graph,
            opts,
            events,
            cancel,
            nonce,
            started: Instant::now(),
            state: vec![State::Idle; n],
            sig: vec![None; n],
            volatile: vec![false; n],
            selection: vec![None; n],
            pending: vec![0; n],
            waiters: vec![Vec::new(); n],
            inflight: std::collections::HashMap::new(),
            fresh: Vec::new(),
            ready: VecDeque::new(),
            report: RunReport::default(),
            graph_text: Arc::new(GraphText::new(graph)),
        }
    }

    fn needed_count(&self) -> usize {
        self.state
            .iter()
            .filter(|s| !matches!(s, State::Idle))
            .count()
    }

    /// Links of node `i` with their kind: eager, or lazy.
    fn links(&self, i: usize) -> impl Iterator<Item = (usize, usize, Dep)> + 'g {
        let node = &self.graph.nodes[i];
        let specs = &node.node.schema().inputs;
        node.inputs
            .iter()
            .enumerate()
            .filter_map(move |(slot, b)| match b {
                Binding::Link { node, .. } => Some((
                    slot,
                    *node,
                    if specs[slot].lazy {
                        Dep::Lazy
                    } else {
                        Dep::Eager
                    },
                )),
                _ => None,
            })
    }

    /// Dependencies a node waits on: eager links, plus lazy ones once selected.
    fn deps(&self, i: usize) -> Vec<usize> {
        let selection = self.selection[i].clone();
        self.links(i)
            .filter(|(slot, _, dep)| match dep {
                Dep::Eager => true,
                Dep::Lazy => selection.as_ref().is_some_and(|s| s[*slot]),
            })
            .map(|(_, src, _)| src)
            .collect()
    }

    fn has_lazy_links(&self, i: usize) -> bool {
        self.links(i).any(|(_, _, d)| matches!(d, Dep::Lazy))
    }

    fn signature(&self, i: usize, eager_only: bool, fingerprint: &str) -> Option<Signature> {
        node_signature(
            &self.graph.nodes[i],
            &self.sig,
            self.selection[i].as_deref(),
            eager_only,
            fingerprint,
            self.nonce,
        )
    }

    fn literal_only(&self, i: usize) -> bool {
        self.links(i).next().is_none()
    }

    /// Phase 1: every signature that can be known before anything runs.
    fn static_signatures(&mut self, cache: &mut Cache) {
        let structural = self.graph.structural_signatures();
        for &i in &self.graph.topo_order {
            if let Some(sig) = structural[i] {
                self.sig[i] = Some(sig);
                continue;
            }
            let node = &self.graph.nodes[i];
            let schema = node.node.schema();
            self.volatile[i] =
                !schema.deterministic || self.links(i).any(|(_, src, _)| self.volatile[src]);
            let fingerprint = if schema.external_state {
                if !self.literal_only(i) {
                    continue;
                }
                match node.node.fingerprint(&self.literal_inputs(i)) {
                    Ok(f) => f,
                    Err(_) => continue, // reported when the node runs
                }
            } else {
                String::new()
            };
            if self.has_lazy_links(i) {
                let Some(eager) = self.signature(i, true, &fingerprint) else {
                    continue;
                };
                self.selection[i] = cache.selection(&eager);
            }
            self.sig[i] = self.signature(i, false, &fingerprint);
        }
    }

    fn literal_inputs(&self, i: usize) -> Inputs {
        let node = &self.graph.nodes[i];
        let values = node
            .inputs
            .iter()
            .map(|b| match b {
                Binding::Literal(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        Inputs::new(
            node.node.clone(),
            values,
            self.opts.base_dir.as_deref(),
            self.opts.confine_files,
        )
    }

    /// Phase 2: marks `target` and what it needs, stopping at cache hits.
    fn demand(&mut self, target: usize, cache: &mut Cache) {
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if !matches!(self.state[i], State::Idle) {
                continue;
            }
            if let Some(hit) = self.sig[i].as_ref().and_then(|s| cache.get(s)) {
                self.state[i] = State::Done(hit);
                self.report.cached.push(self.graph.nodes[i].id.clone());
                continue;
            }
            self.state[i] = State::Waiting;
            self.fresh.push(i);
            stack.extend(self.deps(i));
        }
    }

    /// Counts unfinished dependencies and registers as their waiter.
    fn wait_or_ready(&mut self, i: usize) {
        let mut pending = 0;
        let mut deps = self.deps(i);
        deps.sort_unstable();
        deps.dedup();
        for src in deps {
            match &self.state[src] {
                State::Done(_) => {}
                State::Dead(why) => {
                    let why = why.clone();
                    self.kill(i, why);
                    return;
                }
                _ => {
                    pending += 1;
                    self.waiters[src].push(i);
                }
            }
        }
        self.pending[i] = pending;
        if pending == 0 {
            self.ready.push_back(i);
        }
    }

    /// Marks `i` and everything waiting on it as not runnable.
    fn kill(&mut self, i: usize, because: String) {
        let mut stack = vec![(i, because)];
        while let Some((n, why)) = stack.pop() {
            if matches!(self.state[n], State::Dead(_) | State::Done(_)) {
                continue;
            }
            let id = self.graph.nodes[n].id.clone();
            if !self.cancel.is_cancelled() {
                self.events.emit(Event::NodeSkipped {
                    node: id.clone(),
                    because: why.clone(),
                });
                self.report.skipped.push(id.clone());
            }
            self.state[n] = State::Dead(why);
            for w in std::mem::take(&mut self.waiters[n]) {
                stack.push((w, format!("`{id}` did not finish")));
            }
        }
    }

    fn gather_inputs(&self, i: usize) -> Inputs {
        let node = &self.graph.nodes[i];
        let selection = self.selection[i].clone();
        let values = node
            .inputs
            .iter()
            .enumerate()
            .map(|(slot, b)| match b {
                Binding::Absent => None,
                Binding::Literal(v) => Some(v.clone()),
                Binding::Link { node: src, output } => {
                    let lazy = node.node.schema().inputs[slot].lazy;
                    if lazy && !selection.as_ref().is_some_and(|s| s[slot]) {
                        return None;
                    }
                    match &self.state[*src] {
                        State::Done(outs) => outs.get(*output).cloned(),
                        _ => None,
                    }
                }
            })
            .collect();
        Inputs::new(
            node.node.clone(),
            values,
            self.opts.base_dir.as_deref(),
            self.opts.confine_files,
        )
    }

    /// A node whose dependencies are all done: settle its lazy choice and
    /// signature, then take it from the cache or hand it out to run.
    fn prepare(&mut self, i: usize, cache: &Mutex<Cache>) -> Option<Inputs> {
        let inputs = self.gather_inputs(i);
        let node = self.graph.nodes[i].node.clone();
        let fingerprint = if node.schema().external_state {
            match catch_unwind(AssertUnwindSafe(|| node.fingerprint(&inputs))) {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    self.fail(i, &inputs, e.to_string());
                    return None;
                }
                Err(panic) => {
                    self.fail(i, &inputs, panic_message(panic));
                    return None;
                }
            }
        } else {
            String::new()
        };
        if self.has_lazy_links(i) && self.selection[i].is_none() {
            let wanted = match catch_unwind(AssertUnwindSafe(|| node.needed_lazy(&inputs))) {
                Ok(Ok(w)) => w,
                Ok(Err(e)) => {
                    self.fail(i, &inputs, e.to_string());
                    return None;
                }
                Err(panic) => {
                    self.fail(i, &inputs, panic_message(panic));
                    return None;
                }
            };
            let specs = &node.schema().inputs;
            let selection: Arc<[bool]> = specs
                .iter()
                .map(|s| s.lazy && wanted.contains(&s.name))
                .collect();
            if let Some(eager) = self.signature(i, true, &fingerprint) {
                lock(cache).remember_selection(eager, selection.clone());
            }
            self.selection[i] = Some(selection);
            let fresh: Vec<usize> = self.deps(i);
            {
                let mut cache = lock(cache);
                for src in fresh {
                    self.demand(src, &mut cache);
                }
            }
            self.register_fresh();
            self.wait_or_ready(i);
            return None;
        }
        if self.sig[i].is_none() {
            self.sig[i] = self.signature(i, false, &fingerprint);
        }
        if let Some(hit) = self.sig[i].as_ref().and_then(|s| lock(cache).get(s)) {
            let id = self.graph.nodes[i].id.clone();
            self.events.emit(Event::Cached {
                nodes: vec![id.clone()],
            });
            self.report.cached.push(id);
            self.finish(i, hit);
            return None;
        }
        // An identical node is already running: share its result.
        if let Some(sig) = self.sig[i].filter(|_| !self.volatile[i]) {
            match self.inflight.entry(sig) {
                std::collections::hash_map::Entry::Occupied(mut twins) => {
                    twins.get_mut().push(i);
                    return None;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Vec::new());
                }
            }
        }
        Some(inputs)
    }

    /// Registers nodes that `demand` marked as waiting since the last call.
    fn register_fresh(&mut self) {
        for n in std::mem::take(&mut self.fresh) {
            if matches!(self.state[n], State::Waiting) {
                self.wait_or_ready(n);
            }
        }
    }

    fn finish(&mut self, i: usize, outputs: Outputs) {
        self.state[i] = State::Done(outputs);
        for w in std::mem::take(&mut self.waiters[i]) {
            self.pending[w] -= 1;
            if self.pending[w] == 0 {
                self.ready.push_back(w);
            }
        }
    }

    fn fail(&mut self, i: usize, inputs: &Inputs, message: String) {
        let node = &self.graph.nodes[i];
        let failure = NodeFailure {
            node: node.id.clone(),
            type_name: node.type_name().to_string(),
            message,
            inputs: inputs.summaries(),
        };
        self.events.emit(Event::NodeFailed {
            node: failure.node.clone(),
            ty: failure.type_name.clone(),
            message: failure.message.clone(),
            inputs: failure.inputs.clone(),
        });
        let id = failure.node.clone();
        self.report.failed.push(failure);
        self.state[i] = State::Dead(format!("`{id}` failed"));
        for w in std::mem::take(&mut self.waiters[i]) {
            self.kill(w, format!("`{id}` failed"));
        }
    }

    /// Phase 3.
    fn execute(&mut self, exec: &Executor) {
        self.register_fresh();
        let workers = self.opts.workers.max(1);
        if workers == 1 {
            self.drive(exec, None);
            return;
        }
        let (job_tx, job_rx) = channel::unbounded::<Job>();
        let (done_tx, done_rx) = channel::unbounded::<JobResult>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let job_rx = job_rx.clone();
                let done_tx = done_tx.clone();
                let events = self.events.clone();
                let cancel = self.cancel.clone();
                let out_dir = self.opts.out_dir.clone();
                let graph_text = self.graph_text.clone();
                let previews = &self.opts.previews;
                scope.spawn(move || {
                    for job in job_rx {
                        let result = job.run(&events, &cancel, &out_dir, &graph_text, previews);
                        if done_tx.send(result).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            self.drive(exec, Some((job_tx, done_rx)));
        });
    }

    /// The coordinator loop: hand out ready nodes, collect results.
    fn drive(
        &mut self,
        exec: &Executor,
        pool: Option<(channel::Sender<Job>, channel::Receiver<JobResult>)>,
    ) {
        let mut running = 0usize;
        let mut heavy_running = 0usize;
        let mut heavy_queue: VecDeque<(usize, Inputs)> = VecDeque::new();
        let mut inline_done: VecDeque<JobResult> = VecDeque::new();
        loop {
            while !self.cancel.is_cancelled() {
                let next = if heavy_running < self.opts.heavy_slots.max(1) {
                    heavy_queue.pop_front()
                } else {
                    None
                };
                let (i, inputs) = match next {
                    Some(job) => job,
                    None => {
                        let Some(i) = self.ready.pop_front() else {
                            break;
                        };
                        let Some(inputs) = self.prepare(i, &exec.cache) else {
                            continue;
                        };
                        let heavy = self.graph.nodes[i].node.schema().cost == Cost::Heavy;
                        if heavy && heavy_running >= self.opts.heavy_slots.max(1) {
                            heavy_queue.push_back((i, inputs));
                            continue;
                        }
                        (i, inputs)
                    }
                };
                let node = &self.graph.nodes[i];
                let heavy = node.node.schema().cost == Cost::Heavy;
                heavy_running += heavy as usize;
                running += 1;
                self.state[i] = State::Running;
                let job = Job {
                    index: i,
                    id: node.id.clone(),
                    inputs,
                    threads: if heavy { self.opts.threads.max(1) } else { 1 },
                };
                // With nothing else running or ready, a hand-off to a worker
                // only adds latency (long sequential chains are common).
                let alone = running == 1 && self.ready.is_empty() && heavy_queue.is_empty();
                match &pool {
                    Some((tx, _)) if !alone => {
                        tx.send(job).expect("workers outlive the coordinator")
                    }
                    _ => inline_done.push_back(job.run(
                        self.events,
                        self.cancel,
                        &self.opts.out_dir,
                        &self.graph_text,
                        &self.opts.previews,
                    )),
                }
            }
            if running == 0 {
                break;
            }
            let result = match (inline_done.pop_front(), &pool) {
                (Some(r), _) => r,
                (None, Some((_, rx))) => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
                (None, None) => unreachable!("inline jobs finish before they are counted"),
            };
            running -= 1;
            if self.graph.nodes[result.index].node.schema().cost == Cost::Heavy {
                heavy_running -= 1;
            }
            self.complete(result, &exec.cache);
        }
        if self.cancel.is_cancelled() {
            self.report.interrupted = true;
            for (i, _) in heavy_queue {
                self.state[i] = State::Dead("interrupted".into());
            }
            for i in 0..self.state.len() {
                if matches!(self.state[i], State::Waiting) {
                    self.state[i] = State::Dead("interrupted".into());
                }
            }
        }
    }

    fn complete(&mut self, result: JobResult, cache: &Mutex<Cache>) {
        let i = result.index;
        let node = &self.graph.nodes[i];
        let outputs = result
            .outputs
            .and_then(|outs| check_outputs(&node.output_types, outs));
        match outputs {
            Ok(outputs) => {
                let outputs: Outputs = outputs.into();
                self.events.emit(Event::NodeDone {
                    node: node.id.clone(),
                    ty: node.type_name().to_string(),
                    duration_ms: result.duration.as_secs_f64() * 1e3,
                });
                self.report.executed.push(node.id.clone());
                if let (Some(sig), false) = (self.sig[i], self.volatile[i]) {
                    lock(cache).insert(sig, outputs.clone(), result.duration);
                }
                for twin in self.take_twins(i) {
                    let id = self.graph.nodes[twin].id.clone();
                    self.events.emit(Event::Cached {
                        nodes: vec![id.clone()],
                    });
                    self.report.cached.push(id);
                    self.finish(twin, outputs.clone());
                }
                self.finish(i, outputs);
            }
            Err(e) if e.cancelled => {
                self.report.interrupted = true;
                self.state[i] = State::Dead("interrupted".into());
            }
            Err(e) => self.fail(i, &result.inputs, e.to_string()),
        }
        if !matches!(self.state[i], State::Done(_)) {
            let id = self.graph.nodes[i].id.clone();
            for twin in self.take_twins(i) {
                self.kill(twin, format!("identical node `{id}` did not finish"));
            }
        }
    }

    /// Nodes that waited for `i` because they have the same signature.
    fn take_twins(&mut self, i: usize) -> Vec<usize> {
        self.sig[i]
            .and_then(|s| self.inflight.remove(&s))
            .unwrap_or_default()
    }
}

/// Hashes a node from its type, literals, inputs' signatures (`sigs`),
/// fingerprint and, for non-deterministic nodes, the run's nonce. With
/// `eager_only`, lazy links are left out (the key under which a lazy choice is
/// memoised). `None` if a needed input signature is not known yet.
fn node_signature(
    node: &PlannedNode,
    sigs: &[Option<Signature>],
    selection: Option<&[bool]>,
    eager_only: bool,
    fingerprint: &str,
    nonce: u64,
) -> Option<Signature> {
    let schema = node.node.schema();
    let mut h = blake3::Hasher::new();
    h.update(schema.type_name.as_bytes());
    h.update(&[0]);
    h.update(schema.build.as_bytes());
    h.update(&[0, eager_only as u8]);
    for (slot, binding) in node.inputs.iter().enumerate() {
        h.update(&(slot as u32).to_le_bytes());
        match binding {
            Binding::Absent => {
                h.update(b"-");
            }
            Binding::Literal(v) => v.hash_literal(&mut h),
            Binding::Link { node: src, output } => {
                if schema.inputs[slot].lazy && (eager_only || !selection?[slot]) {
                    h.update(b"unrequested");
                    continue;
                }
                h.update(sigs[*src]?.as_bytes());
                h.update(&(*output as u32).to_le_bytes());
            }
        }
    }
    h.update(fingerprint.as_bytes());
    if !schema.deterministic {
        h.update(b"run");
        h.update(&nonce.to_le_bytes());
    }
    Some(h.finalize())
}

impl ValidGraph {
    /// Signatures that depend on the graph alone: deterministic nodes with no
    /// external state and no lazy inputs, all the way up. Computed once per
    /// graph, so re-runs of an unchanged graph do not hash it again.
    fn structural_signatures(&self) -> &[Option<Signature>] {
        self.structural.get_or_init(|| {
            let mut sigs = vec![None; self.nodes.len()];
            for &i in &self.topo_order {
                let node = &self.nodes[i];
                let schema = node.node.schema();
                let lazy = schema.inputs.iter().any(|s| s.lazy);
                if schema.deterministic && !schema.external_state && !lazy {
                    sigs[i] = node_signature(node, &sigs, None, false, "", 0);
                }
            }
            sigs
        })
    }
}

/// Guards against nodes (plugins especially) returning the wrong shape of result.
fn check_outputs(
    types: &[ValueType],
    outputs: Vec<crate::Value>,
) -> Result<Vec<crate::Value>, NodeError> {
    if outputs.len() != types.len() {
        return Err(NodeError::new(format!(
            "node returned {} outputs, its schema declares {}",
            outputs.len(),
            types.len()
        )));
    }
    for (k, (value, ty)) in outputs.iter().zip(types).enumerate() {
        if !ty.accepts(value.ty()) {
            return Err(NodeError::new(format!(
                "output {k} should be {ty}, the node returned {}",
                value.ty()
            )));
        }
    }
    Ok(outputs)
}

fn lock(cache: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("node panicked: {text}")
}

struct Job {
    index: usize,
    id: String,
    inputs: Inputs,
    threads: usize,
}

struct JobResult {
    index: usize,
    inputs: Inputs,
    outputs: Result<Vec<crate::Value>, NodeError>,
    duration: Duration,
}

impl Job {
    fn run(
        self,
        events: &EventSink,
        cancel: &CancelToken,
        out_dir: &std::path::Path,
        graph: &GraphText,
        previews: &Previews,
    ) -> JobResult {
        let node = self.inputs.node().clone();
        events.emit(Event::NodeStart {
            node: self.id.clone(),
            ty: node.schema().type_name.clone(),
        });
        let started = Instant::now();
        let ctx = NodeContext {
            inputs: &self.inputs,
            node_id: &self.id,
            out_dir,
            threads: self.threads,
            cancel,
            events,
            graph,
            previews,
            preview_limiter: Mutex::new(PreviewLimiter::new(previews.min_interval)),
        };
        let outputs = match catch_unwind(AssertUnwindSafe(|| node.run(&ctx))) {
            Ok(result) => result,
            Err(panic) => Err(NodeError::new(panic_message(panic))),
        };
        JobResult {
            index: self.index,
            inputs: self.inputs,
            outputs,
            duration: started.elapsed(),
        }
    }
}
