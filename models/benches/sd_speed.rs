//! Stable Diffusion 1.5 at full size, random weights: one UNet step at
//! 512×512 (batch 2: conditional and unconditional) and one VAE decode at
//! 512×512, for weft and for PyTorch/diffusers on the same machine in the
//! same run, with the ratio and each side's peak RSS.
//!
//!   cargo bench -p weft-models --bench sd_speed
//!
//! PyTorch comes from `WEFT_BENCH_PYTHON` (default `python3`) running
//! `scripts/bench_sd_torch.py`; without torch only weft's figures print.
//! Each measurement runs in its own process, so peak RSS is per phase, and
//! the two sides alternate for [`ROUNDS`] rounds, so that this machine's
//! drift (±25 % over minutes) falls on both alike; the table gives the
//! median over all rounds and the ratio of medians, then each round's ratio.

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use weft_models::sd::config::{unet_from_json, vae_from_json};
use weft_models::sd::unet::SdUNet;
use weft_models::vae::Vae;

/// diffusers' `unet/config.json` of Stable Diffusion 1.5.
const SD15_UNET: &str = r#"{
  "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
  "norm_num_groups": 32, "norm_eps": 1e-05, "sample_size": 64
}"#;

/// diffusers' `vae/config.json` of Stable Diffusion 1.5.
const SD15_VAE: &str = r#"{
  "in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 512, 512],
  "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32,
  "scaling_factor": 0.18215, "sample_size": 512
}"#;

const RUNS: usize = 3;
const ROUNDS: usize = 3;

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

fn peak_live_mib() -> f64 {
    PEAK.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `f` RUNS times after one warm-up; prints `phase median peak` as JSON.
fn measure(phase: &str, mut f: impl FnMut()) {
    f();
    eprintln!(
        "{phase} warm-up: peak RSS {:.0} MiB, peak live {:.0} MiB",
        peak_rss_mib(),
        peak_live_mib()
    );
    let times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    println!(
        "{{\"phase\": \"{phase}\", \"median_s\": {:.3}, \"min_s\": {:.3}, \"peak_rss_mib\": {:.0}, \"peak_live_mib\": {:.0}}}",
        median(times.clone()),
        times.iter().copied().fold(f64::INFINITY, f64::min),
        peak_rss_mib(),
        peak_live_mib()
    );
}

/// Random weights as plain tensors: `build` runs once on a VarMap to create
/// them, then again on detached copies, because a forward pass on candle
/// `Var`s records the autograd graph and keeps every activation alive.
fn random<T>(build: impl Fn(VarBuilder) -> candle_core::Result<T>) -> T {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    drop(build(VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap());
    let plain = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    drop(vm);
    build(VarBuilder::from_tensors(plain, DType::F32, &dev)).unwrap()
}

fn phase(name: &str) {
    weft_kernels::alloc::keep_freed_memory();
    let dev = Device::Cpu;
    match name {
        "unet" => {
            let spec = unet_from_json(SD15_UNET).unwrap();
            let unet = random(|vb| SdUNet::new(&spec, vb));
            eprintln!("built: peak RSS {:.0} MiB", peak_rss_mib());
            // WEFT_BENCH_LATENT: another latent side, for memory and scaling studies.
            let side = std::env::var("WEFT_BENCH_LATENT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64);
            let x = Tensor::randn(0f32, 1.0, (2, 4, side, side), &dev).unwrap();
            let ctx = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev).unwrap();
            measure("unet", || {
                unet.forward_at(&x, 500.0, &ctx).unwrap();
            });
        }
        "vae" => {
            let spec = vae_from_json(SD15_VAE).unwrap();
            let vae = random(|vb| Vae::new(&spec, vb));
            eprintln!("built: peak RSS {:.0} MiB", peak_rss_mib());
            let z = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev).unwrap();
            measure("vae", || {
                vae.decode_raw(&z).unwrap();
            });
        }
        other => panic!("unknown phase {other}"),
    }
}

fn parse(line: &str, key: &str) -> Option<f64> {
    let rest = line.split(&format!("\"{key}\": ")).nth(1)?;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

/// One side's figures over the rounds.
#[derive(Default)]
struct Side {
    medians: Vec<f64>,
    peak_rss: f64,
}

impl Side {
    fn add(&mut self, json: &str) {
        if let Some(m) = parse(json, "median_s") {
            self.medians.push(m);
        }
        if let Some(p) = parse(json, "peak_rss_mib") {
            self.peak_rss = self.peak_rss.max(p);
        }
    }

    fn median(&self) -> Option<f64> {
        (!self.medians.is_empty()).then(|| median(self.medians.clone()))
    }
}

fn run_weft(exe: &std::path::Path, phase: &str) -> String {
    let out = Command::new(exe).arg(phase).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn run_torch(python: &str, root: &std::path::Path, phase: &str) -> String {
    let out = Command::new(python)
        .arg(root.join("scripts/bench_sd_torch.py"))
        .arg(phase)
        .arg(RUNS.to_string())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).to_string(),
        Ok(o) => {
            eprintln!("PyTorch run failed: {}", String::from_utf8_lossy(&o.stderr));
            String::new()
        }
        Err(e) => {
            eprintln!("cannot run {python}: {e}");
            String::new()
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(p) = args.first() {
        return phase(p);
    }
    let exe = std::env::current_exe().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let python = std::env::var("WEFT_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    println!(
        "SD 1.5, random weights, f32 CPU, {} threads; each side the median of {ROUNDS} rounds × {RUNS} runs after a warm-up, sides alternating",
        candle_core::utils::get_num_threads()
    );
    println!("| phase | weft (s) | PyTorch (s) | weft / PyTorch | per round | weft peak RSS (MiB) | PyTorch peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|");
    for p in ["unet", "vae"] {
        let (mut ours, mut theirs) = (Side::default(), Side::default());
        for _ in 0..ROUNDS {
            ours.add(&run_weft(&exe, p));
            theirs.add(&run_torch(&python, root, p));
        }
        let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
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
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} |",
            if p == "unet" {
                "UNet step, 512², batch 2"
            } else {
                "VAE decode, 512²"
            },
            fmt(ours.median()),
            fmt(theirs.median()),
            ratio,
            rounds.join(", "),
            ours.peak_rss,
            theirs.peak_rss,
        );
    }
}
