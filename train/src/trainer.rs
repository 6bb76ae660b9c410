//! The training loop.
//!
//! Everything a step does is a function of (config, step): the batch's image
//! indices come from the seeded epoch permutations, and each sample's label
//! dropout, σ or t, and noise come from its own seeded stream (see
//! [`crate::rng`]). Parameter initialisation is seeded the same way. So two
//! runs are bit-identical, and a resumed run needs only the step count plus
//! the state that training itself accumulates (weights, AdamW moments, EMA).
//!
//! Losses, per objective (x0 in [−1, 1], ε ~ N(0, I)):
//! - flow: σ ~ U(0, 1) (or logit-normal), x_σ = (1−σ)·x0 + σ·ε, target ε − x0,
//!   network input (x_σ, σ·1000);
//! - DDPM: t ~ U{0..N−1}, x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, target ε, network input
//!   (x_t, t). `Model::predict` feeds the network x·input_scale(σ) with x the
//!   variance-exploding sample x0 + σ·ε; with σ_t = √((1−ᾱ_t)/ᾱ_t) that
//!   product is exactly x_t, so this is the input the sampler will give;
//! - classify: cross-entropy on the true labels (no dropout), on clean images
//!   at timestep 0, or on flow-path x_σ with timestep σ·1000 when the
//!   classifier is noise-conditional.
//!
//! ᾱ_t is read back from the σ table of `ModelConfig::sampling()` rather than
//! recomputed, so training and sampling cannot disagree on the schedule.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weft_models::mnist::{checkpoint, Net, NetConfig, Objective, Preconditioner};
use weft_sampling::{ModelSampling, NoiseLevels};

use crate::adamw::{AdamW, AdamWParams, AdamWState};
use crate::config::{SigmaSampling, TrainConfig};
use crate::ema::Ema;
use crate::idx::{read_dataset, Dataset};
use crate::rng::{epoch_order, Draws};

/// Metadata key marking a resume file, and its version.
const RESUME_FORMAT_KEY: &str = "weft.train.resume";
const RESUME_FORMAT: &str = "1";

/// What a call to [`crate::train`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    /// The step the run started from (0, or the resumed step).
    pub start_step: u64,
    /// The step it ended at (the config's `steps`).
    pub end_step: u64,
    /// The loss of every step run by this call, in order.
    pub losses: Vec<f32>,
    /// Training throughput of this call.
    pub images_per_sec: f64,
    pub seconds: f64,
    /// The shipped EMA checkpoint, the raw-weights checkpoint, the resume file.
    pub output: PathBuf,
    pub raw_output: PathBuf,
    pub resume_file: PathBuf,
}

fn cerr(e: candle_core::Error) -> String {
    e.to_string()
}

/// FNV-1a, to give every parameter its own init stream from its name alone,
/// so the values do not depend on the order in which layers are built.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Init values drawn from weft's seeded streams. candle's CPU RNG cannot be
/// seeded, so `VarMap`'s own initialisation would make every run different.
fn seeded_init(seed: u64, name: &str, shape: &Shape, init: Init) -> Vec<f32> {
    let n = shape.elem_count();
    let mut d = Draws::init(seed, name_hash(name));
    let uniform = |d: &mut Draws, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * d.uniform()) as f32)
            .collect()
    };
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => (0..n).map(|_| (mean + stdev * d.normal()) as f32).collect(),
        Init::Uniform { lo, up } => uniform(&mut d, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut d, -bound, bound)
                }
                candle_nn::init::NormalOrUniform::Normal => {
                    (0..n).map(|_| (std * d.normal()) as f32).collect()
                }
            }
        }
    }
}

