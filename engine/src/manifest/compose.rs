//! Composing manifests in code, and writing them back as JSON.
//!
//! ```text
//! Manifest::new()
//!   .add_pipeline(Pipeline::new("system").with_runner("debian")
//!       .add_stage(Stage::new("bootstrap", json!({…})))
//!       .add_stage(customize()))                      ← a Stage value, reusable
//!   .add_pipeline(Pipeline::new("tarball")
//!       .add_stage(Stage::new("tar", json!({…})).add_input("tree", Input::tree("system"))))
//!   .add_source(SourceItem::inline(bytes))
//!   .check(&catalog)?                                 ← the loader's checks and diagnostics
//! ```
//!
//! Composing never fails: every builder takes values as they are, and
//! [`Manifest::check`] serializes the manifest and loads it again, so a
//! composed manifest is refused with the same diagnostics (JSON pointers
//! into [`Manifest::to_value`]'s document) as the same JSON in a file. The
//! builders take and return values, so a function can return a configured
//! [`Stage`] or [`Pipeline`] and callers add clones of it wherever they like.

use super::{
    Input, InputType, Manifest, ManifestError, Origin, Pipeline, Reference, SourceItem, Stage,
    empty_object, load_value,
};
use crate::catalog::Catalog;
use crate::id::Id;
use crate::kind::Backend;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};
use strata_sources::{Checksum, Item, SourceType};

/// How [`Manifest::check`] names a composed manifest in its errors.
pub const COMPOSED_ORIGIN: &str = "(composed manifest)";

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest::new()
    }
}

impl Manifest {
    /// An empty manifest to compose: no pipelines, no sources.
    pub fn new() -> Manifest {
        Manifest {
            pipelines: Vec::new(),
            sources: Default::default(),
            raw_sources: empty_object(),
        }
    }

    /// Adds `pipeline` after the others.
    #[must_use]
    pub fn add_pipeline(mut self, pipeline: Pipeline) -> Manifest {
        self.pipelines.push(pipeline);
        self
    }

    /// Adds a source item under `sources.TYPE.items.CHECKSUM`, replacing one
    /// with the same checksum. Its checksum is what `files` inputs refer to.
    #[must_use]
    pub fn add_source(mut self, item: SourceItem) -> Manifest {
        if !self.raw_sources.is_object() {
            self.raw_sources = empty_object();
        }
        let checksum = item.checksum.to_string();
        self.raw_sources[item.ty.as_str()]["items"][&checksum] = item.to_value();
        self.sources.insert(checksum, item);
        self
    }

    /// The manifest as format version 2 JSON: what [`super::load_value`]
    /// (and so `strata build`) reads back into an equal manifest.
    ///
    /// Defaults are left out (no `build`, `runner`, `source-epoch`,
    /// `backend` or `inputs` when unset); options are written as they are;
    /// references are written as a list (see [`Reference`]); sources as
    /// they were written, with the items added by [`Manifest::add_source`].
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a manifest is plain JSON")
    }

    /// Checks the manifest as [`super::load`] checks a file: the manifest
    /// schema, every stage's options, names, references, sources and cycles.
    /// Returns the checked manifest, ready to plan and build.
    pub fn check(&self, catalog: &Catalog) -> Result<Manifest, ManifestError> {
        load_value(&self.to_value(), COMPOSED_ORIGIN, catalog)
    }

    /// Finds a pipeline by name, or a stage by its id (see
    /// [`crate::manifest::plan::Plan`]).
    ///
    /// A name wins over an id. Every id names a stage; a pipeline's id is
    /// its last stage's, so looking it up finds that stage together with
    /// its pipeline. When two stages have the same id (the same stage on
    /// the same base, in two pipelines), the first in manifest order is
    /// found. Ids are found only when every reference in the manifest
    /// resolves (as in a checked manifest): before that a stage has no id.
    pub fn get(&self, name_or_id: &str) -> Option<Found<'_>> {
        if let Some(index) = self.pipelines.iter().position(|p| p.name == name_or_id) {
            let pipeline = &self.pipelines[index];
            return Some(Found {
                index,
                pipeline,
                stage: None,
                id: self
                    .plan()
                    .and_then(|plan| plan.pipeline_id(index).cloned()),
            });
        }
        let wanted = Id::parse(name_or_id)?;
        let plan = self.plan()?;
        plan.stage_ids.iter().enumerate().find_map(|(index, ids)| {
            let si = ids.iter().position(|id| *id == wanted)?;
            let pipeline = &self.pipelines[index];
            Some(Found {
                index,
                pipeline,
                stage: Some((si, &pipeline.stages[si])),
                id: Some(wanted.clone()),
            })
        })
    }

    /// The ids, when they can be computed: [`crate::manifest::plan::Plan::new`]
    /// wants every reference resolved and no cycle, which a composed
    /// manifest may not have yet.
    fn plan(&self) -> Option<crate::manifest::plan::Plan> {
        let known = |name: &str| self.pipelines.iter().any(|p| p.name == name);
        let resolves = self.pipelines.iter().all(|p| {
            p.build_name().is_none_or(known)
                && p.image.as_deref().is_none_or(known)
                && p.stages.iter().all(|s| {
                    s.inputs.values().all(|input| {
                        input.origin != Origin::Pipeline
                            || input
                                .references
                                .iter()
                                .all(|r| r.pipeline().is_some_and(known))
                    })
                })
        });
        (resolves && super::graph::order(&self.pipelines).is_ok())
            .then(|| crate::manifest::plan::Plan::new(self))
    }
}

