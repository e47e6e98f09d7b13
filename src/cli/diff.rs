//! `driftsweep diff`: compares two results directories pair by pair. Past 20 unchanged pairs
//! only the moved ones are printed, with a count of the rest (`--all` prints every pair).

use std::path::PathBuf;

use driftsweep::{Error, diff as drift_diff};

/// Options of `driftsweep diff`.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// The baseline results directory.
    base: PathBuf,
    /// The results directory under test.
    new: PathBuf,
    /// A metric that grew by more than this factor (after raising both values to 1% of
    /// the pair's limit) is a regression.
    #[arg(long, default_value_t = drift_diff::DEFAULT_FAIL_ON, value_name = "FACTOR")]
    fail_on: f64,
    /// Match pairs by id even when the directories hold different sweeps.
    #[arg(long)]
    by_id: bool,
    /// Print JSON instead of Markdown (every pair, whatever --changed says).
    #[arg(long)]
    json: bool,
    /// Show only the pairs that moved (regressed, improved or changed verdict), with a count
    /// of the others; the default when more than 20 pairs are unchanged.
    #[arg(long, conflicts_with = "all")]
    changed: bool,
    /// Show every pair, the unchanged ones too.
    #[arg(long)]
    all: bool,
}

/// Above this many unchanged pairs, only the moved ones are shown unless --all asks.
const UNCHANGED_SHOWN: usize = 20;

/// Whether a pair moved: a regression, an improvement or another verdict.
fn moved(p: &drift_diff::PairDiff) -> bool {
    matches!(p.status.as_str(), "regressed" | "improved") || p.base_verdict != p.new_verdict
}

/// The Markdown `diff` prints: every pair, or (with `changed`, or by default past
/// [`UNCHANGED_SHOWN`] unchanged pairs unless `all`) only the moved ones and a count line.
pub(super) fn markdown(d: &drift_diff::DiffReport, changed: bool, all: bool) -> String {
    let unchanged = d.pairs.iter().filter(|p| !moved(p)).count();
    let only_moved = changed || (!all && unchanged > UNCHANGED_SHOWN);
    if !only_moved || unchanged == 0 {
        return drift_diff::markdown(d);
    }
    let mut shown = d.clone();
    shown.pairs.retain(moved);
    format!(
        "{}\n{unchanged} unchanged pairs not shown; --all to show them\n",
        drift_diff::markdown(&shown).trim_end()
    )
}

/// Prints the comparison; exit code from its verdict.
pub fn diff(a: DiffArgs) -> Result<i32, Error> {
    let opts = drift_diff::DiffOptions {
        fail_on: a.fail_on,
        by_id: a.by_id,
    };
    let d = drift_diff::diff(&a.base, &a.new, opts)?;
    if a.json {
        super::common::print_json(&d);
    } else {
        outln!("{}", markdown(&d, a.changed, a.all));
    }
    Ok(d.exit_code())
}
