//! A results directory holds only what driftsweep wrote, and one writer at a time (issue 21):
//! the user's own files survive every run, `--start-over` and a repeated merge; a directory
//! driftsweep did not make is refused; a second process is refused while the first holds the
//! lock, and a killed run leaves no lock behind. Two processes are synchronised by the lock
//! itself or by `--exit-after-runs`, never by sleeping.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use driftsweep::exit;

mod common;
use common::{code, read_json, run, stderr, text};

const SWEEP: &str = r#"
name: safety
model: builtin:tiny-llama
prompts:
  - id: r8
    random_tokens: 8
sweep:
  span: [8]
  dtype: [f32]
  kv_aligned: [true, false]
  seed: [0]
"#;

const OTHER_SWEEP: &str = r#"
name: other
model: builtin:tiny-llama
prompts:
  - id: r6
    random_tokens: 6
sweep:
  span: [4]
  dtype: [f32]
  kv_aligned: [true]
  seed: [0]
"#;

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::write(tmp.path(), "sweep.yaml", SWEEP);
    let out = tmp.path().join("out");
    (tmp, cfg, out)
}

fn run_into(cfg: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

/// The user's files, by path relative to `dir`, with their contents; names chosen to look
/// like driftsweep's (temporaries, reports, records) without being its own.
const USER_FILES: [&str; 7] = [
    ".env.tmpl",
    ".gitlab-ci.tmpl.yml",
    ".report.json.tmp123",
    "notes.md",
    "runs/mine.json",
    "pairs/.hidden.tmp",
    "logits/keep.safetensors",
];

fn plant_user_files(dir: &Path) {
    for f in USER_FILES {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("user data: {f}")).unwrap();
    }
}

fn assert_user_files_survive(dir: &Path, when: &str) {
    for f in USER_FILES {
        let p = dir.join(f);
        let got = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{when}: {f}: {e}"));
        assert_eq!(got, format!("user data: {f}"), "{when}: {f}");
    }
}

#[test]
fn user_files_survive_resume_and_start_over() {
    let (_tmp, cfg, out) = setup();
    let first = run_into(&cfg, &out, &[]);
    assert_eq!(code(&first), exit::PASS, "{}", text(&first));
    assert!(out.join("driftsweep.marker.json").is_file());
    plant_user_files(&out);
    // The cleanup of stale temporaries runs on every start: it must not take these.
    let again = run_into(&cfg, &out, &[]);
    assert_eq!(code(&again), exit::PASS, "{}", text(&again));
    assert_user_files_survive(&out, "resume");
    let over = run_into(&cfg, &out, &["--start-over"]);
    assert_eq!(code(&over), exit::PASS, "{}", text(&over));
    assert_user_files_survive(&out, "--start-over");
    let err = stderr(&over);
    assert!(
        err.contains("left alone") && err.contains("notes.md"),
        "{err}"
    );
    // And start-over did start over: one session, the pairs recomputed.
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["sessions"].as_array().unwrap().len(), 1, "{m}");
    // --start-over with another sweep replaces the results, still leaving the user's files.
    let other = common::write(cfg.parent().unwrap(), "other.yaml", OTHER_SWEEP);
    let refused = run_into(&other, &out, &[]);
    assert_eq!(code(&refused), exit::BAD_INPUT, "{}", text(&refused));
    let replaced = run_into(&other, &out, &["--start-over"]);
    assert_eq!(code(&replaced), exit::PASS, "{}", text(&replaced));
    assert_user_files_survive(&out, "--start-over with another sweep");
    assert!(
        !out.join("runs/r8.s8.f32.kv1.seed0.prefill.json").exists(),
        "the first sweep's records are gone"
    );
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["sweep"]["name"], "other", "{r}");
}

