//! The scheduler: walk the pipelines in build order, short-circuit what the
//! store has, run the rest in sandboxes, commit checkpoints, export.
//!
//! For each pipeline: find its newest stored stage and start from its tree
//! (an overlay over its layers, see [`crate::store`]) or an empty one; run
//! each remaining stage; commit the kept stages as layers. Every stage is
//! kept unless `--no-checkpoint` (then only what `--checkpoint` names): a
//! kept stage costs only what it changed. A pipeline's final tree stays
//! available (mounted from the store on first use, or its workspace until
//! the build ends) for pipelines that use it as a build root or a `tree`
//! input, and for `--export`.
//!
//! Pipelines that do not need each other run at the same time, up to
//! `--jobs` ([`schedule`]); so the builder's shared state (the report, the
//! final trees, the work dirs) sits behind locks, and everything it tells
//! goes through the [`Monitor`] as [`Event`]s.

pub mod schedule;

use crate::backend::{self, Backend, BackendError};
use crate::catalog::{Catalog, Runner, StageRoot};
use crate::graph;
use crate::id::Id;
use crate::manifest::{InputType, Manifest, Origin};
use crate::monitor::{self, Event, Monitor, PipelineInfo, PipelineResult, StageInfo, StageRef};
use crate::plan::Plan;
use crate::sandbox::process::{self, Outcome};
use crate::sandbox::{self, BwrapSpec, HostLayout, Mount, Root};
use crate::store::copy::{copy_tree, copy_tree_mapped};
use crate::store::layers::{self, View, Workspace};
use crate::store::{Layer, NewObject, Store, StoreError, gc};
use fs_err as fs;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What `strata build` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The store root.
    pub store: PathBuf,
    /// `--checkpoint` patterns.
    pub checkpoints: Vec<String>,
    /// `--no-checkpoint`: keep only what `--checkpoint` names.
    pub no_checkpoint: bool,
    /// `--cache-max-size`: `Some(None)` is `unlimited`.
    pub cache_max_size: Option<Option<u64>>,
    /// `--lock-timeout`.
    pub lock_timeout: Duration,
    /// `--export` pipeline names.
    pub exports: Vec<String>,
    /// `--output-directory`.
    pub output_directory: Option<PathBuf>,
    /// End a stage that runs longer than this.
    pub stage_timeout: Option<Duration>,
    /// How many pipelines may run at once (at least 1).
    pub jobs: usize,
    /// After a failure, go on with the pipelines that do not need the failed one.
    pub keep_going: bool,
    /// Keep a failed stage's tree, inputs, arguments and log under STORE/failed/.
    pub keep_failed: bool,
    /// `--break` patterns: open a shell in these stages' sandboxes before they run.
    pub breaks: Vec<String>,
}

