//! The layering kept by a test: no two top-level modules of a crate may
//! depend on each other, directly or round a longer circle, and no source
//! file outgrows one job. A module's
//! dependencies are the `crate::<module>` paths its files name outside
//! comments, literals and their `#[cfg(test)]` tail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines past which a source file is doing more than one job.
const MAX_LINES: usize = 600;

fn crates() -> [PathBuf; 2] {
    let server = Path::new(env!("CARGO_MANIFEST_DIR"));
    [server.join("src"), server.join("../tenantry/src")]
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("read source dir");
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments, literals and unit tests.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let skip_to = |from: usize, end: &str| {
        text[from..]
            .find(end)
            .map_or(text.len(), |at| from + at + end.len())
    };
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i = skip_to(i, "\n");
            out.push('\n');
        } else if rest.starts_with("/*") {
            i = skip_to(i + 2, "*/");
        } else if let Some(hashes) = rest
            .strip_prefix('r')
            .map(|r| r.len() - r.trim_start_matches('#').len())
            .filter(|n| rest[1 + n..].starts_with('"'))
        {
            // A raw string: r"…", r#"…"#, …
            let end = format!("\"{}", "#".repeat(hashes));
            i = skip_to(i + 2 + hashes, &end);
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\''
            && (rest[1..].starts_with('\\') || rest[1..].chars().nth(1) == Some('\''))
        {
            // A char literal ('x', '\n', '\''), not a lifetime.
            i = skip_to(i + 2, "'");
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a piece of code names through `crate::`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.insert(ident(&group[i..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest).to_owned());
        }
    }
    found.remove("");
    found
}

/// Each top-level module of a crate → the top-level modules it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a component");
        let top = first.as_os_str().to_string_lossy();
        let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let mut deps = named_modules(&code_of(&text));
        deps.remove(&top);
        graph.entry(top).or_default().extend(deps);
    }
    graph
}

/// One circle of the graph, if there is any (depth-first, by colour).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_depend_on_each_other_in_one_direction_only() {
    for src in crates() {
        let graph = module_graph(&src);
        assert!(graph.len() > 5, "read the modules of {}", src.display());
        if let Some(circle) = find_cycle(&graph) {
            panic!(
                "modules of {} depend on each other in a circle: {}",
                src.display(),
                circle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_check_sees_circles_and_paths_in_groups() {
    let code = code_of(
        "use crate::{api::x, control::{a, b}};\n// crate::jobs\nlet s = \"crate::cli\";\nuse crate::store::Y;\n#[cfg(test)]\nuse crate::app;",
    );
    let names: Vec<_> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["api", "control", "store"]);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_cycle(&graph).expect("a circle"), ["a", "b", "c", "a"]);
}
#[test]
fn no_source_file_does_more_than_one_job() {
    let mut files = Vec::new();
    for src in crates() {
        rust_files(&src, &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(file).expect("read source");
            let lines = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by job): {long:#?}"
    );
}
