//! Compressed weights on the tiny Flux fixture (`tests/fixtures/flux`):
//! linears kept as stored (f16) give the f32 result; ComfyUI's scaled fp8
//! file gives what torch computes from its dequantised weights; Q8_0 on
//! load and through a GGUF written by `weft quantize` agree bit for bit and
//! stay within a stated tolerance of f32.

mod common;

use std::path::PathBuf;

use candle_core::Tensor;
use common::{relative, tensors};
use weft_kernels::quant::{GgufFile, StoredType};
use weft_kernels::testing::max_diff as max_abs;
use weft_models::flux::{self, model::pack, model::unpack, FluxNetwork};
use weft_models::packed::WeightMode;
use weft_models::quantize::quantize_file;
use weft_sampling::{Conditioning, Network};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flux")
}

/// The dev transformer from `file` (its folder as config) run on the
/// reference inputs, packed as diffusers returns it.
fn dev_output(file: &std::path::Path, mode: WeightMode) -> Tensor {
    let r = tensors(&dir());
    let (cfg, map) = flux::open_transformer(file, Some(&dir().join("dev"))).unwrap();
    let net = FluxNetwork::build(&cfg, &map, mode).unwrap_or_else(|e| panic!("{e}"));
    let x = unpack(&r["inputs.hidden_states"], 2, 16, 4, 6).unwrap();
    let t = (&r["inputs.timestep"] * 1000.0).unwrap();
    let guidance: Vec<f32> = r["inputs.guidance"].to_vec1().unwrap();
    let cond = Conditioning {
        context: Some(r["inputs.encoder_hidden_states"].clone()),
        pooled: Some(r["inputs.pooled_projections"].clone()),
        guidance: guidance.iter().map(|&g| Some(g as f64)).collect(),
        ..Default::default()
    };
    pack(&net.forward(&x, &t, &cond).unwrap()).unwrap()
}

#[test]
fn stored_f16_linears_give_the_f32_result() {
    let file = dir().join("dev_original.safetensors");
    let packed = dev_output(&file, WeightMode::Stored);
    let dense = dev_output(&file, WeightMode::Dense);
    let d = relative(&packed, &dense);
    assert!(d < 1e-5, "{d}");
}

#[test]
fn scaled_fp8_matches_torch_on_its_dequantised_weights() {
    let r = tensors(&dir());
    let out = dev_output(
        &dir().join("dev_original_fp8_scaled.safetensors"),
        WeightMode::Stored,
    );
    let d = relative(&out, &r["dev.out_fp8_dequantized"]);
    assert!(d < 1e-4, "{d}");
    // And it is an approximation of the f16 model, not the same numbers.
    assert!(relative(&out, &r["dev.out"]) > 1e-4);
}

/// Q8_0's error on this model, relative to the largest output value.
const Q8_TOLERANCE: f32 = 2e-2;

#[test]
fn q8_0_on_load_and_from_gguf_agree_and_approximate_f32() {
    let r = tensors(&dir());
    let file = dir().join("dev_original.safetensors");
    let on_load = dev_output(&file, WeightMode::Quantize(StoredType::Q8_0));
    let d = relative(&on_load, &r["dev.out"]);
    assert!(d < Q8_TOLERANCE && d > 0.0, "Q8_0 on load: {d}");

    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("flux-dev-Q8_0.gguf");
    let report = quantize_file(&file, &gguf, StoredType::Q8_0).unwrap();
    assert!(report.quantized > 0 && report.kept_f32 > 0, "{report:?}");
    assert!(report.bytes_out < report.bytes_in, "{report:?}");
    let g = GgufFile::open(&gguf).unwrap();
    assert_eq!(g.architecture(), Some("flux"));
    assert_eq!(
        weft_models::detect::describe(&gguf),
        "GGUF Flux transformer"
    );
    assert_eq!(
        g.stored_type("double_blocks.0.img_attn.qkv.weight")
            .unwrap(),
        StoredType::Q8_0
    );
    let from_gguf = dev_output(&gguf, WeightMode::Stored);
    assert_eq!(
        max_abs(&from_gguf, &on_load),
        0.0,
        "the same blocks, the same bits"
    );
}

