//! The checks a sweep file must pass that need no model (empty lists, duplicate ids, unknown
//! prompt references, inconsistent fault injection). Checks that need the model, such as a
//! span longer than its context, happen when the plan is expanded.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use super::schema::{AllOr, ExcludeRule, SweepConfig, TracePositions};
use crate::dtype::RunDtype;
use crate::error::{Error, Result};

/// The checks that need no model.
pub(super) fn validate(path: &Path, c: &SweepConfig, max_pairs: usize) -> Result<()> {
    // First, before any check that grows with the lists' lengths.
    check_plan_size(path, c, max_pairs)?;
    check_names(path, c)?;
    let seen = check_prompts(path, c)?;
    check_sweep_lists(path, c, &seen)?;
    check_models(path, c)?;
    check_exclude(path, c, &seen)?;
    check_trace(path, c)?;
    check_inject(path, c)?;
    check_reference(path, c)?;
    check_limits(path, c)
}

/// `reference`: a dtype the engine computes in, and a model it can read.
fn check_reference(path: &Path, c: &SweepConfig) -> Result<()> {
    use super::reference::{ReferenceDtype, ReferenceEngine};
    let Some(r) = &c.reference else {
        return Ok(());
    };
    if r.engine() == ReferenceEngine::Own && r.dtype == Some(ReferenceDtype::F64) {
        return Err(Error::config(
            path,
            "reference.dtype",
            "the own decoder computes in f32 only; use `engine: transformers` for a float64 \
             reference (an engine left out is the own decoder where the transformers worker \
             is not installed: `bash scripts/peer/setup.sh`)",
        ));
    }
    if r.engine() == ReferenceEngine::Transformers {
        // transformers reads checkpoints; the built-in model is code, not a checkpoint.
        if c.all_models().iter().any(|m| m.is_builtin()) {
            return Err(Error::config(
                path,
                "reference.engine",
                "transformers cannot read the built-in model (it has no checkpoint); use a \
                 GGUF, a Hugging Face directory or `synthetic:`, or `engine: own`",
            ));
        }
    }
    Ok(())
}

/// `output`, `name` and `model.source`.
fn check_names(path: &Path, c: &SweepConfig) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    if c.output.as_ref().is_some_and(|o| o.as_os_str().is_empty()) {
        return err(
            "output",
            "must not be empty (that would be the working directory): name a directory".into(),
        );
    }
    if c.name.trim().is_empty() {
        return err("name", "must not be empty".into());
    }
    // It names the default results directory: no path tricks like `..`.
    if !c.name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
    {
        return err(
            "name",
            format!(
                "`{}` may only use letters, digits, `_`, `-` and `.`",
                c.name
            ),
        );
    }
    // With `models:`, each model's own sweep checks its model (as `models.<id>`).
    if c.models.is_none() && c.model.source.trim().is_empty() {
        return err("model.source", "must not be empty".into());
    }
    Ok(())
}

/// The prompts: ids that name files, one source each; returns the set of ids.
fn check_prompts<'c>(path: &Path, c: &'c SweepConfig) -> Result<HashSet<&'c str>> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    if c.prompts.is_empty() {
        return err(
            "prompts",
            "the list is empty: give at least one prompt".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, p) in c.prompts.iter().enumerate() {
        let field = format!("prompts[{i}]");
        if p.id.is_empty()
            || !p
                .id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-".contains(ch))
        {
            return err(
                &format!("{field}.id"),
                format!(
                    "`{}` must be non-empty and use only letters, digits, `_` and `-` (it names files)",
                    p.id
                ),
            );
        }
        let longest = longest_file_name(&p.id, c);
        if longest > MAX_FILE_NAME {
            return err(
                &format!("{field}.id"),
                format!(
                    "`{}` makes result file names of {longest} bytes, more than the {MAX_FILE_NAME} \
                     a file system allows: shorten the id",
                    p.id
                ),
            );
        }
        if !seen.insert(p.id.as_str()) {
            return err(
                &format!("{field}.id"),
                format!("duplicate prompt id `{}`", p.id),
            );
        }
        let given = [
            p.text.is_some(),
            p.file.is_some(),
            p.random_tokens.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return err(
                &field,
                "give one of `text`, `file` or `random_tokens`, not several".into(),
            );
        }
        match (&p.text, p.random_tokens) {
            (None, None) if p.file.is_none() => {
                return err(&field, "give `text`, `file` or `random_tokens`".into());
            }
            (Some(t), None) if t.is_empty() => {
                return err(&format!("{field}.text"), "must not be empty".into());
            }
            (None, Some(0)) => {
                return err(
                    &format!("{field}.random_tokens"),
                    "must be at least 1".into(),
                );
            }
            _ => {}
        }
    }
    Ok(seen)
}

