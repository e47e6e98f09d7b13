//! Pairs in parallel (`--lanes`, chosen automatically by default): the binary runs the same
//! sweep on one lane and on several, and every pair's record (metrics, verdict, yardstick)
//! and every run's row digests must be the same bits. A negative control shows the
//! fingerprint does tell two sweeps apart when a single setting differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driftsweep::exit;
use serde_json::Value;

mod common;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `config` with extra arguments into `out`; the run must PASS.
fn sweep(config: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "run",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    let o = common::run(&args);
    assert_eq!(
        common::code(&o),
        exit::PASS,
        "{args:?}: {}",
        common::text(&o)
    );
}

/// Every pair's record, every run's row digests and every reused prefill's source, by id:
/// everything a sweep computed except the times it took.
fn fingerprint(out: &Path) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for (dir, keep) in [("pairs", None), ("runs", Some("row_digests"))] {
        for e in std::fs::read_dir(out.join(dir)).unwrap() {
            let path = e.unwrap().path();
            let v = common::read_json(&path);
            let v = match keep {
                Some(field) => v[field].clone(),
                None => v,
            };
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            all.insert(format!("{dir}/{name}"), v);
        }
    }
    // Which run's prefill each pair used: lanes share prefills across lanes, and must share
    // exactly those that one lane shares.
    let report = common::read_json(&out.join("report.json"));
    for p in report["pairs"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        all.insert(format!("reuse/{id}"), p["prefill"]["reused_from"].clone());
    }
    all
}

/// Lanes each load of the sweep ran its pairs on, by dtype.
fn lanes(out: &Path) -> BTreeMap<String, u64> {
    let m = common::read_json(&out.join("manifest.json"));
    m["model_loads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["dtype"].as_str().unwrap().to_string(),
                l["lanes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn lanes_give_the_same_bits_as_one_lane() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = repo("configs/quickstart.yaml");
    let one = tmp.path().join("one");
    sweep(&cfg, &one, &["--lanes", "1"]);
    let reference = fingerprint(&one);
    let runs = reference.keys().filter(|k| k.starts_with("runs/")).count();
    assert!(runs >= 40, "only {runs} runs compared");
    for n in ["2", "3"] {
        let out = tmp.path().join(format!("lanes{n}"));
        sweep(&cfg, &out, &["--lanes", n]);
        assert_eq!(
            fingerprint(&out),
            reference,
            "--lanes {n} changed some bits"
        );
        // Every group has more units of work than lanes, so each ran on all of them.
        for (dtype, l) in lanes(&out) {
            assert_eq!(l.to_string(), n, "{dtype}");
        }
    }
    // The automatic choice, whatever it is on this machine, changes no bit either.
    let auto = tmp.path().join("auto");
    sweep(&cfg, &auto, &[]);
    assert_eq!(fingerprint(&auto), reference);
    assert!(lanes(&one).values().all(|l| *l == 1));
}

#[test]
fn lanes_keep_serving_paths_and_their_companions_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = repo("configs/serving_paths_ci.yaml");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    sweep(&cfg, &one, &["--lanes", "1"]);
    sweep(&cfg, &two, &["--lanes", "2"]);
    assert_eq!(fingerprint(&one), fingerprint(&two));
}

#[test]
fn the_fingerprint_tells_a_changed_setting_apart() {
    // Negative control: the quickstart sweep with one prompt's text changed by one word
    // must not fingerprint as the original.
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("configs/quickstart.yaml")).unwrap();
    let changed = text.replace("capital of France", "capital of Spain");
    assert_ne!(changed, text);
    let a = common::write(tmp.path(), "a.yaml", &text);
    let b = common::write(tmp.path(), "b.yaml", &changed);
    let (oa, ob) = (tmp.path().join("a"), tmp.path().join("b"));
    sweep(&a, &oa, &["--lanes", "2"]);
    sweep(&b, &ob, &["--lanes", "2"]);
    let (fa, fb) = (fingerprint(&oa), fingerprint(&ob));
    assert_eq!(fa.len(), fb.len());
    let differ = fa.iter().filter(|(k, v)| fb[*k] != **v).count();
    assert!(
        differ > fa.len() / 4,
        "only {differ} of {} differ",
        fa.len()
    );
}
