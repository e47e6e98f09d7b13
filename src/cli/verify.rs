//! `driftsweep verify`: re-runs stored pairs and says whether this device reproduces them.

use std::path::PathBuf;

use driftsweep::Error;
use driftsweep::verify::{self as check, Selection, VerifyReport};

use super::common::parse_device;

/// Options of `driftsweep verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The results directory.
    dir: PathBuf,
    /// Re-run every compared pair instead of a sample.
    #[arg(long)]
    all: bool,
    /// How many pairs the sample holds (spread evenly over the plan).
    #[arg(long, default_value_t = 6)]
    sample: usize,
    /// Device to re-run on (default: the one the results were computed on).
    #[arg(long)]
    device: Option<String>,
}

/// Re-runs the selection and prints, per pair, whether it reproduced.
pub fn verify(a: VerifyArgs) -> Result<i32, Error> {
    let selection = if a.all {
        Selection::All
    } else {
        Selection::Sample(a.sample)
    };
    let device = a.device.as_deref().map(parse_device).transpose()?;
    let r = check::verify(&a.dir, selection, device)?;
    print_report(&r);
    Ok(r.exit_code())
}

fn print_report(r: &VerifyReport) {
    outln!(
        "verify {}: {} of {} re-run pair(s) bit-identical ({} compared pairs stored; \
         stored on {}, re-run on {})",
        r.dir,
        r.identical(),
        r.pairs.len(),
        r.candidates,
        r.stored_device,
        r.device
    );
    for p in &r.pairs {
        match &p.error {
            Some(e) => outln!("  {:<10} {}  {e}", p.status.as_str(), p.id),
            None => outln!("  {:<10} {}", p.status.as_str(), p.id),
        }
        for m in &p.moved {
            outln!(
                "      {} moved: stored {} now {}",
                m.metric,
                m.stored,
                m.now
            );
        }
    }
    for m in &r.missing {
        outln!("  {:<10} {}  {}", "missing", m.id, m.why);
    }
}