/// The sweep's axes: none empty, no duplicates, prompts that exist.
fn check_sweep_lists(path: &Path, c: &SweepConfig, seen: &HashSet<&str>) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    let s = &c.sweep;
    for (name, len) in [
        ("sweep.span", s.span.len()),
        ("sweep.dtype", s.dtype.len()),
        ("sweep.kv_aligned", s.kv_aligned.len()),
        ("sweep.seed", s.seed.len()),
        ("sweep.engine", s.engine.len()),
        ("sweep.weights", s.weights.len()),
        ("sweep.path", s.path.len()),
    ] {
        if len == 0 {
            return err(
                name,
                "the list is empty: the sweep would have no pairs".into(),
            );
        }
    }
    if let Some(i) = s.span.iter().position(|&x| x == 0) {
        return err(
            &format!("sweep.span[{i}]"),
            "a span must be at least 1 token".into(),
        );
    }
    check_unique(path, "sweep.span", &s.span)?;
    check_unique(path, "sweep.dtype", &s.dtype)?;
    check_unique(path, "sweep.kv_aligned", &s.kv_aligned)?;
    check_unique(path, "sweep.seed", &s.seed)?;
    check_unique(path, "sweep.engine", &s.engine)?;
    check_unique(path, "sweep.weights", &s.weights)?;
    // By spelling: the message then quotes the path as the file writes it.
    let spelled: Vec<String> = s.path.iter().map(ToString::to_string).collect();
    check_unique(path, "sweep.path", &spelled)?;
    if let Some(ids) = &s.prompt {
        if ids.is_empty() {
            return err(
                "sweep.prompt",
                "the list is empty: leave it out to use every prompt".into(),
            );
        }
        check_unique(path, "sweep.prompt", ids)?;
        for (i, id) in ids.iter().enumerate() {
            if !seen.contains(id.as_str()) {
                return err(
                    &format!("sweep.prompt[{i}]"),
                    format!("no prompt has id `{id}`"),
                );
            }
        }
    }
    Ok(())
}

/// The longest model id: it names a directory, `<out>/models/<id>`, and the sub-sweep's
/// name `<name>.<id>`.
const MAX_MODEL_ID: usize = 100;

/// `models:` (ids that name directories), and the model axis: `sweep.model` and
/// `exclude[i].model` name models of `models:`, and exist only with it.
fn check_models(path: &Path, c: &SweepConfig) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    let Some(models) = &c.models else {
        if c.sweep.model.is_some() {
            return err(
                "sweep.model",
                "a model axis needs `models:` (ids to models) instead of `model:`".into(),
            );
        }
        if let Some(i) = c.exclude.iter().position(|r| r.model.is_some()) {
            return err(
                &format!("exclude[{i}].model"),
                "`model` in a rule needs `models:` (ids to models) instead of `model:`".into(),
            );
        }
        if c.inject.as_ref().is_some_and(|i| i.model.is_some()) {
            return err(
                "inject.model",
                "`model` in `inject` needs `models:` (ids to models) instead of `model:`".into(),
            );
        }
        return Ok(());
    };
    if models.0.is_empty() {
        return err("models", "the map is empty: give at least one model".into());
    }
    for (id, _) in &models.0 {
        let ok = !id.is_empty()
            && id.len() <= MAX_MODEL_ID
            && id != "."
            && id != ".."
            && id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch));
        if !ok {
            return err(
                &format!("models.{id}"),
                format!(
                    "model id `{id}` must use only letters, digits, `_`, `-` and `.`, be at \
                     most {MAX_MODEL_ID} bytes and not be `.` or `..` (it names a directory)"
                ),
            );
        }
    }
    if let Some(ids) = &c.sweep.model {
        if ids.is_empty() {
            return err(
                "sweep.model",
                "the list is empty: leave it out to run every model".into(),
            );
        }
        check_unique(path, "sweep.model", ids)?;
        for (i, id) in ids.iter().enumerate() {
            if !models.contains(id) {
                return err(
                    &format!("sweep.model[{i}]"),
                    format!("no model has id `{id}` in `models:`"),
                );
            }
        }
    }
    let injected = c.inject.as_ref().and_then(|i| i.model.as_ref());
    for (i, id) in injected.into_iter().flatten().enumerate() {
        if !models.contains(id) {
            return err(
                &format!("inject.model[{i}]"),
                format!("no model has id `{id}` in `models:`"),
            );
        }
    }
    for (i, rule) in c.exclude.iter().enumerate() {
        let Some(id) = &rule.model else { continue };
        if !models.contains(id) {
            return err(
                &format!("exclude[{i}].model"),
                format!("no model has id `{id}` in `models:`"),
            );
        }
        let alone = ExcludeRule {
            model: None,
            ..rule.clone()
        };
        if is_empty_rule(&alone) {
            return err(
                &format!("exclude[{i}]"),
                format!(
                    "a rule with only `model` would drop every pair of `{id}`: leave `{id}` \
                     out of `sweep.model` instead"
                ),
            );
        }
    }
    Ok(())
}

