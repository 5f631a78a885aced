//! The engine's floor plan: the "who may import whom" table in
//! engine/src/lib.rs holds for every source file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn engine_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/src")
}

/// The table's rows: room → the rooms it may import.
fn table() -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(engine_src().join("lib.rs")).unwrap();
    let mut rows = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() < 2 || cells[0] == "room" || cells[0].starts_with('-') {
            continue;
        }
        let may: BTreeSet<String> = cells[1].split_whitespace().map(str::to_owned).collect();
        rows.insert(cells[0].to_owned(), may);
    }
    assert!(
        rows.len() > 10,
        "the table in engine/src/lib.rs was not found"
    );
    rows
}

/// Every .rs file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The rooms a file names through `crate::ROOM` (uses, paths, doc links).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn imports_follow_the_table_in_lib_rs() {
    let table = table();
    let src = engine_src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut broken = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let room = first.trim_end_matches(".rs").to_owned();
        if room == "lib" {
            continue;
        }
        let Some(may) = table.get(&room) else {
            broken.push(format!(
                "{}: room `{room}` has no row in the table",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let mut names = imports(&text);
        if room == "main" {
            // The binary reaches the library by its name.
            names.extend(text.contains("strata::cli").then(|| "cli".to_owned()));
        }
        for target in names {
            if target != room && !may.contains(&target) {
                broken.push(format!("{}: `{room}` imports `{target}`", rel.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports that break the table:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_a_broken_import() {
    let text = "use crate::exec::build;\n/// see [`crate::backend::Backend`]\nfn f() { crate::store::x(); }";
    let names = imports(text);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["backend", "exec", "store"]
    );
}
