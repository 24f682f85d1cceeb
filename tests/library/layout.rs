//! The shape of the runtime, checked: each layer imports only the layers below it (the map in
//! docs/ARCHITECTURE.md), nothing outside `node/` sees the node's `Core`, and no file is
//! longer than a sitting's read before its tests.

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
    ("handlers", &["wire", "link"]),
    ("cluster", &["wire", "link", "handlers"]),
    ("client", &["wire", "link", "handlers"]),
    ("actors", &["wire", "link", "handlers", "cluster", "client"]),
    ("http", &["wire", "link", "handlers", "cluster", "client"]),
];

/// Vocabulary any module may name.
const SHARED: &[&str] = &["error", "config"];

/// What `crate::X` names that are re-exported types rather than modules resolve to.
const REEXPORTS: &[(&str, &str)] = &[
    ("RpcError", "error"),
    ("ErrorKind", "wire"),
    ("StartError", "error"),
    ("NodeConfig", "config"),
    ("CallOptions", "client"),
    ("Client", "client"),
    ("Peer", "client"),
    ("StreamOptions", "client"),
    ("ItemStream", "client"),
    ("ItemSink", "client"),
    ("StreamReply", "client"),
    ("Items", "handlers"),
    ("BoxStream", "handlers"),
    ("PeerInfo", "link"),
    ("NodeId", "wire"),
    ("Trace", "wire"),
    ("with_trace", "link"),
    ("current_trace", "link"),
    ("TlsConfig", "config"),
    ("MulticastConfig", "config"),
    ("Target", "cluster"),
    ("Node", "node"),
];

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
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            let resolved = REEXPORTS
                .iter()
                .find(|(ty, _)| *ty == name)
                .map_or(name, |(_, module)| module);
            found.push(resolved.to_owned());
        }
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
