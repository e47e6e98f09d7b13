//! `driftsweep diff`: compares two results directories pair by pair.

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
    /// Print JSON instead of Markdown.
    #[arg(long)]
    json: bool,
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
        outln!("{}", drift_diff::markdown(&d));
    }
    Ok(d.exit_code())
}
