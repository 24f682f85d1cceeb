//! The shape of the runtime, checked: each layer imports only the layers below it (the map in
//! docs/ARCHITECTURE.md), every import names the module that defines a thing (never the
//! crate root's re-exports), no two modules import each other round a circle, nothing outside
//! `node/` sees the node's `Core`, and no file is longer than a sitting's read before its
//! tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runtime/src");

/// Module group → the groups it may import. `error` and `config` are the shared vocabulary
/// every layer may use; `lib` and `node` may use everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("wire", &[]),
    ("error", &["wire"]),
    ("config", &["wire"]),
    ("link", &["wire"]),
    ("state", &[]),
    ("handlers", &["wire", "link"]),
    ("cluster", &["wire", "link", "handlers"]),
    ("client", &["wire", "link", "handlers"]),
    (
        "actors",
        &["wire", "link", "handlers", "cluster", "client", "state"],
    ),
    ("http", &["wire", "link", "handlers", "cluster", "client"]),
];

/// Vocabulary any module may name.
const SHARED: &[&str] = &["error", "config"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read runtime/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The group of a file: its top folder, or its own name for a file at the top.
fn group(path: &Path) -> String {
    let rel = path.strip_prefix(SRC).expect("under src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

/// The code of a file before its tests, without comment lines.
fn code(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect()
}

/// Every group a line names through `crate::`, `crate::{..}` included.
fn named_groups(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` in a macro names what the macro's users see: the crate's public face.
        let in_macro = rest[..at].ends_with('$');
        rest = &rest[at + "crate::".len()..];
        if in_macro {
            continue;
        }
        let names: Vec<&str> = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            inner[..end]
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        // A type named through the root is a facade import, which its own test refuses.
        let modules = names
            .into_iter()
            .filter(|n| n.starts_with(|c: char| c.is_ascii_lowercase()));
        found.extend(modules.map(str::to_owned));
    }
    found
}

#[test]
fn layers_import_only_the_layers_below_them() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for file in &files {
        let me = group(file);
        let Some(may) = allowed.get(me.as_str()) else {
            assert!(
                me == "lib" || me == "node",
                "{} is in no known layer",
                file.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in code(&text).iter().enumerate() {
            for used in named_groups(line) {
                if used != me && !may.contains(&used.as_str()) && !SHARED.contains(&used.as_str()) {
                    wrong.push(format!("{}:{}: {me} uses {used}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer map:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_node_layer_sees_core() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    for file in files.iter().filter(|f| group(f) != "node") {
        let text = std::fs::read_to_string(file).expect("read a source file");
        assert!(
            !code(&text).iter().any(|l| l.contains("Core")),
            "{} names the node's Core",
            file.display()
        );
    }
}

#[test]
fn every_file_reads_in_one_sitting() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let before_tests = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        assert!(
            before_tests <= 500,
            "{} has {before_tests} lines before its tests",
            file.display()
        );
    }
}

#[test]
fn imports_name_the_home_of_a_thing_not_the_crate_root() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut facade = Vec::new();
    for file in files.iter().filter(|f| group(f) != "lib") {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in code(&text).iter().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let after = &line[at + "crate::".len()..];
                let in_macro = line[..at].ends_with('$');
                let names_type =
                    after.starts_with(|c: char| c.is_ascii_uppercase()) || after.starts_with('{');
                if !in_macro && names_type {
                    facade.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        facade.is_empty(),
        "imports through the crate root (name the defining module):\n{}",
        facade.join("\n")
    );
}

/// A file's module path (`link::connection::reader`; the root is empty).
fn module_of(path: &Path) -> Vec<String> {
    let rel = path
        .strip_prefix(SRC)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The modules a file's code names through `crate::`, `super::` or `self::`, each cut to
/// the longest prefix that is a module of the crate.
fn module_deps(me: &[String], text: &str, modules: &[Vec<String>]) -> Vec<Vec<String>> {
    let resolve = |path: Vec<String>| {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
            .unwrap_or_default()
    };
    let mut deps = Vec::new();
    for line in code(text) {
        for base in ["crate::", "super::", "self::"] {
            for (at, _) in line.match_indices(base) {
                let before = line[..at].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                    continue;
                }
                let mut prefix: Vec<String> = match base {
                    "crate::" => Vec::new(),
                    "super::" => me[..me.len().saturating_sub(1)].to_vec(),
                    _ => me.to_vec(),
                };
                let mut rest = &line[at + base.len()..];
                while let Some(next) = rest.strip_prefix("super::") {
                    prefix.pop();
                    rest = next;
                }
                let path_end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                let mut path = prefix.clone();
                path.extend(
                    rest[..path_end]
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                let group = rest[path_end..]
                    .strip_prefix('{')
                    .map(|g| &g[..g.find('}').unwrap_or(g.len())]);
                match group {
                    Some(items) => {
                        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                            let mut full = path.clone();
                            let item = item.split(" as ").next().unwrap_or(item);
                            if item != "self" {
                                full.extend(item.split("::").map(str::to_owned));
                            }
                            deps.push(resolve(full));
                        }
                    }
                    None => deps.push(resolve(path)),
                }
            }
        }
    }
    deps
}

#[test]
fn no_modules_import_each_other_round_a_circle() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let modules: Vec<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
    // A module's use of an ancestor is nesting (a connection's reader reads the connection's
    // state), not a circle; every other edge counts.
    let mut edges: BTreeMap<Vec<String>, Vec<Vec<String>>> = BTreeMap::new();
    for (file, me) in files.iter().zip(&modules) {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let deps = module_deps(me, &text, &modules)
            .into_iter()
            .filter(|d| d != me && !me.starts_with(d))
            .collect();
        edges.insert(me.clone(), deps);
    }
    // Depth-first search for a back edge.
    fn visit(
        at: &Vec<String>,
        edges: &BTreeMap<Vec<String>, Vec<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, bool>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(at) {
            Some(true) => return None,
            Some(false) => {
                let from = path.iter().position(|p| p == at).unwrap_or(0);
                let mut circle = path[from..].to_vec();
                circle.push(at.clone());
                return Some(circle);
            }
            None => {}
        }
        state.insert(at.clone(), false);
        path.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, state, path) {
                return Some(circle);
            }
        }
        path.pop();
        state.insert(at.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for module in edges.keys() {
        if let Some(circle) = visit(module, &edges, &mut state, &mut Vec::new()) {
            let names: Vec<String> = circle.iter().map(|m| m.join("::")).collect();
            panic!(
                "modules import each other round a circle: {}",
                names.join(" -> ")
            );
        }
    }
}

/// The public face stays small: at most 30 names at the crate root (types, functions,
/// modules and the `service!` macro; hidden ones not counted) and at most 26 public methods
/// on `Node` (25 until `call_json`: dynamic callers — the CLI, the Python package — need
/// the resend on a new link that `call` does, and cannot name a Rust result type).
#[test]
fn the_public_surface_stays_small() {
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).expect("read lib.rs");
    let mut names = Vec::new();
    let mut hidden = false;
    let mut lines = lib.lines();
    while let Some(line) = lines.next() {
        // Only the root's own items: not those inside its inline modules.
        if line.starts_with(' ') {
            continue;
        }
        if line.starts_with("#[doc(hidden)]") {
            hidden = true;
            continue;
        }
        if line.starts_with("#[") || line.starts_with("//") {
            continue;
        }
        let was_hidden = std::mem::take(&mut hidden);
        if let Some(rest) = line.strip_prefix("pub use ") {
            // `pub use a::{B, C};` may span lines.
            let mut text = rest.to_owned();
            while !text.contains(';') {
                text.push_str(lines.next().unwrap_or(";"));
            }
            let inner = match (text.find('{'), text.rfind('}')) {
                (Some(open), Some(close)) => text[open + 1..close].to_owned(),
                _ => text.rsplit("::").next().unwrap_or("").to_owned(),
            };
            if !was_hidden {
                names.extend(
                    inner
                        .split(',')
                        .map(|n| {
                            n.trim()
                                .trim_end_matches(';')
                                .rsplit("::")
                                .next()
                                .unwrap_or("")
                                .to_owned()
                        })
                        .filter(|n| !n.is_empty()),
                );
            }
        } else if let Some(rest) = line.strip_prefix("pub mod ") {
            if !was_hidden {
                names.push(rest.trim_end_matches([';', '{', ' ']).to_owned());
            }
        }
    }
    // The exported macros, less the hidden helpers.
    let mut macros = 0;
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim() == "#[macro_export]"
                && !(i > 0 && lines[i - 1].trim() == "#[doc(hidden)]")
            {
                macros += 1;
            }
        }
    }
    let root = names.len() + macros;
    assert!(
        root <= 30,
        "{root} names at the crate root: {names:?} and {macros} macros"
    );
    let mut methods = Vec::new();
    for file in [
        "node.rs",
        "node/actors.rs",
        "node/streams.rs",
        "node/register.rs",
        "node/start.rs",
    ] {
        let text = std::fs::read_to_string(Path::new(SRC).join(file)).expect("read a node file");
        let mut in_node = false;
        for line in code(&text) {
            if line.starts_with("impl Node {") {
                in_node = true;
            } else if line.starts_with('}') {
                in_node = false;
            } else if in_node {
                let t = line.trim_start();
                if let Some(rest) = t
                    .strip_prefix("pub fn ")
                    .or_else(|| t.strip_prefix("pub async fn "))
                {
                    methods.push(rest.split(['(', '<']).next().unwrap_or("").to_owned());
                }
            }
        }
    }
    assert!(
        methods.len() <= 26,
        "{} public methods on Node: {methods:?}",
        methods.len()
    );
}
