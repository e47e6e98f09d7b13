//! Gemma 3 270M from its GGUF (fetched by `bash scripts/fetch_gemma3.sh`, the user's own
//! download under the Gemma terms; not fetched in CI, so these tests say why they skip without
//! it): the tokenizer read from the GGUF metadata (src/model/spm.rs) against reference
//! tokenizations made by transformers' GemmaConverter and by SentencePiece
//! (scripts/reference/ref_tokenize.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use driftsweep::model::gguf;

fn gemma() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gemma-3-270m-q4_k_m.gguf");
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "SKIPPED: {} is missing (run `bash scripts/fetch_gemma3.sh`; the weights are under \
             the Gemma terms, so CI does not fetch them)",
            p.display()
        );
        None
    }
}

/// Strings and their ids as transformers' GemmaConverter tokenizes them (no BOS): Unicode,
/// emoji, digits, whitespace runs, tabs, newlines, code, control tokens, bytes outside the
/// vocabulary (scripts/reference/ref_tokenize.py, engine `transformers`).
const CASES: &[(&str, &[u32])] = &[
    ("Hello, world!", &[9259, 236764, 1902, 236888]),
    (
        "The capital of France is Paris.",
        &[818, 5279, 529, 7001, 563, 9079, 236761],
    ),
    (
        "  two  spaces\tand\ttabs\n\nnew lines   ",
        &[
            138, 13498, 138, 35220, 255968, 624, 255968, 39218, 108, 1951, 4463, 139,
        ],
    ),
    (
        "Ünïcödé: 日本語のテキスト, emoji 🤖🚀, Ελληνικά",
        &[
            238194, 236749, 238527, 236755, 55515, 236859, 236787, 33375, 238582, 236945, 95830,
            236764, 64334, 236743, 246143, 242015, 236764, 23883, 109959, 42220,
        ],
    ),
    (
        "digits 1234567890 3.14159 2026-12-01",
        &[
            67161, 236743, 236770, 236778, 236800, 236812, 236810, 236825, 236832, 236828, 236819,
            236771, 236743, 236800, 236761, 236770, 236812, 236770, 236810, 236819, 236743, 236778,
            236771, 236778, 236825, 236772, 236770, 236778, 236772, 236771, 236770,
        ],
    ),
    (
        "fn main() {\n    println!(\"{}\", x + 1);\n}",
        &[
            15059, 1689, 825, 642, 107, 140, 4629, 183228, 1123, 900, 236743, 236770, 626, 107,
            236783,
        ],
    ),
    (
        "<start_of_turn>user\nhi<end_of_turn>",
        &[105, 2364, 107, 2202, 106],
    ),
    (
        "\u{0}\u{1} odd bytes \u{AD}",
        &[238, 249732, 11049, 17234, 181181],
    ),
];

#[test]
fn tokenizer_from_gguf_metadata_matches_transformers() {
    let Some(path) = gemma() else { return };
    let t = gguf::tokenizer(&path).unwrap();
    assert_eq!(t.bos_id, Some(2), "add_bos_token is true, BOS is 2");
    assert_eq!(t.eos_id, Some(1));
    assert!(t.special_ids.contains(&105) && t.special_ids.contains(&106));
    for (text, want) in CASES {
        let got = t.tokenizer.encode(*text, false).unwrap().get_ids().to_vec();
        assert_eq!(&got, want, "{text:?}");
        assert_eq!(t.tokenizer.decode(&got, false).unwrap(), *text, "{text:?}");
    }
}

/// A python with sentencepiece, protobuf, transformers and gguf, or why there is none.
fn python() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = std::env::var_os("DRIFTSWEEP_REFERENCE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".reference-venv/bin/python"));
    let ok = Command::new(&p)
        .args([
            "-c",
            "import sentencepiece, google.protobuf, transformers, gguf",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(p)
    } else {
        Err(format!(
            "{} lacks sentencepiece, protobuf, transformers or gguf (install \
             scripts/reference/requirements-tokenize.txt into .reference-venv)",
            p.display()
        ))
    }
}

fn reference(py: &Path, path: &Path, texts: &[String], engine: &str) -> Vec<Vec<u32>> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.json");
    let out = tmp.path().join("out.json");
    std::fs::write(&input, serde_json::to_string(texts).unwrap()).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(py)
        .arg(root.join("scripts/reference/ref_tokenize.py"))
        .args([path.as_os_str(), input.as_os_str(), out.as_os_str()])
        .arg(engine)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

#[test]
fn tokenizer_matches_both_references_on_the_readme() {
    let Some(path) = gemma() else { return };
    let py = match python() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let t = gguf::tokenizer(&path).unwrap();
    // Every line of the README and of this file: prose, tables, code, Unicode, indentation.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut texts: Vec<String> = Vec::new();
    for f in ["README.md", "tests/gemma3.rs", "src/model/spm.rs"] {
        let s = std::fs::read_to_string(root.join(f)).unwrap();
        texts.extend(s.lines().map(str::to_string));
        texts.push(s);
    }
    texts.extend(CASES.iter().map(|(s, _)| s.to_string()));
    let ours: Vec<Vec<u32>> = texts
        .iter()
        .map(|s| {
            t.tokenizer
                .encode(s.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec()
        })
        .collect();
    let hf = reference(&py, &path, &texts, "transformers");
    let mut checked = 0;
    for ((s, o), r) in texts.iter().zip(&ours).zip(&hf) {
        assert_eq!(o, r, "transformers tokenizes {s:?} otherwise");
        checked += o.len();
    }
    // SentencePiece itself never emits the whitespace-run tokens and reads control tokens as
    // text (see ref_tokenize.py): compare where neither occurs.
    let sp_texts: Vec<String> = texts
        .iter()
        .filter(|s| !s.contains("  ") && !s.contains('<'))
        .cloned()
        .collect();
    let sp = reference(&py, &path, &sp_texts, "sentencepiece");
    for (s, r) in sp_texts.iter().zip(&sp) {
        let o = t
            .tokenizer
            .encode(s.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(&o, r, "SentencePiece tokenizes {s:?} otherwise");
    }
    println!(
        "Gemma 3 tokenizer: {} strings ({checked} tokens) as transformers, {} as SentencePiece",
        texts.len(),
        sp_texts.len()
    );
}
