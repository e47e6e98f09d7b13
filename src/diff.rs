//! `driftsweep diff BASE NEW`: did drift get worse? Matches the pairs of two results
//! directories by pair id (another commit, device or build of the same sweep), gives each
//! metric's ratio NEW / BASE and each verdict change, and calls a pair **regressed** when a
//! metric grew by more than the `--fail-on` factor or its verdict went from a pass to FAIL or
//! INCOMPLETE. `driftsweep run --baseline DIR` makes the same comparison after a sweep.
//!
//! Ratios of values near 0 say nothing (bit-identical f32 logits on one device, 1e-6 on
//! another is an infinite ratio of noise), so each value is raised to a floor first:
//! [`NOISE_FLOOR`] of the pair's own limit for that metric. A change far below the limit that
//! judges the pair is not a regression; one that reaches a hundredth of it can be.
//!
//! Both directories are read from their `report.json` alone, which is what a results
//! directory kept as a baseline (for example under `docs/results/`) always holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compare::Metrics;
use crate::compare::metrics::{self, Direction, MetricDef};
use crate::error::{Error, Result};
use crate::limits::Thresholds;
use crate::verdict::{PairVerdict, fmt_num};

/// Default `--fail-on`: a pair regressed when a metric more than doubled.
pub const DEFAULT_FAIL_ON: f64 = 2.0;

/// Values are raised to this fraction of the pair's limit before a ratio is taken.
pub const NOISE_FLOOR: f64 = 0.01;

/// The metrics compared: those of the metric table that a limit bounds from above (their
/// growth is a regression; the limit sets the floor).
fn compared_metrics() -> impl Iterator<Item = &'static MetricDef> {
    metrics::limited().filter(|d| d.direction == Direction::AtMost)
}

/// How to compare.
#[derive(Debug, Clone, Copy)]
pub struct DiffOptions {
    /// A metric ratio above this is a regression.
    pub fail_on: f64,
    /// Match pairs by id even when the directories hold different sweeps.
    pub by_id: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            fail_on: DEFAULT_FAIL_ON,
            by_id: false,
        }
    }
}

impl DiffOptions {
    /// `fail_on` must be a finite factor of at least 1 (1 flags any growth at all).
    pub fn validate(&self) -> Result<()> {
        if !(self.fail_on.is_finite() && self.fail_on >= 1.0) {
            return Err(Error::config(
                "--fail-on",
                "fail-on",
                format!(
                    "{} is not a growth factor: give a number ≥ 1 (default {DEFAULT_FAIL_ON})",
                    self.fail_on
                ),
            ));
        }
        Ok(())
    }
}

// The parts of report.json that a diff reads.
#[derive(Deserialize)]
struct ReportFile {
    sweep: SweepFile,
    device: String,
    device_name: String,
    model: ModelFile,
    tool: ToolFile,
    pairs: Vec<PairFile>,
}

#[derive(Deserialize)]
struct SweepFile {
    name: String,
    config_sha256: String,
}

#[derive(Deserialize)]
struct ModelFile {
    source: String,
    sha256: String,
}

#[derive(Deserialize)]
struct ToolFile {
    #[serde(default)]
    git_commit: String,
}

#[derive(Deserialize)]
struct PairFile {
    id: String,
    verdict: PairVerdict,
    metrics: Option<Metrics>,
    limits: Option<Thresholds>,
}

/// Which results directory, and what made it.
#[derive(Debug, Clone, Serialize)]
pub struct DirInfo {
    /// The directory.
    pub dir: PathBuf,
    /// Sweep name.
    pub sweep: String,
    /// sha256 of the sweep file.
    pub config_sha256: String,
    /// Device asked for and used.
    pub device: String,
    /// Model source.
    pub model: String,
    /// Model sha256.
    pub model_sha256: String,
    /// Commit of the binary.
    pub git_commit: String,
}

