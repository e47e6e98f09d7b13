//! Which implementation computes a run's logits, and on which weights: two sweep axes that
//! every layer shares (the sweep file names them, the plan groups loads by them, ids, limits
//! and reports carry them).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The implementation under test.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Engine {
    /// driftsweep's own decoders (`src/model/llama/`, `src/model/gemma3/`): every capability,
    /// traces and faults.
    #[default]
    #[serde(rename = "driftsweep")]
    Driftsweep,
    /// The matching model of the candle-transformers crate, run as that crate ships it.
    #[serde(rename = "candle-transformers")]
    CandleTransformers,
    /// A model the user brings from Rust (`ModelInfo::from_custom`, `examples/own_model.rs`);
    /// the command line cannot load one.
    #[serde(rename = "custom")]
    Custom,
}

impl Engine {
    /// Every engine, in report order.
    pub const ALL: [Engine; 3] = [
        Engine::Driftsweep,
        Engine::CandleTransformers,
        Engine::Custom,
    ];

    /// Name as in sweep files, ids and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Driftsweep => "driftsweep",
            Engine::CandleTransformers => "candle-transformers",
            Engine::Custom => "custom",
        }
    }

    /// Whether this is the default (ids of default pairs carry no engine part, so that they
    /// stay what they were before engines existed).
    pub fn is_default(&self) -> bool {
        *self == Engine::Driftsweep
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a model's weights are held while it runs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// Widened once at load to the run dtype (a GGUF's blocks are dequantized to f32 first):
    /// the projections run on candle's dense matmuls.
    #[default]
    Dequantized,
    /// GGUF blocks kept as they are, multiplied by candle's quantized kernels (`QMatMul`).
    Quantized,
}

impl WeightFormat {
    /// Both, in report order.
    pub const ALL: [WeightFormat; 2] = [WeightFormat::Dequantized, WeightFormat::Quantized];

    /// Name as in sweep files, ids and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightFormat::Dequantized => "dequantized",
            WeightFormat::Quantized => "quantized",
        }
    }

    /// Whether this is the default (see [`Engine::is_default`]).
    pub fn is_default(&self) -> bool {
        *self == WeightFormat::Dequantized
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_yaml() {
        for e in Engine::ALL {
            let y = serde_yaml::to_string(&e).unwrap();
            assert_eq!(y.trim(), e.as_str());
            assert_eq!(serde_yaml::from_str::<Engine>(&y).unwrap(), e);
        }
        for w in WeightFormat::ALL {
            let y = serde_yaml::to_string(&w).unwrap();
            assert_eq!(y.trim(), w.as_str());
        }
        assert!(serde_yaml::from_str::<Engine>("candle").is_err());
    }
}
