//! The bad-input corpus: every sweep file under `tests/bad_input/` is wrong in one way. Each
//! must exit 2 before any model work, with an error that names the file and says what is
//! wrong (the words after `# expect:` on its first line), and never panic. The files that
//! point at broken models, templates or paths get them from `fixtures/`, made here.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// A GGUF whose header promises a 576 × 49152 f32 tensor and whose data section is empty.
fn truncated_gguf() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    let key = b"general.architecture";
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
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

/// The corpus copied into `root/corpus/`, with `fixtures/` beside the sweep files and two
/// files outside the corpus directory that escaping paths point at.
fn stage(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    let corpus = root.join("corpus");
    let fixtures = corpus.join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_input");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
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
            let o = Command::new(env!("CARGO_BIN_EXE_driftsweep"))
                .args(&args)
                .current_dir(&corpus)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            let problems: Vec<&str> = [
                (o.status.code() != Some(2), "exit code is not 2"),
                (!err.contains(&name), "the error does not name the file"),
                (!err.contains(&expect), "the expected words are missing"),
                (err.contains("panicked"), "it panicked"),
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
