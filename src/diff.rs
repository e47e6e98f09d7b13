//! `driftsweep diff BASE NEW`: did drift get worse? Matches the pairs of two results
//! directories by pair id (another commit, device or build of the same sweep), gives each
//! metric's ratio NEW / BASE and each verdict change, and calls a pair **regressed** when a
//! metric grew by more than the `--fail-on` factor or its verdict went from a pass to FAIL or
//! INCOMPLETE. `driftsweep run --baseline DIR` makes the same comparison after a sweep.
//!
//! Ratios of values near 0 say nothing (bit-identical f32 logits on one device, 1e-6 on
//! another is an infinite ratio of noise), so each value is raised to a floor first:
//! [`NOISE_FLOOR`] of the pair's limit for that metric in BASE (or in NEW, when NEW's is the
//! smaller: loosening the sweep under test never raises the floor). A change far below the
//! limit that judges the pair is not a regression; one that reaches a hundredth of it can be.
//! Limits NEW loosened are listed. Every verdict read is judged again from its metrics and
//! limits first: report.json edited by hand is refused as tampered (exit 2).
//!
//! Both directories are read from their `report.json` alone, which is what a results
//! directory kept as a baseline (for example under `docs/results/`) always holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compare::Metrics;
use crate::compare::metrics::{self, Direction, MetricDef};
use crate::dtype::RunDtype;
use crate::error::{Error, Result};
use crate::limits::Thresholds;
use crate::path::RunPath;
use crate::store::safe;
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
                "command line",
                "--fail-on",
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
    dtype: RunDtype,
    kv_aligned: bool,
    #[serde(default)]
    path: RunPath,
    verdict: PairVerdict,
    metrics: Option<Metrics>,
    limits: Option<Thresholds>,
    #[serde(default)]
    reference: Option<crate::store::ReferenceCheck>,
}

