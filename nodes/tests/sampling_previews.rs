//! Live previews from the sampling nodes, through the executor: how many
//! are sent under the rate limit, what they hold, and that they never
//! change what is sampled.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::Tensor;
use weft_core::{
    CancelToken, Event, EventSink, Executor, PreviewMethod, Previews, RunOptions, SourceFile, Value,
};

/// `graphs/exact_gaussian_ksampler.ron`: 20 steps of a 1-channel 32×32
/// pixel-space model, batch 2.
fn graph() -> weft_core::ValidGraph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/exact_gaussian_ksampler.ron");
    let text = std::fs::read_to_string(&path).unwrap();
    let registry = weft_nodes::builtin_registry();
    weft_core::load(
        SourceFile::new(path.display().to_string(), text),
        &registry,
        &[],
    )
    .unwrap()
}

/// Runs the graph's sampler with `previews`; its sample and the events.
fn run(previews: Previews) -> (Tensor, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        EventSink::new(move |e| events.lock().unwrap().push(e.clone()))
    };
    let opts = RunOptions {
        targets: Some(vec!["sample".into()]),
        out_dir: std::env::temp_dir(),
        previews,
        ..RunOptions::default()
    };
    let report = Executor::new(1 << 20)
        .run(&graph(), &opts, &sink, &CancelToken::new())
        .unwrap();
    assert!(report.success(), "{:?}", report.failed);
    let Value::Latent(latent) = &report.outputs[0].1[0] else {
        panic!("not a latent")
    };
    let events = events.lock().unwrap().clone();
    (latent.samples.clone(), events)
}

fn previews(events: &[Event]) -> Vec<(u64, u64, u32, u32, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Preview {
                node,
                step,
                max,
                width,
                height,
                png,
            } => {
                assert_eq!(node, "sample");
                Some((*step, *max, *width, *height, png.bytes().to_vec()))
            }
            _ => None,
        })
        .collect()
}

fn latent2rgb(interval: Duration) -> Previews {
    Previews {
        method: PreviewMethod::Latent2Rgb,
        min_interval: interval,
        ..Previews::default()
    }
}

#[test]
fn with_no_minimum_interval_every_step_of_a_20_step_run_is_previewed() {
    let (_, events) = run(latent2rgb(Duration::ZERO));
    let shown = previews(&events);
    let steps: Vec<u64> = shown.iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=20).collect::<Vec<_>>());
    for (_, max, width, height, png) in &shown {
        assert_eq!((*max, *width, *height), (20, 32, 32));
        let mut reader = png::Decoder::new(std::io::Cursor::new(&png[..]))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (32, 32));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
    }
    // Each preview follows its step's progress event.
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { value, .. } => Some(format!("p{value}")),
            Event::Preview { step, .. } => Some(format!("v{step}")),
            _ => None,
        })
        .collect();
    let want: Vec<String> = (1..=20)
        .flat_map(|i| [format!("p{i}"), format!("v{i}")])
        .collect();
    assert_eq!(order, want);
}

#[test]
fn a_long_interval_still_shows_the_first_and_last_steps() {
    let (_, events) = run(latent2rgb(Duration::from_secs(3600)));
    let steps: Vec<u64> = previews(&events).iter().map(|p| p.0).collect();
    assert_eq!(steps, [1, 20]);
}

#[test]
fn previews_never_change_the_sample_and_off_sends_none() {
    let (plain, events) = run(Previews::default());
    assert!(previews(&events).is_empty());
    let (previewed, events) = run(latent2rgb(Duration::ZERO));
    assert_eq!(previews(&events).len(), 20);
    let bits = |t: &Tensor| -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&plain), bits(&previewed));
}
