//! The documentation cannot drift from the code: every ```yaml block of README.md and
//! docs/**/*.md is loaded as a sweep file by the library's own loader, and every relative
//! link of those pages names a file (and heading) that exists.
//!
//! A fence's info string says what a block is:
//! - `yaml`: a whole sweep file, loaded and validated by `driftsweep::config::load`;
//! - `yaml fragment`: part of a sweep file, merged into `configs/quickstart.yaml` (mappings
//!   key by key) and loaded the same way, so its keys and values meet the schema;
//! - `yaml kubernetes`: a Kubernetes manifest, which must parse and name its `apiVersion`
//!   and `kind`.
//!
//! Any other word after `yaml` fails, so no block is skipped by a typo.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

/// One fenced code block of a Markdown page.
#[derive(Debug)]
struct Block {
    /// The words after the opening backticks.
    info: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// The text between the fences.
    text: String,
}

/// A Markdown page: its fenced blocks, and its text outside them (where links and headings
/// count).
#[derive(Debug, Default)]
struct Page {
    blocks: Vec<Block>,
    prose: Vec<(usize, String)>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every .md under docs/, sorted.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut out);
    out.sort();
    out
}

/// Splits a page into fenced blocks and prose lines. A fence may be indented (inside a list
/// item); it closes on a line of backticks alone. An unclosed fence is an error.
fn split(text: &str) -> Result<Page, String> {
    let mut page = Page::default();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        match (&mut open, t.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    line: i + 1,
                    text: String::new(),
                });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                page.blocks.push(open.take().unwrap());
            }
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => page.prose.push((i + 1, line.to_string())),
        }
    }
    match open {
        Some(b) => Err(format!(
            "the fence opened at line {} is never closed",
            b.line
        )),
        None => Ok(page),
    }
}

/// Creates the prompt files and templates a sweep file names, next to it, so that a
/// documented example can name them without the docs shipping them.
fn create_included(dir: &Path, doc: &Value) {
    let mut rels: Vec<&str> = Vec::new();
    if let Some(prompts) = doc.get("prompts").and_then(Value::as_sequence) {
        rels.extend(prompts.iter().filter_map(|p| p.get("file")?.as_str()));
    }
    if let Some(t) = doc.get("templates").and_then(Value::as_mapping) {
        rels.extend(t.values().filter_map(Value::as_str));
    }
    for rel in rels {
        let rel = Path::new(rel);
        // An absolute or escaping path is the loader's to refuse, not ours to create.
        if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
            continue;
        }
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "Included text of a documented example.\n").unwrap();
    }
}

/// Loads `text` as a sweep file with the library's loader, from a fresh directory.
fn load_sweep(text: &str) -> Result<(), String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let dir = tempfile::tempdir().unwrap();
    create_included(dir.path(), &doc);
    let path = dir.path().join("sweep.yaml");
    std::fs::write(&path, text).unwrap();
    driftsweep::config::load(&path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `base` with `over` merged in: mappings key by key, anything else replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// A fragment completed into the quickstart sweep file, then loaded.
fn load_fragment(text: &str) -> Result<(), String> {
    let over: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    if !over.is_mapping() {
        return Err("a fragment must be a mapping of sweep-file keys".into());
    }
    let quickstart = std::fs::read_to_string(root().join("configs/quickstart.yaml")).unwrap();
    let mut full: Value = serde_yaml::from_str(&quickstart).unwrap();
    merge(&mut full, &over);
    load_sweep(&serde_yaml::to_string(&full).unwrap())
}

/// Every document of a Kubernetes manifest names its `apiVersion` and `kind`.
fn check_kubernetes(text: &str) -> Result<(), String> {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| e.to_string())?;
        let m: &Mapping = v.as_mapping().ok_or("a manifest is a mapping")?;
        for key in ["apiVersion", "kind"] {
            if !m.contains_key(key) {
                return Err(format!("the manifest has no `{key}`"));
            }
        }
    }
    Ok(())
}

