//! The `driftsweep` command line: `plan`, `run`, `merge`, `slurm`, `report`, `verify`,
//! `generate`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod progress;
use driftsweep::plan::Mode;
use driftsweep::{Error, bench, config, diff, model, plan, report, store, sweep, tokens, verify};

/// mimalloc keeps freed tensor buffers for reuse instead of returning them to the kernel, so
/// the many short-lived tensors of a decode step cost no page faults: the built-in B3.70
/// sweep took 630 k of them with glibc's malloc and 39 k with mimalloc (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tells mimalloc never to return freed pages to the kernel, unless the user set
/// `MIMALLOC_PURGE_DELAY`. By default it purges them 10 ms after they are freed, and a model
/// load frees the dequantized weights just before it allocates the run-dtype copy and its
/// widened twin: every page then faulted and was zeroed again, most of a SmolLM2 load's time
/// on a 2-core VM (`clear_page_erms` in perf). Kept, the next allocation reuses them: the
/// SmolLM2 race's f32 and f16 loads went from 1.5 and 1.3 s to 0.2 and 0.6 s, its whole
/// sweep from 27.5–29.0 s to 25.1–25.3 s, for 4 % more peak RSS (BENCHMARKS.md host).
fn keep_freed_pages() {
    // `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3); libmimalloc-sys names
    // no constant for it. -1: never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is thread-safe in mimalloc and takes effect on the next
        // purge decision.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

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
        /// The most pairs the sweep may expand into.
        #[arg(long, default_value_t = config::DEFAULT_MAX_PAIRS)]
        max_pairs: usize,
    },
    /// Run a sweep and write its results directory and reports. Running it again into the
    /// same directory resumes: finished pairs are kept, the rest is computed.
    /// Exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE, 2 bad input, 130 interrupted.
    Run {
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
    },
    /// Join the results directories of `run --shard K/N` into OUT and render its reports.
    /// The shards must come from the same sweep file, model, tool build and device kind.
    /// Exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE (a shard or pair missing), 2 bad input.
    Merge {
        /// The merged results directory.
        out: PathBuf,
        /// The shards' results directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Write a Slurm job array (one task per shard, only the unfinished shards) and a merge
    /// job that runs after it (--dependency=afterok); --submit submits both.
    Slurm {
        /// The sweep file (YAML).
        config: PathBuf,
        #[command(flatten)]
        opts: driftsweep::slurm::SlurmOptions,
    },
    /// Compare two results directories pair by pair (matched by id): metric ratios NEW / BASE
    /// and verdict changes. Exit code: 0 nothing regressed, 1 a pair regressed beyond
    /// --fail-on, 3 no pair compared in both, 2 bad input (including different sweeps
    /// without --by-id).
    Diff {
        /// The baseline results directory.
        base: PathBuf,
        /// The results directory under test.
        new: PathBuf,
        /// A metric that grew by more than this factor (after raising both values to 1% of
        /// the pair's limit) is a regression.
        #[arg(long, default_value_t = diff::DEFAULT_FAIL_ON, value_name = "FACTOR")]
        fail_on: f64,
        /// Match pairs by id even when the directories hold different sweeps.
        #[arg(long)]
        by_id: bool,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Re-render report.json and report.md from a results directory, running nothing.
    Report {
        /// The results directory.
        dir: PathBuf,
    },
    /// Re-run pairs of a results directory and say, per pair, whether this device reproduces
    /// the stored metrics bit for bit (writes verify.json there).
    /// Exit code: 0 all identical, 1 a metric moved, 3 nothing verified or a pair errored.
    Verify {
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
    /// Measure performance. `--suite perf` (default): model load, prefill tokens/s at spans
    /// 32/128/512, decode step time at positions 10 and 500, comparator throughput, peak
    /// memory. `--suite trace`: the cost of layer tracing (CPU). `--suite floors`: the
    /// machine's physical floors (STREAM-triad memory bandwidth, GEMM GFLOP/s per dtype).
    Bench {
        /// perf, trace or floors.
        #[arg(long, default_value = "perf")]
        suite: String,
        /// Model source.
        #[arg(long, default_value = "builtin:tiny-llama")]
        model: String,
        /// Run dtype: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Device (perf and floors suites): cpu, cuda[:N], metal[:N], auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Sequence length for the trace suite (the first quarter is the prompt).
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        /// Timed repetitions per case (after one warm-up).
        #[arg(long, default_value_t = 7)]
        repeat: usize,
        /// Print the perf or floors suite's result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe {
        driftsweep::pin_cpu_threads();
        driftsweep::quiet_library_backtraces();
    }
    keep_freed_pages();
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
        Command::Plan {
            config,
            json,
            max_pairs,
        } => {
            let cfg = config::load_with(&config, &config::LoadLimits { max_pairs })?;
            let (_, plan) = sweep::prepare(&cfg)?;
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
            device,
            start_over,
            no_progress,
            max_pairs,
            stop_after_runs,
            exit_after_runs,
            shard,
            lanes,
            baseline,
            fail_on,
            by_id,
        } => {
            let diff_opts = diff::DiffOptions { fail_on, by_id };
            // A bad baseline is found before hours of sweeping, not after.
            if let Some(b) = &baseline {
                diff_opts.validate()?;
                diff::check_baseline(b)?;
            }
            // Installed first: SIGINT/SIGTERM during setup (a hostile file can make it slow)
            // ends the process at once.
            let stop = sweep::StopFlag::new();
            sweep::install_interrupt_handler(&stop)?;
            let mut cfg = config::load_with(&config, &config::LoadLimits { max_pairs })?;
            if let Some(d) = device {
                cfg.config.device = parse_device(&d)?;
            }
            let opts = sweep::SweepOptions {
                out,
                start_over,
                stop,
                stop_after_runs,
                exit_after_runs,
                shard,
                lanes: lanes.map(usize::from),
            };
            let mut bar = progress::Bar::new(!no_progress);
            let outcome = sweep::run_sweep(&cfg, &opts, &mut bar)?;
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
            if outcome.interrupted {
                eprintln!("interrupted: run the same command again to resume");
                return Ok(130);
            }
            let code = outcome.rendered.verdict().exit_code();
            match baseline {
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
                    Ok(if code != 0 { code } else { d.exit_code() })
                }
                None => Ok(code),
            }
        }
        Command::Diff {
            base,
            new,
            fail_on,
            by_id,
            json,
        } => {
            let d = diff::diff(&base, &new, diff::DiffOptions { fail_on, by_id })?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
            } else {
                outln!("{}", diff::markdown(&d));
            }
            Ok(d.exit_code())
        }
        Command::Verify {
            dir,
            all,
            sample,
            device,
        } => {
            let selection = if all {
                verify::Selection::All
            } else {
                verify::Selection::Sample(sample)
            };
            let device = device.map(|d| parse_device(&d)).transpose()?;
            let r = verify::verify(&dir, selection, device)?;
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
            Ok(r.exit_code())
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
            let m = info.load_own(
                driftsweep::engine::WeightFormat::Dequantized,
                dtype,
                &candle_core::Device::Cpu,
            )?;
            let load_s = start.elapsed().as_secs_f64();
            let ids = info.encode(&prompt.replace("\\n", "\n"))?;
            let start = std::time::Instant::now();
            let out = tokens::generate(&info, m.as_ref(), &ids, max_tokens)?;
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
            suite,
            model,
            dtype,
            device,
            tokens,
            repeat,
            json,
        } => {
            let dtype = parse_dtype(&dtype)?;
            if repeat == 0 {
                return Err(Error::config("--repeat", "repeat", "need at least 1"));
            }
            match suite.as_str() {
                "perf" => {
                    let spec = parse_device(&device)?;
                    let dev = driftsweep::run::open_device(spec)
                        .map_err(|m| Error::config("--device", "device", m))?;
                    let r = bench::perf(&model, dtype, &dev, repeat)?;
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    } else {
                        print_perf(&r);
                    }
                }
                "trace" => bench_trace(&model, dtype, tokens, repeat)?,
                "floors" => {
                    let spec = parse_device(&device)?;
                    let dev = driftsweep::run::open_device(spec)
                        .map_err(|m| Error::config("--device", "device", m))?;
                    let r = bench::floors(&dev, repeat)?;
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    } else {
                        print_floors(&r);
                    }
                }
                other => {
                    return Err(Error::config(
                        "--suite",
                        "suite",
                        format!("`{other}`: use perf, trace or floors"),
                    ));
                }
            }
            Ok(0)
        }
        Command::Merge { out, dirs } => {
            let m = driftsweep::merge::merge(&out, &dirs)?;
            let i = &m.info;
            outln!(
                "merged {} of {} shard(s) into {}",
                i.shards.len(),
                i.count,
                out.display()
            );
            if !i.missing_shards.is_empty() {
                outln!("  missing shard(s): {:?}", i.missing_shards);
            }
            for id in &i.missing_pairs {
                outln!("  missing pair: {id}");
            }
            summarize(&m.rendered);
            Ok(m.rendered.verdict().exit_code())
        }
        Command::Slurm { config, opts } => {
            let cfg = config::load(&config)?;
            if let Some(d) = &opts.device {
                parse_device(d)?;
            }
            let j = driftsweep::slurm::write_jobs(&cfg, &opts)?;
            outln!("wrote {}", j.array_script.display());
            outln!("wrote {}", j.merge_script.display());
            outln!("wrote {}", j.submit_script.display());
            match &j.array {
                Some(a) => outln!("unfinished shard(s) {:?}: --array={a}", j.unfinished),
                None => outln!("every shard is finished: only the merge is left"),
            }
            match &j.submitted {
                Some(s) => outln!("{}", s.trim_end()),
                None => outln!("submit with: bash {}", j.submit_script.display()),
            }
            Ok(0)
        }
        Command::Report { dir } => {
            let store = store::Store::open_locked(&dir)?;
            let rendered = report::render(&store)?;
            summarize(&rendered);
            Ok(rendered.verdict().exit_code())
        }
    }
}

