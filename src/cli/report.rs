//! `driftsweep report`: re-renders the reports of a results directory.

use std::path::PathBuf;

use driftsweep::{Error, report as render, store};

use super::common::summarize;

/// Options of `driftsweep report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The results directory.
    dir: PathBuf,
}

/// Renders the reports again; exit code from the sweep's verdict.
pub fn report(a: ReportArgs) -> Result<i32, Error> {
    let store = store::Store::open_locked(&a.dir)?;
    let rendered = render::render(&store)?;
    summarize(&rendered);
    Ok(rendered.verdict().exit_code())
}
