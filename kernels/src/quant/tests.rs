//! The quant module against direct definitions: candle's own quantised
//! tensors, a dense f32 product, the `float8` crate, and closed-form fp8
//! values. GGUF decoding against gguf-py is in `tests/quant.rs`.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Module, Tensor};

use super::*;
use crate::layers::Linear;
use crate::testing::{max_diff, wavy};

/// Types that `quantize` supports with rows of 512.
const QUANTIZABLE: [StoredType; 13] = [
    StoredType::F32,
    StoredType::F16,
    StoredType::BF16,
    StoredType::F8E4M3,
    StoredType::F8E5M2,
    StoredType::Q4_0,
    StoredType::Q4_1,
    StoredType::Q5_0,
    StoredType::Q5_1,
    StoredType::Q8_0,
    StoredType::Q4K,
    StoredType::Q5K,
    StoredType::Q6K,
];

fn bits(t: &Tensor) -> Vec<u32> {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v.into_iter().map(f32::to_bits).collect()
}

#[test]
fn fp8_tables_match_the_float8_crate_for_all_codes() {
    for code in 0..=255u8 {
        let (a, b) = (
            fp8::E4M3[code as usize],
            float8::F8E4M3::from_bits(code).to_f32(),
        );
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "e4m3 {code:#04x}: {a} vs {b}"
        );
        let (a, b) = (
            fp8::E5M2[code as usize],
            float8::F8E5M2::from_bits(code).to_f32(),
        );
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "e5m2 {code:#04x}: {a} vs {b}"
        );
    }
}

#[test]
fn fp8_tables_match_the_format_definitions() {
    let e4 = &fp8::E4M3;
    assert_eq!(e4[0x00], 0.0);
    assert_eq!(e4[0x80].to_bits(), (-0.0f32).to_bits());
    assert_eq!(e4[0x01], 2f32.powi(-9)); // smallest subnormal
    assert_eq!(e4[0x07], 7.0 * 2f32.powi(-9)); // largest subnormal
    assert_eq!(e4[0x08], 2f32.powi(-6)); // smallest normal
    assert_eq!(e4[0x38], 1.0);
    assert_eq!(e4[0x3c], 1.5);
    assert_eq!(e4[0x7e], 448.0);
    assert_eq!(e4[0xfe], -448.0);
    assert!(e4[0x7f].is_nan() && e4[0xff].is_nan());
    assert_eq!(e4.iter().filter(|v| v.is_nan()).count(), 2);
    assert!(e4.iter().all(|v| !v.is_infinite()));
    let e5 = &fp8::E5M2;
    assert_eq!(e5[0x01], 2f32.powi(-16));
    assert_eq!(e5[0x04], 2f32.powi(-14));
    assert_eq!(e5[0x3c], 1.0);
    assert_eq!(e5[0x3e], 1.5);
    assert_eq!(e5[0x7b], 57344.0);
    assert_eq!(e5[0x7c], f32::INFINITY);
    assert_eq!(e5[0xfc], f32::NEG_INFINITY);
    assert!(e5[0x7d].is_nan() && e5[0x7e].is_nan() && e5[0x7f].is_nan());
    assert_eq!(e5.iter().filter(|v| v.is_nan()).count(), 6);
    // Every finite code round-trips through the encoders.
    for code in 0..=255u8 {
        if e4[code as usize].is_finite() && code != 0x80 {
            assert_eq!(fp8::encode_e4m3(e4[code as usize]), code);
        }
        if e5[code as usize].is_finite() && code != 0x80 {
            assert_eq!(fp8::encode_e5m2(e5[code as usize]), code);
        }
    }
}

