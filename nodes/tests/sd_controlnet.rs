//! ControlNet against diffusers on the tiny fixture (`models/tests/fixtures/sd/`,
//! `ControlNetModel.from_unet` of the SD 1.5 tiny UNet, f16 weights, f32
//! references), in all three file layouts; loading errors; hints inside
//! the UNet's `Network::forward` (percent windows, strength 0, CFG batches).

use weft_kernels::testing::max_diff as max_abs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use weft_core::{CancelToken, EventSink, Executor, RunOptions, SourceFile};
use weft_models::controlnet::{self, ControlHint, ControlNet};
use weft_models::sd::checkpoint;
use weft_models::sd::unet::{ControlResiduals, SdUNet};
use weft_nodes::controlnet::ControlNetHandle;
use weft_sampling::{Conditioning, Network};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/sd")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("reference.safetensors"), &Device::Cpu).unwrap()
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-sd-controlnet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims()
        && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn unet() -> SdUNet {
    let ck = checkpoint::open(&dir().join("tiny_sd15"), None).unwrap();
    let (spec, tensors) = ck.unet.as_ref().unwrap();
    SdUNet::build(spec, tensors).unwrap()
}

fn fixture_net() -> Arc<ControlNet> {
    Arc::new(ControlNet::load(&dir().join("controlnet")).unwrap())
}

fn hint(net: &Arc<ControlNet>, image: &Tensor, strength: f64, start: f64, end: f64) -> ControlHint {
    ControlHint {
        net: net.clone(),
        image: image.clone(),
        strength,
        start_percent: start,
        end_percent: end,
        previous: None,
    }
}

fn timesteps(r: &HashMap<String, Tensor>) -> Vec<f64> {
    r["unet.timestep"]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn text(context: &Tensor) -> Conditioning {
    Conditioning {
        context: Some(context.clone()),
        ..Default::default()
    }
}

/// diffusers name → original ControlNet name, for the tiny config
/// (one ResNet per level, two levels, six hint-embedding blocks);
/// written independently of the loader's mapping.
fn to_original(name: &str) -> String {
    let resnet = |r: &str| {
        for (from, to) in [
            ("norm1.", "in_layers.0."),
            ("conv1.", "in_layers.2."),
            ("time_emb_proj.", "emb_layers.1."),
            ("norm2.", "out_layers.0."),
            ("conv2.", "out_layers.3."),
            ("conv_shortcut.", "skip_connection."),
        ] {
            if let Some(p) = r.strip_prefix(from) {
                return format!("{to}{p}");
            }
        }
        panic!("unknown resnet parameter {r}")
    };
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    let num = |i: usize| parts[i].parse::<usize>().unwrap();
    let tail = |i: usize| parts[i..].join(".");
    match parts[0] {
        "conv_in" => format!("input_blocks.0.0.{}", tail(1)),
        "time_embedding" => match parts[1] {
            "linear_1" => format!("time_embed.0.{}", tail(2)),
            _ => format!("time_embed.2.{}", tail(2)),
        },
        "down_blocks" => {
            let i = num(1);
            let rest = name.splitn(5, '.').nth(4).unwrap_or("");
            match parts[2] {
                "resnets" => format!("input_blocks.{}.0.{}", 1 + 2 * i + num(3), resnet(rest)),
                "attentions" => format!("input_blocks.{}.1.{rest}", 1 + 2 * i + num(3)),
                _ => format!(
                    "input_blocks.{}.0.op.{}",
                    2 * (i + 1),
                    rest.strip_prefix("conv.").unwrap()
                ),
            }
        }
        "mid_block" => {
            let rest = name.splitn(4, '.').nth(3).unwrap();
            match parts[1] {
                "resnets" => format!("middle_block.{}.{}", 2 * num(2), resnet(rest)),
                _ => format!("middle_block.1.{rest}"),
            }
        }
        "controlnet_cond_embedding" => match parts[1] {
            "conv_in" => format!("input_hint_block.0.{}", tail(2)),
            "conv_out" => format!("input_hint_block.14.{}", tail(2)),
            _ => format!("input_hint_block.{}.{}", 2 * (num(2) + 1), tail(3)),
        },
        "controlnet_down_blocks" => format!("zero_convs.{}.0.{}", num(1), tail(2)),
        "controlnet_mid_block" => format!("middle_block_out.0.{}", tail(1)),
        _ => panic!("unknown tensor {name}"),
    }
}

/// The fixture rewritten in the original layout under `prefix`, in `d`.
fn write_original(d: &Path, prefix: &str, with_config: bool) -> PathBuf {
    let src = dir().join("controlnet/diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&src, &Device::Cpu).unwrap();
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (format!("{prefix}{}", to_original(&k)), v))
        .collect();
    let path = d.join("control_tiny.safetensors");
    candle_core::safetensors::save(&renamed, &path).unwrap();
    if with_config {
        std::fs::copy(dir().join("controlnet/config.json"), d.join("config.json")).unwrap();
    }
    path
}

fn check_residuals(net: &ControlNet, what: &str) {
    let r = reference();
    let (x, ctx, cond) = (&r["unet.sample"], &r["unet.context"], &r["controlnet.cond"]);
    let outs: Vec<ControlResiduals> = timesteps(&r)
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            net.residuals(
                &x.narrow(0, i, 1).unwrap(),
                t,
                &ctx.narrow(0, i, 1).unwrap(),
                None,
                &cond.narrow(0, i, 1).unwrap(),
                1.0,
            )
            .unwrap()
        })
        .collect();
    assert_eq!(outs[0].down.len(), 4, "{what}");
    for k in 0..4 {
        let got = Tensor::cat(&[&outs[0].down[k], &outs[1].down[k]], 0).unwrap();
        let e = max_abs(&got, &r[&format!("controlnet.down.{k}")]);
        assert!(e <= 1e-4, "{what}: down.{k} max error {e}");
    }
    let mid = Tensor::cat(&[&outs[0].mid, &outs[1].mid], 0).unwrap();
    let e = max_abs(&mid, &r["controlnet.mid"]);
    assert!(e <= 1e-4, "{what}: mid max error {e}");
    // The strength scales every residual.
    let half = net
        .residuals(
            &x.narrow(0, 0, 1).unwrap(),
            999.0,
            &ctx.narrow(0, 0, 1).unwrap(),
            None,
            &cond.narrow(0, 0, 1).unwrap(),
            0.5,
        )
        .unwrap();
    let e = max_abs(&(&half.mid * 2.0).unwrap(), &outs[0].mid);
    assert!(e <= 1e-5, "{what}: strength 0.5 {e}");
}

