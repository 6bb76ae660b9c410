//! weft's own networks and checkpoint format: shapes, conditioning,
//! determinism, save/load, the loader's error messages, AdaLN-Zero init.

use weft_kernels::testing::max_diff as max_abs;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use weft_models::mnist::{
    label_tensor, load_model, save, DiTBlock, DiTConfig, ModelConfig, Net, NetConfig, Objective,
    UNetConfig,
};
use weft_sampling::{Conditioning, NoiseLevels, Prediction};

const DEV: Device = Device::Cpu;

fn unet_cfg() -> NetConfig {
    NetConfig::UNet(UNetConfig::mnist())
}

fn dit_cfg() -> NetConfig {
    NetConfig::DiT(DiTConfig::mnist())
}

/// Deterministic pseudo-random values (no RNG state shared between tests).
fn wavy(shape: &[usize], seed: f64, scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 12.9898 + seed * 78.233).sin() * 43758.5453).fract() as f32)
        .map(|u| (u as f64 * 2.0 * scale) as f32)
        .collect();
    Tensor::from_vec(v, shape, &DEV).unwrap()
}

/// A network with fresh init, then (if `randomize`) every weight replaced by
/// deterministic non-zero values so zero-initialised parts take part too.
fn build(cfg: &NetConfig, randomize: bool) -> (VarMap, Net) {
    let vm = VarMap::new();
    let net = Net::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &DEV)).unwrap();
    if randomize {
        let data = vm.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for (k, name) in names.into_iter().enumerate() {
            let var = &data[name];
            let fan_in: usize = var.dims().iter().skip(1).product::<usize>().max(1);
            let scale = 1.0 / (fan_in as f64).sqrt();
            var.set(&wavy(var.dims(), k as f64, scale)).unwrap();
        }
    }
    (vm, net)
}

fn inputs(batch: usize, size: usize) -> (Tensor, Tensor) {
    let x = wavy(&[batch, 1, size, size], 0.5, 1.0);
    let t = Tensor::new(&[250f32, 600.0, 999.0][..batch.min(3)], &DEV).unwrap();
    (x, t)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-models-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("model.safetensors")
}

#[test]
fn output_shapes_at_28_and_32() {
    let labels = label_tensor(&[Some(1), None, Some(9)], 10, &DEV).unwrap();
    for cfg in [unet_cfg(), dit_cfg()] {
        let (_, net) = build(&cfg, false);
        let (x, t) = inputs(3, 28);
        let out = net.forward(&x, &t, &labels).unwrap();
        assert_eq!(out.dims(), &[3, 1, 28, 28], "{}", cfg.arch());
    }
    let (_, net) = build(&unet_cfg(), false);
    let (x, t) = inputs(3, 32);
    assert_eq!(
        net.forward(&x, &t, &labels).unwrap().dims(),
        &[3, 1, 32, 32]
    );
}

#[test]
fn null_class_changes_the_output() {
    for cfg in [unet_cfg(), dit_cfg()] {
        let (_, net) = build(&cfg, true);
        let (x, t) = inputs(1, 28);
        let real = net
            .forward(&x, &t, &label_tensor(&[Some(3)], 10, &DEV).unwrap())
            .unwrap();
        let null = net
            .forward(&x, &t, &label_tensor(&[None], 10, &DEV).unwrap())
            .unwrap();
        let other = net
            .forward(&x, &t, &label_tensor(&[Some(4)], 10, &DEV).unwrap())
            .unwrap();
        assert!(max_abs(&real, &null) > 1e-4, "{}: ∅ ignored", cfg.arch());
        assert!(
            max_abs(&real, &other) > 1e-4,
            "{}: label ignored",
            cfg.arch()
        );
    }
    // ∅ is the last embedding row; labels beyond it are refused.
    let l = label_tensor(&[None, Some(0)], 10, &DEV).unwrap();
    assert_eq!(l.to_vec1::<u32>().unwrap(), vec![10, 0]);
    assert!(label_tensor(&[Some(10)], 10, &DEV).is_err());
}

#[test]
fn forward_is_deterministic() {
    for cfg in [unet_cfg(), dit_cfg()] {
        let (vm, net) = build(&cfg, true);
        let (x, t) = inputs(3, 28);
        let labels = label_tensor(&[Some(1), None, Some(7)], 10, &DEV).unwrap();
        let a = net.forward(&x, &t, &labels).unwrap();
        let b = net.forward(&x, &t, &labels).unwrap();
        assert_eq!(bits(&a), bits(&b), "{}: same net, same inputs", cfg.arch());
        // A second net built from the same tensors agrees bit for bit.
        let tensors = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        let net2 = Net::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &DEV)).unwrap();
        let c = net2.forward(&x, &t, &labels).unwrap();
        assert_eq!(bits(&a), bits(&c), "{}: rebuilt net", cfg.arch());
        // And the output does depend on t.
        let t2 = (t.clone() + 1.0).unwrap();
        assert!(max_abs(&a, &net.forward(&x, &t2, &labels).unwrap()) > 0.0);
    }
}

