//! Records the candle version (from Cargo.lock) and the git commit (with `-dirty` when tracked
//! files have uncommitted changes) for the manifest.
use std::process::Command;

fn main() {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let candle = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DRIFTSWEEP_CANDLE_VERSION={candle}");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    // A build from uncommitted changes says so: its results do not belong to the commit alone.
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let commit = if dirty && commit != "unknown" {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=DRIFTSWEEP_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    // HEAD names the branch; the branch's log changes with every commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/logs/HEAD");
    // The tracked sources: an edit makes the tree dirty, a commit (above) clean again.
    for path in ["src", "templates", "Cargo.toml", "build.rs", ".git/index"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