#[test]
fn scaled_fp8_multiplies_by_the_scale() {
    let codes: Vec<u8> = (0..16).map(|i| i * 7).collect();
    for (ty, lut) in [
        (StoredType::F8E4M3, &fp8::E4M3),
        (StoredType::F8E5M2, &fp8::E5M2),
    ] {
        let w = PackedWeight::from_vec(codes.clone(), ty, &[2, 8], Some(0.25)).unwrap();
        let got: Vec<f32> = w
            .to_f32_tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (g, &c) in got.iter().zip(&codes) {
            assert_eq!(*g, lut[c as usize] * 0.25, "{ty} code {c}");
        }
    }
    // quantize() picks the scale that maps the largest |value| to 448.
    let t = (wavy(&[4, 32], 0.1) * 10.0).unwrap();
    let q = PackedWeight::quantize(&t, StoredType::F8E4M3).unwrap();
    let amax: f32 = t.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert_eq!(q.scale(), Some(amax / 448.0));
    // e4m3 keeps 3 mantissa bits: relative error ≤ 2⁻⁴ of the value, plus
    // the subnormal step near zero.
    let err = max_diff(&q.to_f32_tensor().unwrap(), &t);
    assert!(err <= amax / 16.0, "{err}");
}

#[test]
fn quantize_matches_candles_qtensor_for_every_ggml_type() {
    let t = wavy(&[6, 512], 0.7);
    for ty in QUANTIZABLE {
        let Some(g) = ty.ggml() else { continue };
        let ours = PackedWeight::quantize(&t, ty).unwrap();
        let theirs = QTensor::quantize(&t, g).unwrap();
        assert_eq!(ours.bytes(), &theirs.data().unwrap()[..], "{ty} bytes");
        assert_eq!(ours.stored_size(), theirs.storage_size_in_bytes(), "{ty}");
        let want = theirs.dequantize(&Device::Cpu).unwrap();
        assert_eq!(
            bits(&ours.to_f32_tensor().unwrap()),
            bits(&want),
            "{ty} values"
        );
    }
}

#[test]
fn q8_0_error_is_within_one_step_per_block() {
    let t = (wavy(&[3, 256], 2.0) * 3.0).unwrap();
    let q = PackedWeight::quantize(&t, StoredType::Q8_0).unwrap();
    let (orig, deq): (Vec<f32>, Vec<f32>) = (
        t.flatten_all().unwrap().to_vec1().unwrap(),
        q.to_f32_tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(),
    );
    for (a, b) in orig.chunks(32).zip(deq.chunks(32)) {
        let amax = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= amax / 127.0,
                "{x} vs {y}, block max {amax}"
            );
        }
    }
}

#[test]
fn rows_that_are_not_whole_blocks_are_refused() {
    let t = wavy(&[4, 80], 0.0);
    for ty in [
        StoredType::Q8_0,
        StoredType::Q4_0,
        StoredType::Q4K,
        StoredType::Q6K,
    ] {
        let e = PackedWeight::quantize(&t, ty).unwrap_err().to_string();
        assert!(e.contains("block") && e.contains(ty.name()), "{e}");
    }
    // 96 is whole Q8_0 blocks of 32, not K-quant blocks of 256.
    let t = wavy(&[4, 96], 0.0);
    assert!(PackedWeight::quantize(&t, StoredType::Q8_0).is_ok());
    assert!(PackedWeight::quantize(&t, StoredType::Q4K).is_err());
    assert!(PackedWeight::quantize(&t, StoredType::F16).is_ok());
}

#[test]
fn views_check_their_byte_counts() {
    let bytes: SharedBytes = Arc::new(vec![0u8; 100]);
    let e = PackedWeight::from_bytes(bytes.clone(), 0, 68, StoredType::Q8_0, &[3, 32], None);
    assert!(e.unwrap_err().to_string().contains("takes 102 bytes"));
    let e = PackedWeight::from_bytes(bytes.clone(), 40, 68, StoredType::Q8_0, &[2, 32], None);
    assert!(e.unwrap_err().to_string().contains("overruns"));
    let w = PackedWeight::from_bytes(bytes, 32, 68, StoredType::Q8_0, &[2, 32], None).unwrap();
    assert_eq!(w.stored_size(), 68);
    let st = PackedWeight::from_safetensors_bytes(
        safetensors::Dtype::F8_E5M2,
        &[2, 3],
        Arc::new(vec![0x3cu8; 6]),
        0,
        6,
        Some(2.0),
    )
    .unwrap();
    assert_eq!(
        st.to_f32_tensor().unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![2f32; 3]; 2]
    );
    let bad = PackedWeight::from_safetensors_bytes(
        safetensors::Dtype::I64,
        &[1],
        Arc::new(vec![0u8; 8]),
        0,
        8,
        None,
    );
    assert!(bad.is_err());
}

