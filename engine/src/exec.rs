//! The scheduler: walk the pipelines in build order, short-circuit what the
//! store has, run the rest in sandboxes, commit checkpoints, export.
//!
//! For each pipeline: find its newest stored stage and start from a copy of
//! that tree (or an empty one); run each remaining stage; commit the stages
//! that `--checkpoint` names. A pipeline's final tree stays available (in the
//! store, or in a work dir until the build ends) for pipelines that use it as
//! a build root or a `tree` input, and for `--export`.

use crate::backend::{self, Backend, BackendError};
use crate::catalog::{Catalog, Runner, StageRoot};
use crate::id::Id;
use crate::manifest::{InputType, Manifest, Origin};
use crate::monitor::Monitor;
use crate::plan::Plan;
use crate::sandbox::process::{self, Outcome};
use crate::sandbox::{self, BwrapSpec, HostLayout, Mount, Root};
use crate::store::{Store, StoreError, copy::copy_tree};
use fs_err as fs;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `strata build` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The store root.
    pub store: PathBuf,
    /// `--checkpoint` patterns.
    pub checkpoints: Vec<String>,
    /// `--export` pipeline names.
    pub exports: Vec<String>,
    /// `--output-directory`.
    pub output_directory: Option<PathBuf>,
    /// Only errors on stderr.
    pub quiet: bool,
    /// End a stage that runs longer than this.
    pub stage_timeout: Option<Duration>,
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
}

impl BuildError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Usage(_) | BuildError::Source(_) => 2,
            BuildError::Interrupted => 130,
            _ => 1,
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
                let failed = matches!(error, Some(BuildError::Stage(f)) if f.pipeline == p.name);
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
                "--checkpoint `{pattern}` matches no pipeline, stage type or stage id\n    hint: pipelines: {}",
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
    let mut builder = Builder {
        m,
        plan,
        catalog,
        opts,
        monitor,
        host: HostLayout::detect(),
        report: BuildReport {
            stages: vec![Vec::new(); m.pipelines.len()],
            ..BuildReport::default()
        },
        trees: HashMap::new(),
        keep: Vec::new(),
        store: None,
        checkpoints: BTreeSet::new(),
        committed: false,
    };
    let result = builder.run();
    let mut report = builder.report;
    report.duration = started.elapsed();
    (report, result)
}

struct Builder<'a> {
    m: &'a Manifest,
    plan: &'a Plan,
    catalog: &'a Catalog,
    opts: &'a BuildOptions,
    monitor: &'a Monitor,
    host: HostLayout,
    report: BuildReport,
    /// Final tree of each pipeline built so far.
    trees: HashMap<usize, PathBuf>,
    /// Work dirs holding uncommitted final trees, removed when the build ends.
    keep: Vec<tempfile::TempDir>,
    store: Option<Store>,
    checkpoints: BTreeSet<(usize, usize)>,
    /// Whether anything was committed (then the store is synced at the end).
    committed: bool,
}

