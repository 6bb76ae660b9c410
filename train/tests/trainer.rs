//! End-to-end trainer tests on the committed 512-image MNIST subset with
//! tiny networks, so each runs in seconds in debug builds.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use weft_models::mnist::checkpoint;
use weft_sampling::Conditioning;
use weft_train::{train, TrainConfig, Trainer};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

const TINY_UNET: &str = r#"(
    net: (
        arch: "UNet",
        in_channels: 1,
        base_channels: 8,
        channel_mults: [1, 2],
        num_res_blocks: 1,
        attention_resolutions: [],
        num_classes: 10,
        groups: 4,
        head_channels: 8,
    ),
    objective: (kind: "flow"),
    image_size: 28,
    channels: 1,
    num_classes: 10,
)"#;

/// The DiT variants train fast on the CPU (candle's conv backward is slow,
/// so the U-Net is kept to the few steps of the checkpoint test).
const TINY_DIT_FLOW: &str = r#"(
    net: (
        arch: "DiT",
        in_channels: 1,
        image_size: 28,
        patch_size: 7,
        hidden: 32,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        num_classes: 10,
        freq_dim: 32,
    ),
    objective: (kind: "flow"),
    image_size: 28,
    channels: 1,
    num_classes: 10,
)"#;

const TINY_DIT_DDPM: &str = r#"(
    net: (
        arch: "DiT",
        in_channels: 1,
        image_size: 28,
        patch_size: 7,
        hidden: 32,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        num_classes: 10,
        freq_dim: 32,
    ),
    objective: (kind: "ddpm", beta_schedule: "linear", n_train: 1000),
    image_size: 28,
    channels: 1,
    num_classes: 10,
)"#;

const TINY_CLASSIFIER: &str = r#"(
    net: (
        arch: "Classifier",
        in_channels: 1,
        image_size: 28,
        channels: [8, 16],
        hidden: 32,
        num_classes: 10,
    ),
    objective: (kind: "classify"),
    image_size: 28,
    channels: 1,
    num_classes: 10,
)"#;

/// A config file in `dir` with `extra` fields appended (replacing the
/// defaults they name); `model` is RON.
fn write_config(dir: &Path, name: &str, model: &str, extra: &str) -> PathBuf {
    let data = data_dir();
    let defaults: String = [
        "batch_size: 16,",
        "lr: 2e-3,",
        "warmup_steps: 2,",
        "ema_decay: 0.99,",
        "cfg_dropout: 0.1,",
    ]
    .iter()
    .filter(|d| !extra.contains(&d[..=d.find(':').unwrap()]))
    .map(|d| format!("    {d}\n"))
    .collect();
    let text = format!(
        r#"(
    data: (
        images: "{}",
        labels: "{}",
    ),
    model: {model},
{defaults}    seed: 7,
    output: "{}",
    {extra}
)"#,
        data.join("train-images-idx3-ubyte.gz").display(),
        data.join("train-labels-idx1-ubyte.gz").display(),
        dir.join(format!("{name}.safetensors")).display(),
    );
    let path = dir.join(format!("{name}.ron"));
    std::fs::write(&path, text).unwrap();
    path
}

fn weights(varmap: &candle_nn::VarMap) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let vals = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            (k.clone(), vals)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn file_tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

#[test]
fn short_flow_run_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "flow", TINY_DIT_FLOW, "steps: 60,");
    let report = train(&cfg, false, false).unwrap();
    assert_eq!((report.start_step, report.end_step), (0, 60));
    assert_eq!(report.losses.len(), 60);
    let (first, last) = (mean(&report.losses[..10]), mean(&report.losses[50..]));
    assert!(
        last < 0.8 * first,
        "loss went from {first} to {last}: {:?}",
        report.losses
    );
    assert!(report.images_per_sec > 0.0);
    for p in [&report.output, &report.raw_output, &report.resume_file] {
        assert!(p.is_file(), "{} missing", p.display());
    }
}

#[test]
fn short_ddpm_dit_run_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "ddpm", TINY_DIT_DDPM, "steps: 60,");
    let report = train(&cfg, false, false).unwrap();
    let (first, last) = (mean(&report.losses[..10]), mean(&report.losses[50..]));
    // ε-prediction starts near 1 (the variance of ε) for a zero-output head.
    assert!(
        last < 0.8 * first,
        "loss went from {first} to {last}: {:?}",
        report.losses
    );
}

