//! A manifest with ids: what [`crate::id`] says of each stage, computed in
//! build order so every referenced pipeline's id is known first.

use super::graph;
use super::{Manifest, Origin};
use crate::id::{Id, InputKey, StageKey};
use serde_json::{Value, json};

/// Ids of a manifest's pipelines and stages.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Pipeline indices in build order.
    pub order: Vec<usize>,
    /// Per pipeline (manifest order): its stages' ids.
    pub stage_ids: Vec<Vec<Id>>,
}

impl Plan {
    /// Computes every id. The manifest must have passed [`crate::manifest::load`].
    pub fn new(m: &Manifest) -> Plan {
        let mut plan = Plan {
            order: Vec::new(),
            stage_ids: Vec::new(),
        };
        plan.extend(m);
        plan
    }

    /// Computes the ids of the pipelines added to `m` since this plan was
    /// made (the derived ones, see derive.rs); the others keep
    /// theirs, so no id is computed twice.
    pub fn extend(&mut self, m: &Manifest) {
        let known = self.stage_ids.len();
        self.order = graph::order(&m.pipelines).expect("load rejects cycles");
        let stage_ids = &mut self.stage_ids;
        stage_ids.resize(m.pipelines.len(), Vec::new());
        for &pi in &self.order {
            if pi < known {
                continue;
            }
            let p = &m.pipelines[pi];
            let pipeline_id =
                |name: &str| -> Option<Id> { stage_ids[m.index(name)].last().cloned() };
            let build = p.build_name().and_then(pipeline_id);
            let mut ids: Vec<Id> = Vec::with_capacity(p.stages.len());
            for stage in &p.stages {
                let inputs = stage
                    .inputs
                    .iter()
                    .map(|(name, input)| {
                        let references = input
                            .references
                            .iter()
                            .map(|r| {
                                let id = match (input.origin, r.pipeline()) {
                                    (Origin::Pipeline, Some(n)) => pipeline_id(n)
                                        .map_or_else(|| "empty".to_owned(), |id| id.to_string()),
                                    _ => r.id.clone(),
                                };
                                (id, r.options.clone())
                            })
                            .collect();
                        let key = InputKey {
                            ty: input.ty.as_str(),
                            origin: input.origin.as_str(),
                            references,
                        };
                        (name.as_str(), key)
                    })
                    .collect();
                let id = StageKey {
                    ty: &stage.ty,
                    options: &stage.options,
                    base: ids.last(),
                    build: build.as_ref(),
                    source_epoch: p.source_epoch,
                    inputs,
                    program: stage.program.as_ref(),
                }
                .id();
                ids.push(id);
            }
            stage_ids[pi] = ids;
        }
    }

    /// A pipeline's id: its last stage's.
    pub fn pipeline_id(&self, pi: usize) -> Option<&Id> {
        self.stage_ids[pi].last()
    }

    /// The manifest printed back with every id, and `name:` references
    /// resolved to ids (what `strata inspect` shows).
    pub fn describe(&self, m: &Manifest) -> Value {
        let resolve = |name: &str| self.pipeline_id(m.index(name)).map(Id::to_string);
        let pipelines: Vec<Value> = m
            .pipelines
            .iter()
            .enumerate()
            .map(|(pi, p)| {
                let stages: Vec<Value> = p
                    .stages
                    .iter()
                    .zip(&self.stage_ids[pi])
                    .map(|(s, id)| {
                        let inputs: serde_json::Map<String, Value> = s
                            .inputs
                            .iter()
                            .map(|(name, input)| {
                                let refs: Vec<Value> = input
                                    .references
                                    .iter()
                                    .map(|r| {
                                        let id = match r.pipeline() {
                                            Some(n) if input.origin == Origin::Pipeline => json!(resolve(n)),
                                            _ => json!(r.id),
                                        };
                                        json!({"id": id, "options": r.options})
                                    })
                                    .collect();
                                (
                                    name.clone(),
                                    json!({"type": input.ty.as_str(), "origin": input.origin.as_str(), "references": refs}),
                                )
                            })
                            .collect();
                        json!({"id": id.as_str(), "type": s.ty, "options": strata_sources::redact_urls(&s.options), "inputs": inputs})
                    })
                    .collect();
                let mut doc = json!({
                    "name": p.name,
                    "id": self.pipeline_id(pi).map(Id::as_str),
                    "build": p.build_name().map(resolve),
                    "runner": p.runner_name(),
                    "source-epoch": p.source_epoch,
                    "stages": stages,
                });
                if let Some(backend) = p.backend {
                    doc["backend"] = json!(backend.as_str());
                }
                doc
            })
            .collect();
        json!({"version": "2", "pipelines": pipelines, "sources": strata_sources::redact_urls(&m.raw_sources)})
    }
}
