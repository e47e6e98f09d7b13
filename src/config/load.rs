//! Reading a sweep file: YAML parsing with file/line/key errors, then the files it includes
//! (prompt files, templates), each confined to the sweep file's directory.

use std::num::NonZeroUsize;
use std::path::Path;

use super::loaded::{CustomTemplates, LoadedConfig, ModelSweep, Prompt, PromptSource};
use super::schema::SweepConfig;
use super::validate;
use crate::error::{Error, Result};

/// The largest sweep file read: far above any real sweep (the B3.70 sweep is 1 KiB), far
/// below what would make parsing slow.
pub const MAX_SWEEP_FILE_BYTES: u64 = 1 << 20;
/// The largest prompt file or template a sweep file may include.
pub const MAX_INCLUDED_BYTES: u64 = 4 << 20;
/// The deepest nesting (block indentation levels plus open flow brackets) a sweep file may
/// have; the schema itself needs five. Checked before the YAML parser, whose time grows
/// with the square of the depth.
pub const MAX_NESTING: usize = 32;
/// The most pairs a sweep may expand into unless `--max-pairs` allows more: expansion,
/// duplicate checks and the manifest grow with it, and a sweep this large is days of work.
pub const DEFAULT_MAX_PAIRS: usize = 20_000;

/// Bounds a sweep file must keep, beside the fixed ones above.
#[derive(Debug, Clone, Copy)]
pub struct LoadLimits {
    /// The most pairs the sweep may expand into (`--max-pairs`).
    pub max_pairs: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_pairs: DEFAULT_MAX_PAIRS,
        }
    }
}

/// Reads, parses and validates a sweep file.
pub fn load(path: &Path) -> Result<LoadedConfig> {
    load_with(path, &LoadLimits::default())
}

/// [`load`] with other limits.
pub fn load_with(path: &Path, limits: &LoadLimits) -> Result<LoadedConfig> {
    let bytes = read_regular(path, MAX_SWEEP_FILE_BYTES)
        .map_err(|m| Error::config(path, "", format!("cannot read the sweep file: {m}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::config(path, "", "the sweep file is not UTF-8 text"))?;
    parse_with(path, &text, limits)
}

/// [`crate::fsutil::read_regular`], its message naming the file.
pub(crate) fn read_regular(path: &Path, max: u64) -> std::result::Result<Vec<u8>, String> {
    crate::fsutil::read_regular(path, max).map_err(|e| format!("`{}`: {e}", path.display()))
}

/// Parses and validates sweep-file text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<LoadedConfig> {
    parse_with(path, text, &LoadLimits::default())
}

/// [`parse`] with other limits.
pub fn parse_with(path: &Path, text: &str, limits: &LoadLimits) -> Result<LoadedConfig> {
    if text.len() as u64 > MAX_SWEEP_FILE_BYTES {
        return Err(Error::config(
            path,
            "",
            format!("the sweep file is larger than {MAX_SWEEP_FILE_BYTES} bytes"),
        ));
    }
    // A byte-order mark is legal YAML but confuses the parser's first key; the hash keeps
    // the file's exact bytes.
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_nesting(path, body)?;
    let de = serde_yaml::Deserializer::from_str(body);
    let config: SweepConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let location = inner
            .location()
            .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
            .unwrap_or_default();
        // serde_yaml appends " at line L column C"; the location is already in front.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // ... and may start with the parent path ("sweep: unknown field"), named already.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.contains(' ')
            && field.starts_with(head)
        {
            message = rest.to_string();
        }
        Error::Config {
            file: path.to_path_buf(),
            location,
            field: if field == "." { String::new() } else { field },
            message,
        }
    })?;
    let mut config = settle_model(path, body, config)?;
    config.model.source = resolve_model_path(path, &config.model.source);
    settle_reference(&mut config);
    validate::validate(path, &config, limits.max_pairs)?;
    let mut loaded = LoadedConfig {
        path: path.to_path_buf(),
        text: text.to_string(),
        config,
        templates: CustomTemplates::default(),
        prompts: Vec::new(),
        included: Vec::new(),
        model_sweeps: Vec::new(),
    };
    load_included(&mut loaded)?;
    loaded.prompts = resolve_prompts(&loaded)?;
    loaded.model_sweeps = model_sweeps(&loaded, limits)?;
    Ok(loaded)
}

