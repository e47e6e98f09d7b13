//! A results directory is untrusted input: anyone with write access to it, or a disk that
//! garbled it, decides what its files say. Every id read from it passes [`check_id`] before a
//! path is built from it, every path into it is built by [`confined`], and every verdict read
//! back is judged again from its metrics and limits by [`check_verdict`]. One grammar, one
//! confinement and one re-judgement, used by every reader (report, merge, verify, diff,
//! resume, `--start-over`).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use super::manifest::Manifest;
use crate::compare::{Metrics, metrics};
use crate::dtype::RunDtype;
use crate::error::{Error, Result};
use crate::limits::Thresholds;
use crate::plan::PairSpec;
use crate::verdict::{self, PairVerdict};

/// The longest file name driftsweep writes (the common file-system limit).
pub const MAX_NAME: usize = 255;

/// Why `name` is not a safe file name: ASCII letters, digits, `_`, `-` and `.`, not starting
/// with `.`, no `..`, at most [`MAX_NAME`] bytes. Every id driftsweep makes fits it (prompt
/// ids are letters, digits, `_` and `-`; the rest are numbers and fixed words joined by `.`),
/// so an id outside it was not written by driftsweep.
pub fn name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME {
        return Some(format!(
            "is {} bytes long, more than {MAX_NAME}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        return Some(format!(
            "holds {c:?}; ids use only letters, digits, `_`, `-` and `.`"
        ));
    }
    if name.starts_with('.') || name.contains("..") {
        return Some("starts with `.` or holds `..`".into());
    }
    None
}

/// Refuses an id read from `file` (field `field`) that is not a safe file name.
pub fn check_id(id: &str, file: &Path, field: &str) -> Result<()> {
    match name_error(id) {
        None => Ok(()),
        Some(why) => Err(Error::store(
            file,
            format!(
                "`{field}`: the id `{}` {why}: not an id driftsweep writes, so no file is \
                 read or written for it",
                id.escape_debug()
            ),
        )),
    }
}

/// `root/rel`, refused unless every component of `rel` is a safe file name (so no `..`, no
/// absolute part) and none of them that exists is a symbolic link (which could lead out of
/// the directory).
pub fn confined(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for part in Path::new(rel).components() {
        let name = match part {
            Component::Normal(n) => n.to_str().unwrap_or(""),
            _ => "..",
        };
        if let Some(why) = name_error(name) {
            return Err(Error::store(
                root.join(rel),
                format!("not a path inside the results directory: `{name}` {why}"),
            ));
        }
        path.push(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::store(
                &path,
                "is a symbolic link: driftsweep neither follows nor replaces links inside a \
                 results directory (one could lead outside it)",
            ));
        }
    }
    Ok(path)
}

/// Refuses a manifest whose pair ids (and shard-plan ids) are not safe names, or repeat.
pub fn check_manifest(m: &Manifest, file: &Path) -> Result<()> {
    check_pairs(m.pairs.iter(), file, "pairs")?;
    if let Some(s) = &m.shard {
        check_pairs(s.plan.iter().map(|p| &p.spec), file, "shard.plan")?;
    }
    Ok(())
}

/// Refuses ids of `pairs` that are not safe names, or that repeat.
pub fn check_pairs<'a>(
    pairs: impl Iterator<Item = &'a PairSpec>,
    file: &Path,
    field: &str,
) -> Result<()> {
    let mut seen = HashSet::new();
    for p in pairs {
        check_id(&p.id, file, &format!("{field}[].id"))?;
        check_id(&p.prompt, file, &format!("{field}[].prompt"))?;
        if !seen.insert(p.id.as_str()) {
            return Err(Error::store(
                file,
                format!("`{field}`: the pair id `{}` appears twice", p.id),
            ));
        }
    }
    Ok(())
}

/// Refuses a record whose id is not the one its file name says.
pub fn check_same_id(said: &str, expected: &str, file: &Path) -> Result<()> {
    if said == expected {
        return Ok(());
    }
    Err(Error::store(
        file,
        format!(
            "`id`: the record says `{}`, its file name says `{expected}`: a record copied or \
             edited by hand is refused",
            said.escape_debug()
        ),
    ))
}