#[test]
fn a_truncated_gguf_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("model.gguf");
    quantize_file(
        &dir().join("schnell_original.safetensors"),
        &gguf,
        StoredType::Q8_0,
    )
    .unwrap();
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..bytes.len() / 2]).unwrap();
    let err = flux::open_transformer(&gguf, Some(&dir().join("schnell"))).unwrap_err();
    assert!(err.contains("model.gguf"), "{err}");
}

/// What a loaded model is counted as holding: linears left in the memory
/// map cost nothing, quantised copies their stored size, f32 everything.
#[test]
fn resident_bytes_count_what_stays_in_memory() {
    use weft_models::packed::resident_bytes;
    let (_, map) = flux::open_transformer(
        &dir().join("dev_original.safetensors"),
        Some(&dir().join("dev")),
    )
    .unwrap();
    let dense = resident_bytes(&map, WeightMode::Dense);
    let stored = resident_bytes(&map, WeightMode::Stored);
    let q8 = resident_bytes(&map, WeightMode::Quantize(StoredType::Q8_0));
    assert_eq!(dense, map.f32_bytes());
    assert!(
        stored * 3 < dense,
        "f16 linears stay mapped: {stored} of {dense}"
    );
    assert!(stored < q8 && q8 < dense, "{stored} < {q8} < {dense}");
}

/// Resident kB of this process's mappings of `file` (`/proc/self/smaps`).
fn resident_kb(file: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = file.display().to_string();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        // A mapping's header: its address range, perms, offset, device, inode, path.
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(&name);
        } else if let Some(kb) = line.strip_prefix("Rss:").filter(|_| inside) {
            total += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    total
}

#[test]
fn a_t5_encoder_releases_its_mapped_pages_after_a_prompt_and_still_encodes_the_same() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/t5/model.safetensors")
        .canonicalize()
        .unwrap();
    let parts = weft_models::t5::tower::open(&file).unwrap();
    let tower = weft_models::t5::tower::T5Tower::build(&parts, 1, WeightMode::Stored).unwrap();
    let ids = Tensor::new(&[[3u32, 7, 11, 1]], &candle_core::Device::Cpu).unwrap();
    tower.model.encode(&ids, None).unwrap();
    assert!(
        resident_kb(&file) > 0,
        "the weights were read through the map"
    );
    let first = tower.encode("a photo of a cat").unwrap();
    assert_eq!(
        resident_kb(&file),
        0,
        "pages still resident after the prompt"
    );
    let second = tower.encode("a photo of a cat").unwrap();
    assert_eq!(max_abs(&first, &second), 0.0);
}

#[test]
fn a_flux_network_releases_its_mapped_pages_when_sampling_is_done() {
    let file = dir()
        .join("dev_original.safetensors")
        .canonicalize()
        .unwrap();
    let (cfg, map) = flux::open_transformer(&file, Some(&dir().join("dev"))).unwrap();
    let net = FluxNetwork::build(&cfg, &map, WeightMode::Stored).unwrap();
    let r = tensors(&dir());
    let x = unpack(&r["inputs.hidden_states"], 2, 16, 4, 6).unwrap();
    let t = (&r["inputs.timestep"] * 1000.0).unwrap();
    let cond = Conditioning {
        context: Some(r["inputs.encoder_hidden_states"].clone()),
        pooled: Some(r["inputs.pooled_projections"].clone()),
        guidance: vec![Some(3.5)],
        ..Default::default()
    };
    let first = net.forward(&x, &t, &cond).unwrap();
    assert!(
        resident_kb(&file) > 0,
        "the linears were read through the map"
    );
    net.release_pages();
    assert_eq!(resident_kb(&file), 0, "pages still resident");
    let second = net.forward(&x, &t, &cond).unwrap();
    assert_eq!(max_abs(&first, &second), 0.0);
}
