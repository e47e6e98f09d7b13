//! The summary of a sweep file with `models:` (docs/sweep-file.md, "Several models"):
//! `summary.json` and `summary.md` at the top of its results directory, one entry per model,
//! read off each model's report (or the error that kept it from running).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::exit;
use crate::report::ReportJson;
use crate::verdict::PairVerdict;

/// `summary.json`.
pub const SUMMARY_JSON: &str = "summary.json";
/// `summary.md`.
pub const SUMMARY_MD: &str = "summary.md";

/// `summary.json`: the sweep file, the worst outcome, and one entry per model.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Always "driftsweep".
    pub tool: String,
    /// Its version.
    pub tool_version: String,
    /// The sweep file's name.
    pub sweep: String,
    /// sha256 of the sweep file and the files it includes.
    pub config_sha256: String,
    /// The worst over the models, as an exit code of `driftsweep run` (src/exit.rs).
    pub exit_code: i32,
    /// The worst over the models in words: PASS, FAIL, INCOMPLETE, ERROR, or INTERRUPTED.
    pub verdict: String,
    /// A stop (Ctrl-C) ended the run before every model had run.
    pub interrupted: bool,
    /// One per selected model, in file order.
    pub models: Vec<ModelSummary>,
}

/// What became of one model's sub-sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// It ran (its verdict says how).
    Ran,
    /// It could not be inspected, planned or run: `errors` says why.
    Error,
    /// A stop came before it.
    NotRun,
}

/// One model's entry.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Its id in `models:`.
    pub id: String,
    /// Its results directory, relative to the summary's (`models/<id>`).
    pub dir: String,
    /// Its `models:` entry, as the file gives it.
    pub config: serde_json::Value,
    /// Ran, error or not run.
    pub status: ModelStatus,
    /// Its source, as its report names it (absent when it did not run).
    pub source: Option<String>,
    /// Its architecture.
    pub architecture: Option<String>,
    /// sha256 of its weights.
    pub sha256: Option<String>,
    /// Its sweep verdict: PASS, FAIL, INCOMPLETE, or ERROR / NOT_RUN.
    pub verdict: String,
    /// Why.
    pub verdict_reason: String,
    /// Its exit code as a single sweep (src/exit.rs).
    pub exit_code: i32,
    /// The worst pair verdict (FAIL_* before INCOMPLETE before SKIPPED before the passing
    /// ones), when it has pairs.
    pub worst_pair_verdict: Option<PairVerdict>,
    /// The smallest `first_divergent_pos` over its compared pairs.
    pub first_divergent_pos_min: Option<usize>,
    /// Pair counts per path × dtype × engine × weights × kv_aligned.
    pub counts: Vec<CountRow>,
    /// The error that kept it from running, or the distinct run errors of its pairs.
    pub errors: Vec<String>,
}

/// Pair verdict counts of one (path, dtype, engine, weights, kv_aligned).
#[derive(Debug, Clone, Serialize)]
pub struct CountRow {
    /// Path of the run under test.
    pub path: String,
    /// Run dtype.
    pub dtype: String,
    /// Engine.
    pub engine: String,
    /// Weight format.
    pub weights: String,
    /// kv_aligned.
    pub kv_aligned: bool,
    /// Pairs per verdict (PASS_EQUIV, FAIL_EQUIV, ...; verdicts with none left out).
    pub verdicts: BTreeMap<String, usize>,
    /// The smallest `first_divergent_pos` in the row.
    pub first_divergent_pos_min: Option<usize>,
}

/// The most run errors listed per model: the report holds them all.
const MAX_ERRORS: usize = 10;

/// How bad a pair verdict is, for `worst_pair_verdict`.
fn pair_rank(v: PairVerdict) -> u8 {
    match v {
        PairVerdict::PassEquiv | PairVerdict::ExpectedDrift => 0,
        PairVerdict::Skipped => 1,
        PairVerdict::Incomplete => 2,
        PairVerdict::FailEquiv | PairVerdict::FailDrift => 3,
    }
}

