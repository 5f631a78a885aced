//! Manifests: format version 2, osbuild's shape.
//!
//! ```text
//! {"version": "2",
//!  "pipelines": [{"name", "build": "name:P", "runner", "source-epoch", "backend",
//!                 "stages": [{"type", "options", "inputs": {NAME: {"type", "origin", "references"}}}]}],
//!  "sources": {TYPE: {"items": {CHECKSUM: ITEM}}}}
//! ```
//!
//! [`load`] turns text into a checked [`Manifest`]: JSON syntax (line and
//! column), the manifest schema, each stage's options schema, then the rules
//! no schema can say (names, references, sources, cycles). Every problem is a
//! [`Diagnostic`] with its JSON pointer and, where it lies inside one, the
//! pipeline and stage. [`load_value`] does the same for a JSON value.
//!
//! A manifest can also be composed in code ([`compose`]) and serialized back
//! to the same JSON ([`Manifest::to_value`]); [`Manifest::check`] puts a
//! composed manifest through the loader, so it gets the same checks and the
//! same diagnostics as a file.

pub mod compose;
mod diagnostic;
pub mod graph;
mod load;
pub mod plan;

pub use compose::Found;
pub use diagnostic::{Diagnostic, ManifestError};
pub use load::{load, load_value};
// The source types a composed manifest names; re-exported so that users of
// the library need not depend on strata-sources themselves.
pub use strata_sources::{Checksum, Item, SourceType};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A manifest: checked when it comes from [`load`], [`load_value`] or
/// [`Manifest::check`]; being composed when it comes from [`Manifest::new`].
///
/// It serializes ([`Serialize`], [`Manifest::to_value`]) to format version 2
/// JSON that [`load`] reads back into an equal manifest with the same ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Pipelines in manifest order.
    pub pipelines: Vec<Pipeline>,
    /// Source items by checksum.
    pub sources: BTreeMap<String, SourceItem>,
    /// The `sources` object as written, for printing back
    /// ([`Manifest::to_value`]); [`Manifest::add_source`] adds to it.
    pub raw_sources: Value,
}

impl Manifest {
    /// The index of the pipeline named `name`. Load checked every reference,
    /// so a name taken from the manifest is always found.
    pub fn index(&self, name: &str) -> usize {
        self.pipelines
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("pipeline `{name}` was checked at load"))
    }
}

/// One source item, already parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceItem {
    /// The source type that lists it.
    pub ty: strata_sources::SourceType,
    /// Its checksum.
    pub checksum: strata_sources::Checksum,
    /// How to get it.
    pub item: strata_sources::Item,
}

/// A named, ordered list of stages.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Unique name.
    pub name: String,
    /// `name:PIPELINE` whose tree is the build root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Runner name (runners/NAME); `linux` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// SOURCE_DATE_EPOCH for every stage.
    #[serde(
        default,
        rename = "source-epoch",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_epoch: Option<u64>,
    /// Where its stages run: bwrap (`unshare`, the default) or `incus-lxc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::kind::Backend>,
    /// The pipeline that makes the incus image of the build pipeline, for
    /// a pipeline whose stages run in incus (added when the build is planned: derive.rs).
    #[serde(skip)]
    pub image: Option<String>,
    /// The stages, in order.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// The build pipeline's name, without its `name:` prefix.
    pub fn build_name(&self) -> Option<&str> {
        self.build.as_deref().map(strip_name)
    }

    /// The runner, defaulted.
    pub fn runner_name(&self) -> &str {
        self.runner.as_deref().unwrap_or("linux")
    }
}

/// One stage of a pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The stage type: the executable's name.
    #[serde(rename = "type")]
    pub ty: String,
    /// Options, checked against `schemas/stages/TYPE.json`.
    #[serde(default = "empty_object")]
    pub options: Value,
    /// Inputs by name, in name order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Input>,
    /// Its program and runner as they feed its id (`{"stage", "runner"}`,
    /// see catalog.rs), named by the loader; not part of the manifest.
    #[serde(skip)]
    pub program: Option<Value>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A stage input.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// What the stage gets.
    #[serde(rename = "type")]
    pub ty: InputType,
    /// Where it comes from.
    pub origin: Origin,
    /// What it refers to; all three manifest forms normalize to one list.
    #[serde(deserialize_with = "references")]
    pub references: Vec<Reference>,
}

/// Input types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Another pipeline's tree, bound read-only.
    Tree,
    /// Source items, one file each, named by checksum.
    Files,
}

impl InputType {
    /// The manifest name.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::Tree => "tree",
            InputType::Files => "files",
        }
    }
}

/// Input origins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Items from `sources`.
    Source,
    /// Trees of other pipelines.
    Pipeline,
}

impl Origin {
    /// The manifest name.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Source => "source",
            Origin::Pipeline => "pipeline",
        }
    }
}

/// One reference: `name:PIPELINE` or a checksum, with per-reference options.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// What is referred to.
    pub id: String,
    /// Options for this reference (`{}` when none).
    pub options: Value,
}

/// Written back in the list form: a plain id when it has no options (as
/// most manifests write it), `{id, options}` otherwise. Both load back to
/// the same reference.
impl Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self
            .options
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
        {
            return s.serialize_str(&self.id);
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("options", &self.options)?;
        map.end()
    }
}

impl Reference {
    /// The pipeline name of a `name:` reference.
    pub fn pipeline(&self) -> Option<&str> {
        self.id.strip_prefix("name:")
    }
}

fn strip_name(s: &str) -> &str {
    s.strip_prefix("name:").unwrap_or(s)
}

/// Accepts a list of ids, a map id → options, or a list of `{id, options}`.
fn references<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Reference>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<Entry>),
        Map(serde_json::Map<String, Value>),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Id(String),
        Full {
            id: String,
            #[serde(default = "empty_object")]
            options: Value,
        },
    }
    Ok(match Form::deserialize(d)? {
        Form::List(entries) => entries
            .into_iter()
            .map(|e| match e {
                Entry::Id(id) => Reference {
                    id,
                    options: empty_object(),
                },
                Entry::Full { id, options } => Reference { id, options },
            })
            .collect(),
        Form::Map(map) => map
            .into_iter()
            .map(|(id, options)| Reference { id, options })
            .collect(),
    })
}
