//! The crate's layering, checked: no import cycle among the top-level modules of `src/`
//! (data flows config → plan → runs → compare → verdict → store → report, and nothing flows
//! back), leaf modules that import nothing of the crate's above them, and no file that cites
//! a document outside the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without its comments (line comments and doc comments: a doc link is not an import).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the other top-level modules it names as `crate::x`.
fn graph_of(files: &[(String, String)]) -> Graph {
    let mut g = Graph::new();
    for (module, text) in files {
        let deps = g.entry(module.clone()).or_default();
        let code = code_of(text);
        let mut rest = code.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Modules are lowercase; `crate::Error` and the like are re-exports.
            if !name.is_empty()
                && name != *module
                && name.starts_with(|c: char| c.is_ascii_lowercase())
            {
                deps.insert(name);
            }
        }
    }
    g
}

/// The modules of one cycle, if the graph has any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(g, next, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in g.keys() {
        if !state.contains_key(node.as_str()) {
            let mut stack = Vec::new();
            if let Some(c) = visit(g, node, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// The library's modules (the binary's own files, main.rs and what it declares, excluded).
fn library_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            (!["lib", "main", "progress"].contains(&module.as_str()))
                .then(|| (module, std::fs::read_to_string(p).unwrap()))
        })
        .collect();
    graph_of(&files)
}

#[test]
fn src_modules_form_no_import_cycle() {
    let g = library_graph();
    let listing: Vec<String> = g
        .iter()
        .map(|(m, deps)| {
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            format!("{m} -> {}", deps.join(", "))
        })
        .collect();
    println!("{}", listing.join("\n"));
    assert!(g.len() >= 10, "the walk found too few modules: {listing:?}");
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle: {}\n{}", c.join(" -> "), listing.join("\n"));
    }
}

#[test]
fn leaf_modules_stay_leaves() {
    let g = library_graph();
    // The vocabulary everything shares may not reach up into the layers that use it.
    for (leaf, allowed) in [
        ("dtype", &[][..]),
        ("engine", &[][..]),
        ("path", &[][..]),
        ("error", &[][..]),
        ("compare", &[][..]),
        ("fsutil", &["error"][..]),
        ("limits", &["dtype", "engine"][..]),
        ("trace", &["dtype"][..]),
        (
            "model",
            &["dtype", "engine", "error", "fsutil", "trace"][..],
        ),
        (
            "config",
            &[
                "dtype", "engine", "error", "fsutil", "limits", "path", "trace",
            ][..],
        ),
    ] {
        let deps = &g[leaf];
        let extra: Vec<&String> = deps
            .iter()
            .filter(|d| !allowed.contains(&d.as_str()))
            .collect();
        assert!(extra.is_empty(), "`{leaf}` imports {extra:?}");
    }
}

#[test]
fn the_cycle_check_can_fail() {
    // Negative control: a config that calls the renderer, which reads the config.
    let files = vec![
        (
            "config".to_string(),
            "use crate::report::check;".to_string(),
        ),
        ("report".to_string(), "use crate::config::X;".to_string()),
        (
            "plan".to_string(),
            "// crate::report in a comment".to_string(),
        ),
    ];
    let g = graph_of(&files);
    assert!(g["plan"].is_empty(), "comments are not imports");
    let c = find_cycle(&g).expect("the cycle is found");
    assert_eq!(c.first(), c.last());
    assert!(c.contains(&"config".to_string()) && c.contains(&"report".to_string()));
}

#[test]
fn nothing_cites_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    for dir in [
        "src",
        "templates",
        "tests",
        "examples",
        "scripts",
        "docs",
        "configs",
    ] {
        if root.join(dir).is_dir() {
            collect_text(&root.join(dir), &mut paths);
        }
    }
    paths.push(root.join("README.md"));
    let this = Path::new(file!()).file_name().unwrap();
    for p in paths {
        if p.file_name() == Some(this) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for needle in ["DESIGN.md", "../shared"] {
            assert!(
                !text.contains(needle),
                "{} cites `{needle}`, which is not in the repository (cite docs/design.md)",
                p.display()
            );
        }
    }
}

fn collect_text(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_text(&p, out);
        } else if p.extension().is_some_and(|x| {
            ["rs", "md", "tera", "sh", "py", "yaml", "toml"].contains(&x.to_str().unwrap_or(""))
        }) {
            out.push(p);
        }
    }
}
