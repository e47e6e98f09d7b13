//! Sharded sweeps (issue 20): `run --shard K/N`, `merge`, and the Slurm scripts `slurm`
//! writes, on the built-in model. The Slurm scheduler itself is exercised by
//! `scripts/slurm/ci_test.sh`, not here: cargo test must pass on a machine without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use driftsweep::exit;
use serde_json::Value;

mod common;
use common::{code, read_json, run, stderr, text, write};

/// 32 pairs, sampled continuations (the f32 reference), two prompt kinds.
const SWEEP: &str = r#"
name: sharded
model: builtin:tiny-llama
device: cpu
prompts:
  - id: p0
    text: "What is the capital of France?"
  - id: r8
    random_tokens: 8
continuation: sample
sweep:
  span: [8, 20]
  dtype: [f32, f16]
  kv_aligned: [false, true]
  seed: [0, 1]
"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(code(&o), exit::PASS, "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn shard_out(root: &Path, k: usize, n: usize) -> PathBuf {
    root.join(format!("sharded.shards/{k}-of-{n}"))
}

/// Pair id -> (verdict, metrics) of a report.json.
fn metrics(dir: &Path) -> BTreeMap<String, (Value, Value)> {
    read_json(&dir.join("report.json"))["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                (p["verdict"].clone(), p["metrics"].clone()),
            )
        })
        .collect()
}