/// Why a build did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad flags or flags that do not fit the manifest (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A source item could not be fetched or verified (exit 2).
    #[error("{0}")]
    Source(String),
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
    fn combine(mut all: Vec<BuildError>) -> Option<BuildError> {
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
            BuildError::Source(_) => "source",
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
                json!({
                    "name": p.name,
                    "id": plan.pipeline_id(pi).map(Id::as_str),
                    "success": !failed && done.len() == p.stages.len(),
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

/// Which stages `--checkpoint` patterns select, as (pipeline, stage) indices.
///
/// A pattern is a pipeline name (its last stage), a stage id, a stage type,
/// or a glob over those (`*` is everything). One that matches nothing is an error.
pub fn resolve_checkpoints(
    m: &Manifest,
    plan: &Plan,
    patterns: &[String],
) -> Result<BTreeSet<(usize, usize)>, BuildError> {
    resolve_stages(m, plan, patterns, "--checkpoint")
}

/// Which stages patterns select, as [`resolve_checkpoints`] says; `flag`
/// names the option in errors (`--break` takes the same patterns).
pub fn resolve_stages(
    m: &Manifest,
    plan: &Plan,
    patterns: &[String],
    flag: &str,
) -> Result<BTreeSet<(usize, usize)>, BuildError> {
    let mut out = BTreeSet::new();
    for pattern in patterns {
        let glob = glob::Pattern::new(pattern).ok();
        let matches = |s: &str| s == pattern || glob.as_ref().is_some_and(|g| g.matches(s));
        let before = out.len();
        let mut matched = false;
        for (pi, p) in m.pipelines.iter().enumerate() {
            if matches(&p.name) && !p.stages.is_empty() {
                out.insert((pi, p.stages.len() - 1));
                matched = true;
            }
            for (si, s) in p.stages.iter().enumerate() {
                if matches(&s.ty) || matches(plan.stage_ids[pi][si].as_str()) {
                    out.insert((pi, si));
                    matched = true;
                }
            }
        }
        if !matched && out.len() == before {
            let names: Vec<&str> = m.pipelines.iter().map(|p| p.name.as_str()).collect();
            return Err(BuildError::Usage(format!(
                "{flag} `{pattern}` matches no pipeline, stage type or stage id\n    hint: pipelines: {}",
                names.join(", ")
            )));
        }
    }
    Ok(out)
}

/// Builds the manifest. The report covers what was done even on failure.
pub fn build(
    m: &Manifest,
    plan: &Plan,
    catalog: &Catalog,
    opts: &BuildOptions,
    monitor: &Monitor,
) -> (BuildReport, Result<(), BuildError>) {
    let started = Instant::now();
    let jobs = if opts.breaks.is_empty() {
        opts.jobs.max(1)
    } else {
        // A break shell takes the terminal: nothing else may run meanwhile.
        1
    };
    monitor.emit(Event::BuildStart {
        pipelines: announce(m, plan),
        jobs,
    });
    let mut builder = Builder {
        m,
        plan,
        catalog,
        opts,
        monitor,
        jobs,
        host: HostLayout::detect(),
        report: Mutex::new(BuildReport {
            stages: vec![Vec::new(); m.pipelines.len()],
            ..BuildReport::default()
        }),
        trees: Mutex::new(HashMap::new()),
        mounted: Mutex::new(HashMap::new()),
        workspaces: Mutex::new(Vec::new()),
        store: None,
        checkpoints: BTreeSet::new(),
        breaks: BTreeSet::new(),
        tty: None,
        committed: AtomicBool::new(false),
    };
    let result = builder.run();
    let mut report = builder
        .report
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.duration = started.elapsed();
    let count = |status| {
        report
            .stages
            .iter()
            .flatten()
            .filter(|s| s.status == status)
            .count()
    };
    let failed = result.as_ref().err().map_or(0, |e| {
        e.each()
            .iter()
            .filter(|e| matches!(e, BuildError::Stage(_)))
            .count()
    });
    monitor.emit(Event::BuildFinish {
        success: result.is_ok(),
        exit_code: result.as_ref().err().map_or(0, BuildError::exit_code),
        duration: report.duration.as_secs_f64(),
        built: count(StageStatus::Built),
        reused: count(StageStatus::Cached),
        failed,
    });
    (report, result)
}

/// The pipelines as the `build-start` event lists them.
fn announce(m: &Manifest, plan: &Plan) -> Vec<PipelineInfo> {
    m.pipelines
        .iter()
        .enumerate()
        .map(|(pi, p)| PipelineInfo {
            name: p.name.clone(),
            id: plan.pipeline_id(pi).map(Id::to_string),
            needs: graph::dependencies(p)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            stages: p
                .stages
                .iter()
                .zip(&plan.stage_ids[pi])
                .map(|(s, id)| StageInfo {
                    ty: s.ty.clone(),
                    id: id.to_string(),
                })
                .collect(),
        })
        .collect()
}

struct Builder<'a> {
    m: &'a Manifest,
    plan: &'a Plan,
    catalog: &'a Catalog,
    opts: &'a BuildOptions,
    monitor: &'a Monitor,
    jobs: usize,
    host: HostLayout,
    report: Mutex<BuildReport>,
    /// Final tree of each pipeline built so far.
    trees: Mutex<HashMap<usize, FinalTree>>,
    /// Stored final trees mounted so far, by pipeline; unmounted when the build ends.
    mounted: Mutex<HashMap<usize, View>>,
    /// Workspaces holding uncommitted final trees, removed when the build ends.
    workspaces: Mutex<Vec<Workspace>>,
    store: Option<Store>,
    checkpoints: BTreeSet<(usize, usize)>,
    /// Stages to open a shell in before they run (`--break`).
    breaks: BTreeSet<(usize, usize)>,
    /// The terminal for `--break` shells.
    tty: Option<std::fs::File>,
    /// Whether anything was committed (then the store is synced at the end).
    committed: AtomicBool,
}

/// Where a pipeline's final tree is.
#[derive(Debug, Clone)]
enum FinalTree {
    /// In the store: mounted when first needed.
    Stored(Id),
    /// A workspace of this build.
    Dir(PathBuf),
}

impl Builder<'_> {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    /// The final tree of pipeline `pi`, which the scheduler built first,
    /// mounted from the store the first time it is needed.
    fn tree_of(&self, pi: usize) -> Result<PathBuf, BuildError> {
        let tree = self.trees.lock().expect("trees lock")[&pi].clone();
        match tree {
            FinalTree::Dir(path) => Ok(path),
            FinalTree::Stored(id) => {
                let mut mounted = self.mounted.lock().expect("mounted lock");
                if let Some(view) = mounted.get(&pi) {
                    return Ok(view.path().to_path_buf());
                }
                let view = self.store().view(&id)?;
                let path = view.path().to_path_buf();
                mounted.insert(pi, view);
                Ok(path)
            }
        }
    }

    fn stage_ref(&self, pi: usize, si: usize) -> StageRef {
        let p = &self.m.pipelines[pi];
        StageRef::new(&p.name, si, &p.stages[si].ty, &self.plan.stage_ids[pi][si])
    }

    fn run(&mut self) -> Result<(), BuildError> {
        let monitor = self.monitor;
        let told = |e: BuildError| {
            monitor.error(&e.to_json());
            e
        };
        self.prepare().map_err(told)?;
        let built = self.build_pipelines();
        if self.committed.load(Ordering::SeqCst) {
            self.store().sync().map_err(|e| told(e.into()))?;
        }
        built?;
        self.export().map_err(told)?;
        self.collect().map_err(told)
    }

    /// Brings the store under its size limit once the build is done, unless
    /// another build is running (the last one to finish collects).
    fn collect(&mut self) -> Result<(), BuildError> {
        let Some(max) = self.store().max_size() else {
            return Ok(());
        };
        if gc::total(&gc::entries(self.store())) <= max {
            return Ok(());
        }
        // Nothing of ours may stay mounted over layers collection removes.
        self.mounted.lock().expect("mounted lock").clear();
        self.workspaces.lock().expect("workspaces lock").clear();
        let store = self.store.as_mut().expect("store is open");
        if !store.try_exclusive()? {
            return Ok(());
        }
        let removed = gc::collect(store, max)?;
        let freed: u64 = removed.iter().map(|e| e.size).sum();
        self.monitor.emit(Event::Notice {
            pipeline: None,
            message: format!(
                "store: removed {} least recently used entries ({}) to stay within {}",
                removed.len(),
                gc::human(freed),
                gc::human(max)
            ),
        });
        Ok(())
    }

    /// Everything before the first pipeline: flags, the store, sources.
    fn prepare(&mut self) -> Result<(), BuildError> {
        self.checkpoints = resolve_checkpoints(self.m, self.plan, &self.opts.checkpoints)?;
        if !self.opts.no_checkpoint {
            for (pi, p) in self.m.pipelines.iter().enumerate() {
                self.checkpoints
                    .extend((0..p.stages.len()).map(|si| (pi, si)));
            }
        }
        self.breaks = resolve_stages(self.m, self.plan, &self.opts.breaks, "--break")?;
        if !self.breaks.is_empty() {
            let tty = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/tty")
                .map_err(|e| {
                    BuildError::Usage(format!(
                        "--break needs a terminal for its shell: /dev/tty: {e}"
                    ))
                })?;
            self.tty = Some(tty);
        }
        self.check_exports()?;
        self.store = Some(Store::open(&self.opts.store, self.opts.lock_timeout)?);
        if let Some(max) = self.opts.cache_max_size {
            self.store().set_max_size(max)?;
        }
        self.fetch_sources()
    }

    /// Every pipeline, each once those it needs are done, `jobs` at a time.
    fn build_pipelines(&self) -> Result<(), BuildError> {
        let needs: Vec<BTreeSet<usize>> = self
            .m
            .pipelines
            .iter()
            .map(|p| {
                graph::dependencies(p)
                    .into_iter()
                    .map(|name| self.m.index(name))
                    .collect()
            })
            .collect();
        let work = |pi: usize| self.pipeline(pi);
        let (states, failures) = schedule::run(&needs, self.jobs, self.opts.keep_going, &work);
        for (pi, state) in states.iter().enumerate() {
            if *state == schedule::State::Waiting {
                self.monitor.emit(Event::PipelineFinish {
                    pipeline: self.m.pipelines[pi].name.clone(),
                    id: self.plan.pipeline_id(pi).map(Id::to_string),
                    result: PipelineResult::Skipped,
                    duration: 0.0,
                });
            }
        }
        match BuildError::combine(failures.into_iter().map(|(_, e)| e).collect()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One pipeline, announced: start, its error if any, finish.
    fn pipeline(&self, pi: usize) -> Result<(), BuildError> {
        let name = &self.m.pipelines[pi].name;
        let id = self.plan.pipeline_id(pi).map(Id::to_string);
        self.monitor.emit(Event::PipelineStart {
            pipeline: name.clone(),
            id: id.clone(),
        });
        let started = Instant::now();
        let result = self.build_pipeline(pi);
        if let Err(e) = &result {
            self.monitor.error(&e.to_json());
        }
        self.monitor.emit(Event::PipelineFinish {
            pipeline: name.clone(),
            id,
            result: if result.is_ok() {
                PipelineResult::Success
            } else {
                PipelineResult::Failed
            },
            duration: started.elapsed().as_secs_f64(),
        });
        result
    }

    fn check_exports(&self) -> Result<(), BuildError> {
        if self.opts.exports.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.m.pipelines.iter().map(|p| p.name.as_str()).collect();
        for name in &self.opts.exports {
            if !names.contains(&name.as_str()) {
                return Err(BuildError::Usage(format!(
                    "--export `{name}`: no such pipeline\n    hint: pipelines: {}",
                    names.join(", ")
                )));
            }
        }
        let Some(out) = &self.opts.output_directory else {
            return Err(BuildError::Usage(
                "--export needs --output-directory DIR".into(),
            ));
        };
        for name in &self.opts.exports {
            let dest = out.join(name);
            if dest.exists() {
                return Err(BuildError::Usage(format!(
                    "--export `{name}`: {} exists already\n    hint: remove it or choose another --output-directory",
                    dest.display()
                )));
            }
        }
        Ok(())
    }

    /// Fetches every source item, `jobs` at a time: downloads wait on the
    /// network, not the cores, but a bound keeps a mirror from seeing a
    /// flood. After a failure no new item starts.
    fn fetch_sources(&self) -> Result<(), BuildError> {
        let sources = self.store().sources();
        let items: Vec<_> = self.m.sources.values().collect();
        let next = Mutex::new(items.iter());
        let failures = Mutex::new(Vec::new());
        let workers = self.jobs.min(items.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        if !failures.lock().expect("failures lock").is_empty() {
                            return;
                        }
                        let Some(item) = next.lock().expect("items lock").next() else {
                            return;
                        };
                        let announce = |done: bool, cached: bool, bytes: Option<u64>| {
                            self.monitor.emit(Event::SourceFetch {
                                item: item.checksum.as_str().to_owned(),
                                ty: item.ty.as_str().to_owned(),
                                bytes,
                                done,
                                cached,
                            })
                        };
                        let cached = sources.contains(item.ty, &item.checksum);
                        if !cached {
                            announce(false, false, None);
                        }
                        match sources.fetch(item.ty, &item.checksum, &item.item) {
                            Ok(fetched) => {
                                if fetched.cached {
                                    self.store().touch_source(&fetched.path);
                                }
                                announce(true, fetched.cached, Some(fetched.bytes))
                            }
                            Err(e) => failures
                                .lock()
                                .expect("failures lock")
                                .push(BuildError::Source(e.to_string())),
                        }
                    }
                });
            }
        });
        let failures = failures.into_inner().expect("failures lock");
        match BuildError::combine(failures) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn build_pipeline(&self, pi: usize) -> Result<(), BuildError> {
        let p = &self.m.pipelines[pi];
        let ids = &self.plan.stage_ids[pi];
        // A stage to --break in must run, so the store may only cover what comes before it.
        let runs_from = (0..ids.len())
            .find(|&si| self.breaks.contains(&(pi, si)))
            .unwrap_or(ids.len());
        let stored = ids[..runs_from].iter().rposition(|id| self.store().has(id));
        // Everything up to the newest stored stage is covered by it.
        for si in 0..stored.map_or(0, |k| k + 1) {
            self.report_cached(pi, si);
        }
        let mut base = stored.map(|k| ids[k].clone());
        if let Some(id) = &base {
            self.store().touch(id);
        }
        let mut ws: Option<Workspace> = None;
        let logs = self.store().work_dir("logs")?;
        for (si, id) in ids.iter().enumerate().skip(stored.map_or(0, |k| k + 1)) {
            let keep = self.checkpoints.contains(&(pi, si));
            // The object's build lock: a build that needs it too waits, then
            // finds it stored. A stage to break in runs whatever the store has.
            let _building = if keep {
                let lock = self.store().lock_object(id, || {
                    self.monitor.emit(Event::Notice {
                        pipeline: Some(p.name.clone()),
                        message: format!(
                            "{}: waiting: another build is making it",
                            self.stage_ref(pi, si).label()
                        ),
                    });
                })?;
                if self.store().has(id) && !self.breaks.contains(&(pi, si)) {
                    ws = None;
                    base = Some(id.clone());
                    self.store().touch(id);
                    self.report_cached(pi, si);
                    continue;
                }
                Some(lock)
            } else {
                None
            };
            let tree = match &ws {
                Some(w) => w.merged(),
                None if self.runs_in_incus(pi) => ws
                    .insert(self.store().flat_workspace(base.as_ref())?)
                    .merged(),
                None => ws.insert(self.store().workspace(base.as_ref())?).merged(),
            };
            let log = logs.path().join(format!("log-{si}"));
            self.monitor.emit(Event::StageStart {
                stage: self.stage_ref(pi, si),
            });
            let started = Instant::now();
            let (meta, duration) = match self.run_stage(pi, si, &tree, &log) {
                Ok(done) => done,
                Err(e) => {
                    let result = match &e {
                        BuildError::Stage(f) => f.outcome.clone(),
                        other => other.to_string(),
                    };
                    self.monitor.emit(Event::StageFinish {
                        stage: self.stage_ref(pi, si),
                        status: monitor::StageStatus::Failed,
                        stored: false,
                        duration: started.elapsed().as_secs_f64(),
                        result,
                    });
                    return Err(e);
                }
            };
            let stored =
                keep && self.commit_stage(pi, si, &mut ws, base.as_ref(), &log, &meta, duration)?;
            if stored {
                base = Some(id.clone());
            }
            self.monitor.emit(Event::StageFinish {
                stage: self.stage_ref(pi, si),
                status: monitor::StageStatus::Built,
                stored,
                duration: duration.as_secs_f64(),
                result: "success".into(),
            });
            self.report.lock().expect("report lock").stages[pi].push(StageReport {
                id: id.clone(),
                ty: p.stages[si].ty.clone(),
                status: StageStatus::Built,
                stored,
                duration,
                metadata: meta,
            });
        }
        let tree = match (ws, base) {
            (Some(w), _) => {
                let path = w.merged();
                self.workspaces.lock().expect("workspaces lock").push(w);
                FinalTree::Dir(path)
            }
            (None, Some(id)) => FinalTree::Stored(id),
            (None, None) => unreachable!("a pipeline has stages"),
        };
        self.trees.lock().expect("trees lock").insert(pi, tree);
        Ok(())
    }

    /// Whether pipeline `pi`'s stages run in incus instances: their tree and
    /// inputs are then plain directories (incusd cannot see our mounts).
    fn runs_in_incus(&self, pi: usize) -> bool {
        self.m.pipelines[pi].backend == Some(Backend::IncusLxc)
    }

    fn report_cached(&self, pi: usize, si: usize) {
        let p = &self.m.pipelines[pi];
        let id = &self.plan.stage_ids[pi][si];
        let report = StageReport {
            id: id.clone(),
            ty: p.stages[si].ty.clone(),
            status: StageStatus::Cached,
            stored: self.store().has(id),
            duration: Duration::ZERO,
            metadata: self.store().meta(id),
        };
        self.monitor.emit(Event::StageFinish {
            stage: self.stage_ref(pi, si),
            status: monitor::StageStatus::Cached,
            stored: report.stored,
            duration: 0.0,
            result: "success".into(),
        });
        self.report.lock().expect("report lock").stages[pi].push(report);
    }

    /// Commits what stage `si` left in the workspace as its object: the
    /// upper layer over `parent`, or the whole merged tree when the stack
    /// would get too deep. False when the object is bigger than the store's
    /// size limit (then the workspace stays, and the user is told).
    #[allow(clippy::too_many_arguments)]
    fn commit_stage(
        &self,
        pi: usize,
        si: usize,
        ws: &mut Option<Workspace>,
        parent: Option<&Id>,
        log: &Path,
        meta: &Value,
        duration: Duration,
    ) -> Result<bool, BuildError> {
        let p = &self.m.pipelines[pi];
        let id = &self.plan.stage_ids[pi][si];
        let w = ws.as_mut().expect("the stage ran in a workspace");
        // A flat workspace holds the whole tree: it stands on nothing.
        let parent = parent.filter(|_| !w.is_flat());
        if w.is_flat() {
            // incus wrote in-tree owners; the store keeps the namespace's.
            crate::store::copy::map_owners(&w.upper(), &sandbox::userns::tree_to_host)
                .map_err(StoreError::from)?;
        }
        let mut stack = match parent {
            Some(parent) => self.store().stack(parent)?,
            None => Vec::new(),
        };
        stack.insert(0, w.upper());
        let flatten = !layers::fits(&stack);
        let size = layers::disk_usage(&if flatten { w.merged() } else { w.upper() });
        if let Some(max) = self.store().max_size()
            && size > max
        {
            self.monitor.emit(Event::Notice {
                pipeline: Some(p.name.clone()),
                message: format!(
                    "{}: not stored: it takes {}, more than the store's limit of {} (--cache-max-size)",
                    self.stage_ref(pi, si).label(),
                    gc::human(size),
                    gc::human(max)
                ),
            });
            return Ok(false);
        }
        let info = json!({
            "pipeline": p.name,
            "stage": si,
            "type": p.stages[si].ty,
            "created": unix_now(),
            "duration": duration.as_secs_f64(),
        });
        w.finish(&stack[1..])?;
        let upper = w.upper();
        // Flattening reads the mended upper layer over the stack, mounted
        // read-only for the copy.
        let view = match flatten {
            true => Some(View::open(&stack, self.store().work_dir("view")?)?),
            false => None,
        };
        let layer = match &view {
            Some(view) => Layer::Flatten {
                merged: view.path(),
                stack: &stack,
            },
            None => Layer::Move(&upper),
        };
        self.store().commit(NewObject {
            id,
            layer,
            parent,
            log,
            meta,
            info: &info,
        })?;
        *ws = None;
        self.committed.store(true, Ordering::SeqCst);
        Ok(true)
    }

    /// Runs one stage over `tree`, keeping its output in `log`; returns its
    /// metadata and wall time.
    fn run_stage(
        &self,
        pi: usize,
        si: usize,
        tree: &Path,
        log: &Path,
    ) -> Result<(Value, Duration), BuildError> {
        let p = &self.m.pipelines[pi];
        let stage = &p.stages[si];
        let id = &self.plan.stage_ids[pi][si];
        let fail = |outcome: String, log_tail: Vec<String>| {
            BuildError::Stage(Box::new(StageFailure {
                pipeline: p.name.clone(),
                index: si,
                ty: stage.ty.clone(),
                id: id.clone(),
                outcome,
                log_tail,
                kept: None,
            }))
        };
        let def = self
            .catalog
            .stage(&stage.ty)
            .map_err(|e| BuildError::Usage(e.to_string()))?;
        // The TempDir removes the run dir (args, inputs, runner, overlay
        // layers) on every path.
        let run = self.store().work_dir("stage")?;
        let bound = run.path().join("run");
        fs::create_dir(&bound).map_err(StoreError::from)?;
        if !self.runs_in_incus(pi) {
            // The stage (root of its namespace) writes meta.json here.
            sandbox::userns::chown_for_tree(&bound, 0, 0).map_err(StoreError::from)?;
        }
        // bwrap would make these mount points' folders 0700 and the host's:
        // closed to the stage's namespace.
        for dir in ["host", "inputs"] {
            fs::create_dir(bound.join(dir)).map_err(StoreError::from)?;
            fs::set_permissions(bound.join(dir), std::fs::Permissions::from_mode(0o755))
                .map_err(StoreError::from)?;
        }

        let (mut mounts, argv) = self.stage_program(pi, &def, run.path())?;
        mounts.insert(0, Mount::Bind(bound.clone(), "/run/strata".into()));
        let chroot = def.needs.root == StageRoot::Tree;
        let tree_inside = if chroot { "/" } else { "/run/strata/tree" };
        if !chroot {
            mounts.push(Mount::Bind(tree.to_path_buf(), "/run/strata/tree".into()));
        }
        let (input_mounts, inputs) = self.prepare_inputs(pi, si, run.path())?;
        mounts.extend(input_mounts);
        let args = json!({
            "tree": tree_inside,
            "options": stage.options,
            "inputs": inputs,
            "paths": {
                "tree": tree_inside,
                "inputs": "/run/strata/inputs",
                "meta": "/run/strata/meta.json",
            },
            "meta": {
                "id": id.as_str(),
                "source-epoch": p.source_epoch,
                "pipeline": p.name,
                "stage": stage.ty,
            },
        });
        let args_path = run.path().join("args.json");
        fs::write(&args_path, serde_json::to_vec_pretty(&args).expect("json"))
            .map_err(StoreError::from)?;
        mounts.push(Mount::RoBind(args_path, "/run/strata/args.json".into()));

        let (root, overlay) = self.stage_root(pi, si, def.needs.root, tree, run.path())?;
        let network = def.needs.network(&stage.options);
        let spec = BwrapSpec {
            root,
            mounts,
            network,
            env: sandbox::environment(&stage.ty, p.source_epoch, network),
            argv,
        };
        let (program, argv) = match &overlay {
            Some(o) => ("unshare", o.wrap(spec.to_argv())),
            None => ("bwrap", spec.to_argv()),
        };
        let (program, argv) = with_network(&spec, program, argv);
        if self.breaks.contains(&(pi, si)) {
            let shell = self.break_shell(pi, si, &spec, overlay.as_ref(), tree_inside);
            if !shell.success() {
                return Err(fail(
                    format!(
                        "stopped at --break: the shell ended with {}",
                        shell.describe()
                    ),
                    vec![],
                ));
            }
        }
        let stage_ref = self.stage_ref(pi, si);
        let on_line = |line: &[u8]| {
            if self.monitor.wants_logs() {
                self.monitor.emit(Event::Log {
                    stage: stage_ref.clone(),
                    line: String::from_utf8_lossy(line).into_owned(),
                });
            }
        };
        let started = Instant::now();
        let outcome = if p.backend == Some(Backend::IncusLxc) {
            self.run_in_incus(pi, def.needs.root, &spec, log, &on_line)
                .map_err(|e| fail(e.to_string(), process::tail(log, 20)))?
        } else {
            process::run_logged(
                &program.to_string_lossy(),
                &argv,
                log,
                &on_line,
                self.opts.stage_timeout,
            )
        };
        let duration = started.elapsed();
        if matches!(outcome, Outcome::Interrupted) {
            return Err(BuildError::Interrupted);
        }
        if !outcome.success() {
            let mut error = fail(outcome.describe(), process::tail(log, 20));
            if self.opts.keep_failed
                && let BuildError::Stage(failure) = &mut error
            {
                failure.kept = Some(self.keep_failed(id, tree, run.path(), log, &spec.mounts)?);
            }
            return Err(error);
        }
        let meta_path = bound.join("meta.json");
        let meta = if meta_path.exists() {
            let text = fs::read_to_string(&meta_path).map_err(StoreError::from)?;
            serde_json::from_str(&text).map_err(|e| {
                fail(
                    format!("it wrote /run/strata/meta.json that is not JSON: {e}"),
                    vec![],
                )
            })?
        } else {
            Value::Null
        };
        Ok((meta, duration))
    }

    /// Runs the stage that `spec` describes in an incus container started
    /// from the build pipeline's image instead (backend::pipeline).
    fn run_in_incus(
        &self,
        pi: usize,
        root: StageRoot,
        spec: &BwrapSpec,
        log: &Path,
        on_line: &(dyn Fn(&[u8]) + Sync),
    ) -> Result<Outcome, BackendError> {
        let p = &self.m.pipelines[pi];
        if root == StageRoot::Tree {
            return Err(BackendError::Build(
                "this stage runs with the tree as `/` (chroot semantics), which only bwrap does; drop \"backend\" from the pipeline".into(),
            ));
        }
        let build = p
            .build_name()
            .expect("load checks incus pipelines have a build");
        let build_id = self.plan.pipeline_id(self.m.index(build));
        let image = match p.image.as_deref() {
            Some(name) => Some(
                self.tree_of(self.m.index(name))
                    .map_err(|e| BackendError::ImageMissing(e.to_string()))?,
            ),
            None => None,
        };
        let (Some(build_id), Some(image_files)) = (build_id, image.as_deref()) else {
            return Err(BackendError::ImageMissing(format!(
                "build pipeline `{build}` has no stages, so no image"
            )));
        };
        let run = backend::pipeline::StageRun {
            store: &self.opts.store,
            build_id,
            image_files,
            mounts: &spec.mounts,
            env: &spec.env,
            argv: &spec.argv,
            log,
            on_line,
            timeout: self.opts.stage_timeout,
            network: spec.network,
        };
        match backend::pipeline::run_stage(&run) {
            Err(BackendError::Interrupted) => Ok(Outcome::Interrupted),
            other => other,
        }
    }

    /// The runner and the stage program, bound into the sandbox, and the
    /// command that starts them: built-in (ELF) stages behind the host's
    /// dynamic loader, so they run in any build root.
    fn stage_program(
        &self,
        pi: usize,
        def: &crate::catalog::StageDef,
        run: &Path,
    ) -> Result<(Vec<Mount>, Vec<OsString>), BuildError> {
        let runner = self
            .catalog
            .runner(self.m.pipelines[pi].runner_name())
            .map_err(|e| BuildError::Usage(e.to_string()))?;
        let runner_path = match runner {
            Runner::File(path) => path,
            Runner::Builtin(text) => {
                let path = run.join("runner");
                fs::write(&path, text).map_err(StoreError::from)?;
                fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(StoreError::from)?;
                path
            }
        };
        let mut mounts = vec![
            Mount::RoBind(runner_path, "/run/strata/runner".into()),
            Mount::RoBind(def.exe.clone(), "/run/strata/stage".into()),
        ];
        let mut argv: Vec<OsString> = vec!["/run/strata/runner".into()];
        if let Some(interp) = sandbox::elf_interpreter(&def.exe) {
            mounts.push(Mount::RoBind(interp, "/run/strata/host/ld.so".into()));
            mounts.push(Mount::RoBind(
                sandbox::host_libdir(),
                "/run/strata/host/lib".into(),
            ));
            argv.extend(
                [
                    "/run/strata/host/ld.so",
                    "--library-path",
                    "/run/strata/host/lib",
                ]
                .map(OsString::from),
            );
        }
        argv.push("/run/strata/stage".into());
        Ok((mounts, argv))
    }

    /// Each input of stage `si` made ready under `run`, as read-only mounts
    /// at /run/strata/inputs/NAME, and its entry in the arguments document.
    fn prepare_inputs(
        &self,
        pi: usize,
        si: usize,
        run: &Path,
    ) -> Result<(Vec<Mount>, serde_json::Map<String, Value>), BuildError> {
        let mut mounts = Vec::new();
        let mut inputs = serde_json::Map::new();
        for (name, input) in &self.m.pipelines[pi].stages[si].inputs {
            let inside = format!("/run/strata/inputs/{name}");
            let prepared = match (input.ty, input.origin) {
                (InputType::Tree, Origin::Pipeline) => {
                    let dep = input.references[0].pipeline().expect("checked at load");
                    let di = self.m.index(dep);
                    let id = self.plan.pipeline_id(di).map(|id| id.as_str());
                    let mut tree = self.tree_of(di)?;
                    if self.runs_in_incus(pi) {
                        // incusd cannot see our mounts: a plain copy, gone with
                        // `run`, with in-tree owners (incus shifts them itself).
                        let copy = run.join("trees").join(name);
                        fs::create_dir_all(run.join("trees")).map_err(StoreError::from)?;
                        copy_tree_mapped(&tree, &copy, &sandbox::userns::host_to_tree)
                            .map_err(StoreError::from)?;
                        tree = copy;
                    }
                    strata_inputs::prepare_tree(name, &tree, id)
                }
                _ => {
                    let sources = self.store().sources();
                    let files: Vec<(String, PathBuf)> = input
                        .references
                        .iter()
                        .map(|r| {
                            let item = &self.m.sources[&r.id];
                            (r.id.clone(), sources.path(item.ty, &item.checksum))
                        })
                        .collect();
                    fs::create_dir_all(run.join("inputs")).map_err(StoreError::from)?;
                    let dir = run.join("inputs").join(name);
                    let prepared = strata_inputs::prepare_files(name, &dir, &files)
                        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
                    // Source items belong to in-tree root, as the stage sees
                    // them (they are links to the store's own copies, which
                    // nobody else reaches).
                    if !self.runs_in_incus(pi) {
                        for entry in fs::read_dir(&dir).map_err(StoreError::from)? {
                            let path = entry.map_err(StoreError::from)?.path();
                            sandbox::userns::chown_for_tree(&path, 0, 0)
                                .map_err(StoreError::from)?;
                        }
                    }
                    prepared
                }
            };
            mounts.push(Mount::RoBind(prepared.host_path.clone(), inside.clone()));
            inputs.insert(name.clone(), json!({"path": inside, "data": prepared.data}));
        }
        Ok((mounts, inputs))
    }

    /// What the stage's `/` is, and the overlay to mount first for stages
    /// that run in a throw-away copy of their environment.
    fn stage_root(
        &self,
        pi: usize,
        si: usize,
        needs: StageRoot,
        tree: &Path,
        run: &Path,
    ) -> Result<(Root, Option<sandbox::Overlay>), BuildError> {
        let p = &self.m.pipelines[pi];
        let env = match p.build_name() {
            Some(build) => Some(self.tree_of(self.m.index(build))?),
            None => None,
        };
        Ok(match (needs, env) {
            (StageRoot::Tree, _) => (Root::TreeRw(tree.to_path_buf()), None),
            (StageRoot::BuildCopy, Some(env)) => {
                // The environment may be changed (build-dependencies
                // installed) but never the stored one: an overlay whose
                // upper layer lives in `run` and goes with it.
                let layers = run.join("layers");
                for dir in ["upper", "work", "root"] {
                    fs::create_dir_all(layers.join(dir)).map_err(StoreError::from)?;
                }
                // The merged root shows the upper dir's owner and mode:
                // the environment's, as the stage's namespace sees it.
                let top = fs::metadata(&env).map_err(StoreError::from)?;
                let upper = layers.join("upper");
                std::os::unix::fs::lchown(&upper, Some(top.uid()), Some(top.gid()))
                    .map_err(StoreError::from)?;
                fs::set_permissions(&upper, std::fs::Permissions::from_mode(top.mode() & 0o7777))
                    .map_err(StoreError::from)?;
                let overlay = sandbox::Overlay {
                    lower: env,
                    upper: layers.join("upper"),
                    work: layers.join("work"),
                    merged: layers.join("root"),
                };
                (Root::TreeRw(layers.join("root")), Some(overlay))
            }
            (StageRoot::BuildCopy, None) => {
                return Err(BuildError::Usage(format!(
                    "stage {si} ({}) of pipeline `{}` needs a build pipeline: its environment",
                    p.stages[si].ty, p.name
                )));
            }
            (StageRoot::Build, Some(env)) => (Root::Tree(env), None),
            (StageRoot::Build, None) => (Root::Host(self.host.clone()), None),
        })
    }

    /// `--break`: an interactive shell in the stage's sandbox (same root,
    /// mounts, arguments and inputs), on the terminal, before the stage
    /// runs. Exit 0 lets the stage run; anything else stops the build.
    fn break_shell(
        &self,
        pi: usize,
        si: usize,
        spec: &BwrapSpec,
        overlay: Option<&sandbox::Overlay>,
        tree_inside: &str,
    ) -> Outcome {
        let p = &self.m.pipelines[pi];
        let ty = &p.stages[si].ty;
        let tty = self.tty.as_ref().expect("opened when --break was resolved");
        let mut shell = spec.clone();
        shell.argv = vec!["/bin/sh".into(), "-i".into()];
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        shell.env.push(("TERM".into(), term));
        shell
            .env
            .push(("PS1".into(), format!("strata {}/{ty}# ", p.name)));
        let mut banner = tty;
        let _ = writeln!(
            banner,
            "strata: --break: a shell in the sandbox of stage {si} ({ty}) of pipeline `{}`, before it runs.\n  \
             its tree is {tree_inside}, its inputs are under /run/strata/inputs, its arguments in /run/strata/args.json\n  \
             `exit` runs the stage; `exit 1` stops the build",
            p.name
        );
        let (program, argv) = match overlay {
            Some(o) => ("unshare", o.wrap(shell.to_argv())),
            None => ("bwrap", shell.to_argv()),
        };
        let (program, argv) = with_network(&shell, program, argv);
        process::run_interactive(&program.to_string_lossy(), &argv, tty)
    }

    /// `--keep-failed`: copies the failed stage's tree to
    /// STORE/failed/<id>-<pid>/tree and copies beside it its inputs, its
    /// arguments and its log, for inspection; `strata store gc` removes it.
    fn keep_failed(
        &self,
        id: &Id,
        tree: &Path,
        run: &Path,
        log: &Path,
        mounts: &[Mount],
    ) -> Result<PathBuf, BuildError> {
        let dir = self.store().failed_dir(id)?;
        // The tree is the merged view of this pipeline's workspace, which
        // goes when the build ends: copy what the stage saw and left.
        copy_tree(tree, &dir.join("tree")).map_err(StoreError::from)?;
        for mount in mounts {
            if let Mount::RoBind(host, inside) = mount
                && let Some(name) = inside.strip_prefix("/run/strata/inputs/")
            {
                fs::create_dir_all(dir.join("inputs")).map_err(StoreError::from)?;
                copy_tree(host, &dir.join("inputs").join(name)).map_err(StoreError::from)?;
            }
        }
        fs::copy(run.join("args.json"), dir.join("args.json")).map_err(StoreError::from)?;
        if log.exists() {
            fs::copy(log, dir.join("log")).map_err(StoreError::from)?;
        }
        Ok(dir)
    }

    fn export(&self) -> Result<(), BuildError> {
        let Some(out) = self.opts.output_directory.clone() else {
            return Ok(());
        };
        for name in &self.opts.exports {
            let pi = self.m.index(name);
            let dest = out.join(name);
            let fail = |detail: String| BuildError::Export {
                name: name.clone(),
                path: dest.clone(),
                detail,
            };
            fs::create_dir_all(&out).map_err(|e| fail(e.to_string()))?;
            // Copy beside the destination, then rename: an export is whole or absent.
            let staging = out.join(format!(".{name}.strata-{}", std::process::id()));
            let src = self.tree_of(pi)?;
            // Stored owners are the stages' namespace's; as root, the export
            // carries the in-tree owners (userns.rs).
            let result = copy_tree_mapped(&src, &staging, &sandbox::userns::host_to_tree)
                .and_then(|()| std::fs::rename(&staging, &dest));
            if let Err(e) = result {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(fail(e.to_string()));
            }
            self.monitor.emit(Event::Export {
                pipeline: name.clone(),
                path: dest.display().to_string(),
            });
            self.report
                .lock()
                .expect("report lock")
                .exports
                .push((name.clone(), dest));
        }
        Ok(())
    }
}

/// A sandbox whose stage declares network starts through the network
/// wrapper when it gets a network of its own (sandbox/net.rs).
fn with_network(spec: &BwrapSpec, program: &str, argv: Vec<OsString>) -> (OsString, Vec<OsString>) {
    if spec.network && sandbox::net::private_network() {
        sandbox::net::wrap(program, argv)
    } else {
        (program.into(), argv)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
