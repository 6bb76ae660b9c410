//! The shipped models, end to end: the default graph's output is pinned by a
//! committed checksum (whatever the worker count), and weft's own judge
//! (`assets/mnist/mnist_classifier.safetensors`) reads its digits as the digits
//! that were asked for.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Tensor};
use weft_core::{CancelToken, Executor, RunOptions, SourceFile, Value};
use weft_models::mnist::classifier::as_saved;
use weft_tests::{registry, Recorder};

const DEFAULT_GRAPH: &str = include_str!("../graphs/mnist_flow_cfg.ron");

/// blake3 of the default graph's samples (f32 bits, seed 0, 10 per digit).
/// Regenerate only when the shipped model or the graph changes on purpose.
const DEFAULT_CHECKSUM: &str = "4c7745ba27a26590e4ca73540824b036cf1ea8df19163f1734f0c6d124d04075";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default graph's `sample` latents `[100, 1, 28, 28]` in [−1, 1].
fn run_default(workers: usize) -> Tensor {
    let model = root().join("assets/mnist/mnist_flow.safetensors");
    let overrides = vec![format!("model={}", model.display())];
    let graph = weft_core::load(
        SourceFile::new("mnist_flow_cfg.ron", DEFAULT_GRAPH),
        &registry(),
        &overrides,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let opts = RunOptions {
        workers,
        targets: Some(vec!["sample".into()]),
        ..RunOptions::default()
    };
    let report = Executor::new(1 << 30)
        .run(
            &graph,
            &opts,
            &Recorder::default().sink(),
            &CancelToken::new(),
        )
        .unwrap();
    match &report
        .output("sample")
        .unwrap_or_else(|| panic!("no output: {:?}", report.failed))[0]
    {
        Value::Latent(l) => l.samples.to_dtype(DType::F32).unwrap(),
        other => panic!("not a latent: {}", other.summary()),
    }
}

fn default_samples() -> &'static Tensor {
    static SAMPLES: OnceLock<Tensor> = OnceLock::new();
    SAMPLES.get_or_init(|| run_default(2))
}

fn checksum(t: &Tensor) -> String {
    let values: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    blake3::hash(&bytes).to_hex().to_string()
}

#[test]
fn default_graph_reproduces_its_committed_checksum_with_any_worker_count() {
    let samples = default_samples();
    assert_eq!(samples.dims(), &[100, 1, 28, 28]);
    assert_eq!(checksum(samples), DEFAULT_CHECKSUM);
    assert_eq!(checksum(&run_default(1)), DEFAULT_CHECKSUM);
}

/// Rows of the grid are digits 0–9, ten each; the judge must read at least
/// `MIN_RIGHT` of the 100 as the digit their row asked for: the issue's
/// target of 99 %. The shipped model gets 100 (chance is 10), so a
/// regression of the model, the guidance or the sampler fails here.
#[test]
fn the_judge_reads_the_default_graphs_digits_as_requested() {
    const MIN_RIGHT: usize = 99;
    let judge = weft_models::mnist::load_classifier(
        &root().join("assets/mnist/mnist_classifier.safetensors"),
    )
    .unwrap();
    // Judged as saved: rounded to 8-bit levels, like the test digits.
    let images = as_saved(default_samples()).unwrap();
    let (_, predicted) = judge.classify(&images).unwrap();
    let right = predicted
        .iter()
        .enumerate()
        .filter(|(i, p)| **p == (*i / 10) as u32)
        .count();
    assert!(
        right >= MIN_RIGHT,
        "the judge agrees on {right} of 100 (need {MIN_RIGHT}): {predicted:?}"
    );
}
