//! The stage protocol, written once: what the engine hands a stage and
//! where. Data only (paths and serde types), so that the engine and the
//! stages agree on it without a stage ever linking the engine.
//!
//! A stage runs in a sandbox laid out as
//!
//! ```text
//! /run/strata/                 RUN_DIR: the engine's, bound read-write
//!   args.json                  ARGS_PATH: an `Arguments` document, read-only
//!   tree/                      TREE_PATH: the tree being built, read-write
//!                              (a chroot stage's tree is `/`: CHROOT_TREE)
//!   inputs/NAME/               input_path(NAME): each input, read-only
//!   meta.json                  META_PATH: what the stage reports, if anything
//!   runner                     RUNNER_PATH: started first; it execs the stage
//!   stage                      STAGE_PATH: the stage's executable
//!   host/ld.so, host/lib       HOST_LOADER_PATH, HOST_LIB_DIR: the host's dynamic
//!                              loader and libraries, for a stage built on a newer
//!                              glibc than the build root's
//! ```
//!
//! The arguments document (`schemas/stage-args.json` describes it):
//!
//! ```json
//! { "tree": "/run/strata/tree",
//!   "options": { ... },
//!   "inputs": { "NAME": { "path": "/run/strata/inputs/NAME", "data": { ... } } },
//!   "paths": { "tree": "/run/strata/tree", "inputs": "/run/strata/inputs", "meta": "/run/strata/meta.json" },
//!   "meta": { "id": "<hex>", "source-epoch": 1700000000, "pipeline": "NAME", "stage": "TYPE" } }
//! ```
//!
//! Readers ignore keys they do not know, so an engine may add some without
//! breaking stages built before it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything the engine puts in the sandbox for a stage lives here.
pub const RUN_DIR: &str = "/run/strata";
/// The arguments document.
pub const ARGS_PATH: &str = "/run/strata/args.json";
/// The tree being built, unless the stage runs with the tree as `/`.
pub const TREE_PATH: &str = "/run/strata/tree";
/// The tree of a stage that runs with it as its root (chroot semantics).
pub const CHROOT_TREE: &str = "/";
/// The folder holding one folder per input.
pub const INPUTS_DIR: &str = "/run/strata/inputs";
/// The folder holding each secret a stage's options name
/// (`"secrets": {"name": N}`) as the file N, readable only by the stage.
pub const SECRETS_DIR: &str = "/run/strata/secrets";
/// Where a stage may write its metadata, a JSON document the engine keeps
/// with its output.
pub const META_PATH: &str = "/run/strata/meta.json";
/// The runner: the first program in the sandbox, which execs the stage.
pub const RUNNER_PATH: &str = "/run/strata/runner";
/// The stage's executable.
pub const STAGE_PATH: &str = "/run/strata/stage";
/// The host's dynamic loader, when the stage runs with the host's libraries.
pub const HOST_LOADER_PATH: &str = "/run/strata/host/ld.so";
/// The host's library folder, given to [`HOST_LOADER_PATH`] as `--library-path`.
pub const HOST_LIB_DIR: &str = "/run/strata/host/lib";
/// Names another arguments file, so a stage can run outside a sandbox (tests).
pub const ARGS_ENV: &str = "STRATA_ARGS";

/// Where input `name` is mounted: `/run/strata/inputs/NAME`.
pub fn input_path(name: &str) -> String {
    format!("{INPUTS_DIR}/{name}")
}

/// The arguments document, `/run/strata/args.json`. Fields serialize in
/// the order the engine writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arguments {
    /// The tree being built, read-write: [`TREE_PATH`], or [`CHROOT_TREE`].
    pub tree: PathBuf,
    /// The stage's options, already checked against its schema
    /// (`schemas/stages/TYPE.json`); `{}` when the manifest gives none.
    #[serde(default)]
    pub options: Value,
    /// The stage's inputs by name, in name order.
    #[serde(default)]
    pub inputs: BTreeMap<String, Input>,
    pub paths: Paths,
    pub meta: Meta,
}

/// One input as the stage sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// The input's folder, read-only: [`input_path`]`(NAME)`.
    pub path: PathBuf,
    /// What the input's preparer says of it: [`InputData`] for the built-in
    /// `tree` and `files` inputs.
    #[serde(default)]
    pub data: Value,
}

/// The `data` of the built-in input types, for a stage that wants it typed.
///
/// ```text
/// tree:   {"id": "<the referenced pipeline's id>"}     ({} for a pipeline without stages)
/// files:  {"files": {"sha256:<hex>": {}, ...}}         each a file of that name in the folder
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputData {
    /// A `tree` input's pipeline id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A `files` input's items, by checksum; each value is `{}` today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, Value>>,
}

impl Input {
    /// The names (`sha256:<hex>`) of a `files` input's items; `None` for
    /// any other input.
    pub fn files(&self) -> Option<impl Iterator<Item = &String>> {
        self.data
            .get("files")
            .and_then(Value::as_object)
            .map(|items| items.keys())
    }
}