/// One metric of a matched pair.
#[derive(Debug, Clone, Serialize)]
pub struct MetricRatio {
    /// BASE's value.
    pub base: f32,
    /// NEW's value.
    pub new: f32,
    /// max(new, floor) / max(base, floor).
    pub ratio: f64,
    /// The floor applied ([`NOISE_FLOOR`] of the limit).
    pub floor: f64,
}

/// One pair in both directories.
#[derive(Debug, Clone, Serialize)]
pub struct PairDiff {
    /// Pair id.
    pub id: String,
    /// BASE's verdict.
    pub base_verdict: PairVerdict,
    /// NEW's verdict.
    pub new_verdict: PairVerdict,
    /// Per metric, when both were compared.
    pub ratios: BTreeMap<String, MetricRatio>,
    /// Top-1 flips in BASE and NEW.
    pub flips: Option<(usize, usize)>,
    /// The metric with the largest ratio.
    pub worst: Option<(String, f64)>,
    /// regressed, improved, unchanged or not compared.
    pub status: String,
    /// Why it regressed.
    pub why: Vec<String>,
}

/// The whole comparison (`diff.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// BASE.
    pub base: DirInfo,
    /// NEW.
    pub new: DirInfo,
    /// The factor used.
    pub fail_on: f64,
    /// The floor fraction used.
    pub noise_floor: f64,
    /// Whether pairs were matched by id across different sweeps.
    pub by_id: bool,
    /// PASS (nothing regressed), REGRESSED, or INCOMPLETE (no pair compared in both).
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// Matched pairs, in BASE's order.
    pub pairs: Vec<PairDiff>,
    /// Pair ids only BASE has.
    pub only_in_base: Vec<String>,
    /// Pair ids only NEW has.
    pub only_in_new: Vec<String>,
    /// Regressed pairs.
    pub regressed: usize,
    /// Improved pairs: even the largest ratio is below 1 / fail_on.
    pub improved: usize,
    /// Pairs compared in both.
    pub compared: usize,
}

impl DiffReport {
    /// 0 nothing regressed, 1 a pair regressed, 3 no pair was compared in both.
    pub fn exit_code(&self) -> i32 {
        if self.regressed > 0 {
            crate::exit::FAIL
        } else if self.compared == 0 {
            crate::exit::INCOMPLETE
        } else {
            crate::exit::PASS
        }
    }
}

fn load(dir: &Path, role: &str) -> Result<(DirInfo, Vec<PairFile>)> {
    if !dir.is_dir() {
        return Err(Error::store(
            dir,
            format!("{role}: no such results directory"),
        ));
    }
    let path = dir.join(crate::report::REPORT_JSON);
    if !path.exists() {
        let hint = if dir.join(crate::store::MANIFEST).is_file() {
            format!("; run `driftsweep report {}` to write it", dir.display())
        } else if let Some(h) = crate::store::multi_model_hint(dir) {
            format!(": {h}")
        } else {
            " (not a driftsweep results directory)".into()
        };
        return Err(Error::store(&path, format!("{role}: no report.json{hint}")));
    }
    // Streaming and bounded: a FIFO, a device or a file of gigabytes is refused unread.
    let reader = crate::fsutil::open_regular(&path, crate::fsutil::MAX_RECORD_BYTES)
        .map_err(|e| Error::store(&path, format!("{role}: cannot read report.json: {e}")))?;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let r: ReportFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        Error::store(
            &path,
            format!(
                "{role}: malformed report.json at `{}`: {}",
                e.path(),
                e.inner()
            ),
        )
    })?;
    let info = DirInfo {
        dir: dir.to_path_buf(),
        sweep: r.sweep.name,
        config_sha256: r.sweep.config_sha256,
        device: format!("{} ({})", r.device, r.device_name),
        model: r.model.source,
        model_sha256: r.model.sha256,
        git_commit: r.tool.git_commit,
    };
    Ok((info, r.pairs))
}

/// Checks that `dir` can serve as a baseline (a results directory with a readable
/// report.json), before a sweep spends its time.
pub fn check_baseline(dir: &Path) -> Result<()> {
    load(dir, "--baseline").map(|_| ())
}

