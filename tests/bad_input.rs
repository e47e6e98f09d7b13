//! The bad-input corpus: every sweep file under `tests/bad_input/` is wrong in one way. Each
//! must exit 2 before any model work, with an error that names the file and says what is
//! wrong (the words after `# expect:` on its first line), and never panic. The files that
//! point at broken models, templates or paths get them from `fixtures/`, made here.

use std::path::{Path, PathBuf};
use std::process::Command;

use driftsweep::exit;
use driftsweep::model::builtin;

mod common;

/// A Hugging Face directory with the built-in recipe's weights for a `vocab`-row embedding
/// and a 1024-token tokenizer.
fn hf_dir(dir: &Path, vocab: usize) {
    let mut cfg = common::tiny("llama");
    cfg.vocab_size = vocab;
    common::write_hf_dir(dir, "llama", &cfg, false);
    builtin::tokenizer(1024)
        .unwrap()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
}

/// The start of a GGUF v3 file: magic, version, tensor count, one metadata entry named
/// `key` (its type and value follow).
fn gguf_start(tensors: u64, key: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&tensors.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
    b
}

/// A GGUF whose header promises a 576 × 49152 f32 tensor and whose data section is empty.
fn truncated_gguf() -> Vec<u8> {
    let mut b = gguf_start(1, b"general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    b.extend_from_slice(&5u64.to_le_bytes());
    b.extend_from_slice(b"llama");
    let name = b"token_embd.weight";
    b.extend_from_slice(&(name.len() as u64).to_le_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&576u64.to_le_bytes());
    b.extend_from_slice(&49152u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // f32
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    b
}

/// A GGUF with no tensors and one metadata entry, `general.alignment = a` (u32).
fn gguf_with_alignment(a: u32) -> Vec<u8> {
    let mut b = gguf_start(0, b"general.alignment");
    b.extend_from_slice(&4u32.to_le_bytes()); // u32
    b.extend_from_slice(&a.to_le_bytes());
    b
}

/// The corpus copied into `root/corpus/`, with `fixtures/` beside the sweep files and two
/// files outside the corpus directory that escaping paths point at.
fn stage(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    let corpus = root.join("corpus");
    let fixtures = corpus.join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_input");
    let files = common::yaml_files(&src);
    for f in &files {
        std::fs::copy(f, corpus.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(fixtures.join("truncated.gguf"), truncated_gguf()).unwrap();
    std::fs::write(
        fixtures.join("garbage.gguf"),
        b"this is not a GGUF file, only text with the right extension\n",
    )
    .unwrap();
    hf_dir(&fixtures.join("hf_lies"), 1024);
    let st = fixtures.join("hf_lies/model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    // The header's length field claims far more bytes than the file holds.
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    hf_dir(&fixtures.join("hf_vocab"), 2048);
    std::fs::write(fixtures.join("a_file"), "a file, not a directory").unwrap();
    std::fs::write(
        fixtures.join("broken.md.tera"),
        "# {{ r.sweep.name }}\n{% if r.verdict %}unclosed\n",
    )
    .unwrap();
    // Issue 21: inputs that block, never end, or lie about their size.
    let fifo = fixtures.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    std::fs::write(
        fixtures.join("undefined.md.tera"),
        "# {{ r.sweep.name }}\n{{ nowhere.at_all }}\n",
    )
    .unwrap();
    // 10^10 lines: the sample rendering must stop at the output cap, not exhaust memory.
    std::fs::write(
        fixtures.join("endless_output.md.tera"),
        "{% for a in range(end=100000) %}{% for b in range(end=100000) %}\
         a line of output that repeats\n{% endfor %}{% endfor %}",
    )
    .unwrap();
    std::fs::write(fixtures.join("huge_prompt.txt"), "word ".repeat(40_000)).unwrap();
    for (name, key, value) in [
        ("hf_zero_hidden", "hidden_size", serde_json::json!(0)),
        ("hf_blocks", "num_hidden_layers", serde_json::json!(3)),
        ("hf_shape", "intermediate_size", serde_json::json!(100)),
        (
            "hf_context",
            "max_position_embeddings",
            serde_json::json!(1u64 << 40),
        ),
        ("hf_zero_vocab", "vocab_size", serde_json::json!(0)),
    ] {
        let dir = fixtures.join(name);
        hf_dir(&dir, 1024);
        let path = dir.join("config.json");
        let mut j = common::read_json(&path);
        j[key] = value;
        std::fs::write(&path, j.to_string()).unwrap();
    }
    std::fs::write(fixtures.join("alignment3.gguf"), gguf_with_alignment(3)).unwrap();
    std::fs::write(root.join("outside.md.tera"), "# {{ r.sweep.name }}\n").unwrap();
    std::fs::write(root.join("secret.txt"), "not for sweep files").unwrap();
    let staged = files
        .iter()
        .map(|f| corpus.join(f.file_name().unwrap()))
        .collect();
    (corpus, staged)
}

#[test]
fn every_bad_input_exits_2_with_a_clear_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, files) = stage(tmp.path());
    assert!(files.len() >= 30, "the corpus holds {} cases", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .trim_start_matches('\u{feff}')
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <words>`"))
            .to_string();
        let out = tmp.path().join(format!("out_{name}"));
        // The case about the file's `output:` runs without `--out`, which would override it;
        // `plan` never writes, so only `run` checks the output directory.
        let cases = if name.contains("unwritable_output") {
            vec![vec!["run", name.as_str()]]
        } else {
            vec![
                vec!["plan", name.as_str()],
                vec!["run", name.as_str(), "--out", out.to_str().unwrap()],
            ]
        };
        for args in cases {
            // With backtraces asked for, the message must still be one line per cause.
            let o = Command::new(env!("CARGO_BIN_EXE_driftsweep"))
                .args(&args)
                .env("RUST_BACKTRACE", "1")
                .current_dir(&corpus)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            let problems: Vec<&str> = [
                (
                    o.status.code() != Some(exit::BAD_INPUT),
                    "exit code is not 2",
                ),
                (!err.contains(&name), "the error does not name the file"),
                (!err.contains(&expect), "the expected words are missing"),
                (err.contains("panicked"), "it panicked"),
                (
                    looks_like_a_backtrace(&err),
                    "a stack trace is in the message",
                ),
                (out.join("report.json").exists(), "it wrote a report"),
            ]
            .into_iter()
            .filter_map(|(bad, why)| bad.then_some(why))
            .collect();
            if !problems.is_empty() {
                failures.push(format!(
                    "{name} ({}): {}; expected `{expect}`; exit {:?}; stderr: {err}",
                    args[0],
                    problems.join(", "),
                    o.status.code()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Whether `text` holds a stack trace (std's format: numbered frames, `at file:line`).
fn looks_like_a_backtrace(text: &str) -> bool {
    text.contains("stack backtrace")
        || text.lines().any(|l| {
            let t = l.trim_start();
            t.split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                || (t.starts_with("at ") && t.contains(".rs:"))
        })
}

#[test]
fn the_backtrace_check_sees_a_backtrace() {
    // The negative control of the check above.
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    assert!(looks_like_a_backtrace(&bt), "{bt}");
    assert!(!looks_like_a_backtrace(
        "x.yaml: `model.source`: not a GGUF file: magic"
    ));
}

/// Runs `driftsweep plan FILE` and returns (exit code, stderr).
fn plan(file: &Path) -> (Option<i32>, String) {
    let o = common::run(&["plan", file.to_str().unwrap()]);
    (o.status.code(), common::stderr(&o))
}

#[test]
fn a_sweep_file_that_is_a_fifo_a_device_or_too_large_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("sweep.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Nobody writes the FIFO: a reader would block forever; /dev/zero never ends.
    for f in [fifo.as_path(), Path::new("/dev/zero")] {
        let (code, err) = plan(f);
        assert_eq!(code, Some(exit::BAD_INPUT), "{}: {err}", f.display());
        assert!(err.contains("not a regular file"), "{err}");
    }
    let big = tmp.path().join("big.yaml");
    let mut text = String::from("name: big\n");
    while text.len() as u64 <= driftsweep::config::MAX_SWEEP_FILE_BYTES {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).unwrap();
    let (code, err) = plan(&big);
    assert_eq!(code, Some(exit::BAD_INPUT), "{err}");
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn a_byte_order_mark_is_accepted_and_the_limit_on_pairs_can_be_raised() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_input");
    // The BOM case with its one mistake fixed loads: the mark itself is not an error.
    let bom = std::fs::read_to_string(corpus.join("49_bom_then_unknown_key.yaml")).unwrap();
    assert!(bom.starts_with('\u{feff}'));
    let fixed = tmp.path().join("bom.yaml");
    std::fs::write(&fixed, bom.replace("nmae:", "name:")).unwrap();
    let (code, err) = plan(&fixed);
    assert_eq!(code, Some(exit::PASS), "{err}");
    // The plan-size case passes with the limit raised (the limit is what refused it).
    let many = corpus.join("50_too_many_pairs.yaml");
    let o = common::run(&["plan", many.to_str().unwrap(), "--max-pairs", "30000"]);
    assert_eq!(common::code(&o), exit::PASS, "{}", common::text(&o));
}
