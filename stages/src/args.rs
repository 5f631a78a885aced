//! The stage's arguments document: [`strata_protocol::Arguments`], read from
//! `/run/strata/args.json` (or `$STRATA_ARGS`), with errors that name the
//! file and the key.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use strata_protocol::Arguments;

use crate::Error;

pub use strata_protocol::{ARGS_ENV, ARGS_PATH, Input, Meta, Paths};

/// The arguments a stage was started with. It derefs to the protocol's
/// [`Arguments`] (`args.tree`, `args.meta.source_epoch`, ...); the protocol
/// crate stays data only, so reading and typed options live here.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Args(Arguments);

impl Deref for Args {
    type Target = Arguments;

    fn deref(&self) -> &Arguments {
        &self.0
    }
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
        serde_path_to_error::deserialize(&mut de)
            .map(Self)
            .map_err(|e| Error::ParseArgs {
                path: path.to_owned(),
                pointer: e.path().to_string(),
                source: e.into_inner(),
            })
    }

    /// The options as the stage's own type; an error names the option's path
    /// (`options.files[2].mode`), in case the schema let something through.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_path_to_error::deserialize(&self.0.options).map_err(|e| {
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
        self.0.inputs.get(name)
    }
}
