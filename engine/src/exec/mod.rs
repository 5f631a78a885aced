//! The scheduler: walk the pipelines in build order, short-circuit what the
//! store has, run the rest in sandboxes, commit checkpoints, export.
//!
//! ```text
//! build ─ prepare: flags → select (what runs, pure) → store → sources (sources.rs)
//!       ─ pipelines, `jobs` at a time (schedule.rs), each:
//!            resume from its newest stored stage (an overlay over its layers)
//!            each remaining stage: inputs, program, arguments → StageSpec (stage.rs)
//!                                  → the pipeline's StageRunner (crate::sandbox::runner)
//!                                  → commit as a layer (commit.rs)
//!       ─ export (export.rs), collect down to the size limit
//! ```
//!
//! Every stage is kept unless `--no-checkpoint` (then only what
//! `--checkpoint` names): a kept stage costs only what it changed. A
//! pipeline's final tree stays available (mounted from the store on first
//! use, or its workspace until the build ends) for pipelines that use it as
//! a build root or a `tree` input, and for `--export`.
//!
//! Pipelines that do not need each other run at the same time, up to
//! `--jobs` ([`schedule`]); so the builder's shared state (the report, the
//! final trees, the work dirs) sits behind locks, and everything it tells
//! goes through the [`Monitor`] as [`Event`]s.

pub mod build;
mod commit;
mod export;
pub mod replace;
mod report;
pub mod schedule;
pub mod select;
mod sources;
mod stage;

pub use build::Build;
pub use report::{BuildError, BuildReport, StageFailure, StageReport, StageStatus};
pub use select::{Decision, resolve_checkpoints, resolve_stages};

use crate::backend::stage::{StageImage, stage_runner};
use crate::catalog::Catalog;
use crate::id::Id;
use crate::manifest::graph;
use crate::manifest::plan::Plan;
use crate::manifest::{Manifest, Pipeline, Stage};
use crate::monitor::{self, Event, Monitor, PipelineInfo, PipelineResult, StageInfo, StageRef};
use crate::sandbox::runner::StageRunner;
use crate::sandbox::{HostLayout, HostView};
use crate::store::layers::{View, Workspace};
use crate::store::{Store, gc};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use strata_sources::Secrets;

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
    /// `--force`: an export replaces what is at OUTPUT/NAME (in one step).
    pub replace_exports: bool,
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
    /// `--secrets`: what curl items and stages may name.
    pub secrets: Secrets,
    /// `--max-source-size`: the cap on a curl item that gives no `size`.
    pub max_source_size: Option<u64>,
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
        host_view: Mutex::new(None),
        report: Mutex::new(BuildReport {
            stages: vec![Vec::new(); m.pipelines.len()],
            ..BuildReport::default()
        }),
        trees: Mutex::new(HashMap::new()),
        mounted: Mutex::new(HashMap::new()),
        workspaces: Mutex::new(Vec::new()),
        store: None,
        decisions: Vec::new(),
        checkpoints: BTreeSet::new(),
        breaks: BTreeSet::new(),
        tty: None,
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
    /// The host's root mounted once, on the first stage that runs over it.
    host_view: Mutex<Option<HostView>>,
    report: Mutex<BuildReport>,
    /// Final tree of each pipeline built so far.
    trees: Mutex<HashMap<usize, FinalTree>>,
    /// Stored final trees mounted so far, by pipeline; unmounted when the build ends.
    mounted: Mutex<HashMap<usize, View>>,
    /// Workspaces holding uncommitted final trees, removed when the build ends.
    workspaces: Mutex<Vec<Workspace>>,
    store: Option<Store>,
    /// Per pipeline: skipped, or where it resumes ([`select::decide`]).
    decisions: Vec<Decision>,
    checkpoints: BTreeSet<(usize, usize)>,
    /// Stages to open a shell in before they run (`--break`).
    breaks: BTreeSet<(usize, usize)>,
    /// The terminal for `--break` shells.
    tty: Option<std::fs::File>,
}