#[test]
fn residuals_match_diffusers_in_every_layout() {
    check_residuals(&fixture_net(), "diffusers folder");
    let file = dir().join("controlnet/diffusion_pytorch_model.safetensors");
    check_residuals(&ControlNet::load(&file).unwrap(), "diffusers file");
    for (name, prefix) in [("original", "control_model."), ("original-bare", "")] {
        let d = scratch(name);
        let path = write_original(&d, prefix, true);
        let net = ControlNet::load(&path).unwrap_or_else(|e| panic!("{e}"));
        check_residuals(&net, name);
    }
}

#[test]
fn controlled_unet_matches_diffusers() {
    let r = reference();
    let unet = unet();
    let (x, ctx, cond) = (&r["unet.sample"], &r["unet.context"], &r["controlnet.cond"]);
    let ts = timesteps(&r);
    // The reference residuals through forward_controlled.
    let outs: Vec<Tensor> = (0..2)
        .map(|i| {
            let control = ControlResiduals {
                down: (0..4)
                    .map(|k| r[&format!("controlnet.down.{k}")].narrow(0, i, 1).unwrap())
                    .collect(),
                mid: r["controlnet.mid"].narrow(0, i, 1).unwrap(),
            };
            unet.forward_controlled(
                &x.narrow(0, i, 1).unwrap(),
                ts[i],
                &ctx.narrow(0, i, 1).unwrap(),
                None,
                Some(&control),
            )
            .unwrap()
        })
        .collect();
    let e = max_abs(&Tensor::cat(&outs, 0).unwrap(), &r["unet.out_controlled"]);
    assert!(e <= 1e-4, "forward_controlled: max error {e}");

    // The whole path: a hint in the conditioning, one image per item.
    let net = fixture_net();
    let mut c = text(ctx);
    c.hints = vec![Some(hint(&net, cond, 1.0, 0.0, 1.0).into_hint())];
    let t = r["unet.timestep"].clone();
    let out = unet.forward(x, &t, &c).unwrap();
    let e = max_abs(&out, &r["unet.out_controlled"]);
    assert!(e <= 1e-4, "Network::forward with a hint: max error {e}");
    let plain = unet.forward(x, &t, &text(ctx)).unwrap();
    assert!(max_abs(&plain, &r["unet.out"]) <= 1e-4);
    assert!(
        max_abs(&out, &plain) > 1e-3,
        "the ControlNet changes the output"
    );
}

