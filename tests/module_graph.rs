//! The crate's layering, checked. Among the top-level modules of `src/`: no import cycle
//! (data flows config → plan → runs → compare → verdict → store → report, and nothing flows
//! back), and leaf modules that import nothing of the crate's above them. Among the files of
//! `src/`: no import cycle either, where every path that names another file's module counts
//! as an import: `crate::`, `super::`, `self::`, a child module named by its bare name (`use
//! child::X` in a `mod.rs`), and `driftsweep::` from the binary's files, in `use` trees as in
//! expressions (test modules inside a file resolve from where they stand: `use super::*` in a
//! file's `mod tests` is the file itself). The module tree comes from the `mod` declarations,
//! from `lib.rs` and `main.rs` down. And no file cites a document outside the repository.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module or file → the modules or files it imports from.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Code without its comments (line comments and doc comments: a doc link is not an import)
/// and without its test module: the layering is the library's; a test may drive a higher
/// layer end to end (report's tests render a diff).
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    lines[..cut]
        .iter()
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
    let paths = common::rust_files(&src);
    let files: Vec<(String, String)> = paths
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            // A `tests.rs` is a test module of its own (`#[cfg(test)] mod tests;`).
            let test_file = p.file_name().is_some_and(|n| n == "tests.rs");
            (!test_file && !["lib", "main", "cli"].contains(&module.as_str()))
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
        ("limits", &["compare", "dtype", "engine"][..]),
        ("trace", &["dtype"][..]),
        ("reference", &["dtype", "error", "fsutil"][..]),
        (
            "model",
            &["dtype", "engine", "error", "fsutil", "trace"][..],
        ),
        // config asks `reference` (itself a leaf) whether the transformers worker is
        // installed, to settle a `reference:` section that names no engine.
        (
            "config",
            &[
                "dtype",
                "engine",
                "error",
                "fsutil",
                "limits",
                "path",
                "reference",
                "trace",
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

// ---- The file-level graph ----

/// Which crate a file belongs to, and its module path inside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ModPath {
    /// `true` for the binary (`main.rs` and what it declares).
    bin: bool,
    segs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // `::`
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

/// Tokens of Rust source with comments, strings and char literals removed.
fn tokens(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && raw_string_end(&b, i).is_some()
        {
            i = raw_string_end(&b, i).unwrap_or(b.len());
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else {
            out.push(match c {
                ':' if next == Some(':') => {
                    i += 1;
                    Tok::Path
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                _ => Tok::Other,
            });
            i += 1;
        }
    }
    out
}

/// Where a raw string starting at `i` (`r"…"`, `r#"…"#`) ends, if one starts there.
fn raw_string_end(b: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if b.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < b.len() {
        if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(b.len())
}

/// The `mod name;` declarations of a file (its child files).
fn declared_children(toks: &[Tok]) -> Vec<String> {
    let mut out = Vec::new();
    for w in toks.windows(3) {
        if let [Tok::Ident(m), Tok::Ident(name), Tok::Semi] = w
            && m == "mod"
        {
            out.push(name.clone());
        }
    }
    out
}

/// The file that holds child module `name` of the file at `file` (relative to `src/`).
fn child_file(src: &Path, file: &str, name: &str) -> Option<String> {
    let f = Path::new(file);
    let stem = f.file_stem()?.to_str()?;
    let dir = f.parent().unwrap_or(Path::new(""));
    let base = if ["mod", "lib", "main"].contains(&stem) {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| src.join(p).is_file())
    .map(|p| p.to_string_lossy().replace('\\', "/"))
}

/// Every file of the two crates with its module path, from the `mod` declarations.
fn module_tree(src: &Path) -> BTreeMap<String, (ModPath, Vec<Tok>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![
        (
            "lib.rs".to_string(),
            ModPath {
                bin: false,
                segs: vec![],
            },
        ),
        (
            "main.rs".to_string(),
            ModPath {
                bin: true,
                segs: vec![],
            },
        ),
    ];
    while let Some((file, path)) = todo.pop() {
        let Ok(text) = std::fs::read_to_string(src.join(&file)) else {
            continue;
        };
        let toks = tokens(&text);
        for child in declared_children(&toks) {
            if let Some(f) = child_file(src, &file, &child) {
                let mut segs = path.segs.clone();
                segs.push(child);
                todo.push((
                    f,
                    ModPath {
                        bin: path.bin,
                        segs,
                    },
                ));
            }
        }
        out.insert(file, (path, toks));
    }
    out
}

/// One path's segments from the start of a use tree or expression path.
struct Walker<'a> {
    toks: &'a [Tok],
    /// Full paths found (crate, absolute segments).
    found: Vec<ModPath>,
}

impl Walker<'_> {
    /// Reads the path whose first segment is at `i` (already resolved to `base`), including
    /// `{…}` groups; returns the index after it.
    fn path(&mut self, mut i: usize, base: ModPath) -> usize {
        let mut cur = base;
        loop {
            // Expect `::` then a segment or a group.
            if self.toks.get(i) != Some(&Tok::Path) {
                self.found.push(cur);
                return i;
            }
            i += 1;
            match self.toks.get(i) {
                Some(Tok::Ident(s)) if s == "self" => {
                    self.found.push(cur);
                    return i + 1;
                }
                Some(Tok::Ident(s)) => {
                    cur.segs.push(s.clone());
                    i += 1;
                }
                Some(Tok::Open) => return self.group(i + 1, cur),
                _ => {
                    self.found.push(cur);
                    return i;
                }
            }
        }
    }

    /// Reads a `{a, b::c, d::{e}}` group whose items extend `base`; `i` is after `{`.
    fn group(&mut self, mut i: usize, base: ModPath) -> usize {
        loop {
            match self.toks.get(i) {
                None => return i,
                Some(Tok::Close) => return i + 1,
                Some(Tok::Comma) | Some(Tok::Other) => i += 1,
                Some(Tok::Ident(s)) if s == "self" || s == "as" => i += 1,
                Some(Tok::Ident(s)) => {
                    let mut p = base.clone();
                    p.segs.push(s.clone());
                    i = self.path(i + 1, p);
                }
                Some(Tok::Open) => i = self.group(i + 1, base.clone()),
                Some(_) => i += 1,
            }
        }
    }
}

/// The absolute module paths a file's code names, resolved from where each path stands.
fn paths_named(me: &ModPath, toks: &[Tok], children: &[String]) -> Vec<ModPath> {
    let mut w = Walker {
        toks,
        found: Vec::new(),
    };
    // Inline `mod name {` blocks: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let here = || {
            let mut m = me.clone();
            m.segs.extend(inline.iter().map(|(n, _)| n.clone()));
            m
        };
        let after_path = i > 0 && toks[i - 1] == Tok::Path;
        match &toks[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Tok::Ident(s) if !after_path && toks.get(i + 1) == Some(&Tok::Path) => {
                let base = match s.as_str() {
                    "crate" => Some(ModPath {
                        bin: me.bin,
                        segs: vec![],
                    }),
                    "driftsweep" if me.bin => Some(ModPath {
                        bin: false,
                        segs: vec![],
                    }),
                    "self" => Some(here()),
                    "super" => {
                        let mut m = here();
                        let mut j = i;
                        m.segs.pop();
                        // `super::super::…`
                        while toks.get(j + 2) == Some(&Tok::Ident("super".into())) {
                            m.segs.pop();
                            j += 2;
                        }
                        i = j;
                        Some(m)
                    }
                    child if inline.is_empty() && children.iter().any(|c| c == child) => {
                        let mut m = me.clone();
                        m.segs.push(child.to_string());
                        Some(m)
                    }
                    _ => None,
                };
                if let Some(b) = base {
                    i = w.path(i + 1, b);
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    w.found
}

/// The file-level import graph of the files in `files` (name → (module path, tokens)).
fn file_graph(files: &BTreeMap<String, (ModPath, Vec<Tok>)>) -> Graph {
    let by_path: BTreeMap<&ModPath, &String> = files.iter().map(|(f, (m, _))| (m, f)).collect();
    let mut g = Graph::new();
    for (file, (me, toks)) in files {
        let deps = g.entry(file.clone()).or_default();
        for p in paths_named(me, toks, &declared_children(toks)) {
            // The longest prefix of the path that is a file's module.
            let target = (0..=p.segs.len()).rev().find_map(|n| {
                by_path
                    .get(&ModPath {
                        bin: p.bin,
                        segs: p.segs[..n].to_vec(),
                    })
                    .copied()
            });
            if let Some(t) = target.filter(|t| *t != file) {
                deps.insert(t.clone());
            }
        }
    }
    g
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Folders whose files still import each other in a cycle, left for later. Edges between two
/// files of such a folder are left out of the check; edges that leave the folder are checked
/// like any other. Empty since `report/` lost its cycle (its types moved to `schema.rs`, its
/// file names to `files.rs`); the list stays so that a cycle left for later is named here.
const KNOWN_CYCLES: &[&str] = &[];

/// The graph without the edges inside the folders of [`KNOWN_CYCLES`].
fn without_known_cycles(g: &Graph) -> Graph {
    let folder = |f: &str| KNOWN_CYCLES.iter().find(|k| f.starts_with(*k)).copied();
    g.iter()
        .map(|(f, deps)| {
            let kept = deps
                .iter()
                .filter(|d| folder(f).is_none() || folder(f) != folder(d))
                .cloned()
                .collect();
            (f.clone(), kept)
        })
        .collect()
}

#[test]
fn known_cycles_are_still_there() {
    // Once a folder of KNOWN_CYCLES has no cycle left, this fails: take it off the list, so
    // that the check covers it again.
    let g = file_graph(&module_tree(&src_dir()));
    for k in KNOWN_CYCLES {
        let inside: Graph = g
            .iter()
            .filter(|(f, _)| f.starts_with(k))
            .map(|(f, deps)| {
                (
                    f.clone(),
                    deps.iter().filter(|d| d.starts_with(k)).cloned().collect(),
                )
            })
            .collect();
        assert!(
            find_cycle(&inside).is_some(),
            "`{k}` has no import cycle any more: remove it from KNOWN_CYCLES"
        );
    }
}

#[test]
fn src_files_form_no_import_cycle() {
    let src = src_dir();
    let files = module_tree(&src);
    let g = file_graph(&files);
    let listing: Vec<String> = g
        .iter()
        .map(|(f, deps)| {
            format!(
                "{f} -> {}",
                deps.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    println!("{}", listing.join("\n"));
    // Every .rs file under src/ is reached from lib.rs or main.rs.
    let on_disk: Vec<String> = common::rust_files(&src)
        .iter()
        .map(|p| {
            p.strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    let unreached: Vec<&String> = on_disk.iter().filter(|f| !files.contains_key(*f)).collect();
    assert!(
        unreached.is_empty(),
        "files the module tree did not reach: {unreached:?}"
    );
    assert!(g.len() >= 40, "the walk found too few files: {}", g.len());
    if let Some(c) = find_cycle(&without_known_cycles(&g)) {
        panic!(
            "import cycle among files: {}\n{}",
            c.join(" -> "),
            listing.join("\n")
        );
    }
}

/// Builds the graph of a made-up tree of files (name → source).
fn graph_of_sources(files: &[(&str, &str)]) -> Graph {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    file_graph(&module_tree(dir.path()))
}

#[test]
fn the_file_cycle_check_can_fail() {
    // Negative controls: each kind of path closes a cycle the check must find.
    for (what, files) in [
        (
            "super:: from a child back to its mod.rs, which re-exports the child",
            vec![
                ("lib.rs", "pub mod model;"),
                (
                    "model/mod.rs",
                    "mod gguf;\npub use gguf::load;\npub struct Info;",
                ),
                ("model/gguf.rs", "use super::Info;\npub fn load() {}"),
            ],
        ),
        (
            "two siblings through super:: and self::",
            vec![
                ("lib.rs", "pub mod m;"),
                ("m/mod.rs", "pub mod a;\npub mod b;"),
                ("m/a.rs", "use super::b::{X, inner::{Y}};\npub struct Z;"),
                (
                    "m/b.rs",
                    "pub mod inner;\npub fn f() -> super::a::Z { todo!() }\npub struct X;",
                ),
                ("m/b/inner.rs", "pub struct Y;"),
            ],
        ),
        (
            "crate:: between top-level files",
            vec![
                ("lib.rs", "pub mod config;\npub mod report;"),
                ("config.rs", "use crate::report::check;"),
                ("report.rs", "pub fn check() { let _ = crate::config::X; }"),
            ],
        ),
    ] {
        let g = graph_of_sources(&files);
        assert!(find_cycle(&g).is_some(), "{what}: no cycle found in {g:?}");
    }
}

#[test]
fn test_modules_comments_and_strings_are_not_imports() {
    let g = graph_of_sources(&[
        ("lib.rs", "pub mod a;\npub mod b;"),
        (
            "a.rs",
            "use crate::b::Thing;\npub fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::a::f as g;\n}\n",
        ),
        (
            "b.rs",
            "pub struct Thing;\n// crate::a::f in a comment\nconst S: &str = \"crate::a::f\";\nconst R: &str = r#\"super::a\"#;\nfn l<'a>(x: &'a str) -> char { 'c' }\n",
        ),
    ]);
    assert_eq!(g["a.rs"], BTreeSet::from(["b.rs".to_string()]));
    assert!(g["b.rs"].is_empty(), "{:?}", g["b.rs"]);
    assert!(find_cycle(&g).is_none());
}