/// Checks one block by its info string; blocks in other languages pass.
fn check_block(b: &Block) -> Result<(), String> {
    let mut words = b.info.split_whitespace();
    if words.next() != Some("yaml") {
        return Ok(());
    }
    match (words.next(), words.next()) {
        (None, _) => load_sweep(&b.text),
        (Some("fragment"), None) => load_fragment(&b.text),
        (Some("kubernetes"), None) => check_kubernetes(&b.text),
        _ => Err(format!(
            "unknown fence `{}`: use yaml, yaml fragment or yaml kubernetes",
            b.info
        )),
    }
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks).
fn anchors(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let page = split(&text)?;
    Ok(page
        .prose
        .iter()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(_, l)| slug(l.trim_start_matches('#')))
        .collect())
}

/// The targets of the inline links `[text](target)` on a line.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let tail = &rest[i + 2..];
        let Some(end) = tail.find(')') else { break };
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Every relative link of a page's prose names an existing file, and a heading of it when it
/// has a `#fragment`.
fn check_links(page_path: &Path, page: &Page) -> Vec<String> {
    let dir = page_path.parent().unwrap();
    let mut errors = Vec::new();
    for (n, line) in &page.prose {
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if file.is_empty() {
                page_path.to_path_buf()
            } else {
                dir.join(file)
            };
            let fail = |why: String| format!("{}:{n}: `{target}`: {why}", page_path.display());
            if !file.exists() {
                errors.push(fail("no such file".into()));
            } else if let Some(a) = anchor {
                match anchors(&file) {
                    Ok(list) if list.iter().any(|x| x == a) => {}
                    Ok(_) => errors.push(fail(format!("no heading `#{a}` in it"))),
                    Err(e) => errors.push(fail(e)),
                }
            }
        }
    }
    errors
}

