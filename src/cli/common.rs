//! What several subcommands share: parsing `--device` and printing a sweep's summary or a
//! value as JSON. Kept apart from `mod.rs`, which dispatches to the subcommands, so the
//! subcommands need not import their parent.

use driftsweep::{Error, config};

/// A `--device` value, as the sweep file's `device:` is written.
pub(super) fn parse_device(s: &str) -> Result<config::DeviceSpec, Error> {
    s.parse()
        .map_err(|m: String| Error::config("--device", "device", m))
}

/// The sweep's verdict, counts and report paths, after `run`, `merge` and `report`.
pub(super) fn summarize(r: &driftsweep::report::Rendered) {
    let c = &r.report.counts;
    outln!(
        "{}: {} — {}\n  pairs {} (PASS_EQUIV {}, FAIL_EQUIV {}, EXPECTED_DRIFT {}, FAIL_DRIFT {}, INCOMPLETE {}, SKIPPED {}), runs {}, model loads {}",
        r.report.sweep.name,
        r.report.verdict.as_str(),
        r.report.verdict_reason,
        c.pairs,
        c.pass_equiv,
        c.fail_equiv,
        c.expected_drift,
        c.fail_drift,
        c.incomplete,
        c.skipped,
        c.runs,
        r.report.model_loads
    );
    if let Some(w) = r.report.wall_s {
        outln!("  wall time {w:.2} s");
    }
    // Every report file this sweep has, in the renderers' order (report::FILES).
    let written: Vec<String> = driftsweep::report::FILES
        .iter()
        .map(|f| r.dir.join(f))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    outln!("  reports: {}", written.join("  "));
}

/// Prints `v` as pretty JSON.
pub(super) fn print_json(v: &impl serde::Serialize) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
