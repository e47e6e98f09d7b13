//! `driftsweep run`: runs a sweep into its results directory (resuming what is there), then
//! optionally compares it with a baseline.

use std::path::PathBuf;

use driftsweep::{Error, config, diff, exit, sweep};

use super::common::{parse_device, summarize};
use super::{interrupt, progress};

/// Options of `driftsweep run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The sweep file (YAML).
    config: PathBuf,
    /// Results directory (default: the file's `output`, else results/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device, overriding the file's `device:` (auto, cpu, cuda, cuda:N, metal, metal:N).
    #[arg(long)]
    device: Option<String>,
    /// Discard the results already in the directory (of this or another sweep) instead of
    /// resuming from them.
    #[arg(long)]
    start_over: bool,
    /// Never draw the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// The most pairs the sweep may expand into (a guard against a sweep file that
    /// multiplies out to days of work).
    #[arg(long, default_value_t = config::DEFAULT_MAX_PAIRS)]
    max_pairs: usize,
    /// Stop, as Ctrl-C would, once this many runs have started (testing aid: a
    /// deterministic interrupt).
    #[arg(long, hide = true)]
    stop_after_runs: Option<usize>,
    /// Exit at once, as SIGKILL would, after this many run records (testing aid).
    #[arg(long, hide = true)]
    exit_after_runs: Option<usize>,
    /// Run only shard K of N (K from 0) of the plan's pairs, into its own results
    /// directory (default `<output>.shards/K-of-N`); `driftsweep merge` joins the shards.
    #[arg(long, value_name = "K/N")]
    shard: Option<driftsweep::shard::Shard>,
    /// Lanes of pairs run side by side, each on its share of the CPU threads (default:
    /// chosen from the model's size and the device; 1 runs the pairs one at a time).
    /// The metrics are the same bits either way.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    lanes: Option<u16>,
    /// After the sweep, compare it with this results directory as `driftsweep diff` does
    /// (writes diff.md and diff.json into the results directory); a regression exits 1.
    #[arg(long, value_name = "DIR")]
    baseline: Option<PathBuf>,
    /// With --baseline: a metric that grew by more than this factor is a regression.
    #[arg(long, default_value_t = diff::DEFAULT_FAIL_ON, value_name = "FACTOR")]
    fail_on: f64,
    /// With --baseline: match pairs by id even if the baseline holds another sweep.
    #[arg(long)]
    by_id: bool,
}

/// Runs the sweep; exit code from its verdict, or from the baseline's when it passed.
pub fn run(a: RunArgs) -> Result<i32, Error> {
    let diff_opts = diff::DiffOptions {
        fail_on: a.fail_on,
        by_id: a.by_id,
    };
    if a.baseline.is_some() {
        diff_opts.validate()?;
    }
    // Installed first: SIGINT/SIGTERM during setup (a hostile file can make it slow)
    // ends the process at once.
    let stop = sweep::StopFlag::new();
    interrupt::install(&stop)?;
    let mut cfg = config::load_with(
        &a.config,
        &config::LoadLimits {
            max_pairs: a.max_pairs,
        },
    )?;
    if let Some(d) = &a.device {
        let device = parse_device(d)?;
        cfg.config.device = device;
        for m in &mut cfg.model_sweeps {
            m.config.config.device = device;
        }
    }
    if cfg.is_multi() && a.baseline.is_some() {
        return Err(Error::config(
            &a.config,
            "models",
            "--baseline compares one results directory: run `driftsweep diff` on each \
             `<out>/models/<id>` instead",
        ));
    }
    // A bad baseline (unreadable, this run's own output, another sweep's) is found before
    // hours of sweeping, not after.
    if let Some(b) = &a.baseline {
        let out = match a.shard {
            Some(s) if a.out.is_none() => {
                driftsweep::shard::shard_dir(&sweep::output_dir(&cfg, None), s)
            }
            _ => sweep::output_dir(&cfg, a.out.as_ref()),
        };
        diff::check_baseline(b, &out, &cfg.config.name, a.by_id)?;
    }
    let opts = sweep::SweepOptions {
        out: a.out,
        start_over: a.start_over,
        stop,
        stop_after_runs: a.stop_after_runs,
        exit_after_runs: a.exit_after_runs,
        shard: a.shard,
        lanes: a.lanes.map(usize::from),
    };
    let mut bar = progress::Bar::new(!a.no_progress);
    if cfg.is_multi() {
        return run_models(&cfg, &opts, &mut bar);
    }
    if !a.no_progress {
        bar.set_estimate(super::plan::estimated_seconds(&cfg, opts.out.as_ref()));
    }
    let outcome = sweep::run_sweep(&cfg, &opts, &mut bar)?;
    print_outcome(&outcome);
    if outcome.interrupted {
        eprintln!("interrupted: run the same command again to resume");
        return Ok(exit::INTERRUPTED);
    }
    let code = outcome.rendered.verdict().exit_code();
    match a.baseline {
        Some(b) => {
            let d = diff::diff(&b, &outcome.rendered.dir, diff_opts)?;
            diff::write(&outcome.rendered.dir, &d)?;
            outln!(
                "  against baseline {}: {} — {}",
                b.display(),
                d.verdict,
                d.reason
            );
            // The sweep's own failure comes first; then the baseline's verdict.
            Ok(if code != exit::PASS {
                code
            } else {
                d.exit_code()
            })
        }
        None => Ok(code),
    }
}

/// A sweep file with `models:`: each model's sweep in turn, then the summary; the exit code
/// is the worst over the models.
fn run_models(
    cfg: &config::LoadedConfig,
    opts: &sweep::SweepOptions,
    bar: &mut progress::Bar,
) -> Result<i32, Error> {
    let outcome = sweep::models::run_models(cfg, opts, bar, &mut |step| match step {
        sweep::models::ModelStep::Starting {
            id,
            index,
            total,
            dir,
        } => outln!(
            "model `{id}` ({}/{total}) into {}",
            index + 1,
            dir.display()
        ),
        sweep::models::ModelStep::Ran { outcome, .. } => print_outcome(outcome),
        sweep::models::ModelStep::Failed { id, error } => eprintln!("model `{id}`: {error}"),
    })?;
    let s = &outcome.summary;
    outln!(
        "{}: {} over {} model(s); summary: {}",
        s.sweep,
        s.verdict,
        s.models.len(),
        outcome.dir.join(sweep::summary::SUMMARY_MD).display()
    );
    if s.interrupted {
        eprintln!("interrupted: run the same command again to resume");
    }
    Ok(s.exit_code)
}

/// What `--start-over` left alone, what was resumed, and the sweep's summary.
fn print_outcome(outcome: &sweep::SweepOutcome) {
    for p in &outcome.left_alone {
        eprintln!(
            "--start-over left alone (driftsweep did not write it): {}",
            p.display()
        );
    }
    if outcome.reused_pairs > 0 {
        outln!(
            "resumed: {} pair(s) reused from earlier sessions",
            outcome.reused_pairs
        );
    }
    summarize(&outcome.rendered);
}
