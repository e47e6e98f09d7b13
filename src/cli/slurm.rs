//! `driftsweep slurm`: writes (and with `--submit` submits) a Slurm job array and its merge.

use std::path::PathBuf;

use driftsweep::slurm::SlurmOptions;
use driftsweep::{Error, config, exit};

use super::common::parse_device;

/// Options of `driftsweep slurm`.
#[derive(clap::Args)]
pub struct SlurmArgs {
    /// The sweep file (YAML).
    config: PathBuf,
    #[command(flatten)]
    opts: SlurmOptions,
}

/// Writes the job scripts and says what they run.
pub fn slurm(a: SlurmArgs) -> Result<i32, Error> {
    let cfg = config::load(&a.config)?;
    if let Some(d) = &a.opts.device {
        parse_device(d)?;
    }
    let j = driftsweep::slurm::write_jobs(&cfg, &a.opts)?;
    outln!("wrote {}", j.array_script.display());
    outln!("wrote {}", j.merge_script.display());
    outln!("wrote {}", j.submit_script.display());
    match &j.array {
        Some(s) => outln!("unfinished shard(s) {:?}: --array={s}", j.unfinished),
        None => outln!("every shard is finished: only the merge is left"),
    }
    match &j.submitted {
        Some(s) => outln!("{}", s.trim_end()),
        None => outln!("submit with: bash {}", j.submit_script.display()),
    }
    Ok(exit::PASS)
}