#[test]
fn inactive_hints_give_exactly_the_uncontrolled_output() {
    let r = reference();
    let unet = unet();
    let net = fixture_net();
    let (x, ctx, cond) = (&r["unet.sample"], &r["unet.context"], &r["controlnet.cond"]);
    let t = r["unet.timestep"].clone(); // [999, 321]
    let plain = unet.forward(x, &t, &text(ctx)).unwrap();
    let with = |h: ControlHint| {
        let mut c = text(ctx);
        c.hints = vec![Some(h.into_hint())];
        unet.forward(x, &t, &c).unwrap()
    };
    // Control only in the last 10 % of the schedule (t ≤ 99.9): neither item.
    assert!(same(&with(hint(&net, cond, 1.0, 0.9, 1.0)), &plain));
    // Only in the first 10 % (t ≥ 899.1): item 0 (t = 999) only.
    let early = with(hint(&net, cond, 1.0, 0.0, 0.1));
    assert!(same(
        &early.narrow(0, 1, 1).unwrap(),
        &plain.narrow(0, 1, 1).unwrap()
    ));
    let e = max_abs(
        &early.narrow(0, 0, 1).unwrap(),
        &r["unet.out_controlled"].narrow(0, 0, 1).unwrap(),
    );
    assert!(e <= 1e-4, "item 0 controlled: {e}");
    // From halfway (t ≤ 499.5): item 1 only.
    let late = with(hint(&net, cond, 1.0, 0.5, 1.0));
    assert!(same(
        &late.narrow(0, 0, 1).unwrap(),
        &plain.narrow(0, 0, 1).unwrap()
    ));
    let e = max_abs(
        &late.narrow(0, 1, 1).unwrap(),
        &r["unet.out_controlled"].narrow(0, 1, 1).unwrap(),
    );
    assert!(e <= 1e-4, "item 1 controlled: {e}");
    // Strength 0 in a hint is no control.
    assert!(same(&with(hint(&net, cond, 0.0, 0.0, 1.0)), &plain));
    // The same with one timestep for the batch (the samplers' case).
    let t0 = Tensor::new(&[321f32, 321.0], &Device::Cpu).unwrap();
    let plain0 = unet.forward(x, &t0, &text(ctx)).unwrap();
    let mut c = text(ctx);
    c.hints = vec![Some(hint(&net, cond, 1.0, 0.0, 0.5).into_hint())];
    assert!(same(&unet.forward(x, &t0, &c).unwrap(), &plain0));

    let h = hint(&net, cond, 1.0, 0.25, 0.75);
    assert!(!h.is_active(999.0) && !h.is_active(750.0));
    assert!(h.is_active(749.25) && h.is_active(500.0) && h.is_active(249.75));
    assert!(!h.is_active(249.0));
}

