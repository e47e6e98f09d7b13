//! A sweep file with `models:` (docs/sweep-file.md, "Several models"): the single-model sweep
//! file it means for each model, and errors in one model's sweep named as the file writes
//! them (`models.<id>...`, the original `exclude[i]`).

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

/// An error in model `id`'s sweep, named as the original file writes it: `model...` becomes
/// `models.<id>...`, `exclude[j]` the rule's index in the original file (`exclude_origin`),
/// and a line number (of the derived text) is dropped. Other errors pass unchanged.
pub fn blame_model(e: Error, id: &str, exclude_origin: &[usize]) -> Error {
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

#[cfg(test)]
mod parse_tests {
    use std::path::Path;

    use crate::config::{LoadedConfig, parse};
    use crate::error::Result;

    const MULTI: &str = r#"
name: m
models:
  tiny: builtin:tiny-llama
  tiny2: {source: "builtin:tiny-llama"}
prompts:
  - {id: a, text: "hello"}
sweep:
  span: [4]
  dtype: [f32, bf16]
  kv_aligned: [0, 1]
  seed: [0]
exclude:
  - {model: tiny2, dtype: bf16}
  - {kv_aligned: 0, dtype: bf16}
"#;

    fn p(s: &str) -> Result<LoadedConfig> {
        parse(Path::new("t.yaml"), s)
    }

    fn err_of(s: &str) -> String {
        p(s).unwrap_err().to_string()
    }

    #[test]
    fn each_model_gets_the_single_model_sweep_it_means() {
        let c = p(MULTI).unwrap();
        assert!(c.is_multi());
        let ids: Vec<&str> = c.model_sweeps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["tiny", "tiny2"]);
        let tiny = &c.model_sweeps[0];
        assert_eq!(tiny.config.config.name, "m.tiny");
        assert!(!tiny.config.is_multi());
        assert!(tiny.config.model_sweeps.is_empty());
        // tiny keeps only the rule without a model; tiny2 keeps both, stripped.
        assert_eq!(tiny.config.config.exclude.len(), 1);
        assert_eq!(tiny.exclude_origin, [1]);
        let tiny2 = &c.model_sweeps[1];
        assert_eq!(tiny2.config.config.exclude.len(), 2);
        assert!(
            tiny2
                .config
                .config
                .exclude
                .iter()
                .all(|r| r.model.is_none())
        );
        assert_eq!(tiny2.config.config.model.source, "builtin:tiny-llama");
        // The derived text is itself a single-model sweep file with the same identity.
        let again = p(&tiny2.config.text).unwrap();
        assert_eq!(again.sha256(), tiny2.config.sha256());
        // The axis picks and orders by the file.
        let only = p(&MULTI.replace("  seed: [0]", "  seed: [0]\n  model: [tiny2]")).unwrap();
        assert_eq!(only.model_sweeps.len(), 1);
        assert_eq!(only.model_sweeps[0].id, "tiny2");
    }

    #[test]
    fn bad_model_axes_name_the_field() {
        let single = MULTI
            .replace(
                "models:\n  tiny: builtin:tiny-llama\n  tiny2: {source: \"builtin:tiny-llama\"}",
                "model: builtin:tiny-llama",
            )
            .replace("  - {model: tiny2, dtype: bf16}\n", "");
        p(&single).unwrap();
        let cases = [
            (
                MULTI.replace("name: m\n", "name: m\nmodel: builtin:tiny-llama\n"),
                "`models`",
            ),
            (
                MULTI.replace("models:\n  tiny: builtin:tiny-llama\n  tiny2: {source: \"builtin:tiny-llama\"}\n", ""),
                "missing field `model`",
            ),
            (MULTI.replace("model: tiny2", "model: tiny3"), "`exclude[0].model`"),
            (
                MULTI.replace("{model: tiny2, dtype: bf16}", "{model: tiny2}"),
                "`exclude[0]`",
            ),
            (
                MULTI.replace("  seed: [0]", "  seed: [0]\n  model: [tiny, zz]"),
                "`sweep.model[1]`",
            ),
            (
                MULTI.replace("  seed: [0]", "  seed: [0]\n  model: [tiny, tiny]"),
                "`sweep.model[1]`",
            ),
            (
                MULTI.replace("  seed: [0]", "  seed: [0]\n  model: []"),
                "`sweep.model`",
            ),
            (
                format!("{single}  model: [tiny]\n").replace("exclude:\n  - {kv_aligned: 0, dtype: bf16}\n", ""),
                "`sweep.model`",
            ),
            (
                single.replace("{kv_aligned: 0,", "{model: tiny, kv_aligned: 0,"),
                "`exclude[0].model`",
            ),
            (MULTI.replace("tiny2:", "'..':"), "`models...`"),
            (MULTI.replace("tiny2:", "'a/b':"), "`models.a/b`"),
            (MULTI.replace("tiny2:", "tiny:"), "duplicate model id `tiny`"),
            (
                MULTI.replace("tiny2: {source: \"builtin:tiny-llama\"}", "tiny2: ''"),
                "`models.tiny2.source`",
            ),
            (
                MULTI.replace("{kv_aligned: 0, dtype: bf16}", "{kv_aligned: 0, prompt: zz}"),
                "`exclude[1].prompt`",
            ),
            (
                MULTI.replace("models:\n  tiny: builtin:tiny-llama\n  tiny2: {source: \"builtin:tiny-llama\"}", "models: {}"),
                "`models`",
            ),
        ];
        for (text, field) in cases {
            let e = err_of(&text);
            assert!(e.contains(field), "expected {field} in: {e}");
            assert!(e.starts_with("t.yaml"), "{e}");
        }
    }
}

#[cfg(test)]
mod round_trip {
    use std::path::Path;

    use super::single_text;
    use crate::config::{load, parse};

    /// Every shipped sweep file, written back as a sub-sweep's single-model text, loads to
    /// the same settings: the derived file of a model's sweep means what the original does.
    #[test]
    fn shipped_sweep_files_survive_their_derived_text() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for f in files {
            let cfg = load(&f).unwrap_or_else(|e| panic!("{e}"));
            let (text, origin) = single_text(&cfg, "x", &cfg.config.model).unwrap();
            assert_eq!(origin, (0..cfg.config.exclude.len()).collect::<Vec<_>>());
            let again = parse(&f, &text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.display()));
            let mut want = cfg.config.clone();
            want.name = format!("{}.x", want.name);
            want.output = None;
            assert_eq!(
                serde_json::to_value(&again.config).unwrap(),
                serde_json::to_value(&want).unwrap(),
                "{}",
                f.display()
            );
            assert_eq!(again.included, cfg.included, "{}", f.display());
        }
    }
}