#[test]
fn a_directory_driftsweep_did_not_make_is_refused_and_untouched() {
    let (_tmp, cfg, out) = setup();
    // It even looks like results: a manifest and records, but no marker.
    std::fs::create_dir_all(out.join("runs")).unwrap();
    std::fs::write(out.join("manifest.json"), "{\"mine\": true}").unwrap();
    plant_user_files(&out);
    for extra in [&[][..], &["--start-over"][..]] {
        let o = run_into(&cfg, &out, extra);
        assert_eq!(code(&o), exit::BAD_INPUT, "{extra:?}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains(out.to_str().unwrap()),
            "names the directory: {err}"
        );
        assert!(err.contains("marker"), "{err}");
        assert_user_files_survive(&out, &format!("{extra:?}"));
        assert_eq!(
            std::fs::read_to_string(out.join("manifest.json")).unwrap(),
            "{\"mine\": true}"
        );
        assert!(!out.join("report.json").exists());
        assert!(!out.join("driftsweep.lock").exists());
    }
}

#[test]
fn the_working_directory_is_never_a_default_target() {
    let (tmp, cfg, _) = setup();
    // `output: ""` would mean the working directory, whatever it holds.
    let text_with_empty = format!("{SWEEP}output: \"\"\n");
    std::fs::write(&cfg, text_with_empty).unwrap();
    let o = common::bin()
        .args(["run", cfg.to_str().unwrap()])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("`output`"), "{}", text(&o));
    assert!(!tmp.path().join("runs").exists());
    assert!(!tmp.path().join("report.json").exists());
}

/// Holds `dir`'s lock as another driftsweep would, with `pid` in the lock file.
fn hold_lock(dir: &Path, pid: u32) -> std::fs::File {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("driftsweep.lock"))
        .unwrap();
    f.try_lock().unwrap();
    writeln!(f, "{pid}").unwrap();
    f
}

#[test]
fn a_second_writer_is_refused_naming_the_directory_and_the_holder() {
    let (_tmp, cfg, out) = setup();
    let first = run_into(&cfg, &out, &[]);
    assert_eq!(code(&first), exit::PASS, "{}", text(&first));
    let report_before = std::fs::read(out.join("report.json")).unwrap();
    let held = hold_lock(&out, 424242);
    let dir = out.to_str().unwrap();
    for args in [
        vec!["run", cfg.to_str().unwrap(), "--out", dir],
        vec!["run", cfg.to_str().unwrap(), "--out", dir, "--start-over"],
        vec!["report", dir],
        vec!["verify", dir],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), exit::BAD_INPUT, "{args:?}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains(dir) && err.contains("pid 424242"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("report.json")).unwrap(),
        report_before
    );
    drop(held);
    // The control: with the lock released, the same commands work.
    let o = run(&["report", dir]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
}

#[test]
fn a_killed_run_leaves_no_lock_behind() {
    let (_tmp, cfg, out) = setup();
    let killed = run_into(&cfg, &out, &["--exit-after-runs", "1"]);
    assert_eq!(
        killed.status.code(),
        Some(exit::KILLED),
        "{}",
        text(&killed)
    );
    assert!(out.join("driftsweep.lock").exists(), "the lock file stays");
    let resumed = run_into(&cfg, &out, &[]);
    assert_eq!(code(&resumed), exit::PASS, "{}", text(&resumed));
}

#[test]
fn two_processes_on_one_directory_never_both_write() {
    let (_tmp, cfg, out) = setup();
    let other = common::write(cfg.parent().unwrap(), "other.yaml", OTHER_SWEEP);
    // Started together; whichever takes the lock runs, the other is refused, or (when the
    // first is already done) resumes the same sweep or is refused as another sweep.
    let spawn = |c: &Path| {
        common::bin()
            .args(["run", c.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(&cfg);
    let b = spawn(&other);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [code(&a), code(&b)];
    assert!(
        codes.contains(&exit::PASS) && codes.contains(&exit::BAD_INPUT),
        "exactly one of two different sweeps writes the directory: {}\n{}",
        text(&a),
        text(&b)
    );
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["sessions"].as_array().unwrap().len(), 1, "{m}");
    let r = read_json(&out.join("report.json"));
    let winner = if codes[0] == exit::PASS {
        "safety"
    } else {
        "other"
    };
    assert_eq!(r["sweep"]["name"], winner);
    let names: Vec<String> = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prompt"].as_str().unwrap().to_string())
        .collect();
    let prompt = if winner == "safety" { "r8" } else { "r6" };
    assert!(
        names.iter().all(|n| n == prompt),
        "one sweep's pairs only: {names:?}"
    );
}

#[test]
fn verify_names_the_pairs_it_cannot_find() {
    let (_tmp, cfg, out) = setup();
    let first = run_into(&cfg, &out, &[]);
    assert_eq!(code(&first), exit::PASS, "{}", text(&first));
    let dir = out.to_str().unwrap();
    let ok = run(&["verify", dir, "--all"]);
    assert_eq!(code(&ok), exit::PASS, "the control: {}", text(&ok));
    std::fs::remove_file(out.join("pairs/r8.s8.f32.kv0.seed0.json")).unwrap();
    let o = run(&["verify", dir, "--all"]);
    assert_eq!(code(&o), exit::INCOMPLETE, "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("missing") && stdout.contains("r8.s8.f32.kv0.seed0"),
        "{stdout}"
    );
    // And `report` no longer says PASS for a pair whose run record is gone.
    std::fs::remove_file(out.join("runs/r8.s8.f32.kv1.seed0.decode.json")).unwrap();
    let rep = run(&["report", dir]);
    assert_eq!(code(&rep), exit::INCOMPLETE, "{}", text(&rep));
}

/// Whether process `pid` holds `file` open (its /proc fd table names it).
fn holds_open(pid: u32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == file))
        })
        .unwrap_or(false)
}