/// A misaligned view (odd offset) decodes like an aligned one.
#[test]
fn misaligned_bytes_decode_the_same() {
    let t = wavy(&[5, 256], 0.3);
    for ty in [
        StoredType::Q8_0,
        StoredType::Q4K,
        StoredType::F16,
        StoredType::BF16,
    ] {
        let q = PackedWeight::quantize(&t, ty).unwrap();
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(q.bytes());
        let len = q.stored_size();
        let view =
            PackedWeight::from_bytes(Arc::new(shifted), 1, len, ty, &[5, 256], None).unwrap();
        assert_eq!(
            bits(&view.to_f32_tensor().unwrap()),
            bits(&q.to_f32_tensor().unwrap()),
            "{ty}"
        );
    }
}

/// Against candle's f32 matmul of the decoded weight: batch sizes 1, 7
/// and 300, 2-D and 3-D inputs, with and without bias; 300 outputs make
/// a partial last tile.
#[test]
fn matmul_t_matches_a_dense_product() {
    let (out_dim, in_dim) = (300, 512);
    let w = wavy(&[out_dim, in_dim], 1.3);
    let bias = wavy(&[out_dim], 4.0);
    for ty in QUANTIZABLE {
        let q = PackedWeight::quantize(&w, ty).unwrap();
        let dense = q.to_f32_tensor().unwrap();
        for shape in [
            &[1, in_dim][..],
            &[7, in_dim],
            &[300, in_dim],
            &[3, 7, in_dim],
        ] {
            let x = wavy(shape, 0.5);
            for b in [None, Some(&bias)] {
                let got = q.matmul_t(&x, b).unwrap();
                let want = x.broadcast_matmul(&dense.t().unwrap()).unwrap();
                let want = match b {
                    Some(b) => want.broadcast_add(b).unwrap(),
                    None => want,
                };
                assert_eq!(got.dims(), want.dims());
                let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                let err = max_diff(&got, &want);
                assert!(
                    err <= 1e-5 * scale,
                    "{ty} {shape:?} bias {}: {err}",
                    b.is_some()
                );
            }
        }
    }
}

#[test]
fn matmul_t_is_bit_identical_on_any_thread_count() {
    let w = wavy(&[520, 256], 0.9);
    let x = wavy(&[2, 37, 256], 0.2);
    let bias = wavy(&[520], 1.0);
    for ty in [
        StoredType::Q8_0,
        StoredType::Q4K,
        StoredType::BF16,
        StoredType::F8E4M3,
    ] {
        let q = PackedWeight::quantize(&w, ty).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| bits(&q.matmul_t(&x, Some(&bias)).unwrap()))
        };
        assert_eq!(run(1), run(2), "{ty}");
        assert_eq!(run(1), run(3), "{ty}");
    }
}

