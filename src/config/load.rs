//! Reading a sweep file: YAML parsing with file/line/key errors, then the files it includes
//! (prompt files, templates), each confined to the sweep file's directory.

use std::num::NonZeroUsize;
use std::path::Path;

use super::{CustomTemplates, LoadedConfig, Prompt, PromptSource, SweepConfig, validate};
use crate::error::{Error, Result};

/// Reads, parses and validates a sweep file.
pub fn load(path: &Path) -> Result<LoadedConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(path, "", format!("cannot read the sweep file: {e}")))?;
    parse(path, &text)
}

/// Parses and validates sweep-file text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<LoadedConfig> {
    let de = serde_yaml::Deserializer::from_str(text);
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
    validate::validate(path, &config)?;
    let mut loaded = LoadedConfig {
        path: path.to_path_buf(),
        text: text.to_string(),
        config,
        templates: CustomTemplates::default(),
        prompts: Vec::new(),
        included: Vec::new(),
    };
    load_included(&mut loaded)?;
    loaded.prompts = resolve_prompts(&loaded)?;
    Ok(loaded)
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
        let bytes = std::fs::read(&canon)
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
