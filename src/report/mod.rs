//! Reports: `report.json` (the contract of docs/design.md, "Results on disk") and `report.md` (through the
//! Tera template in `templates/`), both built from a results directory alone, so that
//! `driftsweep report DIR` re-renders them without running anything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::compare::{Metrics, percentile};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::{Error, Result};
use crate::limits::{DtypeLimits, Thresholds};
use crate::path::RunPath;
use crate::plan::{LoadKey, Mode, PairSpec};
use crate::store::{Manifest, ModelLoad, RunRecord, RunStatus, Store, ToolInfo};
use crate::verdict::{self, GlobalVerdict, PairVerdict, fmt_num};

pub mod trace;
// issue 19: report.html, report.junit.xml, llama.cpp-style KL statistics.
pub mod html;
pub mod junit;
pub mod kl;
pub mod paths;
mod plots;

#[cfg(test)]
mod tests;

/// The Markdown report template, compiled in so the binary works from any directory.
pub const REPORT_TEMPLATE: &str = include_str!("../../templates/report.md.tera");

/// What rendering produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The results directory.
    pub dir: PathBuf,
    /// The report's content.
    pub report: ReportJson,
}

impl Rendered {
    /// The global verdict.
    pub fn verdict(&self) -> GlobalVerdict {
        self.report.verdict
    }
}

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReportJson {
    /// Tool identity.
    pub tool: ToolInfo,
    /// Sweep identity.
    pub sweep: SweepIdentity,
    /// Device asked for.
    pub device: String,
    /// Device used.
    pub device_name: String,
    /// Model identity.
    pub model: crate::store::ModelIdentity,
    /// Global verdict.
    pub verdict: GlobalVerdict,
    /// Its reason.
    pub verdict_reason: String,
    /// Counts of runs, pairs and verdicts.
    pub counts: Counts,
    /// How many times weights were loaded.
    pub model_loads: usize,
    /// How many (model, dtype, device) groups the sweep needs: equal to `model_loads` when
    /// every group was loaded exactly once.
    pub model_load_groups: usize,
    /// Each load, with its time.
    pub model_load_details: Vec<ModelLoad>,
    /// Whole sweep wall time, seconds (null while unfinished).
    pub wall_s: Option<f64>,
    /// Start time.
    pub started_at: String,
    /// End time.
    pub finished_at: Option<String>,
    /// Continuation mode.
    pub continuation: String,
    /// Thresholds per dtype.
    pub limits: BTreeMap<String, DtypeLimits>,
    /// Observations derived from the data.
    pub observations: Vec<String>,
    /// Per pair.
    pub pairs: Vec<PairJson>,
    /// kv_aligned=false drift per (span, dtype).
    pub drift_characterization: Vec<DriftGroup>,
    /// Timings per (span, dtype, mode).
    pub performance: Vec<PerfGroup>,
    /// The fault injected into decode runs, when one was (the numbers are then not the
    /// model's own drift).
    pub inject: Option<crate::config::InjectConfig>,
    /// The trace result, when the sweep traced.
    pub trace: Option<trace::TraceSummary>,
    /// The last session was stopped by a signal before its work was done.
    pub interrupted: bool,
    /// Every invocation that worked on the results directory (first run, then resumes).
    pub sessions: Vec<crate::store::Session>,
    /// The shard these results are (`run --shard K/N`): index, count and estimated costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::store::shards::ShardSummary>,
    /// The shards these results were merged from, and what was missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<crate::store::shards::MergeInfo>,
    /// llama.cpp-style KL statistics pooled over each dtype's compared pairs.
    pub kl_statistics: Vec<kl::KlGroup>,
    /// The serving paths (chunked, batched), when the sweep took any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving_paths: Option<paths::ServingPaths>,
}

/// `sweep` in report.json.
#[derive(Debug, Clone, Serialize)]
pub struct SweepIdentity {
    /// Name.
    pub name: String,
    /// sha256 of the sweep file.
    pub config_sha256: String,
}

/// `counts` in report.json.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Runs planned (2 × pairs).
    pub runs: usize,
    /// Runs that finished.
    pub runs_ok: usize,
    /// Runs that failed.
    pub runs_failed: usize,
    /// Runs skipped.
    pub runs_skipped: usize,
    /// Finished runs that reused another run's computation (shared prefills).
    pub runs_reused: usize,
    /// Pairs planned.
    pub pairs: usize,
    /// PASS_EQUIV pairs.
    pub pass_equiv: usize,
    /// FAIL_EQUIV pairs.
    pub fail_equiv: usize,
    /// EXPECTED_DRIFT pairs.
    pub expected_drift: usize,
    /// FAIL_DRIFT pairs.
    pub fail_drift: usize,
    /// INCOMPLETE pairs (including pairs with no record yet).
    pub incomplete: usize,
    /// SKIPPED pairs.
    pub skipped: usize,
}

