//! GGUF decoding against llama.cpp's own Python package: the fixtures
//! (scripts/make_quant_fixtures.py) hold one tensor per GGUF type and
//! gguf-py's dequantisation of it.

use std::path::PathBuf;

use candle_core::Device;
use weft_kernels::quant::{GgufFile, StoredType};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

#[test]
fn every_gguf_type_decodes_like_gguf_py() {
    let file = GgufFile::open(fixtures().join("blocks.gguf")).unwrap();
    let expected =
        candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(file.architecture(), Some("weft-test"));
    let mut names = file.tensor_names();
    names.sort();
    let mut want: Vec<&str> = expected.keys().map(String::as_str).collect();
    want.sort();
    assert_eq!(names, want);
    let types = [
        ("q4_0", StoredType::Q4_0),
        ("q4_1", StoredType::Q4_1),
        ("q5_0", StoredType::Q5_0),
        ("q5_1", StoredType::Q5_1),
        ("q8_0", StoredType::Q8_0),
        ("q2_k", StoredType::Q2K),
        ("q3_k", StoredType::Q3K),
        ("q4_k", StoredType::Q4K),
        ("q5_k", StoredType::Q5K),
        ("q6_k", StoredType::Q6K),
        ("f16", StoredType::F16),
        ("bf16", StoredType::BF16),
    ];
    assert_eq!(names.len(), types.len());
    for (name, ty) in types {
        let w = file.tensor(name).unwrap();
        assert_eq!(w.stored_type(), ty, "{name}");
        assert_eq!(w.shape(), &[4, 512], "{name}");
        let got: Vec<f32> = w
            .to_f32_tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = expected[name].flatten_all().unwrap().to_vec1().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // gguf-py computes in numpy f32 with its own operation order.
            assert!((g - w).abs() <= 1e-6 * scale, "{name}[{i}]: {g} vs {w}");
        }
        // Row-range decoding agrees with the whole.
        let mut rows = vec![0f32; 2 * 512];
        w.dequantize_rows(1..3, &mut rows).unwrap();
        assert_eq!(rows, got[512..3 * 512], "{name} rows 1..3");
    }
}