#[test]
fn matmul_t_rejects_mismatched_shapes() {
    let q = PackedWeight::quantize(&wavy(&[8, 64], 0.0), StoredType::Q8_0).unwrap();
    let e = q
        .matmul_t(&wavy(&[2, 32], 0.0), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[8, 64]") && e.contains("[2, 32]"), "{e}");
    assert!(q
        .matmul_t(&wavy(&[2, 64], 0.0), Some(&wavy(&[7], 0.0)))
        .is_err());
    let q3 = PackedWeight::quantize(&wavy(&[2, 4, 64], 0.0), StoredType::Q8_0).unwrap();
    assert!(q3.matmul_t(&wavy(&[2, 64], 0.0), None).is_err());
}

#[test]
fn linear_dispatches_to_packed_weights() {
    let w = wavy(&[40, 64], 0.4);
    let b = wavy(&[40], 0.8);
    let x = wavy(&[3, 5, 64], 0.1);
    let q = Arc::new(PackedWeight::quantize(&w, StoredType::Q8_0).unwrap());
    let packed = Linear::packed(q.clone(), Some(b.clone()));
    assert!(packed.weight().is_none() && packed.packed_weight().is_some());
    let got = packed.forward(&x).unwrap();
    assert_eq!(bits(&got), bits(&q.matmul_t(&x, Some(&b)).unwrap()));
    let dense = Linear::new(q.to_f32_tensor().unwrap(), Some(b));
    assert!(max_diff(&got, &dense.forward(&x).unwrap()) < 1e-4);
    // Other dtypes go through f32 and come back.
    let xh = x.to_dtype(candle_core::DType::BF16).unwrap();
    assert_eq!(
        packed.forward(&xh).unwrap().dtype(),
        candle_core::DType::BF16
    );
}

fn tmp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn gguf_round_trips_with_dims_in_pytorch_order() {
    let dir = tmp_dir();
    let path = dir.path().join("model.gguf");
    let a = PackedWeight::quantize(&wavy(&[4, 64], 0.0), StoredType::Q8_0).unwrap();
    let b = PackedWeight::quantize(&wavy(&[7], 1.0), StoredType::F32).unwrap();
    let c = PackedWeight::quantize(&wavy(&[2, 3, 256], 2.0), StoredType::Q4K).unwrap();
    let arch = GgufValue::String("flux".into());
    let list = GgufValue::Array(vec![GgufValue::U32(1), GgufValue::U32(2)]);
    write_gguf(
        &path,
        &[("general.architecture", &arch), ("test.list", &list)],
        &[("a.weight", &a), ("b.bias", &b), ("c", &c)],
    )
    .unwrap();
    // On disk, ggml order: the first tensor's info lists the row length
    // (64) first. Its info follows the header and the two metadata pairs.
    let raw = std::fs::read(&path).unwrap();
    let name_at = raw.windows(8).position(|w| w == b"a.weight").unwrap();
    let dims_at = name_at + 8 + 4;
    let ne0 = u64::from_le_bytes(raw[dims_at..dims_at + 8].try_into().unwrap());
    assert_eq!(ne0, 64);

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor_names(), vec!["a.weight", "b.bias", "c"]);
    assert_eq!(f.architecture(), Some("flux"));
    assert!(matches!(f.metadata().get("test.list"), Some(GgufValue::Array(v)) if v.len() == 2));
    for (name, w) in [("a.weight", &a), ("b.bias", &b), ("c", &c)] {
        let r = f.tensor(name).unwrap();
        assert_eq!(r.shape(), w.shape(), "{name}");
        assert_eq!(f.shape(name).unwrap(), w.shape(), "{name}");
        assert_eq!(r.stored_type(), w.stored_type(), "{name}");
        assert_eq!(r.bytes(), w.bytes(), "{name}");
    }
    // candle's own reader agrees on the tensors.
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let qt = content.tensor(&mut file, "c", &Device::Cpu).unwrap();
    assert_eq!(qt.dtype(), GgmlDType::Q4K);
    assert_eq!(
        bits(&qt.dequantize(&Device::Cpu).unwrap()),
        bits(&c.to_f32_tensor().unwrap())
    );
    // Atomic: no temporary file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn gguf_writer_refuses_fp8() {
    let dir = tmp_dir();
    let path = dir.path().join("x.gguf");
    let w = PackedWeight::quantize(&wavy(&[2, 8], 0.0), StoredType::F8E4M3).unwrap();
    let e = write_gguf(&path, &[], &[("w", &w)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.gguf") && e.contains("`w`") && e.contains("f8_e4m3"),
        "{e}"
    );
    assert!(!path.exists());
}

#[test]
fn bad_gguf_files_give_errors_naming_file_and_tensor() {
    let dir = tmp_dir();
    let good = dir.path().join("good.gguf");
    let w = PackedWeight::quantize(&wavy(&[16, 256], 0.0), StoredType::Q8_0).unwrap();
    write_gguf(&good, &[], &[("blk.0.w", &w)]).unwrap();
    let raw = std::fs::read(&good).unwrap();

    // Cut inside the tensor data: the header reads, the tensor does not.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &raw[..raw.len() - 100]).unwrap();
    let f = GgufFile::open(&cut).unwrap();
    let e = f.tensor("blk.0.w").unwrap_err().to_string();
    assert!(
        e.contains("cut.gguf") && e.contains("blk.0.w") && e.contains("truncated"),
        "{e}"
    );

    // Cut inside the header.
    for n in [0, 3, 20, 40] {
        std::fs::write(&cut, &raw[..n]).unwrap();
        let e = GgufFile::open(&cut).err().unwrap().to_string();
        assert!(e.contains("cut.gguf"), "{e}");
    }

    // An unknown type id, and a type that is not a weight format (Q8_1).
    let type_at = raw.windows(7).position(|w| w == b"blk.0.w").unwrap() + 7 + 4 + 2 * 8;
    assert_eq!(
        u32::from_le_bytes(raw[type_at..type_at + 4].try_into().unwrap()),
        8
    );
    let odd = dir.path().join("odd.gguf");
    let mut patched = raw.clone();
    patched[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&odd, &patched).unwrap();
    let e = GgufFile::open(&odd).err().unwrap().to_string();
    assert!(e.contains("odd.gguf") && e.contains("99"), "{e}");
    patched[type_at..type_at + 4].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&odd, &patched).unwrap();
    let e = GgufFile::open(&odd)
        .unwrap()
        .tensor("blk.0.w")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("odd.gguf") && e.contains("blk.0.w") && e.contains("Q8_1"),
        "{e}"
    );

    // A missing tensor, and a missing file.
    let e = GgufFile::open(&good)
        .unwrap()
        .tensor("nope")
        .unwrap_err()
        .to_string();
    assert!(e.contains("good.gguf") && e.contains("nope"), "{e}");
    assert!(GgufFile::open(dir.path().join("absent.gguf")).is_err());
}

