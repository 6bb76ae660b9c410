//! `weft eval`: the guidance trade-off of weft's own models, measured.
//!
//! For every model, guidance rule, step count and guidance weight w, it
//! generates `samples_per_class` digits per class from fixed seeds and judges
//! them with a separately trained plain classifier:
//! - **accuracy**: the judge agrees with the requested class;
//! - **Fréchet distance** between generated and test-set digits in the
//!   judge's penultimate features (an FID analogue; lower is closer);
//! - **diversity**: mean within-class feature distance, as a ratio to the
//!   test set's (1 = as varied as real digits).
//!
//! Weights use Ho & Salimans' w: ε̃ = (1+w)·ε(y) − w·ε(∅), CFG scale 1 + w,
//! w = 0 unguided. Classifier guidance runs the unconditional model with
//! scale 1 + w on ∇ log p(y | x), its explicit-classifier counterpart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use weft_models::mnist as models;
use weft_models::mnist::classifier::as_saved;
use weft_sampling::guidance::{Cfg, ClassifierGuided};
use weft_sampling::{
    sampler_by_name, schedule, seeded_noise, Conditioning, Denoiser, Model, SampleContext,
    SamplerOptions, SeededSteps,
};

use crate::config::{read_ron, DataConfig};
use crate::idx::{read_dataset, Dataset};
use crate::metrics::{accuracy, class_diversity, frechet_distance, Gaussian};
use crate::plot::{plot_png, Panel, Series};

/// One generative model to evaluate.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalModel {
    /// Its name in the table.
    pub name: String,
    pub checkpoint: PathBuf,
    /// A sampler name (see `weft nodes`, KSamplerSelect).
    pub sampler: String,
    /// A scheduler name (BasicScheduler's).
    pub scheduler: String,
}

/// Classifier guidance's part of the evaluation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierGuidanceEval {
    /// A noise-conditional classifier checkpoint.
    pub classifier: PathBuf,
    /// Step counts to run it at (each step also takes a classifier gradient).
    pub steps: Vec<usize>,
}

/// An evaluation run, read from RON (see `assets/mnist/eval.ron`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The judge: a plain classifier checkpoint.
    pub classifier: PathBuf,
    /// The real digits generated ones are compared with.
    pub test_data: DataConfig,
    pub models: Vec<EvalModel>,
    /// Guidance weights w (Ho & Salimans; CFG scale 1 + w).
    pub weights: Vec<f64>,
    pub steps: Vec<usize>,
    pub samples_per_class: usize,
    #[serde(default)]
    pub classifier_guidance: Option<ClassifierGuidanceEval>,
    pub seed: u64,
    /// Where eval.md, eval.json and eval.png go.
    pub output_dir: PathBuf,
}

impl EvalConfig {
    pub fn load(path: &Path) -> Result<EvalConfig, String> {
        let config: EvalConfig = read_ron(path)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), String> {
        let bad = |field: &str, msg: String| Err(format!("{}: `{field}`: {msg}", path.display()));
        if self.models.is_empty() {
            return bad("models", "lists no model to evaluate".into());
        }
        if self.weights.is_empty() || self.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return bad(
                "weights",
                format!("needs finite w ≥ 0, got {:?}", self.weights),
            );
        }
        let cg_steps = self.classifier_guidance.as_ref().map(|c| &c.steps);
        for steps in std::iter::once(&self.steps).chain(cg_steps) {
            if steps.is_empty() || steps.iter().any(|s| *s == 0 || *s > 1000) {
                return bad(
                    "steps",
                    format!("needs step counts in 1..=1000, got {steps:?}"),
                );
            }
        }
        if self.samples_per_class < 2 {
            return bad(
                "samples_per_class",
                format!(
                    "needs ≥ 2 (diversity compares pairs), got {}",
                    self.samples_per_class
                ),
            );
        }
        for m in &self.models {
            if sampler_by_name(&m.sampler, SamplerOptions::default()).is_none() {
                return bad("models.sampler", format!("unknown sampler `{}`", m.sampler));
            }
            if !schedule::scheduler_names().contains(&m.scheduler.as_str()) {
                return bad(
                    "models.scheduler",
                    format!(
                        "unknown scheduler `{}`; one of {}",
                        m.scheduler,
                        schedule::scheduler_names().join(", ")
                    ),
                );
            }
        }
        Ok(())
    }
}

