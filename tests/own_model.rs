//! Your own model: `examples/own_model.rs` run as a user would (`cargo run --example`),
//! honest and with a fault at one layer: its exit code is the sweep's, and its layer taps
//! name the faulty layer.

use std::process::{Command, Output};

use driftsweep::exit;

/// The example as `cargo run --release --example own_model -- ARGS` runs it: its binary,
/// which `cargo test` builds beside the tests, else through cargo (a nested cargo may
/// rebuild the library: minutes).
fn example(args: &[&str]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let built = exe.parent().and_then(|d| d.parent()).map(|d| {
        d.join("examples")
            .join(format!("own_model{}", std::env::consts::EXE_SUFFIX))
    });
    let mut cmd = match built.filter(|b| b.is_file()) {
        Some(b) => Command::new(b),
        None => {
            let mut c = Command::new(env!("CARGO"));
            c.args([
                "run",
                "--release",
                "--quiet",
                "--example",
                "own_model",
                "--",
            ]);
            c
        }
    };
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the example runs")
}

#[test]
fn the_example_exits_with_the_sweeps_code_and_names_the_faulty_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let o = example(&[&out("honest")]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit::PASS), "{stdout}\n{stderr}");
    assert!(stdout.contains("own_model: Pass"), "{stdout}");
    // A fault at layer 2 (of 4): the logits verdicts fail (exit 1) and the trace of the
    // failing pairs names layer 2's attention output, not a neighbour.
    let o = example(&[&out("fault"), "--inject", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit::FAIL), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("first failing record: layer 2 attn_out"),
        "{stdout}"
    );
    assert!(!stdout.contains("layer 1 "), "{stdout}");
    let md = std::fs::read_to_string(tmp.path().join("fault/trace_report.md")).unwrap();
    assert!(md.contains("ATTENTION at layer 2 attn_out"), "{md}");
}
