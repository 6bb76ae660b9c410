//! The storage types a [`PackedWeight`](super::PackedWeight) can hold, and
//! their block geometry.
//!
//! Why one enum over GGUF's and safetensors' types: a model file may mix
//! them (a GGUF with F16 norms and Q4_K linears, a ComfyUI "scaled fp8"
//! safetensors with F32 biases), and the matrix product only needs to know
//! how to turn one block of bytes into floats.

use candle_core::quantized::GgmlDType;
use candle_core::Result;

/// How a weight's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredType {
    F32,
    F16,
    BF16,
    /// OCP e4m3fn: bias 7, no infinities, `0x7f`/`0xff` are NaN.
    F8E4M3,
    /// IEEE-like e5m2: bias 15, with infinities and NaNs.
    F8E5M2,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl StoredType {
    /// Every type, for tests and command-line parsing.
    pub const ALL: [StoredType; 15] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::F8E4M3,
        Self::F8E5M2,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
    ];

    /// Values per block: rows must be a multiple of it.
    pub fn block_size(self) -> usize {
        match self.ggml() {
            Some(g) => g.block_size(),
            None => 1,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F8E4M3 | Self::F8E5M2 => 1,
            _ => self.ggml().expect("all other types are ggml's").type_size(),
        }
    }

    /// Bytes that `n` values take (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }

    /// The candle/ggml type of the same layout; `None` for fp8, which GGUF
    /// does not have.
    pub fn ggml(self) -> Option<GgmlDType> {
        Some(match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::BF16 => GgmlDType::BF16,
            Self::F8E4M3 | Self::F8E5M2 => return None,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4_1 => GgmlDType::Q4_1,
            Self::Q5_0 => GgmlDType::Q5_0,
            Self::Q5_1 => GgmlDType::Q5_1,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q2K => GgmlDType::Q2K,
            Self::Q3K => GgmlDType::Q3K,
            Self::Q4K => GgmlDType::Q4K,
            Self::Q5K => GgmlDType::Q5K,
            Self::Q6K => GgmlDType::Q6K,
        })
    }

    /// From candle's ggml type; Q8_1 and Q8_K (activation-only formats)
    /// are refused.
    pub fn from_ggml(g: GgmlDType) -> Result<StoredType> {
        Ok(match g {
            GgmlDType::F32 => Self::F32,
            GgmlDType::F16 => Self::F16,
            GgmlDType::BF16 => Self::BF16,
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q2K => Self::Q2K,
            GgmlDType::Q3K => Self::Q3K,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q5K => Self::Q5K,
            GgmlDType::Q6K => Self::Q6K,
            other => candle_core::bail!("weights stored as {other:?} are not supported"),
        })
    }

    /// GGUF's type id (ggml.h's `ggml_type`); `None` for fp8.
    pub fn gguf_id(self) -> Option<u32> {
        Some(match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::BF16 => 30,
            Self::F8E4M3 | Self::F8E5M2 => return None,
        })
    }

    /// The lower-case name used on the command line and in errors
    /// (`q8_0`, `q4_k`, `f8_e4m3`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::F8E4M3 => "f8_e4m3",
            Self::F8E5M2 => "f8_e5m2",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q2K => "q2_k",
            Self::Q3K => "q3_k",
            Self::Q4K => "q4_k",
            Self::Q5K => "q5_k",
            Self::Q6K => "q6_k",
        }
    }
}

impl std::fmt::Display for StoredType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StoredType {
    type Err = candle_core::Error;

    fn from_str(s: &str) -> Result<StoredType> {
        let lower = s.to_ascii_lowercase().replace('-', "_");
        let alias = match lower.as_str() {
            "q2k" => "q2_k",
            "q3k" => "q3_k",
            "q4k" => "q4_k",
            "q5k" => "q5_k",
            "q6k" => "q6_k",
            "f8_e4m3fn" | "fp8" | "fp8_e4m3fn" => "f8_e4m3",
            "fp8_e5m2" => "f8_e5m2",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|t| t.name() == alias)
            .ok_or_else(|| candle_core::Error::Msg(format!("unknown weight type `{s}`")))
    }
}
