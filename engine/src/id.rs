//! Content ids of stages and pipelines.
//!
//! A stage's id is `blake3::derive_key(ID_CONTEXT, canonical JSON of …)`
//! where the canonical JSON (RFC 8785) is that of one object:
//!
//! | key            | what feeds it                                                   |
//! |----------------|-----------------------------------------------------------------|
//! | `type`         | the stage type (`mkdir`, `tar`, …)                              |
//! | `options`      | the stage's options, exactly as written (after schema checks)   |
//! | `base`         | the id of the previous stage in the pipeline, `null` for the first |
//! | `build`        | the id of the build pipeline, `null` when the host is the root  |
//! | `source-epoch` | the pipeline's `source-epoch`, `null` when unset                |
//! | `inputs`       | input name → `{type, origin, references: [{id, options}]}`, where a pipeline reference's id is that pipeline's id and a source reference's id is the item's checksum |
//! | `program`      | `{stage, runner}`: `"strata-stages N"` (catalog's `STAGE_SET`) for built-in ones, `"blake3:HEX"` of the file for a `--libdir` stage or runner; so a store never serves a tree another program made, and upgrading strata keeps the cache unless the built-in stages changed |
//!
//! Not in the id, on purpose:
//!
//! | not fed        | why                                                              |
//! |----------------|------------------------------------------------------------------|
//! | `runner` name  | what it is (its program, above) is fed, not what it is called |
//! | `backend`      | where a stage runs (bwrap or an incus container over the same build tree) must not change what it makes; tests/it/backend_lint.rs checks that lintian's analysis is the same |
//!
//! A pipeline's id is its last stage's id (a pipeline without stages has
//! none). Key order in the manifest never matters (canonical JSON sorts
//! keys); every listed value does, and a change to any of them changes this
//! id and every id after it. Reference lists keep their order.
//!
//! Changing anything in this table, or the way it is serialized, changes
//! every id: bump [`ID_CONTEXT`] and the store's format version with it.

use serde_json::{Value, json};
use std::fmt;

/// The blake3 derive-key context: names the id format version.
pub const ID_CONTEXT: &str = "strata 2026-11 stage id v2";

/// A stage or pipeline content id: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts a string that looks like an id (64 lowercase hex digits).
    pub fn parse(s: &str) -> Option<Id> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Id(s.to_owned()))
    }

    /// The id of the canonical form of `doc`.
    pub fn of(doc: &Value) -> Id {
        let canonical = serde_json_canonicalizer::to_string(doc)
            .expect("serde_json::Value always canonicalizes");
        let digest = blake3::derive_key(ID_CONTEXT, canonical.as_bytes());
        Id(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", &self.0[..12])
    }
}

/// One resolved input, as it feeds an id.
#[derive(Debug, Clone)]
pub struct InputKey {
    /// `tree` or `files`.
    pub ty: &'static str,
    /// `pipeline` or `source`.
    pub origin: &'static str,
    /// (referenced id, reference options) in manifest order.
    pub references: Vec<(String, Value)>,
}

/// Everything that feeds a stage id; see the module table.
#[derive(Debug)]
pub struct StageKey<'a> {
    /// Stage type.
    pub ty: &'a str,
    /// Stage options.
    pub options: &'a Value,
    /// Previous stage's id.
    pub base: Option<&'a Id>,
    /// Build pipeline's id.
    pub build: Option<&'a Id>,
    /// The pipeline's source-epoch.
    pub source_epoch: Option<u64>,
    /// Input name → resolved input.
    pub inputs: Vec<(&'a str, InputKey)>,
    /// The stage's program and runner (`null` when not known).
    pub program: Option<&'a Value>,
}

impl StageKey<'_> {
    /// The document whose canonical form is hashed.
    pub fn document(&self) -> Value {
        let inputs: serde_json::Map<String, Value> = self
            .inputs
            .iter()
            .map(|(name, input)| {
                let refs: Vec<Value> = input
                    .references
                    .iter()
                    .map(|(id, options)| json!({"id": id, "options": options}))
                    .collect();
                (
                    (*name).to_owned(),
                    json!({"type": input.ty, "origin": input.origin, "references": refs}),
                )
            })
            .collect();
        json!({
            "type": self.ty,
            "options": self.options,
            "base": self.base.map(Id::as_str),
            "build": self.build.map(Id::as_str),
            "source-epoch": self.source_epoch,
            "inputs": inputs,
            "program": self.program,
        })
    }

    /// This stage's id.
    pub fn id(&self) -> Id {
        Id::of(&self.document())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(options: &'a Value, base: Option<&'a Id>) -> StageKey<'a> {
        StageKey {
            ty: "mkdir",
            options,
            base,
            build: None,
            source_epoch: Some(1),
            inputs: vec![],
            program: None,
        }
    }

    #[test]
    fn the_program_feeds_the_id() {
        let opts = json!({});
        let builtin = json!({"stage": "strata-stages 1", "runner": "strata-stages 1"});
        let other = json!({"stage": "blake3:00", "runner": "strata-stages 1"});
        let mut a = key(&opts, None);
        a.program = Some(&builtin);
        let mut b = key(&opts, None);
        b.program = Some(&other);
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"x":1,"y":2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"y":2,"x":1},"a":1}"#).unwrap();
        assert_eq!(key(&a, None).id(), key(&b, None).id());
    }

    #[test]
    fn every_field_feeds_the_id() {
        let opts = json!({"a": 1});
        let base = Id::of(&json!("base"));
        let plain = key(&opts, None).id();
        assert_ne!(plain, key(&json!({"a": 2}), None).id());
        assert_ne!(plain, key(&opts, Some(&base)).id());
        let mut k = key(&opts, None);
        k.build = Some(&base);
        assert_ne!(plain, k.id());
        let mut k = key(&opts, None);
        k.source_epoch = None;
        assert_ne!(plain, k.id());
        let mut k = key(&opts, None);
        k.ty = "write";
        assert_ne!(plain, k.id());
        let mut k = key(&opts, None);
        k.inputs.push((
            "tree",
            InputKey {
                ty: "tree",
                origin: "pipeline",
                references: vec![(base.to_string(), json!({}))],
            },
        ));
        assert_ne!(plain, k.id());
    }

    #[test]
    fn ids_look_like_ids() {
        let id = Id::of(&json!({}));
        assert!(Id::parse(id.as_str()).is_some());
        assert!(Id::parse("xyz").is_none());
    }
}