/// Writes diff.md and diff.json into the results directory `dir`.
pub fn write(dir: &Path, d: &DiffReport) -> Result<()> {
    // One writer per results directory, for these files too.
    let _lock = crate::store::owner::DirLock::existing(dir)?;
    let json = serde_json::to_vec_pretty(d).map_err(|e| Error::store(dir.join("diff.json"), e))?;
    crate::fsutil::write_atomic(&dir.join("diff.json"), &json)?;
    crate::fsutil::write_atomic(&dir.join("diff.md"), markdown(d).as_bytes())
}

/// Ratio of two values, each raised to `floor` first; 1 when both are at the floor.
pub fn floored_ratio(base: f64, new: f64, floor: f64) -> f64 {
    let (b, n) = (base.max(floor), new.max(floor));
    if b == n {
        1.0
    } else if b > 0.0 {
        n / b
    } else {
        f64::INFINITY
    }
}

fn pair_diff(base: &PairFile, new: &PairFile, fail_on: f64) -> PairDiff {
    let mut why = Vec::new();
    let mut ratios = BTreeMap::new();
    let mut flips = None;
    let both = base.verdict.is_compared() && new.verdict.is_compared();
    if let (true, Some(bm), Some(nm)) = (both, &base.metrics, &new.metrics) {
        let limits = new.limits.or(base.limits);
        for d in compared_metrics() {
            let name = d.name;
            let floor = limits.map_or(0.0, |l| {
                NOISE_FLOOR * f64::from(crate::verdict::limit_of(d, &l))
            });
            let (b, n) = (d.value(bm), d.value(nm));
            let ratio = floored_ratio(f64::from(b), f64::from(n), floor);
            if ratio > fail_on {
                why.push(format!(
                    "{name} {} → {} (×{})",
                    fmt_num(b),
                    fmt_num(n),
                    fmt_ratio(ratio)
                ));
            }
            ratios.insert(
                name.to_string(),
                MetricRatio {
                    base: b,
                    new: n,
                    ratio,
                    floor,
                },
            );
        }
        flips = Some((bm.top1_flips.len(), nm.top1_flips.len()));
    }
    if base.verdict.is_pass() && (new.verdict.is_fail() || new.verdict == PairVerdict::Incomplete) {
        why.push(format!("verdict {} → {}", base.verdict, new.verdict));
    }
    let worst = ratios
        .iter()
        .max_by(|a, b| a.1.ratio.total_cmp(&b.1.ratio))
        .map(|(k, r)| (k.clone(), r.ratio));
    let status = if !why.is_empty() {
        "regressed"
    } else if ratios.is_empty() {
        "not compared"
    } else if worst.as_ref().is_some_and(|(_, r)| *r < 1.0 / fail_on) {
        "improved"
    } else {
        "unchanged"
    };
    PairDiff {
        id: new.id.clone(),
        base_verdict: base.verdict,
        new_verdict: new.verdict,
        ratios,
        flips,
        worst,
        status: status.into(),
        why,
    }
}