/// How bad an exit code of `driftsweep run` is: PASS, then INCOMPLETE (nothing judged),
/// FAIL, bad input, internal, interrupted.
pub fn exit_rank(code: i32) -> u8 {
    match code {
        exit::PASS => 0,
        exit::INCOMPLETE => 1,
        exit::FAIL => 2,
        exit::BAD_INPUT => 3,
        exit::INTERRUPTED => 5,
        _ => 4,
    }
}

impl ModelSummary {
    /// The entry of a model whose sub-sweep ran, from its report.
    pub fn ran(id: &str, config: serde_json::Value, r: &ReportJson) -> Self {
        let mut rows: BTreeMap<(String, String, String, String, bool), CountRow> = BTreeMap::new();
        let mut errors: Vec<String> = Vec::new();
        for p in &r.pairs {
            let s = &p.spec;
            let key = (
                s.path.to_string(),
                s.dtype.as_str().to_string(),
                s.engine.as_str().to_string(),
                s.weights.as_str().to_string(),
                s.kv_aligned,
            );
            let row = rows.entry(key.clone()).or_insert_with(|| CountRow {
                path: key.0,
                dtype: key.1,
                engine: key.2,
                weights: key.3,
                kv_aligned: key.4,
                verdicts: BTreeMap::new(),
                first_divergent_pos_min: None,
            });
            *row.verdicts
                .entry(p.verdict.as_str().to_string())
                .or_default() += 1;
            let first = p.metrics.as_ref().and_then(|m| m.first_divergent_pos);
            row.first_divergent_pos_min = min_opt(row.first_divergent_pos_min, first);
            for e in [&p.prefill.error, &p.decode.error].into_iter().flatten() {
                if p.verdict == PairVerdict::Incomplete
                    && errors.len() < MAX_ERRORS
                    && !errors.contains(e)
                {
                    errors.push(e.clone());
                }
            }
        }
        let counts: Vec<CountRow> = rows.into_values().collect();
        ModelSummary {
            id: id.to_string(),
            dir: model_dir(id),
            config,
            status: ModelStatus::Ran,
            source: Some(r.model.source.clone()),
            architecture: Some(r.model.architecture.clone()),
            sha256: Some(r.model.sha256.clone()),
            verdict: r.verdict.as_str().to_string(),
            verdict_reason: r.verdict_reason.clone(),
            exit_code: if r.interrupted {
                exit::INTERRUPTED
            } else {
                r.verdict.exit_code()
            },
            worst_pair_verdict: r
                .pairs
                .iter()
                .map(|p| p.verdict)
                .max_by_key(|v| pair_rank(*v)),
            first_divergent_pos_min: counts
                .iter()
                .fold(None, |a, c| min_opt(a, c.first_divergent_pos_min)),
            counts,
            errors,
        }
    }

    /// The entry of a model that could not be inspected, planned or run.
    pub fn error(id: &str, config: serde_json::Value, e: &crate::Error) -> Self {
        ModelSummary {
            exit_code: e.exit_code(),
            errors: vec![e.to_string()],
            ..Self::empty(id, config, ModelStatus::Error, "ERROR", e.to_string())
        }
    }

    /// The entry of a model a stop came before.
    pub fn not_run(id: &str, config: serde_json::Value) -> Self {
        ModelSummary {
            exit_code: exit::INTERRUPTED,
            ..Self::empty(
                id,
                config,
                ModelStatus::NotRun,
                "NOT_RUN",
                "the run was stopped before this model".into(),
            )
        }
    }