#[test]
fn stored_type_names_parse() {
    for ty in StoredType::ALL {
        assert_eq!(ty.name().parse::<StoredType>().unwrap(), ty);
        if let Some(g) = ty.ggml() {
            assert_eq!(StoredType::from_ggml(g).unwrap(), ty);
            assert_eq!(ty.bytes_for(g.block_size()), g.type_size());
        }
    }
    assert_eq!("Q4K".parse::<StoredType>().unwrap(), StoredType::Q4K);
    assert!("q9_9".parse::<StoredType>().is_err());
}

/// The integer kernels (where the CPU has them) against the f32 tiles:
/// the activations' 8-bit rounding stays within 1% of the output scale,
/// and the result repeats bit for bit on other thread counts.
#[test]
fn integer_products_agree_with_the_f32_tiles() {
    let w = wavy(&[256, 512], 0.6);
    let bias = wavy(&[256], 0.1);
    let x = wavy(&[2, 40, 512], 0.9);
    for ty in [StoredType::Q8_0, StoredType::Q4K, StoredType::Q6K] {
        let q = PackedWeight::quantize(&w, ty).unwrap();
        let want = q.matmul_t_dequantized(&x, Some(&bias)).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| q.matmul_t(&x, Some(&bias)).unwrap())
        };
        let got = run(1);
        assert_eq!(got.dims(), want.dims());
        let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        let err = max_diff(&got, &want);
        assert!(err <= 0.01 * scale, "{ty}: {err} of {scale}");
        // Where the integer kernels run, they really ran.
        if super::integer::pays(&q, 80) {
            assert!(err > 0.0, "{ty}");
        }
        assert_eq!(bits(&got), bits(&run(2)), "{ty}");
        assert_eq!(bits(&got), bits(&run(1)), "{ty}");
    }
}