fn print_perf(r: &bench::PerfReport) {
    outln!("{} ({}) on {}", r.model, r.dtype, r.device);
    outln!("  load            {:>10.1} ms", r.load_ms);
    for p in &r.prefill {
        outln!(
            "  prefill s{:<4}   {:>10.2} ms  {:>9.0} tokens/s  ({} tokens)",
            p.span,
            p.median_ms,
            p.tokens_per_s,
            p.tokens
        );
    }
    for d in &r.decode_steps {
        outln!(
            "  decode @{:<5}   {:>10.3} ms/token",
            d.position,
            d.median_ms
        );
    }
    if let [a, b] = &r.decode_steps[..] {
        outln!(
            "  decode ratio    {:>10.2}× (position {} / position {})",
            b.median_ms / a.median_ms,
            b.position,
            a.position
        );
    }
    outln!(
        "  compare         {:>10.1} ms  {:>6.2} GB/s  ({} × {} logits, both runs)",
        r.compare.median_ms,
        r.compare.gb_per_s,
        r.compare.positions,
        r.compare.vocab
    );
    if let Some(m) = r.peak_rss_mib {
        outln!("  peak RSS        {m:>10.0} MiB");
    }
}

fn print_floors(r: &bench::FloorsReport) {
    let t = &r.triad;
    outln!(
        "physical floors on {}, best of each (triad on {} threads)",
        r.device,
        r.threads
    );
    outln!(
        "  triad           {:>10.2} GB/s  ({:.2} GB/s on 1 thread; {} MiB per pass, write-allocate not counted)",
        t.gb_per_s,
        t.gb_per_s_1thread,
        t.bytes >> 20
    );
    outln!(
        "  {:<6} {:>16} {:>12} {:>12}",
        "gemm",
        "m × k × n",
        "best ms",
        "GFLOP/s"
    );
    for g in &r.gemm {
        let shape = format!("{}×{}×{}", g.m, g.k, g.n);
        match (g.gflop_per_s, g.best_ms, &g.unsupported) {
            (Some(f), Some(ms), _) => {
                outln!("  {:<6} {shape:>16} {ms:>12.3} {f:>12.1}", g.dtype.as_str())
            }
            (_, _, reason) => outln!(
                "  {:<6} {shape:>16} unsupported: {}",
                g.dtype.as_str(),
                reason.as_deref().unwrap_or("?")
            ),
        }
    }
}