/// Every problem of one page: its blocks and its links.
fn check_page(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let page = match split(&text) {
        Ok(p) => p,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let mut errors: Vec<String> = page
        .blocks
        .iter()
        .filter_map(|b| {
            check_block(b)
                .err()
                .map(|e| format!("{}:{}: ```{} block: {e}", path.display(), b.line, b.info))
        })
        .collect();
    errors.extend(check_links(path, &page));
    errors
}

#[test]
fn every_yaml_block_and_link_of_the_docs_holds() {
    let pages = pages();
    assert!(pages.len() > 10, "README.md and docs/ are read: {pages:?}");
    let mut sweeps = 0;
    for p in &pages {
        let text = std::fs::read_to_string(p).unwrap();
        sweeps += split(&text)
            .map(|pg| {
                pg.blocks
                    .iter()
                    .filter(|b| b.info.starts_with("yaml"))
                    .count()
            })
            .unwrap_or(0);
    }
    assert!(sweeps >= 3, "the docs hold YAML blocks to check ({sweeps})");
    let errors: Vec<String> = pages.iter().flat_map(|p| check_page(p)).collect();
    assert!(
        errors.is_empty(),
        "the docs drifted:\n{}",
        errors.join("\n")
    );
}

/// The keys the schema knows at the place `fragment` puts `not_a_key`, as the loader lists
/// them when it refuses that key.
fn schema_keys(fragment: &str) -> Vec<String> {
    let quickstart = std::fs::read_to_string(root().join("configs/quickstart.yaml")).unwrap();
    let mut full: Value = serde_yaml::from_str(&quickstart).unwrap();
    merge(&mut full, &serde_yaml::from_str(fragment).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.yaml");
    std::fs::write(&path, serde_yaml::to_string(&full).unwrap()).unwrap();
    let Err(driftsweep::Error::Config { message, .. }) = driftsweep::config::load(&path) else {
        panic!("`{fragment}` is refused as a config error");
    };
    let (_, list) = message
        .split_once("expected ")
        .unwrap_or_else(|| panic!("the message lists the keys: {message}"));
    let mut keys: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect();
    keys.sort();
    keys
}

/// The keys of the mappings at `at` (one mapping, or each entry of a list), sorted.
fn keys_of(at: &Value) -> Vec<String> {
    let maps: Vec<&Value> = match at {
        Value::Sequence(items) => items.iter().collect(),
        v => vec![v],
    };
    let mut keys: Vec<String> = maps
        .iter()
        .filter_map(|m| m.as_mapping())
        .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(String::from)))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn the_reference_block_shows_every_key_of_the_schema() {
    // So that a key added to the schema cannot stay undocumented.
    let text = std::fs::read_to_string(root().join("docs/sweep-file.md")).unwrap();
    let page = split(&text).unwrap();
    let block = page.blocks.iter().find(|b| b.info == "yaml").unwrap();
    let doc: Value = serde_yaml::from_str(&block.text).unwrap();
    // `models:` and the model axis cannot stand beside `model:`: "Several models" shows them.
    let several = page
        .blocks
        .iter()
        .find(|b| b.info == "yaml" && b.text.contains("\nmodels:"))
        .unwrap();
    let several: Value = serde_yaml::from_str(&several.text).unwrap();
    let both = |at: &dyn Fn(&Value) -> &Value| {
        let mut k = keys_of(at(&doc));
        k.extend(keys_of(at(&several)));
        k.sort();
        k.dedup();
        k
    };
    assert_eq!(both(&|d| d), schema_keys("not_a_key: 1"));
    for section in ["model", "sweep", "trace", "inject", "templates"] {
        let fragment = format!("{section}: {{not_a_key: 1}}");
        assert_eq!(both(&|d| &d[section]), schema_keys(&fragment), "{section}");
    }
    let fragment = "prompts: [{not_a_key: 1}]";
    assert_eq!(keys_of(&doc["prompts"]), schema_keys(fragment), "prompts");
}

#[test]
fn a_broken_block_is_caught() {
    let quickstart = std::fs::read_to_string(root().join("configs/quickstart.yaml")).unwrap();
    let block = |info: &str, text: &str| Block {
        info: info.into(),
        line: 1,
        text: text.into(),
    };
    assert_eq!(check_block(&block("yaml", &quickstart)), Ok(()));
    let zero_span = quickstart.replace("span: [16, 64]", "span: [16, 0]");
    let e = check_block(&block("yaml", &zero_span)).unwrap_err();
    assert!(e.contains("sweep.span"), "{e}");
    let e = check_block(&block("yaml", &quickstart.replace("name:", "nmae:"))).unwrap_err();
    assert!(e.contains("nmae"), "{e}");
    // Fragments: the schema still applies to keys and values.
    assert_eq!(
        check_block(&block("yaml fragment", "sweep: {span: [8]}\n")),
        Ok(())
    );
    let e = check_block(&block("yaml fragment", "tolerance: {f32: {kl_max: 1}}\n")).unwrap_err();
    assert!(e.contains("tolerance"), "{e}");
    let e = check_block(&block("yaml fragment", "sweep: {dtype: [f64]}\n")).unwrap_err();
    assert!(e.contains("sweep.dtype"), "{e}");
    assert!(check_block(&block("yaml fragment", "- a list\n")).is_err());
    assert!(check_block(&block("yaml fragment", "key: [unclosed\n")).is_err());
    // Manifests and fence words.
    assert!(check_block(&block("yaml kubernetes", "kind: Job\n")).is_err());
    assert!(check_block(&block("yaml fragmnet", "name: x\n")).is_err());
    assert_eq!(check_block(&block("sh", "not: [yaml\n")), Ok(()));
    assert!(
        split("text\n```yaml\nname: x\n").is_err(),
        "an unclosed fence"
    );
}

#[test]
fn a_broken_link_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("other.md"), "# A heading: here\n").unwrap();
    let page_path = dir.path().join("page.md");
    let text = "[ok](other.md) [ok](other.md#a-heading-here) [web](https://example.com)\n\
                [gone](missing.md) [bad anchor](other.md#nowhere) [self](#top)\n\
                ```sh\n[in code](not-checked.md)\n```\n";
    std::fs::write(&page_path, text).unwrap();
    let page = split(text).unwrap();
    let errors = check_links(&page_path, &page);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("missing.md") && errors[0].contains("no such file"));
    assert!(errors[1].contains("#nowhere"));
    assert!(errors[2].contains("#top"));
}
