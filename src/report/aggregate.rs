//! Aggregation: report.json's content from a results directory's records (the pairs with
//! their verdicts, counts, drift and timing groups, observations), and the sample report a
//! custom template is test-rendered on.

use std::collections::BTreeMap;

use super::numbers::mean;
use super::schema::{
    Counts, DriftGroup, PairJson, PerfGroup, ReportJson, RunJson, SweepIdentity, compared,
};
use super::{kl, paths};
use crate::compare::{Metrics, percentile};
use crate::dtype::RunDtype;
use crate::engine::{Engine, WeightFormat};
use crate::error::Result;
use crate::path::RunPath;
use crate::plan::{LoadKey, Mode, PairSpec};
use crate::store::{Manifest, RunRecord, RunStatus, Store, ToolInfo};
use crate::verdict::{self, GlobalVerdict, PairVerdict, fmt_num};

pub(crate) fn run_json(r: Option<&RunRecord>) -> RunJson {
    match r {
        None => RunJson::missing(),
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

/// One pair of report.json from its records; `missing_reason` says why a pair without a
/// record has none.
fn pair_json(
    spec: &PairSpec,
    rec: Option<crate::store::PairRecord>,
    pre: Option<&RunRecord>,
    dec: Option<&RunRecord>,
    missing_reason: &str,
) -> PairJson {
    let missing_runs: Vec<String> = [(Mode::Prefill, &pre), (Mode::Decode, &dec)]
        .into_iter()
        .filter(|(_, r)| r.is_none())
        .map(|(m, _)| format!("runs/{}.json", spec.run_id(m)))
        .collect();
    let divergence_search = rec
        .as_ref()
        .and_then(|r| r.divergence_search)
        .filter(|_| missing_runs.is_empty());
    let reference = rec
        .as_ref()
        .and_then(|r| r.reference.clone())
        .filter(|_| missing_runs.is_empty());
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
    PairJson {
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
        divergence_search,
        reference,
        prefill: run_json(pre),
        decode: run_json(dec),
    }
}

/// A timing group of report.json's `performance`: (engine, weights, span, dtype, mode, path).
type PerfKey = (Engine, WeightFormat, usize, RunDtype, Mode, RunPath);

/// What the report keeps of the run records, read one pair at a time: their counts and,
/// per timing group, each computed run's wall time, tokens and logits size. A few numbers
/// a run, not the records (whose row digests alone are kilobytes).
#[derive(Default)]
struct RunTally {
    ok: usize,
    failed: usize,
    skipped: usize,
    reused: usize,
    perf: BTreeMap<PerfKey, Vec<(f64, usize, u64)>>,
}

impl RunTally {
    fn add(&mut self, p: &PairSpec, r: &RunRecord) {
        match r.status {
            RunStatus::Ok => self.ok += 1,
            RunStatus::Failed => self.failed += 1,
            RunStatus::Skipped => self.skipped += 1,
        }
        self.reused += usize::from(r.reused_from.is_some());
        // Reused runs were not computed: counting them would count one computation twice.
        if let (RunStatus::Ok, Some(wall), None) = (r.status, r.wall_s, &r.reused_from) {
            let path = match r.mode {
                Mode::Prefill => RunPath::Decode,
                Mode::Decode => p.path,
            };
            let key = (p.engine, p.weights, p.span, p.dtype, r.mode, path);
            let sample = (wall, r.tokens_fed, r.logits_bytes);
            self.perf.entry(key).or_default().push(sample);
        }
    }
}

/// `counts` of report.json: `pairs` planned, their verdicts, and their runs' records.
fn counts(pairs: usize, verdicts: &[PairVerdict], runs: &RunTally) -> Counts {
    let count = |v: PairVerdict| verdicts.iter().filter(|x| **x == v).count();
    Counts {
        runs: 2 * pairs,
        runs_ok: runs.ok,
        runs_failed: runs.failed,
        runs_skipped: runs.skipped,
        runs_reused: runs.reused,
        pairs,
        pass_equiv: count(PairVerdict::PassEquiv),
        fail_equiv: count(PairVerdict::FailEquiv),
        expected_drift: count(PairVerdict::ExpectedDrift),
        fail_drift: count(PairVerdict::FailDrift),
        incomplete: count(PairVerdict::Incomplete),
        skipped: count(PairVerdict::Skipped),
    }
}

/// One pair of report.json, whole, read from its records (run records checked against the
/// pair, the pair's verdict judged again against `m`'s limits), with its runs' records.
pub(crate) fn read_pair(
    store: &Store,
    m: &Manifest,
    spec: &PairSpec,
) -> Result<(PairJson, Option<RunRecord>, Option<RunRecord>)> {
    let missing_reason = if m.interrupted() {
        "not finished: the sweep was interrupted before this pair was compared; run the same \
         command again to resume"
    } else {
        "not finished: the sweep stopped before this pair was compared"
    };
    let pre = store.run(spec, Mode::Prefill)?;
    let dec = store.run(spec, Mode::Decode)?;
    // A verdict is reported only when it follows from its own metrics, the manifest's
    // limits and finished runs: one edited by hand is refused as tampered.
    let rec = store.checked_pair(m, spec)?;
    let pair = pair_json(spec, rec, pre.as_ref(), dec.as_ref(), missing_reason);
    Ok((pair, pre, dec))
}

/// The pair as the report keeps it in memory: without its per-position series, which only
/// report.json (streamed, [`super::json::render`]) and report.html's figures (of a bounded
/// number of pairs) read, from the records again. A pair of span 1024 drops from tens of
/// kilobytes to a few hundred bytes, so 100,000 pairs fit in a few hundred megabytes.
fn slim(mut p: PairJson) -> PairJson {
    let clear = |m: &mut Metrics| {
        m.per_pos_max_abs = Vec::new();
        m.per_pos_kl = Vec::new();
        m.per_pos_delta_p = Vec::new();
    };
    if let Some(m) = p.metrics.as_mut() {
        clear(m);
    }
    if let Some(c) = p.reference.as_mut() {
        for r in [c.prefill.as_mut(), c.decode.as_mut()]
            .into_iter()
            .flatten()
        {
            clear(&mut r.metrics);
        }
    }
    p
}

/// Builds report.json's content from a results directory, reading one pair's records at a
/// time. Its pairs are kept without their per-position series ([`slim`]).
pub fn build(store: &Store) -> Result<ReportJson> {
    let m: Manifest = store.manifest()?;
    let interrupted = m.interrupted();
    // Row digests serve only the comparison of serving paths: kept when there is one.
    let with_paths = m.pairs.iter().any(|p| !p.path.is_default());
    let mut pairs = Vec::with_capacity(m.pairs.len());
    let mut runs = RunTally::default();
    let mut digests = paths::Digests::new();
    for spec in &m.pairs {
        let (pair, pre, dec) = read_pair(store, &m, spec)?;
        let pooled = kl::PairKl::of(&pair);
        pairs.push((slim(pair), pooled));
        if let Some(d) = dec.as_ref().filter(|_| with_paths) {
            digests.insert(spec.id.clone(), d.row_digests.clone());
        }
        for r in [pre, dec].iter().flatten() {
            runs.add(spec, r);
        }
    }
    // Tables read best in numeric order, not in the order the worker ran the groups.
    pairs.sort_by(|(a, _), (b, _)| {
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
    let (pairs, kls): (Vec<PairJson>, Vec<kl::PairKl>) = pairs.into_iter().unzip();
    let kl_statistics = kl::groups(&pairs, &kls);
    drop(kls);

    let verdicts: Vec<PairVerdict> = pairs.iter().map(|p| p.verdict).collect();
    let (verdict, verdict_reason) = verdict::judge_sweep(&verdicts);
    let counts = counts(m.pairs.len(), &verdicts, &runs);
    let limits = m.resolved.limits.clone();
    let drift_characterization = drift_groups(&pairs);
    let performance = perf_groups(runs.perf);
    let serving_paths = paths::analyse(&pairs, &digests);
    let mut path_lines = serving_paths
        .as_ref()
        .map(paths::observations)
        .unwrap_or_default();
    path_lines.extend(super::reference::observations(&pairs));
    let observations = observations(&pairs, &counts, path_lines);
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

type GroupKey = (Engine, WeightFormat, usize, RunDtype);

fn drift_groups(pairs: &[PairJson]) -> Vec<DriftGroup> {
    let mut groups: BTreeMap<GroupKey, Vec<&Metrics>> = BTreeMap::new();
    let mut aligned: BTreeMap<GroupKey, Vec<f32>> = BTreeMap::new();
    // The decode path's drift; the serving paths have their own sections.
    for (p, m) in compared(pairs).filter(|(p, _)| p.spec.path.is_default()) {
        let key = (p.spec.engine, p.spec.weights, p.spec.span, p.spec.dtype);
        if p.spec.kv_aligned {
            aligned.entry(key).or_default().push(m.max_abs_diff());
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
            max_abs_max: ms.iter().map(|m| m.max_abs_diff()).fold(0.0, f32::max),
            max_abs_mean: mean(ms.iter().map(|m| m.max_abs_diff())).unwrap_or(0.0),
            p99_mean: mean(ms.iter().map(|m| m.p99_abs_diff())).unwrap_or(0.0),
            top1_min: ms.iter().map(|m| m.top1_agreement()).fold(1.0, f32::min),
            top1_mean: mean(ms.iter().map(|m| m.top1_agreement())).unwrap_or(0.0),
            kl_mean_mean: mean(ms.iter().map(|m| m.kl_mean())).unwrap_or(0.0),
            kl_max_max: ms.iter().map(|m| m.kl_max()).fold(0.0, f32::max),
            identical: ms.iter().filter(|m| m.max_abs_diff() == 0.0).count(),
            aligned_max_abs_mean: aligned
                .get(&(engine, weights, span, dtype))
                .and_then(|v| mean(v.iter().copied())),
            samples: ms.len(),
        })
        .collect()
}

fn perf_groups(groups: BTreeMap<PerfKey, Vec<(f64, usize, u64)>>) -> Vec<PerfGroup> {
    groups
        .into_iter()
        .map(|((engine, weights, span, dtype, mode, path), rs)| {
            let mut w32: Vec<f32> = rs.iter().map(|&(w, _, _)| w as f32).collect();
            let n = rs.len();
            PerfGroup {
                engine,
                weights,
                span,
                dtype,
                mode,
                path,
                wall_mean_s: rs.iter().map(|r| r.0).sum::<f64>() / n as f64,
                wall_p95_s: percentile(&mut w32, 0.95) as f64,
                tokens_per_s: rs
                    .iter()
                    .map(|&(w, tokens, _)| tokens as f64 / w.max(1e-9))
                    .sum::<f64>()
                    / n as f64,
                logits_bytes_mean: rs.iter().map(|r| r.2).sum::<u64>() / n as u64,
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
        let same = ms.iter().filter(|m| m.max_abs_diff() == 0.0).count();
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
        setting_observations(pairs, key, &mut out);
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

/// The statements on one setting (engine, weights, dtype): drift range, flips, kv_aligned
/// against each other and the trend over span.
fn setting_observations(pairs: &[PairJson], key: LoadKey, out: &mut Vec<String>) {
    let dtype = key.dtype;
    // The dtype alone names the own decoder on dequantized weights, as before engines.
    let label = setting_label(key);
    let ms: Vec<(&PairJson, &Metrics)> = compared(pairs)
        .filter(|(p, _)| p.spec.load_key() == key)
        .collect();
    let lo = ms
        .iter()
        .map(|(_, m)| m.max_abs_diff())
        .fold(f32::INFINITY, f32::min);
    let hi = ms.iter().map(|(_, m)| m.max_abs_diff()).fold(0.0, f32::max);
    let kl_hi = ms.iter().map(|(_, m)| m.kl_mean()).fold(0.0, f32::max);
    let top1_lo = ms
        .iter()
        .map(|(_, m)| m.top1_agreement())
        .fold(1.0, f32::min);
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
                .map(|(_, m)| m.max_abs_diff()),
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
                        .map(|(_, m)| m.max_abs_diff()),
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
            divergence_search: None,
            reference: None,
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