/// The limits the manifest says `p` was judged by: the tolerance when it is judged for
/// equivalence, else the drift budget (the defaults when it has none for its
/// dtype, as in manifests that predate per-dtype limits).
pub fn manifest_limits(m: &Manifest, p: &PairSpec) -> Thresholds {
    match m
        .resolved
        .limits
        .get(&crate::limits::limits_key(p.dtype, p.weights))
    {
        Some(l) if p.equivalence() => l.tolerance,
        Some(l) => l.drift_budget,
        None if p.equivalence() => Thresholds::default_tolerance_for(p.dtype, p.weights),
        None => Thresholds::default_drift_budget_for(p.dtype, p.weights),
    }
}

/// What a pair record claims: its verdict, and the evidence it gives for it.
pub struct Claim<'a> {
    /// The verdict on disk.
    pub verdict: PairVerdict,
    /// The pair.
    pub spec: &'a PairSpec,
    /// Its metrics, if any.
    pub metrics: Option<&'a Metrics>,
    /// The limits the record says it was judged by.
    pub limits: &'a Thresholds,
    /// Its paths against the reference, which enter the verdict.
    pub reference: Option<&'a super::reference::ReferenceCheck>,
}

/// Why a stored verdict cannot be believed, if it cannot: the verdict judged again from the
/// record's own metrics and limits differs, a compared verdict has no metrics or a metric
/// that is not a number, or a run it rests on did not finish. `limits` are the ones the
/// manifest gives the pair, when known: a record that loosened its own is caught too.
pub fn verdict_error(
    claim: &Claim,
    limits: Option<&Thresholds>,
    unfinished_run: Option<&str>,
) -> Option<String> {
    let v = claim.verdict;
    if !v.is_compared() {
        // INCOMPLETE and SKIPPED claim nothing a gate could pass on.
        return None;
    }
    if let Some(l) = limits
        && l != claim.limits
    {
        return Some(format!(
            "its limits (max_abs_diff {}) differ from the ones manifest.json gives this pair \
             (max_abs_diff {})",
            claim.limits.max_abs_diff(),
            l.max_abs_diff()
        ));
    }
    if let Some(r) = unfinished_run {
        return Some(format!("says {v} but its run {r} did not finish"));
    }
    let judged = Judged {
        metrics: claim.metrics,
        limits: claim.limits,
        dtype: claim.spec.dtype,
        equivalence: claim.spec.equivalence(),
        reference: claim.reference,
    };
    rejudge(v, &judged)
}

/// What a pair's verdict is judged from.
pub struct Judged<'a> {
    /// Prefill against decode.
    pub metrics: Option<&'a Metrics>,
    /// The limits of prefill against decode.
    pub limits: &'a Thresholds,
    /// The pair's dtype.
    pub dtype: RunDtype,
    /// Judged for equivalence ([`PairSpec::equivalence`]).
    pub equivalence: bool,
    /// Both paths against the reference, when the pair was held to one.
    pub reference: Option<&'a super::reference::ReferenceCheck>,
}

/// Why verdict `v` does not follow from metrics `m` under `limits` (the re-judgement of
/// [`verdict_error`], for readers that hold no whole record, as `diff` reading report.json).
pub fn rejudge(v: PairVerdict, j: &Judged) -> Option<String> {
    if !v.is_compared() {
        return None;
    }
    let Some(m) = j.metrics else {
        return Some(format!("says {v} but holds no metrics"));
    };
    if v.is_pass() && (m.positions == 0 || metrics::limited().any(|d| !d.value(m).is_finite())) {
        return Some(format!("says {v} but its metrics are empty or not numbers"));
    }
    let (mut judged, mut why) = verdict::judge_pair(m, j.dtype, j.equivalence, j.limits);
    if let Some(check) = j.reference {
        // Each path's pass or fail is judged again from its own metrics and the check's limits.
        for (path, c) in [("prefill", &check.prefill), ("decode", &check.decode)] {
            let Some(c) = c.as_ref().filter(|c| c.metrics.positions > 0) else {
                continue;
            };
            let (pass, _) = verdict::judge_reference(&c.metrics, j.dtype, &check.limits);
            if pass != c.pass {
                return Some(format!(
                    "says its {path} is {} against the reference, but its own metrics and limits \
                     say {}",
                    if c.pass { "within" } else { "outside" },
                    if pass { "within" } else { "outside" }
                ));
            }
        }
        (judged, why) = check.enter(judged, &why);
    }
    (judged != v).then(|| format!("says {v}, but its own metrics and limits give {judged} ({why})"))
}