/// What [`Manifest::get`] found.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    /// The pipeline's index, in manifest order (as in [`crate::manifest::plan::Plan`]
    /// and build reports).
    pub index: usize,
    /// The pipeline found by name, or the one holding the stage found by id.
    pub pipeline: &'a Pipeline,
    /// The stage found by id, with its index in the pipeline; `None` when
    /// the pipeline was found by name.
    pub stage: Option<(usize, &'a Stage)>,
    /// The id of what was found: the stage's, or the pipeline's (`None`
    /// for a pipeline without stages, or when ids cannot be computed yet).
    pub id: Option<Id>,
}

/// `{"version": "2", "pipelines": […], "sources": {…}}`; `sources` is left
/// out when there are none.
impl Serialize for Manifest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let has_sources = match &self.raw_sources {
            Value::Object(map) => !map.is_empty(),
            Value::Null => false,
            _ => true, // not ours to hide: the loader will say what is wrong
        };
        let mut map = s.serialize_map(Some(2 + usize::from(has_sources)))?;
        map.serialize_entry("version", "2")?;
        map.serialize_entry("pipelines", &self.pipelines)?;
        if has_sources {
            map.serialize_entry("sources", &self.raw_sources)?;
        }
        map.end()
    }
}

impl Pipeline {
    /// An empty pipeline named `name`: no build pipeline (the host is the
    /// build root), the `linux` runner, no source-epoch, the default backend.
    pub fn new(name: impl Into<String>) -> Pipeline {
        Pipeline {
            name: name.into(),
            build: None,
            runner: None,
            source_epoch: None,
            backend: None,
            image: None,
            stages: Vec::new(),
        }
    }

    /// Uses the tree of pipeline `name` (`PIPELINE` or `name:PIPELINE`) as
    /// the build root.
    #[must_use]
    pub fn with_build(mut self, name: &str) -> Pipeline {
        self.build = Some(name_reference(name));
        self
    }

    /// Prepares the build root with runner `runner` (`linux`, `debian`, or
    /// one in a libdir's runners/).
    #[must_use]
    pub fn with_runner(mut self, runner: impl Into<String>) -> Pipeline {
        self.runner = Some(runner.into());
        self
    }

    /// Sets SOURCE_DATE_EPOCH for every stage (it feeds every stage's id).
    #[must_use]
    pub fn with_source_epoch(mut self, epoch: u64) -> Pipeline {
        self.source_epoch = Some(epoch);
        self
    }

    /// Runs the stages on `backend` instead of bwrap.
    #[must_use]
    pub fn with_backend(mut self, backend: Backend) -> Pipeline {
        self.backend = Some(backend);
        self
    }

    /// Adds `stage` after the others.
    #[must_use]
    pub fn add_stage(mut self, stage: Stage) -> Pipeline {
        self.stages.push(stage);
        self
    }
}

impl Stage {
    /// A stage of type `ty` (the program's name) with `options` (an object,
    /// checked against `schemas/stages/TYPE.json` by [`Manifest::check`]).
    pub fn new(ty: impl Into<String>, options: Value) -> Stage {
        Stage {
            ty: ty.into(),
            options,
            inputs: Default::default(),
            program: None,
        }
    }

    /// Sets the top-level option `key` to `value`, keeping the others: to
    /// vary one setting of a stage value made elsewhere.
    #[must_use]
    pub fn with_option(mut self, key: &str, value: impl Into<Value>) -> Stage {
        if !self.options.is_object() {
            self.options = empty_object();
        }
        self.options[key] = value.into();
        self
    }

    /// Adds (or replaces) the input `name`; the stage finds it under
    /// `/run/strata/inputs/NAME`.
    #[must_use]
    pub fn add_input(mut self, name: impl Into<String>, input: Input) -> Stage {
        self.inputs.insert(name.into(), input);
        self
    }
}

impl Input {
    /// An input of type `ty` from `origin`, without references yet.
    pub fn new(ty: InputType, origin: Origin) -> Input {
        Input {
            ty,
            origin,
            references: Vec::new(),
        }
    }