#[test]
fn two_runs_are_bit_identical_and_seeds_matter() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: u64| {
        let cfg = write_config(
            dir.path(),
            name,
            TINY_DIT_FLOW,
            "steps: 8, sigma_sampling: LogitNormal(mean: 0.0, std: 1.0),",
        );
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("seed: 7", &format!("seed: {seed}"));
        std::fs::write(&cfg, text).unwrap();
        let report = train(&cfg, false, false).unwrap();
        (report.losses, file_tensors(&report.raw_output))
    };
    let a = run("a", 7);
    let b = run("b", 7);
    assert_eq!(a.0, b.0, "losses differ");
    assert!(a.1 == b.1, "weights differ between identical runs");
    let c = run("c", 8);
    assert_ne!(a.0, c.0, "the seed does not change the run");
}

/// Shards split the batch, not the maths: the gradient of the mean loss is
/// the mean of the shards' gradients, so one sharded step moves the weights
/// where the whole-batch step does (up to float rounding), and a sharded run
/// repeats bit for bit.
#[test]
fn sharded_steps_match_whole_batch_steps_and_repeat_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let step = |name: &str, shards: usize| {
        let cfg = write_config(
            dir.path(),
            name,
            TINY_DIT_FLOW,
            &format!("steps: 4, shards: {shards},"),
        );
        let config = TrainConfig::load(&cfg).unwrap();
        let mut trainer = Trainer::new(config, &cfg).unwrap();
        let losses: Vec<f32> = (0..2).map(|_| trainer.train_step().unwrap()).collect();
        (losses, weights(trainer.varmap()))
    };
    let whole = step("whole", 1);
    let sharded = step("sharded", 4);
    for (a, b) in whole.0.iter().zip(&sharded.0) {
        assert!((a - b).abs() < 1e-5, "losses {a} and {b}");
    }
    let mut worst = 0f32;
    for ((name, a), (_, b)) in whole.1.iter().zip(&sharded.1) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
        assert_eq!(a.len(), b.len(), "{name}");
    }
    assert!(worst < 1e-5, "weights differ by {worst}");
    // The updates are not trivially equal: the first step moved the weights.
    let initial = weights(
        Trainer::new(
            TrainConfig::load(&dir.path().join("whole.ron")).unwrap(),
            &dir.path().join("whole.ron"),
        )
        .unwrap()
        .varmap(),
    );
    assert!(initial != whole.1);
    assert!(
        step("again", 4) == sharded,
        "a sharded run did not repeat exactly"
    );
}

#[test]
fn resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Straight through: 12 steps, cosine schedule, weight decay.
    let extra = "steps: 12, lr_schedule: Cosine, weight_decay: 0.01,";
    let straight = write_config(dir.path(), "straight", TINY_DIT_FLOW, extra);
    let full = train(&straight, false, false).unwrap();

    // Stopped at 5: the same config with steps = 12, run by hand to step 5.
    let split = write_config(dir.path(), "split", TINY_DIT_FLOW, extra);
    let config = TrainConfig::load(&split).unwrap();
    let mut t = Trainer::new(config, &split).unwrap();
    let mut first = Vec::new();
    for _ in 0..5 {
        first.push(t.train_step().unwrap());
    }
    t.save().unwrap();
    drop(t);
    let rest = train(&split, true, false).unwrap();
    assert_eq!(rest.start_step, 5);
    first.extend(&rest.losses);
    assert_eq!(first, full.losses, "losses differ after resuming");
    for (a, b) in [
        (&full.output, &rest.output),
        (&full.raw_output, &rest.raw_output),
    ] {
        let (wa, wb) = (file_tensors(a), file_tensors(b));
        assert_eq!(wa.len(), wb.len());
        for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
            assert_eq!(na, nb);
            assert!(va == vb, "{na} differs after resuming");
        }
    }

    // A resume file from another seed is refused, naming the field.
    let other = std::fs::read_to_string(&split)
        .unwrap()
        .replace("seed: 7", "seed: 9");
    std::fs::write(&split, other).unwrap();
    let err = train(&split, true, false).unwrap_err();
    assert!(err.contains("`seed`"), "{err}");
}

