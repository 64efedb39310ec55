//! The crate's dependencies run one way. Every `crate::…` path in `src/` (in `use` lines, in
//! code and in doc links) is an edge from the module of the file to the module it names; an
//! edge that points at the same layer or a higher one fails this test. The layers are the ones
//! drawn in `src/lib.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// From the bottom up. A module may use the modules of the layers below its own, nothing else.
const LAYERS: &[&[&str]] = &[
    &["model"],
    &["settings"],
    &["kafka", "telemetry"],
    &["ingest", "history", "destinations", "credentials"],
    &["workspace"],
    &["deliver"],
    &["ops"],
    &["api"],
    &["console"],
    &["app"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/deliver/route.rs` → `deliver`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

/// Every top-level module that `text` names through `crate::`, including the members of a
/// `use crate::{a::…, b};` group.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                names.insert(leading_ident(item.trim()).to_owned());
            }
        } else {
            names.insert(leading_ident(rest).to_owned());
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn leading_ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The index of the `}` that closes a group whose `{` was just before `s`.
fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&s[start..]);
    items
}

/// The edges of a file of module `from` that do not point to a lower layer.
fn edges_against(
    from_layer: usize,
    from: &str,
    text: &str,
    unknown: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut against = Vec::new();
    for to in named_modules(text) {
        if to == from {
            continue;
        }
        match layer_of(&to) {
            None => {
                unknown.insert(to);
            }
            Some(to_layer) if to_layer >= from_layer => against.push(format!("{from} uses {to}")),
            Some(_) => {}
        }
    }
    against
}

#[test]
fn dependencies_run_from_cli_down_to_model() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();

    let mut unknown = BTreeSet::new();
    let mut against = Vec::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        let Some(from_layer) = layer_of(&from) else {
            unknown.insert(from);
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source is readable");
        let shown = file
            .strip_prefix(&src)
            .unwrap_or(file)
            .display()
            .to_string();
        for edge in edges_against(from_layer, &from, &text, &mut unknown) {
            against.push(format!("{shown}: {edge}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from the layering (add them to LAYERS and to the map in src/lib.rs): {unknown:?}"
    );
    assert!(
        against.is_empty(),
        "imports against the layering:\n{}",
        against.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_inline_paths() {
    let text = "use crate::{deliver::route::Router, model::{Secret, FieldError}, kafka};\n\
                fn f() { crate::ops::redrive::run(); }";
    let got: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(got, ["deliver", "kafka", "model", "ops"]);
}

#[test]
fn an_upward_or_sideways_edge_is_reported() {
    let mut unknown = BTreeSet::new();
    let layer = |m| layer_of(m).expect("known module");
    let up = "use crate::workspace::table::WorkspaceTable;";
    assert_eq!(
        edges_against(layer("destinations"), "destinations", up, &mut unknown),
        ["destinations uses workspace"]
    );
    let sideways = "let _ = crate::history::writer::OutcomeWriter::new;";
    assert_eq!(
        edges_against(layer("ingest"), "ingest", sideways, &mut unknown),
        ["ingest uses history"]
    );
    let down = "use crate::model::{Secret, records::EventEnvelope};";
    assert!(edges_against(layer("destinations"), "destinations", down, &mut unknown).is_empty());
    let elsewhere = "use crate::plugins::Thing;";
    edges_against(layer("cli"), "cli", elsewhere, &mut unknown);
    assert!(unknown.contains("plugins"));
}
