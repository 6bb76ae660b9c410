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

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};
use weft_core::{CancelToken, EventSink, Executor, RunOptions};

const RUNS: usize = 41;

fn prompt(seed: u64, steps: u32, batch: u32) -> Value {
    json!({
        "1": {"class_type": "CheckpointLoader", "inputs": {"ckpt_name": "mnist_flow.safetensors"}},
        "2": {"class_type": "ClassLabel", "inputs": {"labels": "3"}},
        "3": {"class_type": "ClassLabel", "inputs": {"labels": "none"}},
        "4": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 3.0}},
        "5": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "flow_euler"}},
        "6": {"class_type": "FlowMatchScheduler", "inputs": {"steps": steps, "shift": 1.0}},
        "7": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "8": {"class_type": "EmptyLatent", "inputs": {"width": 28, "height": 28, "channels": 1, "batch_size": batch}},
        "9": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["7", 0], "guider": ["4", 0], "sampler": ["5", 0], "sigmas": ["6", 0], "latent_image": ["8", 0]}},
        "10": {"class_type": "LatentToImage", "inputs": {"latent": ["9", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "bench"}}
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Served {
    agent: ureq::Agent,
    base: String,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Served {
    fn start(dir: &std::path::Path) -> Served {
        let config = weft_server::ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
            insecure: false,
            frontend: None,
            dirs: weft_server::Dirs {
                output: dir.join("served"),
                input: dir.join("input"),
                temp: dir.join("temp"),
                user: dir.join("user"),
            },
            limits: Default::default(),
            max_ram_bytes: 2 << 30,
            workers: None,
            previews: Default::default(),
        };
        let app =
            weft_server::app(config, weft_nodes::builtin_registry(), Default::default()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, app).await.unwrap();
                });
        });
        let (ws, _) =
            tungstenite::connect(format!("ws://127.0.0.1:{port}/ws?clientId=bench")).unwrap();
        Served {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into(),
            base: format!("http://127.0.0.1:{port}"),
            ws,
        }
    }

    /// Queues and waits for the end; seconds from request to `executing null`.
    fn run(&mut self, prompt: &Value) -> f64 {
        let start = Instant::now();
        let body = json!({ "prompt": prompt, "client_id": "bench" }).to_string();
        let mut reply = self
            .agent
            .post(&format!("{}/prompt", self.base))
            .header("Content-Type", "application/json")
            .send(&body)
            .unwrap();
        let reply: Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        let id = reply["prompt_id"].as_str().unwrap().to_string();
        loop {
            if let Message::Text(t) = self.ws.read().unwrap() {
                let m: Value = serde_json::from_str(&t).unwrap();
                if m["type"] == "executing"
                    && m["data"]["node"].is_null()
                    && m["data"]["prompt_id"] == id
                {
                    return start.elapsed().as_secs_f64();
                }
            }
        }
    }
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
    let dir = tempfile::tempdir().unwrap();
    let registry = weft_nodes::builtin_registry();
    let executor = Executor::new(2 << 30);
    let mut served = Served::start(dir.path());
    let out = dir.path().join("direct");
    std::fs::create_dir_all(&out).unwrap();

    // Warm both (model load, first allocation).
    direct(&executor, &registry, &prompt(0, 2, 1), &out);
    served.run(&prompt(0, 2, 1));
    let (mut d, mut s) = (Vec::new(), Vec::new());
    for i in 1..=RUNS as u64 {
        // Alternate, so drift on a shared machine hits both alike.
        d.push(direct(&executor, &registry, &prompt(i, 2, 1), &out));
        s.push(served.run(&prompt(i, 2, 1)));
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
    let cold = served.run(&edited(1000, "a"));
    let seed = median((0..5).map(|i| served.run(&edited(2000 + i, "a"))).collect());
    let prefix = median(
        (0..5)
            .map(|i| served.run(&edited(2004, &format!("b{i}"))))
            .collect(),
    );
    let back = median((0..5).map(|_| served.run(&edited(1000, "a"))).collect());
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