/// Compares two results directories.
pub fn diff(base_dir: &Path, new_dir: &Path, opts: DiffOptions) -> Result<DiffReport> {
    opts.validate()?;
    let (base, base_pairs) = load(base_dir, "BASE")?;
    let (new, new_pairs) = load(new_dir, "NEW")?;
    let same_sweep = base.sweep == new.sweep && base.model_sha256 == new.model_sha256;
    if !same_sweep && !opts.by_id {
        return Err(Error::store(
            new_dir,
            format!(
                "holds results of another sweep than {}: sweep `{}` on model {} (sha256 {}) \
                 against `{}` on {} (sha256 {}); pass --by-id to match pairs by id anyway",
                base_dir.display(),
                new.sweep,
                new.model,
                short(&new.model_sha256),
                base.sweep,
                base.model,
                short(&base.model_sha256)
            ),
        ));
    }
    let by_id: BTreeMap<&str, &PairFile> = new_pairs.iter().map(|p| (p.id.as_str(), p)).collect();
    let base_ids: std::collections::BTreeSet<&str> =
        base_pairs.iter().map(|p| p.id.as_str()).collect();
    let pairs: Vec<PairDiff> = base_pairs
        .iter()
        .filter_map(|b| {
            by_id
                .get(b.id.as_str())
                .map(|n| pair_diff(b, n, opts.fail_on))
        })
        .collect();
    let only_in_base: Vec<String> = base_pairs
        .iter()
        .filter(|b| !by_id.contains_key(b.id.as_str()))
        .map(|b| b.id.clone())
        .collect();
    let only_in_new: Vec<String> = new_pairs
        .iter()
        .filter(|n| !base_ids.contains(n.id.as_str()))
        .map(|n| n.id.clone())
        .collect();
    let count = |s: &str| pairs.iter().filter(|p| p.status == s).count();
    let regressed = count("regressed");
    let improved = count("improved");
    let compared = pairs.iter().filter(|p| !p.ratios.is_empty()).count();
    let (verdict, reason) = if regressed > 0 {
        (
            "REGRESSED",
            format!(
                "{regressed} of {} matched pairs regressed (a metric grew more than ×{} or a \
                 verdict turned to FAIL or INCOMPLETE)",
                pairs.len(),
                fmt_ratio(opts.fail_on)
            ),
        )
    } else if compared == 0 {
        (
            "INCOMPLETE",
            format!(
                "no pair was compared in both directories ({} matched by id): nothing to \
                 conclude",
                pairs.len()
            ),
        )
    } else {
        (
            "PASS",
            format!(
                "no pair regressed beyond ×{}: {compared} compared in both, {improved} improved",
                fmt_ratio(opts.fail_on)
            ),
        )
    };
    Ok(DiffReport {
        base,
        new,
        fail_on: opts.fail_on,
        noise_floor: NOISE_FLOOR,
        by_id: opts.by_id,
        verdict: verdict.into(),
        reason,
        pairs,
        only_in_base,
        only_in_new,
        regressed,
        improved,
        compared,
    })
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn fmt_ratio(r: f64) -> String {
    if r.is_infinite() {
        "∞".into()
    } else if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.2}")
    }
}

