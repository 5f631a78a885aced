//! The one way to start a build: [`Build`], a builder over
//! [`BuildOptions`] and [`super::build()`].
//!
//! ```text
//! Build::new(&manifest, &catalog, store)      defaults: keep every stage, the store's
//!     .checkpoint("tarball")                  size limit, an hour's lock wait, one job
//!     .export("tarball")                      per CPU, stop at the first failure
//!     .output_directory(out)
//!     .run(&monitor)  →  (BuildReport, Result<(), BuildError>)
//! ```
//!
//! The CLI, tasks and the system builder all start builds here, so a new
//! option is one field and one method, and no caller has to know what the
//! others default to.

use super::{BuildError, BuildOptions, BuildReport};
use crate::catalog::Catalog;
use crate::manifest::Manifest;
use crate::manifest::plan::Plan;
use crate::monitor::{Event, Monitor};
use std::path::PathBuf;
use std::time::Duration;
use strata_sources::Secrets;

/// A build of one manifest into one store, configured by its methods and
/// started by [`Build::run`].
///
/// A program that builds must first call
/// [`crate::store::layers::enter_private_namespace`] (before it starts any
/// thread: the store's layers are mounted in a namespace that dies with the
/// process) and, to stop cleanly on Ctrl-C,
/// [`crate::sandbox::process::install_interrupt_handler`], as `strata build`
/// does.
#[derive(Debug, Clone)]
pub struct Build<'a> {
    /// The manifest with its derived pipelines, checked.
    manifest: Manifest,
    /// Its ids, computed once.
    plan: Plan,
    /// Why the manifest is refused, if it is.
    invalid: Option<String>,
    catalog: &'a Catalog,
    opts: BuildOptions,
}

impl<'a> Build<'a> {
    /// A build of `manifest` with the stages and runners of `catalog`, into
    /// the store at `store` (made when missing).
    ///
    /// The manifest is checked as [`crate::manifest::load`] checks a file
    /// (a composed one has not been yet), given its derived pipelines
    /// ([`crate::derive`]) and planned: every id, once. A bad one is
    /// refused by [`Build::run`] with a [`BuildError::Usage`] naming each
    /// JSON pointer, before anything runs.
    ///
    /// Until changed: every stage is kept (checkpointed), the store's own
    /// size limit holds, the store lock is waited for up to
    /// [`crate::store::DEFAULT_LOCK_TIMEOUT`], as many pipelines run at
    /// once as there are CPUs, nothing is exported, stages have no time
    /// limit, and the first failure ends the build.
    pub fn new(manifest: &Manifest, catalog: &'a Catalog, store: impl Into<PathBuf>) -> Self {
        let (mut manifest, invalid) = match manifest.check(catalog) {
            Ok(m) => (m, None),
            Err(e) => (manifest.clone(), Some(e.to_string())),
        };
        let plan = match invalid {
            None => crate::derive::plan(&mut manifest),
            // Ids of a manifest that failed its checks may not exist.
            Some(_) => Plan::default(),
        };
        Build {
            manifest,
            plan,
            invalid,
            catalog,
            opts: BuildOptions {
                store: store.into(),
                lock_timeout: crate::store::DEFAULT_LOCK_TIMEOUT,
                jobs: super::schedule::default_jobs(),
                ..BuildOptions::default()
            },
        }
    }

    /// The manifest as it is built: checked, with its derived pipelines.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Its ids.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Keeps the stages `pattern` selects (`--checkpoint`): a pipeline name
    /// (its last stage), a stage id, a stage type, or a glob over those.
    /// A pattern that matches nothing fails the build before it starts.
    #[must_use]
    pub fn checkpoint(mut self, pattern: impl Into<String>) -> Self {
        self.opts.checkpoints.push(pattern.into());
        self
    }

    /// [`Build::checkpoint`] for each of `patterns`.
    #[must_use]
    pub fn checkpoints(mut self, patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.opts
            .checkpoints
            .extend(patterns.into_iter().map(Into::into));
        self
    }

    /// `--no-checkpoint`: keep only the stages [`Build::checkpoint`] names.
    #[must_use]
    pub fn no_checkpoint(mut self, yes: bool) -> Self {
        self.opts.no_checkpoint = yes;
        self
    }

