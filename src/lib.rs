//! driftsweep: measures how far the prefill and decode paths of causal language models drift
//! apart. Data flows one way: [`config`] → [`plan`] → [`run`] (through [`sweep`]) →
//! [`compare`] → [`verdict`] → [`store`] → [`report`].

pub mod bench;
pub mod compare;
pub mod config;
pub mod diff;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod exit;
pub mod fsutil;
pub mod limits;
pub mod merge;
pub mod model;
pub mod path;
pub mod plan;
pub mod reference;
pub mod report;
pub mod run;
pub mod shard;
pub mod slurm;
pub mod store;
pub mod sweep;
pub mod synth;
pub mod tokens;
pub mod trace;
pub mod verdict;
pub mod verify;

pub use error::{Error, Result};

/// Environment variable candle (and rayon) read for their CPU thread count.
pub const THREADS_VAR: &str = "RAYON_NUM_THREADS";

/// Fixes candle's CPU thread count for the process, once: to `RAYON_NUM_THREADS` when the
/// user set it, else to candle's own default (the physical core count), written into that
/// variable. Returns the count.
///
/// Why: candle asks for its thread count on every matmul, and when the variable is unset it
/// recounts the physical cores by parsing `/proc/cpuinfo` each time. On a 2-core machine that
/// made the built-in sweep nearly 3× slower than with the variable set to the same count
/// (BENCHMARKS.md, "Threads").
///
/// # Safety
/// It writes the process environment: call it before any other thread exists (first thing in
/// `main`), as [`std::env::set_var`] requires.
pub unsafe fn pin_cpu_threads() -> usize {
    if let Some(n) = std::env::var(THREADS_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let n = candle_core::utils::get_num_threads();
    // SAFETY: the caller guarantees no other thread reads or writes the environment now.
    unsafe { std::env::set_var(THREADS_VAR, n.to_string()) };
    n
}

/// Keeps stack traces out of error messages, run records and reports, whatever
/// `RUST_BACKTRACE` says: candle attaches a captured backtrace to its errors whenever
/// backtraces are enabled, and their text would then carry it. `RUST_LIB_BACKTRACE=0`
/// disables capture for library errors while `RUST_BACKTRACE` still governs panics (a bug's
/// report keeps its trace). A value the user set is left alone.
///
/// # Safety
/// As [`pin_cpu_threads`]: call it before any other thread exists.
pub unsafe fn quiet_library_backtraces() {
    const VAR: &str = "RUST_LIB_BACKTRACE";
    if std::env::var_os(VAR).is_none() {
        // SAFETY: the caller guarantees no other thread reads or writes the environment now.
        unsafe { std::env::set_var(VAR, "0") };
    }
}

/// The candle-core version this binary was built with (read from Cargo.lock by build.rs).
pub const CANDLE_VERSION: &str = env!("DRIFTSWEEP_CANDLE_VERSION");

/// The git commit this binary was built from (`-dirty` appended when tracked files had
/// uncommitted changes), or "unknown".
pub const GIT_COMMIT: &str = env!("DRIFTSWEEP_GIT_COMMIT");
