//! The executor thread: runs queued prompts one at a time through one
//! [`Executor`], so loaded models and the signature cache carry over from
//! prompt to prompt, and turns weft's events into ComfyUI's messages.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value as Json};
use weft_core::{Event, EventSink, Executor, RunOptions, RunReport, Value};

use crate::clients::{Clients, Frame};
use crate::queue::{Finished, Job};
use crate::state::AppState;

/// Milliseconds since the epoch, ComfyUI's `timestamp`.
pub fn timestamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the executor thread; it lives as long as the process.
pub fn spawn(state: AppState) -> std::io::Result<()> {
    let executor = Executor::new(state.config.max_ram_bytes);
    std::thread::Builder::new()
        .name("weft-executor".into())
        .spawn(move || loop {
            let (job, cancel) = state.queue.next();
            if state.queue.take_free_request() {
                executor.cache().clear();
            }
            let finished = run(&state, &executor, &job, &cancel);
            state.queue.finish(&job, finished);
            state.clients.status(state.queue.remaining());
            state.clients.message(
                job.client_id.as_deref(),
                "executing",
                json!({ "node": null, "display_node": null, "prompt_id": job.id }),
            );
        })?;
    Ok(())
}

/// What the event sink learns during a run, for the history entry.
#[derive(Default)]
struct Transcript {
    messages: Vec<Json>,
    failure: Option<Json>,
    /// ComfyUI always sends `execution_cached`, weft only when something was.
    cached_sent: bool,
}

fn run(
    state: &AppState,
    executor: &Executor,
    job: &Job,
    cancel: &weft_core::CancelToken,
) -> Finished {
    let clients = state.clients.clone();
    let client = job.client_id.clone();
    let id = job.id.clone();
    let transcript = Arc::new(Mutex::new(Transcript::default()));
    let record = |kind: &str, data: Json| {
        let mut t = transcript.lock().unwrap_or_else(|e| e.into_inner());
        t.messages.push(json!([kind, data]));
    };
    let start = json!({ "prompt_id": id, "timestamp": timestamp() });
    record("execution_start", start.clone());
    clients.message(client.as_deref(), "execution_start", start);

    let sink = {
        let (clients, client, id, transcript) = (
            clients.clone(),
            client.clone(),
            id.clone(),
            transcript.clone(),
        );
        EventSink::new(move |event| forward(event, &clients, client.as_deref(), &id, &transcript))
    };
    let config = &state.config;
    let mut opts = RunOptions {
        out_dir: config.dirs.output.clone(),
        base_dir: Some(config.dirs.input.clone()),
        targets: Some(job.targets.clone()),
        previews: config.previews.clone(),
        // Prompts come from the network: their file inputs stay in the
        // input folder and their model names in the model folders.
        confine_files: true,
        ..RunOptions::default()
    };
    if let Some(w) = config.workers {
        opts.workers = w.max(1);
    }
    let report = executor.run(&job.graph, &opts, &sink, cancel);
    sink.emit(Event::Cached { nodes: Vec::new() });

    let outputs = match &report {
        Ok(report) => ui_outputs(report, &job.graph, &config.dirs),
        Err(_) => Map::new(),
    };
    for (node, output) in &outputs {
        let data = json!({ "node": node, "display_node": node, "output": output, "prompt_id": id });
        clients.message(client.as_deref(), "executed", data);
    }
    let mut t = transcript.lock().unwrap_or_else(|e| e.into_inner());
    let (status, kind, data) = match &report {
        Ok(r) if r.interrupted => (
            "error",
            "execution_interrupted",
            json!({
                "prompt_id": id, "node_id": r.failed.first().map(|f| f.node.clone()),
                "node_type": r.failed.first().map(|f| f.type_name.clone()),
                "executed": r.executed, "timestamp": timestamp(),
            }),
        ),
        Ok(r) if !r.success() => (
            "error",
            "execution_error",
            t.failure.clone().unwrap_or_else(|| {
                json!({
                    "prompt_id": id, "node_id": null, "node_type": null, "executed": r.executed,
                    "exception_message": format!("nodes skipped: {}", r.skipped.join(", ")),
                    "exception_type": "weft.Skipped", "traceback": [],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": timestamp(),
                })
            }),
        ),
        Ok(_) => (
            "success",
            "execution_success",
            json!({ "prompt_id": id, "timestamp": timestamp() }),
        ),
        Err(message) => (
            "error",
            "execution_error",
            json!({
                "prompt_id": id, "node_id": null, "node_type": null, "executed": [],
                "exception_message": message, "exception_type": "weft.RunError",
                "traceback": [], "current_inputs": {}, "current_outputs": {},
                "timestamp": timestamp(),
            }),
        ),
    };
    let mut data = data;
    if let (Ok(r), Some(obj)) = (&report, data.as_object_mut()) {
        obj.insert("executed".into(), json!(r.executed));
    }
    t.messages.push(json!([kind, data.clone()]));
    clients.message(client.as_deref(), kind, data);
    let meta: Map<String, Json> = outputs
        .keys()
        .map(|node| {
            (
                node.clone(),
                json!({ "node_id": node, "display_node": node, "parent_node": null, "real_node_id": node }),
            )
        })
        .collect();
    Finished {
        outputs: Json::Object(outputs),
        status_str: status,
        messages: std::mem::take(&mut t.messages),
        meta: Json::Object(meta),
    }
}