#[test]
fn saved_checkpoint_loads_and_predicts_like_the_trained_net() {
    let dir = tempfile::tempdir().unwrap();
    for (name, model) in [("unet", TINY_UNET), ("dit", TINY_DIT_DDPM)] {
        let cfg = write_config(dir.path(), name, model, "steps: 3,");
        let config = TrainConfig::load(&cfg).unwrap();
        let mut t = Trainer::new(config.clone(), &cfg).unwrap();
        for _ in 0..3 {
            t.train_step().unwrap();
        }
        t.save().unwrap();
        // The raw checkpoint holds exactly the trained net's weights.
        let raw = checkpoint::load_model(&config.raw_path()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[3u32, 10], &Device::Cpu).unwrap();
        let ms = config.model.sampling();
        let sigma = ms.sigma_at(ms.timestep(0.5).round());
        let t_in = Tensor::full(ms.timestep(sigma) as f32, 2, &Device::Cpu).unwrap();
        let x_in = x.affine(ms.input_scale(sigma), 0.0).unwrap();
        let want = t.net().forward(&x_in, &t_in, &labels).unwrap();
        let cond = Conditioning::labels(vec![Some(3), None]);
        let got = raw.predict(&x, sigma, &cond).unwrap();
        let diff = (want - got)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{name}: loaded model differs by {diff}");
        assert_eq!(raw.sampling, ms);

        // The shipped checkpoint holds the EMA weights, not the raw ones.
        let (shipped_cfg, _) = checkpoint::load_net(&config.output).unwrap();
        assert_eq!(shipped_cfg, config.model);
        let shipped = file_tensors(&config.output);
        let ema = t.ema();
        assert!(shipped.iter().all(|(k, v)| &ema.shadow[k] == v));
        assert_ne!(shipped, weights(t.varmap()));
    }
}

fn config_error(dir: &Path, model: &str, extra: &str) -> String {
    let cfg = write_config(dir, "bad", model, extra);
    train(&cfg, false, false).unwrap_err()
}

#[test]
fn bad_config_values_name_the_field_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("steps: 10, batch_size: 0,", "`batch_size`"),
        (
            "steps: 10, shards: 3,",
            "`shards`: must divide batch_size (16)",
        ),
        ("steps: 10, cfg_dropout: 1.5,", "`cfg_dropout`"),
        ("steps: 0,", "`steps`"),
        ("steps: 10, lr: -1.0,", "`lr`"),
        ("steps: 10, ema_decay: 1.0,", "`ema_decay`"),
        ("steps: 5, warmup_steps: 6,", "`warmup_steps`"),
        (
            "steps: 5, sigma_sampling: LogitNormal(mean: 0.0, std: 0.0),",
            "`sigma_sampling`",
        ),
    ];
    for (extra, field) in cases {
        let cfg = write_config(d, "bad", TINY_UNET, extra);
        let err = train(&cfg, false, false).unwrap_err();
        assert!(
            err.contains(field) && err.contains("bad.ron"),
            "{extra}: {err}"
        );
    }
    // Unknown fields and syntax errors carry the position.
    let err = config_error(d, TINY_UNET, "steps: 5, ema_dacay: 0.5,");
    assert!(
        err.contains("bad.ron:") && err.contains("ema_dacay"),
        "{err}"
    );
    let err = config_error(d, TINY_UNET, "steps: 5,, ");
    assert!(err.contains("bad.ron:"), "{err}");
    let line = err.split(':').nth(1).unwrap().parse::<usize>();
    assert!(line.is_ok_and(|l| l > 1), "{err}");
    // Missing fields.
    let err = config_error(d, TINY_UNET, "");
    assert!(err.contains("steps"), "{err}");
    // A model config the networks refuse.
    let bad_groups = TINY_UNET.replace("groups: 4", "groups: 3");
    let err = config_error(d, &bad_groups, "steps: 5,");
    assert!(err.contains("`model`") && err.contains("bad.ron"), "{err}");
    let dropout = TINY_UNET.replace("groups: 4", "groups: 4, dropout: 0.1");
    let err = config_error(d, &dropout, "steps: 5,");
    assert!(err.contains("dropout"), "{err}");
    // A classifier learns every label, and networks match their objective.
    let err = config_error(d, TINY_CLASSIFIER, "steps: 5,");
    assert!(
        err.contains("`cfg_dropout`") && err.contains("classifier"),
        "{err}"
    );
    let unet_classify = TINY_UNET.replace(r#"kind: "flow""#, r#"kind: "classify""#);
    let err = config_error(d, &unet_classify, "steps: 5, cfg_dropout: 0.0,");
    assert!(err.contains("`model`") && err.contains("classify"), "{err}");
}

