//! The shape the code keeps so that a reader can hold a file or a function at once: no source
//! file over 800 lines, no function outside tests over 100 lines (counted from its `fn` line
//! to its closing brace, as `cargo fmt` lays them out).

mod common;

use std::path::Path;

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 100;

/// The lines before a file's test module (`#[cfg(test)]` followed by `mod`), or all of them.
fn non_test_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines
        .windows(2)
        .position(|w| {
            w[0].trim() == "#[cfg(test)]" && {
                let t = w[1].trim_start();
                t.starts_with("mod ") || t.starts_with("pub mod ")
            }
        })
        .unwrap_or(lines.len());
    lines[..cut].to_vec()
}

/// `(name, first line, length)` of every function whose body spans more than `max` lines.
fn long_functions(lines: &[&str], max: usize) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let Some(name) = fn_name(t) else { continue };
        if t.trim_end().ends_with('}') {
            continue; // a one-line body
        }
        // The body opens on the line that ends with `{` (a signature may wrap); a line that
        // ends with `;` first is a declaration without a body.
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = (open + 1..lines.len()).find(|&j| {
            let l = lines[j];
            l.len() - l.trim_start().len() == indent && l.trim_start().starts_with('}')
        });
        let end = close.unwrap_or(lines.len() - 1);
        let len = end - i + 1;
        if len > max {
            out.push((name, i + 1, len));
        }
    }
    out
}

/// The name of the function a trimmed line declares, if it declares one.
fn fn_name(t: &str) -> Option<String> {
    let mut rest = t;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn files_and_functions_stay_short() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = common::rust_files(&root.join("src"));
    assert!(files.len() > 40, "too few files found: {}", files.len());
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(root).unwrap().display();
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            problems.push(format!("{rel}: {n} lines (at most {MAX_FILE_LINES})"));
        }
        // A `tests.rs` is a test module of its own (`#[cfg(test)] mod tests;`).
        let code = if f.file_name().is_some_and(|n| n == "tests.rs") {
            Vec::new()
        } else {
            non_test_lines(&text)
        };
        for (name, at, len) in long_functions(&code, MAX_FN_LINES) {
            problems.push(format!(
                "{rel}:{at}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_shape_check_can_fail() {
    // Negative control: a long function, found with its length; a short one and a
    // declaration are not; the test module is not counted.
    let mut text = String::from("/// Doc.\npub fn long(\n    a: u8,\n) -> u8 {\n");
    for _ in 0..100 {
        text.push_str("    let _ = a;\n");
    }
    text.push_str("    a\n}\n\nfn short() {}\n\ntrait T {\n    fn decl(&self);\n}\n");
    text.push_str("#[cfg(test)]\nmod tests {\n    fn long_test() {\n");
    for _ in 0..200 {
        text.push_str("        let _ = 1;\n");
    }
    text.push_str("    }\n}\n");
    let found = long_functions(&non_test_lines(&text), MAX_FN_LINES);
    assert_eq!(found, vec![("long".to_string(), 2, 105)]);
    let all = long_functions(&text.lines().collect::<Vec<_>>(), MAX_FN_LINES);
    assert_eq!(all.len(), 2, "{all:?}");
}
