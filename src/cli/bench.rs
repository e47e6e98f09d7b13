//! `driftsweep bench`: performance suites (perf, trace, floors) and their printing.

use driftsweep::dtype::RunDtype;
use driftsweep::{Error, bench as suites, exit};

use super::common::{parse_device, print_json};

/// Which measurements `driftsweep bench` makes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Suite {
    /// Model load, prefill, decode steps, comparator, peak memory.
    Perf,
    /// The cost of layer tracing (CPU).
    Trace,
    /// The machine's physical floors: memory bandwidth and GEMM throughput.
    Floors,
    /// The perf suite's comparator case alone (no model): 512 positions × --vocab logits.
    Compare,
}

/// Options of `driftsweep bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The suite to run.
    #[arg(long, value_enum, default_value_t = Suite::Perf)]
    suite: Suite,
    /// Model source.
    #[arg(long, default_value = "builtin:tiny-llama")]
    model: String,
    /// Run dtype.
    #[arg(long, value_enum, default_value_t = RunDtype::F32)]
    dtype: RunDtype,
    /// Device (perf and floors suites): cpu, cuda[:N], metal[:N], auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Sequence length for the trace suite (the first quarter is the prompt).
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// Vocabulary of the compare suite (SmolLM2's by default).
    #[arg(long, default_value_t = 49_152)]
    vocab: usize,
    /// Timed repetitions per case (after one warm-up).
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// Print the perf, floors or compare suite's result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the suite and prints its result.
pub fn bench(a: BenchArgs) -> Result<i32, Error> {
    if a.repeat == 0 {
        return Err(Error::config("--repeat", "repeat", "need at least 1"));
    }
    match a.suite {
        Suite::Perf => {
            let r = suites::perf(&a.model, a.dtype, &open_device(&a.device)?, a.repeat)?;
            if a.json {
                print_json(&r);
            } else {
                print_perf(&r);
            }
        }
        Suite::Trace => bench_trace(&a.model, a.dtype, a.tokens, a.repeat)?,
        Suite::Compare => {
            if a.vocab == 0 {
                return Err(Error::config("--vocab", "vocab", "need at least 1"));
            }
            let c = suites::compare_only(a.vocab, &open_device(&a.device)?, a.repeat)?;
            if a.json {
                print_json(&c);
            } else {
                print_compare(&c);
            }
        }
        Suite::Floors => {
            let r = suites::floors(&open_device(&a.device)?, a.repeat)?;
            if a.json {
                print_json(&r);
            } else {
                print_floors(&r);
            }
        }
    }
    Ok(exit::PASS)
}

fn open_device(device: &str) -> Result<driftsweep::run::OpenDevice, Error> {
    driftsweep::run::open_device(parse_device(device)?)
        .map_err(|e| Error::config("--device", "device", e.to_string()))
}

fn print_perf(r: &suites::PerfReport) {
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
    print_compare(&r.compare);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let a = &r.activations;
    outln!(
        "  weights + act.  {:>10.0} MiB  ({:.0} weights + {:.0} largest phase: prefill {:.0}, compare {:.0})",
        r.weights_and_activations_mib,
        mib(r.weight_bytes),
        mib(a.bytes),
        mib(a.prefill_bytes),
        mib(a.compare_bytes)
    );
    if let Some(m) = r.peak_rss_mib {
        outln!(
            "  peak RSS        {m:>10.0} MiB  ({:.2}× weights + activations)",
            m / r.weights_and_activations_mib
        );
    }
}

fn print_compare(c: &suites::CompareCase) {
    let cpu = c
        .cpu_ms
        .map_or(String::new(), |ms| format!(", {ms:.1} ms CPU"));
    outln!(
        "  compare         {:>10.1} ms  {:>6.2} GB/s  ({} × {} logits, both runs{cpu})",
        c.median_ms,
        c.gb_per_s,
        c.positions,
        c.vocab
    );
}

fn print_floors(r: &suites::FloorsReport) {
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

fn bench_trace(model: &str, dtype: RunDtype, tokens: usize, repeat: usize) -> Result<(), Error> {
    if tokens < 4 {
        return Err(Error::config(
            "--tokens",
            "tokens",
            "need at least 4 tokens",
        ));
    }
    let cases = suites::trace_overhead(model, dtype, tokens, repeat)?;
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
