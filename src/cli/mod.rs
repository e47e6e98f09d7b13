//! The subcommands, one file each: their options (clap) and the function that runs them and
//! returns the exit code ([`driftsweep::exit`]). Shared printing lives in [`common`].

mod bench;
mod common;
mod diff;
mod generate;
pub mod interrupt;
mod merge;
mod plan;
mod progress;
mod report;
mod run;
mod slurm;
mod synth;
mod verify;

use clap::{Parser, Subcommand};
use driftsweep::Error;

/// Where `--help` sends a reader for the whole reference.
const DOCS: &str = "Documentation: docs/README.md (the table of contents); the sweep file: \
                    docs/sweep-file.md. Examples: configs/quickstart.yaml (start here), \
                    configs/*.yaml, examples/own_model.rs (a model of your own).";

/// Measures how far the prefill and decode paths of causal language models drift apart.
#[derive(Parser)]
#[command(name = "driftsweep", version, about, after_help = DOCS)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Print the runs and pairs a sweep file expands into, without running anything.
    /// Writes no file in the results directory (its cost calibration is cached in the cache
    /// directory's `costs.json`).
    #[command(after_help = DOCS)]
    Plan(plan::PlanArgs),
    /// Run a sweep and write its results directory and reports. Running it again into the
    /// same directory resumes: finished pairs are kept, the rest is computed.
    /// Writes into the results directory (--out, else the file's `output`, else
    /// results/<name>): manifest.json, driftsweep.marker.json, runs/*.json, pairs/*.json,
    /// logits/*.safetensors (when kept), traces/*.json (with `trace`), report.json, report.md,
    /// report.html, report.junit.xml, and trace.json and trace_report.md with traces.
    /// Exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE, 2 bad input, 130 interrupted.
    #[command(after_help = DOCS)]
    Run(run::RunArgs),
    /// Join the results directories of `run --shard K/N` into OUT and render its reports.
    /// The shards must come from the same sweep file, model, tool build and device kind.
    /// Writes into OUT what `run` writes: manifest.json, driftsweep.marker.json, the shards'
    /// runs/, pairs/, logits/ and traces/ records, and the reports (report.json, report.md,
    /// report.html, report.junit.xml, trace.json, trace_report.md).
    /// Exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE (a shard or pair missing), 2 bad input.
    Merge(merge::MergeArgs),
    /// Write a Slurm job array (one task per shard, only the unfinished shards) and a merge
    /// job that runs after it (--dependency=afterok); --submit submits both.
    /// Writes <out>.shards/slurm/shards.sbatch, merge.sbatch and submit.sh (and creates
    /// <out>.shards/slurm/logs for the jobs' output).
    Slurm(slurm::SlurmArgs),
    /// Compare two results directories pair by pair (matched by id): metric ratios NEW / BASE
    /// and verdict changes. Exit code: 0 nothing regressed, 1 a pair regressed beyond
    /// --fail-on, 3 no pair compared in both, 2 bad input (including different sweeps
    /// without --by-id). Reads the two report.json files; writes no file.
    Diff(diff::DiffArgs),
    /// Re-render the reports of a results directory from its records, running nothing.
    /// Writes report.json, report.md, report.html, report.junit.xml there, and trace.json and
    /// trace_report.md when it holds traces.
    Report(report::ReportArgs),
    /// Re-run pairs of a results directory and say, per pair, whether this device reproduces
    /// the stored metrics bit for bit (writes verify.json there).
    /// Exit code: 0 all identical, 1 a metric moved, 3 nothing verified or a pair errored.
    Verify(verify::VerifyArgs),
    /// Greedily continue a prompt, to see that a model loads and answers sensibly before
    /// sweeping it. `\n` in PROMPT is a newline. Writes no file.
    Generate(generate::GenerateArgs),
    /// Measure performance. `--suite perf` (default): model load, prefill tokens/s at spans
    /// 32/128/512, decode step time at positions 10 and 500, comparator throughput, peak
    /// memory. `--suite trace`: the cost of layer tracing (CPU). `--suite floors`: the
    /// machine's physical floors (STREAM-triad memory bandwidth, GEMM GFLOP/s per dtype).
    /// `--suite compare`: the comparator case alone (512 × `--vocab` logits, no model), wall
    /// and CPU time. Prints its figures; writes no file.
    Bench(bench::BenchArgs),
    /// Write one synthetic checkpoint (config.json, model.safetensors, tokenizer.json, or a
    /// GGUF file, and driftsweep-synth.json) from a spec file, for use by other tools. The
    /// same spec always gives the same bytes. Exit code: 0 written, 2 bad spec.
    Synth(synth::SynthArgs),
}

/// Runs one subcommand; returns its exit code.
pub fn dispatch(cmd: Command) -> Result<i32, Error> {
    match cmd {
        Command::Plan(a) => plan::plan(a),
        Command::Run(a) => run::run(a),
        Command::Merge(a) => merge::merge(a),
        Command::Slurm(a) => slurm::slurm(a),
        Command::Diff(a) => diff::diff(a),
        Command::Report(a) => report::report(a),
        Command::Verify(a) => verify::verify(a),
        Command::Generate(a) => generate::generate(a),
        Command::Bench(a) => bench::bench(a),
        Command::Synth(a) => synth::synth(a),
    }
}