/// Where a pipeline's final tree is.
#[derive(Debug, Clone)]
enum FinalTree {
    /// In the store: mounted when first needed.
    Stored(Id),
    /// A workspace of this build.
    Dir(PathBuf),
}

/// One stage of the build, as the scheduler hands it around: where it
/// stands and what it is, resolved once.
#[derive(Debug, Clone, Copy)]
struct StageCtx<'a> {
    /// Pipeline index in the manifest.
    pi: usize,
    /// Stage index in its pipeline.
    si: usize,
    pipeline: &'a Pipeline,
    stage: &'a Stage,
    id: &'a Id,
}

impl StageCtx<'_> {
    fn stage_ref(&self) -> StageRef {
        StageRef::new(&self.pipeline.name, self.si, &self.stage.ty, self.id)
    }

    /// The error for this stage failing with `outcome`.
    fn failure(&self, outcome: String, log_tail: Vec<String>) -> BuildError {
        BuildError::Stage(Box::new(StageFailure {
            pipeline: self.pipeline.name.clone(),
            index: self.si,
            ty: self.stage.ty.clone(),
            id: self.id.clone(),
            outcome,
            log_tail,
            kept: None,
        }))
    }
}

impl<'a> Builder<'a> {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn stage(&self, pi: usize, si: usize) -> StageCtx<'a> {
        let pipeline = &self.m.pipelines[pi];
        StageCtx {
            pi,
            si,
            pipeline,
            stage: &pipeline.stages[si],
            id: &self.plan.stage_ids[pi][si],
        }
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

