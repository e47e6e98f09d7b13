//! `driftsweep merge`: joins the results directories of `run --shard K/N`.

use std::path::PathBuf;

use driftsweep::Error;

use super::common::summarize;

/// Options of `driftsweep merge`.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// The merged results directory (report.json, report.md, report.html, junit.xml, the
    /// records; built beside it and swapped in whole).
    out: PathBuf,
    /// The shards' results directories.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

/// Merges the shards into OUT; exit code from the merged sweep's verdict.
pub fn merge(a: MergeArgs) -> Result<i32, Error> {
    let m = driftsweep::merge::merge(&a.out, &a.dirs)?;
    let i = &m.info;
    outln!(
        "merged {} of {} shard(s) into {}",
        i.shards.len(),
        i.count,
        a.out.display()
    );
    if !i.missing_shards.is_empty() {
        outln!("  missing shard(s): {:?}", i.missing_shards);
    }
    for id in &i.missing_pairs {
        outln!("  missing pair: {id}");
    }
    for old in &m.kept_aside {
        outln!(
            "  a replaced merge held files driftsweep did not write that could not be moved \
             over (or another merge still holds it): they are kept in {}",
            old.display()
        );
    }
    summarize(&m.rendered);
    Ok(m.rendered.verdict().exit_code())
}