/// One run inside a pair.
#[derive(Debug, Clone, Serialize)]
pub struct RunJson {
    /// ok, failed, skipped or missing.
    pub status: String,
    /// Wall time, seconds.
    pub wall_s: Option<f64>,
    /// Kept logits file.
    pub logits_file: Option<String>,
    /// Error text.
    pub error: Option<String>,
    /// Tokens fed.
    pub tokens_fed: usize,
    /// Absolute position of the first span position (the prompt length).
    pub span_start: usize,
    /// f32 span logits size, bytes.
    pub logits_bytes: u64,
    /// The run whose computation this one reused (a prefill shared by kv_aligned 0 and 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

/// One pair in report.json.
#[derive(Debug, Clone, Serialize)]
pub struct PairJson {
    /// The pair.
    #[serde(flatten)]
    pub spec: PairSpec,
    /// Verdict.
    pub verdict: PairVerdict,
    /// Reason.
    pub reason: String,
    /// Metrics (null unless compared).
    pub metrics: Option<Metrics>,
    /// The thresholds applied.
    pub limits: Option<Thresholds>,
    /// Prefill run.
    pub prefill: RunJson,
    /// Decode run.
    pub decode: RunJson,
    /// llama.cpp-style KL statistics of this pair (null unless compared).
    pub kl_stats: Option<crate::compare::kl_stats::KlStats>,
    /// This pair's prefill against the own decoder's dequantized f32 prefill of the same
    /// tokens (null for that setting itself, or when there was none).
    pub yardstick: Option<crate::store::Yardstick>,
}

/// kv_aligned=false drift of one (engine, weights, span, dtype).
#[derive(Debug, Clone, Serialize)]
pub struct DriftGroup {
    /// Implementation.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Span.
    pub span: usize,
    /// Dtype.
    pub dtype: RunDtype,
    /// Largest max_abs_diff.
    pub max_abs_max: f32,
    /// Mean max_abs_diff.
    pub max_abs_mean: f32,
    /// Mean p99_abs_diff.
    pub p99_mean: f32,
    /// Smallest top-1 agreement.
    pub top1_min: f32,
    /// Mean top-1 agreement.
    pub top1_mean: f32,
    /// Mean of kl_mean.
    pub kl_mean_mean: f32,
    /// Largest kl_max.
    pub kl_max_max: f32,
    /// Pairs with bit-identical logits.
    pub identical: usize,
    /// Same for the kv_aligned=true pairs of this (span, dtype), for contrast.
    pub aligned_max_abs_mean: Option<f32>,
    /// Pairs compared.
    pub samples: usize,
}

/// Timing of one (engine, weights, span, dtype, mode).
#[derive(Debug, Clone, Serialize)]
pub struct PerfGroup {
    /// Implementation.
    pub engine: Engine,
    /// Weight format.
    pub weights: WeightFormat,
    /// Span.
    pub span: usize,
    /// Dtype.
    pub dtype: RunDtype,
    /// Mode.
    pub mode: Mode,
    /// The path of the run under test (decode unless the sweep has a `path` axis; prefill
    /// runs are the same computation whatever their pair's path).
    #[serde(skip_serializing_if = "RunPath::is_default")]
    pub path: RunPath,
    /// Mean wall time, seconds.
    pub wall_mean_s: f64,
    /// 95th percentile wall time (nearest rank), seconds.
    pub wall_p95_s: f64,
    /// Mean tokens fed per second.
    pub tokens_per_s: f64,
    /// Mean f32 logits bytes.
    pub logits_bytes_mean: u64,
    /// Runs measured.
    pub samples: usize,
}

fn run_json(r: Option<&RunRecord>) -> RunJson {
    match r {
        None => RunJson {
            status: "missing".into(),
            wall_s: None,
            logits_file: None,
            error: None,
            tokens_fed: 0,
            span_start: 0,
            logits_bytes: 0,
            reused_from: None,
        },
        Some(r) => RunJson {
            status: match r.status {
                RunStatus::Ok => "ok",
                RunStatus::Failed => "failed",
                RunStatus::Skipped => "skipped",
            }
            .into(),
            wall_s: r.wall_s,
            logits_file: r.logits_file.clone(),
            error: r.error.clone(),
            tokens_fed: r.tokens_fed,
            span_start: r.span_start,
            logits_bytes: r.logits_bytes,
            reused_from: r.reused_from.clone(),
        },
    }
}

/// Builds report.json's content from a results directory.
pub fn build(store: &Store) -> Result<ReportJson> {
    let m: Manifest = store.manifest()?;
    let interrupted = m.interrupted();
    let missing_reason = if interrupted {
        "not finished: the sweep was interrupted before this pair was compared; run the same \
         command again to resume"
    } else {
        "not finished: the sweep stopped before this pair was compared"
    };
    let mut pairs = Vec::with_capacity(m.pairs.len());
    let mut runs: Vec<RunRecord> = Vec::new();
    let mut digests = paths::Digests::new();
    for spec in &m.pairs {
        let pre = store.run(spec, Mode::Prefill)?;
        let dec = store.run(spec, Mode::Decode)?;
        let rec = store.pair(spec)?;
        let missing_runs: Vec<String> = [(Mode::Prefill, &pre), (Mode::Decode, &dec)]
            .into_iter()
            .filter(|(_, r)| r.is_none())
            .map(|(m, _)| format!("runs/{}.json", spec.run_id(m)))
            .collect();
        let (verdict, reason, metrics, limits, yardstick) = match rec {
            // A verdict whose evidence is gone is not reported as one: the pair is
            // INCOMPLETE until a run of the sweep recomputes it.
            Some(r) if !missing_runs.is_empty() && r.verdict != PairVerdict::Incomplete => (
                PairVerdict::Incomplete,
                format!(
                    "its run record {} is missing (the pair record said {}); run the sweep \
                     again to recompute it",
                    missing_runs.join(" and "),
                    r.verdict.as_str()
                ),
                None,
                Some(r.limits),
                None,
            ),
            Some(r) => (r.verdict, r.reason, r.metrics, Some(r.limits), r.yardstick),
            None => (
                PairVerdict::Incomplete,
                missing_reason.to_string(),
                None,
                None,
                None,
            ),
        };
        pairs.push(PairJson {
            spec: spec.clone(),
            verdict,
            reason,
            kl_stats: metrics
                .as_ref()
                .filter(|_| verdict.is_compared())
                .and_then(crate::compare::kl_stats::KlStats::of),
            metrics,
            limits,
            yardstick,
            prefill: run_json(pre.as_ref()),
            decode: run_json(dec.as_ref()),
        });
        if let Some(d) = &dec {
            digests.insert(spec.id.clone(), d.row_digests.clone());
        }
        runs.extend(pre);
        runs.extend(dec);
    }
    // Tables read best in numeric order, not in the order the worker ran the groups.
    pairs.sort_by(|a, b| {
        let k = |p: &PairJson| {
            (
                p.spec.engine,
                p.spec.weights,
                p.spec.prompt.clone(),
                p.spec.span,
                p.spec.dtype,
                p.spec.kv_aligned,
                p.spec.path,
                p.spec.seed,
            )
        };
        k(a).cmp(&k(b))
    });

    let verdicts: Vec<PairVerdict> = pairs.iter().map(|p| p.verdict).collect();
    let (verdict, verdict_reason) = verdict::judge_sweep(&verdicts);
    let count = |v: PairVerdict| verdicts.iter().filter(|x| **x == v).count();
    let count_runs = |s: RunStatus| runs.iter().filter(|r| r.status == s).count();
    let counts = Counts {
        runs: 2 * m.pairs.len(),
        runs_ok: count_runs(RunStatus::Ok),
        runs_failed: count_runs(RunStatus::Failed),
        runs_skipped: count_runs(RunStatus::Skipped),
        runs_reused: runs.iter().filter(|r| r.reused_from.is_some()).count(),
        pairs: m.pairs.len(),
        pass_equiv: count(PairVerdict::PassEquiv),
        fail_equiv: count(PairVerdict::FailEquiv),
        expected_drift: count(PairVerdict::ExpectedDrift),
        fail_drift: count(PairVerdict::FailDrift),
        incomplete: count(PairVerdict::Incomplete),
        skipped: count(PairVerdict::Skipped),
    };
    let limits = m.resolved.limits.clone();
    let drift_characterization = drift_groups(&pairs);
    let performance = perf_groups(&m.pairs, &runs);
    let serving_paths = paths::analyse(&pairs, &digests);
    let path_lines = serving_paths
        .as_ref()
        .map(paths::observations)
        .unwrap_or_default();
    let observations = observations(&pairs, &counts, path_lines);
    let kl_statistics = kl::groups(&pairs);
    Ok(ReportJson {
        tool: m.tool,
        sweep: SweepIdentity {
            name: m.sweep_name,
            config_sha256: m.config_sha256,
        },
        device: m.device,
        device_name: m.device_name,
        model: m.model,
        verdict,
        verdict_reason,
        counts,
        model_loads: m.model_loads.len(),
        model_load_groups: m.load_groups.len(),
        model_load_details: m.model_loads,
        wall_s: m.wall_s,
        started_at: m.started_at,
        finished_at: m.finished_at,
        continuation: m.continuation,
        limits,
        observations,
        pairs,
        drift_characterization,
        performance,
        inject: m.resolved.config.inject.clone(),
        trace: None,
        interrupted,
        sessions: m.sessions,
        shard: m.shard.as_ref().map(crate::store::shards::ShardSummary::of),
        merged: m.merged,
        kl_statistics,
        serving_paths,
    })
}

fn mean(xs: impl IntoIterator<Item = f32>) -> Option<f32> {
    let v: Vec<f32> = xs.into_iter().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
}

fn compared(pairs: &[PairJson]) -> impl Iterator<Item = (&PairJson, &Metrics)> {
    pairs
        .iter()
        .filter(|p| p.verdict.is_compared())
        .filter_map(|p| p.metrics.as_ref().map(|m| (p, m)))
}

type GroupKey = (Engine, WeightFormat, usize, RunDtype);

fn drift_groups(pairs: &[PairJson]) -> Vec<DriftGroup> {
    let mut groups: BTreeMap<GroupKey, Vec<&Metrics>> = BTreeMap::new();
    let mut aligned: BTreeMap<GroupKey, Vec<f32>> = BTreeMap::new();
    // The decode path's drift; the serving paths have their own sections.
    for (p, m) in compared(pairs).filter(|(p, _)| p.spec.path.is_default()) {
        let key = (p.spec.engine, p.spec.weights, p.spec.span, p.spec.dtype);
        if p.spec.kv_aligned {
            aligned.entry(key).or_default().push(m.max_abs_diff);
        } else {
            groups.entry(key).or_default().push(m);
        }
    }
    groups
        .into_iter()
        .map(|((engine, weights, span, dtype), ms)| DriftGroup {
            engine,
            weights,
            span,
            dtype,
            max_abs_max: ms.iter().map(|m| m.max_abs_diff).fold(0.0, f32::max),
            max_abs_mean: mean(ms.iter().map(|m| m.max_abs_diff)).unwrap_or(0.0),
            p99_mean: mean(ms.iter().map(|m| m.p99_abs_diff)).unwrap_or(0.0),
            top1_min: ms.iter().map(|m| m.top1_agreement).fold(1.0, f32::min),
            top1_mean: mean(ms.iter().map(|m| m.top1_agreement)).unwrap_or(0.0),
            kl_mean_mean: mean(ms.iter().map(|m| m.kl_mean)).unwrap_or(0.0),
            kl_max_max: ms.iter().map(|m| m.kl_max).fold(0.0, f32::max),
            identical: ms.iter().filter(|m| m.max_abs_diff == 0.0).count(),
            aligned_max_abs_mean: aligned
                .get(&(engine, weights, span, dtype))
                .and_then(|v| mean(v.iter().copied())),
            samples: ms.len(),
        })
        .collect()
}

fn perf_groups(specs: &[PairSpec], runs: &[RunRecord]) -> Vec<PerfGroup> {
    let by_pair: BTreeMap<&str, &PairSpec> = specs.iter().map(|p| (p.id.as_str(), p)).collect();
    type Key = (Engine, WeightFormat, usize, RunDtype, Mode, RunPath);
    let mut groups: BTreeMap<Key, Vec<&RunRecord>> = BTreeMap::new();
    // Reused runs were not computed: counting them would count one computation twice.
    for r in runs
        .iter()
        .filter(|r| r.status == RunStatus::Ok && r.wall_s.is_some() && r.reused_from.is_none())
    {
        if let Some(p) = by_pair.get(r.pair_id.as_str()) {
            let path = match r.mode {
                Mode::Prefill => RunPath::Decode,
                Mode::Decode => p.path,
            };
            let key = (p.engine, p.weights, p.span, p.dtype, r.mode, path);
            groups.entry(key).or_default().push(r);
        }
    }
    groups
        .into_iter()
        .map(|((engine, weights, span, dtype, mode, path), rs)| {
            let walls: Vec<f64> = rs.iter().filter_map(|r| r.wall_s).collect();
            let mut w32: Vec<f32> = walls.iter().map(|&w| w as f32).collect();
            let n = rs.len();
            PerfGroup {
                engine,
                weights,
                span,
                dtype,
                mode,
                path,
                wall_mean_s: walls.iter().sum::<f64>() / n as f64,
                wall_p95_s: percentile(&mut w32, 0.95) as f64,
                tokens_per_s: rs
                    .iter()
                    .map(|r| r.tokens_fed as f64 / r.wall_s.unwrap_or(f64::NAN).max(1e-9))
                    .sum::<f64>()
                    / n as f64,
                logits_bytes_mean: rs.iter().map(|r| r.logits_bytes).sum::<u64>() / n as u64,
                samples: n,
            }
        })
        .collect()
}

/// Plain statements read off the data; nothing here is assumed. `path_lines` (the serving
/// paths' statements) go before the closing lines on non-finite logits and failures.
fn observations(pairs: &[PairJson], counts: &Counts, path_lines: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let done = compared(pairs).count();
    if done == 0 {
        out.push(format!(
            "No pair was compared ({} incomplete, {} skipped): there is nothing to conclude about drift.",
            counts.incomplete, counts.skipped
        ));
        return out;
    }
    // kv_aligned's statements are about the decode path; the serving paths have their own.
    for kv in [false, true] {
        let ms: Vec<&Metrics> = compared(pairs)
            .filter(|(p, _)| p.spec.kv_aligned == kv && p.spec.path.is_default())
            .map(|(_, m)| m)
            .collect();
        if ms.is_empty() {
            continue;
        }
        let same = ms.iter().filter(|m| m.max_abs_diff == 0.0).count();
        out.push(format!(
            "kv_aligned={} produced bit-identical logits (max_abs_diff = 0) in {same}/{} compared pairs.",
            u8::from(kv),
            ms.len()
        ));
    }
    let settings: Vec<LoadKey> = {
        let mut d: Vec<LoadKey> = compared(pairs).map(|(p, _)| p.spec.load_key()).collect();
        d.sort();
        d.dedup();
        d
    };
    for key in settings {
        let dtype = key.dtype;
        // The dtype alone names the own decoder on dequantized weights, as before engines.
        let label = setting_label(key);
        let ms: Vec<(&PairJson, &Metrics)> = compared(pairs)
            .filter(|(p, _)| p.spec.load_key() == key)
            .collect();
        let lo = ms
            .iter()
            .map(|(_, m)| m.max_abs_diff)
            .fold(f32::INFINITY, f32::min);
        let hi = ms.iter().map(|(_, m)| m.max_abs_diff).fold(0.0, f32::max);
        let kl_hi = ms.iter().map(|(_, m)| m.kl_mean).fold(0.0, f32::max);
        let top1_lo = ms.iter().map(|(_, m)| m.top1_agreement).fold(1.0, f32::min);
        let mut line = format!(
            "{label}: max_abs_diff {} – {}, mean KL up to {}, top-1 agreement ≥ {:.4} over {} pairs",
            fmt_num(lo),
            fmt_num(hi),
            fmt_num(kl_hi),
            top1_lo,
            ms.len()
        );
        let flips: Vec<(f32, f32)> = ms
            .iter()
            .flat_map(|(p, m)| {
                let limits = p.limits;
                m.top1_flips.iter().map(move |f| {
                    let tie = limits.map_or(0.0, |l| l.tie_margin_at(dtype, f.prefill_top));
                    (f.prefill_margin, tie)
                })
            })
            .collect();
        if flips.is_empty() {
            line.push_str("; no top-1 flips.");
        } else {
            let wide = flips.iter().filter(|(m, t)| m > t).count();
            let widest = flips.iter().map(|(m, _)| *m).fold(0.0, f32::max);
            line.push_str(&format!(
                "; {} top-1 flips, {} on near-ties and {wide} on wide margins (largest prefill margin {}).",
                flips.len(),
                flips.len() - wide,
                fmt_num(widest)
            ));
        }
        out.push(line);
        // kv_aligned=false versus true, and the trend over span.
        let mean_of = |kv: bool| {
            mean(
                ms.iter()
                    .filter(|(p, _)| p.spec.kv_aligned == kv && p.spec.path.is_default())
                    .map(|(_, m)| m.max_abs_diff),
            )
        };
        if let (Some(f), Some(t)) = (mean_of(false), mean_of(true)) {
            let cmp = if t > 0.0 {
                format!("{:.2}×", f / t)
            } else if f > 0.0 {
                "more than".into()
            } else {
                "equal to".into()
            };
            out.push(format!(
                "{label}: mean max_abs_diff with kv_aligned=0 is {} against {} with kv_aligned=1 ({cmp}).",
                fmt_num(f),
                fmt_num(t)
            ));
        }
        let mut spans: Vec<usize> = ms.iter().map(|(p, _)| p.spec.span).collect();
        spans.sort();
        spans.dedup();
        if spans.len() > 1 {
            let parts: Vec<String> = spans
                .iter()
                .map(|s| {
                    let v = mean(
                        ms.iter()
                            .filter(|(p, _)| p.spec.span == *s)
                            .map(|(_, m)| m.max_abs_diff),
                    );
                    format!("span {s}: {}", fmt_num(v.unwrap_or(0.0)))
                })
                .collect();
            out.push(format!(
                "{label}: mean max_abs_diff by span — {}.",
                parts.join(", ")
            ));
        }
    }
    // Engines that return only the last row prefill once per prefix: say what that cost.
    let mut per_prefix: BTreeMap<Engine, (usize, usize, usize)> = BTreeMap::new();
    for p in pairs.iter().filter(|p| p.prefill.status == "ok") {
        let one_pass = p.prefill.span_start + p.spec.span;
        if p.prefill.tokens_fed > one_pass && p.prefill.reused_from.is_none() {
            let e = per_prefix.entry(p.spec.engine).or_default();
            e.0 += 1;
            e.1 += p.prefill.tokens_fed;
            e.2 += one_pass;
        }
    }
    for (engine, (runs, fed, one)) in per_prefix {
        out.push(format!(
            "{engine} returns only the last row's logits, so its {runs} prefill run(s) made one forward per prefix: {fed} forward tokens against {one} for one pass each ({:.1}×).",
            fed as f64 / one as f64
        ));
    }
    out.extend(path_lines);
    let non_finite: usize = compared(pairs).filter(|(_, m)| m.non_finite > 0).count();
    out.push(if non_finite == 0 {
        "No run produced non-finite logits.".into()
    } else {
        format!("{non_finite} pairs had non-finite logits (NaN or ±inf); they fail.")
    });
    let failed = counts.fail_equiv + counts.fail_drift;
    if failed > 0 {
        out.push(format!(
            "{failed} pairs failed; their reasons are listed under Failures."
        ));
    }
    out
}

/// A setting in words: the dtype alone for the own decoder on dequantized weights, else the
/// dtype with the engine and the weights that differ from those.
pub fn setting_label(key: LoadKey) -> String {
    let mut label = key.dtype.to_string();
    if !key.engine.is_default() {
        label = format!("{label} {}", key.engine);
    }
    if !key.weights.is_default() {
        label = format!("{label} {}", key.weights);
    }
    label
}

/// Markdown-ready rows, numbers formatted once here so the template only lays them out.
#[derive(Serialize)]
struct View<'a> {
    r: &'a ReportJson,
    date: String,
    wall: String,
    axes: String,
    inject: Option<String>,
    loads: Vec<BTreeMap<&'static str, String>>,
    rows: Vec<BTreeMap<&'static str, String>>,
    drift: Vec<BTreeMap<&'static str, String>>,
    perf: Vec<BTreeMap<&'static str, String>>,
    limits: Vec<BTreeMap<&'static str, String>>,
    problems: Vec<BTreeMap<&'static str, String>>,
    /// Whether any pair took a path other than decode (the tables then show the path).
    has_paths: bool,
    /// One section per serving path the sweep took.
    path_sections: Vec<PathSection>,
}