/// One measured configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub model: String,
    /// "CFG" or "classifier".
    pub guidance: String,
    pub w: f64,
    pub steps: usize,
    pub accuracy: f64,
    pub frechet: f64,
    pub diversity: f64,
    /// Wall time to generate the samples.
    pub seconds: f64,
}

/// What `weft eval` measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// The judge's accuracy on the test set.
    pub judge_accuracy: f64,
    /// Test-set within-class mean feature distance (diversity's reference).
    pub test_diversity: f64,
    pub samples_per_class: usize,
    pub rows: Vec<Row>,
}

fn cerr(e: candle_core::Error) -> String {
    e.to_string()
}

/// A dataset's images as `[N, 1, H, W]` in [−1, 1], as the models see them.
fn images_tensor(data: &Dataset) -> Result<Tensor, String> {
    let (n, h, w) = (data.len(), data.images.rows, data.images.cols);
    let pixels: Vec<f32> = (0..n)
        .flat_map(|i| data.images.image(i).iter().map(|&p| p as f32 / 127.5 - 1.0))
        .collect();
    Tensor::from_vec(pixels, (n, 1, h, w), &Device::Cpu).map_err(cerr)
}

/// Samples a batch of `shape` from seeded noise (the noise seed, and the
/// step-noise seed of stochastic samplers, are both `seed`).
fn generate(
    denoiser: &dyn Denoiser,
    sampler_name: &str,
    sigmas: &[f64],
    shape: &[usize],
    seed: u64,
) -> Result<Tensor, String> {
    let sampler = sampler_by_name(sampler_name, SamplerOptions::default())
        .ok_or_else(|| format!("unknown sampler `{sampler_name}`"))?;
    let noise = seeded_noise(seed, shape).map_err(cerr)?;
    let x = denoiser
        .path()
        .noise(sigmas[0], &noise, &noise.zeros_like().map_err(cerr)?)
        .map_err(cerr)?;
    let mut steps = SeededSteps::new(seed);
    let mut progress = |_: usize, _: usize| Ok(());
    let mut ctx = SampleContext {
        noise: &mut steps,
        progress: &mut progress,
    };
    sampler.sample(denoiser, x, sigmas, &mut ctx).map_err(cerr)
}

/// Runs the evaluation described by the config at `path`, writing its
/// table, JSON and plot; `log` receives one line per measured row.
pub fn evaluate(path: &Path, log: &mut dyn FnMut(&str)) -> Result<EvalReport, String> {
    let config = EvalConfig::load(path)?;
    let judge = models::load_classifier(&config.classifier)?;
    let test = read_dataset(&config.test_data.images, &config.test_data.labels)?;
    let (test_features, test_predicted) = judge.classify(&images_tensor(&test)?).map_err(cerr)?;
    let test_labels: Vec<u32> = test.labels.iter().map(|&l| l as u32).collect();
    let judge_accuracy = accuracy(&test_predicted, &test_labels)?;
    let dim = judge.config().hidden;
    let classes = judge.config().num_classes;
    let test_gaussian = Gaussian::fit(&test_features, dim)?;
    let test_diversity = class_diversity(&test_features, dim, &test_labels, classes)?;
    log(&format!(
        "judge: {:.2} % on {} test digits",
        100.0 * judge_accuracy,
        test.len()
    ));

    let guide_classifier = match &config.classifier_guidance {
        Some(cg) => Some(Arc::new(models::load_classifier(&cg.classifier)?)),
        None => None,
    };
    let spc = config.samples_per_class;
    let labels: Vec<u32> = (0..classes * spc).map(|i| (i / spc) as u32).collect();
    let positive = Conditioning::labels(labels.iter().map(|&l| Some(l)).collect());
    let mut rows = Vec::new();
    for m in &config.models {
        let model_config = models::checkpoint::read_config(&m.checkpoint)?;
        let model = Arc::new(models::load_model(&m.checkpoint)?);
        let shape = [
            labels.len(),
            model_config.channels,
            model_config.image_size,
            model_config.image_size,
        ];
        let mut runs: Vec<(&str, usize)> = config.steps.iter().map(|&s| ("CFG", s)).collect();
        if let Some(cg) = &config.classifier_guidance {
            runs.extend(cg.steps.iter().map(|&s| ("classifier", s)));
        }
        for (guidance, steps) in runs {
            let sigmas = schedule::sigmas_by_name(&m.scheduler, &model.sampling, steps)?;
            for &w in &config.weights {
                let denoiser: Box<dyn Denoiser> = match (guidance, &guide_classifier) {
                    ("classifier", Some(c)) => Box::new(ClassifierGuided {
                        model: model.clone(),
                        conditioning: Conditioning::labels(vec![None]),
                        classifier: c.clone(),
                        labels: labels.clone(),
                        scale: 1.0 + w,
                    }),
                    _ => Box::new(cfg(&model, &positive, 1.0 + w)),
                };
                let began = Instant::now();
                let samples =
                    generate(denoiser.as_ref(), &m.sampler, &sigmas, &shape, config.seed)?;
                let seconds = began.elapsed().as_secs_f64();
                let (features, predicted) = judge
                    .classify(&as_saved(&samples).map_err(cerr)?)
                    .map_err(cerr)?;
                let row = Row {
                    model: m.name.clone(),
                    guidance: guidance.to_string(),
                    w,
                    steps,
                    accuracy: accuracy(&predicted, &labels)?,
                    frechet: frechet_distance(&Gaussian::fit(&features, dim)?, &test_gaussian)?,
                    diversity: class_diversity(&features, dim, &labels, classes)? / test_diversity,
                    seconds,
                };
                log(&format!(
                    "{} {} w={} steps={}: accuracy {:.1} %, FD {:.2}, diversity {:.3} ({:.1} s)",
                    row.model,
                    row.guidance,
                    row.w,
                    row.steps,
                    100.0 * row.accuracy,
                    row.frechet,
                    row.diversity,
                    row.seconds
                ));
                rows.push(row);
            }
        }
    }
    let report = EvalReport {
        judge_accuracy,
        test_diversity,
        samples_per_class: spc,
        rows,
    };
    write_outputs(&config.output_dir, &report)?;
    Ok(report)
}

