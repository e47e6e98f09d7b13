//! The `driftsweep` command line: `plan`, `run`, `report`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use driftsweep::plan::Mode;
use driftsweep::{Error, bench, config, model, plan, report, store, sweep, tokens};

/// `println!` that ignores a closed stdout (`driftsweep plan x | head` must not panic).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Measures how far the prefill and decode paths of causal language models drift apart.
#[derive(Parser)]
#[command(name = "driftsweep", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the runs and pairs a sweep file expands into, without running anything.
    Plan {
        /// The sweep file (YAML).
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a sweep and write its results directory and reports.
    /// Exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE, 2 bad input.
    Run {
        /// The sweep file (YAML).
        config: PathBuf,
        /// Results directory (default: the file's `output`, else results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Never draw the progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Re-render report.json and report.md from a results directory, running nothing.
    Report {
        /// The results directory.
        dir: PathBuf,
    },
    /// Greedily continue a prompt, to see that a model loads and answers sensibly before
    /// sweeping it. `\n` in PROMPT is a newline.
    Generate {
        /// Model source (`builtin:tiny-llama`, a `.gguf` file).
        model: String,
        /// The prompt text; special tokens such as `<|im_start|>` are recognized.
        prompt: String,
        /// Most tokens to generate (stops after end-of-sequence).
        #[arg(long, default_value_t = 48)]
        max_tokens: usize,
        /// Run dtype: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
    /// Measure the cost of layer tracing: prefill and decode with tracing off and on (CPU).
    Bench {
        /// Model source.
        #[arg(long, default_value = "builtin:tiny-llama")]
        model: String,
        /// Run dtype: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Sequence length (the first quarter is the prompt).
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        /// Timed repetitions per case (after one warm-up).
        #[arg(long, default_value_t = 7)]
        repeat: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn dispatch(cmd: Command) -> Result<i32, Error> {
    match cmd {
        Command::Plan { config, json } => {
            let cfg = config::load(&config)?;
            let info = model::ModelInfo::for_config(&cfg)?;
            let plan = plan::expand(&cfg, &info)?;
            if json {
                print_plan_json(&plan);
            } else {
                print_plan_table(&cfg, &plan);
            }
            Ok(0)
        }
        Command::Run {
            config,
            out,
            no_progress,
        } => {
            let cfg = config::load(&config)?;
            let opts = sweep::SweepOptions {
                out,
                progress: !no_progress,
            };
            let rendered = sweep::run_sweep(&cfg, &opts)?;
            summarize(&rendered);
            Ok(rendered.verdict().exit_code())
        }
        Command::Generate {
            model,
            prompt,
            max_tokens,
            dtype,
        } => {
            let dtype = parse_dtype(&dtype)?;
            let info = model::ModelInfo::inspect(&model)?;
            let start = std::time::Instant::now();
            let m = info.load(dtype, &candle_core::Device::Cpu)?;
            let load_s = start.elapsed().as_secs_f64();
            let ids = info.encode(&prompt.replace("\\n", "\n"))?;
            let start = std::time::Instant::now();
            let out = tokens::generate(&info, &m, &ids, max_tokens)?;
            let gen_s = start.elapsed().as_secs_f64();
            let text = info
                .tokenizer
                .decode(&out, false)
                .map_err(|e| Error::model(&model, format!("decoding: {e}")))?;
            outln!("{text}");
            eprintln!(
                "{model} ({}, {dtype}): loaded in {load_s:.2} s; prompt {} tokens; {} tokens in {gen_s:.2} s ({:.1} tokens/s)",
                info.architecture,
                ids.len(),
                out.len(),
                out.len() as f64 / gen_s.max(1e-9)
            );
            Ok(0)
        }
        Command::Bench {
            model,
            dtype,
            tokens,
            repeat,
        } => {
            let dtype = parse_dtype(&dtype)?;
            if tokens < 4 || repeat == 0 {
                return Err(Error::config(
                    "--tokens",
                    "tokens",
                    "need at least 4 tokens and 1 repetition",
                ));
            }
            let cases = bench::trace_overhead(&model, dtype, tokens, repeat)?;
            outln!(
                "trace overhead: {model}, {dtype}, {tokens} tokens, median of {repeat} (min–max)"
            );
            outln!(
                "{:<8} {:<16} {:>12} {:>22} {:>9}",
                "mode",
                "tracing",
                "median ms",
                "min–max ms",
                "records"
            );
            for c in cases {
                outln!(
                    "{:<8} {:<16} {:>12.2} {:>22} {:>9}",
                    c.mode,
                    c.tracing,
                    c.median_ms,
                    format!("{:.2}–{:.2}", c.min_ms, c.max_ms),
                    c.records
                );
            }
            Ok(0)
        }
        Command::Report { dir } => {
            let store = store::Store::open(&dir)?;
            let rendered = report::render(&store)?;
            summarize(&rendered);
            Ok(rendered.verdict().exit_code())
        }
    }
}

fn parse_dtype(s: &str) -> Result<config::RunDtype, Error> {
    serde_yaml::from_str(s)
        .map_err(|_| Error::config("--dtype", "dtype", format!("`{s}`: use f32, bf16 or f16")))
}

fn summarize(r: &report::Rendered) {
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
    outln!(
        "  reports: {}  {}",
        r.dir.join("report.md").display(),
        r.dir.join("report.json").display()
    );
}

fn print_plan_table(cfg: &config::LoadedConfig, plan: &plan::Plan) {
    outln!(
        "sweep `{}`: model {}, device {}, continuation {}",
        cfg.config.name,
        cfg.config.model.source,
        cfg.config.device,
        cfg.config.continuation
    );
    let groups = plan.load_groups(cfg.config.continuation);
    outln!(
        "{} pairs, {} runs ({} pairs excluded), {} model load(s): {}",
        plan.pairs.len(),
        plan.run_count(),
        plan.excluded,
        groups.len(),
        groups
            .iter()
            .map(|g| format!("{} ({})", g.dtype, g.purpose()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(i) = &cfg.config.inject {
        outln!(
            "fault injection: {}",
            serde_json::to_string(i).unwrap_or_default()
        );
    }
    outln!();
    let w = plan
        .pairs
        .iter()
        .map(|p| p.run_id(Mode::Prefill).len())
        .max()
        .unwrap_or(0);
    outln!(
        "{:<w$}  {:<w$}  {:>6}  {:>6}  {:>5}  {:>3}  {:>5}",
        "prefill run",
        "decode run",
        "prompt",
        "span",
        "dtype",
        "kv",
        "seed"
    );
    for p in &plan.pairs {
        outln!(
            "{:<w$}  {:<w$}  {:>6}  {:>6}  {:>5}  {:>3}  {:>5}",
            p.run_id(Mode::Prefill),
            p.run_id(Mode::Decode),
            plan.prompts[&p.prompt].len,
            p.span,
            p.dtype.as_str(),
            u8::from(p.kv_aligned),
            p.seed
        );
    }
}

fn print_plan_json(plan: &plan::Plan) {
    let runs: Vec<serde_json::Value> = plan
        .pairs
        .iter()
        .flat_map(|p| {
            [Mode::Prefill, Mode::Decode]
                .map(|m| serde_json::json!({"id": p.run_id(m), "pair": p.id, "mode": m}))
        })
        .collect();
    let v = serde_json::json!({
        "counts": {"pairs": plan.pairs.len(), "runs": plan.run_count(), "excluded": plan.excluded},
        "prompts": plan.prompts,
        "pairs": plan.pairs,
        "runs": runs,
    });
    outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}