#[test]
fn sigterm_during_setup_ends_the_process_at_once_and_writes_nothing() {
    // Setup made endless on purpose: SmolLM2's GGUF extended (sparse) to 1 TiB, so the
    // model's sha256 (computed while the sweep is still being set up) would take hours.
    // The signal is sent once the process is seen holding the file open, i.e. in setup, and
    // it must end the process there: nothing depends on how long anything takes.
    let src =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !src.is_file() {
        println!(
            "SKIPPED: {} is missing (bash scripts/fetch_smollm2.sh)",
            src.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("huge.gguf");
    std::fs::copy(&src, &model).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let model = model.canonicalize().unwrap();
    let cfg = common::write(
        tmp.path(),
        "s.yaml",
        &format!(
            "name: endless_setup\nmodel: {}\nprompts:\n  - {{id: r, random_tokens: 4}}\n\
             continuation: random\nsweep:\n  span: [2]\n  dtype: [f32]\n  kv_aligned: [true]\n  seed: [0]\n",
            model.display()
        ),
    );
    let out = tmp.path().join("res");
    let mut child = common::bin()
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("DRIFTSWEEP_CACHE_DIR", tmp.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait for the condition, not for a time: the process holds the model file open.
    while !holds_open(pid, &model) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it opened the model: {}",
            text(&child.wait_with_output().unwrap())
        );
        std::thread::yield_now();
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), exit::INTERRUPTED, "{}", text(&o));
    assert!(
        stderr(&o).contains("interrupted during setup: nothing was written"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "setup wrote {}", out.display());
}

#[test]
fn merge_refuses_a_shard_another_process_holds() {
    let (tmp, _, _) = setup();
    // Two seeds: two units of work, one per shard.
    let cfg = common::write(
        tmp.path(),
        "two.yaml",
        &SWEEP.replace("seed: [0]", "seed: [0, 1]"),
    );
    let c = cfg.to_str().unwrap();
    let shards: Vec<PathBuf> = (0..2)
        .map(|k| tmp.path().join(format!("shard{k}")))
        .collect();
    for (k, dir) in shards.iter().enumerate() {
        let spec = format!("{k}/2");
        let o = run(&["run", c, "--shard", &spec, "--out", dir.to_str().unwrap()]);
        assert!([exit::PASS, exit::FAIL].contains(&code(&o)), "{}", text(&o));
    }
    let merged = tmp.path().join("merged");
    let args = |m: &Path| -> Vec<String> {
        let mut a = vec!["merge".to_string(), m.to_str().unwrap().to_string()];
        a.extend(shards.iter().map(|d| d.to_str().unwrap().to_string()));
        a
    };
    let held = hold_lock(&shards[1], 434343);
    let a = args(&merged);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(shards[1].to_str().unwrap()) && err.contains("pid 434343"),
        "{err}"
    );
    assert!(!merged.join("report.json").exists());
    drop(held);
    // The control: released, the same merge goes through.
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!([exit::PASS, exit::FAIL].contains(&code(&o)), "{}", text(&o));
    assert!(merged.join("report.json").is_file());
}
