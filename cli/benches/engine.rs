//! Engine overhead benchmarks: `cargo bench -p weft-cli --bench engine`.
//!
//! Prints medians over repeated runs, and ratios against a reference run in
//! the same process (calling the node directly, with no engine around it).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_core::{CancelToken, EventSink, Executor, RunOptions, SourceFile};

// The same allocator as the `weft` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 10_000;
const REPEATS: usize = 15;

fn chain(n: usize, first: i64) -> String {
    let mut text = String::with_capacity(n * 64);
    text.push_str(&format!(
        "(nodes: {{\n\"n0\": IntConstant(value: {first}),\n"
    ));
    for i in 1..n - 1 {
        text.push_str(&format!(
            "\"n{i}\": IntMath(a: Link(\"n{}\", \"value\"), b: 1),\n",
            i - 1
        ));
    }
    text.push_str(&format!(
        "\"out\": Print(value: Link(\"n{}\", \"value\")),\n}})",
        n - 2
    ));
    text
}

/// Independent nodes, all feeding one output through a balanced tree of sums.
fn wide(n: usize) -> String {
    let mut text = String::from("(nodes: {\n");
    let leaves = n / 2;
    for i in 0..leaves {
        text.push_str(&format!("\"l{i}\": IntMath(a: {i}, b: 1),\n"));
    }
    let mut level: Vec<String> = (0..leaves).map(|i| format!("l{i}")).collect();
    let mut k = 0;
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            if let [a, b] = pair {
                text.push_str(&format!("\"s{k}\": IntMath(a: Link(\"{a}\", \"value\"), b: Link(\"{b}\", \"value\")),\n"));
                next.push(format!("s{k}"));
                k += 1;
            } else {
                next.push(pair[0].clone());
            }
        }
        level = next;
    }
    text.push_str(&format!(
        "\"out\": Print(value: Link(\"{}\", \"value\")),\n}})",
        level[0]
    ));
    text
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..REPEATS)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let registry = weft_nodes::builtin_registry();
    let quiet = EventSink::discard();
    let cancel = CancelToken::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "weft engine benchmark: {NODES}-node graphs, median of {REPEATS} runs, {cores} cores\n"
    );

    for (name, text) in [("chain", chain(NODES, 0)), ("wide", wide(NODES))] {
        let source = SourceFile::new(format!("{name}.ron"), text);
        let graph = weft_core::load(source.clone(), &registry, &[]).expect("valid");
        let n = graph.nodes.len();
        let mut kept = Vec::new();
        let validate = time(|| kept.push(weft_core::load(source.clone(), &registry, &[]).unwrap()));
        drop(kept);
        println!("{name} ({n} nodes)");
        println!("  parse + validate + plan     {:>10}", ms(validate));
        for workers in [1, 2] {
            let opts = RunOptions {
                workers,
                ..RunOptions::default()
            };
            let cold = time(|| {
                Executor::new(1 << 30)
                    .run(&graph, &opts, &quiet, &cancel)
                    .unwrap()
            });
            let exec = Executor::new(1 << 30);
            exec.run(&graph, &opts, &quiet, &cancel).unwrap();
            let cached = time(|| exec.run(&graph, &opts, &quiet, &cancel).unwrap());
            println!(
                "  execute, {workers} worker(s)        {:>10}  ({:.2} µs/node)",
                ms(cold),
                cold.as_secs_f64() * 1e6 / n as f64
            );
            println!("  fully cached re-run, {workers}w    {:>10}", ms(cached));
        }
    }

    // Reference: the same IntMath work with no engine around it, so the
    // difference is pure engine overhead per node.
    let graph = weft_core::load(
        SourceFile::new("chain.ron", chain(NODES, 0)),
        &registry,
        &[],
    )
    .unwrap();
    let opts = RunOptions {
        workers: 1,
        ..RunOptions::default()
    };
    let engine = time(|| {
        Executor::new(1 << 30)
            .run(&graph, &opts, &quiet, &cancel)
            .unwrap()
    });
    let reference = time(|| {
        let mut acc = 0i64;
        for _ in 0..NODES {
            acc = std::hint::black_box(acc.checked_add(1).unwrap());
        }
        acc
    });
    let per_node = (engine.saturating_sub(reference)).as_secs_f64() * 1e6 / NODES as f64;
    println!("\nper-node overhead (chain, 1 worker): {per_node:.2} µs  (engine {} vs. direct arithmetic {}, ratio {:.0}x)", ms(engine), ms(reference), engine.as_secs_f64() / reference.as_secs_f64().max(1e-9));

    println!(
        "hot-reload latency (file write -> first node start): {}",
        ms(hot_reload_latency())
    );
}

/// Starts `weft watch`, rewrites the graph, and times each write until the
/// first `node_start` event arrives on stdout.
fn hot_reload_latency() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.ron");
    let graph = |v: usize| {
        format!("(nodes: {{ \"x\": IntMath(a: {v}, b: 1), \"p\": Print(value: Link(\"x\", \"value\")) }})")
    };
    std::fs::write(&path, graph(0)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["watch", path.to_str().unwrap(), "--events", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut wait_for = |what: &str| loop {
        let line = lines.next().expect("watch is running").unwrap();
        if line.contains(what) {
            break;
        }
    };
    wait_for("graph_done");
    let mut samples = Vec::new();
    for v in 1..=REPEATS {
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        std::fs::write(&path, graph(v)).unwrap();
        wait_for("node_start");
        samples.push(t.elapsed());
        wait_for("graph_done");
    }
    let _ = child.kill();
    let _ = child.wait();
    median(samples)
}