/// What `path` is when it is not a regular file (a directory, a pipe, a device, a link), in
/// words: said instead of trying to read it (a pipe would block, a device never end).
pub fn not_a_file(path: &Path) -> Option<&'static str> {
    let link = std::fs::symlink_metadata(path).ok()?;
    let what = match std::fs::metadata(path).map(|m| m.file_type()) {
        Ok(t) if t.is_file() && !link.file_type().is_symlink() => return None,
        Ok(t) if t.is_file() => {
            "a symbolic link (driftsweep reads no links in a results directory)"
        }
        Ok(t) if t.is_dir() => "a directory, not a file",
        Ok(t) => special(&t),
        Err(_) => "a symbolic link that leads nowhere readable",
    };
    Some(what)
}

#[cfg(unix)]
fn special(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a named pipe (FIFO), not a file"
    } else if t.is_char_device() || t.is_block_device() {
        "a device, not a file"
    } else if t.is_socket() {
        "a socket, not a file"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn special(_: &std::fs::FileType) -> &'static str {
    "not a regular file"
}

/// Refuses a pair record whose verdict [`verdict_error`] cannot believe, naming it as
/// tampered (exit 2, as any bad input).
pub fn check_verdict(
    claim: &Claim,
    limits: Option<&Thresholds>,
    unfinished_run: Option<&str>,
    file: &Path,
) -> Result<()> {
    match verdict_error(claim, limits, unfinished_run) {
        None => Ok(()),
        Some(why) => Err(tampered(file, &why)),
    }
}

/// The error for a record whose verdict does not follow from its own evidence.
pub fn tampered(file: &Path, why: &str) -> Error {
    Error::store(
        file,
        format!(
            "TAMPERED: `verdict`: {why}; the record was edited or damaged, so nothing is \
             reported from it (run the sweep again with --start-over to recompute it)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_takes_driftsweep_ids_and_nothing_that_leaves_a_directory() {
        for ok in [
            "p0_short.s128.bf16.kv1.seed0",
            "r8.s8.f32.kv0.seed3.chunk8.chunked",
        ] {
            assert_eq!(name_error(ok), None, "{ok}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "/etc/passwd",
            ".hidden",
            "a/b",
            "a\\b",
            "a\nb",
            "a..b",
        ] {
            assert!(name_error(bad).is_some(), "{bad:?} must be refused");
        }
        assert!(name_error(&"x".repeat(MAX_NAME + 1)).is_some());
    }

    #[test]
    fn confined_refuses_parents_absolute_parts_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("runs")).unwrap();
        assert_eq!(
            confined(root, "runs/a.json").unwrap(),
            root.join("runs/a.json")
        );
        for bad in ["runs/../../x.json", "/abs/x.json", "./runs/a.json"] {
            assert!(confined(root, bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink(std::env::temp_dir(), root.join("pairs")).unwrap();
        let e = confined(root, "pairs/a.json").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn what_a_non_file_is_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(not_a_file(&f), None, "a file is a file");
        assert_eq!(not_a_file(dir.path()), Some("a directory, not a file"));
        assert_eq!(
            not_a_file(Path::new("/dev/null")),
            Some("a device, not a file")
        );
        assert_eq!(not_a_file(&dir.path().join("absent")), None);
    }
}
