//! What the plugin boundary costs: the MNIST model sampled by weft's Heun
//! and by the Restart plugin with 0 restarts (the same Heun steps, driven
//! through the C ABI: every model call crosses it twice), alternated in one
//! process, medians of several runs.
//!
//! `cargo bench -p weft-plugin-host --bench boundary`

use std::path::{Path, PathBuf};
use std::time::Instant;

use weft_core::{CancelToken, EventSink, Executor, RunOptions, SourceFile};
use weft_plugin_host::PluginHost;

const RUNS: usize = 7;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Restart plugin, built as a cdylib next to this bench (a dev-dependency).
fn restart_plugin() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let file = format!(
        "{}weft_plugin_restart{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    [deps.join(&file), deps.parent().unwrap().join(&file)]
        .into_iter()
        .find(|p| p.is_file())
        .expect("the restart plugin is built with the bench")
}

fn graph(sampler: &str, batch: usize, steps: usize) -> String {
    format!(
        r#"(nodes: {{
        "model": CheckpointLoader(ckpt_name: "{}"),
        "digits": ClassLabel(labels: "0,1,2,3,4,5,6,7,8,9", repeat: {}),
        "nothing": ClassLabel(labels: "none"),
        "guider": CFGGuider(model: Link("model", "MODEL"), positive: Link("digits", "CONDITIONING"),
            negative: Link("nothing", "CONDITIONING"), cfg: 4.0),
        "sampler": {sampler},
        "sigmas": FlowMatchScheduler(steps: {steps}, shift: 1.0),
        "noise": RandomNoise(noise_seed: 0),
        "latent": EmptyLatent(width: 28, height: 28, channels: 1, batch_size: {batch}),
        "sample": SamplerCustomAdvanced(noise: Link("noise", "NOISE"), guider: Link("guider", "GUIDER"),
            sampler: Link("sampler", "SAMPLER"), sigmas: Link("sigmas", "SIGMAS"), latent_image: Link("latent", "LATENT")),
        "show": Print(value: Link("sample", "output")),
    }})"#,
        repo().join("assets/mnist/mnist_flow.safetensors").display(),
        batch / 10
    )
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    weft_kernels::alloc::keep_freed_memory();
    let mut registry = weft_nodes::builtin_registry();
    PluginHost::new()
        .load(&restart_plugin(), &mut registry)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("MNIST flow model, CFG (batched cond/uncond), Heun: wall time of sampling, median of {RUNS}");
    println!(
        "| batch | steps | model calls | weft heun | plugin SamplerRestart(restarts: 0) | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for (batch, steps) in [(10, 10), (100, 10)] {
        let graphs = [
            graph(r#"KSamplerSelect(sampler_name: "heun")"#, batch, steps),
            graph("SamplerRestart(restarts: 0)", batch, steps),
        ]
        .map(|text| weft_core::load(SourceFile::new("bench.ron", text), &registry, &[]).unwrap());
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..RUNS {
            for (graph, times) in graphs.iter().zip(&mut times) {
                // A fresh cache each time, with the model loaded by a first run.
                let executor = Executor::new(1 << 30);
                let opts = RunOptions {
                    targets: Some(vec!["model".into()]),
                    ..RunOptions::default()
                };
                let quiet = EventSink::new(|_| {});
                executor
                    .run(graph, &opts, &quiet, &CancelToken::new())
                    .unwrap();
                let start = Instant::now();
                let report = executor
                    .run(graph, &RunOptions::default(), &quiet, &CancelToken::new())
                    .unwrap();
                assert!(report.success(), "{:?}", report.failed);
                times.push(start.elapsed().as_secs_f64());
            }
        }
        let [builtin, plugin] = times.map(median);
        println!(
            "| {batch} | {steps} | {} | {:.1} ms | {:.1} ms | {:.3}× |",
            2 * steps - 1,
            builtin * 1e3,
            plugin * 1e3,
            plugin / builtin
        );
    }
}