impl PairFile {
    /// Whether the pair is judged for equivalence ([`crate::plan::PairSpec::equivalence`]).
    fn equivalence(&self) -> bool {
        self.kv_aligned || !self.path.is_default()
    }
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
    /// The limits NEW judged it by that are looser than BASE's (shown, never hidden: a
    /// loosened limit can turn a FAIL into a PASS without any metric changing).
    pub loosened: Vec<String>,
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
    /// Matched pairs whose limits NEW loosened.
    pub loosened: usize,
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
    if let Some(what) = safe::not_a_file(&path) {
        return Err(Error::store(
            &path,
            format!("{role}: report.json is {what}; a results directory's report.json is a file"),
        ));
    }
    if !path.is_file() {
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
    check_pairs(&r.pairs, &path)?;
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

/// Refuses report.json pairs with ids that are not safe names, that repeat (the last would
/// silently win), or whose verdict does not follow from their own metrics and limits.
fn check_pairs(pairs: &[PairFile], path: &Path) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for p in pairs {
        safe::check_id(&p.id, path, "pairs[].id")?;
        if !seen.insert(p.id.as_str()) {
            return Err(Error::store(
                path,
                format!("`pairs`: the pair id `{}` appears twice", p.id),
            ));
        }
        let why = match &p.limits {
            None if p.verdict.is_compared() => {
                Some(format!("says {} but holds no limits", p.verdict))
            }
            None => None,
            Some(l) => safe::rejudge(
                p.verdict,
                &safe::Judged {
                    metrics: p.metrics.as_ref(),
                    limits: l,
                    dtype: p.dtype,
                    equivalence: p.equivalence(),
                    reference: p.reference.as_ref(),
                },
            ),
        };
        if let Some(why) = why {
            return Err(safe::tampered(path, &format!("pair `{}` {why}", p.id)));
        }
    }
    Ok(())
}

/// Checks, before a sweep spends its time, that `dir` can serve as the baseline of the
/// sweep named `sweep` writing into `out`: a results directory with a readable, untampered
/// report.json, not `out` itself (the new results compared with themselves pass any
/// regression), and of the same sweep unless `by_id`.
pub fn check_baseline(dir: &Path, out: &Path, sweep: &str, by_id: bool) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if dir == out || canon(dir).is_some_and(|d| Some(d) == canon(out)) {
        return Err(Error::config(
            "command line",
            "--baseline",
            format!(
                "`{}` is the results directory this run writes (--out): the new results would \
                 be compared with themselves; keep the baseline in another directory",
                dir.display()
            ),
        ));
    }
    let (info, _) = load(dir, "--baseline")?;
    if info.sweep != sweep && !by_id {
        return Err(Error::config(
            "command line",
            "--baseline",
            format!(
                "`{}` holds results of sweep `{}`, this is `{sweep}`: pass --by-id to match \
                 pairs by id anyway",
                dir.display(),
                info.sweep
            ),
        ));
    }
    Ok(())
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
        for d in compared_metrics() {
            let name = d.name;
            // BASE's limit, or NEW's when smaller: loosening the limits of the sweep under
            // test must not raise the floor that hides its growth.
            let limit = [base.limits, new.limits]
                .iter()
                .flatten()
                .map(|l| crate::verdict::limit_of(d, l))
                .reduce(f32::min);
            let floor = limit.map_or(0.0, |l| NOISE_FLOOR * f64::from(l));
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
        loosened: loosened(base, new),
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

/// The limits NEW judges the pair by that are looser than BASE's, in words.
fn loosened(base: &PairFile, new: &PairFile) -> Vec<String> {
    let (Some(b), Some(n)) = (&base.limits, &new.limits) else {
        return Vec::new();
    };
    metrics::limited()
        .filter_map(|d| {
            let (lb, ln) = (
                crate::verdict::limit_of(d, b),
                crate::verdict::limit_of(d, n),
            );
            let looser = match d.direction {
                Direction::AtMost => ln > lb,
                _ => ln < lb,
            };
            looser.then(|| format!("{} limit {} → {}", d.name, fmt_num(lb), fmt_num(ln)))
        })
        .collect()
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
    let loosened = pairs.iter().filter(|p| !p.loosened.is_empty()).count();
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
    let reason = if loosened > 0 {
        format!("{reason}; NEW loosened the limits of {loosened} pair(s) (see the table)")
    } else {
        reason
    };
    Ok(DiffReport {
        loosened,
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
        "- ratios are NEW / BASE, each value raised to {} of the pair's limit (BASE's, or \
         NEW's when smaller) first; \
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
        let mut status = if p.why.is_empty() {
            p.status.clone()
        } else {
            format!("**{}**: {}", p.status, p.why.join("; "))
        };
        if !p.loosened.is_empty() {
            status.push_str(&format!("; **limits loosened**: {}", p.loosened.join(", ")));
        }
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
            dtype,
            kv_aligned: true,
            path: RunPath::default(),
            verdict: v,
            metrics: v.is_compared().then_some(m),
            limits: Some(Thresholds::default_tolerance(dtype)),
            reference: None,
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
    fn loosened_limits_in_new_neither_raise_the_floor_nor_hide() {
        let base = pair(PairVerdict::PassEquiv, 0.001);
        let mut new = pair(PairVerdict::PassEquiv, 0.05);
        let mut loose = new.limits.unwrap();
        loose.set("max_abs_diff", 1000.0);
        new.limits = Some(loose);
        let d = pair_diff(&base, &new, 2.0);
        // With NEW's floor (10 of 1000) the growth ×50 would vanish: BASE's smaller one
        // keeps it.
        assert_eq!(d.status, "regressed", "{:?}", d.ratios);
        assert!(
            d.loosened[0].starts_with("max_abs_diff limit"),
            "{:?}",
            d.loosened
        );
        // Negative control: the same limits loosen nothing.
        assert!(pair_diff(&base, &base, 2.0).loosened.is_empty());
    }

    #[test]
    fn report_pairs_twice_or_with_a_verdict_their_metrics_deny_are_refused() {
        let f = Path::new("report.json");
        let ok = [pair(PairVerdict::PassEquiv, 0.001)];
        assert!(check_pairs(&ok, f).is_ok(), "negative control");
        let twice = [
            pair(PairVerdict::PassEquiv, 0.001),
            pair(PairVerdict::PassEquiv, 0.001),
        ];
        let e = check_pairs(&twice, f).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
        let lie = [pair(PairVerdict::PassEquiv, 50.0)];
        let e = check_pairs(&lie, f).unwrap_err().to_string();
        assert!(e.contains("TAMPERED") && e.contains("FAIL_EQUIV"), "{e}");
        let mut null = pair(PairVerdict::PassEquiv, 0.001);
        null.metrics = None;
        let e = check_pairs(&[null], f).unwrap_err().to_string();
        assert!(e.contains("no metrics"), "{e}");
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