/// The fixed places of the sandbox, repeated in the document so a stage
/// need not know the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paths {
    /// The same as [`Arguments::tree`].
    pub tree: PathBuf,
    /// [`INPUTS_DIR`].
    pub inputs: PathBuf,
    /// [`META_PATH`].
    pub meta: PathBuf,
}

impl Paths {
    /// The paths of a sandbox whose tree is `tree` ([`TREE_PATH`] or
    /// [`CHROOT_TREE`]).
    pub fn for_tree(tree: &str) -> Self {
        Self {
            tree: tree.into(),
            inputs: INPUTS_DIR.into(),
            meta: META_PATH.into(),
        }
    }
}

/// Who the stage is: what the engine knows of this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The stage's id, hex.
    pub id: String,
    /// The pipeline's `source-epoch` (`null` when it has none): clamp
    /// timestamps to it.
    #[serde(rename = "source-epoch")]
    pub source_epoch: Option<u64>,
    /// The pipeline's name.
    pub pipeline: String,
    /// The stage's type.
    pub stage: String,
}

/// `url` without its `user:password@` (the part that may be printed), and
/// that userinfo: credentials a manifest wrote into a URL, which the engine
/// hands curl and a stage hands apt, each by a private channel.
pub fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => (
            format!("{scheme}://{}", &rest[at + 1..]),
            Some(rest[..at].to_owned()),
        ),
        None => (url.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What engine/src/exec.rs writes today, key for key.
    fn engine_document() -> Value {
        json!({
            "tree": "/run/strata/tree",
            "options": {"paths": [{"path": "/etc"}]},
            "inputs": {
                "a": {"path": "/run/strata/inputs/a", "data": {"id": "ab".repeat(32)}},
                "b": {"path": "/run/strata/inputs/b", "data": {"files": {format!("sha256:{}", "0".repeat(64)): {}}}},
            },
            "paths": {
                "tree": "/run/strata/tree",
                "inputs": "/run/strata/inputs",
                "meta": "/run/strata/meta.json",
            },
            "meta": {"id": "cd".repeat(32), "source-epoch": null, "pipeline": "p", "stage": "mkdir"},
        })
    }

    #[test]
    fn the_engine_document_round_trips_byte_for_byte() {
        let doc = engine_document();
        let args: Arguments = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(args.meta.source_epoch, None);
        assert_eq!(args.inputs["a"].path, PathBuf::from(input_path("a")));
        assert_eq!(args.paths, Paths::for_tree(TREE_PATH));
        assert_eq!(
            serde_json::to_vec_pretty(&args).unwrap(),
            serde_json::to_vec_pretty(&doc).unwrap()
        );
    }

    #[test]
    fn input_data_is_typed_for_the_built_in_inputs() {
        let args: Arguments = serde_json::from_value(engine_document()).unwrap();
        let tree: InputData = serde_json::from_value(args.inputs["a"].data.clone()).unwrap();
        assert_eq!(tree.id, Some("ab".repeat(32)));
        assert!(args.inputs["a"].files().is_none());
        let files: Vec<&String> = args.inputs["b"].files().unwrap().collect();
        assert_eq!(files, [&format!("sha256:{}", "0".repeat(64))]);
        assert_eq!(
            serde_json::to_value(InputData::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn unknown_keys_are_ignored_and_missing_ones_named() {
        let mut doc = engine_document();
        doc["later"] = json!(1);
        doc["meta"]["later"] = json!(2);
        assert!(serde_json::from_value::<Arguments>(doc.clone()).is_ok());
        doc["meta"].as_object_mut().unwrap().remove("id");
        let e = serde_json::from_value::<Arguments>(doc).unwrap_err();
        assert!(e.to_string().contains("missing field `id`"), "{e}");
    }

    #[test]
    fn the_schema_accepts_what_the_types_write_and_refuses_what_they_refuse() {
        let text = include_str!("../../schemas/stage-args.json");
        let schema: Value = serde_json::from_str(text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let doc = engine_document();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let mut chroot = doc.clone();
        chroot["tree"] = json!(CHROOT_TREE);
        chroot["paths"]["tree"] = json!(CHROOT_TREE);
        chroot["meta"]["source-epoch"] = json!(1_700_000_000);
        assert!(validator.is_valid(&chroot));
        for (pointer, bad) in [
            ("/meta/source-epoch", json!(-1)),
            ("/meta/id", json!(7)),
            ("/inputs/a/path", json!("/elsewhere/a")),
            ("/paths/meta", json!("/tmp/meta.json")),
            ("/tree", json!("/run/strata/other")),
            ("/inputs/b/data/files", json!({"sha256:00": {}})),
            ("/options", json!(null)),
        ] {
            let mut wrong = doc.clone();
            *wrong.pointer_mut(pointer).unwrap() = bad.clone();
            assert!(!validator.is_valid(&wrong), "{pointer} = {bad} passes");
        }
        let mut missing = doc;
        missing.as_object_mut().unwrap().remove("paths");
        assert!(!validator.is_valid(&missing));
    }
}
