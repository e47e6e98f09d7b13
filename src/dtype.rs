//! The dtype a run computes in, and the size of its rounding step: vocabulary that every
//! layer shares (the sweep file names it, the model loads in it, limits and reports key on it).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The dtype a run computes in. Metrics are always f32 whatever this is. The command line
/// takes the same names as the sweep file (`--dtype f32|bf16|f16`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum RunDtype {
    /// IEEE single precision.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl RunDtype {
    /// Every dtype, in report order.
    pub const ALL: [RunDtype; 3] = [RunDtype::F32, RunDtype::Bf16, RunDtype::F16];

    /// The candle dtype.
    pub fn candle(self) -> candle_core::DType {
        match self {
            RunDtype::F32 => candle_core::DType::F32,
            RunDtype::Bf16 => candle_core::DType::BF16,
            RunDtype::F16 => candle_core::DType::F16,
        }
    }

    /// Short lowercase name, as in run ids.
    pub fn as_str(self) -> &'static str {
        match self {
            RunDtype::F32 => "f32",
            RunDtype::Bf16 => "bf16",
            RunDtype::F16 => "f16",
        }
    }
}

impl fmt::Display for RunDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spacing of `dtype` values near `x` (one unit in the last place).
pub fn ulp(dtype: RunDtype, x: f32) -> f32 {
    let mantissa_bits = match dtype {
        RunDtype::F32 => 23,
        RunDtype::Bf16 => 7,
        RunDtype::F16 => 10,
    };
    let exponent = x.abs().max(f32::MIN_POSITIVE).log2().floor();
    2f32.powf(exponent - mantissa_bits as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_matches_the_formats() {
        assert_eq!(ulp(RunDtype::Bf16, 20.0), 0.125);
        assert_eq!(ulp(RunDtype::Bf16, -80.0), 0.5);
        assert_eq!(ulp(RunDtype::F16, 20.0), 1.0 / 64.0);
        assert_eq!(ulp(RunDtype::F32, 1.0), f32::EPSILON);
    }
}
