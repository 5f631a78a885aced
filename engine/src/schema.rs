//! JSON Schema compilation with strata's path formats.
//!
//! Stage schemas mark paths with these formats, so a path that would leave
//! the tree is an error at load time, with its JSON pointer:
//!
//! | format              | accepts                                            |
//! |---------------------|----------------------------------------------------|
//! | `strata-tree-path`  | `/absolute/path` in the tree, no `..` component    |
//! | `strata-tree-url`   | `tree:///absolute/path`, no `..` component         |
//! | `strata-input-url`  | `input://NAME/relative/path`, no `..` component    |
//!
//! Symlinks inside a tree cannot be judged before it exists; stages resolve
//! paths beneath the tree at run time and refuse links that point out.

use serde_json::Value;

/// The manifest schema, compiled into strata.
pub const MANIFEST_SCHEMA: &str = include_str!("../../schemas/manifest.json");

/// Compiles `schema` with format checks on and strata's formats registered.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .with_format("strata-tree-path", |s: &str| is_tree_path(s))
        .with_format("strata-tree-url", |s: &str| {
            s.strip_prefix("tree://").is_some_and(is_tree_path)
        })
        .with_format("strata-input-url", |s: &str| is_input_url(s))
        .build(schema)
        .map_err(|e| e.to_string())
}

/// An absolute path with no `..` component and no NUL.
pub fn is_tree_path(s: &str) -> bool {
    s.starts_with('/') && !s.contains('\0') && !s.split('/').any(|c| c == "..")
}

/// `input://NAME/relative/path` with a plain NAME and no `..` component.
pub fn is_input_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("input://") else {
        return false;
    };
    let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
    is_name(name) && !path.contains('\0') && !path.split('/').any(|c| c == "..")
}

/// A pipeline, input or stage name: `[A-Za-z0-9_][A-Za-z0-9_.+-]*`.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pattern is a search unless anchored: `^https?:` lets
    /// `http://127.0.0.1/x\nTrusted: yes` through.
    #[test]
    fn every_schema_pattern_is_anchored_at_both_ends() {
        fn walk(v: &Value, at: &str, bad: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        let here = format!("{at}/{k}");
                        match (k.as_str(), v) {
                            ("pattern", Value::String(p))
                                if !(p.starts_with('^')
                                    && p.ends_with('$')
                                    && !p.ends_with("\\$")) =>
                            {
                                bad.push(format!("{here}: {p}"))
                            }
                            _ => walk(v, &here, bad),
                        }
                    }
                }
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, &format!("{at}/{i}"), bad);
                    }
                }
                _ => {}
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let mut bad = Vec::new();
        let mut seen = 0;
        for dir in [root.clone(), root.join("stages")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                    walk(&v, &path.display().to_string(), &mut bad);
                    seen += 1;
                }
            }
        }
        assert!(seen > 10, "read {seen} schemas");
        assert!(bad.is_empty(), "unanchored: {bad:#?}");
    }

    #[test]
    fn tree_paths() {
        assert!(is_tree_path("/etc/hostname"));
        assert!(is_tree_path("/"));
        assert!(!is_tree_path("etc"));
        assert!(!is_tree_path("/a/../../etc"));
        assert!(!is_tree_path("/.."));
    }

    #[test]
    fn input_urls() {
        assert!(is_input_url("input://files/sha256:00"));
        assert!(is_input_url("input://tree/"));
        assert!(is_input_url("input://tree"));
        assert!(!is_input_url("input://../x"));
        assert!(!is_input_url("input://t/a/../../x"));
        assert!(!is_input_url("tree:///x"));
    }
}