/// A positive with a hint batched with an unhinted negative (CFG) gives
/// each item what it gets alone.
#[test]
fn cfg_batches_match_separate_runs() {
    let r = reference();
    let unet = unet();
    let net = fixture_net();
    let (ctx, cond) = (&r["unet.context"], &r["controlnet.cond"]);
    let x = r["unet.sample"].repeat((2, 1, 1, 1)).unwrap(); // 4 items
    let t = Tensor::new(&[321f32; 4], &Device::Cpu).unwrap();
    let t2 = t.narrow(0, 0, 2).unwrap();
    let (x_pos, x_neg) = (x.narrow(0, 0, 2).unwrap(), x.narrow(0, 2, 2).unwrap());
    let mut positive = text(&ctx.narrow(0, 0, 1).unwrap());
    positive.hints = vec![Some(hint(&net, cond, 0.8, 0.0, 1.0).into_hint())];
    let negative = text(&ctx.narrow(0, 1, 1).unwrap());
    let (positive, negative) = (
        positive.for_batch(2).unwrap(),
        negative.for_batch(2).unwrap(),
    );

    let batch = positive.concat(&negative).unwrap();
    assert_eq!(batch.hints.len(), 4);
    let together = unet.forward(&x, &t, &batch).unwrap();
    let alone_pos = unet.forward(&x_pos, &t2, &positive).unwrap();
    let alone_neg = unet.forward(&x_neg, &t2, &negative).unwrap();
    let e = max_abs(&together.narrow(0, 0, 2).unwrap(), &alone_pos);
    assert!(e <= 1e-5, "positive items: {e}");
    let e = max_abs(&together.narrow(0, 2, 2).unwrap(), &alone_neg);
    assert!(e <= 1e-5, "negative items: {e}");
    // The positive items are controlled (images 0 and 1), the negative not.
    let plain = unet
        .forward(
            &x_pos,
            &t2,
            &text(&ctx.narrow(0, 0, 1).unwrap()).for_batch(2).unwrap(),
        )
        .unwrap();
    assert!(max_abs(&alone_pos, &plain) > 1e-3);

    // Negative first, positive second: the hinted items are not the first.
    let swapped = negative.concat(&positive).unwrap();
    let out = unet.forward(&x, &t, &swapped).unwrap();
    let e = max_abs(&out.narrow(0, 2, 2).unwrap(), &alone_pos);
    assert!(e <= 1e-5, "swapped positive items: {e}");
    let e = max_abs(&out.narrow(0, 0, 2).unwrap(), &alone_neg);
    assert!(e <= 1e-5, "swapped negative items: {e}");

    // Both hinted by one ControlNetApplyAdvanced: one hint, one pass.
    let applied = controlnet::apply_control(
        &[
            &text(&ctx.narrow(0, 0, 1).unwrap()),
            &text(&ctx.narrow(0, 1, 1).unwrap()),
        ],
        &net,
        cond,
        0.8,
        0.0,
        1.0,
    )
    .unwrap();
    let (p, n) = (&applied[0], &applied[1]);
    let (hp, hn) = (p.hints[0].as_ref().unwrap(), n.hints[0].as_ref().unwrap());
    assert!(
        Arc::ptr_eq(&hp.0, &hn.0),
        "positive and negative share the hint"
    );
    let (p, n) = (p.for_batch(2).unwrap(), n.for_batch(2).unwrap());
    let out = unet.forward(&x, &t, &p.concat(&n).unwrap()).unwrap();
    let e = max_abs(&out.narrow(0, 0, 2).unwrap(), &alone_pos);
    assert!(e <= 1e-5, "advanced positive: {e}");
    let neg_alone = unet.forward(&x_neg, &t2, &n).unwrap();
    let e = max_abs(&out.narrow(0, 2, 2).unwrap(), &neg_alone);
    assert!(e <= 1e-5, "advanced negative: {e}");
}

#[test]
fn stacked_controlnets_add_up() {
    let r = reference();
    let net = fixture_net();
    let unet = unet();
    let (x, ctx, cond) = (&r["unet.sample"], &r["unet.context"], &r["controlnet.cond"]);
    let x = x.narrow(0, 1, 1).unwrap();
    let (ctx, cond) = (ctx.narrow(0, 1, 1).unwrap(), cond.narrow(0, 1, 1).unwrap());
    let t = Tensor::new(&[321f32], &Device::Cpu).unwrap();
    let once = controlnet::apply_control(&[&text(&ctx)], &net, &cond, 0.3, 0.0, 1.0).unwrap();
    let twice = controlnet::apply_control(&[&once[0]], &net, &cond, 0.7, 0.0, 1.0).unwrap();
    let full = controlnet::apply_control(&[&text(&ctx)], &net, &cond, 1.0, 0.0, 1.0).unwrap();
    let a = unet.forward(&x, &t, &twice[0]).unwrap();
    let b = unet.forward(&x, &t, &full[0]).unwrap();
    let e = max_abs(&a, &b);
    assert!(e <= 1e-4, "0.3 + 0.7 vs 1.0: {e}");
}

