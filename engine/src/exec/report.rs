//! What a build reports: its errors, and per stage what happened.

use crate::id::Id;
use crate::manifest::Manifest;
use crate::manifest::plan::Plan;
use crate::store::StoreError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// Why a build did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad flags or flags that do not fit the manifest (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A source item is wrong: bad checksum, not what its checksum says
    /// (exit 2: the manifest is wrong).
    #[error("{0}")]
    Source(String),
    /// A source item could not be downloaded: an unreachable host, an HTTP
    /// error, a full disk (exit 1: the same manifest may build later).
    #[error("{0}")]
    Fetch(String),
    /// The store failed (exit 1).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stage failed (exit 1).
    #[error("{0}")]
    Stage(Box<StageFailure>),
    /// Exporting failed (exit 1).
    #[error("export of `{name}` to {path} failed: {detail}")]
    Export {
        /// The pipeline.
        name: String,
        /// Where to.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Ctrl-C or SIGTERM (exit 130).
    #[error("interrupted; the running stage was stopped and nothing of it was kept")]
    Interrupted,
    /// Several pipelines failed (they ran at the same time, or `--keep-going`).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\nerror: "))]
    Several(Vec<BuildError>),
}

impl BuildError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Usage(_) | BuildError::Source(_) => 2,
            BuildError::Interrupted => 130,
            BuildError::Several(all) => all.first().map_or(1, BuildError::exit_code),
            _ => 1,
        }
    }

    /// The errors this one stands for: itself, or each of several.
    pub fn each(&self) -> Vec<&BuildError> {
        match self {
            BuildError::Several(all) => all.iter().flat_map(BuildError::each).collect(),
            one => vec![one],
        }
    }

    /// One error for the failures of several pipelines; an interrupt wins,
    /// since every running stage reports it.
    pub(super) fn combine(mut all: Vec<BuildError>) -> Option<BuildError> {
        if all.iter().any(|e| matches!(e, BuildError::Interrupted)) {
            return Some(BuildError::Interrupted);
        }
        match all.len() {
            0 | 1 => all.pop(),
            _ => Some(BuildError::Several(all)),
        }
    }

    /// The `error` member of `--json` results.
    pub fn to_json(&self) -> Value {
        match self {
            BuildError::Stage(f) => json!({
                "kind": "stage",
                "message": self.to_string(),
                "pipeline": f.pipeline,
                "stage": {"index": f.index, "type": f.ty, "id": f.id.as_str()},
                "status": f.outcome,
                "log_tail": f.log_tail,
                "kept": f.kept,
            }),
            BuildError::Several(all) => json!({
                "kind": "several",
                "message": self.to_string(),
                "errors": all.iter().map(BuildError::to_json).collect::<Vec<_>>(),
            }),
            other => json!({"kind": other.kind(), "message": other.to_string()}),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            BuildError::Usage(_) => "usage",
            BuildError::Source(_) | BuildError::Fetch(_) => "source",
            BuildError::Store(_) => "store",
            BuildError::Stage(_) => "stage",
            BuildError::Export { .. } => "export",
            BuildError::Interrupted => "interrupted",
            BuildError::Several(_) => "several",
        }
    }
}

/// A stage that failed, with what the user needs to see.
#[derive(Debug)]
pub struct StageFailure {
    /// Pipeline name.
    pub pipeline: String,
    /// Stage index in the pipeline.
    pub index: usize,
    /// Stage type.
    pub ty: String,
    /// Stage id.
    pub id: Id,
    /// "exit status 1", "killed by signal 9", …
    pub outcome: String,
    /// The last lines of the stage's log.
    pub log_tail: Vec<String>,
    /// Where `--keep-failed` kept its tree, inputs, arguments and log.
    pub kept: Option<PathBuf>,
}

impl std::fmt::Display for StageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stage {} ({}) of pipeline `{}` failed: {}",
            self.index, self.ty, self.pipeline, self.outcome
        )?;
        if !self.log_tail.is_empty() {
            write!(f, "\n  last lines of its log:")?;
            for line in &self.log_tail {
                write!(f, "\n    {line}")?;
            }
        }
        if let Some(kept) = &self.kept {
            write!(
                f,
                "\n  its tree, inputs, arguments and log are kept in {}\n    hint: `strata store gc` removes kept trees",
                kept.display()
            )?;
        }
        Ok(())
    }
}

/// How a stage's result came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageStatus {
    /// Taken from the store.
    Cached,
    /// Run now.
    Built,
}

/// One stage's result.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// Stage id.
    pub id: Id,
    /// Stage type.
    pub ty: String,
    /// Cached or built.
    pub status: StageStatus,
    /// Whether it is (now) in the store.
    pub stored: bool,
    /// Wall time of the run (zero when cached).
    pub duration: Duration,
    /// What the stage reported in meta.json.
    pub metadata: Value,
}

/// What a build did, as far as it got.
#[derive(Debug, Default)]
pub struct BuildReport {
    /// Per pipeline (manifest order): its stages' results so far.
    pub stages: Vec<Vec<StageReport>>,
    /// Exported pipelines and where.
    pub exports: Vec<(String, PathBuf)>,
    /// Pipelines not built: nothing asked for needs them, or what they
    /// need failed.
    pub skipped: BTreeSet<usize>,
    /// Total wall time.
    pub duration: Duration,
}

impl BuildReport {
    /// The `--json` result document.
    pub fn to_json(&self, m: &Manifest, plan: &Plan, error: Option<&BuildError>) -> Value {
        let pipelines: Vec<Value> = m
            .pipelines
            .iter()
            .enumerate()
            .map(|(pi, p)| {
                let done = self.stages.get(pi).map(Vec::as_slice).unwrap_or(&[]);
                let stages: Vec<Value> = done
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id.as_str(),
                            "type": s.ty,
                            "success": true,
                            "status": match s.status { StageStatus::Cached => "cached", StageStatus::Built => "built" },
                            "stored": s.stored,
                            "duration": s.duration.as_secs_f64(),
                            "metadata": s.metadata,
                        })
                    })
                    .collect();
                let failed = error.is_some_and(|e| {
                    e.each()
                        .iter()
                        .any(|e| matches!(e, BuildError::Stage(f) if f.pipeline == p.name))
                });
                let skipped = self.skipped.contains(&pi);
                json!({
                    "name": p.name,
                    "id": plan.pipeline_id(pi).map(Id::as_str),
                    "success": !failed && done.len() == p.stages.len(),
                    "skipped": skipped,
                    "stages": stages,
                })
            })
            .collect();
        let exports: serde_json::Map<String, Value> = self
            .exports
            .iter()
            .map(|(n, p)| (n.clone(), json!(p)))
            .collect();
        json!({
            "success": error.is_none(),
            "duration": self.duration.as_secs_f64(),
            "pipelines": pipelines,
            "exports": exports,
            "error": error.map(BuildError::to_json),
        })
    }
}
