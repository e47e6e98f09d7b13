//! A mutation fuzzer for the four fuzz targets' entry points (`fuzz/fuzz_targets/`), built by
//! plain `cargo test --release`: for machines where cargo-fuzz's instrumented build (its own
//! cold build of every dependency, with nightly flags) does not fit. It has no coverage
//! feedback, so it finds less than libFuzzer per execution; it mutates the same seeds
//! (`fuzz/seeds.py`, plus the files here) with bit flips, boundary integers, byte runs and
//! splices, and fails on the first panic, writing the input to `fuzz/artifacts/<target>/`.
//!
//! Ignored by default; run for SECONDS per target (default 10):
//!   DRIFTSWEEP_FUZZ_SECONDS=600 cargo test --release --test fuzz_mutate -- --ignored
//! Each target prints its executions and the distinct error messages it saw.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
#[path = "fuzz_mutate/entries.rs"]
mod entries;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seeds of `target`: the cargo-fuzz corpus directory when `fuzz/seeds.py` has filled it,
/// else the files this crate keeps for the same purpose.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> = Vec::new();
    let dir = root.join("fuzz/corpus").join(target);
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        out.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    if target == "sweep_file" {
        for sub in ["configs", "tests/bad_input"] {
            let files = common::yaml_files(&root.join(sub));
            out.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
        }
    }
    if target == "gguf_header" {
        out.extend(
            std::fs::read_dir(root.join("tests/fuzz_regressions"))
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read(e.path()).ok()),
        );
    }
    out.extend(entries::seed_input(target));
    assert!(
        !out.is_empty(),
        "no seeds for {target}: run `python3 fuzz/seeds.py`"
    );
    out
}

/// Integers at the edges where arithmetic on file-supplied sizes goes wrong.
const EDGES: [u64; 10] = [
    0,
    1,
    2,
    3,
    0x7f,
    0xff,
    0xffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 7,
];

/// Text fragments a YAML or JSON mutation splices in.
const WORDS: [&str; 16] = [
    "[",
    "]",
    "{",
    "}",
    ":",
    "- ",
    "\n",
    "  ",
    "\"",
    "0",
    "-1",
    "18446744073709551615",
    "1e308",
    "null",
    "&a ",
    "*a",
];

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..rng.random_range(1..=4) {
        let len = input.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                input[i] = rng.random();
            }
            2 => {
                let edge = EDGES[rng.random_range(0..EDGES.len())];
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
                let at = rng.random_range(0..=len.saturating_sub(width));
                let bytes = edge.to_le_bytes();
                for (k, b) in bytes.iter().take(width).enumerate() {
                    if at + k < input.len() {
                        input[at + k] = *b;
                    }
                }
            }
            3 => {
                let w = WORDS[rng.random_range(0..WORDS.len())].as_bytes();
                let at = rng.random_range(0..=len);
                input.splice(at..at, w.iter().copied());
            }
            4 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=64)).min(len);
                input.drain(a..b);
            }
            5 if len > 0 => {
                // Repeat a chunk: lists and nesting grow.
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=32)).min(len);
                let chunk: Vec<u8> = input[a..b].to_vec();
                for _ in 0..rng.random_range(1..=8) {
                    input.splice(a..a, chunk.iter().copied());
                }
            }
            _ => {
                let other = &pool[rng.random_range(0..pool.len())];
                if !other.is_empty() {
                    let a = rng.random_range(0..other.len());
                    let b = (a + rng.random_range(1..=256)).min(other.len());
                    let at = rng.random_range(0..=len);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
        }
    }
    input.truncate(1 << 20);
}

