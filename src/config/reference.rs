//! `reference:` section: what every pair's two engine paths are held against besides each
//! other (docs/design.md, "Three comparisons"). Consistency (prefill vs decode) cannot see a
//! module that is wrong the same way in both paths; the reference is the model's definition
//! computed independently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::ThresholdsOverride;

/// Which computation is the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceEngine {
    /// The own decoder (or, for a candle-transformers architecture, its module) on
    /// dequantized weights in f32: the setting every other setting's prefill is measured
    /// against (the yardstick). Needs nothing installed.
    #[default]
    Own,
    /// PyTorch + transformers' modeling code on the same checkpoint, in a worker process
    /// (`scripts/peer/setup.sh` installs it into `.peer-venv/`).
    Transformers,
}

/// The precision the reference computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceDtype {
    /// float32.
    F32,
    /// float64: the reference's own rounding is then far below any f32 engine's.
    F64,
}

/// `reference:` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// `own` or `transformers`. Left out of a `reference:` section, the loader settles it
    /// ([`ReferenceConfig::settle`]): transformers where its worker is installed and every
    /// model is a checkpoint, else own. Without a `reference:` section it is own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<ReferenceEngine>,
    /// `f64` (transformers' default) or `f32` (the only one `own` computes in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<ReferenceDtype>,
    /// Per-(dtype, weights) overrides of the limits an engine path is held to against the
    /// reference (keys as in `tolerances`: f32, bf16, f16, quantized...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, ThresholdsOverride>,
    /// The engine was left out and [`ReferenceConfig::settle`] chose it.
    #[serde(skip)]
    pub settled: bool,
}

impl ReferenceConfig {
    /// The engine: the given or settled one, else the own decoder.
    pub fn engine(&self) -> ReferenceEngine {
        self.engine.unwrap_or_default()
    }

    /// Settles an engine left out: transformers (in float64 unless `dtype` says otherwise)
    /// when `transformers_installed` and every model is a checkpoint transformers can read
    /// (`all_checkpoints`), else the own decoder. A named engine stays as it is.
    pub fn settle(&mut self, transformers_installed: bool, all_checkpoints: bool) {
        if self.engine.is_none() {
            self.settled = true;
            self.engine = Some(if transformers_installed && all_checkpoints {
                ReferenceEngine::Transformers
            } else {
                ReferenceEngine::Own
            });
        }
    }

    /// The dtype the reference computes in: the given one, else the engine's default.
    pub fn dtype(&self) -> ReferenceDtype {
        self.dtype.unwrap_or(match self.engine() {
            ReferenceEngine::Own => ReferenceDtype::F32,
            ReferenceEngine::Transformers => ReferenceDtype::F64,
        })
    }

    /// The reference in words, as reports name it ("transformers f64").
    pub fn label(&self) -> String {
        let engine = match self.engine() {
            ReferenceEngine::Own => "own decoder",
            ReferenceEngine::Transformers => "transformers",
        };
        let dtype = match self.dtype() {
            ReferenceDtype::F32 => "f32",
            ReferenceDtype::F64 => "f64",
        };
        format!("{engine} {dtype}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> ReferenceConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// A section without `engine` becomes transformers in float64 only where the worker is
    /// installed and every model is a checkpoint; a named engine never changes.
    #[test]
    fn a_left_out_engine_settles_on_what_is_installed() {
        let mut r = section("{}");
        r.settle(true, true);
        assert!(r.settled);
        assert_eq!(r.engine(), ReferenceEngine::Transformers);
        assert_eq!(r.dtype(), ReferenceDtype::F64);
        for (installed, checkpoints) in [(false, true), (true, false), (false, false)] {
            let mut r = section("{}");
            r.settle(installed, checkpoints);
            assert_eq!(
                r.engine(),
                ReferenceEngine::Own,
                "{installed} {checkpoints}"
            );
            assert_eq!(r.label(), "own decoder f32");
        }
        let mut r = section("{engine: own}");
        r.settle(true, true);
        assert_eq!(r.engine(), ReferenceEngine::Own);
        assert!(!r.settled);
        let mut r = section("{engine: transformers, dtype: f32}");
        r.settle(false, false);
        assert_eq!(r.label(), "transformers f32");
        assert_eq!(ReferenceConfig::default().engine(), ReferenceEngine::Own);
    }
}