#[test]
fn control_images_are_resized_to_the_latent() {
    let r = reference();
    let net = fixture_net();
    let (x, ctx, cond) = (&r["unet.sample"], &r["unet.context"], &r["controlnet.cond"]);
    let x = x.narrow(0, 0, 1).unwrap();
    let ctx = ctx.narrow(0, 0, 1).unwrap();
    // A 2× image (each pixel doubled) comes back to the 64×64 one exactly.
    let img = cond.narrow(0, 0, 1).unwrap();
    let big = img.upsample_nearest2d(128, 128).unwrap();
    let a = net.residuals(&x, 999.0, &ctx, None, &img, 1.0).unwrap();
    let b = net.residuals(&x, 999.0, &ctx, None, &big, 1.0).unwrap();
    assert!(same(&a.mid, &b.mid));
    // Grey images are spread over RGB; wrong ranks and channels are errors.
    let grey = img.mean_keepdim(1).unwrap();
    assert!(net.residuals(&x, 999.0, &ctx, None, &grey, 1.0).is_ok());
    let two = img.narrow(1, 0, 2).unwrap();
    let e = net
        .residuals(&x, 999.0, &ctx, None, &two, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3-channel"), "{e}");
    let e = net
        .residuals(&x, 999.0, &ctx, None, &img.squeeze(0).unwrap(), 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[batch, channels, height, width]"), "{e}");
}

fn load_err(path: &Path) -> String {
    match ControlNet::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn loading_errors_are_clear() {
    let d = scratch("errors");
    let weights = dir().join("controlnet/diffusion_pytorch_model.safetensors");

    let missing = d.join("nope.safetensors");
    let e = load_err(&missing);
    assert!(
        e.contains("nope.safetensors") && e.contains("no such"),
        "{e}"
    );

    let text_file = d.join("notes.safetensors");
    std::fs::write(&text_file, "this is not a model\n").unwrap();
    let e = load_err(&text_file);
    assert!(
        e.contains("notes.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );

    let pickle = d.join("control_v11p_sd15_canny.pth");
    std::fs::write(&pickle, b"PK\x03\x04").unwrap();
    let e = load_err(&pickle);
    assert!(e.contains("canny.pth") && e.contains("pickled"), "{e}");

    let bytes = std::fs::read(&weights).unwrap();
    let cut = d.join("truncated");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(
        dir().join("controlnet/config.json"),
        cut.join("config.json"),
    )
    .unwrap();
    let cut_file = cut.join("diffusion_pytorch_model.safetensors");
    std::fs::write(&cut_file, &bytes[..bytes.len() / 2]).unwrap();
    for path in [&cut, &cut_file] {
        let e = load_err(path);
        assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");
        assert!(e.contains("truncated or corrupt"), "{e}");
    }

    // A folder without config.json, one that is a UNet, one without weights.
    let e = load_err(&d);
    assert!(e.contains("no config.json"), "{e}");
    let e = load_err(&dir().join("tiny_sd15/unet"));
    assert!(
        e.contains("config.json") && e.contains("not a ControlNetModel"),
        "{e}"
    );
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(
        dir().join("controlnet/config.json"),
        empty.join("config.json"),
    )
    .unwrap();
    let e = load_err(&empty);
    assert!(e.contains("no safetensors weights"), "{e}");

    // A Stable Diffusion checkpoint is not a ControlNet.
    let e = load_err(&dir().join("tiny_sd15.safetensors"));
    assert!(
        e.contains("tiny_sd15.safetensors") && e.contains("not a ControlNet"),
        "{e}"
    );

    // Without a config the tiny (16-wide context) family is unknown, in
    // both single-file layouts; an unrelated config.json beside is ignored.
    let lone = d.join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(&weights, lone.join("tiny.safetensors")).unwrap();
    std::fs::copy(
        dir().join("tiny_sd15/unet/config.json"),
        lone.join("config.json"),
    )
    .unwrap();
    let e = load_err(&lone.join("tiny.safetensors"));
    assert!(
        e.contains("tiny.safetensors") && e.contains("config.json"),
        "{e}"
    );
    let orig = d.join("orig");
    std::fs::create_dir_all(&orig).unwrap();
    let e = load_err(&write_original(&orig, "control_model.", false));
    assert!(
        e.contains("control_tiny.safetensors") && e.contains("config.json"),
        "{e}"
    );

    // A file missing tensors lists them.
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    tensors.remove("controlnet_mid_block.weight");
    tensors.remove("controlnet_down_blocks.2.bias");
    let partial = d.join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    candle_core::safetensors::save(
        &tensors,
        partial.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        dir().join("controlnet/config.json"),
        partial.join("config.json"),
    )
    .unwrap();
    let e = load_err(&partial);
    assert!(e.contains("2 tensor problem(s)"), "{e}");
    assert!(e.contains("controlnet_mid_block.weight"), "{e}");
    assert!(e.contains("controlnet_down_blocks.2.bias"), "{e}");
}

fn registry() -> weft_core::Registry {
    weft_nodes::builtin_registry()
}

#[test]
fn apply_nodes_attach_hints() {
    let d = scratch("nodes");
    let png = d.join("control.png");
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    })
    .save(&png)
    .unwrap();
    let graph = format!(
        r#"(
            nodes: {{
                "net": ControlNetLoader(control_net_name: {net:?}),
                "img": LoadImage(image_path: {png:?}),
                "pos": ClassLabel(labels: "1"),
                "neg": ClassLabel(labels: "none"),
                "off": ControlNetApply(conditioning: Link("pos", "CONDITIONING"), control_net: Link("net", "CONTROL_NET"), image: Link("img", "IMAGE"), strength: 0.0),
                "on": ControlNetApply(conditioning: Link("pos", "CONDITIONING"), control_net: Link("net", "CONTROL_NET"), image: Link("img", "IMAGE"), strength: 0.5),
                "show": Print(value: Link("on", "CONDITIONING")),
                "adv": ControlNetApplyAdvanced(positive: Link("pos", "CONDITIONING"), negative: Link("neg", "CONDITIONING"), control_net: Link("net", "CONTROL_NET"), image: Link("img", "IMAGE"), start_percent: 0.2, end_percent: 0.6),
            }},
        )"#,
        net = dir().join("controlnet"),
    );
    let registry = registry();
    let graph = weft_core::load(SourceFile::new("test.ron", &graph), &registry, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        out_dir: d.clone(),
        workers: 1,
        targets: Some(vec!["off".into(), "on".into(), "adv".into(), "net".into()]),
        ..RunOptions::default()
    };
    let report = Executor::new(64 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap();
    assert!(report.success(), "{:?}", report.failed);
    let cond = |node: &str, i: usize| -> Conditioning {
        report.output(node).unwrap()[i]
            .downcast::<Conditioning>()
            .unwrap()
            .clone()
    };
    let control = |c: &Conditioning| -> Arc<ControlHint> {
        assert_eq!(c.hints.len(), 1);
        c.hints[0]
            .as_ref()
            .unwrap()
            .0
            .clone()
            .downcast::<ControlHint>()
            .unwrap()
    };
    // Strength 0 leaves the conditioning as it was: no hint at all.
    let off = cond("off", 0);
    assert!(off.hints.is_empty());
    let on = control(&cond("on", 0));
    assert_eq!(
        (on.strength, on.start_percent, on.end_percent),
        (0.5, 0.0, 1.0)
    );
    assert_eq!(on.image.dims(), &[1, 3, 64, 64]);
    let (p, n) = (control(&cond("adv", 0)), control(&cond("adv", 1)));
    assert!(Arc::ptr_eq(&p, &n), "positive and negative share one hint");
    assert_eq!(
        (p.start_percent, p.end_percent, p.strength),
        (0.2, 0.6, 1.0)
    );
    assert!(p.is_active(500.0) && !p.is_active(900.0) && !p.is_active(300.0));
    let net = report.output("net").unwrap()[0]
        .downcast::<ControlNetHandle>()
        .unwrap()
        .0
        .clone();
    assert!(Arc::ptr_eq(&on.net, &net));

    // The strength-0 output through the UNet is exactly the uncontrolled one.
    let r = reference();
    let unet = unet();
    let (x, ctx) = (&r["unet.sample"], &r["unet.context"]);
    let t = r["unet.timestep"].clone();
    let with_text = |c: Conditioning| Conditioning {
        labels: None,
        context: Some(ctx.clone()),
        ..c
    };
    let plain = unet.forward(x, &t, &text(ctx)).unwrap();
    assert!(same(&unet.forward(x, &t, &with_text(off)).unwrap(), &plain));
    let controlled = unet.forward(x, &t, &with_text(cond("on", 0))).unwrap();
    assert!(max_abs(&controlled, &plain) > 1e-3);

    // Bad inputs fail the node with a message, not a panic.
    let bad = format!(
        r#"(
            nodes: {{
                "net": ControlNetLoader(control_net_name: {missing:?}),
                "show": Print(value: Link("net", "CONTROL_NET")),
            }},
        )"#,
        missing = d.join("missing.safetensors"),
    );
    let graph = weft_core::load(SourceFile::new("bad.ron", &bad), &registry, &[]).unwrap();
    let opts = RunOptions {
        targets: Some(vec!["net".into()]),
        ..opts
    };
    let report = Executor::new(64 << 20)
        .run(&graph, &opts, &EventSink::discard(), &CancelToken::new())
        .unwrap();
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].message.contains("missing.safetensors"));
}