/// Runs `entry` on mutations of `target`'s seeds for the configured time; panics (after
/// saving the input) when the entry point panics.
fn fuzz(target: &str, entry: fn(&[u8]) -> Option<String>) {
    let seconds: u64 = std::env::var("DRIFTSWEEP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let pool = seeds(target);
    let mut rng = StdRng::seed_from_u64(
        std::env::var("DRIFTSWEEP_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(21),
    );
    // Keep the default hook quiet: a caught panic is reported below, with its input.
    std::panic::set_hook(Box::new(|_| {}));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut execs, mut errors) = (0u64, BTreeSet::new());
    // Seeds first, unmutated, then mutations of seeds and of inputs that got far (an error
    // message not seen before).
    let mut queue: Vec<Vec<u8>> = pool.clone();
    while Instant::now() < deadline {
        let mut input = if execs < pool.len() as u64 {
            pool[execs as usize].clone()
        } else {
            queue[rng.random_range(0..queue.len())].clone()
        };
        if execs >= pool.len() as u64 {
            mutate(&mut rng, &mut input, &pool);
        }
        execs += 1;
        match std::panic::catch_unwind(|| entry(&input)) {
            Ok(Some(e)) => {
                let head: String = e.chars().take(60).collect();
                if errors.insert(head) && queue.len() < 4096 {
                    queue.push(input);
                }
            }
            Ok(None) => {}
            Err(panic) => {
                let _ = std::panic::take_hook();
                let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fuzz/artifacts")
                    .join(target);
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!("mutate-crash-{execs}"));
                std::fs::write(&file, &input).unwrap();
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "{target}: panic after {execs} executions: {what}; input in {}",
                    file.display()
                );
            }
        }
    }
    let _ = std::panic::take_hook();
    println!(
        "{target}: {execs} executions in {seconds} s, no panic, {} distinct errors",
        errors.len()
    );
}

fn err<T>(r: Result<T, impl ToString>) -> Option<String> {
    r.err().map(|e| e.to_string())
}

#[test]
#[ignore]
fn fuzz_sweep_file() {
    fuzz("sweep_file", |data| {
        let text = std::str::from_utf8(data).ok()?;
        // A directory that does not exist: included files fail to resolve.
        err(driftsweep::config::parse(
            Path::new("/nonexistent-fuzz-dir/sweep.yaml"),
            text,
        ))
    });
}

#[test]
#[ignore]
fn fuzz_gguf_header() {
    fuzz("gguf_header", |data| {
        err(driftsweep::model::gguf::inspect_bytes(data))
    });
}

#[test]
#[ignore]
fn fuzz_safetensors_header() {
    fuzz("safetensors_header", |data| {
        err(driftsweep::model::hf_dir::check_safetensors_bytes(data))
    });
}

#[test]
#[ignore]
fn fuzz_model_header() {
    fuzz("model_header", |data| {
        let (config, rest) = match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        err(driftsweep::model::hf_dir::check_header_bytes(config, rest))
    });
}

// The results directory and the Slurm writer (issue 34): each also asserts that nothing
// outside the directory changed, or that no script line is an injected command.

#[test]
#[ignore]
fn fuzz_report_json() {
    fuzz("report_json", entries::report_json);
}

#[test]
#[ignore]
fn fuzz_manifest() {
    fuzz("manifest", entries::manifest);
}

#[test]
#[ignore]
fn fuzz_pair_record() {
    fuzz("pair_record", entries::pair_record);
}

#[test]
#[ignore]
fn fuzz_run_record() {
    fuzz("run_record", entries::run_record);
}

#[test]
#[ignore]
fn fuzz_shard_plan() {
    fuzz("shard_plan", entries::shard_plan);
}

#[test]
#[ignore]
fn fuzz_shard_pair_record() {
    fuzz("shard_pair_record", entries::shard_pair_record);
}

#[test]
#[ignore]
fn fuzz_slurm_options() {
    fuzz("slurm_options", entries::slurm_options);
}

/// Every record target runs its seed unmutated and a few mutations, so the plain test suite
/// keeps the targets and their properties working (the long runs are the ignored tests).
#[test]
fn record_targets_hold_on_their_seeds() {
    for (target, entry) in [
        (
            "report_json",
            entries::report_json as fn(&[u8]) -> Option<String>,
        ),
        ("manifest", entries::manifest),
        ("pair_record", entries::pair_record),
        ("run_record", entries::run_record),
        ("shard_plan", entries::shard_plan),
        ("slurm_options", entries::slurm_options),
    ] {
        let seed = entries::seed_input(target).unwrap();
        assert_eq!(entry(&seed), None, "{target}: its seed is refused");
    }
    // Negative controls: a hostile input is refused, and the property check itself fires.
    assert!(entries::slurm_options(b"gpu\necho pwned").is_some());
    assert!(entries::pair_record(b"{").is_some());
    let sb = entries::Sandbox::new(&[]);
    std::fs::write(sb.dir("outside").join("new.txt"), "x").unwrap();
    let fired = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sb.assert_untouched(&[], "control")
    }));
    assert!(fired.is_err(), "a file written outside went unnoticed");
}