fn cfg(model: &Arc<Model>, positive: &Conditioning, scale: f64) -> Cfg {
    Cfg {
        model: model.clone(),
        positive: positive.clone(),
        negative: Conditioning::labels(vec![None]),
        scale,
        rescale: 0.0,
        norm_rescale: false,
        interval: None,
    }
}

/// The Markdown table: one line per row, best FD per (model, guidance, steps) in bold.
pub fn markdown(report: &EvalReport) -> String {
    let mut out = format!(
        "Judge: {:.2} % test accuracy. {} samples per class per row. \
         Diversity is relative to the test set (1 = as varied as real digits).\n\n\
         | model | guidance | steps | w | CFG scale | accuracy | Fréchet distance | diversity | seconds |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        100.0 * report.judge_accuracy,
        report.samples_per_class
    );
    for r in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} % | {:.2} | {:.3} | {:.1} |\n",
            r.model,
            r.guidance,
            r.steps,
            r.w,
            1.0 + r.w,
            100.0 * r.accuracy,
            r.frechet,
            r.diversity,
            r.seconds
        ));
    }
    out
}

/// Accuracy, Fréchet distance and diversity against w, one line per
/// (model, guidance, steps); classifier guidance dashed.
pub fn plot(report: &EvalReport) -> Result<Vec<u8>, String> {
    let mut keys: Vec<(String, String, usize)> = Vec::new();
    for r in &report.rows {
        let k = (r.model.clone(), r.guidance.clone(), r.steps);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let panel = |title: &str, y: &str, f: &dyn Fn(&Row) -> f64| Panel {
        title: title.into(),
        x_label: "guidance weight w".into(),
        y_label: y.into(),
        series: keys
            .iter()
            .map(|(m, g, s)| Series {
                label: format!("{m} {g} {s} steps"),
                points: report
                    .rows
                    .iter()
                    .filter(|r| &r.model == m && &r.guidance == g && r.steps == *s)
                    .map(|r| (r.w, f(r)))
                    .collect(),
                dashed: g == "classifier",
            })
            .collect(),
    };
    plot_png(
        &[
            panel("Class accuracy", "accuracy (%)", &|r| 100.0 * r.accuracy),
            panel("Fréchet distance (judge features)", "FD", &|r| r.frechet),
            panel("Within-class diversity", "ratio to test set", &|r| {
                r.diversity
            }),
        ],
        520,
        420,
    )
}

fn write_outputs(dir: &Path, report: &EvalReport) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        weft_core::atomic::write_atomic(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("eval.md", markdown(report).as_bytes())?;
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    write("eval.json", json.as_bytes())?;
    write("eval.png", &plot(report)?)
}