    fn empty(
        id: &str,
        config: serde_json::Value,
        status: ModelStatus,
        verdict: &str,
        reason: String,
    ) -> Self {
        ModelSummary {
            id: id.to_string(),
            dir: model_dir(id),
            config,
            status,
            source: None,
            architecture: None,
            sha256: None,
            verdict: verdict.to_string(),
            verdict_reason: reason,
            exit_code: exit::INCOMPLETE,
            worst_pair_verdict: None,
            first_divergent_pos_min: None,
            counts: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// A model's results directory relative to the top: `models/<id>`.
pub fn model_dir(id: &str) -> String {
    format!("models/{id}")
}

fn min_opt(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Summary {
    /// The summary of `models`: the worst exit code over them decides.
    pub fn new(sweep: &str, config_sha256: &str, models: Vec<ModelSummary>) -> Self {
        let interrupted = models.iter().any(|m| m.exit_code == exit::INTERRUPTED);
        let exit_code = models
            .iter()
            .map(|m| m.exit_code)
            .max_by_key(|c| exit_rank(*c))
            .unwrap_or(exit::INCOMPLETE);
        let verdict = match exit_code {
            exit::PASS => "PASS",
            exit::FAIL => "FAIL",
            exit::INCOMPLETE => "INCOMPLETE",
            exit::INTERRUPTED => "INTERRUPTED",
            _ => "ERROR",
        };
        Summary {
            tool: env!("CARGO_PKG_NAME").into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            sweep: sweep.to_string(),
            config_sha256: config_sha256.to_string(),
            exit_code,
            verdict: verdict.into(),
            interrupted,
            models,
        }
    }

    /// Writes `summary.json` and `summary.md` into `dir` (each whole or not at all).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| crate::Error::store(dir.join(SUMMARY_JSON), e))?;
        crate::fsutil::write_atomic(&dir.join(SUMMARY_JSON), &json)?;
        crate::fsutil::write_atomic(&dir.join(SUMMARY_MD), self.markdown().as_bytes())
    }

    /// `summary.md`: one table, grouped by model, the worst model first.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Sweep `{}`: {} models — {}\n\n",
            self.sweep,
            self.models.len(),
            self.verdict
        );
        out.push_str(
            "Each model's sweep is in its own results directory (`models/<id>/`, with its \
             report.md); the worst model comes first.\n\n",
        );
        out.push_str(
            "| model | source | architecture | verdict | path | dtype | engine | weights | kv | \
             pairs | first divergent pos |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let mut order: Vec<&ModelSummary> = self.models.iter().collect();
        // Stable: models of equal rank keep file order.
        order.sort_by_key(|m| std::cmp::Reverse(exit_rank(m.exit_code)));
        for m in order {
            let head = format!(
                "| `{}` | {} | {} | {} ",
                m.id,
                cell(m.source.as_deref().unwrap_or("—")),
                cell(m.architecture.as_deref().unwrap_or("—")),
                m.verdict
            );
            if m.counts.is_empty() {
                let why = m.errors.first().unwrap_or(&m.verdict_reason);
                out.push_str(&format!("{head}| {} | | | | | | |\n", cell(why)));
            }
            for c in &m.counts {
                let verdicts: Vec<String> =
                    c.verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
                out.push_str(&format!(
                    "{head}| {} | {} | {} | {} | {} | {} | {} |\n",
                    c.path,
                    c.dtype,
                    c.engine,
                    c.weights,
                    u8::from(c.kv_aligned),
                    verdicts.join(", "),
                    c.first_divergent_pos_min
                        .map_or("—".to_string(), |p| p.to_string())
                ));
            }
        }
        out
    }
}

/// Text that can stand in a Markdown table cell: one line, no column separators.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_exit_code_decides_and_comes_first() {
        let v = serde_json::json!({"source": "x"});
        let e = crate::Error::model("x", "no such file");
        let models = vec![
            ModelSummary {
                exit_code: exit::PASS,
                ..ModelSummary::empty("a", v.clone(), ModelStatus::Ran, "PASS", String::new())
            },
            ModelSummary::error("b", v.clone(), &e),
            ModelSummary {
                exit_code: exit::FAIL,
                ..ModelSummary::empty("c", v.clone(), ModelStatus::Ran, "FAIL", String::new())
            },
        ];
        let s = Summary::new("s", "0", models);
        assert_eq!(s.exit_code, exit::BAD_INPUT);
        assert_eq!(s.verdict, "ERROR");
        let md = s.markdown();
        let (b, c, a) = (
            md.find("| `b`").unwrap(),
            md.find("| `c`").unwrap(),
            md.find("| `a`").unwrap(),
        );
        assert!(b < c && c < a, "{md}");
        assert!(md.contains("no such file"), "{md}");
        assert!(exit_rank(exit::INTERRUPTED) > exit_rank(exit::INTERNAL));
        assert!(exit_rank(exit::FAIL) > exit_rank(exit::INCOMPLETE));
    }
}
