//! The `driftsweep` command line: `plan`, `run`, `merge`, `slurm`, `diff`, `report`, `verify`,
//! `generate`, `bench`, `synth`. `main` parses, calls the subcommand's function in [`cli`] and maps
//! its result onto an exit code ([`driftsweep::exit`]); nothing else ends the process except
//! the interrupt handler ([`cli::interrupt`]).

use std::process::ExitCode;

use clap::Parser;
use driftsweep::Error;

/// `println!` that ignores a closed stdout (`driftsweep plan x | head` must not panic).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod cli;

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

fn main() -> ExitCode {
    // SAFETY: first statement of main; no other thread exists yet.
    unsafe {
        driftsweep::pin_cpu_threads();
        driftsweep::quiet_library_backtraces();
    }
    keep_freed_pages();
    let cli = cli::Cli::parse();
    let code = match cli::dispatch(cli.command) {
        Ok(code) => code,
        // A stand-in for SIGKILL says nothing, as a killed process cannot.
        Err(e @ Error::Killed { .. }) => e.exit_code(),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    // Returning (not `process::exit`) still ends the process at once: a device worker left
    // running after a hard stop is not waited for.
    ExitCode::from(code as u8)
}