/// A classifier trained on the subset beats chance by far on the images it
/// saw, its checkpoint loads only as a classifier, and the noise-conditional
/// variant trains too.
#[test]
fn classifiers_train_and_load_only_as_classifiers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "judge",
        TINY_CLASSIFIER,
        "steps: 96, cfg_dropout: 0.0, batch_size: 32, lr: 1e-2,",
    );
    let report = train(&cfg, false, false).unwrap();
    let (first, last) = (mean(&report.losses[..8]), mean(&report.losses[88..]));
    assert!(last < 0.6 * first, "loss went from {first} to {last}");

    let judge = checkpoint::load_classifier(&report.output).unwrap();
    let data = weft_train::idx::read_dataset(
        &data_dir().join("train-images-idx3-ubyte.gz"),
        &data_dir().join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let pixels: Vec<f32> = (0..data.len())
        .flat_map(|i| data.images.image(i).iter().map(|&p| p as f32 / 127.5 - 1.0))
        .collect();
    let x = Tensor::from_vec(pixels, (data.len(), 1, 28, 28), &Device::Cpu).unwrap();
    let (_, predicted) = judge.classify(&x).unwrap();
    let right = predicted
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| **p == **l as u32)
        .count();
    assert!(
        right as f64 > 0.7 * data.len() as f64,
        "{right} of {} right",
        data.len()
    );

    let err = checkpoint::load_model(&report.output).unwrap_err();
    assert!(err.contains("is a classifier"), "{err}");
    let flow = write_config(dir.path(), "flow", TINY_DIT_FLOW, "steps: 3,");
    let flow = train(&flow, false, false).unwrap();
    let err = checkpoint::load_classifier(&flow.output).unwrap_err();
    assert!(err.contains("not a classifier"), "{err}");

    let noisy = TINY_CLASSIFIER.replace("hidden: 32,", "hidden: 32, noise_conditional: true,");
    let cfg = write_config(
        dir.path(),
        "noisy",
        &noisy,
        "steps: 96, cfg_dropout: 0.0, batch_size: 32, lr: 1e-2,",
    );
    let report = train(&cfg, false, false).unwrap();
    let (first, last) = (mean(&report.losses[..8]), mean(&report.losses[88..]));
    assert!(last < 0.9 * first, "noisy loss went from {first} to {last}");
    assert!(
        checkpoint::load_classifier(&report.output)
            .unwrap()
            .config()
            .noise_conditional
    );
}

#[test]
fn bad_data_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, "data", TINY_DIT_FLOW, "steps: 5,");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let images = data_dir().join("train-images-idx3-ubyte.gz");
    let labels = data_dir().join("train-labels-idx1-ubyte.gz");
    let with = |img: &Path, lbl: &Path| {
        // Through placeholders, so swapping the two paths works.
        let t = text
            .replace(&images.display().to_string(), "@IMAGES@")
            .replace(&labels.display().to_string(), "@LABELS@")
            .replace("@IMAGES@", &img.display().to_string())
            .replace("@LABELS@", &lbl.display().to_string());
        std::fs::write(&cfg, t).unwrap();
        train(&cfg, false, false).unwrap_err()
    };
    // Missing file: names the field.
    let err = with(&d.join("nope.gz"), &labels);
    assert!(
        err.contains("`data.images`") && err.contains("nope.gz"),
        "{err}"
    );
    // Swapped files: bad magic, naming the file.
    let err = with(&labels, &images);
    assert!(
        err.contains("bad magic") && err.contains("train-labels"),
        "{err}"
    );
    // Truncated gzip.
    let bytes = std::fs::read(&images).unwrap();
    let cut = d.join("cut-images.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = with(&cut, &labels);
    assert!(
        err.contains("cut-images.gz") && err.contains("truncated"),
        "{err}"
    );
    // Count mismatch.
    let few = d.join("few-labels.gz");
    weft_train::idx::write_labels(&few, &[1, 2, 3]).unwrap();
    let err = with(&images, &few);
    assert!(
        err.contains("count mismatch") && err.contains("few-labels"),
        "{err}"
    );
    // Labels outside the model's classes.
    let high = d.join("high-labels.gz");
    weft_train::idx::write_labels(&high, &[10; 512]).unwrap();
    let err = with(&images, &high);
    assert!(
        err.contains("out of range") && err.contains("high-labels"),
        "{err}"
    );
}

/// Release throughput of the shipped configs, without training them:
/// `cargo test --release -p weft-train --test trainer -- --ignored --nocapture`
/// (run from anywhere; paths are resolved against the repository root).
#[test]
#[ignore]
fn shipped_config_throughput() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["mnist_flow", "mnist_ddpm"] {
        let path = root.join(format!("assets/mnist/{name}.ron"));
        let mut config = TrainConfig::load(&path).unwrap();
        config.output = dir.path().join(format!("{name}.safetensors"));
        let (total, batch) = (config.steps, config.batch_size);
        let mut t = Trainer::new(config, &path).unwrap();
        t.train_step().unwrap(); // warm-up: allocations, thread pool
        let n = 10;
        let start = std::time::Instant::now();
        let mut losses = Vec::new();
        for _ in 0..n {
            losses.push(t.train_step().unwrap());
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = (n * batch) as f64 / secs;
        println!(
            "{name}: {rate:.0} img/s, {:.3} s/step; {total} steps × {batch} = {:.1} min; losses {losses:?}",
            secs / n as f64,
            total as f64 * batch as f64 / rate / 60.0
        );
    }
}

