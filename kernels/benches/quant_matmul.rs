//! Packed-weight products on a Flux double block's linear shapes, against
//! the dense f32 `Linear` and candle's own `QMatMul`. A measurement, not a
//! test:
//!
//!     cargo bench -p weft-kernels --bench quant_matmul
//!
//! Environment: WEFT_BENCH_ROWS (rows of x, default 4608 = 1024² image +
//! 512 text tokens), WEFT_BENCH_RUNS (default 3), WEFT_BENCH_SHAPES (e.g.
//! `3072x3072,3072x12288`), WEFT_BENCH_CANDLE=0 to skip `QMatMul`.

use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use weft_kernels::layers::Linear;
use weft_kernels::quant::{PackedWeight, StoredType};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median seconds of `runs` calls, after one warm-up call.
fn median(runs: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    let _ = f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let y = f();
            std::hint::black_box(&y);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let rows = env("WEFT_BENCH_ROWS", 4608);
    let runs = env("WEFT_BENCH_RUNS", 3).max(1);
    let candle = std::env::var("WEFT_BENCH_CANDLE").map_or(true, |v| v != "0");
    let shapes: Vec<(usize, usize)> = std::env::var("WEFT_BENCH_SHAPES")
        .unwrap_or_else(|_| "3072x12288,12288x3072,3072x3072".into())
        .split(',')
        .map(|s| {
            let (i, o) = s.split_once('x').expect("IN×OUT");
            (i.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    println!(
        "x: {rows} rows; {} rayon threads; median of {runs} runs",
        rayon::current_num_threads()
    );
    println!("| in→out | storage | seconds | GFLOP/s | vs f32 |");
    println!("|---|---|---:|---:|---:|");
    for (in_dim, out_dim) in shapes {
        let dev = Device::Cpu;
        let w = (Tensor::randn(0f32, 1.0, (out_dim, in_dim), &dev).unwrap() * 0.02).unwrap();
        let b = Tensor::randn(0f32, 1.0, out_dim, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (rows, in_dim), &dev).unwrap();
        let flop = 2.0 * (rows * in_dim * out_dim) as f64;
        let report = |name: &str, s: f64, base: f64| {
            println!(
                "| {in_dim}→{out_dim} | {name} | {s:.3} | {:.1} | {:.2}× |",
                flop / s / 1e9,
                base / s
            );
        };
        let dense = Linear::new(w.clone(), Some(b.clone()));
        let base = median(runs, || dense.forward(&x).unwrap());
        report("f32 Linear (dense)", base, base);
        for ty in [
            StoredType::Q8_0,
            StoredType::Q4K,
            StoredType::BF16,
            StoredType::F8E4M3,
        ] {
            let q = Arc::new(PackedWeight::quantize(&w, ty).unwrap());
            let layer = Linear::packed(q, Some(b.clone()));
            let s = median(runs, || layer.forward(&x).unwrap());
            report(&format!("packed {ty}"), s, base);
            if matches!(ty, StoredType::Q8_0 | StoredType::Q4K) {
                let q = layer.packed_weight().unwrap();
                let s = median(runs, || q.matmul_t_dequantized(&x, Some(&b)).unwrap());
                report(&format!("packed {ty}, f32 tiles only"), s, base);
            }
        }
        if candle {
            for g in [GgmlDType::Q8_0, GgmlDType::Q4K] {
                let mm = QMatMul::from_qtensor(QTensor::quantize(&w, g).unwrap()).unwrap();
                let s = median(runs, || mm.forward(&x).unwrap().broadcast_add(&b).unwrap());
                report(&format!("candle QMatMul {g:?}"), s, base);
            }
        }
    }
}