/// A rule with no key: it would match every pair.
fn is_empty_rule(rule: &ExcludeRule) -> bool {
    rule.prompt.is_none()
        && rule.span.is_none()
        && rule.dtype.is_none()
        && rule.kv_aligned.is_none()
        && rule.seed.is_none()
        && rule.engine.is_none()
        && rule.weights.is_none()
        && rule.path.is_none()
        && rule.model.is_none()
}

/// The `exclude` rules: none empty, prompts that exist.
fn check_exclude(path: &Path, c: &SweepConfig, seen: &HashSet<&str>) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    for (i, rule) in c.exclude.iter().enumerate() {
        let field = format!("exclude[{i}]");
        if is_empty_rule(rule) {
            return err(&field, "an empty rule would drop every pair".into());
        }
        if let Some(p) = &rule.prompt
            && !seen.contains(p.as_str())
        {
            return err(
                &format!("{field}.prompt"),
                format!("no prompt has id `{p}`"),
            );
        }
    }
    Ok(())
}

/// The `trace` section: known dtypes, positive thresholds, nothing empty.
fn check_trace(path: &Path, c: &SweepConfig) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    let is_dtype = |k: &str| RunDtype::ALL.iter().any(|d| d.as_str() == k);
    if let Some(t) = &c.trace {
        for (k, v) in &t.nmse_threshold {
            if !is_dtype(k) {
                return err(
                    &format!("trace.nmse_threshold.{k}"),
                    format!("unknown dtype `{k}`; expected f32, bf16 or f16"),
                );
            }
            if !(v.is_finite() && *v > 0.0) {
                return err(
                    &format!("trace.nmse_threshold.{k}"),
                    format!("{v} must be a finite number > 0"),
                );
            }
        }
        for (name, empty) in [
            (
                "trace.layers",
                matches!(&t.layers, AllOr::List(v) if v.is_empty()),
            ),
            (
                "trace.tensors",
                matches!(&t.tensors, AllOr::List(v) if v.is_empty()),
            ),
            (
                "trace.positions",
                matches!(&t.positions, TracePositions::List(v) if v.is_empty()),
            ),
        ] {
            if empty {
                return err(name, "the list is empty: nothing would be traced".into());
            }
        }
    }
    Ok(())
}

