//! `weft watch`: reload on every save, re-run incrementally, keep the cache.

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use weft_core::{EventSink, Executor, Registry, ValidGraph};

use crate::{
    interrupt_token, read_and_validate, report_invalid, ExecArgs, GraphArgs, EXIT_INVALID,
};

pub fn watch(
    args: &GraphArgs,
    exec: &ExecArgs,
    registry: &Registry,
    sink: &EventSink,
    debounce_ms: u64,
) -> ExitCode {
    // Editors save by rename or truncate, so watch the directory, not the file.
    let file_name = args.graph.file_name().map(|n| n.to_owned());
    let dir = match args.graph.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => Path::new(".").to_path_buf(),
    };
    let (tx, rx) = mpsc::channel();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res {
                // Our own reads show up as access events; only changes count.
                let changed = matches!(
                    event.kind,
                    notify::EventKind::Create(_)
                        | notify::EventKind::Modify(_)
                        | notify::EventKind::Remove(_)
                );
                if changed
                    && event
                        .paths
                        .iter()
                        .any(|p| p.file_name() == file_name.as_deref())
                {
                    let _ = tx.send(());
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

    let executor = Executor::new(exec.cache_mb << 20);
    let opts = exec.options();
    let cancel = interrupt_token();
    let mut last_good: Option<ValidGraph> = None;
    loop {
        match read_and_validate(&args.graph, &args.overrides, registry) {
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
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                    return ExitCode::SUCCESS
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::SUCCESS,
            }
        }
        while rx.recv_timeout(Duration::from_millis(debounce_ms)).is_ok() {}
    }
}
