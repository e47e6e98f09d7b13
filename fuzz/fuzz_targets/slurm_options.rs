//! `slurm_options` of the results-directory targets (tests/fuzz_mutate/entries.rs): errors, never
//! panics, and nothing outside the directory is touched.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_mutate/entries.rs"]
mod entries;

fuzz_target!(|data: &[u8]| {
    let _ = entries::slurm_options(data);
});