    /// `--cache-max-size`: sets the store's size limit in bytes (`None`
    /// is unlimited) and collects down to it after the build.
    #[must_use]
    pub fn cache_max_size(mut self, limit: Option<u64>) -> Self {
        self.opts.cache_max_size = Some(limit);
        self
    }

    /// `--lock-timeout`: how long to wait for another strata's store lock.
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.opts.lock_timeout = timeout;
        self
    }

    /// `--export`: copies pipeline `name`'s tree to `OUTPUT/NAME` (needs
    /// [`Build::output_directory`]).
    #[must_use]
    pub fn export(mut self, name: impl Into<String>) -> Self {
        self.opts.exports.push(name.into());
        self
    }

    /// [`Build::export`] for each of `names`.
    #[must_use]
    pub fn exports(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.opts.exports.extend(names.into_iter().map(Into::into));
        self
    }

    /// `--output-directory`: where exports go.
    #[must_use]
    pub fn output_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.output_directory = Some(dir.into());
        self
    }

    /// `--force`: an export replaces what is at OUTPUT/NAME, in one step.
    #[must_use]
    pub fn replace_exports(mut self, yes: bool) -> Self {
        self.opts.replace_exports = yes;
        self
    }

    /// `--stage-timeout`: ends a stage that runs longer (`None`: no limit).
    #[must_use]
    pub fn stage_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.opts.stage_timeout = timeout.into();
        self
    }

    /// `--jobs`: how many pipelines may run at once (0 counts as 1).
    #[must_use]
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.opts.jobs = jobs;
        self
    }

    /// `--keep-going`: after a failure, go on with the pipelines that do not
    /// need the failed one.
    #[must_use]
    pub fn keep_going(mut self, yes: bool) -> Self {
        self.opts.keep_going = yes;
        self
    }

    /// `--keep-failed`: keep a failed stage's tree, inputs, arguments and
    /// log under STORE/failed/.
    #[must_use]
    pub fn keep_failed(mut self, yes: bool) -> Self {
        self.opts.keep_failed = yes;
        self
    }

    /// `--secrets`: the values curl items and stage options name as
    /// `"secrets": {"name": …}`; never hashed, stored or printed.
    #[must_use]
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.opts.secrets = secrets;
        self
    }

    /// `--max-source-size`: the most bytes a curl item without a `size` may
    /// have (default [`strata_sources::DEFAULT_MAX_BYTES`]).
    #[must_use]
    pub fn max_source_size(mut self, bytes: u64) -> Self {
        self.opts.max_source_size = Some(bytes);
        self
    }

    /// `--break`: opens a shell in the sandbox of the stages `pattern`
    /// selects (as [`Build::checkpoint`] does) before they run; the build
    /// then runs one pipeline at a time.
    #[must_use]
    pub fn break_before(mut self, pattern: impl Into<String>) -> Self {
        self.opts.breaks.push(pattern.into());
        self
    }

    /// [`Build::break_before`] for each of `patterns`.
    #[must_use]
    pub fn breaks(mut self, patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.opts
            .breaks
            .extend(patterns.into_iter().map(Into::into));
        self
    }

    /// The options as configured.
    pub fn options(&self) -> &BuildOptions {
        &self.opts
    }

    /// Builds, telling `monitor` what happens. The report covers what was
    /// done even when the build fails; its pipelines are in manifest order.
    pub fn run(&self, monitor: &Monitor) -> (BuildReport, Result<(), BuildError>) {
        if let Some(e) = &self.invalid {
            let error = BuildError::Usage(e.clone());
            monitor.error(&serde_json::json!({"kind": "manifest", "message": e}));
            monitor.emit(Event::BuildFinish {
                success: false,
                exit_code: error.exit_code(),
                duration: 0.0,
                built: 0,
                reused: 0,
                failed: 0,
            });
            let report = BuildReport {
                stages: vec![Vec::new(); self.manifest.pipelines.len()],
                ..BuildReport::default()
            };
            return (report, Err(error));
        }
        super::build(
            &self.manifest,
            &self.plan,
            self.catalog,
            &self.opts,
            monitor,
        )
    }
}