/// The comparison as Markdown.
pub fn markdown(d: &DiffReport) -> String {
    let mut s = String::new();
    let id = |i: &DirInfo| {
        format!(
            "`{}`: sweep `{}`, {}, commit {}",
            i.dir.display(),
            i.sweep,
            i.device,
            i.git_commit
        )
    };
    s.push_str("# driftsweep diff\n\n");
    s.push_str(&format!(
        "- **BASE** {}\n- **NEW** {}\n",
        id(&d.base),
        id(&d.new)
    ));
    if d.base.config_sha256 != d.new.config_sha256 {
        s.push_str("- the sweep files differ (sha256); pairs are matched by id\n");
    }
    s.push_str(&format!(
        "- ratios are NEW / BASE, each value raised to {} of the pair's limit first; \
         regression: a ratio above ×{}, or a verdict from a pass to FAIL or INCOMPLETE\n\n",
        d.noise_floor,
        fmt_ratio(d.fail_on)
    ));
    s.push_str(&format!("**{}** — {}\n\n", d.verdict, d.reason));
    let names: Vec<&str> = compared_metrics().map(|m| m.name).collect();
    s.push_str(&format!(
        "| pair | BASE | NEW | {} | flips | status |\n",
        names.join(" | ")
    ));
    s.push_str(&format!(
        "|---|---|---|{}---|---|\n",
        "---|".repeat(names.len())
    ));
    for p in &d.pairs {
        let cells: Vec<String> = names
            .iter()
            .map(|k| {
                p.ratios
                    .get(*k)
                    .map_or("—".into(), |r| format!("×{}", fmt_ratio(r.ratio)))
            })
            .collect();
        let flips = p.flips.map_or("—".into(), |(a, b)| format!("{a} → {b}"));
        let status = if p.why.is_empty() {
            p.status.clone()
        } else {
            format!("**{}**: {}", p.status, p.why.join("; "))
        };
        let verdict = |v: PairVerdict| v.as_str().to_string();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            p.id,
            verdict(p.base_verdict),
            verdict(p.new_verdict),
            cells.join(" | "),
            flips,
            status
        ));
    }
    for (what, ids) in [("BASE", &d.only_in_base), ("NEW", &d.only_in_new)] {
        if !ids.is_empty() {
            s.push_str(&format!(
                "\nOnly in {what} ({}): {}\n",
                ids.len(),
                ids.join(", ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_floored_so_noise_is_not_a_regression() {
        assert_eq!(floored_ratio(0.0, 0.0, 0.0), 1.0);
        assert_eq!(floored_ratio(0.0, 1e-9, 1e-6), 1.0);
        assert_eq!(floored_ratio(0.0, 1e-9, 0.0), f64::INFINITY);
        assert!((floored_ratio(1e-6, 4e-6, 1e-6) - 4.0).abs() < 1e-12);
        // Below the floor on one side: the floor stands in for it.
        assert!((floored_ratio(1e-9, 3e-6, 1e-6) - 3.0).abs() < 1e-12);
        assert!((floored_ratio(2.0, 1.0, 0.0) - 0.5).abs() < 1e-12);
    }

    fn pair(v: PairVerdict, max_abs: f32) -> PairFile {
        let dtype = crate::dtype::RunDtype::F16;
        let m = crate::compare::compare(&[1.0, 2.0], &[1.0, 2.0 + max_abs], 2, 0, 1.0).unwrap();
        PairFile {
            id: "p.s1.f16.kv1.seed0".into(),
            verdict: v,
            metrics: v.is_compared().then_some(m),
            limits: Some(Thresholds::default_tolerance(dtype)),
        }
    }

    #[test]
    fn a_metric_past_the_factor_or_a_lost_pass_regresses() {
        let base = pair(PairVerdict::PassEquiv, 0.1);
        let same = pair_diff(&base, &pair(PairVerdict::PassEquiv, 0.1), 2.0);
        assert_eq!(same.status, "unchanged");
        assert_eq!(same.ratios["max_abs_diff"].ratio, 1.0);
        let worse = pair_diff(&base, &pair(PairVerdict::PassEquiv, 0.3), 2.0);
        assert_eq!(worse.status, "regressed", "{:?}", worse.why);
        assert!(worse.why[0].starts_with("max_abs_diff"), "{:?}", worse.why);
        // ×3 in |diff| is ×9 in KL (second order in the drift): within a factor of 10.
        assert_eq!(
            pair_diff(&base, &pair(PairVerdict::PassEquiv, 0.3), 10.0).status,
            "unchanged"
        );
        let better = pair_diff(&base, &pair(PairVerdict::PassEquiv, 0.02), 2.0);
        assert_eq!(better.status, "improved");
        let lost = pair_diff(&base, &pair(PairVerdict::Incomplete, 0.0), 2.0);
        assert_eq!(lost.status, "regressed");
        assert_eq!(
            lost.why,
            vec!["verdict PASS_EQUIV → INCOMPLETE".to_string()]
        );
        let skipped = pair_diff(&base, &pair(PairVerdict::Skipped, 0.0), 2.0);
        assert_eq!(skipped.status, "not compared");
    }

    #[test]
    fn fail_on_must_be_a_growth_factor() {
        for bad in [0.5, f64::NAN, f64::INFINITY, -2.0] {
            let e = DiffOptions {
                fail_on: bad,
                by_id: false,
            }
            .validate()
            .unwrap_err();
            assert!(e.to_string().contains("--fail-on"), "{e}");
        }
        assert!(DiffOptions::default().validate().is_ok());
    }
}