/// Sends one weft event to the prompt's client in ComfyUI's vocabulary.
fn forward(
    event: &Event,
    clients: &Clients,
    client: Option<&str>,
    id: &str,
    transcript: &Mutex<Transcript>,
) {
    let message = |kind: &str, data: Json| clients.message(client, kind, data);
    let cached = |nodes: &[String]| {
        let mut t = transcript.lock().unwrap_or_else(|e| e.into_inner());
        if !t.cached_sent {
            t.cached_sent = true;
            let data = json!({ "nodes": nodes, "prompt_id": id, "timestamp": timestamp() });
            t.messages.push(json!(["execution_cached", data.clone()]));
            message("execution_cached", data);
        }
    };
    match event {
        Event::Cached { nodes } => cached(nodes),
        Event::NodeStart { node, .. } => {
            cached(&[]);
            message(
                "executing",
                json!({ "node": node, "display_node": node, "prompt_id": id }),
            )
        }
        Event::Progress { node, value, max } => message(
            "progress",
            json!({ "value": value, "max": max, "prompt_id": id, "node": node }),
        ),
        Event::Preview { .. } => {
            if let Some(frame) = event.comfy_preview_frame() {
                clients.send(client, Frame::Binary(frame));
            }
        }
        Event::NodeFailed {
            node,
            ty,
            message: text,
            inputs,
        } => {
            let mut t = transcript.lock().unwrap_or_else(|e| e.into_inner());
            if t.failure.is_none() {
                let current: Map<String, Json> = inputs
                    .iter()
                    .map(|(name, value)| (name.clone(), json!([value])))
                    .collect();
                t.failure = Some(json!({
                    "prompt_id": id, "node_id": node,
                    "node_type": ty,
                    "executed": [], "exception_message": text,
                    "exception_type": "weft.NodeError", "traceback": [],
                    "current_inputs": current, "current_outputs": {},
                    "timestamp": timestamp(),
                }));
            }
        }
        _ => {}
    }
}

/// The images each finished output node wrote (its `paths` output), as
/// ComfyUI's `{images: [{filename, subfolder, type}]}`, cached nodes included.
fn ui_outputs(
    report: &RunReport,
    graph: &weft_core::ValidGraph,
    dirs: &crate::config::Dirs,
) -> Map<String, Json> {
    let mut out = Map::new();
    for (node, values) in &report.outputs {
        let Some(planned) = graph.index_of(node).map(|i| &graph.nodes[i]) else {
            continue;
        };
        let Some(index) = planned.node.schema().output_index("paths") else {
            continue;
        };
        let Some(Value::String(paths)) = values.get(index) else {
            continue;
        };
        let images: Vec<Json> = paths
            .lines()
            .filter_map(|line| image_ref(Path::new(line), dirs))
            .collect();
        if !images.is_empty() {
            out.insert(node.clone(), json!({ "images": images }));
        }
    }
    out
}

/// `{filename, subfolder, type}` for a file under the output or temp folder.
fn image_ref(path: &Path, dirs: &crate::config::Dirs) -> Option<Json> {
    let (kind, rel) = [("output", &dirs.output), ("temp", &dirs.temp)]
        .into_iter()
        .find_map(|(kind, dir)| path.strip_prefix(dir).ok().map(|rel| (kind, rel)))?;
    let filename = rel.file_name()?.to_str()?;
    let subfolder = rel.parent().and_then(Path::to_str).unwrap_or("");
    Some(json!({ "filename": filename, "subfolder": subfolder, "type": kind }))
}
