//! The stage's arguments document, as the engine writes it:
//!
//! ```json
//! { "tree": "/run/strata/tree",
//!   "options": { ... },
//!   "inputs": { "NAME": { "path": "/run/strata/inputs/NAME", "data": { ... } } },
//!   "paths": { "tree": ..., "inputs": ..., "meta": "/run/strata/meta.json" },
//!   "meta": { "id": "...", "source-epoch": 1700000000, "pipeline": "...", "stage": "..." } }
//! ```
//!
//! Unknown keys are ignored, so an engine may add some without breaking
//! stages built before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;

/// Where the engine puts the arguments inside the sandbox.
pub const ARGS_PATH: &str = "/run/strata/args.json";

/// Names another arguments file, so a stage can run outside a sandbox (tests).
pub const ARGS_ENV: &str = "STRATA_ARGS";

#[derive(Debug, Deserialize)]
pub struct Args {
    /// The tree being built, read-write.
    pub tree: PathBuf,
    /// The stage's options, already checked against its schema.
    #[serde(default)]
    pub options: Value,
    #[serde(default)]
    pub inputs: BTreeMap<String, Input>,
    pub paths: Paths,
    pub meta: Meta,
}

#[derive(Debug, Deserialize)]
pub struct Input {
    /// The input's folder, read-only.
    pub path: PathBuf,
    /// `{"id": "<pipeline id>"}` for a tree input, `{"files": {"sha256:<hex>": {}}}` for files.
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Deserialize)]
pub struct Paths {
    pub tree: PathBuf,
    pub inputs: PathBuf,
    /// Where the stage may write its metadata JSON.
    pub meta: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct Meta {
    /// The stage's id, hex.
    pub id: String,
    /// The pipeline's `source-epoch`: clamp timestamps to it when set.
    #[serde(rename = "source-epoch")]
    pub source_epoch: Option<u64>,
    pub pipeline: String,
    pub stage: String,
}

impl Args {
    /// Reads the arguments from `$STRATA_ARGS`, or else `/run/strata/args.json`.
    pub fn load() -> Result<Self, Error> {
        let path =
            std::env::var_os(ARGS_ENV).map_or_else(|| PathBuf::from(ARGS_PATH), PathBuf::from);
        Self::read(&path)
    }

    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read(path).map_err(|source| Error::ReadArgs {
            path: path.to_owned(),
            source,
        })?;
        let mut de = serde_json::Deserializer::from_slice(&text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| Error::ParseArgs {
            path: path.to_owned(),
            pointer: e.path().to_string(),
            source: e.into_inner(),
        })
    }

    /// The options as the stage's own type; an error names the option's path
    /// (`options.files[2].mode`), in case the schema let something through.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_path_to_error::deserialize(&self.options).map_err(|e| {
            let at = e.path().to_string();
            Error::Options {
                pointer: if at == "." {
                    "options".into()
                } else {
                    format!("options.{at}")
                },
                source: e.into_inner(),
            }
        })
    }

    /// The input called `name`, if the stage was given one.
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.get(name)
    }
}