#[test]
fn save_load_roundtrip_is_bit_identical_through_model_predict() {
    for (cfg, objective) in [
        (unet_cfg(), Objective::Flow),
        (dit_cfg(), Objective::ddpm_linear()),
    ] {
        let config = ModelConfig::new(cfg.clone(), objective, 28);
        let (vm, net) = build(&cfg, true);
        let path = temp(&format!("roundtrip-{}", cfg.arch()));
        save(&path, &config, &vm).unwrap();
        let model = load_model(&path).unwrap();
        assert_eq!(model.latent_channels, Some(1));
        assert_eq!(model.sampling, config.sampling());

        let (x, _) = inputs(3, 28);
        let sigma = match config.objective.name() {
            "flow" => 0.6,
            _ => 3.0,
        };
        let cond = Conditioning::labels(vec![Some(2), None, Some(5)]);
        let got = model.predict(&x, sigma, &cond).unwrap();
        // What predict must have done: scale x, and feed timestep(σ).
        let ms = config.sampling();
        let t = Tensor::full(ms.timestep(sigma) as f32, 3, &DEV).unwrap();
        let x_in = x.affine(ms.input_scale(sigma), 0.0).unwrap();
        let labels = label_tensor(&[Some(2), None, Some(5)], 10, &DEV).unwrap();
        let want = net.forward(&x_in, &t, &labels).unwrap();
        assert_eq!(bits(&got), bits(&want), "{}", cfg.arch());

        // No labels at all means every item is ∅.
        let uncond = model.predict(&x, sigma, &Conditioning::default()).unwrap();
        let nulls = label_tensor(&[None, None, None], 10, &DEV).unwrap();
        let want = net.forward(&x_in, &t, &nulls).unwrap();
        assert_eq!(bits(&uncond), bits(&want));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}

#[test]
fn objectives_map_to_the_sampling_timesteps() {
    let flow = ModelConfig::new(unet_cfg(), Objective::Flow, 28).sampling();
    assert_eq!(flow.prediction, Prediction::Velocity);
    assert_eq!(flow.timestep(0.25), 250.0);

    let ddpm = ModelConfig::new(unet_cfg(), Objective::ddpm_linear(), 28).sampling();
    assert_eq!(ddpm.prediction, Prediction::Epsilon);
    let NoiseLevels::Discrete { sigmas } = &ddpm.levels else {
        panic!("ddpm must be discrete")
    };
    assert_eq!(sigmas.len(), 1000);
    // Integer timesteps come back exactly: training's t is sampling's t.
    for t in [0usize, 17, 500, 999] {
        assert!((ddpm.timestep(sigmas[t]) - t as f64).abs() < 1e-9);
    }
    // β_1 = 1e-4 for DDPM's linear schedule: σ_0 = sqrt(β/(1−β)).
    assert!((sigmas[0] - (1e-4f64 / (1.0 - 1e-4)).sqrt()).abs() < 1e-12);

    let cosine = ModelConfig::new(
        unet_cfg(),
        Objective::Ddpm {
            beta_schedule: weft_models::mnist::BetaSchedule::Cosine,
            n_train: 1000,
        },
        28,
    );
    assert_ne!(cosine.sampling(), ddpm);

    // The JSON names the architecture under "arch".
    let json = serde_json::to_value(ModelConfig::new(dit_cfg(), Objective::Flow, 28)).unwrap();
    assert_eq!(json["net"]["arch"], "DiT");
}

fn expect_err(path: &Path) -> String {
    match load_model(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn loader_errors_name_the_file_and_the_problem() {
    let config = ModelConfig::new(unet_cfg(), Objective::Flow, 28);
    let (vm, _) = build(&unet_cfg(), false);

    // Missing file.
    let missing = temp("missing").with_file_name("nope.safetensors");
    let e = expect_err(&missing);
    assert!(
        e.contains("nope.safetensors") && e.contains("no such"),
        "{e}"
    );

    // Truncated: half the bytes.
    let good = temp("truncated");
    save(&good, &config, &vm).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = good.with_file_name("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = expect_err(&cut);
    assert!(
        e.contains("cut.safetensors") && e.contains("safetensors"),
        "{e}"
    );
    // Garbage and an empty file do not panic either.
    std::fs::write(&cut, b"").unwrap();
    assert!(expect_err(&cut).contains("cut.safetensors"));
    std::fs::write(&cut, [0xffu8; 64]).unwrap();
    assert!(expect_err(&cut).contains("cut.safetensors"));

    // No metadata.
    let bare = good.with_file_name("bare.safetensors");
    let t = Tensor::zeros((2, 2), DType::F32, &DEV).unwrap();
    std::fs::write(&bare, safetensors::serialize([("w", &t)], None).unwrap()).unwrap();
    let e = expect_err(&bare);
    assert!(
        e.contains("bare.safetensors") && e.contains("metadata"),
        "{e}"
    );

    // Unknown architecture.
    let mut json = serde_json::to_value(&config).unwrap();
    json["net"]["arch"] = "Mamba".into();
    let odd = good.with_file_name("odd.safetensors");
    let meta = std::collections::HashMap::from([("weft.config".to_string(), json.to_string())]);
    std::fs::write(
        &odd,
        safetensors::serialize([("w", &t)], Some(meta)).unwrap(),
    )
    .unwrap();
    let e = expect_err(&odd);
    assert!(e.contains("odd.safetensors") && e.contains("Mamba"), "{e}");

    // One tensor of the wrong shape, one missing.
    let shaped = good.with_file_name("shaped.safetensors");
    {
        let data = vm.data().lock().unwrap();
        let w = data["stem.weight"].as_tensor().clone();
        drop(data);
        let vm2 = VarMap::new();
        let _ = Net::new(&unet_cfg(), VarBuilder::from_varmap(&vm2, DType::F32, &DEV)).unwrap();
        vm2.data().lock().unwrap().insert(
            "stem.weight".into(),
            candle_core::Var::from_tensor(&w.narrow(0, 0, 16).unwrap()).unwrap(),
        );
        save(&shaped, &config, &vm2).unwrap();
        let e = expect_err(&shaped);
        assert!(
            e.contains("shaped.safetensors") && e.contains("stem.weight") && e.contains("shape"),
            "{e}"
        );
        vm2.data().lock().unwrap().remove("out_conv.bias");
        save(&shaped, &config, &vm2).unwrap();
        let e = expect_err(&shaped);
        assert!(e.contains("out_conv.bias") && e.contains("missing"), "{e}");
    }
    std::fs::remove_dir_all(good.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(missing.parent().unwrap());
}

#[test]
fn f16_checkpoints_are_upcast() {
    let config = ModelConfig::new(dit_cfg(), Objective::Flow, 28);
    let (vm, _) = build(&dit_cfg(), true);
    let half = VarMap::new();
    for (k, v) in vm.data().lock().unwrap().iter() {
        let t = v.as_tensor().to_dtype(DType::F16).unwrap();
        half.data()
            .lock()
            .unwrap()
            .insert(k.clone(), candle_core::Var::from_tensor(&t).unwrap());
    }
    let path = temp("f16");
    save(&path, &config, &half).unwrap();
    let (x, _) = inputs(1, 28);
    let out = load_model(&path)
        .unwrap()
        .predict(&x, 0.5, &Conditioning::labels(vec![Some(1)]))
        .unwrap();
    assert_eq!(out.dtype(), DType::F32);
    assert!(
        out.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn adaln_zero_makes_fresh_dit_blocks_identity_and_output_zero() {
    let vm = VarMap::new();
    let block = DiTBlock::new(64, 4, 4, VarBuilder::from_varmap(&vm, DType::F32, &DEV)).unwrap();
    let x = wavy(&[2, 9, 64], 1.0, 1.0);
    let c = wavy(&[2, 64], 2.0, 1.0);
    assert_eq!(bits(&block.forward(&x, &c).unwrap()), bits(&x));

    let (_, net) = build(&dit_cfg(), false);
    let (x, t) = inputs(3, 28);
    let labels = label_tensor(&[Some(1), None, Some(2)], 10, &DEV).unwrap();
    let out = net.forward(&x, &t, &labels).unwrap();
    assert!(bits(&out).iter().all(|b| f32::from_bits(*b) == 0.0));
    // Once the modulation is non-zero, the block is no longer the identity.
    let (_, net) = build(&dit_cfg(), true);
    let out = net.forward(&x, &t, &labels).unwrap();
    assert!(
        out.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

fn param_count(vm: &VarMap) -> usize {
    vm.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// Forward + backward of a batch of 64 at 28×28; run in release with
/// `RAYON_NUM_THREADS=2 cargo test --release -p weft-nodes --test models -- --ignored speed --nocapture`.
#[test]
#[ignore]
fn speed() {
    let small_unet = NetConfig::UNet(UNetConfig {
        num_res_blocks: 1,
        ..UNetConfig::mnist()
    });
    let small_dit = NetConfig::DiT(DiTConfig {
        depth: 4,
        hidden: 96,
        heads: 3,
        ..DiTConfig::mnist()
    });
    for cfg in [unet_cfg(), small_unet, dit_cfg(), small_dit] {
        let (vm, net) = build(&cfg, false);
        let x = wavy(&[64, 1, 28, 28], 0.1, 1.0);
        let t = wavy(&[64], 0.2, 500.0).abs().unwrap();
        let labels = Tensor::new((0..64u32).map(|i| i % 11).collect::<Vec<_>>(), &DEV).unwrap();
        let mut times = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let loss = net
                .forward(&x, &t, &labels)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            assert!(grads.get(vm.all_vars()[0].as_tensor()).is_some());
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{}: {} params, forward+backward batch 64: median {:.3}s (min {:.3}s) on {} threads",
            cfg.arch(),
            param_count(&vm),
            times[times.len() / 2],
            times[0],
            candle_core::utils::get_num_threads()
        );
    }
}