    fn run(&mut self) -> Result<(), BuildError> {
        let monitor = self.monitor;
        let told = |e: BuildError| {
            monitor.error(&e.to_json());
            e
        };
        self.prepare().map_err(told)?;
        // Each commit made its object durable before publishing it.
        self.build_pipelines()?;
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

    /// Everything before the first pipeline: flags, what runs, the store,
    /// sources.
    fn prepare(&mut self) -> Result<(), BuildError> {
        let asked = resolve_checkpoints(self.m, self.plan, &self.opts.checkpoints)?;
        self.checkpoints = asked.clone();
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
        let store = self.store();
        let exports: Vec<usize> = self.opts.exports.iter().map(|n| self.m.index(n)).collect();
        self.decisions = select::decide(
            self.m,
            self.plan,
            &|id| store.has(id),
            &select::Asked {
                exports: &exports,
                checkpoints: &asked,
                breaks: &self.breaks,
            },
        );
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
                self.skipped(pi);
            }
        }
        match BuildError::combine(failures.into_iter().map(|(_, e)| e).collect()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn skipped(&self, pi: usize) {
        self.monitor.emit(Event::PipelineFinish {
            pipeline: self.m.pipelines[pi].name.clone(),
            id: self.plan.pipeline_id(pi).map(Id::to_string),
            result: PipelineResult::Skipped,
            duration: 0.0,
        });
        self.report.lock().expect("report lock").skipped.insert(pi);
    }

    /// One pipeline, announced: start, its error if any, finish.
    fn pipeline(&self, pi: usize) -> Result<(), BuildError> {
        let Decision::Resume { stored } = self.decisions[pi] else {
            // Nothing asked for needs it.
            self.skipped(pi);
            return Ok(());
        };
        let name = &self.m.pipelines[pi].name;
        let id = self.plan.pipeline_id(pi).map(Id::to_string);
        self.monitor.emit(Event::PipelineStart {
            pipeline: name.clone(),
            id: id.clone(),
        });
        let started = Instant::now();
        let result = self.build_pipeline(pi, stored);
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

    /// The runner for pipeline `pi`'s stages: bwrap, or the backend it
    /// names, booting the image its derived image pipeline made.
    fn runner_for(&self, pi: usize) -> Result<Box<dyn StageRunner>, BuildError> {
        let p = &self.m.pipelines[pi];
        let image = match (p.image.as_deref(), p.build_name()) {
            (Some(image), Some(build)) => match self.plan.pipeline_id(self.m.index(build)) {
                Some(build_id) => Some(StageImage {
                    store: self.store().root().to_path_buf(),
                    build_id: build_id.clone(),
                    files: self.tree_of(self.m.index(image))?,
                }),
                None => None,
            },
            _ => None,
        };
        stage_runner(p.backend, image)
            .map_err(|e| BuildError::Usage(format!("pipeline `{}`: {e}", p.name)))
    }

    /// Pipeline `pi`, resuming after its stage `stored` (the newest one the
    /// store has), or from nothing.
    fn build_pipeline(&self, pi: usize, stored: Option<usize>) -> Result<(), BuildError> {
        let ids = &self.plan.stage_ids[pi];
        let first = stored.map_or(0, |k| k + 1);
        // Everything up to the newest stored stage is covered by it.
        for si in 0..first {
            self.report_cached(self.stage(pi, si));
        }
        let mut base = stored.map(|k| ids[k].clone());
        if let Some(id) = &base {
            self.store().touch(id);
        }
        let mut ws: Option<Workspace> = None;
        let runner = match first < ids.len() {
            true => Some(self.runner_for(pi)?),
            false => None,
        };
        let logs = self.store().work_dir("logs")?;
        for si in first..ids.len() {
            let st = self.stage(pi, si);
            let runner = runner.as_deref().expect("made when a stage runs");
            let keep = self.checkpoints.contains(&(pi, si));
            // The object's build lock: a build that needs it too waits, then
            // finds it stored. A stage to break in runs whatever the store has.
            let _building = if keep {
                let lock = self.store().lock_object(st.id, || {
                    self.monitor.emit(Event::Notice {
                        pipeline: Some(st.pipeline.name.clone()),
                        message: format!(
                            "{}: waiting: another build is making it",
                            st.stage_ref().label()
                        ),
                    });
                })?;
                if self.store().has(st.id) && !self.breaks.contains(&(pi, si)) {
                    ws = None;
                    base = Some(st.id.clone());
                    self.store().touch(st.id);
                    self.report_cached(st);
                    continue;
                }
                Some(lock)
            } else {
                None
            };
            let tree = match &ws {
                Some(w) => w.merged(),
                // A runner that cannot see our mounts works on a plain copy.
                None if !runner.sees_our_mounts() => ws
                    .insert(self.store().flat_workspace(base.as_ref())?)
                    .merged(),
                None => ws.insert(self.store().workspace(base.as_ref())?).merged(),
            };
            let log = logs.path().join(format!("log-{si}"));
            self.monitor.emit(Event::StageStart {
                stage: st.stage_ref(),
            });
            let started = Instant::now();
            let (meta, duration) = match self.run_stage(st, runner, &tree, &log) {
                Ok(done) => done,
                Err(e) => {
                    let result = match &e {
                        BuildError::Stage(f) => f.outcome.clone(),
                        other => other.to_string(),
                    };
                    self.monitor.emit(Event::StageFinish {
                        stage: st.stage_ref(),
                        status: monitor::StageStatus::Failed,
                        stored: false,
                        duration: started.elapsed().as_secs_f64(),
                        result,
                    });
                    return Err(e);
                }
            };
            let stored =
                keep && self.commit_stage(st, &mut ws, base.as_ref(), &log, &meta, duration)?;
            if stored {
                base = Some(st.id.clone());
            }
            self.monitor.emit(Event::StageFinish {
                stage: st.stage_ref(),
                status: monitor::StageStatus::Built,
                stored,
                duration: duration.as_secs_f64(),
                result: "success".into(),
            });
            self.report.lock().expect("report lock").stages[pi].push(StageReport {
                id: st.id.clone(),
                ty: st.stage.ty.clone(),
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
}
