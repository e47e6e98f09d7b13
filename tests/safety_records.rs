//! A results directory is untrusted input (issue 34): ids read from it never lead outside it,
//! a record that names another pair or verdict than its evidence gives is refused (TAMPERED,
//! exit 2), a gate never compares results with themselves or with another sweep's, and a
//! clear or merge that fails part-way leaves no report beside missing records. Each test
//! has its negative control: the untouched directory passes the same command.

use std::path::{Path, PathBuf};

use driftsweep::exit;
use serde_json::Value;

mod common;
use common::{code, read_json, run, stderr, text};

const SWEEP: &str = r#"
name: records
model: builtin:tiny-llama
prompts:
  - id: r8
    random_tokens: 8
sweep:
  span: [8]
  dtype: [f32]
  kv_aligned: [true, false]
  seed: [0, 1]
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

/// The kv_aligned pair of seed 0: PASS_EQUIV on the built-in model.
const PAIR: &str = "r8.s8.f32.kv1.seed0";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A finished sweep in `<tmp>/out`; returns (tmp, sweep file, out).
fn swept() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::write(tmp.path(), "sweep.yaml", SWEEP);
    let out = tmp.path().join("out");
    let o = run(&["run", s(&cfg), "--out", s(&out), "--no-progress"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    (tmp, cfg, out)
}

/// Rewrites the JSON file `p` through `f`.
fn edit(p: &Path, f: impl FnOnce(&mut Value)) {
    let mut v = read_json(p);
    f(&mut v);
    std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A copy of the directory `from` at `to` (records only, no lock held).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn refused(o: &std::process::Output, says: &str) {
    assert_eq!(code(o), exit::BAD_INPUT, "{}", text(o));
    assert!(stderr(o).contains(says), "wants `{says}`: {}", text(o));
}

#[test]
fn an_id_that_leaves_the_directory_deletes_and_reads_nothing() {
    let (tmp, cfg, out) = swept();
    // `runs/../../victim.prefill.json` is `<tmp>/victim.prefill.json`.
    let victim = tmp.path().join("victim.prefill.json");
    std::fs::write(&victim, "not yours").unwrap();
    edit(&out.join("manifest.json"), |m| {
        m["pairs"][0]["id"] = "../../victim".into()
    });
    let o = run(&[
        "run",
        s(&cfg),
        "--out",
        s(&out),
        "--start-over",
        "--no-progress",
    ]);
    refused(&o, "pairs[].id");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not yours");
    assert!(out.join("report.json").is_file(), "nothing was deleted");
    refused(&run(&["report", s(&out)]), "pairs[].id");
    // A pair id given twice is refused too: the last would silently win.
    edit(&out.join("manifest.json"), |m| {
        let first = m["pairs"][1].clone();
        m["pairs"][0] = first;
    });
    refused(&run(&["report", s(&out)]), "appears twice");
}

#[test]
fn a_record_under_another_name_or_a_link_is_refused() {
    let (tmp, _cfg, out) = swept();
    let ok = run(&["report", s(&out)]);
    assert_eq!(code(&ok), exit::PASS, "negative control: {}", text(&ok));
    let run_file = out.join(format!("runs/{PAIR}.prefill.json"));
    let saved = std::fs::read(&run_file).unwrap();
    edit(&run_file, |r| {
        r["id"] = "r8.s8.f32.kv0.seed0.prefill".into()
    });
    refused(&run(&["report", s(&out)]), "its file name says");
    std::fs::write(&run_file, saved).unwrap();
    // A link in place of a record could lead anywhere: refused, not followed.
    let outside = tmp.path().join("outside.json");
    let pair_file = out.join(format!("pairs/{PAIR}.json"));
    std::fs::rename(&pair_file, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &pair_file).unwrap();
    refused(&run(&["report", s(&out)]), "symbolic link");
}

#[test]
fn a_verdict_its_own_evidence_denies_is_named_tampered() {
    let (_tmp, _cfg, out) = swept();
    let pair_file = out.join(format!("pairs/{PAIR}.json"));
    let saved = std::fs::read(&pair_file).unwrap();
    let tamper = |f: &dyn Fn(&mut Value)| {
        std::fs::write(&pair_file, &saved).unwrap();
        edit(&pair_file, f);
        run(&["report", s(&out)])
    };
    // PASS over its own limits.
    refused(
        &tamper(&|p| p["metrics"]["max_abs_diff"] = 5.0.into()),
        "TAMPERED",
    );
    // PASS with the limits loosened in the record itself (not in manifest.json).
    let o = tamper(&|p| {
        p["metrics"]["max_abs_diff"] = 5.0.into();
        p["limits"]["max_abs_diff"] = 1e9.into();
    });
    refused(&o, "manifest.json gives");
    // PASS with every metric null.
    refused(&tamper(&|p| p["metrics"] = Value::Null), "no metrics");
    // PASS with its runs failed.
    std::fs::write(&pair_file, &saved).unwrap();
    let run_file = out.join(format!("runs/{PAIR}.decode.json"));
    edit(&run_file, |r| r["status"] = "failed".into());
    refused(&run(&["report", s(&out)]), "did not finish");
    // A tampered shard is not merged, and `verify` refuses rather than reproduce it.
    refused(&run(&["verify", s(&out), "--all"]), "did not finish");
}

#[test]
fn verify_all_never_calls_garbage_records_identical() {
    let (_tmp, _cfg, out) = swept();
    let ok = run(&["verify", s(&out), "--all"]);
    assert_eq!(code(&ok), exit::PASS, "negative control: {}", text(&ok));
    for f in std::fs::read_dir(out.join("runs")).unwrap().flatten() {
        std::fs::write(f.path(), "{\"garbage\": true}").unwrap();
    }
    let o = run(&["verify", s(&out), "--all"]);
    refused(&o, "malformed");
    assert!(!text(&o).contains("identical"), "{}", text(&o));
}

#[test]
fn a_baseline_that_is_the_output_or_another_sweep_is_refused_before_running() {
    let (tmp, cfg, out) = swept();
    let before = std::fs::read(out.join("report.json")).unwrap();
    let o = run(&[
        "run",
        s(&cfg),
        "--out",
        s(&out),
        "--start-over",
        "--baseline",
        s(&out),
        "--no-progress",
    ]);
    refused(&o, "--baseline");
    assert_eq!(
        std::fs::read(out.join("report.json")).unwrap(),
        before,
        "nothing ran"
    );
    let other_cfg = common::write(tmp.path(), "other.yaml", OTHER_SWEEP);
    let other = tmp.path().join("other");
    let o = run(&["run", s(&other_cfg), "--out", s(&other), "--no-progress"]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let fresh = tmp.path().join("fresh");
    let o = run(&[
        "run",
        s(&cfg),
        "--out",
        s(&fresh),
        "--baseline",
        s(&other),
        "--no-progress",
    ]);
    refused(&o, "holds results of sweep `other`");
    assert!(
        !fresh.exists(),
        "refused before the sweep ran: {}",
        text(&o)
    );
    // The control: the sweep's own earlier results are a baseline.
    let o = run(&[
        "run",
        s(&cfg),
        "--out",
        s(&fresh),
        "--baseline",
        s(&out),
        "--no-progress",
    ]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
}

#[test]
fn diff_refuses_doctored_report_json_and_says_what_a_non_file_is() {
    let (tmp, _cfg, out) = swept();
    let new = tmp.path().join("new");
    copy_dir(&out, &new);
    let ok = run(&["diff", s(&out), s(&new)]);
    assert_eq!(code(&ok), exit::PASS, "negative control: {}", text(&ok));
    let report = new.join("report.json");
    let saved = std::fs::read(&report).unwrap();
    edit(&report, |r| {
        let first = r["pairs"][0].clone();
        r["pairs"].as_array_mut().unwrap().push(first);
    });
    refused(&run(&["diff", s(&out), s(&new)]), "appears twice");
    std::fs::write(&report, &saved).unwrap();
    edit(&report, |r| {
        for p in r["pairs"].as_array_mut().unwrap() {
            p["metrics"]["max_abs_diff"] = 50.0.into();
        }
    });
    refused(&run(&["diff", s(&out), s(&new)]), "TAMPERED");
    std::fs::remove_file(&report).unwrap();
    std::fs::create_dir(&report).unwrap();
    refused(&run(&["diff", s(&out), s(&new)]), "is a directory");
    std::fs::remove_dir(&report).unwrap();
    let fifo = std::process::Command::new("mkfifo").arg(&report).status();
    if fifo.is_ok_and(|s| s.success()) {
        refused(&run(&["diff", s(&out), s(&new)]), "named pipe");
    }
    let o = run(&["diff", s(&out), s(&out), "--fail-on", "0.5"]);
    refused(&o, "`--fail-on`");
    assert!(!stderr(&o).contains("--fail-on: `fail-on`"), "{}", text(&o));
}

#[test]
fn a_failed_clear_leaves_no_report_beside_missing_records() {
    let (_tmp, cfg, out) = swept();
    // A record driftsweep cannot remove (a directory in its place) stops the clear.
    let blocker = out.join(format!("pairs/{PAIR}.json"));
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let o = run(&[
        "run",
        s(&cfg),
        "--out",
        s(&out),
        "--start-over",
        "--no-progress",
    ]);
    assert_ne!(code(&o), exit::PASS, "{}", text(&o));
    assert!(
        !out.join("report.json").exists(),
        "the reports go before the records: {}",
        text(&o)
    );
}

#[test]
fn report_removes_the_temporaries_a_killed_report_left() {
    let (_tmp, _cfg, out) = swept();
    let stale = out.join(".report.json.driftsweep-tmp-999999");
    std::fs::write(&stale, "half").unwrap();
    let mine = out.join(".report.json.tmp1");
    std::fs::write(&mine, "user's").unwrap();
    let o = run(&["report", s(&out)]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert!(!stale.exists(), "our own temporary goes");
    assert!(mine.exists(), "a name not of our making stays");
}

/// The sweep run as two shards in `<root>/s0` and `<root>/s1`.
fn two_shards(root: &Path) -> Vec<PathBuf> {
    let cfg = common::write(root, "sweep.yaml", SWEEP);
    let shards: Vec<PathBuf> = (0..2).map(|k| root.join(format!("s{k}"))).collect();
    for (k, d) in shards.iter().enumerate() {
        let spec = format!("{k}/2");
        let o = run(&[
            "run",
            s(&cfg),
            "--shard",
            &spec,
            "--out",
            s(d),
            "--no-progress",
        ]);
        assert!(code(&o) == exit::PASS, "{}", text(&o));
    }
    shards
}

/// Two shards merged into `dir/merged`, and a file of the user's (`notes.md`, "mine") put
/// there afterwards: what a later merge in place must keep.
fn merged_with_notes(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let shards = two_shards(dir);
    let merged = dir.join("merged");
    let o = run(&["merge", s(&merged), s(&shards[0]), s(&shards[1])]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    std::fs::write(merged.join("notes.md"), "mine").unwrap();
    (shards, merged)
}

#[test]
fn a_merge_settles_the_replaced_merges_a_killed_swap_left_and_names_what_it_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, merged) = merged_with_notes(tmp.path());
    let merge = || run(&["merge", s(&merged), s(&shards[0]), s(&shards[1])]);
    // Two merges killed between their renames: one left records only, the other a user's
    // file that the merge in place already has under the same name.
    let only_records = tmp.path().join(".merged.driftsweep-old-999998");
    let with_file = tmp.path().join(".merged.driftsweep-old-999999");
    copy_dir(&merged, &only_records);
    std::fs::remove_file(only_records.join("notes.md")).unwrap();
    copy_dir(&merged, &with_file);
    std::fs::write(with_file.join("notes.md"), "theirs").unwrap();
    // The control: a name not of driftsweep's making is left alone.
    let users = tmp.path().join(".merged.driftsweep-old-mine");
    copy_dir(&merged, &users);
    let o = merge();
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert!(!only_records.exists(), "records only: removed");
    assert!(
        with_file.join("notes.md").exists(),
        "the user's file is kept"
    );
    assert!(
        !with_file.join("pairs").exists(),
        "the records beside it go"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("kept in {}", with_file.display())),
        "{}",
        text(&o)
    );
    assert!(users.join("report.json").exists(), "not ours: untouched");
    assert_eq!(
        std::fs::read_to_string(merged.join("notes.md")).unwrap(),
        "mine"
    );
}

#[test]
fn a_bad_shard_leaves_the_earlier_merge_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, merged) = merged_with_notes(tmp.path());
    let merge = || run(&["merge", s(&merged), s(&shards[0]), s(&shards[1])]);
    let before = std::fs::read(merged.join("report.json")).unwrap();
    // One record of shard 1 says PASS over its limits.
    let bad = std::fs::read_dir(shards[1].join("pairs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("kv1"))
        .expect("shard 1 holds a kv_aligned pair");
    let saved = std::fs::read(&bad).unwrap();
    edit(&bad, |p| p["metrics"]["max_abs_diff"] = 5.0.into());
    refused(&merge(), "TAMPERED");
    assert_eq!(std::fs::read(merged.join("report.json")).unwrap(), before);
    let records = std::fs::read_dir(merged.join("pairs")).unwrap().count();
    assert_eq!(records, 4, "the earlier merge keeps every record");
    // The control: repaired, the merge replaces the earlier one and keeps the user's file.
    std::fs::write(&bad, saved).unwrap();
    let o = merge();
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(merged.join("notes.md")).unwrap(),
        "mine"
    );
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".merged"))
        .collect();
    assert!(beside.is_empty(), "no staging directory left: {beside:?}");
}
