//! `report.junit.xml`: the verdicts in the format CI systems read, written with `quick-junit`.
//!
//! One test suite per [`suite_key`] (the dtype today; engine joins it when there is one), one
//! test case per pair named by its id. PASS_EQUIV and EXPECTED_DRIFT pass; FAIL_EQUIV,
//! FAIL_DRIFT and INCOMPLETE are failures carrying the verdict as type and its reason as
//! message; SKIPPED is skipped with its reason. A last suite, `sweep`, holds one case for the
//! global verdict, failed unless it is PASS, so that a file of only skipped cases (nothing
//! compared) does not read as green.

use std::collections::BTreeMap;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::files::{Inputs, REPORT_JUNIT};
use super::schema::{PairJson, ReportJson};
use crate::error::{Error, Result};
use crate::verdict::{GlobalVerdict, PairVerdict};

/// The file's name in the results directory.
pub const JUNIT_FILE: &str = REPORT_JUNIT;

/// The suite a pair belongs to. Add a key (engine, path) here when pairs have one.
pub fn suite_key(p: &PairJson) -> String {
    p.spec.dtype.to_string()
}

fn secs(s: Option<f64>) -> Option<Duration> {
    s.filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn case(r: &ReportJson, p: &PairJson) -> TestCase {
    let status = match p.verdict {
        PairVerdict::PassEquiv | PairVerdict::ExpectedDrift => TestCaseStatus::success(),
        PairVerdict::FailEquiv | PairVerdict::FailDrift | PairVerdict::Incomplete => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type(p.verdict.as_str())
                .set_message(p.reason.as_str());
            s
        }
        PairVerdict::Skipped => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(p.reason.as_str());
            s
        }
    };
    let mut c = TestCase::new(p.spec.id.as_str(), status);
    c.set_classname(format!("{}.{}", r.sweep.name, suite_key(p)));
    let wall: Option<f64> = match (p.prefill.wall_s, p.decode.wall_s) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    if let Some(d) = secs(wall) {
        c.set_time(d);
    }
    c.add_property(("verdict", p.verdict.as_str()));
    if let Some(m) = &p.metrics {
        c.add_property(("max_abs_diff", m.max_abs_diff().to_string().as_str()));
        c.add_property(("kl_mean", m.kl_mean().to_string().as_str()));
        c.add_property(("kl_max", m.kl_max().to_string().as_str()));
        c.add_property(("top1_agreement", m.top1_agreement().to_string().as_str()));
    }
    // The reference comparisons enter the verdict and its reason; their numbers go here.
    if let Some(check) = &p.reference {
        c.add_property(("reference", check.source.as_str()));
        c.add_property(("reference_verdict", super::reference::verdict(check)));
        for (path, r) in [("prefill", &check.prefill), ("decode", &check.decode)] {
            if let Some(r) = r {
                let max = r.metrics.max_abs_diff().to_string();
                c.add_property((format!("reference_{path}_max_abs_diff"), max));
                let kl = r.metrics.kl_max().to_string();
                c.add_property((format!("reference_{path}_kl_max"), kl));
            }
        }
    }
    c
}

/// The JUnit report of a sweep.
pub fn build(r: &ReportJson) -> Report {
    let mut report = Report::new(format!("driftsweep.{}", r.sweep.name));
    if let Some(d) = secs(r.wall_s) {
        report.set_time(d);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&r.started_at) {
        report.set_timestamp(t);
    }
    let mut suites: BTreeMap<String, Vec<&PairJson>> = BTreeMap::new();
    for p in &r.pairs {
        suites.entry(suite_key(p)).or_default().push(p);
    }
    for (name, pairs) in suites {
        let mut suite = TestSuite::new(name);
        suite.add_test_cases(pairs.iter().map(|p| case(r, p)));
        report.add_test_suite(suite);
    }
    let status = if r.verdict == GlobalVerdict::Pass {
        TestCaseStatus::success()
    } else {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_type(r.verdict.as_str())
            .set_message(r.verdict_reason.as_str());
        s
    };
    let mut global = TestCase::new("global verdict", status);
    global.set_classname(format!("{}.sweep", r.sweep.name));
    let mut suite = TestSuite::new("sweep");
    suite.add_test_case(global);
    report.add_test_suite(suite);
    report
}

/// report.junit.xml's bytes.
pub(crate) fn render_file(i: &Inputs, w: &mut dyn std::io::Write) -> Result<bool> {
    let path = i.store.root().join(JUNIT_FILE);
    build(i.report)
        .serialize(w)
        .map_err(|e| Error::store(&path, format!("cannot serialize the JUnit report: {e}")))?;
    Ok(true)
}
