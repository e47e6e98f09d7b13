//! The resolved, checked sweep file everything downstream uses: prompts with their sources,
//! the custom templates' text, and the limits per (weights, dtype).

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Serialize;

use super::schema::*;
use crate::dtype::RunDtype;
use crate::engine::WeightFormat;
use crate::error::Error;
use crate::limits::{Thresholds, limits_key};

/// The text of the custom templates a sweep file names, read at load (the renderer checks
/// that they parse before any model work).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomTemplates {
    /// `templates.report`.
    pub report: Option<String>,
    /// `templates.trace_report`.
    pub trace_report: Option<String>,
}

/// What the prompt of a pair is made of, after validation: text (from `text` or `file`) or
/// a positive count of random ids. A prompt with neither, or with zero random ids, cannot be
/// represented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// Tokenized text.
    Text(String),
    /// `n` random ids drawn with the pair's seed.
    RandomTokens(NonZeroUsize),
}

/// A checked prompt: its id and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Unique id, used in run ids and file names.
    pub id: String,
    /// What it is made of.
    pub source: PromptSource,
    /// Its position in the sweep file's `prompts` list (error messages name `prompts[i]`).
    pub index: usize,
}

/// A parsed and validated sweep file together with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its exact bytes, hashed into the manifest.
    pub text: String,
    /// The parsed config (prompt files already read into `text`).
    pub config: SweepConfig,
    /// Custom report templates, read from the files `templates:` names.
    pub templates: CustomTemplates,
    /// Every prompt of the file, checked, in file order.
    pub prompts: Vec<Prompt>,
    /// (field, bytes) of every file the sweep file pulls in (prompt files, templates): part
    /// of the sweep's identity, since editing one changes what a resumed sweep would run.
    pub included: Vec<(String, Vec<u8>)>,
    /// A file with `models:`: one single-model sweep per selected model, in file order
    /// (`sweep.model` applied); empty for a file with `model:`.
    pub model_sweeps: Vec<ModelSweep>,
}

/// One model's sub-sweep of a file with `models:`: the single-model sweep file the file
/// means for that model (its `model`, the exclude rules naming it or none, name
/// `<name>.<id>`), parsed as such, so it runs exactly as a single-model sweep does.
#[derive(Debug, Clone)]
pub struct ModelSweep {
    /// The model's id in `models:`.
    pub id: String,
    /// Its sweep: `text` is the derived single-model YAML, which its manifest keeps (so
    /// `verify` and resume treat `<out>/models/<id>` as the results of that file).
    pub config: LoadedConfig,
    /// For each exclude rule of `config`, its index in the original file (errors name that).
    pub exclude_origin: Vec<usize>,
}

impl ModelSweep {
    /// An error of this model's sweep named as the original file writes it
    /// (`models.<id>...`, the original `exclude[i]`).
    pub fn blame(&self, e: Error) -> Error {
        blame_model(e, &self.id, &self.exclude_origin)
    }
}