    /// The tree of pipeline `name` (`PIPELINE` or `name:PIPELINE`), read-only.
    pub fn tree(name: &str) -> Input {
        Input::new(InputType::Tree, Origin::Pipeline)
            .add_reference(Reference::new(name_reference(name)))
    }

    /// Source items, each a file named by its checksum.
    pub fn files<'c>(checksums: impl IntoIterator<Item = &'c Checksum>) -> Input {
        checksums
            .into_iter()
            .fold(Input::new(InputType::Files, Origin::Source), |input, c| {
                input.add_reference(Reference::new(c.as_str()))
            })
    }

    /// Adds `reference` after the others.
    #[must_use]
    pub fn add_reference(mut self, reference: Reference) -> Input {
        self.references.push(reference);
        self
    }
}

impl Reference {
    /// A reference to `id` (`name:PIPELINE` or a checksum) without options.
    pub fn new(id: impl Into<String>) -> Reference {
        Reference {
            id: id.into(),
            options: empty_object(),
        }
    }

    /// The same reference with per-reference `options`.
    #[must_use]
    pub fn with_options(mut self, options: Value) -> Reference {
        self.options = options;
        self
    }
}

impl SourceItem {
    /// `data` embedded in the manifest (`sources.inline`), named by its
    /// SHA-256.
    pub fn inline(data: impl Into<Vec<u8>>) -> SourceItem {
        let data = data.into();
        SourceItem {
            ty: SourceType::Inline,
            checksum: Checksum::of_bytes(&data),
            item: Item::Inline { data },
        }
    }

    /// A file downloaded from `url` (`sources.curl`); the build refuses it
    /// unless its SHA-256 is `checksum`. Credentials in `url` are used but
    /// never rendered back ([`SourceItem::to_value`]): name a secret
    /// ([`SourceItem::with_secret`]) instead.
    pub fn curl(checksum: Checksum, url: impl Into<String>) -> SourceItem {
        let (url, inline_user) = strata_sources::split_userinfo(&url.into());
        SourceItem {
            ty: SourceType::Curl,
            checksum,
            item: Item::Curl {
                url,
                inline_user,
                secret: None,
                size: None,
            },
        }
    }

    /// A curl item's server wants the `user:password` of the secret `name`
    /// (from `--secrets`, or `Build::secrets` in the library).
    #[must_use]
    pub fn with_secret(mut self, name: impl Into<String>) -> SourceItem {
        if let Item::Curl { secret, .. } = &mut self.item {
            *secret = Some(name.into());
        }
        self
    }

    /// The item as a manifest writes it under `sources.TYPE.items.CHECKSUM`.
    pub fn to_value(&self) -> Value {
        match &self.item {
            Item::Inline { data } => json!({
                "encoding": "base64",
                "data": base64::engine::general_purpose::STANDARD.encode(data),
            }),
            Item::Curl {
                url, secret, size, ..
            } => {
                let mut v = json!({ "url": url });
                if let Some(name) = secret {
                    v["secrets"] = json!({ "name": name });
                }
                if let Some(size) = size {
                    v["size"] = json!(size);
                }
                v
            }
        }
    }
}

/// `P` or `name:P` → `name:P`.
fn name_reference(name: &str) -> String {
    if name.starts_with("name:") {
        name.to_owned()
    } else {
        format!("name:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_left_out_and_names_get_their_prefix() {
        let m = Manifest::new().add_pipeline(
            Pipeline::new("a")
                .with_build("env")
                .add_stage(Stage::new("mkdir", json!({}))),
        );
        assert_eq!(
            m.to_value(),
            json!({"version": "2", "pipelines": [
                {"name": "a", "build": "name:env", "stages": [{"type": "mkdir", "options": {}}]}]})
        );
        assert_eq!(
            Pipeline::new("a").with_build("name:env").build.as_deref(),
            Some("name:env")
        );
        assert_eq!(Input::tree("name:p"), Input::tree("p"));
    }

    #[test]
    fn sources_are_written_as_a_manifest_writes_them() {
        let item = SourceItem::inline(&b"x"[..]);
        let checksum = item.checksum.to_string();
        let url = SourceItem::curl(item.checksum.clone(), "http://127.0.0.1/x");
        let m = Manifest::new().add_source(item);
        assert_eq!(
            m.to_value()["sources"],
            json!({"inline": {"items": {&checksum: {"encoding": "base64", "data": "eA=="}}}})
        );
        assert_eq!(
            m.sources[&checksum].item,
            Item::Inline {
                data: b"x".to_vec()
            }
        );
        assert_eq!(url.to_value(), json!({"url": "http://127.0.0.1/x"}));
    }
}
