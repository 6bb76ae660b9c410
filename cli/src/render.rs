//! Turns engine events into progress bars, plain lines or JSON lines.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use weft_core::atomic::write_atomic;
use weft_core::{Event, EventSink, RunReport};

use crate::EventMode;

/// Keeps the latest preview as `preview.png` in `out_dir`, written
/// atomically before the event goes on to `inner` (so a tool that reacts to
/// the event finds the file); a write failure is reported once.
pub fn with_preview_file(inner: EventSink, out_dir: &Path) -> EventSink {
    let path = out_dir.join(PREVIEW_FILE);
    let warned = AtomicBool::new(false);
    EventSink::new(move |e| {
        if let Event::Preview { png, .. } = e {
            if let Err(err) = write_atomic(&path, png.bytes()) {
                if !warned.swap(true, Ordering::Relaxed) {
                    eprintln!("warning: cannot write {}: {err}", path.display());
                }
            }
        }
        inner.emit(e.clone());
    })
}

/// The file in the output folder that holds the latest preview.
pub const PREVIEW_FILE: &str = "preview.png";

pub fn sink(mode: EventMode) -> EventSink {
    match mode {
        EventMode::Json => EventSink::new(|e| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", e.to_json());
            let _ = out.flush();
        }),
        EventMode::Auto if std::io::stderr().is_terminal() => bars(),
        EventMode::Auto | EventMode::Plain => EventSink::new(plain),
    }
}

fn plain(event: &Event) {
    match event {
        Event::Output { text, .. } => println!("{text}"),
        Event::NodeDone {
            node,
            ty,
            duration_ms,
        } => eprintln!("done    {node} ({ty}) {duration_ms:.1} ms"),
        Event::NodeFailed {
            node, ty, message, ..
        } => eprintln!("FAILED  {node} ({ty}): {message}"),
        Event::NodeSkipped { node, because } => eprintln!("skipped {node}: {because}"),
        Event::Cached { nodes } => eprintln!("cached  {}", nodes.join(", ")),
        Event::GraphDone {
            executed,
            cached,
            failed,
            duration_ms,
        } => {
            eprintln!(
                "finished in {duration_ms:.1} ms: {executed} ran, {cached} cached, {failed} failed"
            )
        }
        Event::Interrupted { executed } => eprintln!("interrupted after {executed} nodes"),
        Event::GraphInvalid { errors } => errors.iter().for_each(|e| eprintln!("{e}")),
        Event::GraphStart { .. }
        | Event::NodeStart { .. }
        | Event::Progress { .. }
        | Event::Preview { .. } => {}
    }
}

/// Progress bars on a terminal: a spinner per running node, a bar once it reports steps.
fn bars() -> EventSink {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let running: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    let style =
        ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_bar} {pos}/{len} {elapsed}")
            .expect("valid template");
    EventSink::new(move |event| {
        let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::NodeStart { node, ty } => {
                let bar =
                    multi.add(ProgressBar::new_spinner().with_prefix(format!("{node} ({ty})")));
                bar.enable_steady_tick(Duration::from_millis(100));
                running.insert(node.clone(), bar);
            }
            Event::Progress { node, value, max } => {
                if let Some(bar) = running.get(node) {
                    if bar.length() != Some(*max) {
                        bar.set_style(style.clone());
                        bar.set_length(*max);
                    }
                    bar.set_position(*value);
                }
            }
            Event::NodeDone { node, .. } | Event::NodeFailed { node, .. } => {
                if let Some(bar) = running.remove(node) {
                    bar.finish_and_clear();
                }
                multi.suspend(|| plain(event));
            }
            Event::Output { .. }
            | Event::NodeSkipped { .. }
            | Event::GraphDone { .. }
            | Event::Cached { .. } => multi.suspend(|| plain(event)),
            Event::Interrupted { .. } | Event::GraphInvalid { .. } => {
                for (_, bar) in running.drain() {
                    bar.abandon();
                }
                multi.suspend(|| plain(event))
            }
            Event::GraphStart { .. } | Event::Preview { .. } => {}
        }
    })
}

/// After a failed run, lists each failure with the inputs involved.
pub fn summarize_failures(mode: EventMode, report: &RunReport) {
    if mode == EventMode::Json {
        return;
    }
    for f in &report.failed {
        eprintln!(
            "error: node `{}` ({}) failed: {}",
            f.node, f.type_name, f.message
        );
        for (name, value) in &f.inputs {
            eprintln!("    {name} = {value}");
        }
    }
    if !report.skipped.is_empty() {
        eprintln!(
            "{} node(s) did not run because of the failures above",
            report.skipped.len()
        );
    }
    if report.interrupted {
        eprintln!("interrupted; nothing partial was written");
    }
}