fn manifest_pairs(dir: &Path) -> BTreeSet<String> {
    read_json(&dir.join("manifest.json"))["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn three_shards_merge_into_the_single_process_report() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cfg = write(root, "sweep.yaml", SWEEP);
    let single = root.join("single");
    run_ok(&["run", s(&cfg), "--out", s(&single), "--no-progress"]);

    // The default shard directories sit next to the merged one.
    let out = root.join("sharded");
    let cfg_out = write(
        root,
        "sweep_out.yaml",
        &format!("{SWEEP}output: {}\n", s(&out)),
    );
    let mut seen = BTreeSet::new();
    for k in 0..3 {
        run_ok(&[
            "run",
            s(&cfg_out),
            "--shard",
            &format!("{k}/3"),
            "--no-progress",
        ]);
        let dir = shard_out(root, k, 3);
        let m = read_json(&dir.join("manifest.json"));
        assert_eq!(m["shard"]["index"], k);
        assert_eq!(m["shard"]["count"], 3);
        assert_eq!(m["shard"]["plan"].as_array().unwrap().len(), 32);
        let r = read_json(&dir.join("report.json"));
        assert_eq!(
            r["shard"]["index"], k,
            "the shard's report says which it is"
        );
        let pairs = manifest_pairs(&dir);
        assert!(!pairs.is_empty());
        assert!(seen.is_disjoint(&pairs), "a pair in two shards");
        seen.extend(pairs);
    }
    assert_eq!(
        seen,
        manifest_pairs(&single),
        "every pair in exactly one shard"
    );

    // A second run of a shard resumes it: every pair is reused, none recomputed.
    let again = run_ok(&["run", s(&cfg_out), "--shard", "1/3", "--no-progress"]);
    assert!(again.contains("resumed:"), "{again}");
    let m = read_json(&shard_out(root, 1, 3).join("manifest.json"));
    assert_eq!(m["sessions"][1]["planned_pairs"], 0);
    // Another shard into that directory is refused.
    let o = run(&[
        "run",
        s(&cfg_out),
        "--shard",
        "2/3",
        "--out",
        s(&shard_out(root, 1, 3)),
    ]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("holds shard 1/3"), "{}", stderr(&o));

    let dirs: Vec<PathBuf> = (0..3).map(|k| shard_out(root, k, 3)).collect();
    let mut args = vec!["merge", s(&out)];
    args.extend(dirs.iter().map(|d| s(d)));
    run_ok(&args);
    for f in ["report.json", "report.md", "manifest.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let (a, b) = (metrics(&single), metrics(&out));
    assert_eq!(a.len(), 32);
    assert_eq!(
        a, b,
        "merged metrics and verdicts equal the single-process run's"
    );
    let (ra, rb) = (
        read_json(&single.join("report.json")),
        read_json(&out.join("report.json")),
    );
    for k in [
        "verdict",
        "counts",
        "drift_characterization",
        "observations",
    ] {
        assert_eq!(ra[k], rb[k], "{k}");
    }
    assert_eq!(rb["merged"]["count"], 3);
    assert_eq!(rb["merged"]["missing_pairs"].as_array().unwrap().len(), 0);
    // Token ids of every (prompt, seed) agree with the single run's.
    assert_eq!(
        read_json(&single.join("manifest.json"))["tokens"],
        read_json(&out.join("manifest.json"))["tokens"]
    );
    // Merging again replaces the earlier merge.
    run_ok(&args);

    // Negative control 1: a missing shard makes the merge INCOMPLETE, listing its pairs.
    let partial = root.join("partial");
    let o = run(&["merge", s(&partial), s(&dirs[0]), s(&dirs[2])]);
    assert_eq!(code(&o), exit::INCOMPLETE, "{}", text(&o));
    let r = read_json(&partial.join("report.json"));
    assert_eq!(r["verdict"], "INCOMPLETE");
    assert_eq!(r["merged"]["missing_shards"], serde_json::json!([1]));
    let missing = manifest_pairs(&dirs[1]);
    let listed: BTreeSet<String> = r["merged"]["missing_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, missing);
    let md = std::fs::read_to_string(partial.join("report.md")).unwrap();
    assert!(md.contains("**missing shards:** 1"), "{md}");
    for id in &missing {
        assert!(md.contains(id.as_str()), "{id} not listed");
    }
    assert!(md.contains("shard 1/3, which holds this pair, was not given"));

    // Negative control 2: a pair a given shard has no record of.
    let id = manifest_pairs(&dirs[0]).into_iter().next().unwrap();
    std::fs::remove_file(dirs[0].join(format!("pairs/{id}.json"))).unwrap();
    let o = run(&args);
    assert_eq!(code(&o), exit::INCOMPLETE, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("missing pair: {id}")));
    let r = read_json(&out.join("report.json"));
    let p = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .unwrap();
    assert_eq!(p["verdict"], "INCOMPLETE");
    assert!(p["reason"].as_str().unwrap().contains("shard 0/3"), "{p}");

    // `slurm` lists only the unfinished shard (0, which lost a pair) in the array.
    let o = run(&[
        "slurm",
        s(&cfg_out),
        "--shards",
        "3",
        "--parallel",
        "2",
        "--gres",
        "gpu:1",
    ]);
    assert_eq!(code(&o), exit::PASS, "{}", text(&o));
    let slurm = root.join("sharded.shards/slurm");
    let array = std::fs::read_to_string(slurm.join("shards.sbatch")).unwrap();
    assert!(array.contains("#SBATCH --array=0%2\n"), "{array}");
    assert!(array.contains("#SBATCH --gres=gpu:1\n"), "{array}");
    assert!(array.contains("--shard \"$k/3\""), "{array}");
    assert!(array.contains(&format!(
        "'{}'/\"$k-of-3\"",
        s(&root.join("sharded.shards"))
    )));
    let merge = std::fs::read_to_string(slurm.join("merge.sbatch")).unwrap();
    assert!(!merge.contains("--gres"), "the merge needs no GPU: {merge}");
    assert!(merge.contains(&format!("merge '{}'", s(&out))), "{merge}");
    let submit = std::fs::read_to_string(slurm.join("submit.sh")).unwrap();
    assert!(submit.contains("--dependency=afterok:"), "{submit}");
    // Shard 0 resumed: everything is finished, only the merge is left.
    run_ok(&["run", s(&cfg_out), "--shard", "0/3", "--no-progress"]);
    let stdout = run_ok(&["slurm", s(&cfg_out), "--shards", "3"]);
    assert!(stdout.contains("only the merge is left"), "{stdout}");
    let stdout = run_ok(&["slurm", s(&cfg_out), "--shards", "4"]);
    assert!(stdout.contains("--array=0-3%4"), "{stdout}");
    run_ok(&args);
    assert_eq!(metrics(&out), a);

    // Negative control 3: shards of two different sweep files are refused, naming it.
    let other = write(root, "other.yaml", &format!("# another file\n{SWEEP}"));
    let foreign = root.join("foreign");
    run_ok(&[
        "run",
        s(&other),
        "--shard",
        "1/3",
        "--out",
        s(&foreign),
        "--no-progress",
    ]);
    let o = run(&["merge", s(&root.join("mixed")), s(&dirs[0]), s(&foreign)]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    let e = stderr(&o);
    assert!(
        e.contains("not shards of the same sweep") && e.contains("sweep file"),
        "{e}"
    );
    assert!(!e.contains("model:"), "only what differs is named: {e}");
    // A shard given twice, a whole run, a missing directory: exit 2 each.
    for (dirs, want) in [
        (vec![s(&dirs[0]), s(&dirs[0])], "give each shard once"),
        (vec![s(&dirs[0]), s(&single)], "is not a shard"),
        (vec![s(&dirs[0]), "no/such/dir"], "no/such/dir"),
    ] {
        let mut args = vec!["merge", s(&foreign)];
        args.extend(dirs);
        let o = run(&args);
        assert_eq!(code(&o), exit::BAD_INPUT, "{args:?}: {}", text(&o));
        assert!(stderr(&o).contains(want), "{want}: {}", stderr(&o));
    }
    // The merge never overwrites other results.
    let o = run(&["merge", s(&single), s(&dirs[0])]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("not a merge"), "{}", stderr(&o));
}

#[test]
fn bad_shard_specs_are_exit_2_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "sweep.yaml", SWEEP);
    let out = tmp.path().join("o");
    for (spec, want) in [
        ("5/4", "not below N = 4"),
        ("0/0", "at least 1"),
        ("x", "K/N"),
    ] {
        let o = run(&["run", s(&cfg), "--shard", spec, "--out", s(&out)]);
        assert_eq!(code(&o), exit::BAD_INPUT, "{spec}: {}", text(&o));
        let e = stderr(&o);
        assert!(e.contains("--shard") && e.contains(want), "{spec}: {e}");
    }
    // 32 pairs in 16 twin units: 17 shards would leave one empty.
    let o = run(&["run", s(&cfg), "--shard", "0/17", "--out", s(&out)]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    let e = stderr(&o);
    assert!(
        e.contains("sweep.yaml") && e.contains("`--shard`") && e.contains("at most 16"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written on bad input");
    let o = run(&["slurm", s(&cfg), "--shards", "0"]);
    assert_eq!(code(&o), exit::BAD_INPUT, "{}", text(&o));
    assert!(stderr(&o).contains("--shards"), "{}", stderr(&o));
}
