//! Model paths: relative to the sweep file (with the working directory as a warned fallback),
//! the repository's own sweep files held to it, and the fetch hint for a missing GGUF.

use driftsweep::exit;

mod common;
use common::{bin, code, small_on, stderr, text, tiny, write, write_hf_dir};

#[test]
fn model_paths_are_relative_to_the_sweep_file_with_the_working_directory_as_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let sweeps = tmp.path().join("sweeps");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    write_hf_dir(&sweeps.join("tiny"), "llama", &tiny("llama"), false);
    let cfg = write(&sweeps, "s.yaml", &small_on("tiny"));
    let out = tmp.path().join("out");
    let o = bin()
        .current_dir(&elsewhere)
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert!(out.join("report.json").is_file());
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    // Found from the working directory only: still taken, with a warning.
    write_hf_dir(&elsewhere.join("cwd_tiny"), "llama", &tiny("llama"), false);
    let cfg = write(&sweeps, "c.yaml", &small_on("cwd_tiny"));
    let o = bin()
        .current_dir(&elsewhere)
        .args(["plan", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert!(
        stderr(&o).contains("taking it from the working directory"),
        "{}",
        stderr(&o)
    );
}

/// The repository's own sweep files must not lean on the working-directory fallback: every
/// model file they name is found beside the sweep file, from whatever directory one runs.
#[test]
fn the_repositorys_sweep_files_name_models_from_their_own_directory() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let v: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut sources: Vec<&serde_yaml::Value> = vec![&v["model"]["source"]];
        if let Some(models) = v["models"].as_mapping() {
            sources.extend(models.values().map(|m| &m["source"]));
        }
        for source in sources.into_iter().filter_map(|s| s.as_str()) {
            if source.starts_with("builtin:") || source.starts_with("hf:") {
                continue;
            }
            // Lexically, as the loader joins it: configs/<source> must land in models/.
            let mut resolved = std::path::PathBuf::from("configs");
            for c in std::path::Path::new(source).components() {
                match c {
                    std::path::Component::ParentDir => assert!(resolved.pop(), "{source}"),
                    other => resolved.push(other),
                }
            }
            assert!(
                resolved.starts_with("models"),
                "{}: `{source}` is read from the working directory, not beside the sweep file",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} model paths checked");
}

#[test]
fn a_missing_gguf_gets_the_fetch_hint_only_at_smollm2s_default_path() {
    let tmp = tempfile::tempdir().unwrap();
    for (source, hint) in [
        ("models/SmolLM2-135M-Instruct.Q4_1.gguf", true),
        ("/nonexistent/elsewhere.gguf", false),
    ] {
        let cfg = write(tmp.path(), "g.yaml", &small_on(source));
        // From the temporary directory: the working-directory fallback must not find the
        // repository's own models/ (fetched in CI).
        let o = bin()
            .current_dir(tmp.path())
            .args(["plan", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
        assert!(stderr(&o).contains("no such GGUF file"), "{}", stderr(&o));
        assert_eq!(
            stderr(&o).contains("fetch_smollm2.sh"),
            hint,
            "{}",
            stderr(&o)
        );
    }
}
