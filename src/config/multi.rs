//! A sweep file with `models:` (docs/sweep-file.md, "Several models"): the models it runs and
//! the single-model sweep file it means for each.

use super::loaded::LoadedConfig;
use super::schema::{ModelConfig, SweepConfig};
use crate::error::{Error, Result};

/// The models a file with `models:` runs, in file order, with `sweep.model` applied; none for
/// a file with `model:`.
pub(super) fn selected(cfg: &LoadedConfig) -> Vec<(String, ModelConfig)> {
    let Some(models) = &cfg.config.models else {
        return Vec::new();
    };
    models
        .0
        .iter()
        .filter(|(id, _)| {
            cfg.config
                .sweep
                .model
                .as_ref()
                .is_none_or(|ids| ids.contains(id))
        })
        .cloned()
        .collect()
}

/// The single-model sweep file of model `id`, as YAML, and for each of its exclude rules the
/// index of that rule in the original file. It is the file with `model: <that model>` and
/// without `models:` and `sweep.model`; exclude rules naming another model are dropped and
/// the `model` key of the others removed; its name is `<name>.<id>`; `output` is left out
/// (the sub-sweep's directory is `<out>/models/<id>`, chosen by the caller); prompt files
/// stay files (read again, relative to the same sweep file's directory).
pub(super) fn single_text(
    cfg: &LoadedConfig,
    id: &str,
    model: &ModelConfig,
) -> Result<(String, Vec<usize>)> {
    let mut c: SweepConfig = cfg.config.clone();
    c.name = format!("{}.{id}", c.name);
    c.model = model.clone();
    c.models = None;
    c.sweep.model = None;
    c.output = None;
    // The fault goes to the models `inject.model` names (all when it names none).
    let faulted = c.inject.as_ref().is_some_and(|i| {
        i.model
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|m| m == id))
    });
    c.inject = c.inject.take().filter(|_| faulted).map(|mut i| {
        i.model = None;
        i
    });
    let mut origin = Vec::new();
    c.exclude = cfg
        .config
        .exclude
        .iter()
        .enumerate()
        .filter(|(_, r)| r.model.as_deref().is_none_or(|m| m == id))
        .map(|(i, r)| {
            origin.push(i);
            let mut r = r.clone();
            r.model = None;
            r
        })
        .collect();
    for p in &mut c.prompts {
        // Loading put the file's text here; the derived file names the file again, so
        // that its identity includes the file's bytes as the original's does.
        if p.file.is_some() {
            p.text = None;
        }
    }
    let text = serde_yaml::to_string(&c).map_err(|e| {
        Error::internal(format!(
            "cannot write the sweep of model `{id}` as YAML: {e}"
        ))
    })?;
    Ok((text, origin))
}