/// Settles a `reference:` section's engine left out (docs/sweep-file.md): transformers in
/// float64 where its worker is installed and every model is a checkpoint, else the own
/// decoder. What it settled on is in the manifest's settings and every report's label.
fn settle_reference(config: &mut SweepConfig) {
    let all_checkpoints = config.all_models().iter().all(|m| !m.is_builtin());
    if let Some(r) = config.reference.as_mut()
        && r.engine.is_none()
    {
        let python = crate::reference::python();
        let installed = python.exists();
        r.settle(installed, all_checkpoints);
        if !installed && all_checkpoints {
            // The same file means another reference on a machine with the worker: say so.
            eprintln!(
                "note: `reference:` names no engine and the transformers worker is not \
                 installed here ({}), so the reference is the own decoder in f32; \
                 `bash scripts/peer/setup.sh` installs it",
                python.display()
            );
        }
    }
}

/// The sub-sweeps of a file with `models:`, each parsed (and so checked) as the
/// single-model file it means; errors name the original file's fields.
fn model_sweeps(cfg: &LoadedConfig, limits: &LoadLimits) -> Result<Vec<ModelSweep>> {
    super::multi::selected(cfg)
        .into_iter()
        .map(|(id, model)| {
            let (text, exclude_origin) = super::multi::single_text(cfg, &id, &model)?;
            let config = parse_with(&cfg.path, &text, limits)
                .map_err(|e| super::loaded::blame_model(e, &id, &exclude_origin))?;
            Ok(ModelSweep {
                id,
                config,
                exclude_origin,
            })
        })
        .collect()
}

/// A model path relative to the sweep file's directory, as prompt files are: `builtin:` and
/// `hf:` sources and absolute paths stay as they are. A path found only from the working
/// directory is still taken from there, with a warning on stderr: the repository's sweep
/// files resolved that way before, and keep working for one release.
pub(crate) fn resolve_model_path(sweep: &Path, source: &str) -> String {
    let rel = Path::new(source);
    if source.starts_with("builtin:") || source.starts_with("hf:") || rel.is_absolute() {
        return source.to_string();
    }
    let Some(base) = sweep.parent().filter(|p| !p.as_os_str().is_empty()) else {
        // The sweep file lies in the working directory: both readings agree.
        return source.to_string();
    };
    let beside = base.join(rel);
    if !beside.exists() && rel.exists() {
        eprintln!(
            "warning: {}: model `{source}` is not in the sweep file's directory `{}`; taking it \
             from the working directory, as before (model paths are relative to the sweep \
             file; this fallback goes in the next release)",
            sweep.display(),
            base.display()
        );
        return source.to_string();
    }
    beside.to_string_lossy().into_owned()
}

/// Exactly one of `model:` and `models:`. With `models:`, `model` becomes the first model
/// (the schema's placeholder never leaves loading).
fn settle_model(path: &Path, body: &str, mut config: SweepConfig) -> Result<SweepConfig> {
    // The schema cannot tell a left-out `model:` from a given one: the keys can.
    let model_given = serde_yaml::from_str::<serde_yaml::Value>(body)
        .ok()
        .and_then(|v| v.as_mapping().map(|m| m.contains_key("model")))
        .unwrap_or(false);
    match (&config.models, model_given) {
        (Some(_), true) => Err(Error::config(
            path,
            "models",
            "`model:` and `models:` are both given: use `model:` for one model or `models:` \
             for several, not both",
        )),
        (None, false) => Err(Error::config(
            path,
            "",
            "missing field `model` (or `models:` for several models)",
        )),
        (Some(m), false) => {
            if let Some((_, first)) = m.0.first() {
                config.model = first.clone();
            }
            Ok(config)
        }
        (None, true) => Ok(config),
    }
}

