//! fp8 → f32 by 256-entry tables, written from the formats' definitions.
//!
//! Why tables: a code is one byte, so a lookup is exact and as fast as any
//! bit trick, and the same table serves every CPU. Encoding (only for
//! [`quantize`](super::PackedWeight::quantize)) goes through the `float8`
//! crate, which rounds to nearest-even.

/// e4m3fn (OCP / PyTorch `float8_e4m3fn`): bias 7, subnormals, no
/// infinities; only `S.1111.111` is NaN. Largest finite: ±448.
pub static E4M3: [f32; 256] = table(Format::E4M3);

/// e5m2 (PyTorch `float8_e5m2`): IEEE-like with bias 15, exponent 31 is
/// ±inf (mantissa 0) or NaN. Largest finite: ±57344.
pub static E5M2: [f32; 256] = table(Format::E5M2);

/// Largest finite e4m3fn value.
pub const E4M3_MAX: f32 = 448.0;
/// Largest finite e5m2 value.
pub const E5M2_MAX: f32 = 57344.0;

#[derive(Clone, Copy)]
enum Format {
    E4M3,
    E5M2,
}

const fn decode(code: u8, format: Format) -> f32 {
    let (man_bits, bias) = match format {
        Format::E4M3 => (3u32, 7i32),
        Format::E5M2 => (2u32, 15i32),
    };
    let exp_bits = 7 - man_bits;
    let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0f32 };
    let exp = ((code as u32) >> man_bits) & ((1 << exp_bits) - 1);
    let man = (code as u32) & ((1 << man_bits) - 1);
    let exp_max = (1 << exp_bits) - 1;
    match format {
        Format::E4M3 if exp == exp_max && man == (1 << man_bits) - 1 => return f32::NAN,
        Format::E5M2 if exp == exp_max => {
            return if man == 0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            };
        }
        _ => {}
    }
    if exp == 0 {
        // Subnormal: man · 2^(1 − bias − man_bits), exact in f32.
        let e = 1 - bias - man_bits as i32;
        return sign * man as f32 * pow2(e);
    }
    // Normal: rebias the exponent and widen the mantissa, bit for bit.
    let bits = (((exp as i32 - bias + 127) as u32) << 23) | (man << (23 - man_bits));
    sign * f32::from_bits(bits)
}

/// 2^e for the small exponents above, exact.
const fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

const fn table(format: Format) -> [f32; 256] {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = decode(i as u8, format);
        i += 1;
    }
    t
}

/// Decodes `codes` through `lut`, times `scale`.
pub fn decode_into(lut: &[f32; 256], codes: &[u8], scale: f32, out: &mut [f32]) {
    if scale == 1.0 {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = lut[c as usize];
        }
    } else {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = lut[c as usize] * scale;
        }
    }
}

/// The nearest e4m3fn code, saturating at ±448 (as ComfyUI clamps before
/// casting).
pub fn encode_e4m3(x: f32) -> u8 {
    float8::F8E4M3::from_f32(x.clamp(-E4M3_MAX, E4M3_MAX)).to_bits()
}

/// The nearest e5m2 code, saturating at ±57344.
pub fn encode_e5m2(x: f32) -> u8 {
    float8::F8E5M2::from_f32(x.clamp(-E5M2_MAX, E5M2_MAX)).to_bits()
}
