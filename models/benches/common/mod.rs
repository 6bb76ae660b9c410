//! What the weft-against-PyTorch benches share (`sd_speed`, `sdxl_speed`):
//! the counting allocator, the child-process protocol, random weights, and
//! the alternating rounds with their table.
//!
//! A bench binary runs with no phase argument as the driver: it runs each
//! measurement in a new process (itself with `PHASE RUNS`, or a PyTorch
//! script), the two sides alternating for some rounds, so that this
//! machine's drift (±25 % over minutes) falls on both alike. Each child
//! times its phase RUNS times after a warm-up and prints one JSON line.

// Each bench uses its own subset.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use weft_models::lora::Weights;

/// The allocator the `weft` binary uses, so the figures are the product's,
/// counting live bytes so fragmentation can be told from real use.
#[global_allocator]
static GLOBAL: Counting = Counting;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        mimalloc::MiMalloc.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
}

pub fn peak_live_mib() -> f64 {
    PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
}

/// A `kB` field of `/proc/<file>` in MiB (NaN where there is none).
fn proc_mib(file: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub fn peak_rss_mib() -> f64 {
    proc_mib("/proc/self/status", "VmHWM:")
}

/// The memory the kernel can still give out, in MiB.
pub fn available_mib() -> f64 {
    proc_mib("/proc/meminfo", "MemAvailable:")
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A count from the environment variable `name`, else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds `f` takes, and what it returns.
pub fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

/// One JSON line `{"phase": …, key: value, …, "peak_rss_mib": …, "peak_live_mib": …}`.
pub fn report(phase: &str, fields: &[(&str, f64)]) {
    let mut line = format!("{{\"phase\": \"{phase}\"");
    for (k, v) in fields {
        line += &format!(", \"{k}\": {v:.3}");
    }
    println!(
        "{line}, \"peak_rss_mib\": {:.0}, \"peak_live_mib\": {:.0}}}",
        peak_rss_mib(),
        peak_live_mib()
    );
}

pub fn log_memory(what: &str) {
    eprintln!(
        "{what}: peak RSS {:.0} MiB, peak live {:.0} MiB",
        peak_rss_mib(),
        peak_live_mib()
    );
}

/// Times `f` `runs` times after one warm-up and reports the median and min.
pub fn measure(phase: &str, runs: usize, mut f: impl FnMut()) {
    f();
    log_memory(&format!("{phase} warm-up"));
    let times: Vec<f64> = (0..runs).map(|_| timed(&mut f).0).collect();
    report(
        phase,
        &[
            ("median_s", median(times.clone())),
            ("min_s", times.iter().copied().fold(f64::INFINITY, f64::min)),
        ],
    );
}

/// Random weights as plain tensors by name: `build` runs once on a VarMap
/// to create them, and they are detached from it, because a forward pass
/// on candle `Var`s records the autograd graph and keeps every activation
/// alive. The detached tensors share the variables' storage (one copy).
pub fn random_weights<T>(build: impl FnOnce(VarBuilder) -> candle_core::Result<T>) -> Weights {
    let vm = VarMap::new();
    drop(build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap());
    let plain = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    plain
}

/// A network with random weights (see [`random_weights`]).
pub fn random<T>(build: impl Fn(VarBuilder) -> candle_core::Result<T>) -> T {
    let plain = random_weights(&build);
    build(VarBuilder::from_tensors(plain, DType::F32, &Device::Cpu)).unwrap()
}

/// A child's `(phase, runs)`, when this process is one.
pub fn child_args() -> Option<(String, usize)> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let phase = args.first()?.clone();
    let runs = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    Some((phase, runs))
}

/// The first number after `"key": ` in a JSON line.
pub fn parse(line: &str, key: &str) -> Option<f64> {
    let rest = line.split(&format!("\"{key}\": ")).nth(1)?;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

/// One side's figures over the rounds.
#[derive(Default)]
pub struct Side {
    pub medians: Vec<f64>,
    pub peak_rss: f64,
}

impl Side {
    pub fn add(&mut self, json: &str) {
        if let Some(m) = parse(json, "median_s") {
            self.medians.push(m);
        }
        if let Some(p) = parse(json, "peak_rss_mib") {
            self.peak_rss = self.peak_rss.max(p);
        }
    }

    pub fn median(&self) -> Option<f64> {
        (!self.medians.is_empty()).then(|| median(self.medians.clone()))
    }
}

/// Where the driver finds both sides.
pub struct Driver {
    exe: PathBuf,
    root: PathBuf,
    python: String,
    pub runs: usize,
    pub rounds: usize,
}

impl Driver {
    /// Runs and rounds default to the given counts; `WEFT_BENCH_RUNS` and
    /// `WEFT_BENCH_ROUNDS` override them, `WEFT_BENCH_PYTHON` (default
    /// `python3`) is the PyTorch side's interpreter.
    pub fn new(runs: usize, rounds: usize) -> Driver {
        Driver {
            exe: std::env::current_exe().unwrap(),
            root: Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .to_path_buf(),
            python: std::env::var("WEFT_BENCH_PYTHON").unwrap_or_else(|_| "python3".into()),
            runs: env_count("WEFT_BENCH_RUNS", runs),
            rounds: env_count("WEFT_BENCH_ROUNDS", rounds),
        }
    }

    /// This bench binary's `phase`, in its own process; its JSON line.
    pub fn weft(&self, phase: &str) -> String {
        let out = Command::new(&self.exe)
            .arg(phase)
            .arg(self.runs.to_string())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "weft {phase} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `script` (from the repository root) with `phase`, the run count and
    /// `extra`; its JSON line, or nothing where torch cannot run.
    pub fn torch(&self, script: &str, phase: &str, extra: &[String]) -> String {
        let out = Command::new(&self.python)
            .arg(self.root.join(script))
            .arg(phase)
            .arg(self.runs.to_string())
            .args(extra)
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
            Ok(o) => {
                eprintln!("PyTorch run failed: {}", String::from_utf8_lossy(&o.stderr));
                String::new()
            }
            Err(e) => {
                eprintln!("cannot run {}: {e}", self.python);
                String::new()
            }
        }
    }

    /// The caption line's common part.
    pub fn describe(&self) -> String {
        format!(
            "f32 CPU, {} threads; each side the median of {} rounds × {} runs after a warm-up, sides alternating",
            candle_core::utils::get_num_threads(),
            self.rounds,
            self.runs
        )
    }

    /// Each `(phase, label)` for every round, weft then PyTorch (`torch`
    /// runs a phase), then its row: the medians, their ratio, each round's
    /// ratio, and each side's peak RSS.
    pub fn compare(&self, phases: &[(&str, &str)], torch: impl Fn(&str) -> String) {
        println!("| phase | weft (s) | PyTorch (s) | weft / PyTorch | per round | weft peak RSS (MiB) | PyTorch peak RSS (MiB) |");
        println!("|---|---|---|---|---|---|---|");
        for &(phase, label) in phases {
            let (mut ours, mut theirs) = (Side::default(), Side::default());
            for round in 1..=self.rounds {
                let (w, t) = (self.weft(phase), torch(phase));
                eprintln!(
                    "{phase}, round {round}: weft {}, PyTorch {}",
                    w.trim(),
                    t.trim()
                );
                ours.add(&w);
                theirs.add(&t);
            }
            let ratio = match (ours.median(), theirs.median()) {
                (Some(w), Some(t)) => format!("{:.2}", w / t),
                _ => "–".into(),
            };
            let rounds: Vec<String> = ours
                .medians
                .iter()
                .zip(&theirs.medians)
                .map(|(w, t)| format!("{:.2}", w / t))
                .collect();
            println!(
                "| {label} | {} | {} | {ratio} | {} | {:.0} | {:.0} |",
                seconds(ours.median()),
                seconds(theirs.median()),
                rounds.join(", "),
                ours.peak_rss,
                theirs.peak_rss,
            );
        }
    }
}

/// Seconds to two places, or a dash.
pub fn seconds(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.2}"))
}