impl Builder<'_> {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn run(&mut self) -> Result<(), BuildError> {
        self.checkpoints = resolve_checkpoints(self.m, self.plan, &self.opts.checkpoints)?;
        self.check_exports()?;
        self.store = Some(Store::open(&self.opts.store)?);
        self.fetch_sources()?;
        let built = self
            .plan
            .order
            .iter()
            .try_for_each(|&pi| self.build_pipeline(pi));
        if self.committed {
            self.store().sync()?;
        }
        built?;
        self.export()
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

    fn fetch_sources(&self) -> Result<(), BuildError> {
        let sources = self.store().sources();
        for item in self.m.sources.values() {
            let fetched = sources
                .fetch(item.ty, &item.checksum, &item.item)
                .map_err(|e| BuildError::Source(e.to_string()))?;
            if !fetched.cached {
                self.monitor
                    .source_fetched(item.checksum.as_str(), fetched.bytes);
            }
        }
        Ok(())
    }

    fn build_pipeline(&mut self, pi: usize) -> Result<(), BuildError> {
        let p = &self.m.pipelines[pi];
        let ids = &self.plan.stage_ids[pi];
        let stored = ids.iter().rposition(|id| self.store().has(id));
        // Everything up to the newest stored stage is covered by it.
        for (si, id) in ids.iter().enumerate().take(stored.map_or(0, |k| k + 1)) {
            let report = StageReport {
                id: id.clone(),
                ty: p.stages[si].ty.clone(),
                status: StageStatus::Cached,
                stored: self.store().has(id),
                duration: Duration::ZERO,
                metadata: self.store().meta(id),
            };
            self.report.stages[pi].push(report);
            self.monitor.stage_cached(&p.name, si, &p.stages[si].ty, id);
        }
        if let Some(last) = stored
            && last + 1 == ids.len()
        {
            self.trees.insert(pi, self.store().tree(&ids[last]));
            return Ok(());
        }
        let work = self.store().work_dir("build")?;
        let tree = work.path().join("tree");
        match stored {
            Some(k) => copy_tree(&self.store().tree(&ids[k]), &tree).map_err(StoreError::from)?,
            None => {
                fs::create_dir(&tree).map_err(StoreError::from)?;
                fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755))
                    .map_err(StoreError::from)?;
            }
        }
        let first = stored.map_or(0, |k| k + 1);
        let mut final_tree = tree.clone();
        for si in first..ids.len() {
            let log = work.path().join(format!("log-{si}"));
            let (meta, duration) = self.run_stage(pi, si, &tree, &log)?;
            let last = si + 1 == ids.len();
            let mut stored = false;
            if self.checkpoints.contains(&(pi, si)) {
                let info = json!({
                    "pipeline": p.name,
                    "stage": si,
                    "type": p.stages[si].ty,
                    "created": unix_now(),
                    "duration": duration.as_secs_f64(),
                });
                if last {
                    // The pipeline is done with its work tree: move it in.
                    self.store().commit(&ids[si], &tree, &log, &meta, &info)?;
                    final_tree = self.store().tree(&ids[si]);
                } else {
                    let copy = self.store().work_dir("checkpoint")?;
                    copy_tree(&tree, &copy.path().join("tree")).map_err(StoreError::from)?;
                    self.store()
                        .commit(&ids[si], &copy.path().join("tree"), &log, &meta, &info)?;
                }
                stored = true;
                self.committed = true;
            }
            self.monitor
                .stage_built(&p.name, si, &p.stages[si].ty, &ids[si], duration, stored);
            self.report.stages[pi].push(StageReport {
                id: ids[si].clone(),
                ty: p.stages[si].ty.clone(),
                status: StageStatus::Built,
                stored,
                duration,
                metadata: meta,
            });
        }
        self.trees.insert(pi, final_tree);
        self.keep.push(work);
        Ok(())
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
            }))
        };
        let def = self
            .catalog
            .stage(&stage.ty)
            .map_err(|e| BuildError::Usage(e.to_string()))?;
        self.monitor.stage_started(&p.name, si, &stage.ty, id);
        // The TempDir removes the run dir (args, inputs, runner, overlay
        // layers) on every path.
        let run = self.store().work_dir("stage")?;
        let bound = run.path().join("run");
        fs::create_dir(&bound).map_err(StoreError::from)?;

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
        let prefix = format!("{}/{}: ", p.name, stage.ty);
        let started = Instant::now();
        let outcome = if p.backend == Some(Backend::IncusLxc) {
            self.run_in_incus(pi, def.needs.root, &spec, log, &prefix)
                .map_err(|e| fail(e.to_string(), process::tail(log, 20)))?
        } else {
            process::run_logged(
                program,
                &argv,
                log,
                &prefix,
                self.opts.quiet,
                self.opts.stage_timeout,
            )
        };
        let duration = started.elapsed();
        if matches!(outcome, Outcome::Interrupted) {
            return Err(BuildError::Interrupted);
        }
        if !outcome.success() {
            return Err(fail(outcome.describe(), process::tail(log, 20)));
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
        prefix: &str,
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
        let image = p
            .image
            .as_deref()
            .map(|name| &self.trees[&self.m.index(name)]);
        let (Some(build_id), Some(image_files)) = (build_id, image) else {
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
            prefix: prefix.to_owned(),
            quiet: self.opts.quiet,
            timeout: self.opts.stage_timeout,
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
                    strata_inputs::prepare_tree(name, &self.trees[&di], id)
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
                    strata_inputs::prepare_files(name, &run.join("inputs").join(name), &files)
                        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
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
        let env = p
            .build_name()
            .map(|build| &self.trees[&self.m.index(build)]);
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
                let overlay = sandbox::Overlay {
                    lower: env.clone(),
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
            (StageRoot::Build, Some(env)) => (Root::Tree(env.clone()), None),
            (StageRoot::Build, None) => (Root::Host(self.host.clone()), None),
        })
    }

    fn export(&mut self) -> Result<(), BuildError> {
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
            let src = self.trees[&pi].clone();
            let result = copy_tree(&src, &staging).and_then(|()| std::fs::rename(&staging, &dest));
            if let Err(e) = result {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(fail(e.to_string()));
            }
            self.monitor.exported(name, &dest);
            self.report.exports.push((name.clone(), dest));
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