impl LoadedConfig {
    /// sha256 identity of the sweep: the file's bytes and every file it includes. Results
    /// directories are keyed by it (resume reuses only results of the same identity).
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.text.as_bytes());
        for (field, bytes) in &self.included {
            h.update(b"\0");
            h.update(field.as_bytes());
            h.update(b"\0");
            h.update(bytes);
        }
        crate::fsutil::hex(&h.finalize())
    }

    /// The kv_aligned=true tolerance for `dtype` on `weights`, defaults merged with the
    /// file's overrides.
    pub fn tolerance(&self, dtype: RunDtype, weights: WeightFormat) -> Thresholds {
        let base = Thresholds::default_tolerance_for(dtype, weights);
        match self.config.tolerances.get(&limits_key(dtype, weights)) {
            Some(o) => base.merged(o),
            None => base,
        }
    }

    /// The kv_aligned=false drift budget for `dtype` on `weights`, defaults merged with the
    /// file's overrides.
    pub fn drift_budget(&self, dtype: RunDtype, weights: WeightFormat) -> Thresholds {
        let base = Thresholds::default_drift_budget_for(dtype, weights);
        match self.config.drift_budget.get(&limits_key(dtype, weights)) {
            Some(o) => base.merged(o),
            None => base,
        }
    }

    /// The limits a pair is judged by: the tolerance when it is judged for equivalence
    /// ([`crate::plan::PairSpec::equivalence`]: kv_aligned, or a serving path), else the drift
    /// budget. The engine plays no part: every implementation must meet the same bounds.
    pub fn limits(&self, dtype: RunDtype, weights: WeightFormat, equivalence: bool) -> Thresholds {
        if equivalence {
            self.tolerance(dtype, weights)
        } else {
            self.drift_budget(dtype, weights)
        }
    }

    /// The limits an engine path of `dtype` on `weights` is held to against the reference
    /// ([`Thresholds::default_reference_for`]), merged with `reference.limits`.
    pub fn reference_limits(&self, dtype: RunDtype, weights: WeightFormat) -> Thresholds {
        let base = Thresholds::default_reference_for(dtype, weights);
        let key = limits_key(dtype, weights);
        match self
            .config
            .reference
            .as_ref()
            .and_then(|r| r.limits.get(&key))
        {
            Some(o) => base.merged(o),
            None => base,
        }
    }

    /// The `reference:` section, or the default (the own decoder in f32).
    pub fn reference(&self) -> super::reference::ReferenceConfig {
        self.config.reference.clone().unwrap_or_default()
    }

    /// The fault injected into decode runs (none by default).
    pub fn injection(&self) -> crate::trace::Injection {
        self.config
            .inject
            .as_ref()
            .map(InjectConfig::injection)
            .unwrap_or_default()
    }

    /// The trace NMSE threshold for `dtype`: the default, or the file's override.
    pub fn nmse_threshold(&self, dtype: RunDtype) -> f64 {
        self.config
            .trace
            .as_ref()
            .and_then(|t| t.nmse_threshold.get(dtype.as_str()).copied())
            .unwrap_or_else(|| crate::trace::default_nmse_threshold(dtype))
    }

    /// Whether the file names several models (`models:`): then [`Self::model_sweeps`] holds
    /// the sweeps to run, and single-model commands refuse it.
    pub fn is_multi(&self) -> bool {
        self.config.models.is_some()
    }

    /// The prompts the sweep uses, in file order, filtered by `sweep.prompt` when given.
    pub fn selected_prompts(&self) -> Vec<&Prompt> {
        match &self.config.sweep.prompt {
            None => self.prompts.iter().collect(),
            Some(ids) => {
                let ids: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
                self.prompts
                    .iter()
                    .filter(|p| ids.contains(p.id.as_str()))
                    .collect()
            }
        }
    }
}

/// An error in model `id`'s sweep, named as the original file writes it: `model...` becomes
/// `models.<id>...`, `exclude[j]` the rule's index in the original file (`exclude_origin`),
/// and a line number (of the derived text) is dropped. Other errors pass unchanged.
pub(super) fn blame_model(e: Error, id: &str, exclude_origin: &[usize]) -> Error {
    let Error::Config {
        file,
        location: _,
        field,
        message,
    } = e
    else {
        return e;
    };
    let field = if let Some(rest) = field.strip_prefix("model") {
        if rest.is_empty() || rest.starts_with('.') {
            format!("models.{id}{rest}")
        } else {
            field
        }
    } else if let Some(rest) = field.strip_prefix("exclude[") {
        match rest.split_once(']') {
            Some((j, tail)) => match j.parse::<usize>().ok().and_then(|j| exclude_origin.get(j)) {
                Some(k) => format!("exclude[{k}]{tail}"),
                None => field,
            },
            None => field,
        }
    } else {
        field
    };
    // A field outside `models.<id>` is shared by every model: say which model it failed.
    let message = if field.starts_with(&format!("models.{id}")) {
        message
    } else {
        format!("{message} (in the sweep of model `{id}`)")
    };
    Error::Config {
        file,
        location: String::new(),
        field,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_names_the_model_and_the_original_rule() {
        let e = blame_model(
            Error::config("s.yaml", "model.source", "no such file"),
            "big",
            &[],
        );
        let t = e.to_string();
        assert!(t.contains("`models.big.source`: no such file"), "{t}");
        let e = blame_model(
            Error::config("s.yaml", "exclude[1].span", "x"),
            "a",
            &[0, 3],
        );
        let t = e.to_string();
        assert!(
            t.contains("`exclude[3].span`") && t.contains("model `a`"),
            "{t}"
        );
        // `models` itself and other fields are left as they are.
        let e = blame_model(Error::config("s.yaml", "sweep.span[0]", "x"), "a", &[]);
        assert!(e.to_string().contains("`sweep.span[0]`"), "{e}");
        let e = blame_model(Error::store("d", "x"), "a", &[]);
        assert_eq!(e.to_string(), "d: x");
    }
}