/// Reads the prompt files and templates the sweep file names. Each must stay inside the sweep
/// file's directory: a results directory should be reproducible from that directory alone,
/// and a shared sweep file must not read arbitrary files.
fn load_included(cfg: &mut LoadedConfig) -> Result<()> {
    let path = cfg.path.clone();
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let read = |field: &str, rel: &Path| -> Result<(String, Vec<u8>)> {
        let e = |m: String| Error::config(&path, field, m);
        if rel.is_absolute() {
            return Err(e(format!(
                "`{}` is absolute: give a path relative to the sweep file's directory",
                rel.display()
            )));
        }
        let full = base.join(rel);
        let canon_base = base.canonicalize().map_err(|x| {
            e(format!(
                "cannot resolve the sweep file's directory `{}`: {x}",
                base.display()
            ))
        })?;
        let canon = full
            .canonicalize()
            .map_err(|x| e(format!("cannot read `{}`: {x}", full.display())))?;
        if !canon.starts_with(&canon_base) {
            return Err(e(format!(
                "`{}` escapes the sweep file's directory `{}`",
                rel.display(),
                canon_base.display()
            )));
        }
        let bytes = read_regular(&canon, MAX_INCLUDED_BYTES)
            .map_err(|x| e(format!("cannot read `{}`: {x}", full.display())))?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| e(format!("`{}` is not UTF-8 text", full.display())))?;
        Ok((text, bytes))
    };
    for i in 0..cfg.config.prompts.len() {
        let Some(rel) = cfg.config.prompts[i].file.clone() else {
            continue;
        };
        let field = format!("prompts[{i}].file");
        let (text, bytes) = read(&field, &rel)?;
        if text.is_empty() {
            return Err(Error::config(
                &path,
                &field,
                format!("`{}` is empty", rel.display()),
            ));
        }
        cfg.config.prompts[i].text = Some(text);
        cfg.included.push((field, bytes));
    }
    if let Some(t) = cfg.config.templates.clone() {
        for (field, rel, slot) in [
            ("templates.report", t.report, &mut cfg.templates.report),
            (
                "templates.trace_report",
                t.trace_report,
                &mut cfg.templates.trace_report,
            ),
        ] {
            let Some(rel) = rel else { continue };
            let (text, bytes) = read(field, &rel)?;
            *slot = Some(text);
            cfg.included.push((field.to_string(), bytes));
        }
    }
    Ok(())
}

/// Each prompt as the one source it has. `validate` has already refused a prompt with none,
/// with several, or with zero random ids; this turns that check into the type.
fn resolve_prompts(cfg: &LoadedConfig) -> Result<Vec<Prompt>> {
    cfg.config
        .prompts
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let source = match (&p.text, p.random_tokens.and_then(NonZeroUsize::new)) {
                (Some(t), None) => PromptSource::Text(t.clone()),
                (None, Some(n)) => PromptSource::RandomTokens(n),
                _ => {
                    return Err(Error::config(
                        &cfg.path,
                        format!("prompts[{index}]"),
                        "give exactly one of `text`, `file` or `random_tokens` (at least 1)",
                    ));
                }
            };
            Ok(Prompt {
                id: p.id.clone(),
                source,
                index,
            })
        })
        .collect()
}

/// Refuses text nested deeper than [`MAX_NESTING`], in one pass and before the parser sees
/// it (the parser's own recursion limit comes only after that cost): block levels are counted by indentation (and `- ` entries opened on one line), flow
/// levels by open brackets outside quotes and comments. It over-counts rather than under:
/// a file it refuses is nested far beyond anything the schema can hold.
fn check_nesting(path: &Path, text: &str) -> Result<()> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        if flow == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut dashes = 0;
        let mut rest = trimmed;
        while let Some(r) = rest.strip_prefix("- ") {
            dashes += 1;
            rest = r.trim_start_matches(' ');
        }
        let mut quote: Option<char> = None;
        // The deepest point of the line, not where it ends: `[[[…]]]` closes on one line.
        let mut deepest = flow;
        for ch in trimmed.chars() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(ch),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    deepest = deepest.max(flow);
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        if indents.len() + dashes + deepest > MAX_NESTING {
            return Err(Error::Config {
                file: path.to_path_buf(),
                location: format!("line {}: ", n + 1),
                field: String::new(),
                message: format!(
                    "nested deeper than {MAX_NESTING} levels; a sweep file needs a handful"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_in_flow_and_block_style() {
        let p = Path::new("t.yaml");
        let deep = |n: usize| format!("a: {}{}\n", "[".repeat(n), "]".repeat(n));
        check_nesting(p, &deep(MAX_NESTING - 1)).unwrap();
        assert!(check_nesting(p, &deep(MAX_NESTING + 1)).is_err());
        let mut block = String::new();
        for i in 0..=MAX_NESTING {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        let e = check_nesting(p, &block).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
        // Brackets inside quotes and comments are text.
        let quoted = format!("a: \"{}\" # {}\n", "[".repeat(99), "{".repeat(99));
        check_nesting(p, &quoted).unwrap();
    }
}

#[cfg(test)]
mod parse_tests {
    use std::path::Path;

    use super::super::loaded::LoadedConfig;
    use super::parse;
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

    use super::super::multi::single_text;
    use super::{load, parse};

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
            if let Some(models) = &cfg.config.models {
                // Each model's derived file is a sound single-model file of that model.
                for (id, model) in &models.0 {
                    let (text, _) = single_text(&cfg, id, model).unwrap();
                    let again = parse(&f, &text).unwrap_or_else(|e| panic!("{id}: {e}\n{text}"));
                    assert!(again.config.models.is_none(), "{}", f.display());
                }
                continue;
            }
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