/// One serving path's section of the report (Markdown and HTML alike).
#[derive(Serialize)]
pub(crate) struct PathSection {
    title: &'static str,
    note: &'static str,
    rows: Vec<BTreeMap<&'static str, String>>,
    comparisons: Vec<BTreeMap<&'static str, String>>,
}

/// One section per serving path the sweep took, in report order.
pub(crate) fn path_sections(r: &ReportJson) -> Vec<PathSection> {
    r.serving_paths
        .iter()
        .flat_map(|sp| {
            paths::SECTIONS
                .iter()
                .filter_map(move |(kind, title, note)| {
                    let rows = paths::rows(sp, kind);
                    (!rows.is_empty()).then(|| PathSection {
                        title,
                        note,
                        rows,
                        comparisons: paths::comparison_rows(sp, kind),
                    })
                })
        })
        .collect()
}

fn opt<T: ToString>(x: Option<T>) -> String {
    x.map_or_else(|| "—".into(), |v| v.to_string())
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn bytes(n: u64) -> String {
    // Thousands separators, as in the seed report.
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn view(r: &ReportJson) -> View<'_> {
    let row = |pairs: &[(&'static str, String)]| pairs.iter().cloned().collect::<BTreeMap<_, _>>();
    let rows = r
        .pairs
        .iter()
        .map(|p| {
            let m = p.metrics.as_ref();
            let f = |g: fn(&Metrics) -> f32| m.map_or("—".into(), |m| fmt_num(g(m)));
            row(&[
                ("engine", p.spec.engine.to_string()),
                ("weights", p.spec.weights.to_string()),
                ("prompt", p.spec.prompt.clone()),
                ("span", p.spec.span.to_string()),
                ("dtype", p.spec.dtype.to_string()),
                ("kv", u8::from(p.spec.kv_aligned).to_string()),
                ("path", p.spec.path.to_string()),
                ("seed", p.spec.seed.to_string()),
                ("max_abs", f(|m| m.max_abs_diff)),
                ("p99_abs", f(|m| m.p99_abs_diff)),
                ("mean_abs", f(|m| m.mean_abs_diff)),
                (
                    "top1",
                    m.map_or("—".into(), |m| format!("{:.4}", m.top1_agreement)),
                ),
                ("kl_mean", f(|m| m.kl_mean)),
                ("kl_max", f(|m| m.kl_max)),
                ("first_div", opt(m.and_then(|m| m.first_divergent_pos))),
                (
                    "first_flip",
                    m.and_then(|m| m.first_top1_flip).map_or("—".into(), |f| {
                        format!("{} (margin {})", f.pos, fmt_num(f.prefill_margin))
                    }),
                ),
                (
                    "yardstick",
                    p.yardstick.map_or("—".into(), |y| {
                        format!("{} / {}", fmt_num(y.max_abs_diff), fmt_num(y.kl_mean))
                    }),
                ),
                ("verdict", p.verdict.to_string()),
            ])
        })
        .collect();
    let drift = r
        .drift_characterization
        .iter()
        .map(|g| {
            row(&[
                ("engine", g.engine.to_string()),
                ("weights", g.weights.to_string()),
                ("span", g.span.to_string()),
                ("dtype", g.dtype.to_string()),
                (
                    "max_abs",
                    format!("{} / {}", fmt_num(g.max_abs_max), fmt_num(g.max_abs_mean)),
                ),
                ("p99", fmt_num(g.p99_mean)),
                ("top1", format!("{:.4} / {:.4}", g.top1_min, g.top1_mean)),
                (
                    "kl",
                    format!("{} / {}", fmt_num(g.kl_mean_mean), fmt_num(g.kl_max_max)),
                ),
                ("identical", format!("{}/{}", g.identical, g.samples)),
                (
                    "aligned",
                    g.aligned_max_abs_mean.map_or("—".into(), fmt_num),
                ),
                ("samples", g.samples.to_string()),
            ])
        })
        .collect();
    let perf = r
        .performance
        .iter()
        .map(|g| {
            row(&[
                ("engine", g.engine.to_string()),
                ("weights", g.weights.to_string()),
                ("span", g.span.to_string()),
                ("dtype", g.dtype.to_string()),
                (
                    "mode",
                    match g.mode {
                        Mode::Prefill => "prefill".into(),
                        Mode::Decode => g.path.to_string(),
                    },
                ),
                (
                    "wall",
                    format!("{} / {}", secs(g.wall_mean_s), secs(g.wall_p95_s)),
                ),
                ("tps", format!("{:.0}", g.tokens_per_s)),
                ("bytes", bytes(g.logits_bytes_mean)),
                ("samples", g.samples.to_string()),
            ])
        })
        .collect();
    let loads = r
        .model_load_details
        .iter()
        .map(|l| {
            row(&[
                ("engine", l.engine.to_string()),
                ("implementation", l.implementation.clone()),
                ("weights", l.weights.to_string()),
                ("dtype", l.dtype.to_string()),
                ("device", l.device.clone()),
                ("load", secs(l.load_s)),
                ("purpose", l.purpose.clone()),
            ])
        })
        .collect();
    let limits = r
        .limits
        .iter()
        .flat_map(|(d, l)| {
            [
                ("tolerance (kv_aligned=1)", l.tolerance),
                ("drift budget (kv_aligned=0)", l.drift_budget),
            ]
            .map(|(what, t)| {
                row(&[
                    ("dtype", d.clone()),
                    ("what", what.to_string()),
                    ("max_abs", fmt_num(t.max_abs_diff)),
                    ("p99", fmt_num(t.p99_abs_diff)),
                    ("mean_abs", fmt_num(t.mean_abs_diff)),
                    ("kl_mean", fmt_num(t.kl_mean)),
                    ("kl_p99", fmt_num(t.kl_p99)),
                    ("kl_max", fmt_num(t.kl_max)),
                    ("top1", format!("{:.4}", t.top1_agreement_min)),
                    (
                        "tie",
                        format!("max({}, {} ulp)", fmt_num(t.tie_margin), t.tie_ulps),
                    ),
                ])
            })
        })
        .collect();
    let problems = r
        .pairs
        .iter()
        .filter(|p| !p.verdict.is_pass())
        .map(|p| {
            row(&[
                ("id", p.spec.id.clone()),
                ("verdict", p.verdict.to_string()),
                ("reason", p.reason.clone()),
            ])
        })
        .collect();
    let path_sections = path_sections(r);
    View {
        has_paths: r.pairs.iter().any(|p| !p.spec.path.is_default()),
        path_sections,
        axes: axes(r),
        inject: r.inject.as_ref().map(describe_injection),
        r,
        date: r
            .finished_at
            .clone()
            .unwrap_or_else(|| format!("{} (unfinished)", r.started_at)),
        wall: r.wall_s.map_or("unfinished".into(), secs),
        loads,
        rows,
        drift,
        perf,
        limits,
        problems,
    }
}

/// "spans 32/128 × dtypes bf16/f16 × ..." from the pairs themselves.
fn axes(r: &ReportJson) -> String {
    fn uniq<T: Ord + ToString>(xs: impl Iterator<Item = T>) -> String {
        let mut v: Vec<T> = xs.collect();
        v.sort();
        v.dedup();
        v.iter().map(T::to_string).collect::<Vec<_>>().join("/")
    }
    let p = &r.pairs;
    format!(
        "engines {} × weights {} × prompts {} × spans {} × dtypes {} × kv_aligned {} × seeds {} ({} pairs after exclusions)",
        uniq(p.iter().map(|x| x.spec.engine)),
        uniq(p.iter().map(|x| x.spec.weights)),
        uniq(p.iter().map(|x| x.spec.prompt.clone())),
        uniq(p.iter().map(|x| x.spec.span)),
        uniq(p.iter().map(|x| x.spec.dtype)),
        uniq(p.iter().map(|x| u8::from(x.spec.kv_aligned))),
        uniq(p.iter().map(|x| x.spec.seed)),
        p.len()
    )
}

/// The injected fault in words, from the resolved config's `inject` section.
pub fn describe_injection(i: &crate::config::InjectConfig) -> String {
    let mut parts = Vec::new();
    if let (Some(t), Some(e)) = (i.tensor, i.epsilon) {
        match i.layer {
            Some(l) => parts.push(format!("`{t}` at layer {l} scaled by (1 + {e})")),
            None => parts.push(format!("`{t}` scaled by (1 + {e})")),
        }
    }
    if let Some(k) = i.position_shift.filter(|k| *k > 0) {
        parts.push(format!("decode positions shifted by {k}"));
    }
    if let Some(k) = i.window_shift.filter(|k| *k > 0) {
        parts.push(format!("decode's sliding window widened by {k} key(s)"));
    }
    if let Some(k) = i.chunk_position_shift.filter(|k| *k > 0) {
        parts.push(format!(
            "chunks after the first believe they start {k} position(s) further along"
        ));
    }
    if i.cross_row_cache {
        parts.push("in batched forwards, row 0 reads row 1's newest cached K/V".into());
    }
    parts.join("; ")
}

/// Renders the Markdown report from report.json's content with the compiled-in template.
pub fn render_markdown(r: &ReportJson) -> Result<String> {
    render_template("report.md.tera", REPORT_TEMPLATE, &view(r))
}

/// Where a results directory keeps a sweep's custom templates, so that `driftsweep report`
/// re-renders with them.
pub const CUSTOM_REPORT_TEMPLATE: &str = crate::store::owner::SAVED_TEMPLATES[0];
/// See [`CUSTOM_REPORT_TEMPLATE`].
pub const CUSTOM_TRACE_TEMPLATE: &str = crate::store::owner::SAVED_TEMPLATES[1];

/// The template `rel` saved in the results directory, or the compiled-in `default`.
pub(crate) fn template_for(store: &Store, rel: &str, default: &str) -> Result<String> {
    let path = store.root().join(rel);
    if path.is_file() {
        std::fs::read_to_string(&path)
            .map_err(|e| Error::store(&path, format!("cannot read the custom template: {e}")))
    } else {
        Ok(default.to_string())
    }
}

/// Checks that `text` parses as a Tera template; the error carries Tera's explanation.
pub fn check_template(text: &str) -> std::result::Result<(), String> {
    let mut tera = tera::Tera::new();
    tera.add_raw_template("custom", text)
        .map(|_| ())
        .map_err(|e| error_chain(&e))
}

fn error_chain(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// How long a template may take to render: the built-in ones take milliseconds, and a
/// custom one whose loops never end must not hold the results directory forever.
pub const RENDER_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Renders a Markdown template (no HTML escaping) with `ctx`; errors carry Tera's causes.
pub(crate) fn render_template<T: Serialize>(name: &str, template: &str, ctx: &T) -> Result<String> {
    render_within(name, template, ctx, RENDER_LIMIT)
}

/// The most bytes a rendering may write: far above any real report (a 20,000-pair
/// report.md is a few MB), far below what would exhaust memory. Tera itself caps `range()`
/// at 100,000 elements; with this and the time limit a template's output is bounded.
pub const MAX_RENDER_BYTES: usize = 64 << 20;

/// A rendering's output, refusing to grow past [`MAX_RENDER_BYTES`].
#[derive(Default)]
struct CappedOutput(Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDER_BYTES {
            return Err(std::io::Error::other(format!(
                "the rendering grew past {} MiB (a loop that writes without end?)",
                MAX_RENDER_BYTES >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`render_template`] with a time limit: the rendering runs on its own thread, abandoned
/// (it ends with the process) when it takes longer than `limit`.
fn render_within<T: Serialize>(
    name: &str,
    template: &str,
    ctx: &T,
    limit: std::time::Duration,
) -> Result<String> {
    let terr = |e: tera::Error| Error::Template {
        name: name.into(),
        message: error_chain(&e),
    };
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&str>::new());
    tera.add_raw_template(name, template).map_err(terr)?;
    let ctx = tera::Context::from_serialize(ctx).map_err(terr)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = name.to_string();
    std::thread::Builder::new()
        .name("render".into())
        .spawn(move || {
            let mut out = CappedOutput::default();
            let rendered = tera
                .render_to(&owned, &ctx, &mut out)
                .map(|()| String::from_utf8_lossy(&out.0).into_owned());
            let _ = tx.send(rendered);
        })
        .map_err(|e| Error::internal(format!("cannot start the renderer: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(rendered) => rendered.map_err(terr),
        Err(_) => Err(Error::Template {
            name: name.into(),
            message: format!(
                "rendering took longer than {} s (a loop that does not end?)",
                limit.as_secs_f64()
            ),
        }),
    }
}

/// The report of a planned sweep before any work (its first pairs, none compared yet), on
/// which a custom report template is test-rendered before the first run: a template that
/// parses but cannot render, or never finishes, is bad input then, not after hours of work.
pub fn sample(
    sweep: SweepIdentity,
    model: crate::store::ModelIdentity,
    device: &str,
    continuation: &str,
    pairs: &[PairSpec],
) -> ReportJson {
    let pairs: Vec<PairJson> = pairs
        .iter()
        .take(8)
        .map(|spec| PairJson {
            spec: spec.clone(),
            verdict: PairVerdict::Incomplete,
            reason: "not run yet".into(),
            metrics: None,
            limits: None,
            prefill: run_json(None),
            decode: run_json(None),
            kl_stats: None,
            yardstick: None,
        })
        .collect();
    let counts = Counts {
        runs: 2 * pairs.len(),
        pairs: pairs.len(),
        incomplete: pairs.len(),
        ..Counts::default()
    };
    ReportJson {
        tool: ToolInfo::current(),
        sweep,
        device: device.into(),
        device_name: device.into(),
        model,
        verdict: GlobalVerdict::Incomplete,
        verdict_reason: "not run yet".into(),
        counts,
        model_loads: 0,
        model_load_groups: 0,
        model_load_details: Vec::new(),
        wall_s: None,
        started_at: crate::fsutil::now(),
        finished_at: None,
        continuation: continuation.into(),
        limits: BTreeMap::new(),
        observations: Vec::new(),
        pairs,
        drift_characterization: Vec::new(),
        performance: Vec::new(),
        inject: None,
        trace: None,
        interrupted: false,
        sessions: Vec::new(),
        shard: None,
        merged: None,
        kl_statistics: Vec::new(),
        serving_paths: None,
    }
}

/// Test-renders a custom report template on `sample` (see [`sample`]).
pub fn check_render(text: &str, sample: &ReportJson) -> std::result::Result<(), String> {
    render_template("custom", text, &view(sample))
        .map(|_| ())
        .map_err(|e| match e {
            Error::Template { message, .. } => message,
            other => other.to_string(),
        })
}

/// Builds and writes report.json and report.md (and, for traced sweeps, trace.json and
/// trace_report.md) into the results directory.
pub fn render(store: &Store) -> Result<Rendered> {
    let mut report = build(store)?;
    if let Some(t) = trace::render(store, &report)? {
        report.trace = Some(t);
    }
    // report.md is rendered before report.json is written: a custom template that fails to
    // render must not leave a fresh report.json saying PASS beside a stale report.md.
    let template = template_for(store, CUSTOM_REPORT_TEMPLATE, REPORT_TEMPLATE)?;
    let md = render_template("report.md.tera", &template, &view(&report))?;
    store.write_json("report.json", &report)?;
    store.write_bytes("report.md", md.as_bytes())?;
    html::write(store, &report)?;
    junit::write(store, &report)?;
    Ok(Rendered {
        dir: store.root().to_path_buf(),
        report,
    })
}