/// A `VarBuilder` backend that creates missing variables in a `VarMap` with
/// [`seeded_init`] (and otherwise behaves like the `VarMap` backend).
struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("VarMap lock poisoned");
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape())
            }
            return Ok(v.as_tensor().clone());
        }
        let vals = seeded_init(self.seed, name, &s, h);
        let var = Var::from_tensor(&Tensor::from_vec(vals, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        match self
            .varmap
            .data()
            .lock()
            .expect("VarMap lock poisoned")
            .get(name)
        {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("cannot find {name} in the VarMap"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("VarMap lock poisoned")
            .contains_key(name)
    }
}

/// How a training image becomes the network's input.
enum Noising {
    /// Flow path, σ from the config's `sigma_sampling`.
    Flow,
    /// DDPM forward process; the σ table of its discrete schedule.
    Ddpm(Vec<f64>),
    /// Clean images at timestep 0 (a plain classifier).
    Clean,
}

/// A batch ready for the network.
pub struct Batch {
    /// Network input, `[B, C, H, W]`.
    pub x: Tensor,
    /// Timesteps, `[B]` (σ·1000 for flow, t for DDPM).
    pub t: Tensor,
    /// Labels, `[B]` u32, ∅ = `num_classes`.
    pub labels: Tensor,
    /// Regression target, shaped like `x`.
    pub target: Tensor,
}

impl Batch {
    /// Items `start..start + len`.
    fn narrow(&self, start: usize, len: usize) -> Result<Batch, String> {
        let part = |t: &Tensor| t.narrow(0, start, len).map_err(cerr);
        Ok(Batch {
            x: part(&self.x)?,
            t: part(&self.t)?,
            labels: part(&self.labels)?,
            target: part(&self.target)?,
        })
    }
}

/// A training run in memory.
pub struct Trainer {
    config: TrainConfig,
    config_path: PathBuf,
    data: Dataset,
    varmap: VarMap,
    net: Net,
    opt: AdamW,
    ema: Ema,
    step: u64,
    noising: Noising,
    sampling: ModelSampling,
    preconditioner: Option<Preconditioner>,
    /// The permutation of the epoch last used, cached across steps.
    order: Option<(u64, Vec<u32>)>,
    /// One single-threaded pool per shard (see `TrainConfig::shards`).
    pools: Vec<rayon::ThreadPool>,
}

impl Trainer {
    /// Loads the data and builds a freshly initialised network.
    pub fn new(config: TrainConfig, config_path: &Path) -> Result<Trainer, String> {
        let cfg = config_path.display();
        if let NetConfig::UNet(u) = &config.model.net {
            if u.dropout > 0.0 {
                return Err(format!(
                    "{cfg}: `model.net.dropout`: must be 0 — candle's dropout draws from an \
                     unseeded RNG, so training would not be reproducible (got {})",
                    u.dropout
                ));
            }
        }
        let data = read_dataset(&config.data.images, &config.data.labels)?;
        let size = config.model.image_size;
        if data.images.rows != size || data.images.cols != size {
            return Err(format!(
                "{}: images are {}×{}, but `model.image_size` in {cfg} is {size}",
                config.data.images.display(),
                data.images.rows,
                data.images.cols
            ));
        }
        if let Some(i) = data
            .labels
            .iter()
            .position(|&l| l as usize >= config.model.num_classes)
        {
            return Err(format!(
                "{}: label {} of item {i} is out of range for `model.num_classes` = {} in {cfg}",
                config.data.labels.display(),
                data.labels[i],
                config.model.num_classes
            ));
        }

        let varmap = VarMap::new();
        let vb = VarBuilder::from_backend(
            Box::new(SeededVarMap {
                varmap: varmap.clone(),
                seed: config.seed,
            }),
            DType::F32,
            Device::Cpu,
        );
        let net = config
            .model
            .build(vb)
            .map_err(|e| format!("{cfg}: cannot build the network: {e}"))?;
        let opt = AdamW::new(
            &varmap,
            AdamWParams {
                weight_decay: config.weight_decay,
                ..Default::default()
            },
        )?;
        let ema = Ema::new(&varmap, config.ema_decay)?;
        let sampling = config.model.sampling();
        let noise_conditional = match &config.model.net {
            NetConfig::Classifier(c) => c.noise_conditional,
            _ => true,
        };
        let noising = match (&config.model.objective, &sampling.levels) {
            (Objective::Ddpm { .. }, NoiseLevels::Discrete { sigmas }) => {
                Noising::Ddpm(sigmas.clone())
            }
            (Objective::Flow | Objective::Classify, NoiseLevels::Flow { .. }) => {
                if noise_conditional {
                    Noising::Flow
                } else {
                    Noising::Clean
                }
            }
            _ => return Err("objective and sampling parameterisation disagree".into()),
        };
        let preconditioner = config.model.preconditioner();
        let pools = if config.shards > 1 {
            (0..config.shards)
                .map(|k| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .thread_name(move |_| format!("weft-train-shard-{k}"))
                        .build()
                        .map_err(|e| format!("cannot start a training thread: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(Trainer {
            config,
            config_path: config_path.to_path_buf(),
            data,
            varmap,
            net,
            opt,
            ema,
            step: 0,
            noising,
            preconditioner,
            sampling,
            order: None,
            pools,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The raw (optimised) weights.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The network on the raw weights.
    pub fn net(&self) -> &Net {
        &self.net
    }

    pub fn ema(&self) -> &Ema {
        &self.ema
    }

    /// The dataset index of sample `k` of the run (epoch-wise shuffling).
    fn item(&mut self, k: u64) -> usize {
        let n = self.data.len() as u64;
        let (epoch, pos) = (k / n, (k % n) as usize);
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.order = Some((epoch, epoch_order(self.config.seed, epoch, n as usize)));
        }
        self.order.as_ref().expect("just set").1[pos] as usize
    }

    /// The batch of step `step`: a pure function of the config and `step`.
    pub fn batch(&mut self, step: u64) -> Result<Batch, String> {
        let b = self.config.batch_size;
        let (c, s) = (self.config.model.channels, self.config.model.image_size);
        let per = c * s * s;
        let null = self.config.model.null_label();
        let (mut x, mut target) = (Vec::with_capacity(b * per), Vec::with_capacity(b * per));
        let (mut ts, mut labels) = (Vec::with_capacity(b), Vec::with_capacity(b));
        for i in 0..b {
            let k = step * b as u64 + i as u64;
            let idx = self.item(k);
            let mut d = Draws::sample(self.config.seed, k);
            let drop = d.uniform() < self.config.cfg_dropout;
            labels.push(if drop {
                null
            } else {
                self.data.labels[idx] as u32
            });
            // (signal coefficient, noise coefficient, timestep, target = a·x0 + b·ε)
            let (alpha, sigma, t, tx0, teps) = match &self.noising {
                Noising::Clean => (1.0, 0.0, 0.0, 1.0, 0.0),
                Noising::Flow => {
                    let sig = match self.config.sigma_sampling {
                        SigmaSampling::Uniform => d.uniform(),
                        SigmaSampling::LogitNormal { mean, std } => {
                            1.0 / (1.0 + (-(mean + std * d.normal())).exp())
                        }
                    };
                    (1.0 - sig, sig, self.sampling.timestep(sig), -1.0, 1.0)
                }
                Noising::Ddpm(sigmas) => {
                    let t = d.below(sigmas.len());
                    let inv = 1.0 / (sigmas[t] * sigmas[t] + 1.0).sqrt(); // √ᾱ_t
                    (inv, sigmas[t] * inv, t as f64, 0.0, 1.0)
                }
            };
            ts.push(t as f32);
            let noise = d.normals(per);
            let img = self.data.images.image(idx);
            let (a, sg, tx, te) = (alpha as f32, sigma as f32, tx0 as f32, teps as f32);
            for (p, e) in img.iter().zip(&noise) {
                let x0 = *p as f32 / 127.5 - 1.0;
                x.push(a * x0 + sg * e);
                target.push(tx * x0 + te * e);
            }
        }
        let dev = Device::Cpu;
        Ok(Batch {
            x: Tensor::from_vec(x, (b, c, s, s), &dev).map_err(cerr)?,
            t: Tensor::from_vec(ts, b, &dev).map_err(cerr)?,
            labels: Tensor::from_vec(labels, b, &dev).map_err(cerr)?,
            target: Tensor::from_vec(target, (b, c, s, s), &dev).map_err(cerr)?,
        })
    }

    /// The mean loss of `batch` and its gradients.
    fn loss_and_grads(&self, batch: &Batch, step: u64) -> Result<(f32, GradStore), String> {
        let out = self
            .net
            .forward(&batch.x, &batch.t, &batch.labels)
            .and_then(|raw| match &self.preconditioner {
                Some(p) => p.apply(&batch.x, &batch.t, &raw),
                None => Ok(raw),
            })
            .map_err(|e| format!("forward pass at step {step}: {e}"))?;
        let loss = match self.config.model.objective {
            Objective::Classify => candle_nn::loss::cross_entropy(&out, &batch.labels),
            _ => (out - &batch.target)
                .and_then(|d| d.sqr())
                .and_then(|d| d.mean_all()),
        }
        .map_err(cerr)?;
        let value = loss.to_scalar::<f32>().map_err(cerr)?;
        let grads = loss
            .backward()
            .map_err(|e| format!("backward pass at step {step}: {e}"))?;
        Ok((value, grads))
    }

    /// Splits the batch into `shards` parts, one per pool, and averages
    /// their losses and gradients in shard order.
    fn sharded_loss_and_grads(&self, batch: &Batch, step: u64) -> Result<(f32, GradStore), String> {
        let n = self.pools.len();
        let part = self.config.batch_size / n;
        let shards = (0..n)
            .map(|k| batch.narrow(k * part, part))
            .collect::<Result<Vec<_>, _>>()?;
        let results: Vec<Result<(f32, GradStore), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .iter()
                .zip(&self.pools)
                .map(|(shard, pool)| {
                    scope.spawn(move || pool.install(|| self.loss_and_grads(shard, step)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a training thread panicked".into()))
                })
                .collect()
        });
        let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let scale = 1.0 / n as f64;
        let loss = results.iter().map(|(l, _)| *l).sum::<f32>() * scale as f32;
        let mut grads = GradStore::default();
        for var in self.varmap.all_vars() {
            let mut sum: Option<Tensor> = None;
            for (_, g) in &results {
                if let Some(g) = g.get(var.as_tensor()) {
                    sum = Some(match sum {
                        Some(s) => (s + g).map_err(cerr)?,
                        None => g.clone(),
                    });
                }
            }
            if let Some(sum) = sum {
                grads.insert(var.as_tensor(), sum.affine(scale, 0.0).map_err(cerr)?);
            }
        }
        Ok((loss, grads))
    }

    /// Runs one optimizer step and returns its loss (before the update).
    pub fn train_step(&mut self) -> Result<f32, String> {
        let step = self.step;
        let batch = self.batch(step)?;
        let (value, grads) = if self.pools.len() > 1 {
            self.sharded_loss_and_grads(&batch, step)?
        } else {
            self.loss_and_grads(&batch, step)?
        };
        if !value.is_finite() {
            return Err(format!(
                "loss became {value} at step {step}; lower `lr` in {}",
                self.config_path.display()
            ));
        }
        self.opt.step(&grads, self.config.lr_at(step))?;
        self.ema.update(&self.varmap, step)?;
        self.step += 1;
        Ok(value)
    }

    /// Writes the shipped EMA checkpoint, the raw-weights checkpoint and the
    /// resume file.
    pub fn save(&self) -> Result<(), String> {
        let ema = self.ema.to_varmap(&self.varmap)?;
        checkpoint::save(&self.config.output, &self.config.model, &ema)?;
        checkpoint::save(&self.config.raw_path(), &self.config.model, &self.varmap)?;
        self.save_resume(&self.config.resume_path())
    }

    fn save_resume(&self, path: &Path) -> Result<(), String> {
        let file = path.display();
        let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
        let shapes: HashMap<String, Shape> = {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| "VarMap lock poisoned".to_string())?;
            for (name, var) in data.iter() {
                tensors.insert(format!("param.{name}"), var.as_tensor().clone());
            }
            data.iter()
                .map(|(k, v)| (k.clone(), v.shape().clone()))
                .collect()
        };
        let state = self.opt.state();
        let vec_tensor = |v: &Vec<f32>, name: &str| {
            Tensor::from_vec(v.clone(), shapes[name].clone(), &Device::Cpu).map_err(cerr)
        };
        for (name, m) in &state.m {
            tensors.insert(format!("adam_m.{name}"), vec_tensor(m, name)?);
        }
        for (name, v) in &state.v {
            tensors.insert(format!("adam_v.{name}"), vec_tensor(v, name)?);
        }
        for (name, e) in &self.ema.shadow {
            tensors.insert(format!("ema.{name}"), vec_tensor(e, name)?);
        }
        let config_json = serde_json::to_string(&self.config)
            .map_err(|e| format!("{file}: cannot encode config: {e}"))?;
        let metadata = HashMap::from([
            (RESUME_FORMAT_KEY.to_string(), RESUME_FORMAT.to_string()),
            ("step".to_string(), self.step.to_string()),
            ("adam_step".to_string(), state.step.to_string()),
            ("config".to_string(), config_json),
        ]);
        let bytes = safetensors::serialize(tensors.iter(), Some(metadata))
            .map_err(|e| format!("{file}: cannot serialise resume state: {e}"))?;
        weft_core::atomic::write_atomic(path, &bytes)
            .map_err(|e| format!("{file}: cannot write resume state: {e}"))
    }

    /// Restores weights, optimizer state, EMA and step from the config's
    /// resume file. The model, seed, batch size and sampling settings must
    /// be those the file was written with, or the data order and noise would
    /// silently differ from the interrupted run's.
    pub fn resume(&mut self) -> Result<(), String> {
        let path = self.config.resume_path();
        let file = path.display();
        let bytes =
            std::fs::read(&path).map_err(|e| format!("{file}: cannot read resume state: {e}"))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| format!("{file}: not a resume file: {e}"))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| format!("{file}: not a resume file (no metadata)"))?;
        if meta.get(RESUME_FORMAT_KEY).map(String::as_str) != Some(RESUME_FORMAT) {
            return Err(format!(
                "{file}: not a weft resume file (format {RESUME_FORMAT})"
            ));
        }
        let field = |k: &str| -> Result<&String, String> {
            meta.get(k)
                .ok_or_else(|| format!("{file}: resume metadata lacks `{k}`"))
        };
        let parse_u64 = |k: &str| -> Result<u64, String> {
            field(k)?
                .parse()
                .map_err(|e| format!("{file}: bad `{k}`: {e}"))
        };
        let step = parse_u64("step")?;
        let adam_step = parse_u64("adam_step")?;
        let saved: TrainConfig = serde_json::from_str(field("config")?)
            .map_err(|e| format!("{file}: bad saved config: {e}"))?;
        let c = &self.config;
        let differs = [
            ("model", saved.model != c.model),
            ("seed", saved.seed != c.seed),
            ("batch_size", saved.batch_size != c.batch_size),
            ("cfg_dropout", saved.cfg_dropout != c.cfg_dropout),
            ("sigma_sampling", saved.sigma_sampling != c.sigma_sampling),
            ("data", saved.data != c.data),
        ];
        if let Some((name, _)) = differs.iter().find(|(_, d)| *d) {
            return Err(format!(
                "{file}: was written with a different `{name}` than {} sets; \
                 resuming would not continue the same run",
                self.config_path.display()
            ));
        }
        if step > c.steps {
            return Err(format!(
                "{file}: is at step {step}, past `steps` = {} in {}",
                c.steps,
                self.config_path.display()
            ));
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| format!("{file}: cannot read tensors: {e}"))?;
        let get = |key: String| -> Result<Vec<f32>, String> {
            tensors
                .get(&key)
                .ok_or_else(|| format!("{file}: lacks tensor {key}"))?
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("{file}: {key}: {e}"))
        };
        let names: Vec<String> = self
            .varmap
            .data()
            .lock()
            .map_err(|_| "VarMap lock poisoned".to_string())?
            .keys()
            .cloned()
            .collect();
        let mut state = AdamWState {
            step: adam_step,
            ..Default::default()
        };
        let mut shadow = BTreeMap::new();
        for name in &names {
            state.m.insert(name.clone(), get(format!("adam_m.{name}"))?);
            state.v.insert(name.clone(), get(format!("adam_v.{name}"))?);
            shadow.insert(name.clone(), get(format!("ema.{name}"))?);
            let p = tensors
                .get(&format!("param.{name}"))
                .ok_or_else(|| format!("{file}: lacks tensor param.{name}"))?;
            self.varmap
                .data()
                .lock()
                .map_err(|_| "VarMap lock poisoned".to_string())?[name]
                .set(p)
                .map_err(|e| format!("{file}: param.{name}: {e}"))?;
        }
        self.opt
            .restore(state)
            .map_err(|e| format!("{file}: {e}"))?;
        self.ema
            .restore(shadow)
            .map_err(|e| format!("{file}: {e}"))?;
        self.step = step;
        Ok(())
    }

    /// Trains to the config's `steps`, checkpointing every `checkpoint_every`
    /// steps and at the end.
    pub fn run(&mut self, progress: bool) -> Result<TrainReport, String> {
        let start = self.step;
        let total = self.config.steps;
        // indicatif's stderr target draws nothing when stderr is not a terminal.
        let bar = if progress {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        bar.set_position(start);
        let began = Instant::now();
        let mut losses = Vec::with_capacity((total - start) as usize);
        let mut smooth: Option<f32> = None;
        while self.step < total {
            let loss = self.train_step()?;
            losses.push(loss);
            let s = smooth.map_or(loss, |s| 0.98 * s + 0.02 * loss);
            smooth = Some(s);
            let done = (self.step - start) as f64 * self.config.batch_size as f64;
            let rate = done / began.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(self.step);
            bar.set_message(format!("loss {s:.4}  {rate:.0} img/s"));
            let every = self.config.checkpoint_every;
            if every > 0 && self.step.is_multiple_of(every) && self.step < total {
                self.save()?;
            }
        }
        self.save()?;
        bar.finish_and_clear();
        let seconds = began.elapsed().as_secs_f64();
        Ok(TrainReport {
            start_step: start,
            end_step: self.step,
            images_per_sec: losses.len() as f64 * self.config.batch_size as f64 / seconds.max(1e-9),
            losses,
            seconds,
            output: self.config.output.clone(),
            raw_output: self.config.raw_path(),
            resume_file: self.config.resume_path(),
        })
    }
}