fn bench_trace(
    model: &str,
    dtype: driftsweep::dtype::RunDtype,
    tokens: usize,
    repeat: usize,
) -> Result<(), Error> {
    if tokens < 4 {
        return Err(Error::config(
            "--tokens",
            "tokens",
            "need at least 4 tokens",
        ));
    }
    let cases = bench::trace_overhead(model, dtype, tokens, repeat)?;
    outln!("trace overhead: {model}, {dtype}, {tokens} tokens, median of {repeat} (min–max)");
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
    Ok(())
}

fn parse_device(s: &str) -> Result<config::DeviceSpec, Error> {
    s.parse()
        .map_err(|m: String| Error::config("--device", "device", m))
}

fn parse_dtype(s: &str) -> Result<driftsweep::dtype::RunDtype, Error> {
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
            .map(|g| format!("{} ({})", g.key(), g.purpose()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (mut pre, mut dec, mut single) = (0, 0, 0);
    for p in plan
        .pairs
        .iter()
        .filter(|p| !plan.skipped.contains_key(&p.id))
    {
        let (a, b) = plan.forward_tokens(p);
        pre += a;
        dec += b;
        single += plan.prompts[&p.prompt].len + p.span;
    }
    outln!(
        "forward tokens: {pre} in prefill runs{}, {dec} in decode runs (SKIPPED pairs cost none)",
        if pre > single {
            format!(
                " ({single} if every prefill were one pass: engines that return only the last \
                 row prefill once per prefix)"
            )
        } else {
            String::new()
        }
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
        "{:<w$}  {:<w$}  {:>6}  {:>6}  {:>5}  {:>3}  {:>5}  {:<19}  {:<11}  {:>12}",
        "prefill run",
        "decode run",
        "prompt",
        "span",
        "dtype",
        "kv",
        "seed",
        "engine",
        "weights",
        "tokens fed"
    );
    for p in &plan.pairs {
        let (a, b) = plan.forward_tokens(p);
        outln!(
            "{:<w$}  {:<w$}  {:>6}  {:>6}  {:>5}  {:>3}  {:>5}  {:<19}  {:<11}  {:>12}",
            p.run_id(Mode::Prefill),
            p.run_id(Mode::Decode),
            plan.prompts[&p.prompt].len,
            p.span,
            p.dtype.as_str(),
            u8::from(p.kv_aligned),
            p.seed,
            p.engine.as_str(),
            p.weights.as_str(),
            format!("{a}+{b}")
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