/// The `inject` section: a fault that does something, consistently described.
fn check_inject(path: &Path, c: &SweepConfig) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    if let Some(i) = &c.inject {
        match (i.tensor, i.epsilon) {
            (Some(_), None) => {
                return err("inject.epsilon", "a scaled tensor needs `epsilon`".into());
            }
            (None, Some(_)) => {
                return err(
                    "inject.tensor",
                    "`epsilon` needs the `tensor` to scale".into(),
                );
            }
            (None, None)
                if i.position_shift.unwrap_or(0) == 0
                    && i.window_shift.unwrap_or(0) == 0
                    && i.chunk_position_shift.unwrap_or(0) == 0
                    && !i.cross_row_cache
                    && i.fail_span.is_none() =>
            {
                return err(
                    "inject",
                    "give `tensor` with `epsilon`, a `position_shift`, `window_shift` or \
                     `chunk_position_shift` of at least 1, `cross_row_cache: true`, or a \
                     `fail_span`"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(f) = i.fail_span
            && !c.sweep.span.contains(&f)
        {
            return err(
                "inject.fail_span",
                format!("{f} is not one of `sweep.span`, so no run would fail"),
            );
        }
        if let Some(e) = i.epsilon
            && !(e.is_finite() && e != 0.0)
        {
            return err(
                "inject.epsilon",
                format!("{e} must be a finite non-zero number"),
            );
        }
        if let Some(t) = i.tensor {
            match (t.in_layer(), i.layer) {
                (true, None) => {
                    return err(
                        "inject.layer",
                        format!("`{t}` is a layer tensor: give its layer"),
                    );
                }
                (false, Some(_)) => return err("inject.layer", format!("`{t}` has no layer")),
                _ => {}
            }
        }
    }
    Ok(())
}

/// `tolerances` and `drift_budget`: known keys, valid values.
fn check_limits(path: &Path, c: &SweepConfig) -> Result<()> {
    let err = |field: &str, msg: String| Err(Error::config(path, field, msg));
    let none = Default::default();
    let reference = c.reference.as_ref().map_or(&none, |r| &r.limits);
    for (section, map) in [
        ("tolerances", &c.tolerances),
        ("drift_budget", &c.drift_budget),
        ("reference.limits", reference),
    ] {
        for (dtype, o) in map {
            if !crate::limits::limits_keys().contains(dtype) {
                return err(
                    &format!("{section}.{dtype}"),
                    format!(
                        "unknown dtype `{dtype}`; expected f32, bf16 or f16 (dequantized weights) \
                         or f32/quantized, bf16/quantized, f16/quantized"
                    ),
                );
            }
            o.validate()
                .map_err(|(k, m)| Error::config(path, format!("{section}.{dtype}.{k}"), m))?;
        }
    }
    Ok(())
}

/// The longest file name most file systems allow (NAME_MAX), in bytes.
const MAX_FILE_NAME: usize = 255;

/// The longest file name a prompt's records get: its longest run id as a logits file's
/// temporary, `.<id>.s<span>.bf16.kv1.seed<seed>.prefill.safetensors.driftsweep-tmp-<pid>`.
/// Checked here, before any work, rather than found when the first record cannot be written.
fn longest_file_name(id: &str, c: &SweepConfig) -> usize {
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let span = c.sweep.span.iter().copied().max().unwrap_or(0) as u64;
    let seed = c.sweep.seed.iter().copied().max().unwrap_or(0);
    1 + id.len()
        + ".s".len()
        + digits(span)
        + ".bf16.kv1.seed".len()
        + digits(seed)
        + ".prefill.safetensors".len()
        + crate::fsutil::TMP_TAG.len()
        + digits(u64::from(u32::MAX))
}

/// The most `exclude` rules a sweep file may have: each pair is matched against every rule.
const MAX_EXCLUDE_RULES: usize = 1_000;

/// The pairs the lists can expand into (before `exclude`, which only removes), computed with
/// checked arithmetic and compared with the limit before anything else is looked at.
fn check_plan_size(path: &Path, c: &SweepConfig, max_pairs: usize) -> Result<()> {
    let s = &c.sweep;
    let prompts = s.prompt.as_ref().map_or(c.prompts.len(), Vec::len);
    // Every selected model runs the whole product.
    let models = match (&c.models, &s.model) {
        (_, Some(ids)) => ids.len(),
        (Some(m), None) => m.0.len(),
        (None, None) => 1,
    };
    let product = [
        models,
        prompts,
        s.span.len(),
        s.dtype.len(),
        s.kv_aligned.len(),
        s.seed.len(),
    ]
    .into_iter()
    .try_fold(1usize, usize::checked_mul);
    match product {
        Some(n) if n <= max_pairs => {}
        _ => {
            let n = product.map_or("more than 2^64".to_string(), |n| n.to_string());
            return Err(Error::config(
                path,
                "sweep",
                format!(
                    "the lists expand into {n} pairs, more than the limit of {max_pairs}: \
                     split the sweep (or --shard it), or raise the limit with --max-pairs"
                ),
            ));
        }
    }
    if c.prompts.len() > max_pairs {
        return Err(Error::config(
            path,
            "prompts",
            format!(
                "{} prompts, more than the limit of {max_pairs} pairs",
                c.prompts.len()
            ),
        ));
    }
    if c.exclude.len() > MAX_EXCLUDE_RULES {
        return Err(Error::config(
            path,
            "exclude",
            format!(
                "{} rules, more than {MAX_EXCLUDE_RULES}: list what to sweep instead",
                c.exclude.len()
            ),
        ));
    }
    Ok(())
}

/// The message shows each value as the sweep file spells it (`Display`), never an internal
/// name.
fn check_unique<T: Eq + std::hash::Hash + fmt::Display>(
    path: &Path,
    field: &str,
    xs: &[T],
) -> Result<()> {
    // A set, not a scan of the entries before each: linear in the list's length.
    let mut seen = HashSet::with_capacity(xs.len());
    for (i, x) in xs.iter().enumerate() {
        if !seen.insert(x) {
            return Err(Error::config(
                path,
                format!("{field}[{i}]"),
                format!("`{x}` is listed twice"),
            ));
        }
    }
    Ok(())
}