/// `weft eval` on tiny models: one row per (guidance, steps, w) in order,
/// metrics in range, seeded (a second run gives the same numbers), the
/// guidance weight changes the samples, and the table, JSON and plot are
/// written. A bad sampler name is refused naming the field and file.
#[test]
fn eval_measures_every_configuration_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let long = "steps: 48, cfg_dropout: 0.0, batch_size: 32, lr: 1e-2,";
    let judge = train(
        &write_config(d, "judge", TINY_CLASSIFIER, long),
        false,
        false,
    )
    .unwrap();
    let noisy = TINY_CLASSIFIER.replace("hidden: 32,", "hidden: 32, noise_conditional: true,");
    let noisy = train(&write_config(d, "noisy", &noisy, long), false, false).unwrap();
    let flow = train(
        &write_config(d, "flow", TINY_DIT_FLOW, "steps: 20,"),
        false,
        false,
    )
    .unwrap();
    let eval_config = |sampler: &str| {
        let text = format!(
            r#"(
    classifier: "{}",
    test_data: (images: "{}", labels: "{}"),
    models: [(name: "tiny", checkpoint: "{}", sampler: "{sampler}", scheduler: "simple")],
    weights: [0.0, 3.0],
    steps: [2, 3],
    classifier_guidance: Some((classifier: "{}", steps: [2])),
    samples_per_class: 3,
    seed: 1,
    output_dir: "{}",
)"#,
            judge.output.display(),
            data_dir().join("train-images-idx3-ubyte.gz").display(),
            data_dir().join("train-labels-idx1-ubyte.gz").display(),
            flow.output.display(),
            noisy.output.display(),
            d.join("out").display(),
        );
        let path = d.join("eval.ron");
        std::fs::write(&path, text).unwrap();
        path
    };
    let path = eval_config("euler");
    let mut lines = Vec::new();
    let report = weft_train::eval::evaluate(&path, &mut |l| lines.push(l.to_string())).unwrap();
    let keys: Vec<(&str, usize, f64)> = report
        .rows
        .iter()
        .map(|r| (r.guidance.as_str(), r.steps, r.w))
        .collect();
    assert_eq!(
        keys,
        [
            ("CFG", 2, 0.0),
            ("CFG", 2, 3.0),
            ("CFG", 3, 0.0),
            ("CFG", 3, 3.0),
            ("classifier", 2, 0.0),
            ("classifier", 2, 3.0),
        ]
    );
    assert_eq!(lines.len(), 1 + report.rows.len());
    assert!((0.0..=1.0).contains(&report.judge_accuracy));
    for r in &report.rows {
        assert!((0.0..=1.0).contains(&r.accuracy), "{r:?}");
        assert!(r.frechet.is_finite() && r.frechet >= 0.0, "{r:?}");
        assert!(r.diversity.is_finite() && r.diversity > 0.0, "{r:?}");
    }
    assert_ne!(report.rows[0].frechet, report.rows[1].frechet);

    let again = weft_train::eval::evaluate(&path, &mut |_| {}).unwrap();
    let strip = |rows: &[weft_train::eval::Row]| -> Vec<(f64, f64, f64)> {
        rows.iter()
            .map(|r| (r.accuracy, r.frechet, r.diversity))
            .collect()
    };
    assert_eq!(strip(&report.rows), strip(&again.rows));

    let out = d.join("out");
    let table = std::fs::read_to_string(out.join("eval.md")).unwrap();
    assert_eq!(table.matches("| tiny |").count(), 6, "{table}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 6);
    let png = png::Decoder::new(std::io::Cursor::new(
        std::fs::read(out.join("eval.png")).unwrap(),
    ))
    .read_info()
    .unwrap();
    assert_eq!((png.info().width, png.info().height), (3 * 520, 420));

    let err = weft_train::eval::evaluate(&eval_config("warp_drive"), &mut |_| {}).unwrap_err();
    assert!(
        err.contains("eval.ron") && err.contains("`models.sampler`") && err.contains("warp_drive"),
        "{err}"
    );
}
