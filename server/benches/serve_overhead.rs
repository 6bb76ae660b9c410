//! What serving costs, and what the signature cache saves a served user:
//! `cargo bench -p weft-server --bench serve_overhead`.
//!
//! 1. Overhead: the same small prompt (a fresh seed each time, so the
//!    sampler, decode and save run) through `POST /prompt` and the
//!    websocket's `executing {node: null}`, against `Executor::run` on the
//!    same validated graph in this process. Medians and their difference.
//! 2. Edits: a bigger prompt run cold, then with a new seed (the noise,
//!    sampler, decode and save re-run), a new file prefix only (only the
//!    save re-runs), and the first prompt again (nothing runs: the
//!    signature cache holds every earlier result, where ComfyUI's default
//!    cache keeps only the previous prompt's and would sample again).

use std::time::Instant;

use serde_json::{json, Value};
use weft_core::{CancelToken, EventSink, Executor, RunOptions};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{mnist_prompt as prompt, Server, Socket};

const RUNS: usize = 41;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Queues `prompt` and waits for its end; seconds from the request to
/// `executing {node: null}`.
fn served(server: &Server, socket: &mut Socket, prompt: &Value) -> f64 {
    let start = Instant::now();
    let id = server.queue(prompt, "bench");
    socket.until_done(&id);
    start.elapsed().as_secs_f64()
}

fn direct(
    executor: &Executor,
    registry: &weft_core::Registry,
    prompt: &Value,
    out: &std::path::Path,
) -> f64 {
    let start = Instant::now();
    let doc = weft_workflow::prompt_to_graph(&prompt.to_string(), registry).unwrap();
    let graph = weft_core::validate(doc, registry).unwrap();
    let opts = RunOptions {
        out_dir: out.to_path_buf(),
        ..RunOptions::default()
    };
    let report = executor
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap();
    assert!(report.success());
    start.elapsed().as_secs_f64()
}

fn main() {
    let server = Server::start_with(|c| c.workers = None);
    let mut socket = server.socket("bench");
    let registry = weft_nodes::builtin_registry();
    let executor = Executor::new(2 << 30);
    let out = server.dir.path().join("direct");
    std::fs::create_dir_all(&out).unwrap();

    // Warm both (model load, first allocation).
    direct(&executor, &registry, &prompt(0, 2, 1), &out);
    served(&server, &mut socket, &prompt(0, 2, 1));
    let (mut d, mut s) = (Vec::new(), Vec::new());
    for i in 1..=RUNS as u64 {
        // Alternate, so drift on a shared machine hits both alike.
        d.push(direct(&executor, &registry, &prompt(i, 2, 1), &out));
        s.push(served(&server, &mut socket, &prompt(i, 2, 1)));
    }
    let (d, s) = (median(d) * 1e3, median(s) * 1e3);
    println!(
        "overhead, MNIST 2 steps (median of {RUNS}): direct {d:.2} ms, served {s:.2} ms, served adds {:.2} ms ({:.2}x)",
        s - d,
        s / d
    );

    let (steps, batch) = (20, 16);
    let edited = |seed: u64, prefix: &str| {
        let mut p = prompt(seed, steps, batch);
        p["11"]["inputs"]["filename_prefix"] = json!(prefix);
        p
    };
    let cold = served(&server, &mut socket, &edited(1000, "a"));
    let seed = median(
        (0..5)
            .map(|i| served(&server, &mut socket, &edited(2000 + i, "a")))
            .collect(),
    );
    let prefix = median(
        (0..5)
            .map(|i| served(&server, &mut socket, &edited(2004, &format!("b{i}"))))
            .collect(),
    );
    let back = median(
        (0..5)
            .map(|_| served(&server, &mut socket, &edited(1000, "a")))
            .collect(),
    );
    println!(
        "edits, MNIST {steps} steps x {batch} (medians of 5): first {:.1} ms; new seed {:.1} ms; new file prefix only {:.2} ms ({:.4}x); back to the first prompt {:.2} ms ({:.4}x)",
        cold * 1e3,
        seed * 1e3,
        prefix * 1e3,
        prefix / cold,
        back * 1e3,
        back / cold
    );
}
