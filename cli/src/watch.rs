//! `weft watch`: reload on every save, re-run incrementally, keep the cache;
//! reload a plugin whose library is rebuilt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use weft_core::{EventSink, Executor, Registry, RunOptions, ValidGraph};
use weft_plugin_host::{is_library, PluginHost};

use crate::{interrupt_token, read_and_validate, report_invalid, GraphArgs, EXIT_INVALID};

/// How each re-run runs.
pub struct Run {
    pub cache_bytes: usize,
    pub opts: RunOptions,
}

/// The loaded plugins and the directories they came from.
pub struct Plugins {
    pub host: PluginHost,
    pub dirs: Vec<PathBuf>,
}

/// What a file event means to the watch loop.
enum Change {
    Graph,
    Library(PathBuf),
}

pub fn watch(
    args: &GraphArgs,
    run: Run,
    mut registry: Registry,
    mut plugins: Plugins,
    sink: &EventSink,
    debounce_ms: u64,
) -> ExitCode {
    // Editors save by rename or truncate, so watch the directory, not the file.
    let graph_path = std::path::absolute(&args.graph).unwrap_or_else(|_| args.graph.clone());
    let dir = match graph_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => Path::new(".").to_path_buf(),
    };
    let plugin_dirs: Vec<PathBuf> = plugins
        .dirs
        .iter()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
        .collect();
    let (tx, rx) = mpsc::channel();
    let graph_name = graph_path.file_name().map(|n| n.to_owned());
    let watched_dirs = plugin_dirs.clone();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            // Our own reads show up as access events; only changes count.
            // A deleted library is ignored: a rebuild writes it again.
            let (graph_changed, library_changed) = match event.kind {
                notify::EventKind::Create(_) | notify::EventKind::Modify(_) => (true, true),
                notify::EventKind::Remove(_) => (true, false),
                _ => (false, false),
            };
            for path in event.paths {
                if graph_changed && path.file_name() == graph_name.as_deref() {
                    let _ = tx.send(Change::Graph);
                } else if library_changed
                    && is_library(&path)
                    && path
                        .parent()
                        .is_some_and(|p| watched_dirs.iter().any(|d| d == p))
                {
                    let _ = tx.send(Change::Library(path));
                }
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: cannot watch files: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        eprintln!("error: cannot watch {}: {e}", dir.display());
        return ExitCode::from(EXIT_INVALID);
    }
    for plugin_dir in &plugin_dirs {
        if let Err(e) = watcher.watch(plugin_dir, RecursiveMode::NonRecursive) {
            eprintln!(
                "warning: cannot watch the plugin directory {}: {e}",
                plugin_dir.display()
            );
        }
    }

    let executor = Executor::new(run.cache_bytes);
    let opts = run.opts;
    let cancel = interrupt_token();
    let mut last_good: Option<ValidGraph> = None;
    loop {
        match read_and_validate(&args.graph, &args.overrides, &registry) {
            Ok(graph) => {
                cancel.reset();
                if let Err(e) = executor.run(&graph, &opts, sink, &cancel) {
                    eprintln!("error: {e}");
                }
                last_good = Some(graph);
            }
            Err(e) => {
                report_invalid(args.events, &e, sink);
                if last_good.is_some() {
                    eprintln!("keeping the last valid graph; fix the file and save again");
                }
            }
        }
        // Wait for the next change (Ctrl-C quits), then let a burst of saves settle.
        let mut libraries = BTreeSet::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(change) => {
                    note(change, &mut libraries);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                    return ExitCode::SUCCESS
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::SUCCESS,
            }
        }
        while let Ok(change) = rx.recv_timeout(Duration::from_millis(debounce_ms)) {
            note(change, &mut libraries);
        }
        for library in libraries.iter().filter(|l| l.is_file()) {
            match plugins.host.reload(library, &mut registry) {
                Ok(plugin) => eprintln!(
                    "reloaded plugin `{}` {} from {}",
                    plugin.name,
                    plugin.version,
                    library.display()
                ),
                Err(e) => eprintln!("error: {e}; keeping the previous version"),
            }
        }
    }
}

fn note(change: Change, libraries: &mut BTreeSet<PathBuf>) {
    if let Change::Library(path) = change {
        libraries.insert(path);
    }
}
